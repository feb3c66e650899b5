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


# --- strings, unclosed blocks, bipartite matching, per-case tools (issue 15) ---

CITY = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def weather(city, unit=None) -> dict:
    return {"name": "weather", "arguments": {"city": [city], **({"unit": [unit]} if unit else {})}}


@pytest.mark.parametrize(
    "got, strings, passed",
    [
        ("new-york", "exact", False),
        ("New York", "normalized", True),
        ("new_york.", "normalized", True),
        ("NEWYORK", "normalized", True),
        ("Newark", "normalized", False),
    ],
)
def test_suite_strings_rule(got, strings, passed):
    expect = {"calls": [weather("New York")]}
    verdict = score_tool_calls(block("weather", {"city": got}), None, expect, CITY, strings=strings)
    assert verdict.passed == passed, verdict
    if not passed:
        assert verdict.label == "value_error"


def test_per_argument_strings_rule_overrides_the_suite():
    want = {**weather("New York", "Celsius"), "strings": {"city": "normalized"}}
    response = block("weather", {"city": "new york", "unit": "celsius"})
    verdict = score_tool_calls(response, None, {"calls": [want]}, CITY, strings="exact")
    assert (verdict.passed, verdict.label) == (False, "value_error")
    assert "unit" in verdict.reason  # the city passed normalized; the unit did not, exact
    fixed = block("weather", {"city": "new york", "unit": "Celsius"})
    assert score_tool_calls(fixed, None, {"calls": [want]}, CITY, strings="exact").passed


def test_a_case_strings_rule_overrides_the_suite():
    expect = {"calls": [weather("New York")], "strings": "normalized"}
    assert score_tool_calls(block("weather", {"city": "newyork"}), None, expect, CITY).passed


def test_normalized_strings_reach_inside_arrays():
    expect = {
        "calls": [{"name": "scale", "arguments": {"factor": [1], "tags": [["Big Red", "x"]]}}]
    }
    response = block("scale", {"factor": 1, "tags": ["big-red", "X"]})
    assert score_tool_calls(response, None, expect, TOOLS, strings="normalized").passed
    assert not score_tool_calls(response, None, expect, TOOLS).passed


def test_a_final_block_with_no_closing_tag_is_a_call_when_its_json_is_complete():
    # mlx_lm.server parses the tool text still open at the end of generation, and a server
    # stopping on </tool_call> leaves the tag out: the call is complete, so it counts.
    text = '<tool_call>{"name": "read_file", "arguments": {"path": "a.py"}}'
    assert score_tool_calls(text, None, {"calls": [read()]}, TOOLS).passed


def test_an_unclosed_block_before_another_block_is_malformed():
    text = '<tool_call>{"name": "read_file", "arguments": {"path": "a.py"}}\n' + block(
        "list_dir", {"path": "src"}
    )
    verdict = score_tool_calls(text, None, {"calls": [read()]}, TOOLS)
    assert (verdict.passed, verdict.label) == (False, "malformed")


def test_parallel_matching_finds_the_pairing_a_greedy_match_misses():
    # The first expected call accepts either path; taken greedily it grabs a.py, which the
    # second one needs. BFCL's checker pairs greedily and fails this; a maximum matching passes.
    expected = [
        {"name": "read_file", "arguments": {"path": ["a.py", "b.py"]}},
        {"name": "read_file", "arguments": {"path": ["a.py"]}},
    ]
    text = block("read_file", {"path": "a.py"}) + block("read_file", {"path": "b.py"})
    assert score_tool_calls(text, None, {"calls": expected}, TOOLS).passed


def test_an_unpaired_call_is_reported_against_the_expected_call_of_its_name():
    expected = [read("a.py"), read("b.py"), {"name": "list_dir", "arguments": {"path": ["src"]}}]
    text = "".join(
        [
            block("list_dir", {"path": "src"}),
            block("read_file", {"path": "b.py"}),
            block("read_file", {"path": "c.py"}),
        ]
    )
    verdict = score_tool_calls(text, None, {"calls": expected}, TOOLS)
    assert (verdict.passed, verdict.label) == (False, "value_error")
    assert '"c.py" not in ["a.py"]' in verdict.reason


def _twenty(last_wrong: bool) -> tuple[str, dict]:
    expected = [read(f"f{i}.py", limit=[i]) for i in range(20)]
    calls = [{"path": f"f{i}.py", "limit": i} for i in reversed(range(20))]
    if last_wrong:
        calls[-1]["limit"] = 99
    return "".join(block("read_file", c) for c in calls), {"calls": expected}


@pytest.mark.parametrize("last_wrong", [False, True])
def test_twenty_parallel_calls_score_in_milliseconds(last_wrong):
    # Trying permutations took 12-19 s for ten calls with the last one wrong; this is n² checks.
    import time

    text, expect = _twenty(last_wrong)
    start = time.perf_counter()
    verdict = score_tool_calls(text, None, expect, TOOLS)
    elapsed = time.perf_counter() - start
    assert verdict.passed == (not last_wrong), verdict
    if last_wrong:
        assert verdict.label == "value_error" and "99" in verdict.reason
    assert elapsed < 0.1 * 5  # the bound is 0.1 s; five times that for a loaded machine


def test_calls_any_passes_any_valid_call_and_fails_no_call():
    assert score_tool_calls(block("list_dir", {"path": "x"}), None, {"calls": "any"}, TOOLS).passed
    verdict = score_tool_calls("No tool for that.", None, {"calls": "any"}, TOOLS)
    assert (verdict.passed, verdict.label) == (False, "no_call")
    verdict = score_tool_calls(block("list_dir", {}), None, {"calls": "any"}, TOOLS)
    assert (verdict.passed, verdict.label) == (False, "missing_required")


def test_a_case_with_its_own_tools_is_scored_and_asked_with_them(tmp_path):
    from punie.eval.scoring import score
    from punie.eval.suite import Suite
    from punie.eval.verdict import Response

    suite = Suite.from_dict(
        {
            "name": "own-tools",
            "kind": "tool_calling",
            "tools": TOOLS,
            "cases": [
                {"id": "suite", "prompt": "read a.py", "expect": {"calls": [read()]}},
                {
                    "id": "own",
                    "prompt": "weather?",
                    "tools": CITY,
                    "expect": {"calls": [weather("Paris")]},
                },
            ],
        }
    )
    own = suite.cases[1]
    assert suite.tools_for(own) == tuple(CITY) and suite.tools_for(suite.cases[0]) == tuple(TOOLS)
    assert score(suite, own, Response("own", block("weather", {"city": "Paris"}))).passed
    # The suite's tools are not offered to a case that has its own.
    verdict = score(suite, own, Response("own", block("read_file", {"path": "a.py"})))
    assert (verdict.passed, verdict.label) == (False, "wrong_name")


def test_an_expected_call_outside_the_case_tools_fails_the_load_with_its_place():
    from punie.errors import EvalError
    from punie.eval.suite import Suite

    data = {
        "name": "own-tools",
        "kind": "tool_calling",
        "tools": TOOLS,
        "cases": [{"id": "x", "prompt": "p", "tools": CITY, "expect": {"calls": [read()]}}],
    }
    with pytest.raises(EvalError, match=r"cases\[0\]\.expect\.calls\[0\]\.name: 'read_file'"):
        Suite.from_dict(data)
    data["strings"] = "fuzzy"
    with pytest.raises(EvalError, match="strings: 'fuzzy' is not one of exact, normalized"):
        Suite.from_dict(data)
