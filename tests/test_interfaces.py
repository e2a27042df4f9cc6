"""ros_vilasr_interfaces: generated types and a real cross-process round trip with rclpy.

Needs the package built into the Python environment first (scripts/build_interfaces.sh VENV).
Every process that starts ROS here runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a
per-run ROS_DOMAIN_ID, so DDS discovery never leaves the machine.

This file is also the helper process: `python test_interfaces.py publish TOPIC` publishes
make_answer() until its stdin closes; `python test_interfaces.py serve ACTION` serves SpatialQuery.
"""

import os
import subprocess
import sys
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip(
    "ros_vilasr_interfaces",
    reason="ros_vilasr_interfaces not installed: run scripts/build_interfaces.sh VENV_DIR",
)

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ros_vilasr_interfaces.action import SpatialQuery  # noqa: E402
from ros_vilasr_interfaces.msg import DrawOp, ReasoningStep, SpatialAnswer  # noqa: E402

# Valid ROS domain ids are 0..232; 100..199 keeps clear of the default 0 and of other runs.
DOMAIN_ID = os.getpid() % 100 + 100
TIMEOUT_S = 30.0


def ros_env(domain_id=DOMAIN_ID):
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.pop("ROS_STATIC_PEERS", None)
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def header(sec, nanosec, frame_id):
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def make_answer():
    """A SpatialAnswer exercising nested steps/ops, fixed arrays, sequences and headers."""
    box = DrawOp(
        kind=DrawOp.BOX,
        label="chair",
        image_index=1,
        source_image_index=1,
        model_coords=[10.0, 20.0, 110.0, 220.0],
        source_coords=[15.5, 30.25, 165.0, 330.0],
        header=header(1700000000, 123456789, "cam_front"),
    )
    line = DrawOp(
        kind=DrawOp.LINE,
        label="path → door",  # non-ASCII survives the wire
        image_index=2,
        source_image_index=2,
        model_coords=[0.0, 0.0, 50.0, 75.0],
        source_coords=[0.0, 0.0, 80.0, 120.5],
        header=header(1700000001, 5, "cam_left"),
    )
    steps = [
        ReasoningStep(
            step=1,
            thought="Locate the chair first.",
            action="Object Mapper",
            ops=[box],
            revises_earlier=False,
            new_image_indices=[3],
        ),
        ReasoningStep(
            step=2,
            thought="Trace the path to the door.",
            action="Path Tracer",
            ops=[line, box],
            revises_earlier=True,
            new_image_indices=[4, 5],
            error="",
        ),
        ReasoningStep(step=3, thought="The chair is left of the door.", action="Answer"),
    ]
    return SpatialAnswer(
        header=header(1700000001, 5, "cam_left"),
        question="Is the chair left or right of the door?",
        options=["A. left", "B. right"],
        problem_type="multiple choice",
        answer="A",
        answer_kind=SpatialAnswer.KIND_CHOICE,
        choice="A",
        value=0.0,
        finish_reason="answer",
        steps=steps,
        source_headers=[header(1700000000, 123456789, "cam_front"), header(1700000001, 5, "cam_left")],
        model="AntResearchNLP/ViLaSR",
        latency_s=1.25,
        model_calls=3,
        prompt_tokens=1234,
        completion_tokens=321,
    )


# --------------------------------------------------------------------------- generated types


def test_drawop_constants_and_fields():
    assert DrawOp.BOX == 0
    assert DrawOp.LINE == 1
    fields = DrawOp.get_fields_and_field_types()
    for name in ("kind", "label", "image_index", "source_image_index", "model_coords", "source_coords", "header"):
        assert name in fields
    assert fields["model_coords"] == "double[4]"
    assert fields["source_coords"] == "double[4]"
    assert fields["header"] == "std_msgs/Header"
    op = DrawOp()
    assert len(op.model_coords) == 4 and len(op.source_coords) == 4


def test_reasoning_step_fields():
    fields = ReasoningStep.get_fields_and_field_types()
    for name in ("step", "thought", "action", "ops", "revises_earlier", "new_image_indices", "error"):
        assert name in fields
    assert fields["ops"] == "sequence<ros_vilasr_interfaces/DrawOp>"


