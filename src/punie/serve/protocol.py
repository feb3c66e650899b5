"""OpenAI's request and answer shapes, as the front server applies them: pure functions.

A request is checked and turned into what mlx_lm.server needs (`prepare`): its served id
becomes the model folder and the adapter, and the OpenAI parameters mlx_lm.server would ignore in
silence are honoured or refused here (`tool_choice`, `response_format`, `n`). An answer is given
back the id that answered, and a reply that claims tool calls it does not hold is repaired
(`repair_choice`). Every refusal is an `ApiError`, which renders OpenAI's error body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from punie.chat.toolcalls import Malformed, parse_calls
from punie.serve.models import Registry, ServedModel

MAX_N = 16  # samples per request: each is a full generation on the backend

# Fields mlx_lm.server reads that would load something other than the served model.
LOADING_FIELDS = ("adapters", "draft_model")


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def not_found(model: str, registry: Registry) -> ApiError:
    served = ", ".join(registry.ids)
    return ApiError(
        404,
        f"The model '{model[:200]}' does not exist or is not served here; served ids: {served}",
        param="model",
        code="model_not_found",
    )


def unauthorized(given: bool) -> ApiError:
    why = "Incorrect API key provided" if given else "No API key provided"
    return ApiError(
        401,
        f"{why}: this server needs 'Authorization: Bearer <key>' with the key it was started "
        "with (--api-key or PUNIE_API_KEY)",
        code="invalid_api_key",
    )


def route_not_found(method: str, path: str) -> ApiError:
    return ApiError(
        404,
        f"{method} {path}: no such endpoint; this server answers /v1/chat/completions, "
        "/v1/completions, /v1/models and /health",
        code="unknown_url",
    )


def backend_error(status: int, text: str) -> ApiError:
    """mlx_lm.server's refusal in OpenAI's shape. It answers bad parameters with 400 and every
    failure while generating (a model that fails to load, say) with 404: that one is ours."""
    try:
        data = json.loads(text)
        message = data.get("error", text) if isinstance(data, dict) else text
    except ValueError:
        message = text
    if isinstance(message, dict):  # already OpenAI's shape
        message = message.get("message", json.dumps(message))
    message = " ".join(str(message).split())[:500] or f"HTTP {status}"
    if status in (400, 411, 413, 422):
        return ApiError(400, f"mlx_lm.server refused the request: {message}")
    return ApiError(500, f"mlx_lm.server failed: {message}", type="server_error")


@dataclass(frozen=True)
class Forward:
    """What to ask the backend, and how often."""

    served: ServedModel
    body: dict = field(repr=False)
    n: int = 1
    stream: bool = False


def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param, code=code)


def _served(body: Any, registry: Registry) -> ServedModel:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", f"required; served ids: {', '.join(registry.ids)}", "missing_required")
    served = registry.get(model)
    if served is None:
        raise not_found(model, registry)
    for name in LOADING_FIELDS:
        if body.get(name) is not None:
            raise _bad(
                name,
                "not accepted here: every served model and adapter has its own id "
                f"({', '.join(registry.ids)}); name it as `model`",
                "unsupported_parameter",
            )
    return served


def _n(body: dict) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise _bad("n", f"must be an integer from 1 to {MAX_N}, got {n!r}")
    return n


def _stream(body: dict) -> bool:
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise _bad("stream", f"must be true or false, got {stream!r}")
    return stream


def _tool_names(tools: Any) -> list[str]:
    names = []
    for tool in tools if isinstance(tools, list) else []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


NEEDS_CONSTRAINT = (
    "needs constrained decoding: start the server with --constrain tools; without it the model "
    "is only asked (tool_choice 'auto') or given no tools ('none')"
)


def _tool_choice(out: dict, constrain: str | None) -> None:
    choice = out.pop("tool_choice", None)
    if choice in (None, "auto"):
        if constrain and choice is not None:
            out["tool_choice"] = choice
        return
    if choice == "none":
        out.pop("tools", None)  # the model cannot call what it is not shown
        return
    names = _tool_names(out.get("tools"))
    if choice == "required":
        wanted = None
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        wanted = choice["function"]["name"]
    else:
        raise _bad(
            "tool_choice",
            "must be 'none', 'auto', 'required' or "
            f'{{"type": "function", "function": {{"name": ...}}}}, got {json.dumps(choice)[:80]}',
        )
    if not names:
        raise _bad("tool_choice", f"{json.dumps(choice)[:80]} needs `tools` in the request")
    if wanted is not None and wanted not in names:
        raise _bad("tool_choice", f"names {wanted!r}, which is not one of the tools: {names}")
    if not constrain:
        raise _bad(
            "tool_choice", f"{json.dumps(choice)[:80]} {NEEDS_CONSTRAINT}", "unsupported_value"
        )
    out["tool_choice"] = choice


def _response_format(out: dict, constrain: str | None) -> None:
    fmt = out.pop("response_format", None)
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return
    if kind not in ("json_object", "json_schema"):
        raise _bad(
            "response_format",
            f"type must be 'text', 'json_object' or 'json_schema', got {json.dumps(fmt)[:80]}",
        )
    if not constrain:
        raise _bad("response_format", f"{kind} {NEEDS_CONSTRAINT}", "unsupported_value")
    out["response_format"] = fmt


def prepare(body: Any, registry: Registry, constrain: str | None, *, chat: bool = True) -> Forward:
    """The backend request for a client's chat (or text) completion request; raises ApiError."""
    served = _served(body, registry)
    if chat and not isinstance(body.get("messages"), list):
        raise _bad("messages", "required: a list of messages", "missing_required")
    if not chat and body.get("prompt") is None:
        raise _bad("prompt", "required", "missing_required")
    n, stream = _n(body), _stream(body)
    out = {k: v for k, v in body.items() if k != "n"}
    out["model"] = served.model
    if served.adapter:
        out["adapters"] = served.adapter
    if chat:
        _tool_choice(out, constrain)
        _response_format(out, constrain)
    return Forward(served, out, n, stream)


