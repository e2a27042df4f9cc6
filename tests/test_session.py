"""The reasoning loop with the replay engine: turns, image indices, budgets, every finish reason."""

import json
import threading

import pytest
from PIL import Image

from ros_vilasr.core import prompts
from ros_vilasr.core.driver import run_sessions
from ros_vilasr.core.engines.replay import ReplayEngine
from ros_vilasr.core.session import Budget, Reply, Session


def box(index, label, bbox):
    return (f"<think>box {label}</think>\nAction: Object Mapper\n```json\n"
            + json.dumps([{"index": index, "bbox_2d": bbox, "label": label}]) + "\n```")


def line(index, label, start, end):
    return (f"<think>line {label}</think>\nAction: Path Tracer\n```json\n"
            + json.dumps([{"index": index, "start_point_2d": start, "end_point_2d": end, "label": label}])
            + "\n```")


ANSWER = "<think>done</think>\nAction: Answer\n<answer>B</answer>"


def replay(*turns):
    return ReplayEngine([{"conversations": [{"role": "assistant", "content": t} for t in turns]}])


def session(n_images=1, **kw):
    images = [Image.new("RGB", (560 + 28 * i, 420), (40 * i, 90, 200)) for i in range(n_images)]
    return Session(images, "Where is the chair?", options=["A. left", "B. right"],
                   problem_type="multiple choice", kind="views" if n_images > 1 else "single", **kw)


def user_texts(s):
    return ["".join(p.get("text", "") for p in m["content"]) for m in s.messages if m["role"] == "user"]


def test_multi_turn_multi_image_indices_and_trace():
    s = session(2)
    run_sessions([s], replay(box(1, "chair", [10, 20, 100, 200]), line(3, "ray", [0, 0], [50, 60]),
                             box(2, "table", [5, 5, 50, 50]), ANSWER))
    assert (s.finish_reason, s.answer, s.calls) == ("answer", "B", 4)
    assert len(s.images) == 5 and [st.new_images for st in s.steps] == [[3], [4], [5], []]
    assert s.origin == [0, 1, 0, 0, 1]  # image 4 was drawn on image 3, itself from input 1
    texts = user_texts(s)
    assert texts[0].startswith("These are 2 views")
    assert "The index of the given image is 2 (width: 588, height: 420)." in texts[0]
    assert texts[1] == prompts.index_sentence(3, (560, 420)) + " " + prompts.CONTINUE
    op = s.trace()[1]["ops"][0]
    assert op["image_index"] == 3 and op["source_index"] == 1 and op["kind"] == "line"
    conv = s.conversations()
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "user", "assistant", "user",
                                         "assistant", "user", "assistant"]
    assert sum(m["content"].count("<image>") for m in conv) == 5


def test_single_image_prompt_and_system_prompt_size():
    s = session(1)
    assert user_texts(s)[0].endswith("The index of the given image is 1.\n" + prompts.BEGIN)
    assert "(0, 0)" in s.messages[0]["content"] and "(560, 420)" in s.messages[0]["content"]
    assert "Answer with the option's letter" in user_texts(s)[0]


def test_answer_now_text_one_call_before_budget():
    s = session(1, budget=Budget(max_calls=3))
    run_sessions([s], replay(box(1, "a", [1, 1, 9, 9]), box(2, "a", [2, 2, 9, 9]), ANSWER))
    texts = user_texts(s)
    assert texts[1].endswith(prompts.CONTINUE)
    assert texts[2].endswith(prompts.ANSWER_NOW)  # the next call is the last allowed one
    assert s.finish_reason == "answer" and s.steps[1].revises


def test_max_calls_when_model_never_answers():
    s = session(1, budget=Budget(max_calls=2))
    run_sessions([s], replay(box(1, "a", [1, 1, 9, 9]), box(1, "b", [1, 1, 9, 9]), ANSWER))
    assert s.finish_reason == "max_calls" and s.calls == 2