def test_spatial_answer_constants_and_fields():
    assert (SpatialAnswer.KIND_TEXT, SpatialAnswer.KIND_CHOICE, SpatialAnswer.KIND_NUMBER) == (0, 1, 2)
    fields = SpatialAnswer.get_fields_and_field_types()
    for name in (
        "header", "question", "options", "problem_type", "answer", "answer_kind", "choice", "value",
        "finish_reason", "steps", "source_headers", "model", "latency_s", "model_calls",
        "prompt_tokens", "completion_tokens",
    ):
        assert name in fields
    assert fields["steps"] == "sequence<ros_vilasr_interfaces/ReasoningStep>"
    assert fields["source_headers"] == "sequence<std_msgs/Header>"


def test_spatial_query_action_types():
    goal = SpatialQuery.Goal.get_fields_and_field_types()
    for name in ("question", "options", "problem_type", "cameras", "frame_selection", "max_frames",
                 "window_s", "max_calls"):
        assert name in goal
    assert SpatialQuery.Goal.SELECT_LATEST == 0
    assert SpatialQuery.Goal.SELECT_WINDOW == 1
    assert SpatialQuery.Result.get_fields_and_field_types() == {"answer": "ros_vilasr_interfaces/SpatialAnswer"}
    feedback = SpatialQuery.Feedback.get_fields_and_field_types()
    assert feedback["step"] == "ros_vilasr_interfaces/ReasoningStep"
    assert feedback["images"] == "sequence<sensor_msgs/Image>"


def test_typesupport_loads_and_serializes():
    from rclpy.serialization import deserialize_message, serialize_message
    from rclpy.type_support import check_for_type_support

    for t in (DrawOp, ReasoningStep, SpatialAnswer, SpatialQuery):
        check_for_type_support(t)
    msg = make_answer()
    assert deserialize_message(serialize_message(msg), SpatialAnswer) == msg


# --------------------------------------------------------------------------- cross-process


