"""A scripted OpenAI-compatible server on loopback, for what a real model cannot be made to do on
cue: answer garbage, time out, fail with 503 before it succeeds. It speaks real HTTP, so the
client's timeouts, status handling and body limits are exercised as they are in production.

`stub.answers` is a queue of replies, each a function of the request's JSON body returning
(status, body: dict | bytes, delay seconds); once it is empty, `stub.default` answers.
`stub.requests` records every body (and `stub.headers` the headers) received."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Reply = tuple[int, Any, float]


def chat_reply(text: str, *, logprobs: list[tuple[str, dict[str, float]]] | None = None) -> Any:
    """A chat completion answering `text`, with per-token alternatives if given."""
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {
                    "token": token,
                    "logprob": options.get(token, -1.0),
                    "top_logprobs": [{"token": k, "logprob": v} for k, v in options.items()],
                }
                for token, options in logprobs
            ]
        }
    return {
        "choices": [choice],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    }


class Stub:
    def __init__(self) -> None:
        self.answers: list[Callable[[dict[str, Any]], Reply]] = []
        self.default: Callable[[dict[str, Any]], Reply] = lambda body: (
            200,
            chat_reply("Ranking: A > B"),
            0.0,
        )
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self.base_url = ""

    def reply(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self.lock:
            self.requests.append(body)
            self.headers.append(headers)
            answer = self.answers.pop(0) if self.answers else self.default
        return answer(body)


@pytest.fixture
def openai_stub() -> Iterator[Stub]:
    stub = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            status, payload, delay = stub.reply(body, dict(self.headers))
            if delay:
                time.sleep(delay)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield stub
    server.shutdown()
    server.server_close()
