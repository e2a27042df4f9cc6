"""Stage 2: reflective rejection sampling (spec §6–7).

Sample K trajectories per question from the stage-1 model, keep the correct, well-formed and
reflective ones, write them as ViLaSR-data that stage 1's loader reads unchanged, and (``sft``)
fine-tune the model on them with stage 1's trainer. Rollouts are core ``Session``s advanced by the
core's batched driver: the protocol, renderer and budgets (the RL ones, spec §3) are the node's.

What is kept (each judgment is stored per sample, so the filter can be re-run without sampling):

- correct: the dialogue ended with an answer whose RL accuracy (``scoring.rl_accuracy``: exact
  match for multiple choice, MRA of the first number for numerical / regression) reaches
  ``min_accuracy``. The default 1.0 means the right letter, or a number within 5 % of the truth
  (MRA is 1 iff every threshold 0.50…0.95 passes): the paper keeps correct trajectories only.
- well formed: ``protocol.format_ok`` on every assistant turn (answered dialogues only).
- reflective: ``protocol.is_reflective`` over the operations each step drew — some label drawn
  again at a later step with other coordinates or on another image.
- with ``answer_from_thought``: a multiple-choice answer is the option its final thought concludes
  with (``protocol.answer_follows_thought``), so a letter right by luck is not taught.

Runs in three restartable phases:

1. Sampling, sharded: shard I of N takes the valid prompts i with i % N == I and appends one JSON
   line per question (its prompt and all K transcripts with their judgments) to
   ``OUT/samples-shard{I}of{N}.jsonl``, flushed and fsync'd as each batch of questions finishes.
   A question is skipped when any ``OUT/samples-*.jsonl`` already holds it, so a killed run (or
   one restarted with another shard count) loses at most the batch in flight and duplicates
   nothing; a line cut by a kill is dropped before appending.
2. Building, at the end of every shard, serialised by a lock: ``OUT/reflective.json``,
   ``OUT/images/`` and ``OUT/report.json`` from all sample files, one entry per question, so the
   shard that finishes last builds from everything. Drawn images are rendered by replaying the
   kept transcripts through a ``Session`` (deterministic, checked against the transcript) into
   folders named after the transcript; every file is replaced atomically, so a killed build
   leaves nothing to clean up and a rebuild renders only what is new.
3. ``sft``: stage-1 training from ``model`` on ``OUT/reflective.json`` into ``OUT/sft``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines import create_engine
from ros_vilasr.core.engines.replay import ReplayEngine
from ros_vilasr.core.protocol import answer_follows_thought
from ros_vilasr.core.session import Budget, Session

from . import sft
from .config import InputError
from .rewards import score_rollout
from .rollout import SessionSettings, load_prompts, open_session

log = logging.getLogger(__name__)

DATA_NAME = "reflective.json"
REPORT_NAME = "report.json"
STATS = ("questions", "sampled", "correct", "well_formed", "reflective", "follows_thought", "kept")


@dataclass
class Config(sft.Config):
    """``data``: RL prompt files (``--prompts``). TRL keys go to ``SFTConfig`` and are used by ``sft``."""

    k: int = 8  # trajectories sampled per question
    engine: str = "transformers"  # transformers (CPU, or a GPU without vLLM) | vllm
    engine_options: dict = field(default_factory=dict)  # more engine arguments (vLLM: LLM(...) keys)
    temperature: float = 1.0
    top_p: float = 1.0
    sampling_seed: int | None = None  # seeds torch once (transformers engine); vLLM samples unseeded
    questions_per_batch: int = 8  # questions whose K dialogues advance together; saved per batch
    min_accuracy: float = 1.0  # RL accuracy a trajectory needs to count as correct
    answer_from_thought: bool = False  # keep only answers that are the option the final thought names (rewards.py)
    # `sft` needs at least this many kept trajectories: a fine-tune on a handful teaches their
    # answer forms, not reflection (the recipe then keeps the sampled model, unchanged)
    min_kept: int = 1
    shard: str = "0/1"  # I/N: this process samples the prompts i with i % N == I
    sft: bool = False  # then fine-tune `model` on the kept trajectories (into OUT/sft)
    system_prompt: str | None = None  # a replacement system prompt file
    max_new_tokens: int | None = None  # per turn; None: the spec's RL budget (1024)
    max_total_tokens: int | None = None  # per trajectory; None: the spec's RL budget (13312)
    # `sft` passes over the kept trajectories at most this often: one kept dialogue drilled for 40
    # steps took the drawing turns that execute from 97% to 57%
    max_epochs: float | None = 3.0


def parse_shard(text: str) -> tuple[int, int]:
    index, sep, count = str(text).partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        index = count = -1
    if not sep or not 0 <= index < count:
        raise ValueError(f"shard must be I/N with 0 <= I < N, got {text!r}")
    return index, count


def session_settings(config: Config) -> SessionSettings:
    return SessionSettings.for_policy(config.model, config.max_pixels, config.system_prompt, config.max_new_tokens,
                                      config.max_total_tokens)


# -- judging one trajectory ---------------------------------------------------------------------


def judge(session: Session, prompt: dict) -> dict:
    """A sampled trajectory as stored: its transcript, what it cost and the three judgments."""
    score = score_rollout(session, prompt)
    return {"conversations": session.conversations(), "finish_reason": session.finish_reason,
            "error": session.error, "answer": session.answer, "calls": session.calls, "images": len(session.images),
            "completion_tokens": session.completion_tokens, "accuracy": score.accuracy,
            "well_formed": bool(score.format), "reflective": score.reflective}


def keep(sample: dict, prompt: dict, min_accuracy: float, answer_from_thought: bool = False) -> bool:
    return (sample["accuracy"] >= min_accuracy and sample["well_formed"] and sample["reflective"]
            and (not answer_from_thought or follows(sample, prompt)))


def follows(sample: dict, prompt: dict) -> bool:
    """``protocol.answer_follows_thought`` of a stored sample's final turn, from its transcript (so
    older sample files are judged too); a dialogue that did not answer contradicts nothing."""
    last = [m["content"] for m in sample["conversations"] if m["role"] == "assistant"][-1:]
    return sample["finish_reason"] != "answer" or answer_follows_thought(last[0], sample["answer"],
                                                                         prompt["problem_type"])


# -- sample files ------------------------------------------------------------------------------


def sample_files(out: Path) -> list[Path]:
    return sorted(out.glob("samples-shard*.jsonl"))


def read_samples(path: Path) -> Iterator[dict]:
    """The questions of a sample file. A last line without its newline is a write cut by a kill
    (or one still in progress in another shard): not a question yet."""
    with path.open("rb") as f:
        for n, line in enumerate(f):
            if not line.endswith(b"\n"):
                return
            try:
                yield json.loads(line)
            except ValueError:
                log.warning("%s: line %d is not JSON; ignored", path, n + 1)


def drop_partial_line(path: Path) -> None:
    """Cut a partial last line, so the next append starts a line of its own."""
    if not path.exists():
        return
    end = 0
    with path.open("rb") as f:
        for line in f:
            if line.endswith(b"\n"):
                end += len(line)
    if end < path.stat().st_size:
        log.warning("%s: dropping a partial last line (a killed run)", path)
        os.truncate(path, end)


def sample(config: Config, prompts: list[dict], out: Path, engine=None, record_failures: bool = False,
           accepted=None) -> None:
    """Sample this shard's unsampled questions, appending each finished batch to its file.

    ``engine``: built from the config when not given (and closed here either way). A question
    whose dialogues failed at the engine is left for a restarted run, or with ``record_failures``
    written with its failures (counted, not tried again). ``accepted(sample) -> bool`` puts the
    acceptance rate on the progress bar."""
    index, count = parse_shard(config.shard)
    done = {q["source"] for path in sample_files(out) for q in read_samples(path)}
    todo = [p for i, p in enumerate(prompts) if i % count == index and p["source"] not in done]
    path = out / f"samples-shard{index}of{count}.jsonl"
    log.info("shard %d/%d: %d questions to sample (%d already sampled in %s)", index, count, len(todo),
             len(done), out)
    if not todo:
        return
    drop_partial_line(path)
    if config.sampling_seed is not None:
        torch.manual_seed(config.sampling_seed)
    settings = session_settings(config)
    engine = engine or open_engine(config)
    judged = kept = 0
    try:
        with path.open("ab") as f, tqdm(total=len(todo), desc=f"sampling {index}/{count}", unit="q") as bar:
            for start in range(0, len(todo), config.questions_per_batch):
                batch = todo[start:start + config.questions_per_batch]
                sessions = run_sessions([open_session(p, settings) for p in batch for _ in range(config.k)], engine)
                for n, prompt in enumerate(batch):
                    group = sessions[n * config.k:(n + 1) * config.k]
                    failed = [s.error for s in group if s.finish_reason == "engine_error"]
                    if failed and not record_failures:  # not written: a restarted run tries it again
                        log.warning("%s not sampled, the engine failed: %s", prompt["source"], failed[0])
                        continue
                    samples = [judge(s, prompt) for s in group]
                    f.write((json.dumps({"source": prompt["source"], "samples": samples, "prompt": prompt | {
                        "images": [os.path.abspath(p) for p in prompt["images"]]}}) + "\n").encode())
                    if accepted is not None:
                        judged, kept = judged + len(samples), kept + sum(map(accepted, samples))
                f.flush()
                os.fsync(f.fileno())
                bar.update(len(batch))
                if judged:
                    bar.set_postfix(accepted=f"{kept}/{judged} ({kept / judged:.0%})")
    finally:
        engine.close()


def open_engine(config: Config):
    options = {"temperature": config.temperature, "top_p": config.top_p}
    if config.engine == "vllm":
        if "seed" in config.engine_options:
            raise ValueError("engine_options.seed would seed every request alike: the K samples of a question "
                             "would be identical")
        options |= {"max_images": Budget.rl().max_images, "max_pixels": config.max_pixels}
    elif config.engine == "transformers":
        options["max_cached_dialogues"] = config.k * config.questions_per_batch
    else:
        raise ValueError(f"engine must be transformers or vllm, got {config.engine!r}")
    return create_engine(config.engine, config.model, **options | config.engine_options)


# -- the kept data and the report --------------------------------------------------------------


def replay(prompt: dict, sample: dict, settings: SessionSettings) -> Session | None:
    """The sampled dialogue rebuilt from its transcript — the same drawings, pixel for pixel — or
    None when it no longer replays identically (input image gone, system prompt changed)."""
    session = open_session(prompt, settings)
    run_sessions([session], ReplayEngine([sample]))
    return session if session.conversations() == sample["conversations"] else None


def image_folder(source: str) -> str:
    """A short, unique, filesystem-safe folder name for a question (``file#n``)."""
    path, _, n = source.rpartition("#")
    return f"{Path(path).stem}-{n}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"


def save_image(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_json(data, path: Path) -> None:
    """Atomically: a reader (or a kill) never sees half a file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(data, f, indent=1)
    os.replace(f.name, path)


@contextmanager
def exclusive(path: Path):
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def kept_record(prompt: dict, j: int, sample: dict, out: Path, settings: SessionSettings) -> dict | None:
    """A kept trajectory as a ViLaSR-data record: input paths (absolute), then its drawn images,
    under OUT/images (relative to OUT, where the data file lives). Their folder is named after the
    transcript, so images already there are this transcript's and a rebuild only renders new ones.
    None when the transcript no longer replays identically."""
    digest = hashlib.sha1(json.dumps(sample["conversations"]).encode()).hexdigest()[:12]
    folder = Path("images") / image_folder(prompt["source"]) / f"{j}-{digest}"
    inputs = len(prompt["images"])
    drawn = [(folder / f"image_{i}.png").as_posix() for i in range(inputs, sample["images"])]
    if not all((out / p).is_file() for p in drawn):
        if (session := replay(prompt, sample, settings)) is None:
            return None
        for path, image in zip(drawn, session.images[inputs:], strict=True):
            save_image(image, out / path)
    return {"id": f"{prompt['source']}@{j}", "data_type": prompt.get("data_type", ""),
            "conversations": sample["conversations"], "images": prompt["images"] + drawn}


def build(config: Config, out: Path, prompt_report=None, valid_prompts: int | None = None) -> dict:
    """Write the kept data and the report from every sample file in ``out`` (module doc, phase 2)."""
    settings = session_settings(config)
    with exclusive(out / ".build.lock"):
        seen, records, replay_failed = set(), [], 0
        stats: dict[str, Counter] = {}
        for path in sample_files(out):
            for question in tqdm(read_samples(path), desc=f"building from {path.name}", unit="q"):
                if question["source"] in seen:
                    continue
                seen.add(question["source"])
                prompt = question["prompt"]
                counts = stats.setdefault(prompt.get("data_type") or prompt["problem_type"], Counter())
                counts["questions"] += 1
                for j, s in enumerate(question["samples"]):
                    record = None
                    if keep(s, prompt, config.min_accuracy, config.answer_from_thought):
                        record = kept_record(prompt, j, s, out, settings)
                        if record is None:
                            log.warning("%s sample %d does not replay identically; not kept", question["source"], j)
                            replay_failed += 1
                        else:
                            records.append(record)
                    counts.update(sampled=1, correct=s["accuracy"] >= config.min_accuracy,
                                  well_formed=s["well_formed"], reflective=s["reflective"],
                                  follows_thought=follows(s, prompt), kept=record is not None,
                                  calls=s["calls"], images=s["images"])
        write_json(records, out / DATA_NAME)
        report = {"questions_valid": valid_prompts, "questions_sampled": len(seen),
                  "min_accuracy": config.min_accuracy, "answer_from_thought": config.answer_from_thought,
                  "written": len(records), "replay_failed": replay_failed,
                  "by_data_type": {name: summarise(c) for name, c in sorted(stats.items())},
                  "total": summarise(sum(stats.values(), Counter())),
                  "prompts": prompt_report.to_json() if prompt_report is not None else None}
        write_json(report, out / REPORT_NAME)
    log.info("kept %d trajectories of %d questions in %s", len(records), len(seen), out / DATA_NAME)
    return report


def summarise(counts: Counter) -> dict:
    """Counts of a group, with model calls and images (inputs included) per sampled dialogue."""
    sampled = counts["sampled"]
    return {**{name: counts[name] for name in STATS},
            "mean_calls": counts["calls"] / sampled if sampled else 0.0,
            "mean_images": counts["images"] / sampled if sampled else 0.0}


def format_report(report: dict) -> str:
    """The report as a table: one row per data type, then the total."""
    rows = {**report["by_data_type"], "total": report["total"]}
    heads = ("data type", *STATS, "mean_calls", "mean_images")
    width = max(len(heads[0]), *map(len, rows))
    cols = [max(12, len(h) + 2) for h in heads[1:]]
    lines = [f"{heads[0]:<{width}}" + "".join(f"{h:>{w}}" for h, w in zip(heads[1:], cols))]
    for name, row in rows.items():
        cells = [f"{row[s]:>{w}}" for s, w in zip(STATS, cols)]
        cells += [f"{row[s]:>{w}.2f}" for s, w in zip(("mean_calls", "mean_images"), cols[len(STATS):])]
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


# -- the stage ---------------------------------------------------------------------------------


def train(config: Config) -> Path:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    parse_shard(config.shard)  # fail before loading anything
    if not 0 < config.min_accuracy <= 1:
        raise ValueError(f"min_accuracy must be in (0, 1], got {config.min_accuracy}")
    if config.min_kept < 1:
        raise ValueError(f"min_kept must be at least 1, got {config.min_kept}")
    prompts, prompt_report = load_prompts(config.data, config.images_root, config.validation_workers)
    sample(config, prompts, out)
    report = build(config, out, prompt_report, len(prompts))
    print(format_report(report))
    if report["questions_sampled"] < len(prompts):
        log.info("%d of %d questions sampled so far (other shards still running?)",
                 report["questions_sampled"], len(prompts))
    if not config.sft:
        return out / DATA_NAME
    if report["written"] < config.min_kept:
        raise InputError(f"{report['written']} trajectories kept in {out / DATA_NAME}, fewer than "
                         f"min_kept = {config.min_kept}: too few to fine-tune on")
    # stage 1's trainer and recipe, on the kept data (paths in it resolve against OUT)
    stage1 = {f.name: getattr(config, f.name) for f in dataclasses.fields(sft.Config)}
    return sft.train(sft.Config(**stage1 | {"data": [str(out / DATA_NAME)], "images_root": None,
                                            "out": str(out / "sft")}))
