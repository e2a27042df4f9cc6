"""The cell readout (training/vilasr_train/readout.py) and the SFT phase that ends once the model
reads the maze cells: a tiny model trained on two maze dialogues' first turns stops as soon as it
reads both discs there, with the readouts on record; a disc list it cannot be measured on is
refused before training."""

from __future__ import annotations

import json

import pytest
from sft_helpers import write_data, write_trajectory
from transformers import AutoModelForImageTextToText
from vilasr_train import cli
from vilasr_train.readout import DIGITS, discs_read, first_turn, load_records, readout

from ros_vilasr.core.processor import load_processor
from ros_vilasr.core.tiny_model import build_tiny_model
from ros_vilasr.synth import maze
from ros_vilasr.synth.trajectories import write_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def mazes(tmp_path_factory):
    """Two labelled 3x3 maze dialogues."""
    out = tmp_path_factory.mktemp("mazes")
    write_dataset(maze.maze_tasks(2, seed=7, sizes=(3,), labels=True), out)
    return out / "trajectories.json"


def test_first_turn_keeps_the_question_its_image_and_the_first_answer(mazes):
    record = load_records(mazes)[0]
    cut = first_turn(record)
    roles = [m.get("role", m.get("from")) for m in cut["conversations"]]
    assert roles == ["system", "user", "assistant"] and len(record["conversations"]) > 3
    assert cut["images"] == record["images"][:1] and len(record["images"]) > 1
    assert "row" in cut["conversations"][-1]["content"]


def test_a_disc_is_read_when_its_row_and_column_both_reach_the_threshold():
    result = {"hits": [10, 9, 10, 7], "n": 10}
    assert discs_read(result, 0.9) == ["start"]
    assert discs_read(result, 0.7) == ["start", "goal"]
    assert discs_read(result, 1.0) == []


def test_sft_ends_once_both_discs_are_read_and_keeps_the_readouts(tiny, mazes, tmp_path):
    heldout = mazes
    out = tmp_path / "run"
    until = {"data": str(heldout), "n": 2, "discs": ["start", "goal"], "threshold": 1.0, "every": 10}
    cli.main(["sft", "--config", "sft_cpu_toy", "--model", str(tiny), "--data", str(heldout),
              "--out", str(out), "--set", "max_steps=300", "--set", "save_steps=300", "--set", "max_length=16384",
              "--set", f"until_read={json.dumps(until)}"])
    history = [json.loads(line) for line in (out / "readout.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(10, 10 * len(history) + 1, 10))
    assert [h["stop"] for h in history] == [False] * (len(history) - 1) + [True]  # stopped at the first read
    assert history[-1]["read"] == ["start", "goal"] and all(history[-1][d] == 1.0 for d in DIGITS)
    assert history[-1]["step"] < 300

    # the model saved at the stop reads them; the untrained one does not
    processor = load_processor(out)

    records = [first_turn(r) for r in load_records(heldout)]
    trained = readout(processor, AutoModelForImageTextToText.from_pretrained(out).eval(), records)
    untrained = readout(processor, AutoModelForImageTextToText.from_pretrained(tiny).eval(), records)
    assert trained["hits"] == [2, 2, 2, 2] and trained["n"] == 2
    assert untrained["hits"] != [2, 2, 2, 2]


@pytest.mark.parametrize("until, message", [
    ({"discs": ["wall"]}, "discs from"),
    ({"need": "most"}, "need all or any"),
    ({"data": "missing.json"}, "not found"),
    ({"treshold": 0.9}, "treshold"),
    ({"data": "WRONG"}, "names no S and G cells"),
])
def test_an_until_read_it_cannot_measure_is_refused_before_training(tiny, mazes, tmp_path, capsys, until,
                                                                      message):
    heldout = mazes
    if until.get("data") == "WRONG":  # dialogues of another task: nothing to read
        until = {"data": str(write_data(tmp_path / "scene.json", [write_trajectory(tmp_path)]))}
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sft", "--config", "sft_cpu_toy", "--model", str(tiny), "--data", str(heldout),
                  "--out", str(tmp_path / "run"), "--set", f"until_read={json.dumps({'data': str(heldout)} | until)}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "until_read: " in err and message in err
    assert not (tmp_path / "run" / "readout.jsonl").exists()
