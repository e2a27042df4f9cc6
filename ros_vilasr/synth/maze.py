"""Grid mazes with start and goal marks, route questions, and an oracle that traces the route.

A maze is a perfect maze (a random spanning tree of the grid, so the route between two cells is
unique) with S on a random cell and G on the cell farthest from it. The oracle draws the route
with Path Tracer: one line per straight run, between cell centres, over a few steps, then answers.
A reflective trajectory draws one run to a wrong cell, notices it on the next image, and redraws
that step under the same labels on the image before the mistake.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ros_vilasr.core.protocol import PATH_TRACER

from .trajectories import (
    Mistake,
    OracleDialogue,
    PlanStep,
    SynthTask,
    is_reflective_share,
    line_op,
    model_grid_size,
    multiple_choice,
)

SIZES = (3, 4, 5, 6)
IMAGE_SIDE = 448  # a multiple of 28 below the training pixel cap: the model sees it unresized
MARGIN = 24
WALL = (30, 40, 70)
WALL_WIDTH = 6
START_COLOR, GOAL_COLOR = (40, 170, 60), (220, 50, 50)
MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
OPPOSITE = {"up": "down", "down": "up", "left": "right", "right": "left"}
SUB_TASKS = ("maze_turn_count", "maze_move_sequence", "maze_path_length")
RUNS_PER_STEP = 4

Cell = tuple[int, int]  # (row, column)


@dataclass(frozen=True)
class Maze:
    size: int
    passages: frozenset[frozenset[Cell]]  # pairs of adjacent cells with no wall between them
    start: Cell
    goal: Cell

    def open(self, a: Cell, b: Cell) -> bool:
        return frozenset((a, b)) in self.passages

    def neighbours(self, cell: Cell) -> Iterator[Cell]:
        for dr, dc in MOVES.values():
            other = (cell[0] + dr, cell[1] + dc)
            if self.open(cell, other):
                yield other

    def route(self, start: Cell | None = None, goal: Cell | None = None) -> list[Cell]:
        """The unique path between two cells (breadth-first search over the passages)."""
        start, goal = start or self.start, goal or self.goal
        parent: dict[Cell, Cell | None] = {start: None}
        queue = deque([start])
        while queue:
            cell = queue.popleft()
            for nxt in self.neighbours(cell):
                if nxt not in parent:
                    parent[nxt] = cell
                    queue.append(nxt)
        path, cell = [], goal
        while cell is not None:
            path.append(cell)
            cell = parent[cell]
        return path[::-1]


def generate_maze(rng: np.random.Generator, size: int) -> Maze:
    """Randomised depth-first search (recursive backtracker) from a random cell."""
    start = (int(rng.integers(size)), int(rng.integers(size)))
    visited, stack, passages = {start}, [start], set()
    while stack:
        r, c = stack[-1]
        fresh = [(r + dr, c + dc) for dr, dc in MOVES.values()
                 if 0 <= r + dr < size and 0 <= c + dc < size and (r + dr, c + dc) not in visited]
        if not fresh:
            stack.pop()
            continue
        nxt = fresh[int(rng.integers(len(fresh)))]
        passages.add(frozenset(((r, c), nxt)))
        visited.add(nxt)
        stack.append(nxt)
    maze = Maze(size, frozenset(passages), start, start)
    # The goal is the cell farthest from the start, so the route is long enough to ask about.
    goal = max(((r, c) for r in range(size) for c in range(size)),
               key=lambda cell: (len(maze.route(start, cell)), cell))
    return Maze(size, maze.passages, start, goal)


def runs(path: list[Cell]) -> list[tuple[str, int]]:
    """The route as straight runs: [(direction, number of cells), ...]."""
    out: list[tuple[str, int]] = []
    for a, b in zip(path, path[1:]):
        direction = next(d for d, (dr, dc) in MOVES.items() if (a[0] + dr, a[1] + dc) == b)
        if out and out[-1][0] == direction:
            out[-1] = (direction, out[-1][1] + 1)
        else:
            out.append((direction, 1))
    return out


def describe(route_runs: list[tuple[str, int]]) -> str:
    return ", ".join(f"{d} {n}" for d, n in route_runs)


def follows(maze: Maze, route_runs: list[tuple[str, int]]) -> bool:
    """Whether these moves lead from S to G through open passages only."""
    cell = maze.start
    for direction, n in route_runs:
        dr, dc = MOVES[direction]
        for _ in range(n):
            nxt = (cell[0] + dr, cell[1] + dc)
            if not maze.open(cell, nxt):
                return False
            cell = nxt
    return cell == maze.goal


# -- rendering ---------------------------------------------------------------------------------


def cell_size(size: int) -> float:
    return (IMAGE_SIDE - 2 * MARGIN) / size


def centre(size: int, cell: Cell) -> tuple[float, float]:
    """Pixel centre of a cell; the image is already in the model's grid, so this is a model
    coordinate too."""
    step = cell_size(size)
    return MARGIN + (cell[1] + 0.5) * step, MARGIN + (cell[0] + 0.5) * step


def render(maze: Maze, labels: bool = False) -> Image.Image:
    """The maze drawn in the model's grid; ``labels``: row numbers down the left margin and column
    numbers along the top, as on a chessboard, so a cell's row and column can be read off the image
    by what is drawn there rather than by where it is."""
    if model_grid_size(IMAGE_SIDE, IMAGE_SIDE) != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError("maze images must be in the model's grid")
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), "white")
    pen = ImageDraw.Draw(image)
    n, step = maze.size, cell_size(maze.size)

    def corner(r: int, c: int) -> tuple[float, float]:
        return MARGIN + c * step, MARGIN + r * step

    for r in range(n):
        for c in range(n):
            if not maze.open((r, c), (r, c + 1)):  # east wall (the border too)
                pen.line((*corner(r, c + 1), *corner(r + 1, c + 1)), fill=WALL, width=WALL_WIDTH)
            if not maze.open((r, c), (r + 1, c)):  # south wall
                pen.line((*corner(r + 1, c), *corner(r + 1, c + 1)), fill=WALL, width=WALL_WIDTH)
    pen.line((*corner(0, 0), *corner(0, n)), fill=WALL, width=WALL_WIDTH)
    pen.line((*corner(0, 0), *corner(n, 0)), fill=WALL, width=WALL_WIDTH)
    radius = step * 0.28
    for cell, color, mark in ((maze.start, START_COLOR, "S"), (maze.goal, GOAL_COLOR, "G")):
        x, y = centre(n, cell)
        pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)
        glyph = _glyph(mark, color)
        image.paste(glyph, (round(x - glyph.width / 2), round(y - glyph.height / 2)))
    if labels:
        inside = MARGIN - WALL_WIDTH // 2  # the margin left of (above) the border wall
        for k in range(n):
            ink = _glyph(str(k + 1), "black", scale=2).convert("L")  # white strokes: a paste mask
            x, y = centre(n, (k, k))
            image.paste(WALL, (round((inside - ink.width) / 2), round(y - ink.height / 2)), ink)
            image.paste(WALL, (round(x - ink.width / 2), round((inside - ink.height) / 2)), ink)
    return image


def _glyph(text: str, background, scale: int = 3) -> Image.Image:
    """White text in PIL's bitmap font (identical pixels on every machine), enlarged ``scale`` times."""
    font = ImageFont.load_default_imagefont()
    left, top, right, bottom = font.getbbox(text)
    glyph = Image.new("RGB", (right - left + 2, bottom - top + 2), background)
    ImageDraw.Draw(glyph).text((1 - left, 1 - top), text, fill="white", font=font)
    return glyph.resize((glyph.width * scale, glyph.height * scale), Image.Resampling.NEAREST)


