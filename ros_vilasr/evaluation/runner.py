"""`vilasr eval`: run a benchmark through the core's batched driver, resumably.

Every finished item is appended to ``OUT/results.jsonl`` at once (flushed and fsynced), so a run
killed at any point loses at most the items in flight; a restart skips the ids already recorded
and cuts off a truncated last line first. Lines keep the original evaluation's fields
(``model_output``, ``answer``, ``problem_type``, ``original_question_type`` ...) so the original
tools and `vilasr score` read them alike. At the end: the per-sub-task table, ``summary.json``
and plots, always computed from the whole results file (earlier runs included).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ros_vilasr.core.aggregates import aggregate, canonical_benchmark, format_table
from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines import Engine
from ros_vilasr.core.images import MAX_PIXELS_EVAL, VIDEO_FRAMES, evenly_spaced
from ros_vilasr.core.scoring import score_answer
from ros_vilasr.core.session import Budget, Session

from .benchmarks import EvalItem, infer_benchmark

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
def item_images(item: EvalItem) -> list[Image.Image]:
    paths = evenly_spaced(item.image_paths, VIDEO_FRAMES) if item.kind == "video" else item.image_paths
    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    return images


def build_session(item: EvalItem, images: list[Image.Image], max_pixels: int = MAX_PIXELS_EVAL,
                  max_new_tokens: int | None = None, image_position: str = "first",
                  system_prompt_path: str | Path | None = None) -> Session:
    """``max_new_tokens``: a cap per model turn (default: the spec's evaluation budget);
    ``image_position``: the model's prompt layout (``prompts.first_user_content``);
    ``system_prompt_path``: the model's system prompt (default: the protocol's)."""
    task = f"{item.benchmark} {item.sub_task or ''}"  # "maze" in either gives the maze budget
    budget = Budget.evaluation(task)
    if max_new_tokens:
        budget = dataclasses.replace(budget, max_new_tokens=max_new_tokens)
    return Session(images, item.question, options=item.options or (), problem_type=item.problem_type,
                   kind=item.kind, budget=budget, max_pixels=max_pixels, key=item.id,
                   image_position=image_position, system_prompt_path=system_prompt_path)


def result_row(item: EvalItem, session: Session) -> dict:
    turns = session.assistant_turns
    prediction = session.answer or ""
    return {
        "id": item.id, "question": item.question, "options": item.options,
        "problem_type": item.problem_type, "answer": item.answer, "image_path": item.image_paths,
        "data_type": item.data_type, "original_question_type": item.sub_task, "grid_size": item.grid_size,
        "model_output": turns[-1] if turns else "", "prediction": prediction,
        "score": score_answer(prediction, item.answer, item.problem_type),
        "finish_reason": session.finish_reason, "error": session.error, "calls": session.calls,
        "images": len(session.images), "prompt_tokens": session.prompt_tokens,
        "completion_tokens": session.completion_tokens, "conversations": session.conversations(),
    }


class ResultsLog:
    """The append-only results file. Opening it recovers from a killed run: complete lines are
    kept, a truncated last line is cut off; a broken line elsewhere is an error."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = self._recover()
        self.done = {str(r.get("id")) for r in self.rows}
        self._file = path.open("a", encoding="utf-8")

    def _recover(self) -> list[dict]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        rows, good_end, offset = [], 0, 0
        lines = data.split(b"\n")
        for n, line in enumerate(lines):
            end = offset + len(line) + 1
            complete = n < len(lines) - 1  # the last chunk has no newline after it
            if line.strip():
                try:
                    row = json.loads(line) if complete else None
                except json.JSONDecodeError:
                    row = None
                if not isinstance(row, dict):
                    if any(rest.strip() for rest in lines[n + 1:]):
                        raise ValueError(f"{self.path}: line {n + 1} is not a JSON object")
                    log.warning("%s: cutting off the truncated last line %d", self.path, n + 1)
                    break
                rows.append(row)
            if complete:
                good_end = end
            offset = end
        if good_end < len(data):
            with self.path.open("r+b") as f:
                f.truncate(good_end)
        return rows

    def append(self, row: dict) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows.append(row)
        self.done.add(str(row["id"]))

    def close(self) -> None:
        self._file.close()


