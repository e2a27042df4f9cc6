"""Standing questions: ``~/watch`` registers a question once, the node asks it again whenever one
of its cameras gives a new key frame (a visible change, the key-frame threshold) and at most every
``min_interval_s``, and ``~/watch_events`` hears the answer only when its typed value changes —
the first answer too, with an empty ``previous_answer``. An ask that ends without an answer (the
model's dialogue broke off: a tool error, the token cap, ...) is an outcome too: the robot hears it
once, with its finish reason and error, and again when an answer returns. ``~/unwatch`` removes it.

Watches outlive deactivate / activate (they are the robot's standing orders, not the model's).
They run as background jobs: admitted only when no goal or ``~/ask`` question waits, one at a time
per watch, and never counted against ``max_pending``.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass

from .queries import TEXT, QueryRejected, typed_answer

FAILED = "failed"  # an outcome kind beside typed_answer's: the ask ended without an answer


@dataclass(eq=False)
class Watch:
    id: int
    question: str
    options: list[str]
    problem_type: str
    cameras: list[str]  # the node's camera names
    min_interval_s: float
    asked: float = -math.inf  # monotonic time of the last ask
    outcome: tuple | None = None  # the last: (kind, choice, value) of an answer, or (FAILED, finish reason)
    text: str = ""  # the last answer ("" after a failed ask)
    busy: bool = False  # asked, not answered yet


class Watches:
    def __init__(self):
        self._watches: dict[int, Watch] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._watches)

    def add(self, question: str, options, problem_type: str, cameras: list[str], min_interval_s: float,
            limit: int) -> Watch:
        """Register a watch; QueryRejected when ``limit`` watches are registered already."""
        if not math.isfinite(min_interval_s) or min_interval_s < 0:
            raise QueryRejected(f"min_interval_s must be a finite number of seconds >= 0 (got {min_interval_s})")
        with self._lock:
            if len(self._watches) >= limit:
                raise QueryRejected(f"{len(self._watches)} watches registered (max_watches = {limit})")
            watch = Watch(next(self._ids), question.strip(), list(options), problem_type, cameras, min_interval_s)
            self._watches[watch.id] = watch
            return watch

    def remove(self, watch_id: int) -> bool:
        with self._lock:
            return self._watches.pop(watch_id, None) is not None

    def due(self, camera: str, now: float | None = None) -> list[Watch]:
        """The watches to ask again after a new key frame of ``camera``, marked busy."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = [w for w in self._watches.values()
                   if camera in w.cameras and not w.busy and now - w.asked >= w.min_interval_s]
            for w in due:
                w.busy, w.asked = True, now
            return due

    def answered(self, watch: Watch, answer: str | None, failed: str | None = None) -> str | None:
        """Record a finished ask: its ``answer``, or ``failed`` (the finish reason of an ask that
        ended without one); neither when it never ran to an end. Returns the previous answer when
        the watch's outcome changed (the event to publish), else None."""
        with self._lock:
            watch.busy = False
            if watch.id not in self._watches or (answer is None and failed is None):
                return None
            if answer is None:
                outcome, answer = (FAILED, failed), ""
            else:
                outcome = typed_answer(answer, watch.problem_type, watch.options)
                if outcome[0] == TEXT:  # free text: its words are the answer
                    outcome = (TEXT, " ".join(answer.lower().split()), 0.0)
            if outcome == watch.outcome:
                return None
            previous, watch.outcome, watch.text = watch.text, outcome, answer
            return previous


class WatchService:
    """The node's ``~/watch``, ``~/unwatch`` and ``~/watch_events`` (from configure to cleanup;
    the watches themselves outlive both)."""

    def __init__(self, node, watches: Watches):
        self.node, self.watches = node, watches
        self._entities = []
        self._events = None

    def create(self, group) -> None:
        from ros_vilasr_interfaces.msg import SpatialAnswer
        from ros_vilasr_interfaces.srv import Unwatch
        from ros_vilasr_interfaces.srv import Watch as WatchSrv

        n = self.node
        self._events = n.create_lifecycle_publisher(SpatialAnswer, "~/watch_events", 10)
        self._entities = [n.create_service(WatchSrv, "~/watch", self._on_watch, callback_group=group),
                          n.create_service(Unwatch, "~/unwatch", self._on_unwatch, callback_group=group)]

    def destroy(self) -> None:
        for service in self._entities:
            self.node.destroy_service(service)
        if self._events is not None:
            self.node.destroy_lifecycle_publisher(self._events)
        self._entities, self._events = [], None

    def _on_watch(self, request, response):
        try:
            cameras = self.node.check_query(request.question, request.options, request.problem_type, request.cameras)
            watch = self.watches.add(request.question, request.options, request.problem_type, cameras,
                                     request.min_interval_s, self.node.get_parameter("max_watches").value)
        except QueryRejected as exc:
            response.success, response.message = False, str(exc)
            return response
        response.success, response.id = True, watch.id
        response.message = f"watch {watch.id} on {', '.join(cameras)}"
        self.node.get_logger().info(f"~/watch: {response.message}: {watch.question[:80]!r}")
        return response

    def _on_unwatch(self, request, response):
        response.success = self.watches.remove(request.id)
        response.message = "removed" if response.success else f"no watch {request.id}"
        return response

    def key_frame(self, camera: str) -> None:
        """A new key frame of ``camera``: ask the watches that are due, behind every other query."""
        for watch in self.watches.due(camera):
            try:
                job = self.node.make_job(watch.question, watch.options, watch.problem_type, cameras=watch.cameras)
            except QueryRejected:
                self.watches.answered(watch, None)  # not active, paused or no frames: next key frame
                continue
            job.on_done = lambda job, w=watch: self._done(w, job)
            self.node.worker.submit_background(job)

    def _done(self, watch: Watch, job) -> None:
        reason = job.finish_reason
        answer = job.session.answer if reason == "answer" else None
        # a cancelled or refused ask never ran to an end: it says nothing about the question
        failed = None if reason in ("answer", "cancelled", "rejected") else reason
        previous = self.watches.answered(watch, answer, failed)
        if previous is not None and self._events is not None:
            msg = self.node.answer_message(job)
            msg.watch_id, msg.previous_answer = watch.id, previous
            self._events.publish(msg)
