"""The batched driver: advance many sessions together, one engine call per round.

``Batch`` is continuous batching: sessions may join between rounds (a robot's new question does
not wait for the running ones to end) and each may be cancelled on its own without disturbing the
others — engines stop a cancelled request's generation where they can (``Request.cancel``), and
its reply is dropped. ``run_sessions`` runs a fixed set to the end (evaluation, training).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tqdm import tqdm

from .engines import Engine
from .session import Session, Step

log = logging.getLogger(__name__)
OnStep = Callable[[Session, Step], None]


@dataclass
class _Member:
    session: Session
    on_step: OnStep | None
    cancel: threading.Event | None


class Batch:
    def __init__(self, engine: Engine, stop: threading.Event | None = None):
        self.engine, self.stop = engine, stop  # stop: cancels every session, in the engine call too
        self._members: list[_Member] = []
        self._forget = getattr(engine, "forget", None)  # optional for wrappers and test doubles

    def __len__(self) -> int:
        return len(self._members)

    def add(self, session: Session, on_step: OnStep | None = None, cancel: threading.Event | None = None) -> None:
        self._members.append(_Member(session, on_step, cancel))

    def _cancelled(self, m: _Member) -> bool:
        return any(e is not None and e.is_set() for e in (self.stop, m.cancel))

    def round(self) -> list[Session]:
        """One engine call for every live session's next turn; returns the sessions that ended
        (answered, failed or cancelled). An engine failure ends the round's sessions with reason
        ``engine_error`` instead of escaping and losing them."""
        for m in self._members:
            if self._cancelled(m):
                m.session.cancel()
        live = [m for m in self._members if not m.session.done]
        if live:
            requests = [m.session.request() for m in live]
            for request, m in zip(requests, live):
                request.cancel = m.cancel
            try:
                replies = self.engine.generate(requests, cancel=self.stop)
            except Exception as exc:  # noqa: BLE001 - any engine failure becomes a finish reason
                log.exception("engine %s failed", type(self.engine).__name__)
                for m in live:
                    m.session.fail(f"{type(exc).__name__}: {exc}")
                replies = []
            for m, reply in zip(live, replies):
                if self._cancelled(m):
                    m.session.cancel()  # a reply cut short by cancel is not a real turn
                elif reply.error is not None:
                    m.session.fail(reply.error)
                else:
                    step = m.session.submit(reply)
                    if m.on_step is not None:
                        try:
                            m.on_step(m.session, step)
                        except Exception:  # noqa: BLE001 - a failed publish must not end the others
                            log.exception("step callback of session %s failed", m.session.key)
        ended = [m.session for m in self._members if m.session.done]
        self._members = [m for m in self._members if not m.session.done]
        for session in ended:
            if self._forget is not None:
                self._forget(session.key)  # a long-running node must not keep finished dialogues
        return ended


def run_sessions(sessions: Iterable[Session], engine: Engine, *, on_step: OnStep | None = None,
                 cancel: threading.Event | None = None, progress: bool = False) -> list[Session]:
    """Run every session to its end, batched. ``cancel`` (checked between rounds and by engines
    during generation) ends all unfinished sessions as cancelled."""
    sessions = list(sessions)
    batch = Batch(engine, stop=cancel)
    for session in sessions:
        batch.add(session, on_step)
    with tqdm(total=len(sessions), desc="dialogues", unit="q", disable=not progress) as bar:
        while batch:
            bar.update(len(batch.round()))
    return sessions
