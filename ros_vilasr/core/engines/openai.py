"""OpenAI-compatible chat engine: vLLM, SGLang or llama.cpp servers; images sent inline.

Uses only the standard library so a robot can talk to a remote GPU server with nothing heavy
installed. Requests of a batch are sent concurrently.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

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
                 timeout_s: float = 600.0, max_concurrency: int = 16, seed: int | None = None):
        self.model = model or "default"
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.sampling = {"temperature": temperature, "top_p": top_p}
        if seed is not None:
            self.sampling["seed"] = seed
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency

    def _one(self, request: Request) -> Reply:
        body = {"model": self.model, "messages": to_openai_messages(request),
                "max_tokens": request.max_new_tokens, **self.sampling}
        http = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(http, timeout=self.timeout_s) as response:
                data = json.load(response)
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Reply(choice["message"]["content"] or "",
                         "length" if choice.get("finish_reason") == "length" else "stop",
                         prompt_tokens=usage.get("prompt_tokens", 0),
                         completion_tokens=usage.get("completion_tokens", 0))
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            return Reply("", error=f"server answered HTTP {exc.code}: {detail}")
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            return Reply("", error=f"request to {self.url} failed: {type(exc).__name__}: {exc}")

    def generate(self, requests: list[Request], cancel: threading.Event | None = None) -> list[Reply]:
        # A request in flight cannot be recalled; cancel skips the ones not yet sent.
        def one(request: Request) -> Reply:
            if cancel is not None and cancel.is_set():
                return Reply("", error="cancelled")
            return self._one(request)

        with ThreadPoolExecutor(min(self.max_concurrency, max(1, len(requests)))) as pool:
            return list(pool.map(one, requests))

    def forget(self, key: str) -> None:
        pass  # stateless between turns (the server / prefix cache keeps what it keeps)

    def close(self) -> None:
        pass
