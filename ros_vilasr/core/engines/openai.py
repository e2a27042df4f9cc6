"""OpenAI-compatible chat engine: vLLM, SGLang or llama.cpp servers; images sent inline.

Uses only the standard library so a robot can talk to a remote GPU server with nothing heavy
installed. Requests of a batch are sent concurrently; cancel and close abort the ones in flight
by closing their connections (the server sees the client go and stops generating).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import threading
import urllib.parse
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..session import Reply, Request


def image_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def to_openai_messages(request: Request) -> list[dict]:
    out = []
    for m in request.messages:
        if isinstance(m["content"], str):
            out.append({"role": m["role"], "content": m["content"]})
            continue
        parts = [{"type": "image_url", "image_url": {"url": image_url(request.images[p["index"]])}}
                 if p["type"] == "image" else {"type": "text", "text": p["text"]}
                 for p in m["content"]]
        out.append({"role": m["role"], "content": parts})
    return out


class OpenAIEngine:
    def __init__(self, model: str | None, base_url: str = "http://localhost:8000/v1",
                 api_key: str | None = None, temperature: float = 0.75, top_p: float = 0.9,
                 timeout_s: float = 120.0, max_concurrency: int = 16, seed: int | None = None,
                 retries: int = 0, backoff_s: float = 1.0):
        self.model = model or "default"
        self.url = base_url.rstrip("/") + "/chat/completions"
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"openai base URL {base_url!r} is not an http(s) URL")
        self._target = parts
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.sampling = {"temperature": temperature, "top_p": top_p}
        if seed is not None:
            self.sampling["seed"] = seed
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        # A request that failed on the way (connection, timeout, 5xx / 429, an unreadable reply) is
        # sent again up to `retries` times, waiting backoff_s, 2·backoff_s, ... (cancel ends the wait).
        self.retries, self.backoff_s = retries, backoff_s
        self._in_flight: dict[http.client.HTTPConnection, threading.Event] = {}  # -> its call's cancel
        self._lock = threading.Lock()
        self._closed = False

    def _connection(self) -> http.client.HTTPConnection:
        t = self._target
        kind = http.client.HTTPSConnection if t.scheme == "https" else http.client.HTTPConnection
        return kind(t.hostname, t.port, timeout=self.timeout_s)

    def _one(self, request: Request, cancel: threading.Event) -> Reply:
        body = json.dumps({"model": self.model, "messages": to_openai_messages(request),
                           "max_tokens": request.max_new_tokens, **self.sampling}).encode()
        for attempt in range(self.retries + 1):
            reply, retryable = self._attempt(body, cancel)
            if reply.error is None or not retryable or attempt == self.retries:
                break
            if cancel.wait(self.backoff_s * 2**attempt):
                return Reply("", error="cancelled")
        if reply.error is not None and self.retries and retryable:
            reply.error += f" (after {self.retries + 1} attempts)"
        return reply

    def _attempt(self, body: bytes, cancel: threading.Event) -> tuple[Reply, bool]:
        """One request: its reply, and whether a failure is worth another attempt."""
        conn = self._connection()
        with self._lock:
            self._in_flight[conn] = cancel
        try:
            if cancel.is_set():
                return Reply("", error="cancelled"), False
            conn.request("POST", self._target.path, body=body, headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
            response = conn.getresponse()
            raw = response.read()
            if response.status != 200:
                return Reply("", error=f"server answered HTTP {response.status}: "
                             f"{raw[:300].decode(errors='replace')}"), response.status >= 500 or response.status == 429
            data = json.loads(raw)
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Reply(choice["message"]["content"] or "",
                         "length" if choice.get("finish_reason") == "length" else "stop",
                         prompt_tokens=usage.get("prompt_tokens", 0),
                         completion_tokens=usage.get("completion_tokens", 0)), False
        except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError) as exc:
            if cancel.is_set():
                return Reply("", error="cancelled"), False
            if self._closed:
                return Reply("", error="the engine was closed while the request was in flight"), False
            if isinstance(exc, TimeoutError | socket.timeout):
                return Reply("", error=f"request to {self.url} got no answer within {self.timeout_s:g} s"), True
            return Reply("", error=f"request to {self.url} failed: {type(exc).__name__}: {exc}"), True
        finally:
            with self._lock:
                self._in_flight.pop(conn, None)
            conn.close()

    def _abort(self, cancel: threading.Event | None = None) -> None:
        """Close the connections in flight (of the call with this ``cancel``; all without one):
        their requests return at once."""
        with self._lock:
            connections = [c for c, event in self._in_flight.items() if cancel is None or event is cancel]
        for conn in connections:
            if conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        # one stop event per request: set by the call's cancel or by the request's own
        stops = [threading.Event() for _ in requests]
        with ThreadPoolExecutor(min(self.max_concurrency, max(1, len(requests)))) as pool:
            futures = {pool.submit(self._one, r, stop): (r, stop) for r, stop in zip(requests, stops)}
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
                for future in pending:
                    request, stop = futures[future]
                    if any(e is not None and e.is_set() for e in (cancel, request.cancel)):
                        stop.set()
                        self._abort(stop)
            return [f.result() for f in futures]

    def forget(self, key: str) -> None:
        pass  # stateless between turns (the server / prefix cache keeps what it keeps)

    def close(self) -> None:
        """Abort whatever is in flight (a deactivating node must not wait on a hung server)."""
        self._closed = True
        self._abort()
