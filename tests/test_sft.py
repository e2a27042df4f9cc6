"""Stage-1 SFT on the tiny model (CPU): labels, configs, a real run whose checkpoint the node's
engine loads and which reproduces its training turns, and bad data that never stops a run."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from sft_helpers import ANSWER, DRAW, new_session, recorded_session, write_data, write_trajectory
from transformers import AutoModelForImageTextToText
from vilasr_train import cli, sft
from vilasr_train.config import load_config
from vilasr_train.data import IGNORE, DialogueCollator, encode_example, load_trajectories

from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.encoding import encode_dialogue
from ros_vilasr.core.engines import create_engine
from ros_vilasr.core.images import MAX_PIXELS_TRAIN
from ros_vilasr.core.processor import load_processor
from ros_vilasr.core.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def processor(tiny):
    return load_processor(tiny)


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data.json", [write_trajectory(tmp_path)])


def spans(labels: list[int]) -> list[list[int]]:
    """Maximal runs of labelled (trained) tokens."""
    out, run = [], []
    for t in labels + [IGNORE]:
        if t != IGNORE:
            run.append(t)
        elif run:
            out, run = out + [run], []
    return out


def load(data, processor, max_length=None):
    return load_trajectories([data], processor.tokenizer, max_pixels=MAX_PIXELS_TRAIN, max_length=max_length)


def test_loss_mask_covers_exactly_the_assistant_turns(data, processor):
    (record,), report = load(data, processor)
    assert [t["role"] for t in record["conversations"]] == ["system", "user", "assistant", "user", "assistant"]
    row = encode_example(processor, record, MAX_PIXELS_TRAIN)
    decoded = [processor.tokenizer.decode(span) for span in spans(row["labels"])]
    assert decoded == [DRAW + "<|im_end|>", ANSWER + "<|im_end|>"]
    labelled = sum(t != IGNORE for t in row["labels"])
    assert labelled == sum(len(processor.tokenizer.encode(t + "<|im_end|>")) for t in (DRAW, ANSWER))
    # both images (input and drawn) are in, each pad token flagged for Qwen's 3-D positions
    pads = int(row["image_grid_thw"].prod(dim=1).sum()) // 4
    assert row["image_grid_thw"].shape[0] == 2 and sum(row["mm_token_type_ids"]) == pads
    # the length check before training counts exactly the tokens the encoder produces
    n = len(row["input_ids"])
    assert len(load(data, processor, max_length=n)[0]) == 1
    kept, report = load(data, processor, max_length=n - 1)
    assert not kept and report.skipped == {"too_long": 1}


def test_a_loss_pattern_trains_only_the_assistant_text_it_matches(data, processor, tiny, tmp_path, capsys):
    (record,), _ = load(data, processor)
    pattern = re.compile(r"\bcup\b|\bleft\b")
    row = encode_example(processor, record, MAX_PIXELS_TRAIN, pattern)
    decoded = [processor.tokenizer.decode(span) for span in spans(row["labels"])]
    # the matches in the assistant turns (the drawing's thought and label, the answer's thought),
    # each on the fewest tokens that hold it; nothing of the user's turns, which say "cup" too
    assert [pattern.findall(d) for d in decoded] == [["cup"], ["cup"], ["left"]]
    assert all(len(d) <= len(m) + 2 for d, m in zip(decoded, ("cup", "cup", "left")))
    full = encode_example(processor, record, MAX_PIXELS_TRAIN)
    assert all(t in (IGNORE, f) for t, f in zip(row["labels"], full["labels"]))
    batch = DialogueCollator(processor, [record], max_pixels=MAX_PIXELS_TRAIN, max_length=None,
                             loss_pattern=pattern)([record])
    assert batch["labels"][0].tolist() == row["labels"]
    # a record with nothing to learn under the pattern is counted, as an unloadable one is
    turns = [t | {"content": t["content"].replace("left", "right")} if t["role"] == "assistant" else t
             for t in record["conversations"]]
    other = record | {"conversations": turns}
    collate = DialogueCollator(processor, [other, record], max_pixels=MAX_PIXELS_TRAIN, max_length=None,
                               loss_pattern=re.compile("left"))
    batch = collate([other, record])
    assert batch["data_problems"] == ["no_loss_pattern_match"]
    left = encode_example(processor, record, MAX_PIXELS_TRAIN, re.compile("left"))["labels"]
    assert (batch["labels"][0] == IGNORE).all() and (batch["labels"][1] != IGNORE).sum() == sum(
        t != IGNORE for t in left) > 0
    with pytest.raises(SystemExit) as exit_:  # refused before any data is read
        cli.main(["sft", "--config", "sft_cpu_toy", "--model", str(tiny), "--data", str(data),
                  "--out", str(tmp_path / "run"), "--set", "loss_pattern=(cup"])
    assert exit_.value.code == 2 and "loss_pattern '(cup' is not a regular expression" in capsys.readouterr().err


def test_drop_images_trains_a_one_turn_records_text_alone(processor, tiny, tmp_path):
    data = write_data(tmp_path / "data.json", [write_trajectory(tmp_path, "ask", turns=(ANSWER,)),
                                               write_trajectory(tmp_path)])
    (pictured, _), _ = load(data, processor)
    (alone,), report = load_trajectories([data], processor.tokenizer, max_pixels=MAX_PIXELS_TRAIN,
                                         max_length=None, drop_images=True)
    assert report.skipped == {"draws_on_images": 1}  # drawing on an image needs the image
    assert alone["images"] == [] and "<image>" not in json.dumps(alone["conversations"])
    row, full = (encode_example(processor, r, MAX_PIXELS_TRAIN) for r in (alone, pictured))
    # the same tokens as the pictured dialogue's, less the image's
    vision = set(processor.tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]))
    assert "pixel_values" not in row and sum(row["mm_token_type_ids"]) == 0
    assert row["input_ids"] == [t for t in full["input_ids"] if t not in vision]
    assert row["labels"] == [t for t, i in zip(full["labels"], full["input_ids"]) if i not in vision]
    collate = DialogueCollator(processor, [alone], max_pixels=MAX_PIXELS_TRAIN, max_length=None)
    assert collate([alone, pictured])["image_grid_thw"].tolist() == full["image_grid_thw"].tolist()  # one image
    # a batch without images runs the vision tower on a blank one (ZeRO-3 needs every rank to),
    # after the text's last token: the text's logits and loss are exactly those without it
    batch = collate([alone])
    assert batch["image_grid_thw"].shape[0] == 1 and batch["input_ids"][0, :len(row["input_ids"])].tolist() == row[
        "input_ids"]
    model = AutoModelForImageTextToText.from_pretrained(tiny, dtype=torch.float32).eval()
    bare = {k: torch.tensor([row[k]]) for k in ("input_ids", "labels", "mm_token_type_ids")}
    with torch.no_grad():
        padded, plain = model(**{k: v for k, v in batch.items() if k != "data_problems"}), model(**bare)
    assert torch.allclose(padded.logits[0, :len(row["input_ids"])], plain.logits[0], atol=1e-5)
    assert torch.allclose(padded.loss, plain.loss, atol=1e-6)

    out = tmp_path / "run"
    cli.main(["sft", "--config", "sft_cpu_toy", "--model", str(tiny), "--data", str(data), "--out", str(out),
              "--set", "drop_images=true", "--set", "max_steps=60", "--set", "save_steps=60"])
    report = json.loads((out / "data_report.json").read_text())
    assert (report["kept"], report["skipped"], report["skipped_in_training"]) == (1, {"draws_on_images": 1}, {})
    losses = [e["loss"] for e in json.loads((out / "checkpoint-60" / "trainer_state.json").read_text())[
        "log_history"] if "loss" in e]
    assert losses[-1] < losses[0] / 10


def test_training_rows_are_the_nodes_encoding(data, processor, tiny):
    """Train/serve parity: the row built from files on disk is token for token, pixel for pixel,
    what the node's engine encodes for the live dialogue."""
    (record,), _ = load(data, processor)
    row = encode_example(processor, record, MAX_PIXELS_TRAIN)
    session = recorded_session()
    served = encode_dialogue(load_processor(tiny, max_pixels=16384 * 28 * 28), session.messages, session.images)
    assert row["input_ids"] == served.input_ids
    assert torch.equal(row["pixel_values"], served.vision_inputs()["pixel_values"])


