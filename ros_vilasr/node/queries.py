"""Query plumbing without ROS: the single reasoning worker, typed answers, engine arguments.

The node stays a thin adapter: it turns goals and ``~/ask`` messages into ``Job``s, and a
``QueryWorker`` runs them on its own thread (never on the executor), up to ``max_concurrent``
batched together, with a hard bound on how many may be pending so camera traffic and callers
never back up without limit.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ros_vilasr.core.driver import Batch
from ros_vilasr.core.models import image_position_of, system_prompt_of
from ros_vilasr.core.scoring import parse_number
from ros_vilasr.core.session import Budget, Session

log = logging.getLogger(__name__)

SELECT_LATEST, SELECT_WINDOW = 0, 1
PROBLEM_TYPES = ("", "multiple choice", "numerical", "regression", "free-form")


class QueryRejected(ValueError):
    """A query the node will not run; the message is the reason given to the caller."""


@dataclass(eq=False)  # jobs are identities (queue membership), not values
class Job:
    question: str
    frames: list  # keyframes.Frame, in image order
    options: list[str] = field(default_factory=list)
    problem_type: str = ""
    kind: str = "single"  # single | video | views (core.prompts)
    max_calls: int = 0  # 0 = the node's
    on_start: Callable[[Job], None] | None = None  # on the worker thread, before the session
    on_done: Callable[[Job], None] | None = None
    feedback: Callable[[Any], None] | None = None  # an action goal's publish_feedback
    goal_handle: Any = None  # the action goal this job serves, if any
    server: Any = None  # the action server that accepted that goal (it outlives the goal's result)
    answer: Any = None  # the result message, built once when the job is done
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    session: Any = None  # core.session.Session once started
    error: str | None = None  # why it ended without an answer (also for cancelled and rejected jobs)
    rejected: bool = False  # refused before it ran: the result says why instead of an answer
    background: bool = False  # a standing question's ask: runs only when nothing else waits
    accepted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None

    @property
    def finish_reason(self) -> str:
        if self.rejected:
            return "rejected"
        if self.session is not None and self.session.finish_reason:
            return self.session.finish_reason
        return "cancelled" if self.cancel.is_set() else "error"

    @property
    def latency_s(self) -> float:
        return (self.finished or time.monotonic()) - self.accepted

    def open_session(self, p: dict, profile: dict) -> Session:
        """The job's dialogue under the node's parameters ``p``, in the prompt layout of the model's
        run ``profile`` (the one it was trained in) and with its system prompt unless
        ``system_prompt_file`` replaces it."""
        budget = Budget(max_calls=self.max_calls or p["max_calls"], max_images=p["max_images"],
                        max_new_tokens=p["max_new_tokens"])
        self.session = Session([f.payload.to_pil() for f in self.frames], self.question, options=self.options,
                               problem_type=self.problem_type, kind=self.kind, budget=budget,
                               max_pixels=p["max_pixels"], image_position=image_position_of(profile),
                               system_prompt_path=p["system_prompt_file"] or system_prompt_of(profile))
        return self.session


class QueryWorker:
    """Runs jobs on one worker thread, up to ``max_concurrent`` at once in one engine call per
    round (continuous batching: a job queued while others run joins them at the next round); at
    most ``max_pending`` queued + running. ``start(job)`` sets ``job.session`` (on the worker
    thread) and returns its step callback ``(session, step)``, or None.

    Give the ``engine``, or ``load`` to build it on the worker thread: the caller (a lifecycle
    transition on the executor) returns at once, jobs queue while the model loads, and a failed
    load ends them, and refuses every later one, with its reason (``load_error``)."""

    def __init__(self, start: Callable[[Job], Callable | None], engine=None, max_pending: int = 1,
                 max_concurrent: int = 1, name: str = "vilasr-worker", load: Callable[[], Any] | None = None):
        if (engine is None) == (load is None):
            raise ValueError("give the engine or a function that loads it, not both")
        self.start, self._load = start, load
        self.max_pending, self.max_concurrent = max_pending, max_concurrent
        self.engine = engine
        self.load_error: str | None = None
        self._batch = Batch(engine) if engine is not None else None
        self._queue: deque[Job] = deque()
        self._background: deque[Job] = deque()  # admitted only when _queue is empty
        self._wake = threading.Condition()  # guards everything below
        self._pending = 0
        self._running: list[Job] = []
        self._stopped = False
        self._abandoned = False  # stop() gave up waiting (on a load or an engine call) and left
        self._on_exit: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def running(self) -> list[Job]:
        return list(self._running)

    def reserve(self) -> bool:
        """Claim a pending slot (False when full or stopped); pair with submit() or release()."""
        with self._wake:
            if self._stopped or self._pending >= self.max_pending:
                return False
            self._pending += 1
            return True

    def release(self) -> None:
        with self._wake:
            self._pending -= 1

    def submit(self, job: Job) -> None:
        """Queue a job whose slot was reserved (a background job needs none); a stopped worker
        ends it at once: cancelled, or failed with the reason its model did not load."""
        with self._wake:
            if not self._stopped:
                (self._background if job.background else self._queue).append(job)
                self._wake.notify()
                return
        if self.load_error:
            job.error = self.load_error
        else:
            job.cancel.set()
        self._finish(job)

    def submit_background(self, job: Job) -> None:
        """Queue a job that runs only when no other waits (no pending slot: bounded by its caller)."""
        job.background = True
        self.submit(job)

    def cancel(self, job: Job) -> None:
        """Cancel a job: a queued one ends now, a running one at the engine's next check (the
        others in its batch go on)."""
        job.cancel.set()
        with self._wake:
            queue = self._background if job.background else self._queue
            if job not in queue:
                return
            queue.remove(job)
        self._finish(job)

    def _loop(self) -> None:
        if self._batch is None and not self._load_engine():
            return
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue or self._background or self._running or self._stopped)
                if self._stopped and not self._running:
                    return  # stopped and drained (stop() ended the queued jobs)
                joining = []
                while (self._queue or self._background) and len(self._running) + len(joining) < self.max_concurrent:
                    joining.append((self._queue or self._background).popleft())
                self._running += joining
            for job in joining:
                self._join(job)
            try:
                if self._batch:
                    self._batch.round()
            except Exception as exc:  # noqa: BLE001 - a failed round must not kill the worker
                log.exception("a reasoning round failed")
                for job in self._running:  # ended here; the batch drops them at its next round
                    if job.session is not None:
                        job.session.fail(f"{type(exc).__name__}: {exc}")
            with self._wake:
                if self._abandoned:  # stop() ended these jobs; the engine call has returned at last
                    if self._on_exit is not None:
                        self._on_exit()
                    return
                done = [j for j in self._running if j.session is None or j.session.done]
                self._running = [j for j in self._running if j not in done]
            for job in done:
                self._finish(job)

    def _load_engine(self) -> bool:
        """Build the engine; False when the worker must end (the load failed, or stop() came)."""
        try:
            engine = self._load()
        except Exception as exc:  # noqa: BLE001 - the reason goes to every waiting and later job
            with self._wake:
                self.load_error = f"the model failed to load: {type(exc).__name__}: {exc}"
                self._stopped = True
                queued = [*self._queue, *self._background]
                self._queue.clear()
                self._background.clear()
            for job in queued:
                job.error = self.load_error
                self._finish(job)
        else:
            with self._wake:
                self.engine, self._batch = engine, Batch(engine)
                if not self._abandoned:
                    return True
        if self._abandoned and self._on_exit is not None:  # stop() left while loading: free it now
            self._on_exit()
        return False

    def _join(self, job: Job) -> None:
        """Start a job's session and add it to the batch; a job that cannot start ends (no session)."""
        if job.cancel.is_set():
            return
        job.started = time.monotonic()
        try:
            if job.on_start is not None:
                job.on_start(job)
            on_step = self.start(job)
        except Exception as exc:  # noqa: BLE001 - a failed query must not kill the worker
            log.exception("query %r failed", short(job.question))
            job.error = f"{type(exc).__name__}: {exc}"
            job.session = None
            return
        self._batch.add(job.session, on_step, job.cancel)

    def _finish(self, job: Job) -> None:
        with self._wake:
            if job.finished is not None:
                return  # ended already (by stop(), while the engine call was stuck)
            job.finished = time.monotonic()
            if not job.background:
                self._pending -= 1  # before done: a caller told "done" may submit again at once
        if job.on_done is not None:
            try:
                job.on_done(job)
            except Exception:  # noqa: BLE001
                log.exception("publishing the result of %r failed", short(job.question))
        job.done.set()

    def stop(self, timeout: float, reason: str = "", on_exit: Callable[[], None] | None = None) -> bool:
        """Cancel and end every job within ``timeout`` s, whatever the engine does. Queued jobs
        end at once. Running jobs that have not returned by then are ended here (cancelled, with
        ``reason``) and left to the thread, which calls ``on_exit`` once the engine call returns
        (so the engine is freed then, not under it). True when the thread ended in time."""
        with self._wake:
            self._stopped = True
            queued = [*self._queue, *self._background]
            self._queue.clear()
            self._background.clear()
            for job in [*queued, *self._running]:
                job.error = job.error or reason or None
                job.cancel.set()
            self._wake.notify_all()
        for job in queued:
            self._finish(job)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        with self._wake:
            running, loading = list(self._running), self._batch is None
            if running or loading:
                self._abandoned, self._on_exit = True, on_exit
        if not (running or loading):  # it returned just now: only finishing is left
            self._thread.join()
            return True
        for job in running:
            self._finish(job)
        return False