def test_image_cap_switches_to_answer_now_then_too_many_images():
    s = session(1, budget=Budget(max_images=3))
    run_sessions([s], replay(box(1, "a", [1, 1, 9, 9]), box(1, "b", [1, 1, 9, 9]),
                             box(1, "c", [1, 1, 9, 9])))
    assert user_texts(s)[2].endswith(prompts.ANSWER_NOW)
    assert s.finish_reason == "too_many_images" and len(s.images) == 3


@pytest.mark.parametrize("turn, reason", [
    ("<think>hmm</think>\nAction: Object Mapper\n```json\n[{\"index\": 1}]\n```", "tool_error"),
    ("I refuse to follow the format", "tool_error"),
    (box(0, "a", [1, 1, 2, 2]), "bad_index"),
    (box(7, "a", [1, 1, 2, 2]), "bad_index"),
])
def test_error_finish_reasons(turn, reason):
    s = session(1)
    run_sessions([s], replay(turn, ANSWER))
    assert s.finish_reason == reason and s.error and s.steps[-1].error == s.error
    assert s.calls == 1


def test_length_and_token_budget():
    s = session(1)
    s.submit(Reply("<think>very long", finish="length"))
    assert s.finish_reason == "length"
    s = session(1, budget=Budget(max_total_tokens=100))
    s.submit(Reply(box(1, "a", [1, 1, 9, 9]), completion_tokens=60))
    assert s.request().max_new_tokens == 40
    s.submit(Reply(box(1, "b", [1, 1, 9, 9]), completion_tokens=40))
    assert s.finish_reason == "length"


def test_cancel_and_engine_failures():
    s = session(1)
    cancel = threading.Event()
    cancel.set()
    run_sessions([s], replay(ANSWER), cancel=cancel)
    assert s.finish_reason == "cancelled" and s.calls == 0

    class Broken:
        def generate(self, requests, cancel=None):
            raise ConnectionError("server down")

    a, b = session(1), session(1)
    run_sessions([a, b], Broken())
    assert a.finish_reason == b.finish_reason == "engine_error" and "server down" in a.error
    c = session(1)
    run_sessions([c], replay(box(1, "a", [1, 1, 9, 9])))  # transcript runs out of turns
    assert c.finish_reason == "engine_error"


def test_batched_driver_calls_engine_once_per_round():
    calls = []

    class Counting(ReplayEngine):
        def generate(self, requests, cancel=None):
            calls.append(len(requests))
            return super().generate(requests, cancel)

    short = {"question": "short", "conversations": [{"role": "assistant", "content": ANSWER}]}
    long = {"question": "long", "conversations": [{"role": "assistant", "content": t} for t in
                                                  (box(1, "a", [1, 1, 9, 9]), ANSWER)]}
    img = Image.new("RGB", (100, 100))
    sessions = [Session([img], "long"), Session([img], "short"), Session([img], "long")]
    run_sessions(sessions, Counting([short, long]))
    assert calls == [3, 2]
    assert [s.calls for s in sessions] == [2, 1, 2]


def test_image_position_last_puts_the_question_before_the_images():
    single = session(image_position="last").conversations()[1]["content"]
    assert single == ("Where is the chair?\nA. left\nB. right\n" + prompts.problem_suffix("multiple choice")
                      + "\n<image>" + prompts.index_sentence(1) + "\n" + prompts.BEGIN)
    assert session().conversations()[1]["content"] == "<image>" + single.replace("<image>", "")  # protocol
    views = session(2, image_position="last").conversations()[1]["content"]
    question, images = views.split("<image>", 1)
    assert question.startswith("These are 2 views") and "Where is the chair?" in question
    assert images == (prompts.index_sentence(1, (560, 420)) + "\n<image>" + prompts.index_sentence(2, (588, 420))
                      + "\n" + prompts.BEGIN)
    with pytest.raises(ValueError, match="image_position must be one of"):
        session(image_position="middle")
