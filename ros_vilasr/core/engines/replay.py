"""Replay engine: plays back the assistant turns of recorded transcripts.

For demos without a GPU, for debugging a robot integration against a known dialogue, and for
tests. A transcript is a JSON object with ``conversations`` (or one JSON line of an original
ViLaSR results file); a file may hold one object, a list, or JSON lines. A request is matched to
the transcript whose ``id`` equals the session's key (evaluation keys sessions by item id, so
questions with the same text stay apart), else to the one recording the same ``question`` text —
among several, the one whose recorded first image (its ``thumbnail``) looks most like the
request's, so a recording's traces follow the scene as it changes — else by order.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from ..session import Reply, Request

THUMBNAIL = (16, 12)  # robust to the resizing between a recorded frame and the model's grid


def thumbnail(image: Image.Image) -> list[float]:
    """A tiny grayscale signature of an image (values 0..1), for matching a request to a trace."""
    small = image.convert("L").resize(THUMBNAIL, Image.Resampling.BILINEAR)
    return [round(v / 255, 3) for v in np.asarray(small, dtype=np.float64).reshape(-1)]


def read_transcripts(path: str | Path) -> list[dict]:
    """Every transcript in a JSON / JSON-lines file, each with a ``conversations`` list."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
        records = data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("conversations"), list):
            raise ValueError(f"{path}: record {i} has no 'conversations' list")
    return records


def assistant_turns(transcript: dict) -> list[str]:
    roles = {"assistant", "gpt"}
    return [m.get("content", m.get("value", "")) for m in transcript["conversations"]
            if m.get("role", m.get("from")) in roles]


class ReplayEngine:
    def __init__(self, transcripts: list[dict]):
        if not transcripts:
            raise ValueError("replay needs at least one transcript")
        self.transcripts = transcripts
        self._by_id = {str(t["id"]): t for t in transcripts if t.get("id") is not None}
        self._by_question: dict[str, list[dict]] = {}
        for t in transcripts:
            if t.get("question"):
                self._by_question.setdefault(t["question"].strip(), []).append(t)
        self._assigned: dict[str, list[str]] = {}  # session key → its remaining turns
        self._next = 0

    @classmethod
    def from_file(cls, path: str | Path | None) -> ReplayEngine:
        if not path:
            raise ValueError("the replay engine needs a transcript file")
        return cls(read_transcripts(path))

    def _turns_for(self, request: Request) -> list[str]:
        if request.key not in self._assigned:
            transcript = self._by_id.get(request.key) or self._by_look(request)
            if transcript is None:
                transcript = self.transcripts[self._next % len(self.transcripts)]
                self._next += 1
            self._assigned[request.key] = list(assistant_turns(transcript))
        return self._assigned[request.key]

    def _by_look(self, request: Request) -> dict | None:
        """The transcript of this question whose first image looks most like the request's."""
        same = self._by_question.get(request.question.strip(), [])
        looks = [t for t in same if t.get("thumbnail")]
        if not looks or not request.images:
            return same[0] if same else None
        seen = np.asarray(thumbnail(request.images[0]))
        return min(looks, key=lambda t: float(np.abs(np.asarray(t["thumbnail"]) - seen).sum()))

    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        replies = []
        for request in requests:
            turns = self._turns_for(request)
            if turns:
                replies.append(Reply(turns.pop(0)))
            else:
                replies.append(Reply("", error="the recorded transcript has no more assistant turns"))
        return replies

    def forget(self, key: str) -> None:
        self._assigned.pop(key, None)

    def close(self) -> None:
        self._assigned.clear()