def short(text: str, limit: int = 80) -> str:
    """A field as logs show it: long questions are cut (a 1 MB question must not flood the log)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# -- typed answers -------------------------------------------------------------------------------

TEXT, CHOICE, NUMBER = "text", "choice", "number"
_LETTER = re.compile(r"^\W*([A-Za-z])(?![A-Za-z])")
_FIRST_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def option_letters(options: list[str]) -> list[str]:
    """The letters options start with ("A. left" -> "A"); empty for options without one."""
    return [m.group(1).upper() for o in options if (m := _LETTER.match(o))]


def typed_answer(answer: str, problem_type: str = "", options: list[str] = ()) -> tuple[str, str, float]:
    """(kind, choice letter, value) of an answer, for robots that act on it.

    Multiple choice (or options given): the leading option letter ("B", "(B)", "B. left").
    Numerical / regression: the number (the whole answer, else its first number: "about 3 m" → 3).
    Without a problem type, an answer that is exactly a number is a number. Otherwise text."""
    answer = (answer or "").strip()
    if problem_type == "multiple choice" or (not problem_type and options):
        m = _LETTER.match(answer)
        letters = option_letters(list(options))
        if m and (not letters or m.group(1).upper() in letters):
            return CHOICE, m.group(1).upper(), 0.0
        return TEXT, "", 0.0
    value = parse_number(answer)
    if value is None and problem_type in ("numerical", "regression"):
        m = _FIRST_NUMBER.search(answer)
        if m:
            value = parse_number(m.group(0).rstrip("."))
    if value is not None and problem_type in ("", "numerical", "regression"):
        return NUMBER, "", value
    return TEXT, "", 0.0


# -- engines -------------------------------------------------------------------------------------

def engine_arguments(p: dict) -> tuple[str, str | None, dict]:
    """(engine name, model argument, options) for core.engines.create_engine from parameters."""
    name = p["engine"]
    temperature = 0.0 if p["greedy"] else p["temperature"]  # every engine reads 0 as greedy
    if name == "transformers":
        return name, p["model"], {"device": p["device"], "dtype": p["dtype"], "quantization": p["quantization"],
                                  "temperature": temperature, "top_p": p["top_p"]}
    if name == "vllm":
        options = {"temperature": temperature, "top_p": p["top_p"], "max_images": p["max_images"],
                   "max_pixels": p["max_pixels"]}
        if p["dtype"] != "auto":
            options["dtype"] = p["dtype"]
        return name, p["model"], options
    if name == "openai":
        return name, p["model"], {"base_url": p["openai_base_url"], "timeout_s": p["openai_timeout_s"],
                                  "temperature": temperature, "top_p": p["top_p"]}
    if name == "replay":
        if not p["replay_file"]:
            raise ValueError("engine 'replay' needs parameter replay_file (a transcript file)")
        return name, p["replay_file"], {}
    raise ValueError(f"unknown engine {name!r}")


def model_id(p: dict) -> str:
    """What answers name as their model."""
    return f"replay:{p['replay_file']}" if p["engine"] == "replay" else p["model"]
