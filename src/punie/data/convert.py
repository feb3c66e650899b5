"""`punie dataset convert`: ShareGPT, Alpaca and OpenAI fine-tuning rows into Punie's formats.

A converter is a name, a test that recognises its rows, and a pure function from one row to a
native row (chat, completions, text or preference). The format is detected per file from its first
row unless given. Converted rows are checked like any other, so a conversion cannot write a row
that `validate` would reject.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie.data.formats import (
    Problem,
    RowError,
    check_row,
    dataset_files,
    detect_kind,
    lines,
    parse,
)
from punie.data.output import Output, open_output
from punie.data.pipeline import output_splits, rejects_path
from punie.errors import PunieError


class ConvertError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class Converter:
    name: str
    recognises: Callable[[dict], bool]
    convert: Callable[[dict], dict]


def _text(value: Any, field: str) -> str:
    """Message content as a string: OpenAI content parts are joined, null is empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [
            p.get("text", "") for p in value if isinstance(p, dict) and p.get("type") == "text"
        ]
        if len(parts) == len(value):
            return "".join(parts)
    raise ConvertError(field, f"not text content: {json.dumps(value)[:60]}")


def _json(value: Any, field: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as e:
            raise ConvertError(field, f"a string that is not JSON ({e.msg})") from e
    return value


def _tools(value: Any, field: str) -> list[dict]:
    tools = _json(value, field) or []
    if not isinstance(tools, list):
        raise ConvertError(field, "must be a list of tool schemas")
    return [
        t if isinstance(t, dict) and "function" in t else {"type": "function", "function": t}
        for t in tools
    ]


def _call(fn: Any, field: str) -> dict:
    fn = _json(fn, field)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ConvertError(field, "a tool call needs a function name")
    args = _json(fn.get("arguments", fn.get("parameters", {})), f"{field}.arguments")
    return {"type": "function", "function": {"name": fn["name"], "arguments": args}}


_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function_response": "tool",
    "ipython": "tool",
}


def from_sharegpt(row: dict) -> dict:
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise ConvertError("conversations", "must be a list of {from, value} turns")
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for i, t in enumerate(turns):
        at = f"conversations[{i}]"
        if not isinstance(t, dict):
            raise ConvertError(at, "a turn is an object with from and value")
        who = t.get("from")
        if who == "function_call":
            messages.append(
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [_call(t.get("value"), f"{at}.value")],
                }
            )
            continue
        if who not in _SHAREGPT_ROLES:
            raise ConvertError(
                f"{at}.from", f"{who!r} is not one of {', '.join(_SHAREGPT_ROLES)}, function_call"
            )
        messages.append(
            {"role": _SHAREGPT_ROLES[who], "content": _text(t.get("value"), f"{at}.value")}
        )
    out: dict[str, Any] = {"messages": messages}
    if row.get("tools"):
        out["tools"] = _tools(row["tools"], "tools")
    return out


def from_alpaca(row: dict) -> dict:
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str):
            raise ConvertError(key, "must be a string")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise ConvertError("input", "must be a string")
    prompt = row["instruction"] + (f"\n\n{extra}" if extra.strip() else "")
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    messages += [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": row["output"]},
    ]
    return {"messages": messages}


def from_openai(row: dict) -> dict:
    raw = row.get("messages")
    if not isinstance(raw, list):
        raise ConvertError("messages", "must be a list of messages")
    messages = []
    for i, m in enumerate(raw):
        at = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ConvertError(at, "a message is an object")
        role = "tool" if m.get("role") == "function" else m.get("role")
        msg: dict[str, Any] = {"role": role, "content": _text(m.get("content"), f"{at}.content")}
        calls = m.get("tool_calls") or ([m["function_call"]] if m.get("function_call") else [])
        if calls:
            msg["tool_calls"] = [
                _call(c.get("function", c) if isinstance(c, dict) else c, f"{at}.tool_calls[{j}]")
                for j, c in enumerate(calls)
            ]
        if m.get("tool_call_id"):
            msg["tool_call_id"] = m["tool_call_id"]
        messages.append(msg)
    out: dict[str, Any] = {"messages": messages}
    tools = row.get("tools") or row.get("functions")
    if tools:
        out["tools"] = _tools(tools, "tools")
    return out


CONVERTERS: dict[str, Converter] = {
    "sharegpt": Converter("sharegpt", lambda r: "conversations" in r, from_sharegpt),
    "alpaca": Converter("alpaca", lambda r: "instruction" in r and "output" in r, from_alpaca),
    "openai": Converter("openai", lambda r: "messages" in r, from_openai),
    "native": Converter("native", lambda r: detect_kind(r) is not None, lambda r: r),
}


def recognise(row: dict, where: str) -> Converter:
    for conv in CONVERTERS.values():
        if conv.recognises(row):
            return conv
    keys = ", ".join(sorted(row)[:5])
    raise PunieError(f"{where}: row: no converter recognises a row with keys {keys}")


Numbered = Iterable[tuple[str, int, dict | Problem]]


def convert_rows(
    rows: Numbered,
    fmt: str = "auto",
    on_invalid: Callable[[Problem, Any], None] | None = None,
) -> Iterator[tuple[dict, str]]:
    """(native row, kind) for each (path, line, row); the format is detected per file."""
    if fmt != "auto" and fmt not in CONVERTERS:
        raise PunieError(f"--from {fmt!r}: not one of auto, {', '.join(CONVERTERS)}")
    conv: dict[str, Converter] = {}
    kinds: dict[str, str] = {}
    for path, n, row in rows:
        problem = row if isinstance(row, Problem) else None
        if problem is None:
            if path not in conv:
                conv[path] = CONVERTERS[fmt] if fmt != "auto" else recognise(row, f"{path}:{n}")
            try:
                out = conv[path].convert(row)
            except ConvertError as e:
                problem = Problem(path, n, e.field, e.reason)
            except (KeyError, TypeError, AttributeError) as e:
                problem = Problem(path, n, "row", f"not a {conv[path].name} row ({e!r})")
        if problem is None:
            kind = detect_kind(out)
            bad = (
                ("row", "converted to no known kind")
                if kind is None
                else ("row", f"a {kind} row in a file of {kinds[path]} rows")
                if kinds.setdefault(path, kind) != kind
                else check_row(out, kind)
            )
            if bad:
                problem = Problem(path, n, *bad)
        if problem is not None:
            if on_invalid is None:
                raise RowError(problem)
            on_invalid(problem, None if isinstance(row, Problem) else row)
            continue
        yield out, kind


def jsonl_rows(path: Path) -> Iterator[tuple[str, int, dict | Problem]]:
    for n, raw in lines(path):
        yield str(path), n, parse(str(path), n, raw)


def convert_dataset(
    path: Path | str,
    out: Path | str,
    *,
    fmt: str = "auto",
    skip_invalid: bool = False,
    rejects: Path | str | None = None,
) -> Output:
    files = dataset_files(path)
    splits = output_splits(path)
    if skip_invalid and rejects is None:
        rejects = rejects_path(out)
    with open_output(out, splits, inputs=files, rejects=rejects) as o:
        kinds: dict[str, int] = {}
        for df in files:
            sink = o.sinks[df.split if splits else ""]

            def invalid(problem: Problem, row: Any) -> None:
                o.rejects.write_row({"reason": str(problem), "row": row})

            for row, kind in convert_rows(
                jsonl_rows(df.path), fmt, invalid if skip_invalid else None
            ):
                sink.write_row(row)
                kinds[kind] = kinds.get(kind, 0) + 1
        o.counts.update({"kinds": kinds, "invalid": o.rejects.rows if o.rejects else 0})
    return o
