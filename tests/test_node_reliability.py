"""vilasr_node under load and abuse, over real DDS: bursts of goals and questions, a model server
that hangs, lifecycle transitions and shutdown while it hangs, hostile frames and hostile goals.

The model is served by the project's fake OpenAI-compatible server (a test double: no model
server can run here) through the node's real ``openai`` engine; ``Gate`` makes it hang on demand.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
import zlib

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("ros_vilasr_interfaces")

from action_msgs.msg import GoalStatus  # noqa: E402
from fake_chat_server import FakeChatServer  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from node_harness import (  # noqa: E402
    Client,
    NodeProcess,
    answer_turn,
    compressed_msg,
    header,
    image_msg,
    scene,
    wait_for,
)
from rclpy.action import ActionClient  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from ros_vilasr_interfaces.action import SpatialQuery  # noqa: E402
from ros_vilasr_interfaces.msg import SpatialAnswer  # noqa: E402

CAM = "/rel/cam/image_raw"
PACKED = "/rel/packed/image_raw/compressed"
MAX_PENDING = 4


class Gate:
    """The fake model: answers at once while open, holds every request while closed."""

    def __init__(self):
        self.open = threading.Event()
        self.open.set()
        self.held = 0

    def __call__(self, body: dict):
        if not self.open.is_set():
            self.held += 1
            self.open.wait(120.0)
        return answer_turn("A"), "stop", 5

    @contextlib.contextmanager
    def closed(self):
        self.open.clear()
        try:
            yield self
        finally:
            self.open.set()

    def hang(self, client, question: str):
        """A goal whose request the server now holds."""
        held = self.held
        handle = client.send_goal(question, cameras=[CAM])
        assert handle is not None
        wait_for(lambda: self.held > held, what="a hung request")
        return handle


@pytest.fixture(scope="module")
def gate():
    return Gate()


@pytest.fixture(scope="module")
def node(tmp_path_factory, gate):
    tmp = tmp_path_factory.mktemp("node_reliability")
    server = FakeChatServer(gate)
    proc = NodeProcess(tmp / "node.log", engine="openai", model="served", openai_base_url=server.base_url,
                       image_topics=[CAM, PACKED], keyframe_min_interval_s=0.0, max_pending=MAX_PENDING,
                       max_question_chars=2000, diagnostics_period_s=0.2)
    client = Client("reliability_client")
    try:
        client.wait_active(60.0)
        client.proc = proc
        assert frame(client, 1)
        yield client
    finally:
        gate.open.set()
        client.close()
        code = proc.stop()
        server.close()
        assert code == 0, f"node exited with {code}:\n{proc.log()[-3000:]}"


def frame(node, sec: int, topic: str = CAM) -> bool:
    """Publish a distinct frame until the node has received it."""
    return bool(node.deliver(topic, image_msg(scene(sec), header(sec, "rel"))))


def deep_answers(node) -> list[SpatialAnswer]:
    """Every ~/answer message from now on (the harness's own subscription is 50 deep)."""
    answers: list[SpatialAnswer] = []
    node.node.create_subscription(SpatialAnswer, "/vilasr_node/answer", answers.append,
                                  QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    return answers


# -- bursts ----------------------------------------------------------------------------------------

def test_a_burst_of_100_goals_gets_100_outcomes(node):
    # A client that sends 100 requests at once needs queues as deep for the responses that come
    # back together (DDS drops what overflows a reader's history): the node's are 1000 deep.
    deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    action = ActionClient(node.node, SpatialQuery, "/vilasr_node/query", goal_service_qos_profile=deep,
                          result_service_qos_profile=deep)
    assert action.wait_for_server(timeout_sec=20.0)
    sent = [action.send_goal_async(SpatialQuery.Goal(question=f"goal {i}", cameras=[CAM]))
            for i in range(100)]
    handles = [wait_for(lambda f=f: f.done() and f, 60.0, what="goal response").result() for f in sent]
    assert all(h.accepted for h in handles)  # the node answers refusals in the result
    results = [wait_for(lambda f=f: f.done() and f, 60.0, what="goal result").result()
               for f in [h.get_result_async() for h in handles]]
    outcomes = [(r.status, r.result.answer.finish_reason) for r in results]
    answered = outcomes.count((GoalStatus.STATUS_SUCCEEDED, "answer"))
    refused = [r.result.answer.error for r in results if r.result.answer.finish_reason == "rejected"]
    assert answered >= MAX_PENDING and answered + len(refused) == 100, outcomes
    assert all(f"(max_pending = {MAX_PENDING})" in why for why in refused)
    assert [r.result.answer.question for r in results] == [f"goal {i}" for i in range(100)]
    action.destroy()


def test_a_burst_of_100_questions_on_ask_gets_100_answers(node):
    answers = deep_answers(node)
    pub = node.node.create_publisher(String, "/vilasr_node/ask",
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    wait_for(lambda: pub.get_subscription_count() > 0, what="the node's ~/ask subscription")
    time.sleep(0.5)  # our ~/answer subscription matches too
    for i in range(100):
        pub.publish(String(data=f"ask {i}"))
    mine = lambda: [a for a in answers if a.question.startswith("ask ")]  # noqa: E731
    wait_for(lambda: len(mine()) >= 100, 60.0, what="100 answers on ~/answer")
    got = mine()
    assert sorted(a.question for a in got) == sorted(f"ask {i}" for i in range(100))
    assert {a.finish_reason for a in got} <= {"answer", "rejected"}
    assert all("max_pending" in a.error for a in got if a.finish_reason == "rejected")
    node.node.destroy_publisher(pub)


# -- hostile goals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, why", [
    ({"window_s": float("nan"), "frame_selection": 1}, "window_s must be a finite number"),
    ({"window_s": -3.0, "frame_selection": 1}, "window_s must be a finite number"),
    ({"question": "x" * 1_000_000}, "1000000 characters (max_question_chars = 2000)"),
    ({"options": ["A. " + "y" * 3000]}, "(max_question_chars = 2000)"),
])
def test_hostile_goals_are_refused_with_the_true_reason(node, fields, why):
    question = fields.pop("question", "Where is it?")
    assert why in node.rejection(question, cameras=[CAM], **fields)
    assert len(node.proc.log()) < 200_000  # a 1 MB question is not logged whole


def test_a_camera_named_many_times_is_one_camera_and_max_calls_is_clamped(node):
    assert frame(node, 2)
    status, answer, _ = node.query("Which one?", cameras=[CAM] * 1000, max_calls=10**9)
    assert status == GoalStatus.STATUS_SUCCEEDED and len(answer.source_headers) == 1
    assert answer.source_headers[0].stamp.sec == 2


# -- hostile frames --------------------------------------------------------------------------------

def png_bomb(width: int, height: int) -> bytes:
    """A valid all-black PNG of width x height that compresses to a few hundred kB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    packer, row = zlib.compressobj(9), bytes(1 + width)  # filter byte + grey pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_a_png_bomb_and_a_sliver_frame_are_dropped_and_counted_and_queries_still_run(node):
    bomb = CompressedImage(header=header(3, "rel"), format="png")
    bomb.data = png_bomb(10000, 10000)
    assert len(bomb.data) < 400_000
    node.deliver(PACKED, bomb)  # a 400 kB best-effort message: resent if lost on a loaded machine
    node.wait_camera(PACKED, "dropped_too_large", lambda n: n == 1)
    node.deliver(CAM, image_msg(np.zeros((1, 2000, 3), np.uint8), header(4, "rel")))
    values = node.wait_camera(CAM, "dropped_bad_shape", lambda n: n == 1)
    assert "aspect ratio" in values["last_drop_reason"] or "under 28 px" in values["last_drop_reason"]
    buffer_bytes = int(node.camera_values(PACKED)["buffer_bytes"])
    assert buffer_bytes == 0  # nothing of the bomb is held
    node.deliver(PACKED, compressed_msg(scene(5), header(5, "rel"), "png"))
    node.wait_camera(PACKED, "keyframes", lambda n: n == 1)
    # the default all-cameras query runs on the good frames of both cameras
    status, answer, _ = node.query("What is there?")
    assert status == GoalStatus.STATUS_SUCCEEDED, answer.error
    assert sorted(h.stamp.sec for h in answer.source_headers) == [2, 5]


# -- a hung model server ---------------------------------------------------------------------------

def test_cancel_aborts_a_hung_request_at_once(node, gate):
    assert frame(node, 6)
    with gate.closed():
        handle = gate.hang(node, "Hang on cancel?")
        wait_for(lambda: handle.status == GoalStatus.STATUS_EXECUTING, what="the goal to execute")
        started = time.monotonic()
        handle.cancel_goal_async()
        result = node.result(handle, timeout=20.0)
        assert result.status == GoalStatus.STATUS_CANCELED
        assert time.monotonic() - started < 10.0  # not when the server answers (120 s)


def test_deactivate_with_a_hung_server_ends_the_goal_and_keeps_the_node_responsive(node, gate):
    assert frame(node, 7)
    with gate.closed():
        handle = gate.hang(node, "Hang on deactivate?")
        cancelled = node.send_goal("Cancelled, then deactivated?", cameras=[CAM])
        cancelled.cancel_goal_async()
        states = []
        poller = threading.Thread(target=lambda: states.extend(node.state() for _ in range(5)))
        started = time.monotonic()
        poller.start()
        assert node.transition(Transition.TRANSITION_DEACTIVATE, timeout=10.0)
        took = time.monotonic() - started
        poller.join(10.0)
        assert took < 10.0 and len(states) == 5  # get_state kept answering meanwhile
        result = node.result(handle)
        assert (result.status, result.result.answer.finish_reason) == (GoalStatus.STATUS_ABORTED, "cancelled")
        assert "stopped serving" in result.result.answer.error
        assert node.result(cancelled).status in (GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_ABORTED)
        # an inactive node refuses goals with the reason, and serves again once activated
        assert "the node is not active" in node.rejection("While inactive?", cameras=[CAM])
        assert node.transition(Transition.TRANSITION_ACTIVATE, timeout=30.0)
    assert frame(node, 8)
    assert node.query("Back again?", cameras=[CAM])[0] == GoalStatus.STATUS_SUCCEEDED


def test_cancel_then_deactivate_then_activate_while_the_server_hangs_ends_the_goal(node, gate):
    assert frame(node, 10)
    with gate.closed():
        handle = gate.hang(node, "Cancel, deactivate, activate?")
        handle.cancel_goal_async()
        assert node.transition(Transition.TRANSITION_DEACTIVATE, timeout=10.0)
        assert node.transition(Transition.TRANSITION_ACTIVATE, timeout=30.0)
        result = node.result(handle, timeout=10.0)  # the old goal's result was sent, not lost
        assert result.status in (GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_ABORTED)
        assert result.result.answer.finish_reason == "cancelled"
    assert frame(node, 11)
    assert node.query("Still serving?", cameras=[CAM])[0] == GoalStatus.STATUS_SUCCEEDED


def test_sigint_with_a_hung_request_exits_at_once(tmp_path, gate):
    server = FakeChatServer(gate)
    proc = NodeProcess(tmp_path / "node.log", engine="openai", model="served", openai_base_url=server.base_url,
                       image_topics=[CAM], keyframe_min_interval_s=0.0, name="vilasr_sigint")
    client = Client("sigint_client", node="/vilasr_sigint")
    try:
        with gate.closed():
            client.wait_active(60.0)
            client.deliver(CAM, image_msg(scene(9), header(9, "rel")))  # resent if lost while matching
            client.wait_camera(CAM, "keyframes", lambda n: n == 1)
            gate.hang(client, "Hang on exit?")
            started = time.monotonic()
            assert proc.stop(timeout=20.0) == 0
            assert time.monotonic() - started < 10.0  # not the 120 s the request would hang
    finally:
        client.close()
        proc.stop()
        server.close()
