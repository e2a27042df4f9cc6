"""Reading the question back: one-turn questions that ask which objects a room question names.

The scene and rig oracles' first thought names the question's objects ("I locate the plant and
the four candidates.") and their first drawing boxes them. Trained on the whole dialogues, the
embedded model names the same objects whatever the question: it never learned to copy a word
from its prompt, though a model of its shape learns that copy alone in a few hundred steps once
the rotary channels let it (benchmarks/results/recall_probe_mrope_section.md). Here the copy is
the whole task: the room question as the dialogues ask it (images, options), then "which objects
does it name?", answered with the oracle's own first thought and the objects it boxes first, in
its order, so what is learned is the dialogue's first words. What it showed so far:
docs/embedded_model.md, "Reading the question back, in the recipe's words".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from ros_vilasr.core import protocol
from ros_vilasr.core.prompts import question_block

from . import rig_tasks, scene_tasks
from .trajectories import SynthTask, sub_task_index

SUB_TASKS = ("ask_question_objects",)
ASK = "Do not answer that yet. Which objects does the question name?"
# the sub-tasks whose question names every object the oracle boxes first
SOURCES = {"scene": (scene_tasks.scene_task, scene_tasks.SUB_TASKS,
                     ("object_rel_direction", "object_rel_distance", "object_size_estimation")),
           "rig": (rig_tasks.rig_task, rig_tasks.SUB_TASKS, ("rig_side", "rig_nearest"))}


def ask_task(seed: int, index: int, sources: tuple[str, ...] = tuple(SOURCES)) -> SynthTask:
    """Item ``index`` of the set with this seed: room question ``index // len(sources)`` of family
    ``sources[index % len(sources)]`` (its generator with the same seed), asked back."""
    if unknown := set(sources) - set(SOURCES):
        raise ValueError(f"unknown question source {sorted(unknown)}; expected {', '.join(SOURCES)}")
    make, names, wanted = SOURCES[sources[index % len(sources)]]
    task = make(seed, sub_task_index(index // len(sources), names, wanted))
    first = protocol.parse_turn(task.turns[0])
    objects = ", ".join(op.label for op in first.ops)
    turn = f"<think>{first.thought}</think>\nAction: Answer\n<answer>{objects}</answer>"
    question = f"{question_block(task.question, task.options or (), task.problem_type)}\n{ASK}"
    return dataclasses.replace(
        task, id=f"ask_{index:05d}", question=question, options=None, problem_type="free-form", answer=objects,
        sub_task=SUB_TASKS[0], turns=[turn], expected_new_images=[[]], reflective=False,
        ground_truth={"source": task.id, "sub_task": task.sub_task})


def ask_tasks(n: int, seed: int, sources: tuple[str, ...] = tuple(SOURCES)) -> Iterator[SynthTask]:
    for index in range(n):
        yield ask_task(seed, index, sources)