def unique_rows(rows: list[dict]) -> list[dict]:
    """One row per id (the first), so nothing is scored twice even in a hand-merged file. Rows
    without an id (some original results files) are all kept."""
    seen, out = set(), []
    for row in rows:
        key = row.get("id")
        if key is not None:
            if str(key) in seen:
                log.warning("duplicate result for id %s ignored", key)
                continue
            seen.add(str(key))
        out.append(row)
    return out


def benchmark_name(path: str | Path, explicit: str | None = None) -> str:
    """The benchmark's name: given, else inferred from the file name, else the file's stem (a
    custom set such as `vilasr synth` output, scored as a plain mean)."""
    if explicit:
        return canonical_benchmark(explicit)
    try:
        return infer_benchmark(path)
    except ValueError:
        name = canonical_benchmark(Path(path).stem)
        log.info("%s: not a known benchmark; scoring it as custom set %r", path, name)
        return name


def summarize(benchmark: str, rows: list[dict], total: int | None = None) -> dict:
    summary = aggregate(benchmark, rows)
    calls = [r.get("calls", 0) for r in rows]
    images = [r.get("images", 0) for r in rows]
    summary |= {
        "finish_reasons": dict(sorted(Counter(str(r.get("finish_reason")) for r in rows).items())),
        "mean_calls": float(np.mean(calls)) if calls else 0.0,
        "mean_images": float(np.mean(images)) if images else 0.0,
        "items": total,
    }
    return summary


def run_evaluation(items: Sequence[EvalItem], engine: Engine, out_dir: str | Path, benchmark: str, *,
                   batch_size: int = 10, progress: bool = True, plots: bool = True,
                   max_pixels: int = MAX_PIXELS_EVAL, max_new_tokens: int | None = None,
                   image_position: str = "first", system_prompt_path: str | Path | None = None) -> dict:
    """Evaluate ``items`` (skipping those already in ``OUT/results.jsonl``); returns the summary
    of the whole results file and writes it to ``OUT/summary.json`` (plus plots). ``max_pixels``,
    ``max_new_tokens`` (per turn), ``image_position`` and ``system_prompt_path`` as in
    ``build_session``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = ResultsLog(out / RESULTS_FILE)
    todo = [it for it in items if it.id not in results.done]
    if len(todo) < len(items):
        log.info("resuming: %d of %d items already in %s", len(items) - len(todo), len(items), results.path)
    unreadable: list[str] = []
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="eval", unit="item",
               disable=not progress)
    pending: dict[str, EvalItem] = {}  # session key (= item id) → item, until its line is written

    def record(session: Session, _step=None) -> None:
        if session.done and session.key in pending:
            results.append(result_row(pending.pop(session.key), session))
            bar.update(1)

    try:
        for start in range(0, len(todo), batch_size):
            sessions = []
            for item in todo[start:start + batch_size]:
                try:
                    images = item_images(item)
                except OSError as exc:  # a missing or corrupt image: report, retry on the next run
                    log.error("item %s: cannot read its images (%s); skipped", item.id, exc)
                    unreadable.append(item.id)
                    bar.update(1)
                    continue
                sessions.append(build_session(item, images, max_pixels, max_new_tokens, image_position,
                                              system_prompt_path))
                pending[item.id] = item
            run_sessions(sessions, engine, on_step=record)
            for session in sessions:  # ended without a step (engine errors)
                record(session)
    finally:
        bar.close()
        results.close()

    rows = unique_rows(results.rows)
    summary = summarize(benchmark, rows, total=len(items))
    summary["unreadable"] = unreadable
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(format_table(summary))
    if plots:
        from .plots import write_plots

        for path in write_plots(rows, summary, out):
            log.info("plot: %s", path)
    return summary
