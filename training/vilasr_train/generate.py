"""Cold-start data from a teacher: ``vilasr-train generate``.

A teacher served behind an OpenAI-compatible endpoint (vLLM or SGLang serving e.g.
Qwen2.5-VL-72B) answers each question of a dataset in the benchmark / RL-prompt format (question,
images, options, ground truth) through the core's own draw-to-reason loop — the same protocol,
renderer and budgets as every stage — ``samples`` times. A trajectory is kept only if it passes
every rule, checked in this order (the first it fails is the one it is counted under):

- ``endpoint_failed``: the teacher could not be reached, timed out or answered garbage, after the
  engine's retries with backoff (the question is recorded as failed; the run goes on);
- ``not_executable``: a turn neither drew nor answered, or a drawing call did not parse or execute
  (tool error, an image index that does not exist, too many images);
- ``unfinished``: the dialogue ran out of turns or tokens before an answer;
- ``unparsable``: a turn is out of the protocol's format, or the answer is empty;
- ``wrong``: the answer scores below ``min_accuracy`` with the project's RL scorer (exact choice;
  mean relative accuracy for numbers — lower it to keep near misses);
- ``too_short``: fewer than ``min_rounds`` model turns (the paper keeps multi-round reasoning).

Kept trajectories are written as stage-1 data, ``OUT/trajectories.json``, with every image —
inputs copied, drawings rendered — under ``OUT/images`` and named relative to OUT, so the folder
moves as a whole to wherever ``vilasr-train sft --data OUT/trajectories.json`` runs.
``OUT/report.json`` counts kept and rejected trajectories per rule, with examples.

Sampling is stage 2's (``reflect.sample``): sharded by question index (``shard: I/N``), appended
per batch to ``OUT/samples-shard*.jsonl`` and fsync'd, so a killed run resumes without repeating or
losing a question; data and report are rebuilt from all shards and replaced atomically.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tqdm import tqdm

from ros_vilasr.core.engines import create_engine

from . import reflect
from .config import StageConfig
from .rollout import load_prompts

log = logging.getLogger(__name__)

DATA_NAME = "trajectories.json"
REPORT_NAME = "report.json"
RULES = ("endpoint_failed", "not_executable", "unfinished", "unparsable", "wrong", "too_short")
EXAMPLES_PER_RULE = 3


@dataclass
class NoTrainer:
    """generate trains nothing: no TRL keys."""


@dataclass
class Config(StageConfig):
    """``model``: the served model's name; ``data``: question files (benchmark / RL-prompt format)."""

    trl_config: ClassVar[type] = NoTrainer
    served_model: ClassVar[bool] = True  # ``model`` names what the endpoint serves, not a directory

    base_url: str = "http://localhost:8000/v1"
    api_key: str | None = None  # default: $OPENAI_API_KEY
    k: int = 1  # trajectories per question (--samples)
    min_rounds: int = 2  # model turns a kept trajectory has at least (a drawing, then the answer)
    min_accuracy: float = 1.0  # RL accuracy a kept answer reaches
    concurrency: int = 16  # requests in flight
    temperature: float = 0.7
    top_p: float = 0.95
    timeout_s: float = 600.0  # per request
    retries: int = 3  # per request, waiting backoff_s, 2·backoff_s, ... in between
    backoff_s: float = 2.0
    shard: str = "0/1"  # I/N: this process answers the questions i with i % N == I
    system_prompt: str | None = None  # a replacement system prompt file
    max_new_tokens: int | None = None  # per turn; None: the spec's RL budget
    max_total_tokens: int | None = None  # per trajectory; None: the spec's RL budget
    sampling_seed: ClassVar[None] = None  # the teacher samples; nothing to seed here

    @property
    def questions_per_batch(self) -> int:
        """Questions whose dialogues advance together: enough to keep ``concurrency`` requests busy."""
        return max(1, math.ceil(self.concurrency / self.k))


def rejection(sample: dict, config: Config) -> str | None:
    """The first rule (module doc) this sampled trajectory fails, or None when it is kept."""
    reason = sample["finish_reason"]
    if reason == "engine_error":
        return "endpoint_failed"
    if reason in ("tool_error", "bad_index", "too_many_images"):
        return "not_executable"
    if reason != "answer":
        return "unfinished"
    if not sample["well_formed"] or not (sample["answer"] or "").strip():
        return "unparsable"
    if sample["accuracy"] < config.min_accuracy:
        return "wrong"
    if sample["calls"] < config.min_rounds:
        return "too_short"
    return None