def test_shipped_configs_are_the_papers_recipe():
    required = {"model": "m", "out": "o", "data": "d.json"}
    for name, gpus in (("sft_8gpu", 8), ("sft_32gpu", 32)):
        config = load_config(sft.Config, name, required)
        t = config.trainer
        assert t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] * gpus == 32
        assert (t["learning_rate"], t["num_train_epochs"], t["lr_scheduler_type"], t["warmup_steps"]) == (
            1e-5, 3, "cosine", 0.1)
        assert t["bf16"] and t["max_length"] == 18432 and config.freeze_vision
        assert json.loads(Path(t["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3
    config = load_config(sft.Config, "sft_cpu_toy", required | {"learning_rate": "2e-5", "data": "x.json",
                                                                "deepspeed": "zero2", "freeze_vision": False})
    assert config.trainer["learning_rate"] == 2e-5 and config.data == ["x.json"] and not config.freeze_vision
    assert config.trainer["deepspeed"].endswith("ds_zero2.json") and os.path.isfile(config.trainer["deepspeed"])
    with pytest.raises(ValueError, match="learning_rate"):
        load_config(sft.Config, "sft_cpu_toy", required | {"learning_rat": 1.0})
    args = cli.build_parser().parse_args(["sft", "--data", "a", "--data", "b", "--set", "seed=3", "--resume"])
    assert (args.data, args.assignments, args.resume) == (["a", "b"], [("seed", 3)], True)


def test_short_run_lowers_loss_and_the_node_reproduces_the_trained_turns(data, tiny, tmp_path):
    out = tmp_path / "run"
    cli.main(["sft", "--config", "sft_cpu_toy", "--model", str(tiny), "--data", str(data), "--out", str(out),
              "--set", "max_steps=80", "--set", "save_steps=80"])
    losses = [e["loss"] for e in json.loads((out / "checkpoint-80" / "trainer_state.json").read_text())[
        "log_history"] if "loss" in e]
    assert losses[-1] < losses[0] / 20
    assert list((out / "runs").glob("*/events.out.tfevents.*"))  # TensorBoard
    assert (out / "model.safetensors").is_file() and (out / "data_report.json").is_file()

    engine = create_engine("transformers", str(out), device="cpu", temperature=0)
    session = new_session()
    run_sessions([session], engine)
    engine.close()
    assert session.assistant_turns == [DRAW, ANSWER]
    assert (session.finish_reason, session.answer, len(session.images)) == ("answer", "A", 2)


def test_bad_records_are_skipped_and_reported_and_vanished_images_never_stop_the_run(
        tiny, tmp_path, monkeypatch):
    good, vanishing = write_trajectory(tmp_path, "good"), write_trajectory(tmp_path, "vanishing")

    def edited(change):
        record = json.loads(json.dumps(good))
        change(record)
        return record

    def turn(i, text):
        return lambda r: r["conversations"][i].update(content=text)

    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    bad = {
        "malformed": {"conversations": "hello"},
        "unknown_role": edited(lambda r: r["conversations"][2].update(role="robot")),
        "bad_turn_order": edited(lambda r: r["conversations"].pop(2)),
        "image_count_mismatch": edited(lambda r: r["images"].append("good/0.png")),
        "missing_image": edited(lambda r: r["images"].__setitem__(1, "nowhere/1.png")),
        "unreadable_image": edited(lambda r: r["images"].__setitem__(1, "corrupt.png")),
        "drawing_turn_without_ops": edited(turn(2, "<think>hmm</think>\nAction: Object Mapper\n```json\n[]\n```")),
        "no_final_answer": edited(turn(4, "<think>It is on the left.</think>\nAction: Answer\nA")),
        "bad_image_index": edited(turn(2, DRAW.replace('"index": 1', '"index": 2'))),
        "too_long": edited(turn(1, "<image>" + " left right" * 3000)),
    }
    data = write_data(tmp_path / "data.json", [good, *bad.values(), vanishing])

    def load_then_delete(*args, **kwargs):  # an image disappears after validation, mid-run
        result = load_trajectories(*args, **kwargs)
        os.remove(tmp_path / "vanishing" / "1.png")
        return result

    monkeypatch.setattr(sft, "load_trajectories", load_then_delete)
    out = tmp_path / "run"
    cli.main(["sft", "--config", "sft_cpu_toy", "--model", str(tiny), "--data", str(data), "--out", str(out),
              "--set", "max_steps=6", "--set", "save_steps=6"])
    report = json.loads((out / "data_report.json").read_text())
    assert (report["records"], report["kept"]) == (12, 2)
    assert report["skipped"] == {reason: 1 for reason in bad}
    assert set(report["examples"]) == set(bad) and "nowhere/1.png" in report["examples"]["missing_image"][0]
    assert report["skipped_in_training"]["load_failed:FileNotFoundError"] >= 1
    assert json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


def test_collator_stands_in_for_an_example_that_cannot_load(data, processor, tmp_path):
    records, _ = load(data, processor)
    broken = records[0] | {"images": [str(tmp_path / "gone.png"), *records[0]["images"][1:]]}
    collator = DialogueCollator(processor, records, max_pixels=MAX_PIXELS_TRAIN, max_length=None)
    batch = collator([records[0], broken])
    assert batch["data_problems"] == ["load_failed:FileNotFoundError"]
    assert batch["input_ids"].shape[0] == 2 and batch["image_grid_thw"].shape[0] == 4
    assert (batch["labels"][0] != IGNORE).any() and (batch["labels"][1] == IGNORE).all()
    shutil.rmtree(tmp_path / "traj")  # nothing loadable left: a clear error, not a hang
    with pytest.raises(RuntimeError, match="no example"):
        DialogueCollator(processor, records, max_pixels=MAX_PIXELS_TRAIN, max_length=None)([records[0]])
