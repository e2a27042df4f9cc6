"""Perception questions about mazes, answered in one turn by reading the image: in which cells the
start and the goal are.

A model trained from nothing must first learn to see what the drawing tasks build on, as a base
VLM learns grounding before it is taught to reason. Trained on the maze dialogues alone, the
embedded model never learned where S is (held-out, below the most frequent answer after 2,200
steps); on these short questions it learns that in a few hundred steps
(``recipe_embedded``'s ``pretrain`` step). The start's cell is phrased exactly as the maze oracle's
first thought, so what is learned here is what the dialogues ask for. (Questions about which
sides of a cell are open, mixed in half and half, kept the model from learning even this in 450
steps: their thoughts copy "row r, column c" from the question, where these must read it off
the image.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import maze as mz
from .trajectories import OracleDialogue, SynthTask

SUB_TASKS = ("look_maze_ends",)


def _ends(m: mz.Maze) -> tuple[str, str, str]:
    """(question, thought, answer) about the cells of S and G."""
    question = f"This is a {m.size}x{m.size} maze. In which cells are the green start S and the red goal G?"
    return question, mz.ends(m), f"S {mz.where(m.start)}; G {mz.where(m.goal)}"


def look_task(seed: int, index: int, sizes: tuple[int, ...] = mz.SIZES) -> SynthTask:
    """Item ``index`` of the perception set with this seed."""
    rng = np.random.default_rng([seed, index, 2])
    m = mz.generate_maze(rng, int(rng.choice(sizes)))
    question, thought, answer = _ends(m)
    dialogue = OracleDialogue(1)
    dialogue.answer(thought, answer)
    return SynthTask(
        id=f"look_{index:05d}", question=question, options=None, problem_type="free-form", answer=answer,
        sub_task=SUB_TASKS[0], images=[mz.render(m)], turns=dialogue.turns,
        expected_new_images=dialogue.expected_new_images, grid_size=m.size,
        ground_truth={"start": list(m.start), "goal": list(m.goal)})


def look_tasks(n: int, seed: int, sizes: tuple[int, ...] = mz.SIZES) -> Iterator[SynthTask]:
    for index in range(n):
        yield look_task(seed, index, sizes)
