"""``vilasr-train recipe CONFIG --out DIR``: a model from nothing, as one resumable command.

A recipe (a YAML file; shipped: ``recipe_embedded``) names synthetic task families, a model shape
and the three stages' configs. The command runs, in order, each step once:

  data        synthetic tasks with oracle trajectories (train), held-out evaluation sets (other
              seeds: unseen mazes, rooms and camera poses) and RL prompts
  init        a tokenizer trained on the training text and a random Qwen2.5-VL of the recipe's shape
  pretrain*   (when the recipe has them) ``vilasr-train sft`` on one-turn questions only: perception
              (``synth.look``), the grounding a base VLM has before it is taught to draw, or reading
              the question back (``synth.ask``); every
              stage named pretrain... is a phase, run in the recipe's order from the one before,
              and a phase with ``until_read`` ends once the model reads the maze cells of a
              validation set (``data: valid``; readout.UntilRead)
  stage1      ``vilasr-train sft`` on the oracle trajectories (from the pretrained model if any)
  stage2      ``vilasr-train reflect --sft`` from stage 1 (reflective rejection sampling)
  stage3      ``vilasr-train grpo`` from stage 2 (drawing inside the rollouts)
  eval_*      held-out accuracy after every stage (greedy), pass@1 / pass@k with sampling
  report      per-stage table, plot and JSON; ``DIR/model`` is the final model

Every step writes its outputs under ``DIR/<step>`` and marks itself done with ``DIR/<step>/DONE``;
the stages checkpoint, evaluation appends per item, so a killed run continues where it stopped
when the same command is run again. Seeds are fixed: the same recipe gives the same data, and
(on the same machine and torch) the same weights.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from ros_vilasr.core.models import PROFILE_FILE, SYSTEM_PROMPT_FILE

from .config import InputError, load_config, resolve_config_path
from .report import heldout_items, pass_at_k, summarize_rows, write_report

log = logging.getLogger(__name__)

STAGES = ("stage1", "stage2", "stage3")
UNCHANGED = "UNCHANGED"  # in a stage's model directory: the previous stage's model, copied
POOL_MIN_TASKS = 200  # a process pool takes seconds to start: smaller sets render in this one
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "processor_config.json", "chat_template.jinja")


# -- the recipe file ---------------------------------------------------------------------------------

def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it, mapping by mapping."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_recipe(name: str, overrides: dict[str, Any] | None = None) -> dict:
    """The recipe YAML (a path or a shipped name) with dotted-key overrides (``eval.n=4``). A
    recipe with ``base: OTHER`` is OTHER with its keys laid over it."""
    recipe = yaml.safe_load(resolve_config_path(name).read_text())
    if "base" in recipe:
        recipe = merged(load_recipe(recipe.pop("base")), recipe)
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = recipe
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise InputError(f"unknown recipe key {key!r}")
            node = node[part]
        if leaf not in node:
            raise InputError(f"unknown recipe key {key!r}")
        node[leaf] = value
    return recipe


# -- data ------------------------------------------------------------------------------------------

def family_tasks(family: str, n: int, seed: int, sub_tasks: list[str] | None = None, workers: int = 1,
                 **options) -> Iterator:
    """``n`` tasks of one generator family, restricted to ``sub_tasks`` (generators cycle through
    their sub-tasks by index, so the kept indices are those of the wanted sub-tasks). A task is a
    function of (seed, index) alone, so ``workers`` processes render them in the same order."""
    from ros_vilasr.synth import ask, look, maze, rig_metric, rig_tasks, scene_tasks
    from ros_vilasr.synth.trajectories import sub_task_index

    families = {"maze": (maze.maze_task, maze.SUB_TASKS), "look": (look.look_task, look.SUB_TASKS),
                "ask": (ask.ask_task, ask.SUB_TASKS),
                "scene": (scene_tasks.scene_task, scene_tasks.SUB_TASKS),
                "rig": (rig_tasks.rig_task, rig_tasks.SUB_TASKS),
                "rig_metric": (rig_metric.metric_task, rig_metric.SUB_TASKS)}
    if family not in families:
        raise InputError(f"unknown task family {family!r}; the families are {', '.join(families)} "
                         "(a data key that is not one names its family with `family:`)")
    make, names = families[family]
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}  # YAML lists: tuples
    wanted = sub_tasks or names
    try:
        indices = [sub_task_index(k, names, wanted) for k in range(n)]
    except ValueError as exc:
        raise InputError(f"{family}: {exc}") from exc
    make_one = functools.partial(make, seed, **options)
    return map(make_one, indices) if workers <= 1 else _in_processes(make_one, indices, workers)


def _in_processes(function, items: list, workers: int) -> Iterator:
    # spawn, not fork: the parent may hold torch's thread pools
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(function, items, chunksize=8)
    finally:  # a consumer that stops early (a failed check) does not wait for the rest to render
        pool.shutdown(cancel_futures=True)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_data(recipe: dict, out: Path, splits: tuple[str, ...] | None = None) -> None:
    """The recipe's data sets under ``out/<split>/<family>``; ``splits``: only these (e.g. the
    held-out sets a benchmark scores a model on)."""
    from ros_vilasr.synth.trajectories import EVAL_FILE, write_dataset

    layout, prompt = image_layout(recipe), system_prompt_file(recipe)
    for split, families in recipe["data"].items():  # train, heldout, rl; valid when a phase stops on it
        if splits is not None and split not in splits:
            continue
        for name, spec in families.items():
            target = out / split / name
            if (target / EVAL_FILE).is_file():
                continue
            if target.exists():
                shutil.rmtree(target)  # a half-written family from a killed run
            spec = dict(spec)
            n, family = spec.pop("n"), spec.pop("family", name)  # a second set of a family names it
            workers = usable_cores() if n >= POOL_MIN_TASKS else 1
            write_dataset(family_tasks(family, n, workers=workers, **spec), target, total=n,
                          image_position=layout, system_prompt_path=prompt)


def image_layout(recipe: dict) -> str:
    """The model's prompt layout (``prompts.first_user_content``): its trajectories are written in
    it and its profile says it, so every caller prompts it as it was trained."""
    return recipe["model"].get("image_position", "first")


def prompted_as(recipe: dict, profile: dict) -> dict:
    """``recipe`` with the prompt layout and system prompt of the model whose run ``profile`` this
    is: its data written as that model was trained (a benchmark scoring another model)."""
    from ros_vilasr.core.models import image_position_of, system_prompt_of

    model = recipe["model"] | {"image_position": image_position_of(profile), "system_prompt": system_prompt_of(profile)}
    return recipe | {"model": model}


def system_prompt_file(recipe: dict) -> Path | None:
    """The model's system prompt (``model.system_prompt``: a file of the core's prompts, e.g.
    ``system_prompt_brief.txt``, or a path); None: the protocol's. Its trajectories are written
    with it and its directory carries it (``system_prompt.txt``), so every caller prompts with it."""
    from ros_vilasr.core.prompts import PROMPTS_DIR

    name = recipe["model"].get("system_prompt")
    if not name:
        return None
    path = Path(PROMPTS_DIR / name) if (PROMPTS_DIR / name).is_file() else Path(name)
    if not path.is_file():
        raise InputError(f"model.system_prompt: no prompt file {name!r} (neither in {PROMPTS_DIR} nor a path)")
    return path


def training_corpus(data: Path, system_prompt: Path | None = None) -> list[str]:
    """The text a tokenizer for these tasks must encode well: every message of every trajectory."""
    from ros_vilasr.core import prompts

    lines = [prompts.system_prompt(448, 448, system_prompt)]
    for path in sorted(data.glob("train/*/trajectories.json")):
        for record in json.loads(path.read_text()):
            lines += [m["value"] if "value" in m else m["content"] for m in record["conversations"]]
    return lines


def init_model(recipe: dict, out: Path, data: Path) -> None:
    from ros_vilasr.core.tiny_model import build_tiny_model

    spec = recipe["model"]
    build_tiny_model(out, seed=recipe["seed"], text=spec["text"], vision=spec["vision"],
                     corpus=training_corpus(data, system_prompt_file(recipe)), vocab_size=spec["vocab_size"],
                     max_pixels=spec["max_pixels"])
    write_profile(out, recipe)


def write_profile(model_dir: Path, recipe: dict) -> None:
    profile = {"max_pixels": recipe["model"]["max_pixels"], "max_new_tokens": recipe["eval"]["max_new_tokens"],
               "temperature": 0.0, "image_position": image_layout(recipe)}
    (model_dir / PROFILE_FILE).write_text(json.dumps(profile, indent=1) + "\n")
    if prompt := system_prompt_file(recipe):
        shutil.copyfile(prompt, model_dir / SYSTEM_PROMPT_FILE)


# -- stages ----------------------------------------------------------------------------------------

def run_stage(stage: str, recipe: dict, model: Path, data: Path, out: Path) -> Path:
    """One training stage through the same code path as ``vilasr-train <stage>``; returns the
    directory of the model it produced. Stage 2 samples first and fine-tunes only when it kept
    at least ``min_kept`` trajectories; otherwise its model is stage 1's, unchanged (named in
    ``sft/UNCHANGED``)."""
    spec = recipe["stages"][stage]
    files = sorted(str(p) for p in data.glob(f"{spec['data']}/*/{spec['file']}")
                   if "families" not in spec or p.parent.name in spec["families"])
    overrides = {"model": str(model), "out": str(out), "data": files, "resume": True} | spec.get("set", {})
    if "until_read" in spec:  # its data names a set of the run: valid/maze
        until = spec["until_read"]
        overrides["until_read"] = until | {"data": str(data / until["data"] / "trajectories.json")}
    stage_module = importlib.import_module(f"vilasr_train.{spec['command']}")
    log.info("%s: vilasr-train %s --config %s (%d data files)", stage, spec["command"], spec["config"], len(files))
    if spec["command"] != "reflect":
        stage_module.train(load_config(stage_module.Config, spec["config"], overrides))
        return out
    config = load_config(stage_module.Config, spec["config"], overrides | {"sft": False})
    stage_module.train(config)
    kept = json.loads((out / stage_module.REPORT_NAME).read_text())["written"]
    if kept >= config.min_kept:
        stage_module.train(dataclasses.replace(config, sft=True))
    else:
        log.warning("%s kept %d trajectories (min_kept %d): its model is the previous stage's, unchanged",
                    stage, kept, config.min_kept)
        export_model(model, out / "sft", recipe)
        (out / "sft" / UNCHANGED).write_text(str(model) + "\n")
    return out / "sft"


def passed_through(model: Path) -> str | None:
    """The stage whose model ``model`` is, unchanged (its ``UNCHANGED`` marker), or None."""
    marker = model / UNCHANGED
    return Path(marker.read_text().strip()).name if marker.is_file() else None


# -- evaluation ------------------------------------------------------------------------------------

def evaluate(model: Path, recipe: dict, data: Path, out: Path, samples: int = 1) -> list[dict]:
    """Held-out rows: greedy when ``samples`` is 1, else ``samples`` sampled dialogues per item
    (ids ``<id>#<k>``) on the first ``eval.pass_items`` items of each family."""
    from ros_vilasr.core.engines.hf import TransformersEngine
    from ros_vilasr.evaluation.runner import ResultsLog, run_evaluation, unique_rows

    spec = recipe["eval"]
    items = heldout_items(data)
    if samples > 1:
        per_family = defaultdict(list)
        for item in items:
            per_family[item.id.split("_")[0]].append(item)
        items = [dataclasses.replace(it, id=f"{it.id}#{k}") for group in per_family.values()
                 for it in group[:spec["pass_items"]] for k in range(samples)]
    engine = TransformersEngine(str(model), device="cpu", dtype="float32",
                                temperature=spec["temperature"] if samples > 1 else 0.0, top_p=1.0,
                                seed=recipe["seed"])
    try:
        run_evaluation(items, engine, out, "embedded", batch_size=spec["batch_size"], plots=False,
                       max_pixels=recipe["model"]["max_pixels"], max_new_tokens=spec["max_new_tokens"],
                       image_position=image_layout(recipe), system_prompt_path=system_prompt_file(recipe))
    finally:
        engine.close()
    results = ResultsLog(out / "results.jsonl")
    results.close()
    return unique_rows(results.rows)


def export_model(source: Path, target: Path, recipe: dict) -> None:
    """The final model's inference files (no optimizer state, no checkpoints) plus its profile."""
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    write_profile(target, recipe)


# -- the command -----------------------------------------------------------------------------------

def changed_keys(old, new, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two recipes."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(old.keys() | new.keys()) for k in changed_keys(old.get(key), new.get(key),
                                                                                  f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


def check_same_recipe(path: Path, recipe: dict) -> None:
    """A run directory continues only the recipe that started it: its finished steps (data, stages)
    would silently stand for the old one. The planned minutes may change."""
    if not path.is_file():
        return
    changed = [k for k in changed_keys(yaml.safe_load(path.read_text()), recipe) if k.split(".")[0] != "minutes"]
    if changed:
        raise InputError(f"{path.parent} was started by another recipe ({', '.join(changed)} changed) and its "
                         "finished steps follow that one: give a fresh --out, or the same recipe to continue")


def run(name: str, out: str | Path, overrides: dict[str, Any] | None = None, until: str | None = None) -> dict | None:
    """Run (or continue) the recipe into ``out``; ``until``: stop after this step. Returns the report
    (None when stopped before it)."""
    recipe = load_recipe(name, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_same_recipe(out / "recipe.yaml", recipe)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    data, timing_path = out / "data", out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    # pretraining phases (stages named pretrain*), in the recipe's order, each from the one before
    pretraining = [s for s in recipe["stages"] if s.startswith("pretrain")]
    chain = ["init", *pretraining]
    models = {s: out / s for s in chain} | {"stage1": out / "stage1", "stage2": out / "stage2" / "sft",
                                            "stage3": out / "stage3"}

    def stage_eval(model: Path, d: Path) -> None:
        if before := passed_through(model):  # same weights as the stage before: same greedy answers
            previous = out / f"eval_{before}"
            for name in ("results.jsonl", "stage_summary.json"):
                shutil.copyfile(previous / name, d / name)
            return
        summary = summarize_rows(evaluate(model, recipe, data, d))
        (d / "stage_summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")

    def stage_passk(model: Path, d: Path) -> None:
        rows = evaluate(model, recipe, data, d, samples=recipe["eval"]["pass_k"])
        (d / "passk.json").write_text(json.dumps(pass_at_k(rows), indent=1, sort_keys=True) + "\n")

    def finish(d: Path) -> None:
        export_model(models["stage3"], out / "model", recipe)
        write_report(out, STAGES, data, unchanged={s: before for s in STAGES if (before := passed_through(models[s]))})

    steps = [
        ("data", lambda d: make_data(recipe, data)),
        ("init", lambda d: init_model(recipe, d, data)),
        *[(s, lambda d, s=s, before=before: run_stage(s, recipe, models[before], data, d))
          for before, s in zip(chain, pretraining)],
        ("stage1", lambda d: run_stage("stage1", recipe, models[chain[-1]], data, d)),
        ("eval_stage1", lambda d: stage_eval(models["stage1"], d)),
        ("stage2", lambda d: run_stage("stage2", recipe, models["stage1"], data, d)),
        ("eval_stage2", lambda d: stage_eval(models["stage2"], d)),
        ("stage3", lambda d: run_stage("stage3", recipe, models["stage2"], data, d)),
        ("eval_stage3", lambda d: stage_eval(models["stage3"], d)),
        ("passk_stage1", lambda d: stage_passk(models["stage1"], d)),
        ("passk_stage3", lambda d: stage_passk(models["stage3"], d)),
        ("report", finish),
    ]
    names = [s for s, _ in steps]
    if until is not None and until not in names:
        raise InputError(f"unknown step {until!r}; the steps are {', '.join(names)}")
    steps = steps[:names.index(until) + 1] if until else steps
    minutes = recipe.get("minutes", {})
    total = sum(minutes.get(s, 1) for s, _ in steps)
    done = lambda s: (out / s / "DONE").is_file()  # noqa: E731
    bar = tqdm(total=total, initial=sum(minutes.get(s, 1) for s, _ in steps if done(s)), unit="min",
               desc="recipe", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} planned min [{elapsed}<{remaining}]")
    for step, action in steps:
        if done(step):
            continue
        bar.set_postfix_str(step)
        directory = out / step
        directory.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        action(directory)
        timing[step] = timing.get(step, 0.0) + time.monotonic() - start
        timing_path.write_text(json.dumps(timing, indent=1) + "\n")
        (directory / "DONE").write_text("")
        bar.update(minutes.get(step, 1))
        log.info("recipe step %s done in %.0f s", step, timing[step])
    bar.close()
    if until and until != "report":
        return None
    report = json.loads((out / "report.json").read_text())
    log.info("recipe done: model in %s, report in %s", out / "model", out / "report.md")
    return report


def ship(out: str | Path) -> Path:
    """Install ``OUT/model`` as the package's ``embedded`` model (replacing the shipped files)."""
    from ros_vilasr.core.models import EMBEDDED_DIR, check_model_dir

    source = Path(out) / "model"
    check_model_dir(source)
    staging = EMBEDDED_DIR.with_name(EMBEDDED_DIR.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    old = EMBEDDED_DIR.with_name(EMBEDDED_DIR.name + ".old")
    if EMBEDDED_DIR.exists():
        shutil.rmtree(old, ignore_errors=True)
        EMBEDDED_DIR.rename(old)
    staging.rename(EMBEDDED_DIR)
    shutil.rmtree(old, ignore_errors=True)
    log.info("shipped %s as %s", source, EMBEDDED_DIR)
    return EMBEDDED_DIR
