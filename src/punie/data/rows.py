"""Reading parts of a row of any kind: its texts, its prompts, its tool calls, its content key."""

from __future__ import annotations

import json
from collections.abc import Iterator

import orjson


def texts(row: dict, roles: tuple[str, ...] = ("user", "assistant")) -> list[str]:
    """The natural-language content of a row of any kind, for `roles` where it has messages."""
    if "messages" in row and isinstance(row["messages"], list):
        return [m.get("content") or "" for m in row["messages"] if m.get("role") in roles]
    out = []
    for key in ("text", "prompt", "completion", "chosen", "rejected"):
        value = row.get(key)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out += [m.get("content") or "" for m in value if m.get("role") in roles]
    return out


def prompts(row: dict) -> list[str]:
    """The user-side text of a row: what an eval prompt would look like."""
    value = row.get("messages", row.get("prompt", row.get("text")))
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [m.get("content") or "" for m in value if m.get("role") == "user"]
    return []


def tool_calls(row: dict) -> Iterator[tuple[int, dict]]:
    """(message index, function) for every tool call in a chat row."""
    for i, m in enumerate(row.get("messages") or ()):
        for tc in m.get("tool_calls") or ():
            yield i, tc.get("function", tc)


def content_key(row: dict) -> bytes:
    """The row's content, normalized (case, whitespace, key order; `source` and `id` ignored) for
    exact-duplicate hashing. Normalizes the JSON text in C-speed string passes, not per value."""
    if "source" in row or "id" in row:
        row = {k: v for k, v in row.items() if k not in ("source", "id")}
    try:
        text = orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:  # what only json takes: integers past 64 bits, lone surrogates
        text = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if "\\" in text:
        text = text.replace("\\n", " ").replace("\\t", " ").replace("\\r", " ")
    text = text.lower()
    return " ".join(text.split()).encode("utf-8", "surrogatepass")