# -- questions and the oracle ------------------------------------------------------------------


def _turn_count_question(rng, maze: Maze, route_runs) -> tuple[str, list[str], str]:
    turns = len(route_runs) - 1
    pool = [t for t in range(max(0, turns - 3), turns + 4) if t != turns]
    distractors = [str(t) for t in rng.choice(pool, size=3, replace=False)]
    options, letter = multiple_choice(rng, str(turns), distractors)
    question = (f"This is a {maze.size}x{maze.size} maze. Moving only through open passages between "
                "adjacent cells, how many times does the path from the green start S to the red goal G "
                "change direction?")
    return question, options, letter


def _move_sequence_question(rng, maze: Maze, route_runs) -> tuple[str, list[str], str]:
    correct = describe(route_runs)
    candidates = []
    for i, (direction, n) in enumerate(route_runs):
        candidates.append(route_runs[:i] + [(OPPOSITE[direction], n)] + route_runs[i + 1:])
        candidates.append(route_runs[:i] + [(direction, n + 1)] + route_runs[i + 1:])
        if n > 1:
            candidates.append(route_runs[:i] + [(direction, n - 1)] + route_runs[i + 1:])
    candidates.append([(OPPOSITE[d], n) for d, n in reversed(route_runs)])
    wrong = sorted({describe(c) for c in candidates if not follows(maze, c)} - {correct})
    distractors = [wrong[i] for i in rng.choice(len(wrong), size=3, replace=False)]
    options, letter = multiple_choice(rng, correct, distractors)
    question = (f"This is a {maze.size}x{maze.size} maze. Which sequence of moves (direction and "
                "number of cells) leads from the green start S to the red goal G through open passages?")
    return question, options, letter


def _path_length_question(maze: Maze, route_runs) -> tuple[str, None, str]:
    question = (f"This is a {maze.size}x{maze.size} maze. How many moves between adjacent cells does "
                "the path from the green start S to the red goal G take?")
    return question, None, str(sum(n for _, n in route_runs))


def where(cell: Cell) -> str:
    return f"row {cell[0] + 1}, column {cell[1] + 1}"


