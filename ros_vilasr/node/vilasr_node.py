"""``vilasr_node``: the lifecycle node that answers spatial questions about camera frames.

A thin adapter over ``ros_vilasr.core``: camera callbacks only validate and buffer frames
(``keyframes``); queries from the ``~/query`` action and ``~/ask`` run on one worker thread
(``queries.QueryWorker``) through ``core.driver.run_sessions``; results, drawn images and their
primitives (``messages``) go out stamped with the source frames' headers.

Lifecycle: configure reads parameters and creates publishers, the ``~/query`` action server and
``~/enable`` (nothing heavy); activate loads the model, subscribes and serves; deactivate stops
serving and frees the model (and GPU memory) without waiting more than a second for it. Every goal
is accepted and gets a result: one the node cannot run is aborted at once with the reason.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import threading
import time

from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    qos_profile_services_default,
)
from std_msgs.msg import String
from std_srvs.srv import SetBool

from ros_vilasr.core.engines import check_engine, create_engine, warm_up
from ros_vilasr.core.models import run_profile
from ros_vilasr_interfaces.action import SpatialQuery
from ros_vilasr_interfaces.msg import SpatialAnswer

from . import messages, params
from .cameras import CameraInputs
from .diagnostics import CameraHealth, diagnostic_array
from .frames import TargetFrame
from .keyframes import KeyFrameBuffer, KeyFrameSettings
from .outputs import Outputs
from .queries import (
    PROBLEM_TYPES,
    SELECT_LATEST,
    SELECT_WINDOW,
    Job,
    QueryRejected,
    QueryWorker,
    engine_arguments,
    model_id,
    short,
)
from .support import RosLogHandler, transition
from .watches import Watches, WatchService

SUCCESS = TransitionCallbackReturn.SUCCESS
KEYFRAME_PARAMS = ("keyframe_min_interval_s", "keyframe_change_threshold", "keyframes_per_camera",
                   "keyframe_max_age_s", "buffer_memory_mb")
# Requests queue this deep before DDS drops any: a burst of goals or ~/ask messages (a fleet
# asking at once) must each get an outcome, and the node answers those it cannot run at once.
REQUEST_DEPTH = 1000
REQUESTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=REQUEST_DEPTH,
                          reliability=qos_profile_services_default.reliability,
                          durability=qos_profile_services_default.durability)
STOP_WAIT_S = 1.0  # how long a transition waits for the running query before ending it without it
MAX_CALLS_LIMIT = int(params.BY_NAME["max_calls"].range[1])


class VilasrNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("vilasr_node", **kwargs)
        self._log_bridge = RosLogHandler(self.get_logger())
        core_logger = logging.getLogger("ros_vilasr")
        core_logger.addHandler(self._log_bridge)
        core_logger.setLevel(logging.INFO)
        core_logger.propagate = False  # the ROS logger prints it; no second copy on stderr
        params.declare_all(self)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._parameters_changed)
        self._serving_group = ReentrantCallbackGroup()  # action server, ~/ask, diagnostics
        self._image_group = MutuallyExclusiveCallbackGroup()  # frames are handled in order
        self._configured = False
        self._profile: dict | None = None  # the model's run profile, read once per configuration
        self._serving = False
        self._enabled = True  # ~/enable: inference and frame buffering paused when False
        self._enable_service = None
        self._buffer = KeyFrameBuffer(self._keyframe_settings())
        self._health = CameraHealth(lambda text: self.get_logger().warning(text))
        self._activations = 0  # tells a model load that finishes after its deactivation
        self._engine_state = "not loaded"
        self._engine_params: dict = {}
        self._worker: QueryWorker | None = None
        self._watch_service = WatchService(self, Watches())
        self._outputs = Outputs(self)
        self._target_frame: TargetFrame | None = None  # lifted drawings' frame (target_frame, via tf2)
        self._camera_inputs = CameraInputs(self, self._buffer, self._health, lambda: self._enabled,
                                           self._watch_service.key_frame)
        self._ask_subscription = None
        self._query_server = None
        self._retiring: list = []  # [action server, timer] of a cleanup, until its results are out
        self._diagnostics_publisher = self._diagnostics_timer = None
        self._staged_goals: dict[int, tuple] = {}  # id(goal message) -> (goal, job), until accepted
        self._goal_jobs: dict[bytes, Job] = {}  # goal uuid -> job, until its result is sent
        self._jobs_lock = threading.Lock()
        self._query_ids = iter(range(1, 2**31))
        self._served = self._rejected = 0
        self._last = {"latency_s": 0.0, "tokens_per_s": 0.0, "finish_reason": ""}

    # -- parameters ----------------------------------------------------------------------------

    def _p(self, name: str):
        return self.get_parameter(name).value

    def _values(self) -> dict:
        return params.with_profile({name: self._p(name) for name in params.NAMES}, self._profile)

    def _keyframe_settings(self) -> KeyFrameSettings:
        return KeyFrameSettings(
            min_interval_s=self._p("keyframe_min_interval_s"),
            change_threshold=self._p("keyframe_change_threshold"),
            per_camera=self._p("keyframes_per_camera"),
            max_age_s=self._p("keyframe_max_age_s"),
            memory_bytes=int(self._p("buffer_memory_mb") * 2**20))

    def _validate_parameters(self, changes) -> SetParametersResult:
        for change in changes:
            if change.name in params.READ_ONLY_AFTER_CONFIGURE and self._configured:
                return SetParametersResult(successful=False, reason=(
                    f"{change.name} is read-only after configure: clean up the node (lifecycle "
                    "cleanup transition) before changing it"))
            if (why := params.check_value(change.name, change.value)) is not None:
                return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    def _parameters_changed(self, changes) -> None:
        names = {c.name for c in changes}
        if names & set(KEYFRAME_PARAMS):
            self._buffer.apply(self._keyframe_settings())
        if self._worker is not None:
            self._worker.max_pending, self._worker.max_concurrent = self._p("max_pending"), self._p("max_concurrent")
        if "diagnostics_period_s" in names and self._diagnostics_timer is not None:
            self._start_diagnostics_timer()

    # -- lifecycle -----------------------------------------------------------------------------

    def autostart(self) -> bool:
        """Configure and activate (the ``autostart`` parameter), logging why when it fails."""
        if self.trigger_configure() != SUCCESS:
            self.get_logger().error("autostart: configure failed; the node stays unconfigured")
            return False
        if self.trigger_activate() != SUCCESS:
            self.get_logger().error("autostart: activate failed; the node stays inactive")
            return False
        return True

    @transition
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        values = self._values()
        for name, value in values.items():
            if (why := params.check_value(name, value)) is not None:
                raise ValueError(why)
        engine_arguments(values)  # fails early on an engine that cannot be built from these
        self._profile = run_profile(values["model"])  # the model is read-only while configured
        self._outputs.create()
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._enable_service = self.create_service(SetBool, "~/enable", self._on_enable,
                                                   callback_group=self._serving_group)
        self._watch_service.create(self._serving_group)
        self._destroy_retiring_server()  # two servers of one action must never coexist
        # The action server lives as long as the configuration, so a goal sent to an inactive node
        # is answered (aborted, with the reason in its result) rather than left unheard. Nothing
        # here blocks the executor: accepted goals go to the worker, and only when the worker is
        # done is the goal "executed" — a quick callback that sends the result.
        self._query_server = ActionServer(
            self, SpatialQuery, "~/query", execute_callback=self._finish_goal,
            goal_callback=self._on_goal, handle_accepted_callback=self._on_accepted,
            cancel_callback=self._on_cancel, callback_group=self._serving_group,
            goal_service_qos_profile=REQUESTS_QOS, result_service_qos_profile=REQUESTS_QOS,
            cancel_service_qos_profile=REQUESTS_QOS)
        self._buffer.apply(self._keyframe_settings())
        self._start_diagnostics_timer()
        self._configured = True
        self.get_logger().info(f"configured: engine {values['engine']}, model {model_id(values)}, "
                               f"cameras {', '.join(values['image_topics'])}")
        return super().on_configure(state)

    @transition
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Checks what is cheap (model files, device), then serves at once: the model loads on the
        worker thread, so the executor keeps running (cameras buffer, diagnostics say "loading")
        and questions asked meanwhile queue until it is ready."""
        values = self._values()
        name, model, options = engine_arguments(values)
        try:
            check_engine(name, model, **options)
        except Exception as exc:
            self._engine_state = f"failed: {type(exc).__name__}: {exc}"
            raise
        self._engine_params = values
        self._target_frame = TargetFrame(self, values["target_frame"])
        self._engine_state = "loading"
        self._activations += 1
        load = functools.partial(self._load_engine, self._activations, name, model, options)
        result = super().on_activate(state)  # publishers first: results must go out
        try:
            self._worker = QueryWorker(self._start_job, load=load, max_pending=values["max_pending"],
                                       max_concurrent=values["max_concurrent"])
            self._camera_inputs.subscribe(values, self._image_group)
            self._ask_subscription = self.create_subscription(
                String, "~/ask", self._on_ask, REQUESTS_QOS, callback_group=self._serving_group)
        except Exception:
            self._stop_serving()  # back to a clean inactive node
            super().on_deactivate(state)
            raise
        self._serving = True
        return result

    def _load_engine(self, activation: int, name: str, model, options: dict):
        """On the worker thread: build and warm up the engine."""
        self.get_logger().info(f"loading the {name} engine ({model_id(self._engine_params)})")
        start = time.monotonic()
        try:
            engine = create_engine(name, model, **options)
            warm_up(engine)
        except Exception as exc:
            self.get_logger().error(f"loading the {name} engine failed: {type(exc).__name__}: {exc}")
            if activation == self._activations:
                self._engine_state = f"failed: {type(exc).__name__}: {exc}"
            raise
        if activation == self._activations:  # not deactivated (or re-activated) meanwhile
            self._engine_state = "ready"
        self.get_logger().info(f"engine ready in {time.monotonic() - start:.1f} s")
        return engine

    @transition
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_serving()
        return super().on_deactivate(state)

    @transition
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unconfigure()
        return super().on_cleanup(state)

    @transition
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return super().on_shutdown(state)

    @transition
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return super().on_error(state)

    def destroy_node(self) -> None:
        logging.getLogger("ros_vilasr").removeHandler(self._log_bridge)
        super().destroy_node()

    def release(self) -> None:
        """Stop serving and free the model, whatever the state (shutdown, error, process exit)."""
        self._stop_serving()
        self._unconfigure()

    def _unconfigure(self) -> None:
        self._profile = None
        if self._enable_service is not None:
            self.destroy_service(self._enable_service)
            self._enable_service = None
        self._watch_service.destroy()
        if self._query_server is not None:
            self._retire_query_server(self._query_server)
            self._query_server = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        self._outputs.destroy()
        if self._diagnostics_publisher is not None:
            self.destroy_publisher(self._diagnostics_publisher)
            self._diagnostics_publisher = None
        self._buffer.clear()
        self._configured = False

    def _stop_serving(self) -> None:
        """Stop taking work, finish (cancel) what is pending, then free the engine."""
        self._serving = False
        self._camera_inputs.destroy()
        if self._ask_subscription is not None:
            self.destroy_subscription(self._ask_subscription)
            self._ask_subscription = None
        worker, self._worker = self._worker, None
        self._activations += 1  # a load still running belongs to no activation now
        if self._target_frame is not None:
            self._target_frame.close()
            self._target_frame = None
        self._staged_goals.clear()
        release = functools.partial(self._release, worker)
        if worker is not None and not worker.stop(STOP_WAIT_S, reason="the node stopped serving (lifecycle "
                                                  "transition or shutdown)", on_exit=release):
            # The model is still loading, or the engine is busy in a call that ignores cancel: its
            # queries have been ended without it, and the worker thread frees the engine after.
            self._engine_state = "releasing: waiting for the model's load or running call to return"
            self.get_logger().warning(f"the worker did not stop within {STOP_WAIT_S:g} s (a model load or an "
                                      "engine call): its queries were ended without waiting, and its engine "
                                      "is freed when that returns")
            return
        release()

    def _release(self, worker: QueryWorker | None) -> None:
        """Free a worker's engine (on its thread when a load or call outlived the transition)."""
        if worker is None or worker.engine is None:
            return
        worker.engine.close()
        worker.engine = None
        gc.collect()
        if self._worker is None:  # not re-activated meanwhile
            self._engine_state = "released"
        self.get_logger().info("engine released")

    def _retire_query_server(self, server) -> None:
        """Destroy the action server once every goal it accepted has its result out.

        Deactivation has ended those goals; their result callbacks run on the executor this
        transition runs on, so the server goes when they have (polled), not under them."""
        if self.executor is None:
            server.destroy()
            return
        retiring = [server, None]
        retiring[1] = self.create_timer(0.1, functools.partial(self._retire_when_done, retiring),
                                        callback_group=self._serving_group)
        self._retiring.append(retiring)

    def _retire_when_done(self, retiring: list) -> None:
        server, timer = retiring
        with self._jobs_lock:
            open_goals = any(job.server is server for job in self._goal_jobs.values())
        if not open_goals and retiring in self._retiring:
            self._retiring.remove(retiring)
            self.destroy_timer(timer)
            server.destroy()

    def _destroy_retiring_server(self) -> None:
        """On configure: two servers of one action must never coexist."""
        for server, timer in self._retiring:
            self.destroy_timer(timer)
            server.destroy()
        self._retiring = []

    # -- queries -------------------------------------------------------------------------------

    def _cameras(self) -> list[str]:
        return list(self._engine_params.get("image_topics") or self._p("image_topics"))

    def _resolve(self, topic: str) -> str | None:
        try:
            return self.resolve_topic_name(topic)
        except Exception:  # noqa: BLE001 - not a valid topic name: matches no camera
            return None

    def check_query(self, question: str, options=(), problem_type: str = "", cameras=()) -> list[str]:
        """The query's cameras (the node's names), or QueryRejected with what is wrong with it."""
        if not question.strip():
            raise QueryRejected("the question is empty")
        limit = self._p("max_question_chars")
        if (size := len(question) + sum(map(len, options))) > limit:
            raise QueryRejected(f"the question and its options have {size} characters "
                                f"(max_question_chars = {limit})")
        if problem_type not in PROBLEM_TYPES:
            raise QueryRejected(f"unknown problem_type {short(problem_type)!r} (one of {PROBLEM_TYPES})")
        known = self._cameras()
        resolved = {self._resolve(t): t for t in known}
        chosen = []
        for cam in cameras or known:
            name = cam if cam in known else resolved.get(self._resolve(cam))
            if name is None:
                raise QueryRejected(f"unknown camera {short(cam)!r} (this node subscribes to {', '.join(known)})")
            if name not in chosen:  # a camera named twice is still one camera
                chosen.append(name)
        return chosen

    def make_job(self, question: str, options=(), problem_type: str = "", cameras=(),
                 selection: int = SELECT_LATEST, max_frames: int = 0, window_s: float = 0.0,
                 max_calls: int = 0) -> Job:
        """A job with its frames chosen now, or QueryRejected with the reason."""
        if not self._serving:
            raise QueryRejected("the node is not active (lifecycle state: "
                                f"{'inactive' if self._configured else 'unconfigured'})")
        if not self._enabled:
            raise QueryRejected("inference is paused (~/enable false)")
        chosen = self.check_query(question, options, problem_type, cameras)
        if not math.isfinite(window_s) or window_s < 0:
            raise QueryRejected(f"window_s must be a finite number of seconds >= 0 (got {window_s})")
        cap = max(1, self._p("max_images") - 1)  # leave room for at least one drawing
        if selection == SELECT_LATEST:
            frames = self._buffer.latest(chosen)
            kind = "single" if len(frames) == 1 else "views"
        elif selection == SELECT_WINDOW:
            frames = self._buffer.window(chosen, min(max_frames or cap, cap), window_s)
            kind = "video" if len(chosen) == 1 else "views"
        else:
            raise QueryRejected(f"unknown frame_selection {selection}")
        frames = frames[-cap:]
        if not frames:
            raise QueryRejected(f"no frames buffered yet from {', '.join(chosen)}")
        return Job(question.strip(), frames, list(options), problem_type,
                   kind if len(frames) > 1 else "single", min(max_calls, MAX_CALLS_LIMIT))

    def _start_job(self, job: Job):
        """On the worker thread: the job's session (the worker drives it, batched with the others
        running) and its step callback, which streams each step."""
        job.open_session(self._values(), self._profile)
        return functools.partial(self._publish_step, job, next(self._query_ids))

    def _admit(self, question: str, options=(), problem_type: str = "", **selection) -> Job:
        """The query's job with a pending slot reserved, or a rejected job saying why."""
        try:
            job = self.make_job(question, options, problem_type, **selection)
        except QueryRejected as exc:
            return self._rejected_job(question, options, problem_type, str(exc))
        worker = self._worker
        if worker is not None and worker.load_error:
            return self._rejected_job(question, options, problem_type, worker.load_error)
        if worker is None or not worker.reserve():
            return self._rejected_job(question, options, problem_type, f"{worker.pending if worker else 0} "
                                      f"queries pending (max_pending = {self._p('max_pending')})")
        return job

    def _rejected_job(self, question: str, options, problem_type: str, reason: str) -> Job:
        self._rejected += 1
        self.get_logger().warning(f"rejecting {short(question)!r}: {reason}")
        return Job(question, [], list(options), problem_type, rejected=True, error=reason)

    def _on_goal(self, goal) -> GoalResponse:
        """Every goal is accepted: one the node cannot run is then aborted at once with the reason
        in its result (rclpy's goal response cannot carry a reason), so no client is left guessing."""
        job = self._admit(goal.question, list(goal.options), goal.problem_type, cameras=list(goal.cameras),
                          selection=goal.frame_selection, max_frames=goal.max_frames, window_s=goal.window_s,
                          max_calls=goal.max_calls)
        with self._jobs_lock:
            self._staged_goals[id(goal)] = (goal, job)
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal_handle) -> CancelResponse:
        with self._jobs_lock:
            job = self._goal_jobs.get(bytes(goal_handle.goal_id.uuid))
        worker = self._worker
        if job is not None and worker is not None:
            worker.cancel(job)
        elif job is not None:
            job.cancel.set()
        return CancelResponse.ACCEPT

    def _on_accepted(self, goal_handle) -> None:
        """Hand the accepted goal to the worker (or end it now); the executor thread returns at once."""
        with self._jobs_lock:
            goal, job = self._staged_goals.pop(id(goal_handle.request), (None, None))
            # Goals are staged and accepted on the one executor thread, so this cannot happen; refuse cleanly
            if job is None or goal is not goal_handle.request:
                job = Job(goal_handle.request.question, [], rejected=True,
                          error="internal: the accepted goal has no staged query")
            job.goal_handle, job.server = goal_handle, self._query_server
            self._goal_jobs[bytes(goal_handle.goal_id.uuid)] = job
        job.feedback = goal_handle.publish_feedback
        job.on_start = self._goal_started
        job.on_done = self._goal_done
        if goal_handle.is_cancel_requested:
            job.cancel.set()
        worker = self._worker
        if job.rejected:
            job.finished = time.monotonic()
            job.on_done(job)
        elif worker is None:  # deactivated since the goal was admitted: its slot went with the worker
            job.cancel.set()
            job.error = "the node stopped serving before the goal started"
            job.on_done(job)
        else:
            worker.submit(job)

    def _goal_started(self, job: Job) -> None:
        """The worker took the goal: ACCEPTED -> EXECUTING while it reasons.

        rclpy offers this transition only with execute(), which would also run the execute
        callback now; the goal handle's state update is used directly instead. Should that ever
        fail, the goal stays ACCEPTED until done, which clients tolerate."""
        goal_handle = job.goal_handle
        if goal_handle.is_cancel_requested:
            return
        try:
            from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

            goal_handle._update_state(_rclpy.GoalEvent.EXECUTE)
        except Exception as exc:  # noqa: BLE001
            self.get_logger().debug(f"goal stays ACCEPTED while executing: {exc}")

    def _goal_done(self, job: Job) -> None:
        """Worker thread: publish the answer, then let the executor send the goal's result (on
        the server that accepted it, which outlives a cleanup until then)."""
        self._publish_answer(job)
        goal_handle = job.goal_handle
        if goal_handle.status == GoalStatus.STATUS_ACCEPTED:
            goal_handle.execute(self._finish_goal)  # ACCEPTED -> EXECUTING, then _finish_goal
        else:
            job.server.notify_execute(goal_handle, self._finish_goal)

    def _finish_goal(self, goal_handle):
        """Executor thread, once the worker is done: the terminal state and the result."""
        with self._jobs_lock:
            job = self._goal_jobs.pop(bytes(goal_handle.goal_id.uuid), None)
        if job is None or job.answer is None:
            goal_handle.abort()
            return SpatialQuery.Result()
        if job.finish_reason == "cancelled" and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif job.finish_reason in ("cancelled", "rejected", "error", "engine_error"):
            goal_handle.abort()  # refused, cancelled by a deactivation (not by the client), or failed
        else:
            goal_handle.succeed()
        return SpatialQuery.Result(answer=job.answer)

    def _on_enable(self, request, response):
        """~/enable (std_srvs/SetBool, as yolo_ros): pause or resume inference and frame buffering
        without unloading the model; queries already running finish. Kept across deactivation."""
        self._enabled = request.data
        response.success = True
        response.message = ("inference and frame buffering enabled" if self._enabled else
                            "paused: frames are not buffered and new questions are refused")
        self.get_logger().info(f"~/enable: {response.message}")
        return response

    def _on_ask(self, msg: String) -> None:
        job = self._admit(msg.data)
        job.on_done = self._publish_answer
        if job.rejected:
            job.finished = time.monotonic()
            self._publish_answer(job)
        else:
            self._worker.submit(job)

    # -- outputs -------------------------------------------------------------------------------

    def _publish_step(self, job: Job, query: int, session, step) -> None:
        """Worker thread, after every model turn: feedback, drawn images, their markers (2-D, 3-D)."""
        images, msg = messages.step_images(job, step), messages.step_msg(job, step, self._target_frame)
        if job.feedback is not None:
            job.feedback(SpatialQuery.Feedback(step=msg, images=images))
        self._outputs.step(job, query, step, msg, images)

    @property
    def worker(self) -> QueryWorker | None:
        return self._worker

    def answer_message(self, job: Job) -> SpatialAnswer:
        return messages.answer_msg(job, model_id(self._engine_params) if self._engine_params else "",
                                   self._target_frame)

    def _publish_answer(self, job: Job) -> None:
        """Every finished query, from the action or ~/ask (worker thread)."""
        answer = job.answer = self.answer_message(job)
        self._outputs.answer(answer)
        if job.rejected:
            return  # counted and logged when it was refused
        self._served += 1
        busy = (job.finished or time.monotonic()) - (job.started or job.accepted)
        self._last = {"latency_s": job.latency_s, "finish_reason": answer.finish_reason,
                      "tokens_per_s": answer.completion_tokens / busy if busy > 0 else 0.0}
        self.get_logger().info(f"answered {short(job.question)!r}: {short(answer.answer)!r} "
                               f"({answer.finish_reason}, {answer.model_calls} calls, {job.latency_s:.2f} s)")
        why = (job.session.error if job.session is not None else None) or job.error
        if answer.finish_reason not in ("answer", "cancelled") and why:
            self.get_logger().warning(f"query {short(job.question)!r} ended with {answer.finish_reason}: {why}")

    # -- diagnostics ---------------------------------------------------------------------------

    def _start_diagnostics_timer(self) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
        self._diagnostics_timer = self.create_timer(
            self._p("diagnostics_period_s"), self._publish_diagnostics, callback_group=self._serving_group)

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_publisher is None:
            return
        worker = self._worker
        model = {
            "lifecycle": "active" if self._serving else ("inactive" if self._configured else "unconfigured"),
            "enabled": str(self._enabled), "engine": self._p("engine"), "model": model_id(self._values()),
            "model_state": self._engine_state, "model_loaded": str(bool(worker and worker.engine)),
            "queue_depth": str(worker.pending if worker else 0),
            "running": ", ".join(repr(short(j.question)) for j in worker.running) if worker else "",
            "queries_answered": str(self._served), "queries_rejected": str(self._rejected),
            "last_latency_s": f"{self._last['latency_s']:.3f}",
            "last_tokens_per_s": f"{self._last['tokens_per_s']:.1f}",
            "last_finish_reason": self._last["finish_reason"]}
        self._diagnostics_publisher.publish(diagnostic_array(
            self.get_fully_qualified_name(), self.get_clock().now().to_msg(), model, self._health.snapshot(),
            self._buffer.stats(),
            self._buffer.settings.memory_bytes))
