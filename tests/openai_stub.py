"""A scripted OpenAI-compatible server, for tests where a model's replies must be controlled
(hostile programs, a model that answers under another id, chosen tool calls): a few lines of
http.server on 127.0.0.1 and a free port, answering /v1/chat/completions with what `answer`
returns for each request body, and 404 on any other path (as mlx_lm.server does). The server
records every path it was asked for in `.paths`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT = "/v1/chat/completions"


def completion(
    model: str, message: dict[str, Any], finish_reason: str = "stop", completion_tokens: int = 3
) -> dict[str, Any]:
    """One chat completion in OpenAI's shape."""
    return {
        "model": model,
        "choices": [{"message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens},
    }


@dataclass(frozen=True)
class Events:
    """A streamed answer: each item one server-sent event, then `data: [DONE]` unless `done` is
    False (a stream cut short). The connection closes after it, as mlx_lm.server's does."""

    items: list[dict[str, Any]]
    done: bool = True


def chunk(content: str, finish_reason: str | None = None) -> dict[str, Any]:
    """One streamed chat completion chunk carrying `content`."""
    delta = {"role": "assistant", "content": content}
    return {
        "id": "stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def scripted_server(answer: Callable[[dict[str, Any]], Any]) -> ThreadingHTTPServer:
    """Serve `answer(request body)` as each response (a JSON body, or `Events` to stream);
    `.shutdown()` it when done."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            paths.append(self.path)
            if self.path != CHAT:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            reply = answer(body)
            if isinstance(reply, Events):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for item in reply.items:
                    self.wfile.write(b"data: " + json.dumps(item).encode() + b"\n\n")
                if reply.done:
                    self.wfile.write(b"data: [DONE]\n\n")
                return
            out = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.paths = paths
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def tool_call(name: str, **arguments: Any) -> dict[str, Any]:
    """One OpenAI tool call, as a reply message's `tool_calls` item."""
    return {"type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def by_turn(script: dict[str, list[dict[str, Any]]], model: str = "stub") -> Callable:
    """An `answer` for multi-turn episodes: the reply to a request is
    `script[first user message][number of assistant messages so far]` (the last one repeats), so
    concurrent episodes each follow their own script. A reply is a message:
    `{"content": ...}` and/or `{"tool_calls": [...]}`."""

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        first = next(m["content"] for m in messages if m["role"] == "user")
        turn = sum(m["role"] == "assistant" for m in messages)
        replies = script[first]
        message = {"role": "assistant", **replies[min(turn, len(replies) - 1)]}
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return completion(model, message, finish)

    return answer
