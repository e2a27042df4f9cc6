"""``vilasr-train recipe``: the embedded model's recipe at a scale the suite can afford.

The shipped ``recipe_embedded_look`` (``recipe_embedded`` and a perception pretraining stage), with
a second pretraining phase and tiny sizes (one task family and two sets of perception questions, a
~0.3 M-parameter model, 10 pretraining steps, then 5 in a phase that ends once it reads the goal's
cell (``until_read``, threshold 0), and 160 SFT steps) runs data, a tokenizer and model from
scratch, the pretraining phases in order, stage 1 from the last and
its held-out evaluation: held-out items are new rooms, every held-out item is evaluated, stage 1
learns (teacher-forced loss falls by 4x), and a second run of the same command does nothing;
stage 2 then keeps too few sampled dialogues to fine-tune on and passes stage 1's model through;
without a pretrain stage (``recipe_embedded``) stage 1 starts from the random model. At this
scale the model does not yet write its drawing JSON reliably; on an easy family (in which of the
four cells of a 2x2 maze the goal is) the same model's stage 1 raises held-out accuracy from
chance to nearly every item in 200 steps. The full recipe's evaluation is
benchmarks/results/embedded_model.md.
"""

from __future__ import annotations

import importlib
import json
import logging
import re

import pytest
import yaml
from vilasr_train import sft
from vilasr_train.config import InputError, load_config, shipped_configs
from vilasr_train.recipe import family_tasks, load_recipe, make_data, prompted_as, run
from vilasr_train.report import baselines, pass_at_k, summarize_rows

from benchmarks.size_curriculum_probe import goal_recipe, heldout_accuracy, tiny_model
from ros_vilasr.core.prompts import PROMPTS_DIR

EASY = ["rig_side"]


def small_recipe(path):
    recipe = load_recipe("recipe_embedded_look")  # recipe_embedded with a perception pretraining stage
    recipe["data"] = {
        "train": {"rig": {"n": 24, "seed": 7, "sub_tasks": EASY}, "look": {"n": 8, "seed": 10, "sizes": [3]},
                  "look_goal": {"family": "look", "n": 4, "seed": 11, "sizes": [3], "asks": ["goal"]}},
        "heldout": {"rig": {"n": 6, "seed": 8, "sub_tasks": EASY}},
        "rl": {"rig": {"n": 2, "seed": 9, "sub_tasks": EASY}},
        "valid": {"maze": {"n": 2, "seed": 12, "sizes": [3], "labels": True}},
    }
    tiny_model(recipe, rope_theta=1000.0)
    recipe["stages"]["stage1"]["set"] = {"max_steps": 160, "learning_rate": 3.0e-3, "warmup_steps": 10,
                                         "gradient_accumulation_steps": 1, "save_steps": 80, "logging_steps": 10}
    phase = {"max_steps": 10, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "save_steps": 10,
             "logging_steps": 5}
    recipe["stages"]["pretrain"]["set"] = phase
    # a second pretraining phase, on a second set of the perception family, from the first phase's model
    # that ends once it reads the goal's cell in the validation mazes (at threshold 0: at the first readout)
    recipe["stages"]["pretrain_goal"] = {**recipe["stages"]["pretrain"], "families": ["look_goal"], "set": phase,
                                         "until_read": {"data": "valid/maze", "n": 2, "discs": ["goal"],
                                                        "threshold": 0.0, "every": 5}}
    recipe["stages"]["stage1"]["families"] = ["rig", "look"]
    recipe["stages"]["stage2"]["set"] = {"shard": "0/2", "k": 2, "max_new_tokens": 32, "max_total_tokens": 256}
    recipe["eval"].update(batch_size=6, max_new_tokens=96)
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    config = small_recipe(tmp / "recipe.yaml")
    messages, handler = [], logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("vilasr_train")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run(str(config), tmp / "out", until="eval_stage1")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    return config, tmp / "out", messages


