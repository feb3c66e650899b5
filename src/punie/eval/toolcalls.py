"""Scoring tool calls by structure: each call checked against its tool's schema and matched to an
expected call.

A response's calls are parsed from OpenAI `tool_calls` or from `<tool_call>{json}</tool_call>`
blocks in its text (`punie.chat.toolcalls`; a final block with no closing tag counts when its text
is complete JSON, as mlx_lm.server reads it). They pass when they match the expected calls: the
same function names, every required parameter present, no parameter the schema lacks, every
value of the schema's JSON type and within its enum, each expected argument among its accepted
values, the right number of calls, and the order too when the case says `order: strict`.

What follows the Berkeley Function Calling Leaderboard's AST checker: accepted values as lists
per argument with `""` marking an optional one; `strings: normalized` ignores case, spaces and
`,./-_*^` and reads `'` as `"` (BFCL's `standardize_string`, applied always by BFCL and here only
when asked); arrays compare element by element, in order. Where Punie differs, on purpose:
enums are checked (BFCL never checks them); an integer passes for a number at any depth (BFCL:
only at the top level); a parameter the schema has but the case does not list is allowed (BFCL
refuses it); parallel calls are paired by maximum bipartite matching, so a valid pairing is always
found (BFCL pairs greedily and can miss one). docs/eval-suites.md lists these with their reasons.

Every failure has a typed label (see `LABELS`) and a one-line reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

from punie.chat.toolcalls import Call, Malformed, parse_calls
from punie.eval.verdict import Verdict

LABELS = (
    "missing_required",
    "unexpected_param",
    "type_error",
    "value_error",
    "wrong_name",
    "wrong_count",
    "malformed",
    "unexpected_call",
    "no_call",
)


def _schemas(tools: tuple[dict, ...] | list[dict]) -> dict[str, dict]:
    out = {}
    for t in tools:
        fn = t.get("function", t)
        out[fn["name"]] = fn.get("parameters") or {"type": "object", "properties": {}}
    return out


_JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _type_error(value: Any, schema: dict, where: str) -> str | None:
    """Why `value` is not of the schema's JSON type (arrays and objects checked inside), or None."""
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        if not any(_JSON_TYPES.get(t, lambda v: True)(value) for t in types):
            return f"{where}: {json.dumps(value)} is not {'/'.join(types)}"
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            if why := _type_error(item, schema["items"], f"{where}[{i}]"):
                return why
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        for key, item in value.items():
            if key in schema["properties"] and (
                why := _type_error(item, schema["properties"][key], f"{where}.{key}")
            ):
                return why
    return None


STRINGS = ("exact", "normalized")
_BFCL_NOISE = re.compile(r"[ ,./\-_*^]")


def normalize_string(text: str) -> str:
    """BFCL's `standardize_string`: no spaces or `,./-_*^`, lower case, `'` read as `"`."""
    return _BFCL_NOISE.sub("", text).lower().replace("'", '"')


def _values_equal(got: Any, want: Any, normalized: bool = False) -> bool:
    # Numbers by value (1 == 1.0), but a bool never equals a number; strings exactly, or after
    # `normalize_string` on both sides when `normalized`, inside arrays and objects too.
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(
            _values_equal(g, w, normalized) for g, w in zip(got, want, strict=True)
        )
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(
            _values_equal(got[k], want[k], normalized) for k in got
        )
    if normalized and isinstance(got, str) and isinstance(want, str):
        return normalize_string(got) == normalize_string(want)
    both_numbers = isinstance(got, int | float) and isinstance(want, int | float)
    return (both_numbers or type(got) is type(want)) and got == want


def check_call(call: Call, schemas: dict[str, dict]) -> Verdict:
    """Check one call against its tool's schema alone."""
    if call.name not in schemas:
        return Verdict(False, "wrong_name", f"{call.name!r} is not one of the suite's tools")
    schema = schemas[call.name]
    props = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in call.arguments:
            return Verdict(False, "missing_required", f"{call.name}: {name!r} is required")
    for name, value in call.arguments.items():
        if name not in props:
            return Verdict(False, "unexpected_param", f"{call.name}: no parameter {name!r}")
        if why := _type_error(value, props[name], f"{call.name}.{name}"):
            return Verdict(False, "type_error", why)
        enum = props[name].get("enum")
        if enum is not None and not any(_values_equal(value, e) for e in enum):
            return Verdict(
                False, "value_error", f"{call.name}.{name}: {json.dumps(value)} not in enum"
            )
    return Verdict(True)


