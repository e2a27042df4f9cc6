"""Shared helpers of the node tests: start vilasr_node in its own process, talk to it over ROS.

The node runs as ``python -m ros_vilasr.node.main`` in a subprocess; the test process holds the
clients (publishers, action client, parameter and lifecycle clients) in its own rclpy context.
Both inherit the isolation tests/conftest.py sets (loopback discovery, a domain of this run's own).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from action_msgs.msg import GoalStatus
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from PIL import Image as PILImage
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool
from visualization_msgs.msg import ImageMarker

from ros_vilasr_interfaces.action import SpatialQuery
from ros_vilasr_interfaces.msg import SpatialAnswer

REPO = Path(__file__).resolve().parents[1]
NODE = "/vilasr_node"
TIMEOUT = 20.0


def wait_for(condition, timeout: float = TIMEOUT, interval: float = 0.02, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


# -- the node process ------------------------------------------------------------------------------

def _param_arg(name, value) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        value = "[" + ",".join(f"'{v}'" for v in value) + "]"
    return f"{name}:={value}"


class NodeProcess:
    def __init__(self, log_path: Path, name: str = "", **parameters):
        env = os.environ.copy()
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "training"), env.get("PYTHONPATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")  # two cores shared by the node and the test process
        args = [sys.executable, "-m", "ros_vilasr.node.main", "--ros-args"]
        if name:
            args += ["-r", f"__node:={name}"]
        for param, value in parameters.items():
            args += ["-p", _param_arg(param, value)]
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# -- messages ------------------------------------------------------------------------------------

def scene(seed: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A distinct RGB test frame per seed (visibly different from every other seed)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def header(sec: int, frame_id: str, nanosec: int = 0) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_msg(rgb: np.ndarray, hdr: Header, encoding: str = "rgb8") -> Image:
    pixels = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": rgb.mean(axis=2).astype(np.uint8),
              "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
              "bgra8": np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 255, np.uint8)])}[encoding]
    pixels = np.ascontiguousarray(pixels)
    msg = Image(header=hdr, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                step=pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1))
    msg.data = pixels.tobytes()
    return msg


def compressed_msg(rgb: np.ndarray, hdr: Header, fmt: str = "jpeg") -> CompressedImage:
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG" if fmt == "jpeg" else "PNG")
    msg = CompressedImage(header=hdr, format=fmt)
    msg.data = buf.getvalue()
    return msg


def write_transcripts(path: Path, transcripts: list[dict]) -> Path:
    """Transcript file for the replay engine: each {question, turns} becomes {question, conversations}."""
    records = []
    for t in transcripts:
        conv = [{"role": "user", "content": t["question"]}]
        for turn in t["turns"]:
            conv += [{"role": "assistant", "content": turn}, {"role": "user", "content": "<image>"}]
        records.append({"question": t["question"], "conversations": conv[:-1]})
    path.write_text(json.dumps(records))
    return path


def draw_turn(tool: str, items: list[dict], thought: str = "Let me mark it.") -> str:
    return f"<think>{thought}</think>\nAction: {tool}\n```json\n{json.dumps(items)}\n```"


def answer_turn(answer: str, thought: str = "Now I can answer.") -> str:
    return f"<think>{thought}</think>\nAction: Answer\n<answer>{answer}</answer>"


# -- the client side -----------------------------------------------------------------------------

class Client:
    """A ROS client of one vilasr_node, in its own context, spinning on a background thread."""

    def __init__(self, name: str = "vilasr_test_client", node: str = NODE):
        self.target = node
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.answers: list[SpatialAnswer] = []
        self.annotated: list[Image] = []
        self.markers: list[ImageMarker] = []
        self.diagnostics: list[tuple[float, DiagnosticArray]] = []
        self._lock = threading.Lock()
        n = self.node
        n.create_subscription(SpatialAnswer, f"{node}/answer", self._keep(self.answers), 50)
        n.create_subscription(Image, f"{node}/annotated", self._keep(self.annotated), 50)
        n.create_subscription(ImageMarker, f"{node}/markers", self._keep(self.markers), 500)
        n.create_subscription(DiagnosticArray, "/diagnostics",
                              lambda m: self.diagnostics.append((time.monotonic(), m)), 50)
        self.action = ActionClient(n, SpatialQuery, f"{node}/query")
        self.ask_pub = n.create_publisher(String, f"{node}/ask", 10)
        self.set_params = n.create_client(SetParameters, f"{node}/set_parameters")
        self.change_state = n.create_client(ChangeState, f"{node}/change_state")
        self.get_state_client = n.create_client(GetState, f"{node}/get_state")
        self.enable_client = n.create_client(SetBool, f"{node}/enable")
        self._publishers = {}
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _keep(self, store: list):
        def callback(msg):
            with self._lock:
                store.append(msg)
        return callback

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(5.0)
        self.action.destroy()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # publishing frames
    def publisher(self, topic: str, compressed: bool = False, reliable: bool = False):
        key = (topic, reliable)
        if key not in self._publishers:
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if reliable
                             else ReliabilityPolicy.BEST_EFFORT)
            quiet = PublisherEventCallbacks(incompatible_qos=lambda info: None)  # tests provoke it
            self._publishers[key] = self.node.create_publisher(
                CompressedImage if compressed else Image, topic, qos, event_callbacks=quiet)
        return self._publishers[key]

    def drop_publisher(self, topic: str, reliable: bool = False) -> None:
        pub = self._publishers.pop((topic, reliable), None)
        if pub is not None:
            self.node.destroy_publisher(pub)

    def publish(self, topic: str, msg, reliable: bool = False, wait_match: bool = True) -> None:
        pub = self.publisher(topic, isinstance(msg, CompressedImage), reliable)
        if wait_match:
            wait_for(lambda: pub.get_subscription_count() > 0, what=f"a subscriber on {topic}")
        pub.publish(msg)

    def deliver(self, topic: str, msg, reliable: bool = False, attempts: int = 5) -> dict:
        """Publish ``msg`` until the node's diagnostics count one more frame received on ``topic``.

        A matched publisher does not mean the node's reader has matched it back yet, and camera QoS
        is best effort: a frame sent in that window is lost, so it is sent again when the count
        does not move."""
        before = self.camera_values(topic)
        start = int(before["received"]) if before else 0
        for attempt in range(attempts):
            self.publish(topic, msg, reliable=reliable)
            try:
                return self.wait_camera(topic, "received", lambda n: n > start, timeout=4.0)
            except TimeoutError:
                if attempt == attempts - 1:
                    raise

    # diagnostics
    def camera_values(self, camera: str, after: float = 0.0) -> dict | None:
        """Key values of the newest diagnostics status of ``camera`` received after ``after``."""
        for stamp, array in reversed(list(self.diagnostics)):
            if stamp < after:
                return None
            for status in array.status:
                if status.name == f"{self.target}: camera {camera}":
                    return {kv.key: kv.value for kv in status.values}
        return None

    def model_values(self, after: float = 0.0) -> dict | None:
        for stamp, array in reversed(list(self.diagnostics)):
            if stamp < after:
                return None
            for status in array.status:
                if status.name == f"{self.target}: model":
                    return {kv.key: kv.value for kv in status.values}
        return None

    def wait_camera(self, camera: str, key: str, predicate, timeout: float = TIMEOUT) -> dict:
        """Fresh diagnostics of ``camera`` whose ``key`` satisfies ``predicate``."""
        def ok():
            values = self.camera_values(camera)
            return values if values and key in values and predicate(int(values[key])) else None
        return wait_for(ok, timeout, what=f"diagnostics {camera} {key}")

    # actions
    def send_goal(self, question: str, feedback: list | None = None, **fields):
        """The goal handle (None when rejected)."""
        assert self.action.wait_for_server(timeout_sec=TIMEOUT), "no ~/query action server"
        goal = SpatialQuery.Goal(question=question, **fields)
        fb = (lambda m: feedback.append(m.feedback)) if feedback is not None else None
        future = self.action.send_goal_async(goal, feedback_callback=fb)
        handle = wait_for(lambda: future.done() and future, what="goal response").result()
        return handle if handle.accepted else None

    def rejection(self, question: str, **fields) -> str:
        """The reason the node gives for refusing this goal (accepted, then aborted at once with
        finish_reason "rejected"); fails when the goal is not refused."""
        handle = self.send_goal(question, **fields)
        assert handle is not None, "the node accepts every goal and answers the refused ones"
        result = self.result(handle)
        answer = result.result.answer
        assert (result.status, answer.finish_reason) == (GoalStatus.STATUS_ABORTED, "rejected"), answer
        assert answer.question == question and answer.error
        return answer.error

    def result(self, handle, timeout: float = TIMEOUT):
        future = handle.get_result_async()
        return wait_for(lambda: future.done() and future, timeout, what="goal result").result()

    def query(self, question: str, timeout: float = TIMEOUT, **fields):
        """(status, answer, feedback list) of one goal run to its end."""
        feedback: list = []
        handle = self.send_goal(question, feedback, **fields)
        assert handle is not None, f"goal {question!r} was rejected"
        result = self.result(handle, timeout)
        return result.status, result.result.answer, feedback

    # parameters and lifecycle
    def set_parameter(self, name: str, value) -> tuple[bool, str]:
        assert self.set_params.wait_for_service(timeout_sec=TIMEOUT)
        pv = ParameterValue()
        if isinstance(value, bool):
            pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
        elif isinstance(value, int):
            pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, value
        elif isinstance(value, float):
            pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
        elif isinstance(value, (list, tuple)):
            pv.type, pv.string_array_value = ParameterType.PARAMETER_STRING_ARRAY, list(value)
        else:
            pv.type, pv.string_value = ParameterType.PARAMETER_STRING, value
        future = self.set_params.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=pv)]))
        result = wait_for(lambda: future.done() and future, what="set_parameters").result().results[0]
        return result.successful, result.reason

    def transition(self, transition_id: int, timeout: float = 60.0) -> bool:
        assert self.change_state.wait_for_service(timeout_sec=TIMEOUT)
        future = self.change_state.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        return wait_for(lambda: future.done() and future, timeout, what="change_state").result().success

    def enable(self, on: bool) -> str:
        """Call ~/enable; its message."""
        assert self.enable_client.wait_for_service(timeout_sec=TIMEOUT)
        future = self.enable_client.call_async(SetBool.Request(data=on))
        response = wait_for(lambda: future.done() and future, what="~/enable").result()
        assert response.success
        return response.message

    def state(self) -> str:
        assert self.get_state_client.wait_for_service(timeout_sec=TIMEOUT)
        future = self.get_state_client.call_async(GetState.Request())
        return wait_for(lambda: future.done() and future, what="get_state").result().current_state.label

    def wait_active(self, timeout: float = 60.0) -> None:
        wait_for(lambda: self.state() == "active", timeout, interval=0.2, what="node active")
