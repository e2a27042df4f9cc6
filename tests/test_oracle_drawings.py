"""benchmarks/oracle_drawings.py asks a model for the oracle dialogue's final turn only: the request
holds every turn and image before it (the drawn ones too), and the final turn is classed as
right, wrong, a drawing instead of an answer, or a letter other than the option its thought names."""

from __future__ import annotations

import json

import pytest
from vilasr_train.data import normalise

from benchmarks.oracle_drawings import answer_request, final_turn
from ros_vilasr.core.images import MAX_PIXELS_EVAL
from ros_vilasr.synth import maze
from ros_vilasr.synth.trajectories import write_dataset

PROFILE = {"max_pixels": MAX_PIXELS_EVAL, "max_new_tokens": 64}


def record(tmp_path, index: int = 0) -> dict:
    """A maze dialogue: index 0 asks for the turn count, 1 for the move sequence (options both)."""
    write_dataset([maze.maze_task(5, index, sizes=(3,))], tmp_path)
    raw = json.loads((tmp_path / "trajectories.json").read_text())[0]
    return normalise(raw, "maze", tmp_path) | {k: raw[k] for k in ("answer", "problem_type")}


def test_the_request_ends_before_the_answer_turn_with_every_image_so_far(tmp_path):
    rec = record(tmp_path)
    request = answer_request(rec, "k", PROFILE)
    turns = rec["conversations"]
    assert turns[-1]["role"] == "assistant" and "<answer>" in turns[-1]["content"]
    assert len(request.messages) == len(turns) - 1 and request.messages[-1]["role"] == "user"
    assert len(request.images) == len(rec["images"]) >= 3  # the input and at least two drawn images
    assert request.max_new_tokens == 64


@pytest.mark.parametrize("index", [0, 1])
def test_the_final_turn_is_classed(tmp_path, index):
    rec = record(tmp_path, index)
    oracle = rec["conversations"][-1]["content"]
    right, letter = final_turn(oracle, rec), rec["answer"]
    assert right == {"answered": True, "prediction": letter, "score": 1.0, "letter_not_named": False}
    other = next(x for x in "ABCD" if x != letter)
    swapped = final_turn(oracle.replace(f"<answer>{letter}</answer>", f"<answer>{other}</answer>"), rec)
    assert swapped == {"answered": True, "prediction": other, "score": 0.0, "letter_not_named": True}
    drawing = rec["conversations"][2]["content"]  # the oracle's first (drawing) turn
    assert final_turn(drawing, rec) == {"answered": False, "prediction": "", "score": 0.0, "letter_not_named": False}