def match_call(call: Call, expected: dict, strings: str = "exact") -> Verdict:
    """Does `call` give the expected function with accepted values for every expected argument?

    `strings` is how strings compare unless the expected call's own `strings` mapping names the
    argument (`{city: normalized}`)."""
    if call.name != expected["name"]:
        return Verdict(False, "wrong_name", f"called {call.name!r}, expected {expected['name']!r}")
    per_argument = expected.get("strings") or {}
    for name, accepted in (expected.get("arguments") or {}).items():
        accepted = accepted if isinstance(accepted, list) else [accepted]
        if name not in call.arguments:
            if "" in accepted:  # BFCL's convention: "" among the values marks it optional
                continue
            return Verdict(False, "missing_required", f"{call.name}: {name!r} missing")
        got = call.arguments[name]
        normalized = per_argument.get(name, strings) == "normalized"
        if not any(_values_equal(got, a, normalized) for a in accepted):
            shown = ", ".join(json.dumps(a) for a in accepted)
            how = " (normalized)" if normalized and isinstance(got, str) else ""
            return Verdict(
                False,
                "value_error",
                f"{call.name}.{name}: {json.dumps(got)} not in [{shown}]{how}",
            )
    return Verdict(True)


def score_tool_calls(
    content: str | None,
    tool_calls: list[dict] | None,
    expect: dict,
    tools: tuple[dict, ...] | list[dict],
    finish_reason: str | None = None,
    strings: str = "exact",
) -> Verdict:
    """Score one response against a case's `expect` block.

    `strings` is the suite's rule for comparing strings; the case's `expect.strings` overrides it,
    and an expected call's `strings` mapping overrides both for the arguments it names."""
    try:
        calls = parse_calls(content, tool_calls)
    except Malformed as e:
        return Verdict(False, "malformed", str(e))
    if not calls and finish_reason == "tool_calls":
        # mlx_lm.server drops a <tool_call> block it cannot parse but still reports the call.
        return Verdict(False, "malformed", "the server saw a tool call it could not parse")
    expected = expect.get("calls") or []
    if expected == "any":  # any call of the tools, each valid against its schema
        if not calls:
            return Verdict(False, "no_call", "expected a call of any tool, got no tool call")
        schemas = _schemas(tools)
        return next((v for c in calls if not (v := check_call(c, schemas)).passed), Verdict(True))
    if not expected:
        if calls:
            return Verdict(False, "unexpected_call", f"expected no call, got {calls[0].name!r}")
        return Verdict(True)
    if not calls:
        return Verdict(False, "no_call", f"expected {expected[0]['name']!r}, got no tool call")
    schemas = _schemas(tools)
    for call in calls:
        verdict = check_call(call, schemas)
        if not verdict.passed:
            return verdict
    if len(calls) != len(expected):
        return Verdict(False, "wrong_count", f"{len(calls)} calls, expected {len(expected)}")
    strings = expect.get("strings", strings)
    if expect.get("order", "any") == "strict":
        for call, want in zip(calls, expected, strict=True):
            verdict = match_call(call, want, strings)
            if not verdict.passed:
                return verdict
        return Verdict(True)
    return _match_any_order(calls, expected, strings)


def _match_any_order(calls: list[Call], expected: list[dict], strings: str) -> Verdict:
    """Pair every expected call with a distinct call that matches it, if any pairing does.

    A maximum bipartite matching (augmenting paths, Kuhn's algorithm) over the table of which call
    matches which expected call: n² checks and at most n³ steps, where trying permutations took
    n! (10 calls with the last one wrong: 12-19 s). When no full pairing exists, the reason is
    the first expected call left unpaired, checked against an unpaired call (one of its name, if
    any)."""
    verdicts = [[match_call(c, want, strings) for c in calls] for want in expected]
    fits = [[j for j, v in enumerate(row) if v.passed] for row in verdicts]
    paired_with: dict[int, int] = {}  # call index -> expected index

    def augment(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in paired_with or augment(paired_with[j], seen):
                paired_with[j] = i
                return True
        return False

    unpaired = [i for i in range(len(expected)) if not augment(i, set())]
    if not unpaired:
        return Verdict(True)
    i = unpaired[0]
    free = [j for j in range(len(calls)) if j not in paired_with]  # as many as `unpaired`
    same_name = [j for j in free if calls[j].name == expected[i]["name"]]
    return verdicts[i][(same_name or free)[0]]
