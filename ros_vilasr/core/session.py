"""One draw-to-reason dialogue: images, drawings, budgets, feedback, finish reason and trace.

A ``Session`` is a state machine driven from outside: ``request()`` says what the model must be
asked next (or None when finished), ``submit(reply)`` applies the model's turn — parse, draw,
append the feedback turn or finish. Engines and drivers never touch the protocol themselves, so
the node, evaluation and every training stage run exactly this logic.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from . import chat, prompts
from .images import MAX_PIXELS_EVAL, MIN_PIXELS, ModelImage, prepare_image
from .protocol import ANSWER, Op, extract_answer, parse_turn, revises
from .render import Drawing, draw, targets_in_order

FINISH_REASONS = ("answer", "length", "max_calls", "tool_error", "bad_index", "too_many_images",
                  "cancelled", "engine_error")


@dataclass(frozen=True)
class Budget:
    """Limits of one dialogue (spec §3). ``max_total_tokens`` caps a whole trajectory (RL)."""

    max_calls: int = 10
    max_images: int = 45
    max_new_tokens: int = 16384
    max_total_tokens: int | None = None

    @classmethod
    def evaluation(cls, task: str = "") -> Budget:
        return cls(max_calls=20 if "maze" in task.lower() else 10)

    @classmethod
    def rl(cls, task: str = "") -> Budget:
        return cls(max_calls=20 if "maze" in task.lower() else 10, max_images=42,
                   max_new_tokens=1024, max_total_tokens=13312)


@dataclass
class Request:
    """What a session needs from the model: the dialogue so far, ready for a generation prompt."""

    key: str
    messages: list[dict]
    images: list[Image.Image]  # every image of the dialogue, in the model's grid
    max_new_tokens: int
    question: str = ""
    cancel: threading.Event | None = None  # this request alone (engines stop it where they can)


@dataclass
class Reply:
    text: str
    finish: str = "stop"  # stop | length
    token_ids: list[int] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # the engine could not answer this request


@dataclass
class TraceOp:
    kind: str  # box | line
    label: str
    image_index: int  # 1-based target image
    source_index: int  # 1-based input image it derives from
    model_coords: tuple[float, ...]
    source_coords: tuple[float, ...]


@dataclass
class Step:
    step: int  # 1-based model call
    text: str
    thought: str | None
    action: str | None
    ops: list[TraceOp] = field(default_factory=list)
    revises: bool = False
    new_images: list[int] = field(default_factory=list)  # 1-based indices
    error: str | None = None


_keys = itertools.count()


class Session:
    def __init__(self, images: list[Image.Image | ModelImage], question: str, *, options=(),
                 problem_type: str = "", kind: str = "single", budget: Budget = Budget(),
                 max_pixels: int = MAX_PIXELS_EVAL, min_pixels: int = MIN_PIXELS,
                 system_prompt_path=None, key: str | None = None, image_position: str = "first"):
        if not images:
            raise ValueError("a session needs at least one image")
        self.inputs = [im if isinstance(im, ModelImage) else prepare_image(im, max_pixels, min_pixels)
                       for im in images]
        self.key = key if key is not None else f"session-{next(_keys)}"
        self.question, self.options, self.problem_type = question, list(options), problem_type
        self.budget = budget
        self.images: list[Image.Image] = [m.image for m in self.inputs]
        self.origin: list[int] = list(range(len(self.inputs)))  # image → input it derives from
        self.drawings: list[Drawing] = [Drawing() for _ in self.inputs]
        sizes = [m.size for m in self.inputs]
        self.messages: list[dict] = [
            {"role": "system", "content": prompts.system_prompt(*sizes[0], path=system_prompt_path)},
            {"role": "user", "content": prompts.first_user_content(
                question, sizes, self.options, problem_type, kind, image_position)},
        ]
        self.steps: list[Step] = []
        self._drawn: list[Op] = []  # every operation drawn so far, for revision checks
        self.calls = self.prompt_tokens = self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.answer: str | None = None

    # -- driving -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def request(self) -> Request | None:
        if self.done:
            return None
        max_new = self.budget.max_new_tokens
        if self.budget.max_total_tokens is not None:
            max_new = min(max_new, self.budget.max_total_tokens - self.completion_tokens)
        return Request(self.key, self.messages, self.images, max_new, self.question)

    def cancel(self, reason: str = "cancelled") -> None:
        if not self.done:
            self._finish("cancelled", reason)

    def fail(self, error: str) -> None:
        """The engine could not produce a reply: end with a reason instead of losing the query."""
        if not self.done:
            self._finish("engine_error", error)

    def submit(self, reply: Reply) -> Step:
        if self.done:
            raise RuntimeError(f"session {self.key} already finished ({self.finish_reason})")
        self.calls += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        turn = parse_turn(reply.text)
        self.messages.append({"role": "assistant", "content": reply.text})
        step = Step(len(self.steps) + 1, reply.text, turn.thought, turn.action)
        self.steps.append(step)
        over_total = (self.budget.max_total_tokens is not None
                      and self.completion_tokens >= self.budget.max_total_tokens)
        if reply.finish == "length" or over_total:
            self._finish("length", "token budget reached", step)
        elif turn.answer is not None or (turn.action == ANSWER and not turn.ops):
            self._finish("answer", None, step)
        elif not turn.ops:
            why = "; ".join(turn.problems) or "no usable operation"
            self._finish("tool_error", why, step)
        elif bad := [op for op in turn.ops if not 1 <= op.index <= len(self.images)]:
            self._finish("bad_index", f"image index {bad[0].index} does not exist "
                         f"(the dialogue has {len(self.images)} images)", step)
        elif len(self.images) + len(targets_in_order(turn.ops)) > self.budget.max_images:
            self._finish("too_many_images", f"image cap {self.budget.max_images} reached", step)
        else:
            self._draw(turn.ops, step)
            if self.calls >= self.budget.max_calls:
                self._finish("max_calls", f"no answer after {self.calls} model calls", step)
            else:
                final = (self.calls + 1 >= self.budget.max_calls
                         or len(self.images) >= self.budget.max_images)
                new = [(i - 1, self.images[i - 1].size) for i in step.new_images]
                self.messages.append({"role": "user", "content": prompts.feedback_content(new, final)})
        return step

    # -- internals -----------------------------------------------------------------------------

    def _draw(self, ops: list[Op], step: Step) -> None:
        step.revises = any(revises(op, self._drawn) for op in ops)
        self._drawn.extend(ops)
        for target in targets_in_order(ops):
            k = target - 1
            mine = [op for op in ops if op.index == target]
            drawing = self.drawings[k].merged(mine)
            self.images.append(draw(self.images[k], drawing))
            self.drawings.append(drawing)
            self.origin.append(self.origin[k])
            step.new_images.append(len(self.images))
        for op in ops:
            src = self.inputs[self.origin[op.index - 1]]
            step.ops.append(TraceOp(op.kind, op.label, op.index, self.origin[op.index - 1] + 1,
                                    op.coords, tuple(src.to_source(op.coords))))

    def _finish(self, reason: str, error: str | None, step: Step | None = None) -> None:
        self.finish_reason, self.error = reason, error
        if step is not None and reason != "answer":
            step.error = error
        last = next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")
        self.answer = extract_answer(last)

    # -- outputs -------------------------------------------------------------------------------

    @property
    def assistant_turns(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "assistant"]

    def conversations(self) -> list[dict]:
        """The transcript in the shape of the original evaluation's ``conversations``."""
        return chat.to_sharegpt(self.messages)

    def trace(self) -> list[dict]:
        return [{
            "step": s.step, "thought": s.thought, "action": s.action, "revises": s.revises,
            "new_images": s.new_images, "error": s.error,
            "ops": [vars(op) | {"model_coords": list(op.model_coords),
                                "source_coords": list(op.source_coords)} for op in s.ops],
        } for s in self.steps]

    def summary(self) -> dict:
        return {"question": self.question, "answer": self.answer, "finish_reason": self.finish_reason,
                "error": self.error, "calls": self.calls, "images": len(self.images),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "steps": self.trace(), "conversations": self.conversations()}

    def save(self, out_dir: str | Path) -> Path:
        """Write every image of the dialogue (``images/image_{i}.png``, inputs first, counted from
        0 like the original's sample folders) and ``trace.json``."""
        out = Path(out_dir)
        (out / "images").mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(self.images):
            image.save(out / "images" / f"image_{i}.png")
        (out / "trace.json").write_text(json.dumps(self.summary(), indent=2, ensure_ascii=False))
        return out
