"""The node's ROS-free pieces: parameter table, frame conversion, key-frame buffer, query worker,
typed answers and engine arguments. No ROS is started here."""

from __future__ import annotations

import io
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from ros_vilasr.core.images import evenly_spaced as spread
from ros_vilasr.core.session import Reply, Session
from ros_vilasr.node import params
from ros_vilasr.node.conversions import (
    CHANNELS,
    CompressedPayload,
    FrameError,
    RawPayload,
    decode_compressed,
    decode_raw,
    to_rgb,
)
from ros_vilasr.node.keyframes import Frame, FrameTooLarge, KeyFrameBuffer, KeyFrameSettings, thumbnail
from ros_vilasr.node.queries import Job, QueryWorker, engine_arguments, model_id, typed_answer

# -- parameters ----------------------------------------------------------------------------------

def test_parameter_table_agrees_with_the_core_and_is_self_consistent():
    from ros_vilasr.core.engines import ENGINES
    from ros_vilasr.core.images import MAX_PIXELS_EVAL, MIN_PIXELS

    assert params.ENGINES == ENGINES
    assert (params.MIN_PIXELS, params.MAX_PIXELS_EVAL) == (MIN_PIXELS, MAX_PIXELS_EVAL)
    assert params.BY_NAME["max_pixels"].default == 351232
    assert (params.BY_NAME["max_calls"].default, params.BY_NAME["max_images"].default) == (10, 45)
    assert (params.BY_NAME["temperature"].default, params.BY_NAME["top_p"].default) == (0.75, 0.9)
    assert params.BY_NAME["model"].default == "embedded"
    for p in params.PARAMETERS:
        assert len(p.description) > 20, p.name
        if p.range is not None:
            assert p.range[0] <= p.default <= p.range[1], p.name
        if p.choices:
            assert p.default in p.choices, p.name
        assert params.check_value(p.name, p.default) is None, p.name


def test_params_module_stays_light():
    """The launch-file test and docs read the table without ROS or the ML stack."""
    import subprocess

    code = ("import sys, ros_vilasr.node.params; "
            "print(sorted(m for m in ('rclpy', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_launch_default_strings():
    assert params.launch_default(params.BY_NAME["image_topics"]) == "['/camera/image_raw']"
    assert params.launch_default(params.BY_NAME["autostart"]) == "true"
    assert params.launch_default(params.BY_NAME["max_calls"]) == "10"


# -- conversions ---------------------------------------------------------------------------------

RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)


def _encode(encoding: str) -> np.ndarray:
    alpha = np.full((4, 5, 1), 255, np.uint8)
    return {"rgb8": RGB, "bgr8": RGB[:, :, ::-1], "rgba8": np.dstack([RGB, alpha]),
            "bgra8": np.dstack([RGB[:, :, ::-1], alpha]), "mono8": RGB[:, :, 0]}[encoding]


@pytest.mark.parametrize("encoding", list(CHANNELS))
@pytest.mark.parametrize("padding", [0, 3])
def test_raw_encodings_decode_to_rgb(encoding, padding):
    pixels = np.ascontiguousarray(_encode(encoding))
    ch = CHANNELS[encoding]
    rows = pixels.reshape(4, 5 * ch)
    data = np.hstack([rows, np.zeros((4, padding), np.uint8)]).tobytes()
    array = decode_raw(5, 4, encoding, 5 * ch + padding, data)
    rgb = to_rgb(array, encoding)
    expected = np.repeat(RGB[:, :, :1], 3, axis=2) if encoding == "mono8" else RGB
    assert np.array_equal(rgb, expected)
    payload = RawPayload(array, encoding, len(data))
    assert np.array_equal(np.asarray(payload.to_pil()), expected)