def ends(size: int, start: Cell, goal: Cell) -> str:
    """Where S and G are, as the oracle's first thought (and the perception questions) say it."""
    return f"The green start S is at {where(start)} and the red goal G at {where(goal)} of the {size}x{size} grid."


def _run_line(maze: Maze, corners: list[Cell], k: int, end: Cell | None = None) -> dict:
    """The Path Tracer line of run k (0-based), labelled "run k+1"."""
    return line_op(centre(maze.size, corners[k]), centre(maze.size, end or corners[k + 1]), f"run {k + 1}")


def _wrong_end(size: int, start: Cell, end: Cell) -> Cell:
    """The run's end shifted one cell sideways: a diagonal line across a wall."""
    vertical = start[1] == end[1]
    for shift in (1, -1):
        cell = (end[0], end[1] + shift) if vertical else (end[0] + shift, end[1])
        if 0 <= cell[0] < size and 0 <= cell[1] < size:
            return cell
    raise AssertionError("a grid of size >= 2 always has a sideways neighbour")


def oracle(rng, maze: Maze, route_runs, answer: str, sub_task: str, reflective: bool) -> OracleDialogue:
    path = maze.route()
    corners = [path[0]]  # cells where a run starts or ends
    for _, n in route_runs:
        corners.append(path[path.index(corners[-1]) + n])
    per_step = min(RUNS_PER_STEP, -(-len(route_runs) // 2))
    chunks = [list(range(k, min(k + per_step, len(route_runs)))) for k in range(0, len(route_runs), per_step)]
    steps = []
    for c, chunk in enumerate(chunks):
        if c == 0:
            thought = (f"{ends(maze.size, maze.start, maze.goal)} I trace the open corridor from S, one line per "
                       "straight run between cell centres.")
        else:
            thought = ("Image {latest[0]} shows the route so far, along open corridors to "
                       f"{where(corners[chunk[0]])}. I continue the trace from there.")
        steps.append(PlanStep(thought, PATH_TRACER, [(0, _run_line(maze, corners, k)) for k in chunk]))

    mistake = None
    if reflective:
        step = int(rng.integers(len(chunks)))
        at = int(rng.integers(len(chunks[step])))
        k = chunks[step][at]
        wrong_end = _wrong_end(maze.size, corners[k], corners[k + 1])
        reason = (f"the line 'run {k + 1}' does not follow the corridor; it ends at {where(wrong_end)} and "
                  f"cuts across a wall. The corridor actually turns at {where(corners[k + 1])}.")
        mistake = Mistake(step, at, _run_line(maze, corners, k, wrong_end), reason)

    dialogue = OracleDialogue(1)
    dialogue.play(steps, mistake)
    summary = ("The trace on image {latest[0]} reaches G through open corridors only: "
               f"{describe(route_runs)}. That is {len(route_runs)} straight runs")
    if sub_task == "maze_turn_count":
        thought = f"{summary}, so the path changes direction {len(route_runs) - 1} times, option {answer}."
    elif sub_task == "maze_move_sequence":
        thought = f"{summary}; the option listing exactly these moves is {answer}."
    else:
        thought = f"{summary}, {answer} moves in total."
    dialogue.answer(thought, answer)
    return dialogue


def maze_task(seed: int, index: int, reflective_share: float = 0.0, sizes: tuple[int, ...] = SIZES,
              labels: bool = False) -> SynthTask:
    """Item ``index`` of the maze set with this seed (independent of how many are generated);
    ``sizes``: the grid sizes drawn from; ``labels``: rows and columns numbered on the image."""
    rng = np.random.default_rng([seed, index, 1])
    size = int(rng.choice(sizes))
    maze = generate_maze(rng, size)
    route_runs = runs(maze.route())
    sub_task = SUB_TASKS[index % len(SUB_TASKS)]
    if sub_task == "maze_turn_count":
        question, options, answer = _turn_count_question(rng, maze, route_runs)
    elif sub_task == "maze_move_sequence":
        question, options, answer = _move_sequence_question(rng, maze, route_runs)
    else:
        question, options, answer = _path_length_question(maze, route_runs)
    reflective = is_reflective_share(index, reflective_share)
    dialogue = oracle(rng, maze, route_runs, answer, sub_task, reflective)
    return SynthTask(
        id=f"maze_{index:05d}", question=question, options=options,
        problem_type="multiple choice" if options else "numerical", answer=answer, sub_task=sub_task,
        images=[render(maze, labels)], turns=dialogue.turns, expected_new_images=dialogue.expected_new_images,
        reflective=reflective, grid_size=size,
        ground_truth={"start": list(maze.start), "goal": list(maze.goal), "route": [list(r) for r in route_runs]})


def maze_tasks(n: int, seed: int, reflective_share: float = 0.0, sizes: tuple[int, ...] = SIZES,
               labels: bool = False) -> Iterator[SynthTask]:
    for index in range(n):
        yield maze_task(seed, index, reflective_share, sizes, labels)
