"""A scriptable OpenAI-compatible chat-completions server for tests (127.0.0.1, background thread).

Usage::

    from fake_openai_server import Fail, FakeOpenAIServer, Garbage, Reply, Sleep

    with FakeOpenAIServer() as server:
        server.push(Fail(429, retry_after=0.05), Reply("hello"))  # first request 429, then "hello"
        client = LLMClient(server.base_url, "fake-model", ...)
        ...
        assert server.request_count == 2
        server.requests[-1].body["messages"]  # what the client sent

Each POST to `/v1/chat/completions` takes the next scripted action from the queue; when the queue is
empty the `default` action answers (a fixed action, or a callable `(request) -> action` that can
answer from the conversation). Actions:

* `Reply(content)` -- a normal completion whose first choice has `content` (None: a null content).
* `Fail(status, retry_after=None, body=None)` -- an HTTP error (429, 500, 401 ...) with an
  OpenAI-style error body and, optionally, a `Retry-After` header.
* `Sleep(seconds, then=Reply("..."))` -- wait (to outlast the client's timeout), then answer.
* `Garbage(body, status=200, content_type="application/json")` -- raw bytes: malformed JSON, HTML ...
* `EmptyChoices()` -- a well-formed completion with `choices: []`.

Every request is recorded (`server.requests`: method, path, headers, parsed JSON body) before it is
answered, so tests can count HTTP requests on the server side.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    content: str | None
    model: str = "fake-model"


@dataclass(frozen=True)
class Fail:
    status: int
    retry_after: float | str | None = None
    body: bytes | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float
    then: Any = field(default_factory=lambda: Reply("late reply"))


@dataclass(frozen=True)
class Garbage:
    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class EmptyChoices:
    pass


Action = Reply | Fail | Sleep | Garbage | EmptyChoices


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or the raw text when it was not JSON


def completion_body(content: str | None, model: str = "fake-model") -> dict:
    """A minimal valid chat.completion object with one choice."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


class FakeOpenAIServer:
    """OpenAI-compatible `/v1/chat/completions` on 127.0.0.1:<free port>; see the module docstring."""

    def __init__(self, default: Action | Callable[[RecordedRequest], Action] | None = None):
        self.default: Action | Callable[[RecordedRequest], Action] = default or Reply("ok")
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Action] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting ---------------------------------------------------------------------------------
    def push(self, *actions: Action) -> None:
        """Queue actions; request k (after earlier ones are used up) gets the k-th queued action."""
        with self._lock:
            self._queue.extend(actions)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server._record(self, None)
                self._send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                request = server._record(self, body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                self._act(server._next_action(request))

            def _act(self, action: Action) -> None:
                try:
                    if isinstance(action, Sleep):
                        time.sleep(action.seconds)
                        self._act(action.then)
                    elif isinstance(action, Reply):
                        self._send_json(200, completion_body(action.content, action.model))
                    elif isinstance(action, EmptyChoices):
                        body = completion_body("unused")
                        body["choices"] = []
                        self._send_json(200, body)
                    elif isinstance(action, Fail):
                        headers = {}
                        if action.retry_after is not None:
                            headers["Retry-After"] = str(action.retry_after)
                        payload = (
                            action.body
                            or json.dumps(
                                {"error": {"message": f"fake error {action.status}", "type": "server_error"}}
                            ).encode()
                        )
                        self._send(action.status, payload, "application/json", headers)
                    elif isinstance(action, Garbage):
                        self._send(action.status, action.body, action.content_type, {})
                    else:
                        raise TypeError(f"unknown fake server action {action!r}")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before we answered

            def _send_json(self, status: int, obj: Any) -> None:
                self._send(status, json.dumps(obj).encode(), "application/json", {})

            def _send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True  # a handler still sleeping must not block shutdown
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------------
    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> RecordedRequest:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        request = RecordedRequest(handler.command, handler.path, headers, body)
        with self._lock:
            self.requests.append(request)
        return request

    def _next_action(self, request: RecordedRequest) -> Action:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.default(request) if callable(self.default) else self.default
