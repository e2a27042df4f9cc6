"""The perception probes' pieces: the four cell digits are found in the encoded answer, and the
image-after-the-question layout moves only the image (benchmarks/perception_probe.py,
benchmarks/image_layout_probe.py)."""

from __future__ import annotations

import json
import re

import pytest
from vilasr_train.data import encode_example, to_messages

from benchmarks.image_layout_probe import image_last
from benchmarks.perception_probe import cell_digits
from ros_vilasr.core.images import MAX_PIXELS_TRAIN
from ros_vilasr.core.models import EMBEDDED_DIR
from ros_vilasr.core.processor import load_processor
from ros_vilasr.synth import look
from ros_vilasr.synth.trajectories import write_dataset


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("look")
    write_dataset(look.look_tasks(2, seed=3, sizes=(4,), contexts=("maze",)), out)
    r = json.loads((out / "trajectories.json").read_text())[1]
    return {"conversations": r["conversations"], "images": [str(out / p) for p in r["images"]]}, r


def digits(processor, record) -> list[str]:
    row = encode_example(processor, record, MAX_PIXELS_TRAIN)
    tokens = [processor.tokenizer.decode([t]) for t in row["input_ids"]]
    first = next(i for i, label in enumerate(row["labels"]) if label != -100)
    return [tokens[p] for p in cell_digits(tokens, first)]


def test_the_cell_digits_are_found_in_either_layout(record):
    example, raw = record
    processor = load_processor(EMBEDDED_DIR)
    expected = re.findall(r"\d+", raw["answer"])  # "S row r, column c; G row r', column c'"
    assert len(expected) == 4
    assert digits(processor, example) == digits(processor, image_last(example)) == expected


def test_image_last_moves_only_the_image(record):
    example, _ = record
    before, after = (to_messages(r["conversations"])[1]["content"] for r in (example, image_last(example)))
    assert before[0] == after[1] == {"type": "image", "index": 0}
    assert after[0]["text"] + after[2]["text"] == before[1]["text"]
    assert after[2]["text"].startswith("The index of the given image is 1.")
    with pytest.raises(ValueError, match="not a one-image first turn"):
        image_last(image_last(example))
