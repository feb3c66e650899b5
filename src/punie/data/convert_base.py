"""What every converter shares: its error, its notes, and the pieces of a chat row it builds.

A converter reads the keys it knows and says so (`Notes.use`); the keys it leaves are carried onto
the converted row unchanged (`id`, `source`, `meta`, ...), and what cannot be carried (a key of a
turn that has no place in a message) is counted, so `convert` reports it instead of dropping it in
silence. Changes a reader would not expect (arguments that were JSON inside JSON) are counted too.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class ConvertError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass
class Notes:
    """What converting one row read, could not keep, and changed."""

    used: set[str] = field(default_factory=set)
    dropped: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)

    def use(self, *keys: str | None) -> None:
        self.used.update(k for k in keys if k)

    def unused(self, obj: dict, known: set[str] | tuple[str, ...], where: str) -> None:
        """Count the keys of `obj` (a turn, a message) that have no place in the output."""
        for key in obj:
            if key not in known:
                self.dropped[f"{where}.{key}"] += 1

    def change(self, what: str) -> None:
        self.changed[what] += 1


DOUBLE_ENCODED = "tool-call arguments were a JSON string inside JSON; decoded to an object"


def text(value: Any, field: str) -> str:
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


def loads(value: Any, field: str) -> Any:
    """A value that may be JSON text; strings that are not JSON are an error."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as e:
            raise ConvertError(field, f"a string that is not JSON ({e.msg})") from e
    return value


def lenient(value: str, field: str) -> Any:
    """JSON, or the Python literal some datasets write instead (single quotes, True/None)."""
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        try:
            return ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ConvertError(field, f"not JSON ({e.msg}): {value.strip()[:60]!r}") from None


def arguments(value: Any, field: str, notes: Notes, *, string_expected: bool = False) -> dict:
    """A call's arguments as an object. OpenAI writes them as one JSON string (`string_expected`);
    anywhere else, and any second layer, is double encoding, decoded and counted."""
    layers = 0
    while isinstance(value, str) and layers < 3:
        value = loads(value, field)
        layers += 1
    if layers > (1 if string_expected else 0):
        notes.change(DOUBLE_ENCODED)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ConvertError(field, f"arguments must be an object, got {json.dumps(value)[:40]}")
    return value


def call(fn: Any, field: str, notes: Notes, *, string_expected: bool = False) -> dict:
    """One tool call `{"id"?, "type": "function", "function": {name, arguments}}` from an OpenAI
    call, a bare `{name, arguments}` or `{name, parameters}`, or JSON text of either."""
    fn = loads(fn, field)
    if not isinstance(fn, dict):
        raise ConvertError(field, "a tool call is an object with a function name")
    out: dict[str, Any] = {}
    if isinstance(fn.get("id"), str):
        out["id"] = fn["id"]
    inner = fn.get("function", fn)
    if not isinstance(inner, dict) or not isinstance(inner.get("name"), str):
        raise ConvertError(field, "a tool call needs a function name")
    args = inner.get("arguments", inner.get("parameters", {}))
    out["type"] = "function"
    out["function"] = {
        "name": inner["name"],
        "arguments": arguments(args, f"{field}.arguments", notes, string_expected=string_expected),
    }
    return out


# `{"name": "x", "arguments": '{"a": 1}'}`: glaive's calls, the arguments quoted as a Python string.
_QUOTED_ARGS = re.compile(
    r'^\{\s*"name"\s*:\s*"([^"]+)"\s*,\s*"arguments"\s*:\s*\'(.*)\'\s*\}$', re.S
)
QUOTED = "arguments were a quoted JSON string (glaive); decoded to an object"


def call_text(value: str, field: str, notes: Notes) -> Any:
    """A call written as text: JSON, glaive's quoted arguments, or a Python literal."""
    quoted = _QUOTED_ARGS.match(value.strip())
    if quoted:
        notes.change(QUOTED)
        return {"name": quoted.group(1), "arguments": loads(quoted.group(2), f"{field}.arguments")}
    return lenient(value, field)


def calls(value: Any, field: str, notes: Notes) -> list[dict]:
    """A function-call turn's value: one call, or a list of parallel calls."""
    if isinstance(value, str):
        value = call_text(value, field, notes)
    if isinstance(value, list):
        if not value:
            raise ConvertError(field, "an empty list of calls")
        return [call(c, f"{field}[{j}]", notes) for j, c in enumerate(value)]
    return [call(value, field, notes)]


def tools(value: Any, field: str) -> list[dict]:
    """Tool schemas as OpenAI's `{"type": "function", "function": {...}}`, from a list (or JSON
    text of one) of either that or bare `{name, description, parameters}` schemas."""
    found = loads(value, field) or []
    if isinstance(found, dict):
        found = [found]
    if not isinstance(found, list):
        raise ConvertError(field, "must be a list of tool schemas")
    return [
        t if isinstance(t, dict) and "function" in t else {"type": "function", "function": t}
        for t in found
    ]
