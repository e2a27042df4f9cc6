"""The perception probes' pieces: the four cell digits are found in the encoded answer in either
prompt layout (benchmarks/perception_probe.py, benchmarks/image_layout_probe.py), and an S read as
G's cell is counted."""

from __future__ import annotations

import json
import re

import pytest
from vilasr_train.data import encode_example
from vilasr_train.readout import cell_digits, s_read_as_g

from ros_vilasr.core.images import MAX_PIXELS_TRAIN
from ros_vilasr.core.models import EMBEDDED_DIR
from ros_vilasr.core.processor import load_processor
from ros_vilasr.synth import look
from ros_vilasr.synth.trajectories import write_dataset


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The same perception question in both layouts (``image_position``), and its raw record."""
    out = tmp_path_factory.mktemp("look")
    examples = []
    for position in ("first", "last"):
        write_dataset(look.look_tasks(2, seed=3, sizes=(4,), contexts=("maze",)), out / position,
                      image_position=position)
        r = json.loads((out / position / "trajectories.json").read_text())[1]
        examples.append({"conversations": r["conversations"], "images": [str(out / position / p) for p in r["images"]]})
    return examples, r


def digits(processor, record) -> list[str]:
    row = encode_example(processor, record, MAX_PIXELS_TRAIN)
    tokens = [processor.tokenizer.decode([t]) for t in row["input_ids"]]
    first = next(i for i, label in enumerate(row["labels"]) if label != -100)
    return [tokens[p] for p in cell_digits(tokens, first)]


def test_the_cell_digits_are_found_in_either_layout(records):
    (first, last), raw = records
    processor = load_processor(EMBEDDED_DIR)
    expected = re.findall(r"\d+", raw["answer"])  # "S row r, column c; G row r', column c'"
    assert len(expected) == 4
    assert first["conversations"][1]["content"].startswith("<image>")
    assert not last["conversations"][1]["content"].startswith("<image>")
    assert digits(processor, first) == digits(processor, last) == expected


def test_an_s_read_as_g_is_counted_only_where_the_cells_differ():
    assert s_read_as_g([3, 1, 3, 4], [2, 1, 3, 4]) == (1, 2)  # S row read as G's; S column right
    assert s_read_as_g([2, 1, 3, 4], [2, 1, 3, 4]) == (0, 2)
    assert s_read_as_g([3, 1, 3, 1], [3, 1, 3, 1]) == (0, 0)  # same cell digits: nothing to tell apart
