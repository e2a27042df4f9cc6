"""Perception questions about mazes, answered in one turn by reading the image: where the start
and the goal are, and which sides of a cell are open.

A model trained from nothing must first learn to see what the drawing tasks build on, as a base
VLM learns grounding before it is taught to reason. Trained on the maze dialogues alone, the
embedded model never learned where S is (held-out, below the most frequent answer after 2,200
steps); on these short questions it learns that in a few hundred steps
(``recipe_embedded``'s ``pretrain`` step). The start's cell is phrased exactly as the maze oracle's
first thought, so what is learned here is what the dialogues ask for.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import maze as mz
from .trajectories import OracleDialogue, SynthTask

SUB_TASKS = ("look_maze_ends", "look_maze_cell")


def _ends(m: mz.Maze) -> tuple[str, str, str]:
    question = f"This is a {m.size}x{m.size} maze. In which cells are the green start S and the red goal G?"
    return question, mz.ends(m), f"S {mz.where(m.start)}; G {mz.where(m.goal)}"


def _cell(rng, m: mz.Maze) -> tuple[str, str, str]:
    cell = (int(rng.integers(m.size)), int(rng.integers(m.size)))
    open_sides = [d for d, (dr, dc) in mz.MOVES.items() if m.open(cell, (cell[0] + dr, cell[1] + dc))]
    walls = [d for d in mz.MOVES if d not in open_sides]
    question = (f"This is a {m.size}x{m.size} maze. Which sides of the cell at {mz.where(cell)} are open "
                "(no wall between it and the next cell)? List them in the order up, down, left, right.")
    thought = (f"The cell at {mz.where(cell)} has walls on its {', '.join(walls) or 'no'} "
               f"side{'s' if len(walls) != 1 else ''} and is open {', '.join(open_sides)}.")
    return question, thought, ", ".join(open_sides)


def look_task(seed: int, index: int, sizes: tuple[int, ...] = mz.SIZES) -> SynthTask:
    """Item ``index`` of the perception set with this seed; sub-tasks alternate by index."""
    rng = np.random.default_rng([seed, index, 2])
    m = mz.generate_maze(rng, int(rng.choice(sizes)))
    sub_task = SUB_TASKS[index % len(SUB_TASKS)]
    question, thought, answer = _ends(m) if sub_task == "look_maze_ends" else _cell(rng, m)
    dialogue = OracleDialogue(1)
    dialogue.answer(thought, answer)
    return SynthTask(
        id=f"look_{index:05d}", question=question, options=None, problem_type="free-form", answer=answer,
        sub_task=sub_task, images=[mz.render(m)], turns=dialogue.turns,
        expected_new_images=dialogue.expected_new_images, grid_size=m.size,
        ground_truth={"start": list(m.start), "goal": list(m.goal)})


def look_tasks(n: int, seed: int, sizes: tuple[int, ...] = mz.SIZES) -> Iterator[SynthTask]:
    for index in range(n):
        yield look_task(seed, index, sizes)