def _raw_call(tc: Any) -> str:
    fn = tc.get("function", tc) if isinstance(tc, dict) else tc
    return f"<tool_call>{json.dumps(fn, ensure_ascii=False)}</tool_call>"


def repair_choice(choice: dict, key: str, calls_seen: bool = False) -> tuple[bool, str | None]:
    """Keep only the tool calls that parse; a malformed one's text goes into `content`. A choice
    that finishes with `tool_calls` but holds none (nor, streaming, had any: `calls_seen`)
    finishes with `stop`. Returns (whether this choice holds a call, a note of what was fixed)."""
    message = choice.get(key)
    if not isinstance(message, dict):
        message = {}
    calls = message.get("tool_calls") or []
    good, bad = [], []
    for tc in calls if isinstance(calls, list) else [calls]:
        try:
            parse_calls(None, [tc])
            good.append(tc)
        except Malformed:
            bad.append(tc)
    note = None
    if bad:
        message["content"] = (message.get("content") or "") + "".join(map(_raw_call, bad))
        note = f"{len(bad)} malformed tool call(s) moved to content"
    if good:
        message["tool_calls"] = good
    else:
        message.pop("tool_calls", None)
    if choice.get("finish_reason") == "tool_calls" and not (good or calls_seen):
        choice["finish_reason"] = "stop"
        note = (note + "; " if note else "") + "finish_reason tool_calls with no call -> stop"
    return bool(good), note


def merge_replies(replies: list[dict], served_id: str) -> tuple[dict, list[str]]:
    """One answer from n backend answers (one choice each): choices re-indexed, usage summed,
    `model` the id that answered. Returns the answer and the repairs made."""
    out = dict(replies[0])
    out["model"] = served_id
    choices, notes = [], []
    usage: dict[str, int] = {}
    for reply in replies:
        for choice in reply.get("choices") or []:
            choice = dict(choice, index=len(choices))
            if "message" in choice:  # a chat answer (a text completion has `text`)
                _, note = repair_choice(choice, "message")
                if note:
                    notes.append(note)
            choices.append(choice)
        for k, v in (reply.get("usage") or {}).items():
            if isinstance(v, int):
                usage[k] = usage.get(k, 0) + v
    out["choices"] = choices
    if len(replies) > 1 and usage:  # one reply keeps its usage as it is (cached tokens, ...)
        if "prompt_tokens" in usage:
            # the prompt is read once per sample but is one prompt: OpenAI counts it once
            usage["prompt_tokens"] //= len(replies)
            usage["total_tokens"] = usage["prompt_tokens"] + usage.get("completion_tokens", 0)
        out["usage"] = usage
    return out, notes
