"""The tool-call scorer against a table of tricky cases, one rule each (BFCL-style AST match)."""

from __future__ import annotations

import json

import pytest

from punie.chat.toolcalls import parse_calls
from punie.eval.toolcalls import LABELS, score_tool_calls

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "limit": {"type": "integer"},
                    "follow": {"type": "boolean"},
                },
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "scale",
            "parameters": {
                "type": "object",
                "properties": {
                    "factor": {"type": "number"},
                    "mode": {"type": "string", "enum": ["fast", "exact"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["factor"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "list_dir",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    },
]


def block(name: str, args) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>"


def read(path="a.py", **extra) -> dict:
    return {"name": "read_file", "arguments": {"path": [path], **extra}}


# (case id, response text, openai tool_calls, expect, label or None when it passes)
TABLE = [
    ("exact match", block("read_file", {"path": "a.py"}), None, {"calls": [read()]}, None),
    (
        "one of the accepted values",
        block("read_file", {"path": "./a.py"}),
        None,
        {"calls": [{"name": "read_file", "arguments": {"path": ["a.py", "./a.py"]}}]},
        None,
    ),
    (
        "strings compare exactly",
        block("read_file", {"path": "A.py"}),
        None,
        {"calls": [read()]},
        "value_error",
    ),
    (
        "an integer is not a string",
        block("read_file", {"path": 7}),
        None,
        {"calls": [read()]},
        "type_error",
    ),
    (
        "a string is not an integer",
        block("read_file", {"path": "a.py", "limit": "10"}),
        None,
        {"calls": [read(limit=[10])]},
        "type_error",
    ),
    (
        'a boolean is not "true"',
        block("read_file", {"path": "a.py", "follow": "true"}),
        None,
        {"calls": [read(follow=[True])]},
        "type_error",
    ),
    (
        "1 is not a boolean",
        block("read_file", {"path": "a.py", "follow": 1}),
        None,
        {"calls": [read(follow=[True])]},
        "type_error",
    ),
    (
        "a float is not an integer",
        block("read_file", {"path": "a.py", "limit": 10.5}),
        None,
        {"calls": [read(limit=[10])]},
        "type_error",
    ),
    (
        "an integer is a valid number",
        block("scale", {"factor": 2}),
        None,
        {"calls": [{"name": "scale", "arguments": {"factor": [2.0]}}]},
        None,
    ),
    (
        "enum respected",
        block("scale", {"factor": 2, "mode": "slow"}),
        None,
        {"calls": [{"name": "scale", "arguments": {"factor": [2]}}]},
        "value_error",
    ),
    (
        "enum value accepted",
        block("scale", {"factor": 2, "mode": "fast"}),
        None,
        {"calls": [{"name": "scale", "arguments": {"factor": [2], "mode": ["fast"]}}]},
        None,
    ),
    (
        "arrays compare element by element",
        block("scale", {"factor": 1, "tags": ["x", "y"]}),
        None,
        {"calls": [{"name": "scale", "arguments": {"factor": [1], "tags": [["x", "y"]]}}]},
        None,
    ),
    (
        "arrays in another order differ",
        block("scale", {"factor": 1, "tags": ["y", "x"]}),
        None,
        {"calls": [{"name": "scale", "arguments": {"factor": [1], "tags": [["x", "y"]]}}]},
        "value_error",
    ),
    (
        "array items are type-checked",
        block("scale", {"factor": 1, "tags": ["x", 2]}),
        None,
        {"calls": [{"name": "scale", "arguments": {"factor": [1]}}]},
        "type_error",
    ),
    (
        'an optional argument ("" accepted) may be left out',
        block("read_file", {"path": "a.py"}),
        None,
        {"calls": [read(limit=["", 10])]},
        None,
    ),
    (
        "an expected argument left out",
        block("read_file", {"path": "a.py"}),
        None,
        {"calls": [read(limit=[10])]},
        "missing_required",
    ),
    (
        "a parameter the schema does not have",
        block("read_file", {"path": "a.py", "encoding": "utf-8"}),
        None,
        {"calls": [read()]},
        "unexpected_param",
    ),
    (
        "a required parameter missing",
        block("read_file", {"limit": 3}),
        None,
        {"calls": [read()]},
        "missing_required",
    ),
    (
        "a function the suite does not have",
        block("delete_file", {"path": "a.py"}),
        None,
        {"calls": [read()]},
        "wrong_name",
    ),
    (
        "another of the suite's functions",
        block("list_dir", {"path": "a.py"}),
        None,
        {"calls": [read()]},
        "wrong_name",
    ),
    (
        "one call too many",
        block("read_file", {"path": "a.py"}) + block("read_file", {"path": "a.py"}),
        None,
        {"calls": [read()]},
        "wrong_count",
    ),
    (
        "one call too few",
        block("read_file", {"path": "a.py"}),
        None,
        {"calls": [read(), {"name": "list_dir", "arguments": {"path": ["src"]}}]},
        "wrong_count",
    ),
    (
        "parallel calls in any order",
        block("list_dir", {"path": "src"}) + block("read_file", {"path": "a.py"}),
        None,
        {"calls": [read(), {"name": "list_dir", "arguments": {"path": ["src"]}}], "order": "any"},
        None,
    ),
    (
        "strict order is checked",
        block("list_dir", {"path": "src"}) + block("read_file", {"path": "a.py"}),
        None,
        {
            "calls": [read(), {"name": "list_dir", "arguments": {"path": ["src"]}}],
            "order": "strict",
        },
        "wrong_name",
    ),
    (
        "malformed JSON in a block",
        '<tool_call>{"name": "read_file", "arguments": {"path": "a.py"</tool_call>',
        None,
        {"calls": [read()]},
        "malformed",
    ),
    (
        "a block cut off by max_tokens",
        '<tool_call>{"name": "read_file", "argu',
        None,
        {"calls": [read()]},
        "malformed",
    ),
    (
        "prose around the call is fine",
        "Sure, let me look.\n" + block("read_file", {"path": "a.py"}) + "\nDone.",
        None,
        {"calls": [read()]},
        None,
    ),
    (
        "arguments as a JSON string",
        '<tool_call>{"name": "read_file", "arguments": "{\\"path\\": \\"a.py\\"}"}</tool_call>',
        None,
        {"calls": [read()]},
        None,
    ),
    (
        "OpenAI tool_calls with string arguments",
        "",
        [{"type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}],
        {"calls": [read()]},
        None,
    ),
    (
        "OpenAI tool_calls with unparseable arguments",
        "",
        [{"type": "function", "function": {"name": "read_file", "arguments": '{"path": '}}],
        {"calls": [read()]},
        "malformed",
    ),
    (
        "calls: [] and no call",
        "You're welcome!",
        None,
        {"calls": []},
        None,
    ),
    (
        "calls: [] with a call",
        block("read_file", {"path": "a.py"}),
        None,
        {"calls": []},
        "unexpected_call",
    ),
    ("a call expected, none made", "I would read a.py.", None, {"calls": [read()]}, "no_call"),
    (
        "a tool call mentioned in prose is not a call",
        "Call read_file with path a.py",
        None,
        {"calls": [read()]},
        "no_call",
    ),
]


@pytest.mark.parametrize(
    "text, tool_calls, expect, label", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_scorer_table(text, tool_calls, expect, label):
    verdict = score_tool_calls(text, tool_calls, expect, TOOLS)
    assert verdict.passed == (label is None), verdict
    assert verdict.label == label
    if label is not None:
        assert label in LABELS
        assert verdict.reason and "\n" not in verdict.reason


def test_every_label_is_exercised_by_the_table():
    assert {row[4] for row in TABLE} - {None} == set(LABELS)


def test_a_tool_call_the_server_dropped_is_malformed():
    # mlx_lm.server drops a <tool_call> it cannot parse but still says finish_reason=tool_calls.
    verdict = score_tool_calls("", None, {"calls": []}, TOOLS, finish_reason="tool_calls")
    assert (verdict.passed, verdict.label) == (False, "malformed")


def test_tool_calls_field_takes_precedence_over_text():
    calls = [{"function": {"name": "read_file", "arguments": {"path": "b.py"}}}]
    parsed = parse_calls(block("read_file", {"path": "a.py"}), calls)
    assert [c.arguments["path"] for c in parsed] == ["b.py"]