@pytest.fixture(scope="module")
def ros_node():
    """An rclpy node spun by a background executor, in an isolated (localhost, own domain) context."""
    from rclpy.executors import MultiThreadedExecutor

    with pytest.MonkeyPatch.context() as mp:
        for key, value in ros_env().items():
            if os.environ.get(key) != value:
                mp.setenv(key, value)
        for key in ("ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY"):
            mp.delenv(key, raising=False)
        context = rclpy.context.Context()
        rclpy.init(context=context)
        node = rclpy.create_node(f"vilasr_interfaces_test_{os.getpid()}", context=context)
        executor = MultiThreadedExecutor(context=context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        try:
            yield node
        finally:
            executor.shutdown()
            thread.join(timeout=10)
            node.destroy_node()
            rclpy.shutdown(context=context)


class Helper:
    """This file run as a helper process; it stops cleanly when its stdin is closed."""

    def __init__(self, role, name):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), role, name],
            env=ros_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def stop(self):
        try:
            out, _ = self.proc.communicate(input="", timeout=20)  # closes stdin
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            pytest.fail(f"helper did not stop when asked:\n{out}")
        return self.proc.returncode, out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def wait_until(predicate, timeout=TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_spatial_answer_round_trip_across_processes(ros_node):
    topic = f"/vilasr_test_{os.getpid()}/answer"
    received = []
    got = threading.Event()

    def on_answer(msg):
        received.append(msg)
        got.set()

    sub = ros_node.create_subscription(SpatialAnswer, topic, on_answer, 10)
    try:
        with Helper("publish", topic) as helper:
            ok = got.wait(TIMEOUT_S)
            code, out = helper.stop()
        assert ok, f"no SpatialAnswer received on {topic} within {TIMEOUT_S}s; publisher output:\n{out}"
        assert code == 0, f"publisher exited with {code}:\n{out}"
    finally:
        ros_node.destroy_subscription(sub)

    msg = received[0]
    expected = make_answer()
    assert msg.question == expected.question
    assert list(msg.options) == ["A. left", "B. right"]
    assert [s.action for s in msg.steps] == ["Object Mapper", "Path Tracer", "Answer"]
    assert msg.steps[1].ops[0].kind == DrawOp.LINE
    assert msg.steps[1].ops[0].label == "path → door"
    assert list(msg.steps[1].ops[0].source_coords) == [0.0, 0.0, 80.0, 120.5]
    assert msg.steps[1].ops[0].header.stamp.nanosec == 5
    assert msg.steps[0].ops[0].header.frame_id == "cam_front"
    assert list(msg.steps[1].new_image_indices) == [4, 5]
    assert msg.steps[1].revises_earlier is True
    assert [h.frame_id for h in msg.source_headers] == ["cam_front", "cam_left"]
    assert msg == expected


def test_spatial_query_action_across_processes(ros_node):
    from rclpy.action import ActionClient

    action_name = f"/vilasr_test_{os.getpid()}/query"
    client = ActionClient(ros_node, SpatialQuery, action_name)
    feedback = []
    try:
        with Helper("serve", action_name) as helper:
            if not client.wait_for_server(timeout_sec=TIMEOUT_S):
                _, out = helper.stop()
                pytest.fail(f"action server {action_name} not found; server output:\n{out}")
            goal = SpatialQuery.Goal(
                question="How far is the door?",
                options=[],
                problem_type="numerical",
                cameras=["/cam_front/image_raw", "/cam_left/image_raw"],
                frame_selection=SpatialQuery.Goal.SELECT_WINDOW,
                max_frames=8,
                window_s=2.5,
                max_calls=4,
            )
            send = client.send_goal_async(goal, feedback_callback=lambda fb: feedback.append(fb.feedback))
            assert wait_until(send.done), "goal was not answered"
            handle = send.result()
            assert handle.accepted
            result_future = handle.get_result_async()
            assert wait_until(result_future.done), "no result"
            code, out = helper.stop()
        assert code == 0, f"action server exited with {code}:\n{out}"
    finally:
        client.destroy()

    from action_msgs.msg import GoalStatus

    wrapped = result_future.result()
    assert wrapped.status == GoalStatus.STATUS_SUCCEEDED
    answer = wrapped.result.answer
    assert answer.question == "How far is the door?"
    assert answer.problem_type == "numerical"
    assert answer.answer_kind == SpatialAnswer.KIND_NUMBER and answer.value == 2.5
    # The server echoes the goal's frame-selection fields so we know they crossed intact.
    assert answer.model == "1/8/2.5/4//cam_front/image_raw,/cam_left/image_raw"
    assert len(answer.steps) == 1 and answer.steps[0].ops[0].kind == DrawOp.LINE
    assert feedback, "no feedback received"
    fb = feedback[0]
    assert fb.step.action == "Path Tracer"
    assert len(fb.images) == 1
    img = fb.images[0]
    assert (img.height, img.width, img.encoding, img.step) == (2, 3, "rgb8", 9)
    assert bytes(img.data) == bytes(range(18))


# --------------------------------------------------------------------------- helper process


def _stdin_closed_event():
    stop = threading.Event()

    def watch():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop


def _publish(topic):
    rclpy.init()
    node = rclpy.create_node("vilasr_interfaces_test_publisher")
    pub = node.create_publisher(SpatialAnswer, topic, 10)
    stop = _stdin_closed_event()
    msg = make_answer()
    deadline = time.monotonic() + 2 * TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        if pub.get_subscription_count() > 0:
            pub.publish(msg)
        stop.wait(0.1)
    node.destroy_publisher(pub)
    node.destroy_node()
    rclpy.shutdown()


def _serve(action_name):
    from rclpy.action import ActionServer
    from rclpy.executors import SingleThreadedExecutor

    def execute(goal_handle):
        g = goal_handle.request
        step = ReasoningStep(
            step=1,
            thought="Trace the path.",
            action="Path Tracer",
            ops=[DrawOp(kind=DrawOp.LINE, label="path", image_index=2, source_image_index=1,
                        model_coords=[1.0, 2.0, 3.0, 4.0], source_coords=[2.0, 4.0, 6.0, 8.0])],
            new_image_indices=[2],
        )
        image = Image(header=header(1, 2, "cam_front"), height=2, width=3, encoding="rgb8",
                      step=9, data=bytes(range(18)))
        goal_handle.publish_feedback(SpatialQuery.Feedback(step=step, images=[image]))
        goal_handle.succeed()
        echo = f"{g.frame_selection}/{g.max_frames}/{g.window_s}/{g.max_calls}/{','.join(g.cameras)}"
        return SpatialQuery.Result(answer=SpatialAnswer(
            question=g.question, problem_type=g.problem_type, answer=str(g.window_s),
            answer_kind=SpatialAnswer.KIND_NUMBER, value=g.window_s, finish_reason="answer",
            steps=[step], model=echo,
        ))

    rclpy.init()
    node = rclpy.create_node("vilasr_interfaces_test_server")
    server = ActionServer(node, SpatialQuery, action_name, execute)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = _stdin_closed_event()
    deadline = time.monotonic() + 2 * TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    executor.shutdown()
    server.destroy()
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    role, name = sys.argv[1], sys.argv[2]
    {"publish": _publish, "serve": _serve}[role](name)
