"""A real model drives the loop: a tiny Qwen2.5-VL taught in-test to draw then answer, run through
the transformers engine, draws, receives its drawing and answers — end to end."""

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import Qwen2_5_VLForConditionalGeneration

from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines.hf import TransformersEngine
from ros_vilasr.core.engines.replay import ReplayEngine
from ros_vilasr.core.processor import load_processor
from ros_vilasr.core.session import Session
from ros_vilasr.core.tiny_model import build_tiny_model, teach

DRAW = ('<think>Mark the cup.</think>\nAction: Object Mapper\n```json\n'
        '[{"index": 1, "bbox_2d": [28, 28, 84, 84], "label": "cup"}]\n```')
ANSWER = "<think>It is on the left.</think>\nAction: Answer\n<answer>A</answer>"


def scene():
    image = Image.new("RGB", (224, 168), "white")
    ImageDraw.Draw(image).rectangle((30, 30, 80, 80), fill="red")
    return image


def new_session():
    return Session([scene()], "Is the cup on the left or the right?", options=["A. left", "B. right"],
                   problem_type="multiple choice")


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)
    processor = load_processor(path, max_pixels=16384 * 28 * 28)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    recorded = new_session()
    run_sessions([recorded], ReplayEngine([{"conversations": [
        {"role": "assistant", "content": DRAW}, {"role": "assistant", "content": ANSWER}]}]))
    losses = teach(model, processor, [recorded], steps=150)
    assert losses[-1] < losses[0] / 10
    return model, processor


def test_tiny_model_draws_sees_its_drawing_and_answers(taught):
    model, processor = taught
    engine = TransformersEngine(model, processor=processor, temperature=0)
    session = new_session()
    run_sessions([session], engine)
    assert session.assistant_turns == [DRAW, ANSWER]
    assert (session.finish_reason, session.answer, session.calls) == ("answer", "A", 2)
    assert len(session.images) == 2
    # the drawn image it received really carries the red outline of Object Mapper's first box
    drawn = session.images[1]
    assert drawn.getpixel((28, 50)) == (255, 0, 0) and session.images[0].getpixel((28, 50)) == (255, 255, 255)
    op = session.steps[0].ops[0]
    assert op.model_coords == (28, 28, 84, 84) and op.source_index == 1


def test_batched_generation_matches_single(taught):
    model, processor = taught
    engine = TransformersEngine(model, processor=processor, temperature=0)
    sessions = [new_session() for _ in range(3)]
    sessions[1] = Session([scene(), scene().rotate(180)], "Is the cup on the left or the right?",
                          options=["A. left", "B. right"], problem_type="multiple choice", kind="views")
    run_sessions(sessions, engine)
    assert sessions[0].assistant_turns == sessions[2].assistant_turns == [DRAW, ANSWER]
    assert all(s.done for s in sessions)
