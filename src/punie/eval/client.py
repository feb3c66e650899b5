"""An OpenAI-compatible chat client: concurrent, bounded, and explicit about which model answers.

Works against Punie's managed mlx_lm.server and any other OpenAI-compatible server (vLLM, Ollama,
llama.cpp). Every request names its model; the answer's `model` field is kept with the reply, so
the results record which model answered (OpenAI itself answers `gpt-4o-mini` with a dated id).

A server's URL may be given with or without its `/v1` (what `punie serve` prints has it, what
`Server.base_url` gives has not): `api_root` is the one place that tells them apart.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from punie.errors import EvalError, ServerError
from punie.sampling import DEFAULT_SAMPLING, Sampling


@dataclass(frozen=True)
class Target:
    """What answers: a server, the model name it is asked for, and (mlx_lm.server) an adapter."""

    base_url: str
    model: str
    adapter: str | None = None
    api_key: str | None = None
    constrain: str | None = None  # the managed server's constrained decoding (a cache-key part)


@dataclass(frozen=True)
class Reply:
    content: str
    tool_calls: list[dict] | None
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    model: str | None = None  # the answer's `model` field: who answered, by the server's word
    raw: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        """What the response cache keeps (latency is the original request's)."""
        return {
            "content": self.content,
            "tool_calls": self.tool_calls,
            "latency_s": self.latency_s,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
            "model": self.model,
        }


class RequestFailed(ServerError):
    """A request got no usable answer (connection lost, HTTP error, not a chat answer)."""


CHAT_PATH = "/v1/chat/completions"


def api_root(base_url: str) -> str:
    """The server's root, to which `CHAT_PATH` is added: `base_url` without trailing slashes and
    without one trailing `/v1`, so `http://h:8080`, `http://h:8080/` and `http://h:8080/v1/` all
    reach `http://h:8080/v1/chat/completions` (and `http://h/api/v1` reaches `/api/v1/...`)."""
    return base_url.rstrip("/").removesuffix("/v1")


def request_body(target: Target, messages: list[dict], tools, sampling: Sampling) -> dict:
    body: dict[str, Any] = {"model": target.model, "messages": messages, **sampling.as_dict()}
    if tools:
        body["tools"] = list(tools)
    if target.adapter:
        body["adapters"] = target.adapter  # mlx_lm.server's per-request adapter field
    return body


# Seconds one request may take, from sending it to the last byte of its answer: a server that
# accepts the connection and never answers fails the run here instead of hanging it.
REQUEST_TIMEOUT_S = 300.0


class ChatClient:
    def __init__(self, target: Target, *, concurrency: int = 4, timeout: float = REQUEST_TIMEOUT_S):
        if not 0 < timeout < float("inf"):
            raise EvalError(f"request timeout: {timeout} is not a positive number of seconds")
        self.target = target
        self.timeout = timeout
        self._limit = asyncio.Semaphore(concurrency)
        headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
        self._http = httpx.AsyncClient(
            base_url=api_root(target.base_url), timeout=timeout, headers=headers
        )

    async def chat(
        self, messages: list[dict], tools=(), sampling: Sampling = DEFAULT_SAMPLING
    ) -> Reply:
        body = request_body(self.target, messages, tools, sampling)
        async with self._limit:
            start = time.perf_counter()
            try:
                # httpx bounds each read; this bounds the whole answer (a trickle resets reads)
                async with asyncio.timeout(self.timeout):
                    r = await self._http.post(CHAT_PATH, json=body)
            except (TimeoutError, httpx.TimeoutException) as e:
                raise RequestFailed(
                    f"{self.target.base_url}: no answer within {self.timeout:g}s "
                    "(the request timeout)"
                ) from e
            except httpx.HTTPError as e:
                why = type(e).__name__ + (f": {e}" if str(e) else "")
                raise RequestFailed(f"{self.target.base_url}: request failed ({why})") from e
            latency = time.perf_counter() - start
        if r.status_code != 200:
            text = " ".join(r.text.split())[:200]
            raise RequestFailed(f"{self.target.base_url}: HTTP {r.status_code}: {text}")
        try:
            data = r.json()
            message = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise RequestFailed(f"{self.target.base_url}: not an OpenAI chat answer") from e
        usage = data.get("usage") or {}
        return Reply(
            content=message.get("content") or "",
            tool_calls=message.get("tool_calls") or None,
            latency_s=latency,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=data["choices"][0].get("finish_reason"),
            model=data.get("model") if isinstance(data.get("model"), str) else None,
            raw=data,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
