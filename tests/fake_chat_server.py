"""A minimal OpenAI-compatible chat server: a test double for vLLM / SGLang serving a model (no
GPU or model server can run here). It keeps every request and answers through ``respond``."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# respond(request body) -> (text, finish_reason, completion_tokens), or an HTTP error status
Respond = Callable[[dict], "tuple[str, str, int] | int"]


class FakeChatServer(ThreadingHTTPServer):
    def __init__(self, respond: Respond):
        self.requests: list[dict] = []  # {"path", "auth", **body}, in arrival order
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                reply = respond(body)
                if isinstance(reply, int):
                    self.send_response(reply)
                    self.end_headers()
                    self.wfile.write(b"overloaded")
                    return
                text, finish, tokens = reply
                data = json.dumps({"choices": [{"message": {"content": text}, "finish_reason": finish}],
                                   "usage": {"prompt_tokens": 100, "completion_tokens": tokens}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up (cancel) is expected
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/v1"

    def close(self) -> None:
        self.shutdown()
        self._thread.join()
        self.server_close()