def test_stage1_learns_and_is_evaluated_on_new_rooms(stage1_run):
    _, out, messages = stage1_run
    data = out / "data"
    summary = json.loads((out / "eval_stage1" / "stage_summary.json").read_text())
    assert summary["n"] == {"rig_side": 6} and sum(summary["finish_reasons"].values()) == 6
    assert baselines(data)["chance"] == {"rig_side": 0.5}
    history = json.loads(next((out / "stage1").glob("checkpoint-160/trainer_state.json")).read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) == 16 and losses[-1] < losses[0] / 4, losses
    # held-out rooms are not training rooms
    train = {json.dumps(i["ground_truth"]["scene"]) for i in json.loads((data / "train/rig/eval.json").read_text())}
    held = {json.dumps(i["ground_truth"]["scene"]) for i in json.loads((data / "heldout/rig/eval.json").read_text())}
    assert train and held and not train & held
    # the model directory of every step is complete and carries the run profile and system prompt
    steps = ("init", "pretrain", "pretrain_goal", "stage1")
    profiles = [json.loads((out / step / "vilasr_model.json").read_text()) for step in steps]
    assert profiles == 4 * [{"max_pixels": 200704, "max_new_tokens": 96, "temperature": 0.0, "image_position": "last"}]
    brief = (PROMPTS_DIR / "system_prompt_brief.txt").read_text()
    assert [(out / step / "system_prompt.txt").read_text() for step in steps] == 4 * [brief]
    # the model's layout (question first, then the images) and system prompt in its training data
    # and its evaluation
    evaluated = [json.loads(line) for line in (out / "eval_stage1" / "results.jsonl").read_text().splitlines()]
    firsts = [json.loads((data / f"train/{f}/trajectories.json").read_text())[0] for f in ("look", "rig")]
    filled = re.compile(re.escape(brief).replace(r"\{width\}", r"\d+").replace(r"\{height\}", r"\d+"))
    for row in firsts + evaluated:
        assert filled.fullmatch(row["conversations"][0]["content"]), row["conversations"][0]["content"]
        text = row["conversations"][1]["content"]
        assert row["question"].strip() in text.split("<image>")[0], text
    # pretraining phases see their perception questions only, each from the phase before; stage 1
    # starts from the last and keeps the families it names in its mix
    files = {step: set(json.loads((out / step / "data_report.json").read_text())["files"]) for step in steps[1:]}
    assert files == {"pretrain": {str(data / "train/look/trajectories.json")},
                     "pretrain_goal": {str(data / "train/look_goal/trajectories.json")},
                     "stage1": {str(data / f"train/{f}/trajectories.json") for f in ("look", "rig")}}
    goal_only = json.loads((data / "train/look_goal/eval.json").read_text())
    assert len(goal_only) == 4 and all(re.fullmatch(r"G row \d, column \d", i["answer"]) for i in goal_only)
    history = json.loads((out / "pretrain/checkpoint-10/trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [5, 10]
    readouts = [json.loads(line) for line in (out / "pretrain_goal/readout.jsonl").read_text().splitlines()]
    assert [(r["step"], r["stop"]) for r in readouts] == [(5, True)]  # read at once: stopped at step 5 of 10
    assert not list((out / "pretrain_goal").glob("checkpoint-*")) and not (out / "pretrain/readout.jsonl").exists()
    started = [m.split(":")[0] for m in messages if m.startswith("model ") and "trainable parameters" in m]
    assert started == [f"model {out / step}" for step in steps[:3]]
    for step in steps:
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (out / step).iterdir()}
    text = json.loads((out / "init" / "config.json").read_text())["text_config"]
    assert text["rope_parameters"]["rope_theta"] == 1000.0  # the recipe's, not Qwen's 1e6


def test_stage1_raises_heldout_accuracy_above_chance_on_an_easy_family(tmp_path):
    """Where the goal is in a 2x2 maze, asked of the recipe's own model at tiny size (rope_theta as
    the recipe's), taught by stage 1 alone and evaluated by the recipe's runner on unseen mazes
    (benchmarks/size_curriculum_probe.py at the suite's scale)."""
    accuracy, chance = heldout_accuracy(goal_recipe([2], 2, steps=200, n=200), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "run/eval_stage1/results.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and chance <= 0.25  # chance: the most frequent training cell, on these mazes
    assert {r["answer"] for r in rows} == {f"G row {r}, column {c}" for r in (1, 2) for c in (1, 2)}
    assert accuracy == sum(r["score"] for r in rows) / len(rows) >= chance + 0.5, (accuracy, chance)


def test_a_finished_step_is_not_run_again(stage1_run):
    config, out, _ = stage1_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    run(str(config), out, until="eval_stage1")
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    changed = {p for p in after if before.get(p) != after[p]} - {out / "recipe.yaml"}
    assert changed == set()
    with pytest.raises(ValueError, match="unknown step 'stage9'"):
        run(str(config), out, until="stage9")
    plain = yaml.safe_load(config.read_text())
    del plain["stages"]["pretrain"], plain["stages"]["pretrain_goal"]
    config.with_name("plain.yaml").write_text(yaml.safe_dump(plain))
    with pytest.raises(InputError, match="unknown step 'pretrain'; the steps are data, init, stage1, eval_stage1,"):
        run(str(config.with_name("plain.yaml")), out.with_name("plain"), until="pretrain")
    # another recipe in the same directory is refused, not continued on the old one's data and stages
    other = yaml.safe_load(config.read_text())
    other["data"]["train"]["rig"]["n"], other["minutes"]["stage1"] = 30, 99
    config.with_name("other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(InputError, match=r"another recipe \(data\.train\.rig\.n changed\)"):
        run(str(config.with_name("other.yaml")), out, until="eval_stage1")
    assert yaml.safe_load((out / "recipe.yaml").read_text()) == yaml.safe_load(config.read_text())


def test_stage2_that_keeps_too_few_passes_stage1_through(stage1_run):
    """Stage 2 samples, keeps fewer dialogues than ``min_kept`` (16 in reflect_embedded; a tiny
    model keeps none of its 2), fine-tunes nothing, and its model is stage 1's: the same weights,
    marked, and the same held-out answers without evaluating again."""
    config, out, _ = stage1_run
    run(str(config), out, until="eval_stage2")
    sampled = json.loads((out / "stage2" / "report.json").read_text())
    assert sampled["questions_sampled"] == 1 and sampled["written"] < 16  # shard 0 of the 2 RL prompts
    model = out / "stage2" / "sft"
    assert (model / "UNCHANGED").read_text().strip() == str(out / "stage1")
    assert (model / "model.safetensors").read_bytes() == (out / "stage1" / "model.safetensors").read_bytes()
    assert (model / "system_prompt.txt").read_text() == (out / "stage1" / "system_prompt.txt").read_text()
    assert not list(model.glob("checkpoint-*")) and not (model / "trainer_state.json").exists()
    for name in ("results.jsonl", "stage_summary.json"):
        assert (out / "eval_stage2" / name).read_text() == (out / "eval_stage1" / name).read_text()


def test_a_data_key_that_is_no_family_must_name_one(tmp_path):
    recipe = {"model": {}, "data": {"train": {"look_goal": {"n": 1, "seed": 0}}, "heldout": {}, "rl": {}}}
    with pytest.raises(InputError, match="unknown task family 'look_goal'; the families are maze, look, ask, scene"):
        make_data(recipe, tmp_path)
    assert not (tmp_path / "train" / "look_goal").exists()


def test_a_recipe_prompted_as_another_model_takes_its_layout_and_system_prompt(tmp_path):
    recipe = load_recipe("recipe_embedded")
    (tmp_path / "system_prompt.txt").write_text("Draw.")
    prompt = str(tmp_path / "system_prompt.txt")
    other = prompted_as(recipe, {"image_position": "last", "system_prompt_file": prompt})
    assert (other["model"]["image_position"], other["model"]["system_prompt"]) == ("last", prompt)
    assert recipe["model"]["system_prompt"] == "system_prompt_brief.txt" and "image_position" not in recipe["model"]
    assert prompted_as(recipe, {})["model"]["system_prompt"] is None  # no prompt of its own: the protocol's


def test_a_system_prompt_that_is_no_file_is_named_before_any_data_is_written(tmp_path):
    recipe = {"model": {"system_prompt": "system_prompt_breif.txt"},
              "data": {"train": {"maze": {"n": 1, "seed": 0}}, "heldout": {}, "rl": {}}}
    with pytest.raises(InputError, match="model.system_prompt: no prompt file 'system_prompt_breif.txt'"):
        make_data(recipe, tmp_path)
    assert not (tmp_path / "train" / "maze").exists()


def test_every_shipped_recipe_sets_only_keys_its_stages_know():
    """A misspelt key in a stage's ``set`` would otherwise fail when that stage starts, an hour in."""
    recipes = [name for name in shipped_configs() if name.startswith("recipe_")]
    assert {"recipe_embedded", "recipe_embedded_ask"} <= set(recipes)
    for name in recipes:
        for spec in load_recipe(name)["stages"].values():
            module = importlib.import_module(f"vilasr_train.{spec['command']}")
            load_config(module.Config, spec["config"], {"model": "m", "out": "o", "data": ["d"]} | spec.get("set", {}))
    with pytest.raises(ValueError, match="drop_image"):
        load_config(sft.Config, "pretrain_embedded",
                    {"model": "m", "out": "o", "data": ["d"], "drop_image": True})


def test_tasks_rendered_in_worker_processes_are_the_serial_ones_in_order():
    serial = list(family_tasks("rig", 6, seed=4))
    pooled = list(family_tasks("rig", 6, seed=4, workers=2))
    assert [t.id for t in pooled] == [t.id for t in serial] and len({t.id for t in serial}) == 6
    for a, b in zip(serial, pooled):
        assert (a.question, a.answer, a.turns) == (b.question, b.answer, b.turns)
        assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]


def test_summaries_count_what_the_dialogues_did():
    def row(task, score, finish, turns):
        conversations = [{"role": "assistant", "content": t} for t in turns]
        return {"original_question_type": task, "score": score, "finish_reason": finish, "calls": len(turns),
                "conversations": conversations, "id": f"{task}#{len(turns)}"}

    draw = ('<think>x</think>\nAction: Object Mapper\n```json\n'
            '[{"index": 1, "bbox_2d": [1, 2, 3, 4], "label": "a"}]\n```')
    answer = "<think>y</think>\nAction: Answer\n<answer>A</answer>"
    rows = [row("t", 1.0, "answer", [draw, draw, answer]), row("t", 0.0, "tool_error", [draw, "garbage"]),
            row("u", 0.5, "length", ["rambling"])]
    summary = summarize_rows(rows)
    assert summary["accuracy"] == {"t": 0.5, "u": 0.5}
    assert summary["executable_drawing_turns"] == 3 / 5  # 3 drawings executed; 2 dialogues ended on a failed turn
    assert summary["mean_turns"] == 2.0
    samples = [{"id": f"q{i}#{k}", "original_question_type": "t", "score": float(k == 0 and i == 0)}
               for i in range(2) for k in range(4)]
    assert pass_at_k(samples) == {"t": {"pass@1": 0.125, "pass@4": 0.5}}