@pytest.mark.parametrize("fields, kind", [
    ((5, 4, "16UC1", 10, bytes(40)), "unsupported_encoding"),
    ((5, 4, "yuv422", 10, bytes(40)), "unsupported_encoding"),
    ((0, 0, "rgb8", 0, b""), "empty"),
    ((5, 0, "rgb8", 15, b""), "empty"),
    ((5, 4, "rgb8", 14, bytes(56)), "bad_step"),
    ((5, 4, "rgb8", 15, bytes(59)), "size_mismatch"),  # truncated
    ((5, 4, "rgb8", 15, bytes(61)), "size_mismatch"),
])
def test_malformed_raw_frames_raise_with_a_kind_and_reason(fields, kind):
    with pytest.raises(FrameError) as err:
        decode_raw(*fields)
    assert err.value.kind == kind and err.value.reason


def _compressed(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 24, 3), (200, 30, 10), np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_compressed_frames_decode(fmt):
    data = _compressed(fmt)
    bgr = decode_compressed(data)
    assert bgr.shape == (16, 24, 3)
    rgb = np.asarray(CompressedPayload(data, len(data)).to_pil())
    assert np.abs(rgb.astype(int) - (200, 30, 10)).max() <= 3


@pytest.mark.parametrize("mangle, words", [
    (lambda d: d[: len(d) // 2], "truncated"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: b"", "empty"),
    (lambda d: b"GIF89a" + d, "neither JPEG nor PNG"),
])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_bad_compressed_frames_are_refused(fmt, mangle, words):
    with pytest.raises(FrameError) as err:
        decode_compressed(mangle(_compressed(fmt)))
    assert words in err.value.reason


def test_corrupt_png_body_is_undecodable():
    data = bytearray(_compressed("PNG"))
    data[40:60] = bytes(20)  # inside the image data, end chunk intact
    with pytest.raises(FrameError) as err:
        decode_compressed(bytes(data))
    assert err.value.kind == "undecodable"


def _sized(fmt: str, width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (9, 9, 9)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size, kind, words", [
    ((600, 400), "too_large", "exceeds max_frame_pixels = 200000"),
    ((6000, 28), "bad_shape", "aspect ratio over 200"),
    ((200, 20), "bad_shape", "a side is under 28 px"),
])
def test_frames_are_checked_from_their_header_before_decoding(fmt, size, kind, words, monkeypatch):
    data = _sized(fmt, *size)
    monkeypatch.setattr("ros_vilasr.node.conversions.cv2.imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(FrameError) as err:
        decode_compressed(data, max_pixels=200_000)
    assert err.value.kind == kind and words in err.value.reason


def test_frame_shape_limits_apply_to_raw_frames_and_compressed_ones_count_decoded():
    from types import SimpleNamespace

    from ros_vilasr.node.conversions import compressed_payload, raw_payload
    sliver = SimpleNamespace(width=2000, height=1, encoding="mono8", step=2000, data=bytes(2000))
    with pytest.raises(FrameError, match="under 28 px"):
        raw_payload(sliver, 10**8)
    ok = SimpleNamespace(width=40, height=30, encoding="mono8", step=40, data=bytes(1200))
    assert raw_payload(ok, 10**8)[0].nbytes == 1200
    data = _sized("PNG", 300, 200)
    payload, pixels = compressed_payload(SimpleNamespace(data=data), 10**8)
    assert payload.nbytes == len(data) + 300 * 200 * 3 and pixels.shape == (200, 300, 3)


# -- key frames ----------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Payload:
    def __init__(self, nbytes=1000, tag=None):
        self.nbytes, self.tag = nbytes, tag


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def make_buffer(**settings):
    clock = Clock()
    return KeyFrameBuffer(KeyFrameSettings(**({"min_interval_s": 0.0, "memory_bytes": 10**9} | settings)), clock), clock


def test_min_interval_between_key_frames():
    buf, clock = make_buffer(min_interval_s=1.0)
    kept = []
    for i in range(10):
        kept.append(buf.offer("a", i, Payload(), frame(i)))
        clock.t += 0.3
    assert kept == [True, False, False, False, True, False, False, False, True, False]
    assert buf.latest(["a"])[0].header == 9  # the latest is kept apart from key frames


def test_change_threshold_keeps_only_visibly_different_frames():
    buf, clock = make_buffer(change_threshold=0.05)
    base = frame(1)
    nudged = np.clip(base.astype(int) + 3, 0, 255).astype(np.uint8)  # ~1 % change
    assert [buf.offer("a", h, Payload(), f) for h, f in enumerate([base, base, nudged, frame(2)])] == \
        [True, False, False, True]
    assert buf.stats()["a"]["keyframes"] == 2


def test_thumbnail_needs_no_resize_and_is_lazy():
    assert thumbnail(np.zeros((720, 1280, 3), np.uint8)).shape == (32, 32)
    assert thumbnail(np.zeros((48, 64), np.uint8)).shape == (24, 32)
    buf, clock = make_buffer(min_interval_s=10.0)
    calls = []
    buf.offer("a", 0, Payload(), lambda: calls.append(1) or frame(0))
    buf.offer("a", 1, Payload(), lambda: calls.append(1) or frame(1))  # not due: never decoded
    assert len(calls) == 1


def test_frames_kept_per_camera_and_max_age():
    buf, clock = make_buffer(per_camera=3, max_age_s=5.0)
    for i in range(6):
        buf.offer("a", i, Payload(), frame(i))
        clock.t += 1.0
    assert [f.header for f in buf.window(["a"])] == [3, 4, 5]
    clock.t += 3.5  # frames 3 and 4 are now older than 5 s
    assert [f.header for f in buf.window(["a"])] == [5]
    clock.t += 10
    assert buf.window(["a"]) == [] and buf.latest(["a"]) == []


def test_memory_budget_is_never_exceeded_and_evicts_oldest_across_cameras():
    rng = np.random.default_rng(0)
    budget = 100_000  # room for every camera's latest frame plus the next one, twice
    buf, clock = make_buffer(memory_bytes=budget, per_camera=100)
    for i in range(300):
        cam = f"cam{rng.integers(3)}"
        size = int(rng.integers(1000, 20_000))
        buf.offer(cam, (cam, i), Payload(size), frame(i % 7))
        clock.t += 0.01
        assert buf.total_bytes + 2 * size <= budget  # with room for the next frame (received twice)
    # every camera still has its latest frame: key frames go first
    assert len(buf.latest(["cam0", "cam1", "cam2"])) == 3


def test_eviction_order_is_oldest_key_frame_first():
    # five frames (payload + thumbnail) of budget: three held, room for the next to arrive (twice)
    buf, clock = make_buffer(memory_bytes=5 * (1000 + 24 * 32))
    for i, cam in enumerate(["a", "b", "a", "b", "a"]):
        buf.offer(cam, i, Payload(1000), frame(i))
        clock.t += 1
    assert [f.header for f in buf.window(["a", "b"])] == [2, 3, 4]
    assert [f.header for f in buf.latest(["a", "b"])] == [4, 3]


def test_a_frame_larger_than_the_budget_is_refused():
    buf, clock = make_buffer(memory_bytes=5000)
    buf.offer("a", 0, Payload(1000), frame(0))
    with pytest.raises(FrameTooLarge):
        buf.offer("a", 1, Payload(6000), frame(1))
    assert buf.latest(["a"])[0].header == 0


def test_window_selection_and_new_settings():
    buf, clock = make_buffer(per_camera=10)
    for i in range(10):
        buf.offer("a" if i % 2 else "b", i, Payload(), frame(i))
        clock.t += 1
    assert [f.header for f in buf.window(["a", "b"], max_frames=4)] == [0, 3, 6, 9]
    assert [f.header for f in buf.window(["a"], window_s=4.5)] == [7, 9]
    assert [f.header for f in buf.latest(["b", "a"])] == [8, 9]
    buf.apply(KeyFrameSettings(min_interval_s=0.0, per_camera=2, memory_bytes=10**9))
    assert [f.header for f in buf.window(["a", "b"])] == [6, 7, 8, 9]


def test_spread():
    assert spread(list(range(10)), 3) == [0, 4, 9] or spread(list(range(10)), 3) == [0, 5, 9]
    assert spread([1, 2], 5) == [1, 2] and spread([1, 2, 3], 1) == [3] and spread([1, 2, 3], 0) == [1, 2, 3]


# -- the worker ----------------------------------------------------------------------------------

DRAW_TURN = ('<think>mark it</think>\nAction: Object Mapper\n```json\n'
             '[{"index": 1, "bbox_2d": [2, 2, 20, 20], "label": "chair"}]\n```')
ANSWER_TURN = "<think>seen</think>\nAction: Answer\n<answer>A</answer>"


class ScriptedEngine:
    """Engine double for the worker's scheduling (the DDS tests run the real engines): records the
    questions of each call, draws on a dialogue's first turn and answers on its second; calls
    listed in ``hold`` wait for ``release``. A cancelled request gets a cancelled reply and the call
    returns early only when all of its requests are cancelled, as the real engines do (unless
    ``deaf``: an engine stuck in a call that ignores cancel)."""

    def __init__(self, hold=(), deaf=False):
        self.calls: list[list[str]] = []
        self.hold, self.deaf, self.release = set(hold), deaf, threading.Event()

    def generate(self, requests, cancel=None):
        self.calls.append([r.question for r in requests])

        def cancelled(r):
            return not self.deaf and r.cancel is not None and r.cancel.is_set()
        if len(self.calls) in self.hold:
            while not self.release.wait(0.01) and not all(map(cancelled, requests)):
                pass
        return [Reply("", error="cancelled") if cancelled(r) else
                Reply(DRAW_TURN if len(r.messages) == 2 else ANSWER_TURN) for r in requests]


def worker_for(engine=None, max_pending=4, max_concurrent=1, fail=(), load=None):
    def start(job):
        if job.question in fail:
            raise RuntimeError("no frames decoded")
        job.session = Session([Image.new("RGB", (56, 56), "white")], job.question, key=job.question)
    return QueryWorker(start, engine, max_pending=max_pending, max_concurrent=max_concurrent, load=load)


class SlowLoad:
    """A model load that returns (or fails) only when told, on the worker thread."""

    def __init__(self, engine=None, error=None):
        self.engine, self.error = engine, error
        self.go, self.started, self.threads = threading.Event(), threading.Event(), []

    def __call__(self):
        self.threads.append(threading.current_thread().name)
        self.started.set()
        self.go.wait(20.0)
        if self.error is not None:
            raise self.error
        return self.engine


def wait_for_calls(engine, n, timeout=20.0):
    deadline = time.monotonic() + timeout  # the first session pays the lazy image imports
    while len(engine.calls) < n:
        assert time.monotonic() < deadline, f"{n} engine calls expected, saw {engine.calls}"
        time.sleep(0.005)


def submit(worker, *questions):
    jobs = [Job(q, []) for q in questions]
    for job in jobs:
        assert worker.reserve()
        worker.submit(job)
    return jobs


def test_worker_bounds_pending_runs_in_order_and_cancels_queued_jobs_at_once():
    engine = ScriptedEngine(hold={1})
    worker = worker_for(engine, max_pending=2)
    slow, queued = submit(worker, "slow", "queued")
    assert not worker.reserve() and worker.pending == 2
    worker.cancel(queued)
    assert queued.done.wait(1.0) and queued.finish_reason == "cancelled"
    assert worker.reserve()  # the cancelled job's slot is free again
    worker.release()
    engine.release.set()
    assert slow.done.wait(20.0) and slow.finish_reason == "answer" and slow.session.answer == "A"
    assert engine.calls == [["slow"], ["slow"]]  # two turns, the cancelled job never ran
    assert worker.stop(1.0)


def test_questions_arriving_while_others_run_join_them_between_turns():
    """Continuous batching: jobs queued during a call join the running ones at the next turn, up
    to max_concurrent, so one engine call carries dialogues at different turns."""
    engine = ScriptedEngine(hold={1})
    worker = worker_for(engine, max_concurrent=2)
    a = submit(worker, "a")[0]
    wait_for_calls(engine, 1)
    b, c = submit(worker, "b", "c")
    engine.release.set()
    for job in (a, b, c):
        assert job.done.wait(20.0) and job.finish_reason == "answer"
    assert engine.calls == [["a"], ["a", "b"], ["b", "c"], ["c"]]
    assert worker.stop(1.0)


def test_standing_questions_wait_behind_goals_and_take_no_pending_slot():
    engine = ScriptedEngine(hold={1})
    worker = worker_for(engine, max_pending=1)
    watch = Job("watch", [])
    worker.submit_background(watch)
    wait_for_calls(engine, 1)
    later_watch = Job("later watch", [])
    worker.submit_background(later_watch)
    goal = submit(worker, "goal")[0]  # the one pending slot: the watches took none
    assert not worker.reserve()
    engine.release.set()
    for job in (watch, later_watch, goal):
        assert job.done.wait(20.0) and job.finish_reason == "answer"
    # the goal, queued after the second watch, runs before it
    assert engine.calls == [["watch"], ["watch"], ["goal"], ["goal"], ["later watch"], ["later watch"]]
    assert worker.reserve() and worker.pending == 1
    assert worker.stop(1.0)


def test_cancelling_one_batched_job_leaves_the_others_running():
    engine = ScriptedEngine(hold={2})
    worker = worker_for(engine, max_concurrent=2)
    a, b = submit(worker, "a", "b")
    wait_for_calls(engine, 2)
    assert engine.calls[1] == ["a", "b"]  # a's second turn and b's first, in one call
    worker.cancel(b)
    time.sleep(0.1)
    assert not a.done.is_set()  # the call goes on for a
    engine.release.set()
    assert a.done.wait(20.0) and a.finish_reason == "answer"
    assert b.done.wait(20.0) and b.finish_reason == "cancelled"
    assert b.session.calls == sum(call.count("b") for call in engine.calls) - 1  # the cut reply was dropped
    assert worker.stop(1.0)


def test_worker_stop_cancels_the_running_job_and_survives_failures():
    engine = ScriptedEngine(hold={1})
    worker = worker_for(engine, max_pending=3, fail={"boom"})
    boom, long = submit(worker, "boom", "long")
    assert boom.done.wait(1.0) and boom.finish_reason == "error" and "no frames decoded" in boom.error
    wait_for_calls(engine, 1)
    assert worker.stop(2.0) and long.done.is_set() and long.finish_reason == "cancelled"
    late = Job("late", [])
    assert not worker.reserve()
    worker.submit(late)  # a stopped worker ends it at once
    assert late.done.is_set() and late.finish_reason == "cancelled"


def test_stop_ends_a_job_stuck_in_the_engine_without_waiting_for_it():
    engine = ScriptedEngine(hold={1}, deaf=True)  # an engine call that ignores cancel
    exited = threading.Event()
    worker = worker_for(engine, max_pending=2)
    stuck, queued = submit(worker, "stuck", "queued")
    wait_for_calls(engine, 1)
    started = time.monotonic()
    assert not worker.stop(0.2, reason="the node stopped serving", on_exit=exited.set)
    assert time.monotonic() - started < 2.0
    for job in (stuck, queued):  # both ended now, with the reason
        assert job.done.is_set() and job.finish_reason == "cancelled" and job.error == "the node stopped serving"
    assert not exited.is_set()
    engine.release.set()  # the engine call returns at last: the worker frees the engine, ends nothing twice
    assert exited.wait(20.0) and stuck.finished is not None and engine.calls == [["stuck"]]


def test_questions_asked_while_the_model_loads_wait_for_it_and_are_answered():
    engine = ScriptedEngine()
    load = SlowLoad(engine)
    worker = worker_for(load=load, max_pending=2)  # returns at once: the load runs on the worker thread
    assert load.started.wait(5.0) and load.threads == ["vilasr-worker"]
    a, b = submit(worker, "a", "b")
    assert not worker.reserve()  # queued while loading, bounded as ever
    time.sleep(0.05)
    assert worker.engine is None and not a.done.is_set() and engine.calls == []
    load.go.set()
    for job in (a, b):
        assert job.done.wait(20.0) and job.finish_reason == "answer"
    assert worker.engine is engine and engine.calls == [["a"], ["a"], ["b"], ["b"]]
    assert worker.stop(1.0)


def test_a_failed_load_ends_waiting_and_later_questions_with_its_reason():
    load = SlowLoad(error=OSError("model.safetensors: truncated"))
    worker = worker_for(load=load)
    waiting = submit(worker, "waiting")[0]
    load.go.set()
    assert waiting.done.wait(5.0)
    reason = "the model failed to load: OSError: model.safetensors: truncated"
    assert (waiting.finish_reason, waiting.error, worker.load_error) == ("error", reason, reason)
    assert not worker.reserve()
    late = Job("late", [])
    worker.submit_background(late)  # a standing question's ask: ended at once, with the reason
    assert late.done.is_set() and (late.finish_reason, late.error) == ("error", reason)


def test_stop_during_a_load_returns_at_once_and_frees_the_engine_when_it_arrives():
    engine = ScriptedEngine()
    load, exited = SlowLoad(engine), threading.Event()
    worker = worker_for(load=load)
    queued = submit(worker, "queued")[0]
    assert load.started.wait(5.0)
    assert not worker.stop(0.1, reason="deactivated", on_exit=exited.set)  # did not wait for the load
    assert queued.done.is_set() and (queued.finish_reason, queued.error) == ("cancelled", "deactivated")
    assert not exited.is_set()
    load.go.set()
    assert exited.wait(5.0) and engine.calls == []  # freed as it arrived, never used


def test_worker_takes_an_engine_or_a_load_not_both():
    with pytest.raises(ValueError, match="not both"):
        QueryWorker(lambda job: None, ScriptedEngine(), load=ScriptedEngine)
    with pytest.raises(ValueError, match="not both"):
        QueryWorker(lambda job: None)


# -- typed answers and engines ---------------------------------------------------------------------

@pytest.mark.parametrize("answer, problem_type, options, expected", [
    ("B", "multiple choice", ["A. left", "B. right"], ("choice", "B", 0.0)),
    ("(c) the chair", "multiple choice", [], ("choice", "C", 0.0)),
    ("b. right", "", ["A. left", "B. right"], ("choice", "B", 0.0)),
    ("Z", "multiple choice", ["A. left", "B. right"], ("text", "", 0.0)),
    ("2.5", "numerical", [], ("number", "", 2.5)),
    ("1,250", "regression", [], ("number", "", 1250.0)),
    ("about 3 m", "regression", [], ("number", "", 3.0)),
    ("12", "", [], ("number", "", 12.0)),
    ("3 chairs", "", [], ("text", "", 0.0)),
    ("left of the sofa", "free-form", [], ("text", "", 0.0)),
    ("7", "free-form", [], ("text", "", 0.0)),
])
def test_typed_answer(answer, problem_type, options, expected):
    assert typed_answer(answer, problem_type, options) == expected


BASE = {p.name: p.default for p in params.PARAMETERS}


@pytest.mark.parametrize("changes, expected", [
    ({}, ("transformers", "embedded",
          {"device": "auto", "dtype": "auto", "quantization": "none", "temperature": 0.75, "top_p": 0.9})),
    ({"device": "cpu", "dtype": "bfloat16", "quantization": "int8", "temperature": 0.2, "top_p": 0.5},
     ("transformers", "embedded", {"device": "cpu", "dtype": "bfloat16", "quantization": "int8",
                                   "temperature": 0.2, "top_p": 0.5})),
    ({"greedy": True}, ("transformers", "embedded",
                        {"device": "auto", "dtype": "auto", "quantization": "none", "temperature": 0.0, "top_p": 0.9})),
    ({"engine": "vllm", "dtype": "float16", "max_images": 20, "max_pixels": 200704},
     ("vllm", "embedded", {"temperature": 0.75, "top_p": 0.9, "max_images": 20, "max_pixels": 200704,
                           "dtype": "float16"})),
    ({"engine": "openai", "model": "served", "openai_base_url": "http://gpu:9000/v1", "openai_timeout_s": 30.0},
     ("openai", "served", {"base_url": "http://gpu:9000/v1", "timeout_s": 30.0, "temperature": 0.75,
                           "top_p": 0.9})),
    ({"engine": "replay", "replay_file": "/tmp/t.json"}, ("replay", "/tmp/t.json", {})),
])
def test_engine_arguments_follow_the_parameters(changes, expected):
    assert engine_arguments(BASE | changes) == expected


def test_the_model_profile_fills_only_what_is_left_at_its_default(tmp_path):
    (tmp_path / "vilasr_model.json").write_text('{"max_pixels": 200704, "max_new_tokens": 320, "temperature": 0.0}')
    values = BASE | {"model": str(tmp_path)}
    assert params.with_profile(values) == values | {"max_pixels": 200704, "max_new_tokens": 320, "greedy": True}
    chosen = values | {"max_pixels": 100352, "temperature": 0.9}  # the user's own choices stay
    assert params.with_profile(chosen) == chosen | {"max_new_tokens": 320}
    assert params.with_profile(values | {"engine": "openai"}) == values | {"engine": "openai"}
    missing = BASE | {"model": str(tmp_path / "none")}
    assert params.with_profile(missing) == missing


def test_a_query_is_asked_in_the_prompt_layout_of_the_models_profile(tmp_path):
    frames = [Frame("cam", None, RawPayload(np.full((420, 560, 3), 90, np.uint8), "rgb8", 0), 0.0)]
    values = BASE | {"max_pixels": 200704, "max_calls": 3}
    protocol = Job("Where is the cup?", frames).open_session(values, {})
    last = Job("Where is the cup?", frames).open_session(values, {"image_position": "last"})
    assert [p["type"] for p in protocol.messages[1]["content"]] == ["image", "text"]
    assert [p["type"] for p in last.messages[1]["content"]] == ["text", "image", "text"]
    assert last.messages[1]["content"][0]["text"].startswith("Where is the cup?")
    assert last.budget.max_calls == 3 and last.inputs[0].size == (504, 364)  # the node's budgets
    # the model's own system prompt, unless the node's system_prompt_file replaces it
    (tmp_path / "own.txt").write_text("Draw on the {width}x{height} view, then answer.")
    (tmp_path / "given.txt").write_text("Given: {width}x{height}.")
    own = {"system_prompt_file": str(tmp_path / "own.txt")}
    assert protocol.messages[0]["content"].startswith("You are an assistant")
    asked = Job("Where?", frames).open_session(values, own)
    assert asked.messages[0]["content"] == "Draw on the 504x364 view, then answer."
    given = values | {"system_prompt_file": str(tmp_path / "given.txt")}
    assert Job("Where?", frames).open_session(given, own).messages[0]["content"] == "Given: 504x364."


def test_replay_needs_a_file_and_names_itself():
    with pytest.raises(ValueError, match="replay_file"):
        engine_arguments(BASE | {"engine": "replay"})
    assert model_id(BASE | {"engine": "replay", "replay_file": "t.json"}) == "replay:t.json"
    assert model_id(BASE) == "embedded"


def test_node_pieces_do_not_import_ros():
    import subprocess

    code = ("import sys, ros_vilasr.node.keyframes, ros_vilasr.node.queries, ros_vilasr.node.conversions; "
            "print('rclpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
