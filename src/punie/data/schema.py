"""Schema checks of one row: its kind, and the first thing wrong with it as (field, reason).

The kinds are detected from a row's keys the way mlx_lm does (prompt+completion, then messages,
then text), plus preference rows; see `punie.data.formats` for what each kind holds. A bad row
becomes a `Problem` naming file, line and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from punie.errors import DataError

KINDS = ("chat", "completions", "text", "preference")
ROLES = ("system", "user", "assistant", "tool")
# Formats `punie dataset convert` brings in; named here so validate can point at it.
FOREIGN = {
    "conversations": "ShareGPT",
    "instruction": "Alpaca",
    "chat": "glaive",
    "answers": "xLAM",
    "chosen_messages": "LLaMA-Factory pairs",
}


@dataclass(frozen=True)
class Problem:
    """What is wrong with one row: printed as `file:line: field: reason`."""

    path: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.reason}"


class RowError(DataError):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def detect_kind(row: dict) -> str | None:
    if "prompt" in row and "chosen" in row and "rejected" in row:
        return "preference"
    if "prompt" in row and "completion" in row:
        return "completions"
    if "messages" in row:
        return "chat"
    if "text" in row:
        return "text"
    return None


def unknown_kind_reason(row: dict) -> str:
    for key, name in FOREIGN.items():
        if key in row:
            return f"looks like {name}; run `punie dataset convert` first"
    keys = ", ".join(sorted(row)[:5]) or "none"
    return (
        f"not a known row kind (keys: {keys}); expected messages, prompt+completion, text, "
        "or prompt+chosen+rejected"
    )


def check_row(row: dict, kind: str) -> tuple[str, str] | None:
    """The first thing wrong with a row of `kind`, as (field, reason); None when it is fine."""
    if kind == "chat":
        return check_chat(row)
    if kind == "completions":
        return _check_strings(row, ("prompt", "completion"))
    if kind == "text":
        return _check_strings(row, ("text",))
    return _check_preference(row)


def check_chat(row: dict) -> tuple[str, str] | None:
    messages = row.get("messages")
    if not isinstance(messages, list):
        return "messages", f"must be a list of messages, got {type_name(messages)}"
    if not messages:
        return "messages", "empty; a chat row needs at least one message"
    bad = check_messages(messages, "messages")
    if bad:
        return bad
    tools = row.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools", f"must be a list of tool schemas, got {type_name(tools)}"
        for i, tool in enumerate(tools):
            fn = tool.get("function", tool) if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                return f"tools[{i}]", "must be an object with a function name"
    return None


def check_messages(messages: list, where: str) -> tuple[str, str] | None:
    # Field names are built only on failure: this runs for every message of every row.
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"{where}[{i}]", f"a message is an object, got {type_name(m)}"
        role = m.get("role")
        if role not in ROLES:
            return f"{where}[{i}].role", f"{role!r} is not one of {', '.join(ROLES)}"
        content = m.get("content")
        calls = m.get("tool_calls")
        if content is not None and not isinstance(content, str):
            return f"{where}[{i}].content", f"must be a string, got {type_name(content)}"
        if calls is not None:
            if role != "assistant":
                return f"{where}[{i}].tool_calls", f"only assistant turns call tools, not {role}"
            bad = _check_calls(calls, f"{where}[{i}].tool_calls")
            if bad:
                return bad
        if not (content or "").strip() and not calls:
            return f"{where}[{i}].content", "empty turn"
    return None


def role_order(messages: list[dict]) -> tuple[str, str] | None:
    """Where the turn order breaks what chat templates expect (system first, then turns)."""
    prev, caller = None, None  # caller: the last assistant turn, by index
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "system" and i != 0:
            return f"messages[{i}].role", "system is only allowed as the first message"
        if role == "tool" and prev not in ("assistant", "tool"):
            return f"messages[{i}].role", f"a tool result must follow a tool call, not {prev}"
        if role == "tool" and not messages[caller].get("tool_calls"):
            return f"messages[{i}].role", (
                f"a tool result must follow a tool call; messages[{caller}], the assistant turn "
                "before it, calls no tool"
            )
        if role == "assistant":
            caller = i
        if role == "assistant" and prev in (None, "system"):
            return f"messages[{i}].role", "the first turn after the system prompt is the user's"
        if role == "user" and prev == "user":
            return f"messages[{i}].role", "two user turns in a row"
        if role == prev == "assistant":
            return f"messages[{i}].role", "two assistant turns in a row"
        prev = role
    return None


def _check_calls(calls: Any, where: str) -> tuple[str, str] | None:
    if not isinstance(calls, list) or not calls:
        return where, "must be a non-empty list of calls"
    for j, tc in enumerate(calls):
        fn = tc.get("function", tc) if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            return f"{where}[{j}].function.name", "missing; a call needs a function name"
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                return f"{where}[{j}].function.arguments", "a string that is not JSON"
        if not isinstance(args, dict):
            return f"{where}[{j}].function.arguments", f"must be an object, got {type_name(args)}"
    return None


def _check_strings(row: dict, keys: tuple[str, ...]) -> tuple[str, str] | None:
    for key in keys:
        if not isinstance(row.get(key), str):
            return key, f"must be a string, got {type_name(row.get(key))}"
    if not row[keys[-1]].strip():
        return keys[-1], "empty"
    return None


def _check_preference(row: dict) -> tuple[str, str] | None:
    for key in ("prompt", "chosen", "rejected"):
        value = row[key]
        if isinstance(value, list):
            bad = check_messages(value, key) if value else (key, "empty message list")
            if bad:
                return bad
        elif not isinstance(value, str):
            return key, f"must be a string or a list of messages, got {type_name(value)}"
    lists = [key for key in ("prompt", "chosen", "rejected") if isinstance(row[key], list)]
    if 0 < len(lists) < 3:
        shape = "is a message list" if len(lists) == 1 else "are message lists"
        return "row", (
            f"{' and '.join(lists)} {shape} but the rest are strings; TRL reads a row as all "
            "text or all messages"
        )
    return None


def type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else f"a {type(value).__name__}"
    )