def open_teacher(config: Config):
    return create_engine("openai", config.model, base_url=config.base_url, api_key=config.api_key,
                         temperature=config.temperature, top_p=config.top_p, timeout_s=config.timeout_s,
                         max_concurrency=config.concurrency, retries=config.retries,
                         backoff_s=config.backoff_s)


def portable(record: dict, prompt: dict, out: Path) -> dict:
    """The record with its input images copied under OUT/images, every path relative to OUT."""
    folder = Path("images") / reflect.image_folder(prompt["source"]) / "inputs"
    inputs = []
    for i, src in enumerate(prompt["images"]):
        rel = folder / f"input_{i}{Path(src).suffix.lower() or '.png'}"
        if not (out / rel).is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            tmp = (out / rel).with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(out / rel)
        inputs.append(rel.as_posix())
    return record | {"images": inputs + record["images"][len(inputs):]}


def build(config: Config, out: Path, prompt_report=None, valid: int | None = None) -> dict:
    """Kept data and report from every sample file in ``out`` (rebuilt whole, replaced atomically)."""
    settings = reflect.session_settings(config)
    with reflect.exclusive(out / ".build.lock"):
        seen, records, rejected, examples = set(), [], Counter(), {rule: [] for rule in RULES}
        failed_questions = 0
        for path in reflect.sample_files(out):
            for question in tqdm(reflect.read_samples(path), desc=f"building from {path.name}", unit="q"):
                if question["source"] in seen:
                    continue
                seen.add(question["source"])
                prompt = question["prompt"]
                failed_questions += any(s["finish_reason"] == "engine_error" for s in question["samples"])
                for j, sample in enumerate(question["samples"]):
                    rule = rejection(sample, config)
                    record = None if rule else reflect.kept_record(prompt, j, sample, out, settings)
                    if rule is None and record is None:
                        rule = "replay_failed"  # the transcript no longer replays: its images are gone
                    if rule is not None:
                        rejected[rule] += 1
                        if len(examples.setdefault(rule, [])) < EXAMPLES_PER_RULE:
                            examples[rule].append(example(question["source"], j, sample))
                        continue
                    records.append(portable(record, prompt, out))
        sampled = sum(rejected.values()) + len(records)
        reflect.write_json(records, out / DATA_NAME)
        report = {"questions_valid": valid, "questions_answered": len(seen), "questions_failed": failed_questions,
                  "samples_per_question": config.k, "sampled": sampled, "kept": len(records),
                  "acceptance_rate": len(records) / sampled if sampled else 0.0,
                  "rejected": {rule: rejected[rule] for rule in (*RULES, *(set(rejected) - set(RULES)))},
                  "examples": {rule: ex for rule, ex in examples.items() if ex},
                  "rules": {"min_rounds": config.min_rounds, "min_accuracy": config.min_accuracy},
                  "prompts": prompt_report.to_json() if prompt_report is not None else None}
        reflect.write_json(report, out / REPORT_NAME)
    return report


def example(source: str, j: int, sample: dict) -> dict:
    last = next((m["content"] for m in reversed(sample["conversations"]) if m["role"] == "assistant"), "")
    return {"question": source, "sample": j, "finish_reason": sample["finish_reason"], "error": sample.get("error"),
            "answer": sample["answer"], "model_turns": sample["calls"], "last_turn": str(last)[:300]}


def format_report(report: dict) -> str:
    lines = [f"kept {report['kept']} of {report['sampled']} trajectories ({report['acceptance_rate']:.0%}) from "
             f"{report['questions_answered']} questions ({report['questions_failed']} failed at the endpoint)"]
    lines += [f"  rejected {rule:<16}{count:>8}" for rule, count in report["rejected"].items()]
    return "\n".join(lines)


def train(config: Config) -> Path:
    """The stage entry point (``vilasr-train generate``): sample, then build data and report."""
    out = Path(config.out)
    reflect.parse_shard(config.shard)  # fail before anything is created
    if config.k < 1 or config.min_rounds < 1 or not 0 < config.min_accuracy <= 1:
        raise ValueError("samples and min_rounds must be >= 1 and min_accuracy in (0, 1]")
    prompts, prompt_report = load_prompts(config.data, config.images_root, config.validation_workers)
    out.mkdir(parents=True, exist_ok=True)
    reflect.sample(config, prompts, out, engine=open_teacher(config), record_failures=True,
                   accepted=lambda s: rejection(s, config) is None)
    report = build(config, out, prompt_report, len(prompts))
    print(format_report(report))
    log.info("stage-1 data: %s (report: %s)", out / DATA_NAME, out / REPORT_NAME)
    return out / DATA_NAME
