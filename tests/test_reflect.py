"""Stage 2 on CPU with the tiny model: the reflection detector, sampling → filtering → SFT end to
end with a report that matches the written data, sharding, and a killed sampling run resumed."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from sft_helpers import killed_after_first_line
from transformers import AutoModelForImageTextToText
from vilasr_train import cli, reflect
from vilasr_train.config import load_config
from vilasr_train.data import load_trajectories
from vilasr_train.rewards import score_rollout
from vilasr_train.rollout import normalise_prompt, open_session

from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines.replay import ReplayEngine
from ros_vilasr.core.images import MAX_PIXELS_TRAIN, NO_RESIZE_MAX_PIXELS
from ros_vilasr.core.processor import load_processor
from ros_vilasr.core.protocol import is_reflective, parse_turn
from ros_vilasr.core.tiny_model import build_tiny_model, teach

SYSTEM = "You answer spatial questions about an image of {width}x{height} pixels."


def drawing(index: int, bbox: list[int], label: str = "cup", thought: str = "Mark the cup.") -> str:
    item = json.dumps([{"index": index, "bbox_2d": bbox, "label": label}])
    return f"<think>{thought}</think>\nAction: Object Mapper\n```json\n{item}\n```"


def answer(text: str) -> str:
    return f"<think>Done.</think>\nAction: Answer\n<answer>{text}</answer>"


DRAW = drawing(1, [28, 28, 84, 84])
REDRAW = drawing(2, [30, 30, 80, 80], thought="The box is loose: tighten it.")  # same label, new box
WHERE = {"question": "Is the cup on the left or the right?", "options": ["A. left", "B. right"], "answer": "A",
         "question_type": "multiple choice", "image_path": "scene.png", "data_type": "single_view"}
HOW_MANY = {"question": "How many cups are there?", "answer": "1", "question_type": "numerical",
            "image_path": "scene.png", "data_type": "counting"}
# taught: WHERE reflectively (draw, redraw, answer A); HOW_MANY without reflection (draw, answer 1).
# The third prompt asks WHERE but expects B: its taught answer is wrong.
PROMPTS = [WHERE, HOW_MANY, WHERE | {"answer": "B"}]
TAUGHT = {WHERE["question"]: [DRAW, REDRAW, answer("A")], HOW_MANY["question"]: [DRAW, answer("1")]}


def scene() -> Image.Image:
    image = Image.new("RGB", (224, 168), "white")
    ImageDraw.Draw(image).rectangle((30, 30, 80, 80), fill="red")
    return image


def settings(root: Path):
    return reflect.SessionSettings(MAX_PIXELS_TRAIN, str(root / "system.txt"), 96, 512)


def replayed(root: Path, record: dict, turns: list[str]):
    session = open_session(normalise_prompt(record, "test", root), settings(root))
    run_sessions([session], ReplayEngine([{"conversations": [{"role": "assistant", "content": t} for t in turns]}]))
    return session


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A scene, a short system prompt, the prompt files, and the tiny model taught TAUGHT."""
    root = tmp_path_factory.mktemp("reflect")
    scene().save(root / "scene.png")
    (root / "system.txt").write_text(SYSTEM)
    (root / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    (root / "many.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS * 2))
    tiny = build_tiny_model(root / "tiny")
    model = AutoModelForImageTextToText.from_pretrained(tiny, dtype=torch.float32)
    dialogues = [replayed(root, p, TAUGHT[p["question"]]) for p in (WHERE, HOW_MANY)]
    losses = teach(model, load_processor(tiny, max_pixels=NO_RESIZE_MAX_PIXELS), dialogues, steps=150)
    assert losses[-1] < losses[0] / 10
    model.save_pretrained(root / "taught")
    load_processor(tiny).save_pretrained(root / "taught")
    return root


def args(root: Path, out: Path, *flags: str, prompts: str = "prompts.jsonl") -> list[str]:
    return ["reflect", "--config", "reflect_cpu_toy", "--model", str(root / "taught"),
            "--prompts", str(root / prompts), "--images-root", str(root), "--out", str(out),
            "--set", f"system_prompt={root / 'system.txt'}", *flags]


def questions(out: Path) -> list[dict]:
    return [q for path in reflect.sample_files(out) for q in reflect.read_samples(path)]


@pytest.mark.parametrize("second, expected", [
    (drawing(1, [30, 30, 80, 80]), True),  # same label, different box
    (drawing(1, [28, 28, 84, 84]), False),  # same label, same box, same image
    (drawing(2, [28, 28, 84, 84]), True),  # same label and box, drawn on another image
    (drawing(1, [30, 30, 80, 80], label="plate"), False),  # different labels
    (None, False),  # one drawing step: nothing to revise
])
def test_reflection_detector(tmp_path, second, expected):
    scene().save(tmp_path / "scene.png")
    (tmp_path / "system.txt").write_text(SYSTEM)
    session = replayed(tmp_path, WHERE, [DRAW, *([second] if second else []), answer("A")])
    assert session.finish_reason == "answer"
    # the flag the filter keeps trajectories by (the session's per-step protocol.revises)
    assert score_rollout(session, normalise_prompt(WHERE, "test", tmp_path)).reflective is expected
    assert is_reflective([parse_turn(t).ops for t in session.assistant_turns]) is expected  # spec §6 rule


def test_one_step_redrawing_a_label_is_not_reflection(tmp_path):
    scene().save(tmp_path / "scene.png")
    (tmp_path / "system.txt").write_text(SYSTEM)
    both = ('<think>Two guesses.</think>\nAction: Object Mapper\n```json\n'
            '[{"index": 1, "bbox_2d": [28, 28, 84, 84], "label": "cup"}, '
            '{"index": 1, "bbox_2d": [30, 30, 80, 80], "label": "cup"}]\n```')
    session = replayed(tmp_path, WHERE, [both, answer("A")])
    assert not score_rollout(session, normalise_prompt(WHERE, "test", tmp_path)).reflective


def test_sampling_filtering_sft_end_to_end(root, tmp_path, capsys):
    out = tmp_path / "run"
    # temperature 0.7: the taught model mostly follows its lessons, and sometimes strays from them
    assert cli.main(args(root, out, "--k", "4", "--sft", "--set", "temperature=0.7", "--set", "max_steps=4",
                         "--set", "max_epochs=1",
                         "--set", "report_to=none")) == 0
    report = json.loads((out / "report.json").read_text())
    data = json.loads((out / "reflective.json").read_text())
    sampled = questions(out)
    assert len(sampled) == 3 and all(len(q["samples"]) == 4 for q in sampled)

    # the report counts what the sample files hold, and "kept" is exactly the written data
    for name, row in report["by_data_type"].items():
        pairs = [(q["prompt"], s) for q in sampled if q["prompt"]["data_type"] == name for s in q["samples"]]
        samples = [s for _, s in pairs]
        assert row["sampled"] == len(samples)
        assert row["correct"] == sum(s["accuracy"] >= 1.0 for s in samples)
        assert row["well_formed"] == sum(s["well_formed"] for s in samples)
        assert row["reflective"] == sum(s["reflective"] for s in samples)
        assert row["follows_thought"] == sum(reflect.follows(s, p) for p, s in pairs)
        kept = sum(r["data_type"] == name for r in data)
        assert row["kept"] == sum(reflect.keep(s, p, 1.0) for p, s in pairs) == kept
        assert row["mean_calls"] == pytest.approx(sum(s["calls"] for s in samples) / len(samples))
    assert report["total"]["kept"] == report["written"] == len(data) and report["replay_failed"] == 0
    assert report["answer_from_thought"] is False  # the paper's filter unless asked
    assert report["total"]["questions"] == report["questions_sampled"] == report["questions_valid"] == 3
    assert "single_view" in capsys.readouterr().out  # the printed table

    # the taught model mostly reproduces its lessons: the filter has something to keep and to drop
    where, how_many, wrong = sampled
    assert report["by_data_type"]["single_view"]["kept"] >= 1
    assert any(s["accuracy"] == 1.0 and s["well_formed"] for s in how_many["samples"])
    assert report["by_data_type"]["counting"]["kept"] == 0  # correct, but never reflective
    assert not any(s["accuracy"] for s in wrong["samples"])  # taught the wrong answer

    # the written data is what was sampled, images included, and stage 1's loader takes all of it
    kept = [s for s in where["samples"] if reflect.keep(s, WHERE, 1.0)]
    assert [r["conversations"] for r in data] == [s["conversations"] for s in kept]
    for r in data:
        assert sum(t["content"].count("<image>") for t in r["conversations"]) == len(r["images"]) >= 3
        assert all((out / p).is_file() for p in r["images"])
    records, data_report = load_trajectories([out / "reflective.json"], load_processor(root / "taught").tokenizer,
                                             max_pixels=MAX_PIXELS_TRAIN, max_length=None)
    assert len(records) == len(data) and not data_report.skipped
    # the drawn images are the renderer's, as the model saw them while sampling
    turns = [t["content"] for t in data[0]["conversations"] if t["role"] == "assistant"]
    session = replayed(root, WHERE, turns)
    assert [Image.open(out / p).tobytes() for p in data[0]["images"][1:]] == [i.tobytes() for i in session.images[1:]]

    # --sft: stage 1 continued from the model on the kept data
    assert (out / "sft" / "model.safetensors").is_file()
    assert json.loads((out / "sft" / "data_report.json").read_text())["kept"] == len(data)
    # for max_epochs (1) passes over the kept trajectories (batch 1), not all max_steps (4) when fewer were kept
    state = json.loads(next((out / "sft").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["global_step"] == min(4, len(data))

    # fewer kept than min_kept: one line saying so, and nothing fine-tuned (samples reused, not redrawn)
    again = tmp_path / "again"
    shutil.copytree(out, again, ignore=shutil.ignore_patterns("sft"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args(root, again, "--k", "4", "--sft", "--set", "temperature=0.7",
                      "--set", f"min_kept={len(data) + 1}"))
    assert exit_info.value.code == 2
    assert f"{len(data)} trajectories kept in {again / reflect.DATA_NAME}, fewer than min_kept = {len(data) + 1}" \
        in capsys.readouterr().err
    assert not (again / "sft").exists() and questions(again) == sampled


def test_answer_from_thought_keeps_no_letter_right_by_luck():
    def sample(thought: str, answer: str) -> dict:
        last = f"<think>{thought}</think>\nAction: Answer\n<answer>{answer}</answer>"
        return {"accuracy": 1.0, "well_formed": True, "reflective": True, "finish_reason": "answer", "answer": answer,
                "conversations": [{"role": "user", "content": "<image>q"}, {"role": "assistant", "content": DRAW},
                                  {"role": "assistant", "content": REDRAW}, {"role": "assistant", "content": last}]}

    choice, number = {"problem_type": "multiple choice"}, {"problem_type": "numerical"}  # as normalised prompts
    lucky, reached = sample("The cup is on the right: option B.", "A"), sample("On the left: option A.", "A")
    assert reflect.keep(lucky, choice, 1.0) and not reflect.keep(lucky, choice, 1.0, answer_from_thought=True)
    assert reflect.keep(reached, choice, 1.0, answer_from_thought=True)
    assert reflect.keep(sample("There is one, option B.", "1"), number, 1.0, answer_from_thought=True)


def test_shards_split_the_questions_and_build_from_all(root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    for shard in ("0/2", "1/2"):
        assert cli.main(args(root, out, "--k", "2", "--shard", shard)) == 0
    by_file = {p.name: [q["source"].rpartition("#")[2] for q in reflect.read_samples(p)]
               for p in reflect.sample_files(out)}
    assert by_file == {"samples-shard0of2.jsonl": ["0", "2"], "samples-shard1of2.jsonl": ["1"]}
    report = json.loads((out / "report.json").read_text())
    assert report["questions_sampled"] == 3 and report["total"]["sampled"] == 6

    # any later run finds everything sampled: it loads no model and rebuilds the same data
    data = (out / "reflective.json").read_text()
    monkeypatch.setattr(reflect, "open_engine", lambda config: pytest.fail("nothing should be sampled"))
    assert cli.main(args(root, out, "--k", "2")) == 0
    assert (out / "reflective.json").read_text() == data
    assert not (out / "samples-shard0of1.jsonl").exists()


def test_killed_sampling_resumes_without_loss_or_duplicates(root, tmp_path):
    out = tmp_path / "run"
    argv = args(root, out, "--k", "2", "--set", "questions_per_batch=1", prompts="many.jsonl")
    samples = out / "samples-shard0of1.jsonl"
    before = killed_after_first_line(argv, samples)
    assert 1 <= before < 6, "the run finished before it was killed"
    with samples.open("ab") as f:  # as if killed in the middle of writing a line
        f.write(b'{"source": "cut sh')

    assert cli.main(argv) == 0  # the restart (in this process: one interpreter start less)
    sources = Counter(q["source"] for q in questions(out))
    assert sources == Counter({f"{root / 'many.jsonl'}#{n}": 1 for n in range(6)})
    assert samples.read_bytes().endswith(b"\n")
    report = json.loads((out / "report.json").read_text())
    assert report["questions_sampled"] == report["total"]["questions"] == 6
    assert report["total"]["kept"] == len(json.loads((out / "reflective.json").read_text()))


def test_config_checks(root, tmp_path):
    for bad in ("2/2", "1", "a/b", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            reflect.parse_shard(bad)
    assert reflect.parse_shard("3/8") == (3, 8)
    config = load_config(reflect.Config, "reflect_paper", {"model": "m", "out": str(tmp_path), "data": ["d"]})
    assert (config.engine, config.k, config.temperature, config.min_accuracy) == ("vllm", 8, 1.0, 1.0)
    assert config.trainer["learning_rate"] == 1e-5 and config.trainer["max_length"] == 18432


def test_sampling_prompts_the_model_in_its_own_layout(root, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    config = load_config(reflect.Config, "reflect_cpu_toy", {"model": str(model), "out": str(tmp_path), "data": ["d"]})
    assert reflect.session_settings(config).image_position == "first"  # no profile: the protocol's layout
    (model / "vilasr_model.json").write_text('{"image_position": "last"}')
    settings = reflect.session_settings(config)
    session = open_session(normalise_prompt(WHERE, "test", root), settings)
    assert [p["type"] for p in session.messages[1]["content"]] == ["text", "image", "text"]
    assert session.messages[1]["content"][0]["text"].startswith(WHERE["question"])
    assert session.messages[0]["content"].startswith("You are an assistant")  # no prompt of its own: the protocol's
    (model / "system_prompt.txt").write_text("Draw on the {width}x{height} image, then answer.")
    session = open_session(normalise_prompt(WHERE, "test", root), reflect.session_settings(config))
    assert session.messages[0]["content"] == "Draw on the 224x168 image, then answer."
    replaced = dataclasses.replace(config, system_prompt=str(root / "system.txt"))  # a given prompt wins
    session = open_session(normalise_prompt(WHERE, "test", root), reflect.session_settings(replaced))
    assert session.messages[0]["content"] == "You answer spatial questions about an image of 224x168 pixels."
