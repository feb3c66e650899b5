"""`punie dataset filter`: composable predicates over rows, each with a name and a reason.

Predicates run in a fixed order and a row is removed by the first one it fails, so the counts
per predicate add up to the rows removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie.chat.template import ChatTemplate
from punie.data.checks import at_least
from punie.data.language import check_codes, detect
from punie.data.pipeline import keep_rows
from punie.data.render import surely_too_long
from punie.data.rows import texts, tool_calls
from punie.errors import DataError


@dataclass(frozen=True)
class Predicate:
    """`test(row)` returns why the row fails, or None when it passes."""

    name: str
    test: Callable[[dict], str | None]


@dataclass(frozen=True)
class FilterSpec:
    min_messages: int | None = None
    max_messages: int | None = None
    max_tokens: int | None = None
    model: str | None = None
    languages: tuple[str, ...] = ()
    require_tool_calls: bool = False
    forbid_tool_calls: bool = False
    require_tools: tuple[str, ...] = ()
    forbid_tools: tuple[str, ...] = ()
    match: tuple[str, ...] = ()  # FIELD=REGEX, the field must match
    exclude: tuple[str, ...] = ()  # FIELD=REGEX, the field must not match
    min_turn_chars: int | None = None
    last_assistant: bool = False


def predicates(spec: FilterSpec) -> list[Predicate]:
    at_least("--min-messages", spec.min_messages, 0)
    at_least("--max-messages", spec.max_messages, 0)
    at_least("--max-tokens", spec.max_tokens, 0)
    at_least("--min-turn-chars", spec.min_turn_chars, 0)
    out = []
    if spec.min_messages is not None or spec.max_messages is not None:
        out.append(Predicate("messages", _count(spec.min_messages, spec.max_messages)))
    if spec.min_turn_chars is not None:
        out.append(Predicate("short-turn", _short_turn(spec.min_turn_chars)))
    if spec.last_assistant:
        out.append(Predicate("last-turn", _last_assistant))
    if spec.require_tool_calls:
        out.append(Predicate("tool-calls", lambda r: None if _called(r) else "no tool call"))
    if spec.forbid_tool_calls:
        out.append(Predicate("no-tool-calls", lambda r: "has a tool call" if _called(r) else None))
    for name in spec.require_tools:
        out.append(Predicate(f"tool={name}", _tool(name, required=True)))
    for name in spec.forbid_tools:
        out.append(Predicate(f"no-tool={name}", _tool(name, required=False)))
    for expr in spec.match:
        out.append(Predicate(f"match {expr}", _regex(expr, must_match=True)))
    for expr in spec.exclude:
        out.append(Predicate(f"exclude {expr}", _regex(expr, must_match=False)))
    if spec.languages:
        out.append(Predicate("language", _language(spec.languages)))
    if spec.max_tokens is not None:
        if not spec.model:
            raise DataError("--max-tokens counts tokens with a tokenizer: give --model too")
        out.append(Predicate("max-tokens", _tokens(spec.model, spec.max_tokens)))
    if not out:
        raise DataError("no predicate given; see `punie dataset filter --help`")
    return out


def filter_dataset(
    path: Path | str,
    out: Path | str,
    spec: FilterSpec,
    *,
    rejects: Path | str | None = None,
    skip_invalid: bool = False,
):
    """Keep the rows of `path` that pass every predicate; counts say what each one removed."""
    preds = predicates(spec)

    def decide(rec) -> str | None:
        for p in preds:
            reason = p.test(rec.row)
            if reason is not None:
                return f"{p.name}: {reason}"
        return None

    def finish(counts: dict) -> None:
        counts["predicates"] = {p.name: counts["removed"].get(p.name, 0) for p in preds}

    return keep_rows(path, out, decide, rejects=rejects, skip_invalid=skip_invalid, finish=finish)


def _count(lo: int | None, hi: int | None) -> Callable[[dict], str | None]:
    def test(row: dict) -> str | None:
        n = len(row.get("messages") or ())
        if lo is not None and n < lo:
            return f"{n} messages < {lo}"
        if hi is not None and n > hi:
            return f"{n} messages > {hi}"
        return None

    return test


def _short_turn(min_chars: int) -> Callable[[dict], str | None]:
    def test(row: dict) -> str | None:
        for i, m in enumerate(row.get("messages") or ()):
            if m.get("role") in ("user", "assistant") and not m.get("tool_calls"):
                n = len((m.get("content") or "").strip())
                if n < min_chars:
                    return f"messages[{i}] has {n} characters < {min_chars}"
        for key in ("prompt", "completion", "text"):
            if isinstance(row.get(key), str) and len(row[key].strip()) < min_chars:
                return f"{key} has {len(row[key].strip())} characters < {min_chars}"
        return None

    return test


def _last_assistant(row: dict) -> str | None:
    messages = row.get("messages")
    if messages and messages[-1].get("role") != "assistant":
        return f"the last turn is from {messages[-1].get('role')}, not the assistant"
    return None


def _called(row: dict) -> bool:
    return any(True for _ in tool_calls(row))


def _tool(name: str, required: bool) -> Callable[[dict], str | None]:
    def test(row: dict) -> str | None:
        called = any(fn.get("name") == name for _, fn in tool_calls(row))
        if called != required:
            return f"calls {name}" if called else f"does not call {name}"
        return None

    return test


def _regex(expr: str, must_match: bool) -> Callable[[dict], str | None]:
    field, sep, pattern = expr.partition("=")
    if not sep or not field:
        raise DataError(f"{expr!r}: expected FIELD=REGEX, e.g. content=traceback")
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise DataError(f"{expr!r}: not a regular expression ({e})") from e

    def test(row: dict) -> str | None:
        value = "\n".join(texts(row)) if field == "content" else _field(row, field)
        hit = value is not None and rx.search(value if isinstance(value, str) else str(value))
        if bool(hit) != must_match:
            return f"{field} {'does not match' if must_match else 'matches'} /{pattern}/"
        return None

    return test


def _field(row: Any, path: str) -> Any:
    """`messages.-1.content`-style lookup; None when any step is missing."""
    for step in path.split("."):
        if isinstance(row, dict):
            row = row.get(step)
        elif isinstance(row, list):
            try:
                row = row[int(step)]
            except (ValueError, IndexError):
                return None
        else:
            return None
    return row


def _language(allowed: tuple[str, ...]) -> Callable[[dict], str | None]:
    check_codes(allowed)

    def test(row: dict) -> str | None:
        found = detect(" ".join(texts(row)))
        if found is None or found[0] in allowed:
            return None
        return f"{found[0]} ({found[1]:.2f}), not {', '.join(allowed)}"

    return test


def _tokens(model: str, limit: int) -> Callable[[dict], str | None]:
    template = ChatTemplate(model)

    def test(row: dict) -> str | None:
        too_long = surely_too_long(row, limit)
        if too_long:
            return too_long
        n = template.length(row)
        return f"{n} tokens > {limit}" if n > limit else None

    return test
