"""GRPO rollouts through the core: prompts, sessions, recorded token ids, training tensors.

A rollout is one ``Session`` (the protocol, renderer and budgets the node runs) advanced by the
core's batched driver. The session keeps texts, not token ids, so ``TokenRecorder`` wraps the
engine and keeps each turn's generated ids: the loss is taken on exactly the tokens that were
sampled. ``encode_rollout`` turns a finished rollout into TRL's prompt / completion layout, where
``tool_mask`` keeps only the generated tokens and every image of the dialogue — inputs and
drawings — goes into ``pixel_values``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ros_vilasr.core.chat import placeholder_ids
from ros_vilasr.core.encoding import encode_dialogue
from ros_vilasr.core.engines import Engine
from ros_vilasr.core.engines.vllm import build_prompt, replies, sampling_args
from ros_vilasr.core.models import image_position_of, run_profile, system_prompt_of
from ros_vilasr.core.scoring import PROBLEM_TYPES
from ros_vilasr.core.session import Budget, Reply, Request, Session

from .data import DataReport, InvalidRecord, read_checked

log = logging.getLogger(__name__)

# -- prompts -----------------------------------------------------------------------------------


def normalise_prompt(record, source: str, image_dir: Path) -> dict:
    """An RL prompt record (spec §8) → ``{question, answer, images, problem_type, options, kind,
    task, data_type, source}`` with absolute image paths. Raises ``InvalidRecord``."""
    if not isinstance(record, dict):
        raise InvalidRecord("malformed", "not an object")
    question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise InvalidRecord("malformed", "no question")
    if answer is None or isinstance(answer, (dict, list)):
        raise InvalidRecord("malformed", "no answer")
    # the reference reward reads the problem type from `question_type`
    problem_type = " ".join(str(record.get("problem_type") or record.get("question_type") or "").lower().split())
    if problem_type not in PROBLEM_TYPES:
        raise InvalidRecord("unknown_problem_type", repr(problem_type))
    paths = record.get("image_path")
    paths = [paths] if isinstance(paths, str) else paths
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise InvalidRecord("no_image")
    options = record.get("options") or []
    if not isinstance(options, list):
        raise InvalidRecord("malformed", "options is not a list")
    data_type = str(record.get("data_type") or "").lower()
    kind = "single" if len(paths) == 1 else "video" if data_type == "video" else "views"
    is_maze = record.get("grid_size") is not None or "maze" in f"{data_type} {record.get('question_type')}".lower()
    return {"question": question, "answer": str(answer), "problem_type": problem_type,
            "options": [str(o) for o in options], "kind": kind, "task": "maze" if is_maze else "",
            "data_type": data_type,
            "images": [str(p if (p := Path(s)).is_absolute() else image_dir / p) for s in paths],
            "source": source}


def load_prompts(paths, images_root=None, workers: int = 8) -> tuple[list[dict], DataReport]:
    """Read and check every prompt, images included (decoded once, in ``workers`` threads); the
    valid ones, and the report of the rest."""
    candidates, checks, report = read_checked(paths, normalise_prompt, images_root, workers)
    prompts = []
    for c in candidates:
        if bad := next((p for p in c["images"] if isinstance(checks[p], str)), None):
            report.skip(checks[bad], c["source"], bad)
            continue
        prompts.append(c)
        report.files[c["source"].rpartition("#")[0]]["kept"] += 1
    log.info("prompts: kept %d, skipped %s", len(prompts), dict(report.skipped) or "none")
    return prompts, report


# -- sessions and engines ----------------------------------------------------------------------


@dataclass(frozen=True)
class SessionSettings:
    max_pixels: int
    system_prompt: str | None = None  # a replacement for the core's system prompt file
    max_new_tokens: int | None = None  # per turn; None: the spec's RL budget
    max_total_tokens: int | None = None  # per trajectory; None: the spec's RL budget
    image_position: str = "first"  # the policy's prompt layout (its run profile)

    @classmethod
    def for_policy(cls, model: str, max_pixels: int, system_prompt: str | None = None,
                   max_new_tokens: int | None = None, max_total_tokens: int | None = None) -> SessionSettings:
        """Settings that prompt ``model`` as it was trained: its profile's layout and, unless
        ``system_prompt`` replaces it, its own system prompt."""
        profile = run_profile(model)
        return cls(max_pixels, system_prompt or system_prompt_of(profile), max_new_tokens, max_total_tokens,
                   image_position_of(profile))

    def budget(self, task: str) -> Budget:
        spec = Budget.rl(task)
        return Budget(spec.max_calls, spec.max_images, self.max_new_tokens or spec.max_new_tokens,
                      self.max_total_tokens or spec.max_total_tokens)


def open_session(prompt: dict, settings: SessionSettings) -> Session:
    """The session of one rollout. An image that cannot be opened any more (validated before
    training, gone since) must not end the run: the session starts cancelled, so it scores 0 and
    its group — all cancelled alike — has equal rewards, hence no gradient."""
    try:
        images = []
        for path in prompt["images"]:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        broken = None
    except OSError as exc:
        log.warning("rollout of %s without its images: %s", prompt["source"], exc)
        images, broken = [Image.new("RGB", (56, 56))], f"image unreadable: {exc}"
    session = Session(images, prompt["question"], options=prompt["options"], problem_type=prompt["problem_type"],
                      kind=prompt["kind"], budget=settings.budget(prompt["task"]), max_pixels=settings.max_pixels,
                      system_prompt_path=settings.system_prompt, image_position=settings.image_position)
    if broken:
        session.cancel(broken)
    return session


@dataclass
class TokenRecorder:
    """An engine wrapper that keeps the generated token ids of every turn, per session key."""

    engine: Engine
    turns: dict[str, list[list[int] | None]] = field(default_factory=dict)

    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        replies = self.engine.generate(requests, cancel=cancel)
        for request, reply in zip(requests, replies):
            if reply.error is None:  # an error reply never becomes an assistant turn
                self.turns.setdefault(request.key, []).append(reply.token_ids)
        return replies

    def close(self) -> None:
        self.engine.close()


class ColocatedVLLM:
    """The core's vLLM request building over an ``LLM`` the trainer owns (TRL's colocated one,
    whose weights the trainer syncs). Thin on purpose: it cannot be exercised without a GPU."""

    def __init__(self, llm, temperature: float, top_p: float):
        from vllm import SamplingParams

        self.llm, self.temperature, self.top_p, self._params = llm, temperature, top_p, SamplingParams
        self.suppress = placeholder_ids(llm.get_tokenizer())

    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        params = [self._params(**sampling_args(r, self.temperature, self.top_p, None, self.suppress))
                  for r in requests]
        return replies(self.llm.generate([build_prompt(r) for r in requests], params, use_tqdm=False))

    def close(self) -> None:
        pass  # the trainer owns the LLM


# -- training tensors --------------------------------------------------------------------------


def encode_rollout(processor, session: Session, turn_ids: list[list[int] | None]) -> dict:
    """One finished rollout in TRL's layout: ``prompt_ids`` (everything before the first generated
    token), ``completion_ids`` (the rest of the dialogue) and ``tool_mask`` (1 on generated tokens:
    feedback turns, image placeholders and turn headers are 0), plus the vision inputs of every
    image of the dialogue. Turns without recorded ids (an engine that returns text only) are
    tokenised from their text."""
    enc = encode_dialogue(processor, session.messages, session.images, assistant_ids=turn_ids)
    # a rollout with no generated token still needs one completion position for TRL's slicing
    split = enc.loss_mask.index(1) if 1 in enc.loss_mask else len(enc.input_ids) - 1
    return {"prompt_ids": enc.input_ids[:split], "completion_ids": enc.input_ids[split:],
            "tool_mask": enc.loss_mask[split:], "mm_token_type_ids": enc.mm_token_type_ids(enc.input_ids),
            **enc.vision_inputs()}


def collate_rollouts(rows: list[dict], pad_id: int) -> dict:
    """Left-padded prompts, right-padded completions (TRL's GRPO layout); ``pixel_values`` and
    ``image_grid_thw`` concatenated in rollout order, ``num_images`` telling them apart."""
    prompt_width = max(len(r["prompt_ids"]) for r in rows)
    completion_width = max(len(r["completion_ids"]) for r in rows)

    def left(values, fill):
        return [fill] * (prompt_width - len(values)) + values

    def right(values, fill):
        return values + [fill] * (completion_width - len(values))

    return {
        "prompt_ids": torch.tensor([left(r["prompt_ids"], pad_id) for r in rows]),
        "prompt_mask": torch.tensor([left([1] * len(r["prompt_ids"]), 0) for r in rows]),
        "completion_ids": torch.tensor([right(r["completion_ids"], pad_id) for r in rows]),
        "completion_mask": torch.tensor([right([1] * len(r["completion_ids"]), 0) for r in rows]),
        "tool_mask": torch.tensor([right(r["tool_mask"], 0) for r in rows]),
        "mm_token_type_ids": torch.tensor([
            left(r["mm_token_type_ids"][:len(r["prompt_ids"])], 0)
            + right(r["mm_token_type_ids"][len(r["prompt_ids"]):], 0) for r in rows]),
        "pixel_values": torch.cat([r["pixel_values"] for r in rows]),
        "image_grid_thw": torch.cat([r["image_grid_thw"] for r in rows]),
        "num_images": [len(r["image_grid_thw"]) for r in rows],
    }
