"""Perception questions about mazes, answered in one turn by reading the image: in which cells the
start and the goal are.

A model trained from nothing must first learn to see what the drawing tasks build on, as a base
VLM learns grounding before it is taught to reason. Trained on the maze dialogues alone, the
embedded model never learned where S is (held-out, at the most frequent answer after 2,200
steps). ``recipe_embedded_look`` pretrains on these questions first; the cells are phrased exactly
as the maze oracle's first thought, so what is learned is what the dialogues ask for.

What it showed (benchmarks/results/perception_probe.md): asked always the same short question,
the model learns to read the cells within a few hundred steps, but only at that one distance
between image and answer: ten more words in the question, or the maze dialogue's own question,
and it is back at the most frequent answer. Asked after random notes or maze questions with the
image moved after the question, it reads them equally well at every length
(benchmarks/results/image_layout_probe.md); trained so end to end, it names the goal's cell in
the maze dialogues, not yet the start's (benchmarks/results/recipe_comparison.md). It learns one
disc at a time: asked for one disc alone as well as for both, it reads the start's cell instead;
a phase asking mostly for the goal's then adds the goal's (benchmarks/results/
perception_probe_labels.md, on mazes with numbered rows and columns).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ros_vilasr.core.prompts import question_block

from . import maze as mz
from .trajectories import OracleDialogue, SynthTask

SUB_TASKS = ("look_maze_ends",)


ASK = "In which cells are the green start S and the red goal G?"
MARKS = {"start": ("S", "green start S"), "goal": ("G", "red goal G")}
NOTES = ("Walls are the dark lines.", "Every cell is a square of the same size.", "The start is a green disc marked S.",
         "The goal is a red disc marked G.", "A gap in a wall is a passage.", "Rows count from the top.",
         "Columns count from the left.", "The border of the maze is a wall all round.")


def look_task(seed: int, index: int, sizes: tuple[int, ...] = mz.SIZES, contexts: tuple[str, ...] = ("short",),
              labels: bool = False, asks: tuple[str, ...] = ("both",)) -> SynthTask:
    """Item ``index`` of the perception set with this seed: the maze of maze item ``index`` (same
    seed) and ``ASK``, in the context ``contexts[index % len(contexts)]``: ``short`` (the grid size
    only), ``maze`` (after that maze item's whole question, options included) or ``notes`` (after
    zero to eight true notes about mazes, in random order); ``labels``: as ``maze.maze_task``;
    ``asks``: what is asked, crossed with the contexts (``asks[index // len(contexts) % len(asks)]``):
    ``both`` cells, in the maze oracle's words, or only the ``start``'s or the ``goal``'s, which a
    model can answer only by telling the two discs apart."""
    task = mz.maze_task(seed, index, sizes=sizes, labels=labels)
    cells = {key: tuple(task.ground_truth[key]) for key in MARKS}
    context, ask = contexts[index % len(contexts)], asks[index // len(contexts) % len(asks)]
    if ask == "both":
        thought = mz.ends(task.grid_size, cells["start"], cells["goal"])
        answer = "; ".join(f"{MARKS[key][0]} {mz.where(cell)}" for key, cell in cells.items())
        asked = ASK
    elif ask in MARKS:
        mark, named = MARKS[ask]
        n = task.grid_size
        thought = f"The {named} is at {mz.where(cells[ask])} of the {n}x{n} grid."
        answer, asked = f"{mark} {mz.where(cells[ask])}", f"In which cell is the {named}?"
    else:
        raise ValueError(f"unknown perception ask {ask!r}; expected both, start or goal")
    if context == "maze":
        block = question_block(task.question, task.options or (), task.problem_type)
        question = f"{block}\nDo not answer that yet. {asked}"
    elif context in ("short", "notes"):
        rng = np.random.default_rng([seed, index, 2])
        shown = rng.permutation(len(NOTES))[:rng.integers(len(NOTES) + 1)] if context == "notes" else []
        notes = [NOTES[i] for i in shown]
        question = " ".join([f"This is a {task.grid_size}x{task.grid_size} maze.", *notes, asked])
    else:
        raise ValueError(f"unknown perception context {context!r}; expected short, maze or notes")
    dialogue = OracleDialogue(1)
    dialogue.answer(thought, answer)
    return SynthTask(
        id=f"look_{index:05d}", question=question, options=None, problem_type="free-form", answer=answer,
        sub_task=SUB_TASKS[0], images=task.images, turns=dialogue.turns,
        expected_new_images=dialogue.expected_new_images, grid_size=task.grid_size,
        ground_truth={key: list(cell) for key, cell in cells.items()})


def look_tasks(n: int, seed: int, sizes: tuple[int, ...] = mz.SIZES, contexts: tuple[str, ...] = ("short",),
               labels: bool = False, asks: tuple[str, ...] = ("both",)) -> Iterator[SynthTask]:
    for index in range(n):
        yield look_task(seed, index, sizes, contexts, labels, asks)
