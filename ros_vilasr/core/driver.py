"""The batched driver: advance many sessions together, one engine call per round."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from tqdm import tqdm

from .engines import Engine
from .session import Session, Step

log = logging.getLogger(__name__)


def run_sessions(sessions: Iterable[Session], engine: Engine, *,
                 on_step: Callable[[Session, Step], None] | None = None,
                 cancel: threading.Event | None = None, progress: bool = False) -> list[Session]:
    """Run every session to its end. Each round gathers the active sessions' requests, calls the
    engine once and applies the replies. ``cancel`` (checked between rounds and by engines during
    generation) ends all unfinished sessions as cancelled. An engine failure ends the round's
    sessions with reason ``engine_error`` instead of escaping and losing them."""
    sessions = list(sessions)
    forget = getattr(engine, "forget", None)  # optional for wrappers and test doubles
    bar = tqdm(total=len(sessions), desc="dialogues", unit="q", disable=not progress)
    while active := [s for s in sessions if not s.done]:
        if cancel is not None and cancel.is_set():
            for s in active:
                s.cancel()
                if forget is not None:
                    forget(s.key)
            break
        requests = [s.request() for s in active]
        try:
            replies = engine.generate(requests, cancel=cancel)
        except Exception as exc:  # noqa: BLE001 - any engine failure becomes a finish reason
            log.exception("engine %s failed", type(engine).__name__)
            for s in active:
                s.fail(f"{type(exc).__name__}: {exc}")
            replies = []
        if cancel is not None and cancel.is_set():
            continue  # a reply cut short by cancel is not a real turn
        for session, reply in zip(active, replies):
            if reply.error is not None:
                session.fail(reply.error)
                continue
            step = session.submit(reply)
            if on_step is not None:
                on_step(session, step)
        for session in active:
            if session.done and forget is not None:
                forget(session.key)  # a long-running node must not keep finished dialogues
        bar.update(sum(s.done for s in active))
    bar.close()
    return sessions
