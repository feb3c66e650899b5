"""`--constrain tools`: constrained decoding, so a tool call always parses and fits its schema.

The grammar is checked against the tiny model's own chat template (what it renders for a call is
what the grammar accepts), and the backend is run for real: the tiny BASE model, random weights,
sampled at temperature 1.0, must still answer 200 times with valid calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cli_support import run_main
from punie.chat.template import ChatTemplate
from punie.chat.toolcalls import parse_calls
from punie.errors import ConstraintError, ServerError
from punie.eval.toolcalls import check_call
from punie.serve.constrain import Constraint, GrammarProcessor, check, grammar, tool_format
from punie.serve.server import Server

# Bounded values (maxLength, enum, integer range): a random model at temperature 1.0 rarely
# closes an unbounded string, and a reply cut by max_tokens is cut whatever the grammar says.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "maxLength": 12}},
                "required": ["path"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {
                    "limit": {"type": "integer", "minimum": 1, "maximum": 50},
                    "kind": {"enum": ["code", "docs"]},
                    "exact": {"type": "boolean"},
                },
                "required": ["limit", "kind"],
                "additionalProperties": False,
            },
        },
    },
]
MESSAGES = [{"role": "user", "content": "Show me a.py"}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


# --- what a request asks for --------------------------------------------------------------


def test_tool_choice_modes_become_constraints():
    assert Constraint.from_request({"tools": TOOLS}).calls == "auto"
    assert Constraint.from_request({"tools": TOOLS, "tool_choice": "required"}).calls == "required"
    named = Constraint.from_request(
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "search"}}}
    )
    assert (named.calls, [n for n, _ in named.tools]) == ("one", ["search"])
    assert not Constraint.from_request({"tools": TOOLS, "tool_choice": "none"}).active
    assert not Constraint.from_request({"messages": MESSAGES}).active
    fmt = Constraint.from_request({"response_format": {"type": "json_object"}})
    assert (fmt.calls, json.loads(fmt.text_schema)) == ("none", {"type": "object"})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice: no tool named 'nope'",
        ),
        ({"tool_choice": "required"}, "tool_choice: 'required' needs at least one tool"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"response_format": {"type": "yaml"}}, "response_format.type: 'yaml'"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.schema"),
    ],
)
def test_bad_requests_are_refused_in_one_line_naming_the_field(body, field):
    with pytest.raises(ConstraintError) as e:
        check(Constraint.from_request(body))
    assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_a_schema_the_engine_cannot_compile_is_refused():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "wizard"}}}]
    with pytest.raises(ConstraintError, match=r"^tools\[f\]\.parameters: "):
        check(Constraint.from_request({"tools": tools, "tool_choice": "required"}))


def test_the_managed_server_starts_the_backend_only_when_constrained(tiny_model):
    plain = Server(tiny_model).command()
    constrained = Server(tiny_model, constrain="tools").command()
    assert plain[1:4] == ["-m", "mlx_lm", "server"] and "--constrain" not in plain
    assert constrained[1:3] == ["-m", "punie.serve.backend"]
    assert constrained[-2:] == ["--constrain", "tools"]
    with pytest.raises(ServerError, match="constrain: 'json' is not one of tools"):
        Server(tiny_model, constrain="json")


# --- the grammar against the model's own template ------------------------------------------


def _assistant_tokens(template: ChatTemplate, calls: list[dict]) -> list[int]:
    """The tokens the chat template writes for an assistant turn with these calls, without the
    end-of-turn marker."""
    turn = {"role": "assistant", "content": "", "tool_calls": calls}
    before = template.tokens(MESSAGES, TOOLS, add_generation_prompt=True)
    full = template.tokens([*MESSAGES, turn], TOOLS)
    end = full.index(template.tokenizer.eos_token_id, len(before))
    return full[len(before) : end]


def _processor(template: ChatTemplate, body: dict) -> GrammarProcessor:
    c = Constraint.from_request(body)
    return GrammarProcessor(grammar(c, tool_format(template.tokenizer)), template.tokenizer)


def _fn(name: str, arguments: dict) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def test_the_grammar_accepts_the_calls_the_chat_template_writes(tiny_model):
    template = ChatTemplate(tiny_model)
    calls = [_fn("read_file", {"path": "a.py"}), _fn("search", {"limit": 3, "kind": "docs"})]
    proc = _processor(template, {"tools": TOOLS, "tool_choice": "required"})
    for token in _assistant_tokens(template, calls):
        assert proc.allowed(1024)[token], template.tokenizer.decode([token])
        assert proc.consume(token)
    assert proc.accepting
    assert proc.allowed(1024)[template.tokenizer.eos_token_id]


@pytest.mark.parametrize(
    ("call", "choice"),
    [
        (_fn("delete_all", {}), "required"),  # not one of the tools
        (_fn("search", {"limit": "3", "kind": "docs"}), "required"),  # wrong type
        (_fn("search", {"limit": 3, "kind": "pdf"}), "required"),  # not in the enum
        (_fn("read_file", {"path": "a.py", "mode": "w"}), "required"),  # unknown parameter
        (_fn("read_file", {"path": "a.py"}), {"type": "function", "function": {"name": "search"}}),
    ],
)
def test_the_grammar_refuses_calls_outside_the_schemas(tiny_model, call, choice):
    template = ChatTemplate(tiny_model)
    proc = _processor(template, {"tools": TOOLS, "tool_choice": choice})
    assert not all(proc.consume(t) for t in _assistant_tokens(template, [call]))


def test_auto_allows_plain_text_and_required_does_not(tiny_model):
    template = ChatTemplate(tiny_model)
    text = template.tokenizer.encode("No tool needed.", add_special_tokens=False)
    auto = _processor(template, {"tools": TOOLS})
    assert all(auto.consume(t) for t in text) and auto.accepting
    required = _processor(template, {"tools": TOOLS, "tool_choice": "required"})
    assert not all(required.consume(t) for t in text)


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("No tool needed.", True),
        ('Sure.\n[CALL]\n{"name": "read_file", "arguments": {"path": "a.py"}}\n[/CALL]', True),
        ('[CALL]\n{"name": "search", "arguments": {"limit": 3, "kind": "code"}}\n[/CALL]', True),
        ("Sure. [CALL] and then anything", False),
        ('[CALL]\n{"name": "nope", "arguments": {}}\n[/CALL]', False),
    ],
)
def test_a_plain_text_call_marker_opens_a_checked_call(tiny_model, text, allowed):
    """For templates whose marker is text, not one special token, free text stops at it."""
    from punie.serve.constrain import ToolFormat, ll_tokenizer

    tokenizer = ChatTemplate(tiny_model).tokenizer
    g = grammar(Constraint.from_request({"tools": TOOLS}), ToolFormat("[CALL]", "[/CALL]"))
    proc = GrammarProcessor(g, tokenizer)
    tokens = ll_tokenizer(tokenizer).tokenize_str(text)
    assert (all(proc.consume(t) for t in tokens) and proc.accepting) is allowed


def test_a_json_schema_response_format_allows_only_that_json(tiny_model):
    template = ChatTemplate(tiny_model)
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "maximum": 9}},
        "required": ["ok", "n"],
        "additionalProperties": False,
    }
    body = {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}

    def accepts(text: str) -> bool:
        proc = _processor(template, body)
        tokens = template.tokenizer.encode(text, add_special_tokens=False)
        return all(proc.consume(t) for t in tokens) and proc.accepting

    assert accepts('{"ok": true, "n": 2}')
    assert not accepts('{"ok": 1, "n": 2}')
    assert not accepts('{"ok": true, "n": 12}')
    assert not accepts("Sure, here it is.")


# --- sampled for real -------------------------------------------------------------------


def _valid_calls(content: str | None, tool_calls: list[dict] | None = None) -> list:
    calls = parse_calls(content, tool_calls)
    assert calls, content
    for call in calls:
        assert check_call(call, SCHEMAS).passed, call
        if call.name == "read_file":
            assert len(call.arguments["path"]) <= 12
        else:
            assert 1 <= call.arguments["limit"] <= 50
    return calls


@pytest.mark.slow
def test_200_samples_at_temperature_one_are_all_valid_calls(tiny_model):
    """The random base model, sampled at 1.0 in one batch through the backend's processor."""
    request = {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required"}
    helper = Path(__file__).with_name("constrained_samples.py")
    out = subprocess.run(
        [sys.executable, str(helper), str(tiny_model), "200", json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    replies = json.loads(out.stdout)
    assert len(replies) == 200
    assert {r["finish_reason"] for r in replies} == {"stop"}  # ended by the grammar, not cut
    calls = [_valid_calls(r["text"]) for r in replies]
    assert len({json.dumps([c.__dict__ for c in cs]) for cs in calls}) > 100  # really sampled


@pytest.mark.slow
def test_the_backend_constrains_tool_requests_and_serves_others_as_mlx_lm(
    tiny_model, parrot_adapter, tmp_path
):
    def ask(body: dict) -> httpx.Response:
        body = {"model": str(tiny_model), "messages": MESSAGES, **body}
        return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)

    def sample(_: int) -> dict:
        r = ask({"tools": TOOLS, "tool_choice": "required", "temperature": 1.0})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]

    search = {"type": "function", "function": {"name": "search"}}
    with Server(tiny_model, log=tmp_path / "server.log", constrain="tools") as server:
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(sample, range(16)))
        named = ask({"tools": TOOLS, "tool_choice": search, "temperature": 1.0}).json()
        refused = ask({"tools": TOOLS, "tool_choice": {**search, "function": {"name": "nope"}}})
        # No tools: mlx_lm.server's own answer (the parrot's call, parsed by mlx_lm).
        plain = ask({"adapters": str(parrot_adapter), "temperature": 0.0, "max_tokens": 40})

    for reply in replies:
        assert reply["finish_reason"] == "tool_calls", reply
        _valid_calls(reply["message"].get("content"), reply["message"]["tool_calls"])
    assert [c.name for c in _valid_calls(None, named["choices"][0]["message"]["tool_calls"])] == [
        "search"
    ]
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "tool_choice"
    call = plain.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    assert (call["name"], call["arguments"]) == ("read_file", '{"path": "a.py"}')


def test_eval_refuses_constrain_with_a_base_url(tmp_path, capsys):
    code, _, err = run_main(
        [
            "eval",
            "run",
            "tools-basic",
            "--model",
            "m",
            "--base-url",
            "http://127.0.0.1:9",
            "--constrain",
            "tools",
            "--run-dir",
            tmp_path / "run",
        ],
        capsys,
    )
    assert code == 2
    assert "--constrain: applies to the managed server only" in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()
