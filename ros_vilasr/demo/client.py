"""A small rclpy client of ``vilasr_node``: the SpatialQuery action, standing questions
(``~/watch``, ``~/unwatch``, ``~/watch_events``) and per-camera frame counts from ``/diagnostics``,
spinning on a thread of its own so callers can simply block and wait."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import rclpy
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from unique_identifier_msgs.msg import UUID

from ros_vilasr_interfaces.action import SpatialQuery
from ros_vilasr_interfaces.msg import SpatialAnswer
from ros_vilasr_interfaces.srv import Unwatch, Watch

FEEDBACK_GRACE_S = 5.0  # how long feedback may trail the result it belongs to
STATUS_NAMES = {GoalStatus.STATUS_SUCCEEDED: "succeeded", GoalStatus.STATUS_ABORTED: "aborted",
                GoalStatus.STATUS_CANCELED: "canceled"}


def frames_received(msg: DiagnosticArray) -> dict[str, int]:
    """Per camera topic: frames the node received, from one of its diagnostics messages."""
    out = {}
    for status in msg.status:
        if ": camera " in status.name:
            values = {kv.key: kv.value for kv in status.values}
            if "received" in values:
                out[status.hardware_id or status.name.split(": camera ", 1)[1]] = int(values["received"])
    return out


class QueryClient:
    def __init__(self, node_name: str = "vilasr_node", client_name: str = "vilasr_demo_client"):
        if not rclpy.ok():
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(client_name)
        self.action = ActionClient(self.node, SpatialQuery, f"/{node_name}/query")
        self._diag_lock = threading.Lock()
        self.received: dict[str, int] = {}
        self.diagnostics: DiagnosticArray | None = None
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        # rclpy's ActionClient drops feedback that arrives after the goal's result, and a step's
        # feedback (with its images) can trail a fast result; listening to the feedback topic
        # directly keeps every step. Goals are matched by the uuid we give them.
        self._feedback_lock = threading.Lock()
        self._feedback_sinks: dict[bytes, Callable] = {}
        self.node.create_subscription(
            SpatialQuery.Impl.FeedbackMessage, f"/{node_name}/query/_action/feedback", self._on_feedback,
            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.watch_events: list[SpatialAnswer] = []
        self.node.create_subscription(SpatialAnswer, f"/{node_name}/watch_events", self.watch_events.append,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self._watch = self.node.create_client(Watch, f"/{node_name}/watch")
        self._unwatch = self.node.create_client(Unwatch, f"/{node_name}/unwatch")
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, name="demo-client", daemon=True)
        self._thread.start()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        counts = frames_received(msg)
        with self._diag_lock:
            if counts:
                self.received.update(counts)
            self.diagnostics = msg

    def _on_feedback(self, msg) -> None:
        with self._feedback_lock:
            sink = self._feedback_sinks.get(bytes(msg.goal_id.uuid))
        if sink is not None:
            sink(msg.feedback)

    def frame_counts(self) -> dict[str, int]:
        with self._diag_lock:
            return dict(self.received)

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout_s: float, stop: threading.Event | None,
              alive: Callable[[], bool] = lambda: True) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if condition():
                return True
            if (stop is not None and stop.is_set()) or not alive():
                return False
            time.sleep(0.05)
        return condition()

    def wait_for_server(self, timeout_s: float, stop=None, alive=lambda: True) -> bool:
        return self._wait(self.action.server_is_ready, timeout_s, stop, alive)

    def wait_for_frames(self, cameras: list[str], timeout_s: float, stop=None, alive=lambda: True) -> bool:
        return self._wait(lambda: all(self.frame_counts().get(c, 0) > 0 for c in cameras), timeout_s, stop, alive)

    def query(self, goal: SpatialQuery.Goal, on_feedback: Callable | None = None, *,
              timeout_s: float = 600.0, stop: threading.Event | None = None):
        """Send ``goal`` and wait: (status name, SpatialAnswer or None). ``on_feedback`` gets each
        reasoning step once, in step order, before this returns. ``status`` is "rejected" when the
        node refuses the goal (the answer's ``error`` says why), "timeout" or "stopped" when we give
        up (the goal is then cancelled)."""
        goal_id = UUID(uuid=list(uuid.uuid4().bytes))
        steps_seen: set[int] = set()

        def sink(feedback) -> None:
            if feedback.step.step not in steps_seen:
                steps_seen.add(feedback.step.step)
                if on_feedback is not None:
                    on_feedback(feedback)

        with self._feedback_lock:
            self._feedback_sinks[bytes(goal_id.uuid)] = sink
        try:
            sent = self.action.send_goal_async(goal, goal_uuid=goal_id)
            if not self._wait(sent.done, 30.0, stop):
                return ("stopped" if stop is not None and stop.is_set() else "timeout"), None
            handle = sent.result()
            if handle is None or not handle.accepted:
                return "rejected", None
            result = handle.get_result_async()
            if not self._wait(result.done, timeout_s, stop):
                cancel = handle.cancel_goal_async()
                self._wait(cancel.done, 5.0, None)
                return ("stopped" if stop is not None and stop.is_set() else "timeout"), None
            response = result.result()
            answer = response.result.answer
            expected = {s.step for s in answer.steps}
            self._wait(lambda: expected <= steps_seen, FEEDBACK_GRACE_S, stop)
            if answer.finish_reason == "rejected":  # the node accepts every goal, then aborts with why
                return "rejected", answer
            return STATUS_NAMES.get(response.status, f"status {response.status}"), answer
        finally:
            with self._feedback_lock:
                self._feedback_sinks.pop(bytes(goal_id.uuid), None)

    def _call(self, client, request, timeout_s: float = 10.0):
        if not client.wait_for_service(timeout_sec=timeout_s):
            return None
        future = client.call_async(request)
        return future.result() if self._wait(future.done, timeout_s, None) else None

    def watch(self, question: str, options, problem_type: str, cameras, min_interval_s: float) -> tuple[int, str]:
        """Register a standing question: (its id, "") or (0, why not)."""
        response = self._call(self._watch, Watch.Request(question=question, options=list(options),
                                                         problem_type=problem_type, cameras=list(cameras),
                                                         min_interval_s=min_interval_s))
        if response is None:
            return 0, "the node's ~/watch service did not answer"
        return (response.id, "") if response.success else (0, response.message)

    def unwatch(self, watch_id: int) -> bool:
        response = self._call(self._unwatch, Unwatch.Request(id=watch_id))
        return response is not None and response.success

    def close(self) -> None:
        """Executor, its thread, the node, then the context (the order rclpy needs)."""
        self._executor.shutdown()
        self._thread.join(5.0)
        self.action.destroy()
        self.node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
