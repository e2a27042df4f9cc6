"""From oracle plans to files: evaluation items (spec §8, ViLaSR-eval) and training trajectories
(ViLaSR-data ShareGPT records), with every drawn image rendered by the core.

A task generator (maze, scene) yields ``SynthTask``s: input images already in the model's grid,
the question, the ground truth and the oracle's assistant turns. The turns are played through real
``Session``s with the replay engine, so drawn images, feedback turns and image indices come from the
core itself; the oracle only predicts the indices (to refer to its own drawings) and that
prediction is checked against what the session did.

Output is byte-identical for identical tasks: PNGs without metadata at a fixed compression level,
JSON with sorted keys, nothing time-dependent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ros_vilasr.core import protocol
from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines.replay import ReplayEngine
from ros_vilasr.core.images import MAX_PIXELS_EVAL, MAX_PIXELS_TRAIN, resized_size
from ros_vilasr.core.render import targets_in_order
from ros_vilasr.core.scoring import rl_accuracy, score_answer
from ros_vilasr.core.session import Budget, Session

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
TRAJECTORIES_FILE = "trajectories.json"
PROMPTS_FILE = "prompts.jsonl"  # the items again, one per line: RL prompts for stage 3
CHUNK = 32  # sessions rendered at once: bounds memory for large n


@dataclass
class SynthTask:
    id: str
    question: str
    options: list[str] | None
    problem_type: str
    answer: str
    sub_task: str
    images: list[Image.Image]  # inputs, sized so the model's smart resize leaves them unchanged
    turns: list[str]  # the oracle's assistant turns
    expected_new_images: list[list[int]]  # per turn, the 1-based indices its drawings must get
    reflective: bool = False
    kind: str = "single"  # single | video | views
    grid_size: int | None = None
    ground_truth: dict = field(default_factory=dict)  # what the generator knows (maze, scene, cameras)

    @property
    def data_type(self) -> str:
        if len(self.images) == 1:
            return "single_view"
        return "video" if self.kind == "video" else "multi_view"


class Reject(Exception):
    """This scene (or maze) cannot ask the question unambiguously; draw another."""


def until_unambiguous(attempt, what: str, tries: int = 200):
    """``attempt()``'s result, retried (the generator's random state moves on) while it raises
    ``Reject``; ``what`` names the task in the error when ``tries`` attempts all fail."""
    for _ in range(tries):
        try:
            return attempt()
        except Reject:
            continue
    raise RuntimeError(f"no unambiguous {what} in {tries} tries")


def model_grid_size(width: int, height: int) -> tuple[int, int]:
    """Size the model sees, checked to be the same at evaluation and training resolution: one
    trajectory then serves both. Generators render their images at exactly this size."""
    size = resized_size(width, height, MAX_PIXELS_EVAL)
    if resized_size(width, height, MAX_PIXELS_TRAIN) != size:
        raise ValueError(f"{width}x{height} is resized differently at evaluation and training resolution")
    return size


def box_op(bbox, label: str) -> dict:
    return {"bbox_2d": [round(v) for v in bbox], "label": label}


def line_op(start, end, label: str) -> dict:
    return {"start_point_2d": [round(v) for v in start], "end_point_2d": [round(v) for v in end],
            "label": label}


@dataclass
class PlanStep:
    """One drawing step of an oracle. ``thought`` may name the images it looks at as
    ``{latest[f]}``: the newest image drawn from input f (filled in when the turn is written)."""

    thought: str
    tool: str
    ops: list[tuple[int, dict]]  # (0-based input image to draw on, operation without "index")


@dataclass
class Mistake:
    """Makes a trajectory reflective: operation ``op`` of step ``step`` is first drawn as ``wrong``;
    the next turn notices it (``reason``) and redraws the step correctly under the same labels on
    the images it was first drawn on."""

    step: int
    op: int
    wrong: dict
    reason: str


class OracleDialogue:
    """Writes the oracle's turns in the protocol's format (spec §1). Each operation targets the
    newest image drawn from its input, whose index is predicted with the core's own target
    ordering (spec §2); the prediction is checked against the session later."""

    def __init__(self, n_inputs: int):
        self.n_images = n_inputs
        self.latest = list(range(1, n_inputs + 1))  # per input: 1-based index of its newest image
        self.turns: list[str] = []
        self.expected_new_images: list[list[int]] = []

    def play(self, steps: list[PlanStep], mistake: Mistake | None = None) -> None:
        for n, step in enumerate(steps):
            thought = step.thought.format(latest=self.latest)
            if mistake is not None and mistake.step == n:
                before = list(self.latest)
                ops = list(step.ops)
                frame = ops[mistake.op][0]
                ops[mistake.op] = (frame, mistake.wrong)
                self._turn(thought, step.tool, ops)
                label = mistake.wrong["label"]
                redo = sorted({before[f] for f, _ in ops})
                thought = (f"Checking image {self.latest[frame]}: {mistake.reason} I redraw this step on "
                           f"image{'s' if len(redo) > 1 else ''} {', '.join(map(str, redo))} with "
                           f"'{label}' corrected.")
                self.latest = before
            self._turn(thought, step.tool, step.ops)

    def answer(self, thought: str, answer: str) -> None:
        thought = thought.format(latest=self.latest)
        self.turns.append(f"<think>{thought}</think>\nAction: Answer\n<answer>{answer}</answer>")
        self.expected_new_images.append([])

    def _turn(self, thought: str, tool: str, ops: list[tuple[int, dict]]) -> None:
        frame_of = {self.latest[f]: f for f, _ in ops}
        items = [{"index": self.latest[f], **op} for f, op in ops]
        body = "[\n" + ",\n".join("  " + json.dumps(op) for op in items) + "\n]"
        text = f"<think>{thought}</think>\nAction: {tool}\n```json\n{body}\n```"
        new = []
        for target in targets_in_order(protocol.parse_turn(text).ops):
            self.n_images += 1
            self.latest[frame_of[target]] = self.n_images
            new.append(self.n_images)
        self.turns.append(text)
        self.expected_new_images.append(new)


def lettered(choices: list[str], correct: str) -> tuple[list[str], str]:
    """Options "A. ...", "B. ..." in the given order; returns (options, the correct one's letter)."""
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    return [f"{key}. {c}" for key, c in zip(letters, choices)], letters[choices.index(correct)]


def multiple_choice(rng, correct: str, distractors: list[str]) -> tuple[list[str], str]:
    """Options "A. ..." with the correct one at a random position; returns (options, letter)."""
    choices = [correct, *distractors]
    return lettered([choices[i] for i in rng.permutation(len(choices))], correct)


def sub_task_index(k: int, sub_tasks: tuple[str, ...], wanted) -> int:
    """The index of the ``k``-th item whose sub-task is in ``wanted``, for a generator whose item
    ``i`` asks ``sub_tasks[i % len(sub_tasks)]``."""
    cycle = [i for i, name in enumerate(sub_tasks) if name in wanted]
    if not cycle:
        raise ValueError(f"none of the sub-tasks {sorted(wanted)} is one of {', '.join(sub_tasks)}")
    return k // len(cycle) * len(sub_tasks) + cycle[k % len(cycle)]


def is_reflective_share(index: int, share: float) -> bool:
    """Spreads exactly floor(n * share) reflective items evenly over the first n."""
    return int((index + 1) * share) > int(index * share)


def _session(task: SynthTask, image_position: str, system_prompt_path: str | Path | None) -> Session:
    for im in task.images:
        if model_grid_size(*im.size) != im.size:
            raise ValueError(f"{task.id}: input {im.size} is not in the model's grid")
    return Session(task.images, task.question, options=task.options or (), problem_type=task.problem_type,
                   kind=task.kind, budget=Budget.evaluation(task.sub_task), max_pixels=MAX_PIXELS_TRAIN,
                   key=task.id, image_position=image_position, system_prompt_path=system_prompt_path)


def _check(task: SynthTask, session: Session) -> None:
    """An oracle trajectory must be exactly what the oracle planned, well formed and correct."""
    problems = []
    if session.finish_reason != "answer":
        problems.append(f"finished with {session.finish_reason} ({session.error})")
    if [s.new_images for s in session.steps] != task.expected_new_images:
        problems.append(f"image indices {[s.new_images for s in session.steps]} "
                        f"!= planned {task.expected_new_images}")
    if not protocol.format_ok(session.assistant_turns):
        problems.append("format reward 0")
    if score_answer(session.answer, task.answer, task.problem_type) != 1.0:
        problems.append(f"answer {session.answer!r} does not score 1 against {task.answer!r}")
    if rl_accuracy(session.answer, task.answer, task.problem_type) != 1.0:
        problems.append("RL accuracy below 1")
    steps = [protocol.parse_turn(t).ops for t in session.assistant_turns]
    if protocol.is_reflective(steps) != task.reflective:
        problems.append(f"is_reflective != {task.reflective}")
    if problems:
        raise RuntimeError(f"oracle trajectory {task.id}: " + "; ".join(problems))


def _save_png(image: Image.Image, path: Path) -> None:
    # No metadata and a fixed compression level: the same pixels give the same bytes.
    image.save(path, format="PNG", compress_level=6, optimize=False)


def _records(task: SynthTask, session: Session, out: Path) -> tuple[dict, dict]:
    inputs = []
    for k, image in enumerate(task.images, start=1):
        rel = f"images/{task.id}_{k}.png"
        _save_png(image, out / rel)
        inputs.append(rel)
    drawn = []
    for n in range(len(task.images) + 1, len(session.images) + 1):
        rel = f"drawn/{task.id}_{n}.png"
        _save_png(session.images[n - 1], out / rel)
        drawn.append(rel)
    item = {"id": task.id, "question": task.question, "options": task.options,
            "problem_type": task.problem_type, "answer": task.answer, "image_path": inputs,
            "data_type": task.data_type, "original_question_type": task.sub_task,
            "grid_size": task.grid_size, "ground_truth": task.ground_truth}
    trajectory = {"id": task.id, "question": task.question, "options": task.options,
                  "problem_type": task.problem_type, "answer": task.answer,
                  "original_question_type": task.sub_task, "reflective": task.reflective,
                  "conversations": session.conversations(), "images": inputs + drawn}
    return item, trajectory


def _chunks(tasks: Iterable[SynthTask], size: int) -> Iterator[list[SynthTask]]:
    it = iter(tasks)
    while chunk := list(islice(it, size)):
        yield chunk


def write_dataset(tasks: Iterable[SynthTask], out_dir: str | Path, total: int | None = None,
                  image_position: str = "first", system_prompt_path: str | Path | None = None) -> dict:
    """Render every task's oracle trajectory through the core, check it, and write
    ``eval.json``, ``trajectories.json``, ``prompts.jsonl`` (RL prompts), ``images/`` (inputs) and
    ``drawn/`` (drawings). ``image_position`` and ``system_prompt_path``: the prompt layout and
    system prompt of the model the trajectories are for; evaluation and RL prompts carry neither
    (whoever poses them prompts the model its own way)."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "drawn").mkdir(parents=True, exist_ok=True)
    items, trajectories = [], []
    with tqdm(total=total, desc="oracle trajectories", unit="item") as bar:
        for chunk in _chunks(tasks, CHUNK):
            sessions = [_session(t, image_position, system_prompt_path) for t in chunk]
            engine = ReplayEngine([{"id": t.id, "conversations": [
                {"role": "assistant", "content": turn} for turn in t.turns]} for t in chunk])
            run_sessions(sessions, engine)
            for task, session in zip(chunk, sessions):
                _check(task, session)
                item, trajectory = _records(task, session, out)
                items.append(item)
                trajectories.append(trajectory)
            bar.update(len(chunk))
    for name, data in ((EVAL_FILE, items), (TRAJECTORIES_FILE, trajectories)):
        (out / name).write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                encoding="utf-8")
    (out / PROMPTS_FILE).write_text("".join(json.dumps(i, sort_keys=True, ensure_ascii=False) + "\n" for i in items),
                                    encoding="utf-8")
    stats = {"items": len(items), "reflective": sum(t["reflective"] for t in trajectories),
             "drawn_images": sum(len(t["images"]) for t in trajectories) - sum(len(i["image_path"]) for i in items)}
    log.info("wrote %d items (%d reflective trajectories, %d drawn images) to %s",
             stats["items"], stats["reflective"], stats["drawn_images"], out)
    return stats
