"""The front server: an ASGI app (Starlette) in front of one mlx_lm.server, OpenAI's API outside.

Every request is checked and rewritten by `punie.serve.protocol`, sent to the backend
(`punie.serve.upstream`), and its answer given back under the id that answered. Streams are relayed
event by event (each re-labelled and repaired on the way); a backend that drops a stream halfway
gets an error event in OpenAI's shape, so a client raises instead of hanging or reading half an
answer as a whole one. Every error, ours or the backend's, is in OpenAI's shape.

Why one backend for every id, each request naming its (model, adapter) pair: one copy of the base
weights in memory, whatever the number of adapters. Switching between ids reloads the adapter
in mlx_lm.server (a pause of about one model load); a client that alternates ids under load
should run one `punie serve` per id instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from punie.serve.models import Registry
from punie.serve.protocol import (
    ApiError,
    Forward,
    backend_error,
    merge_replies,
    not_found,
    prepare,
    repair_choice,
    route_not_found,
    unauthorized,
)
from punie.serve.upstream import Answer, BackendLost, Upstream

log = logging.getLogger("punie.serve")
CREATED = int(time.time())


@dataclass(frozen=True)
class FrontConfig:
    registry: Registry
    backend: Upstream  # the mlx_lm.server behind
    api_key: str | None = None
    constrain: str | None = None


class _JSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def _error(e: ApiError) -> Response:
    return _JSON(e.body(), status_code=e.status)


def _lost(e: BaseException) -> ApiError:
    why = type(e).__name__ + (f": {e}" if str(e) else "")
    return ApiError(
        502,
        f"mlx_lm.server gave no answer ({why}); it can fail this way on a malformed tool call, "
        "see the server log",
        type="server_error",
        code="backend_unavailable",
    )


def make_app(config: FrontConfig):
    registry = config.registry
    backend = config.backend

    def authorized(request: Request) -> ApiError | None:
        if config.api_key is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), config.api_key.encode()
        ):
            return None
        return unauthorized(bool(header))

    async def models(request: Request) -> Response:
        if err := authorized(request):
            return _error(err)
        data = [
            {"id": m.id, "object": "model", "created": CREATED, "owned_by": "punie"}
            for m in registry.models
        ]
        return _JSON({"object": "list", "data": data})

    async def model(request: Request) -> Response:
        if err := authorized(request):
            return _error(err)
        wanted = request.path_params["model"]
        if registry.get(wanted) is None:
            return _error(not_found(wanted, registry))
        return _JSON({"id": wanted, "object": "model", "created": CREATED, "owned_by": "punie"})

    async def health(request: Request) -> Response:
        try:
            status, _ = await asyncio.wait_for(backend.get("/health"), 5.0)
            ok = status == 200
        except (BackendLost, TimeoutError):
            ok = False
        body = {"status": "ok" if ok else "unavailable", "models": list(registry.ids)}
        return _JSON(body, status_code=200 if ok else 503)

    async def ask(body: dict) -> dict:
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        try:
            status, content = await backend.post(path, orjson.dumps(body))
        except BackendLost as e:
            raise _lost(e) from None
        if status != 200:
            raise backend_error(status, content.decode(errors="replace"))
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise ApiError(
                502, "mlx_lm.server answered with no JSON", type="server_error"
            ) from None
        if not isinstance(data, dict):
            raise ApiError(502, "mlx_lm.server answered with no JSON object", type="server_error")
        return data

    async def complete(request: Request, chat: bool) -> Response:
        if err := authorized(request):
            return _error(err)
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as e:
            return _error(ApiError(400, f"the request body is not JSON: {e}"))
        try:
            fwd = prepare(body, registry, config.constrain, chat=chat)
            if fwd.stream:
                return await stream(fwd)
            replies = await asyncio.gather(*(ask(fwd.body) for _ in range(fwd.n)))
        except ApiError as e:
            return _error(e)
        answer, notes = merge_replies(list(replies), fwd.served.id)
        for note in notes:
            log.warning("%s: %s", fwd.served.id, note)
        return _JSON(answer)

    async def chat_completions(request: Request) -> Response:
        return await complete(request, chat=True)

    async def completions(request: Request) -> Response:
        return await complete(request, chat=False)

    async def open_stream(body: dict) -> Answer:
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        try:
            answer = await backend.request("POST", path, orjson.dumps(body))
            if answer.status != 200:
                text = (await answer.body()).decode(errors="replace")
                raise backend_error(answer.status, text)
        except BackendLost as e:
            raise _lost(e) from None
        return answer

    async def stream(fwd: Forward) -> Response:
        opened = []
        try:
            for _ in range(fwd.n):
                opened.append(await open_stream(fwd.body))
        except ApiError:
            for r in opened:
                r.close()
            raise
        return StreamingResponse(relay(fwd, opened), media_type="text/event-stream")

    async def events(fwd: Forward, index: int, r: Answer) -> AsyncIterator[bytes | ApiError]:
        """One backend stream's events, each re-labelled and repaired, up to its [DONE] (not
        passed on); an ApiError last if the stream broke or ended without one."""
        calls_seen = False
        try:
            async for line in r.lines():
                if line.startswith(b":"):
                    yield line + b"\n\n"  # keep-alive comments
                    continue
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                event = orjson.loads(payload)
                calls_seen = _relabel(event, fwd, index, calls_seen)
                yield b"data: " + orjson.dumps(event) + b"\n\n"
            yield _lost(RuntimeError("the stream ended before [DONE]"))
        except (BackendLost, orjson.JSONDecodeError) as e:
            yield _lost(e)
        finally:
            r.close()

    async def interleaved(fwd: Forward, streams: list[Answer]) -> AsyncIterator[bytes | ApiError]:
        """n streams' events as they come, each choice under its own index."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, r: Answer) -> None:
            async with contextlib.aclosing(events(fwd, i, r)) as items:
                async for item in items:
                    await queue.put(item)
            await queue.put(None)

        tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(streams)]
        try:
            open_streams = len(tasks)
            while open_streams:
                item = await queue.get()
                if item is None:
                    open_streams -= 1
                else:
                    yield item
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def relay(fwd: Forward, streams: list[Answer]) -> AsyncIterator[bytes]:
        """What the client reads: the events, then [DONE]; or an error event in OpenAI's shape
        where a backend stream broke. One stream is read directly: no task and no queue for
        each token."""
        one = len(streams) == 1
        source = events(fwd, 0, streams[0]) if one else interleaved(fwd, streams)
        async with contextlib.aclosing(source) as items:
            async for item in items:
                if isinstance(item, ApiError):
                    yield b"data: " + orjson.dumps(item.body()) + b"\n\n"
                    return
                yield item
        yield b"data: [DONE]\n\n"

    def _relabel(event: dict, fwd: Forward, index: int, calls_seen: bool) -> bool:
        event["model"] = fwd.served.id
        for choice in event.get("choices") or []:
            choice["index"] = index
            if "delta" in choice:
                has_call, note = repair_choice(choice, "delta", calls_seen)
                calls_seen = calls_seen or has_call
                if note:
                    log.warning("%s: %s", fwd.served.id, note)
        return calls_seen

    async def not_found_route(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error(route_not_found(request.method, request.url.path))
        return _error(
            ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
        )

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found_route})
    return closing_connections(app)


def closing_connections(app):
    """`app` with `Connection: close` on every answer, as mlx_lm.server (HTTP/1.0) answers.

    Why: clients such as httpx (under the openai SDK) write a request's head and body in two sends
    without TCP_NODELAY. On a reused connection the kernel holds the body back (Nagle) until the
    server's delayed ACK, about 40 ms, which doubled a short answer's latency. A fresh loopback
    connection costs about 0.1 ms and starts in quick-ACK mode."""

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def closing(message):
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return await app(scope, receive, closing)

    return asgi
