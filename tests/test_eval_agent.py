"""Agent suites: multi-turn episodes against a scripted OpenAI-compatible server on 127.0.0.1,
tool results from mocks or from a Python environment class run in the sandbox, every failure
label, state checks, the cache, and the transcript in the report (headless Chromium too)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cli_support import punie as run_punie
from openai_stub import by_turn, scripted_server, tool_call
from punie.chat.toolcalls import Call
from punie.errors import EvalError
from punie.eval.agent import match_calls
from punie.eval.cache import ResponseCache
from punie.eval.client import Target
from punie.eval.runner import EvalResult, run_suite
from punie.eval.suite import Suite
from punie.platform import chrome_install_hint, current, find_chrome

TOOLS = """\
tools:
  - type: function
    function:
      name: read_file
      parameters: {type: object, properties: {path: {type: string}}, required: [path]}
  - type: function
    function:
      name: deposit
      parameters:
        type: object
        properties: {account: {type: string}, amount: {type: integer}}
        required: [account, amount]
  - type: function
    function:
      name: balance
      parameters: {type: object, properties: {account: {type: string}}, required: [account]}
"""

MOCKS = (
    "name: agent-mocks\nkind: agent\nsystem: You are a careful agent.\nmax_turns: 3\n"
    + TOOLS
    + """\
cases:
  - id: pass
    prompt: how long is a.py
    mocks: [{call: {name: read_file, arguments: {path: a.py}}, result: "print(1)\\nprint(2)"}]
    expect: {calls: [{name: read_file, arguments: {path: [a.py]}}], answer: "2 lines"}
  - id: turns
    prompt: loop forever
    mocks: [{call: {name: read_file, arguments: {path: a.py}}, result: x}]
    expect: {calls: [{name: read_file, arguments: {path: [a.py]}}]}
  - id: toolerr
    prompt: read b
    mocks: [{call: {name: read_file, arguments: {path: a.py}}, result: x}]
    expect: {answer: "x"}
  - id: missing
    prompt: answer without looking
    mocks: []
    expect: {calls: [{name: read_file, arguments: {path: [a.py]}}]}
  - id: wrong
    prompt: what is in a.py
    mocks: [{call: {name: read_file, arguments: {path: a.py}}, result: "<b>hello</b>"}]
    expect: {answer: goodbye}
"""
)

SCRIPT = {
    "how long is a.py": [
        {"tool_calls": [tool_call("read_file", path="a.py")]},
        {"content": "It has 2 lines."},
    ],
    "loop forever": [{"tool_calls": [tool_call("read_file", path="a.py")]}],
    "read b": [{"tool_calls": [tool_call("read_file", path="b.py")]}, {"content": "no idea"}],
    "answer without looking": [{"content": "It is probably fine."}],
    # a call read from the text, as a server without a tool parser returns it
    "what is in a.py": [
        {"content": '<tool_call>{"name": "read_file", "arguments": {"path": "a.py"}}</tool_call>'},
        {"content": "<script>document.title='pwned'</script> it says hello"},
    ],
}


def suite_file(tmp_path, text: str, name: str = "suite.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def run(suite, url, cache=None):
    target = Target(url, model="stub")
    return run_suite(Suite.load(suite), target, label="stub", cache=cache)


def url_of(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_port}"


def test_mocks_drive_a_multi_turn_episode_and_every_label(tmp_path):
    bodies = []
    answer = by_turn(SCRIPT)
    httpd = scripted_server(lambda body: bodies.append(body) or answer(body))
    try:
        result = run(suite_file(tmp_path, MOCKS), url_of(httpd))
    finally:
        httpd.shutdown()
        httpd.server_close()
    got = {c.id: (c.passed, c.label) for c in result.cases}
    assert got == {
        "pass": (True, None),
        "turns": (False, "max_turns"),
        "toolerr": (False, "tool_error"),
        "missing": (False, "missing_call"),
        "wrong": (False, "wrong_answer"),
    }
    ok = next(c for c in result.cases if c.id == "pass")
    roles = [m["role"] for m in ok.transcript]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert ok.transcript[3]["content"] == "print(1)\nprint(2)" and not ok.transcript[3]["error"]
    # the second request carried the call and its result, linked by id
    second = next(
        b
        for b in bodies
        if b["messages"][1]["content"] == "how long is a.py" and len(b["messages"]) == 4
    )
    call_id = second["messages"][2]["tool_calls"][0]["id"]
    tool = {"role": "tool", "tool_call_id": call_id, "name": "read_file"}
    assert second["messages"][3] == {**tool, "content": "print(1)\nprint(2)"}
    turns = next(c for c in result.cases if c.id == "turns")
    assert sum(m["role"] == "assistant" for m in turns.transcript) == 3  # max_turns
    err = next(c for c in result.cases if c.id == "toolerr")
    assert 'no result for read_file({"path": "b.py"})' in err.reason
    assert [m.get("error") for m in err.transcript if m["role"] == "tool"] == [True]
    wrong = next(c for c in result.cases if c.id == "wrong")
    # the call came as text: the next request carries it as tool_calls, the block removed
    assert wrong.transcript[2]["content"] == "" and wrong.transcript[2]["tool_calls"]
    assert wrong.transcript[3]["content"] == "<b>hello</b>"


BANK = """\
class Bank:
    def __init__(self, accounts):
        self.accounts = dict(accounts)

    def deposit(self, account, amount):
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.accounts[account] = self.accounts.get(account, 0) + amount
        return {"balance": self.accounts[account]}

    def balance(self, account):
        return self.accounts[account]

    def read_file(self, path):
        return open(path).read()

    def state(self):
        return {"accounts": self.accounts}
"""

ENV_SUITE = (
    "name: agent-env\nkind: agent\nenvironment: bank.py:Bank\n"
    + TOOLS
    + """\
cases:
  - id: deposit
    prompt: put 5 in alice
    state: {accounts: {alice: 10, bob: 1}}
    expect:
      calls:
        - {name: balance, arguments: {account: alice}}
        - {name: deposit, arguments: {account: alice, amount: 5}}
      order: subsequence
      state: {accounts: {alice: 15}}
      answer: "15"
  - id: strict
    prompt: put 5 in alice now
    state: {accounts: {alice: 10}}
    expect:
      calls: [{name: deposit, arguments: {account: alice, amount: 5}}]
      order: strict
  - id: overdrawn
    prompt: deposit minus 3 in bob
    state: {accounts: {bob: 1}}
    expect: {state: {accounts: {bob: 1}}, answer: done}
  - id: no-calls
    prompt: do nothing
    state: {accounts: {carol: 7}}
    expect: {state: {accounts: {carol: 8}}}
"""
)

DEPOSIT = [
    {"tool_calls": [tool_call("balance", account="alice")]},
    {"tool_calls": [tool_call("deposit", account="alice", amount=5)]},
    {"content": "Alice now has 15."},
]
ENV_SCRIPT = {
    "put 5 in alice": DEPOSIT,
    "put 5 in alice now": DEPOSIT,
    "deposit minus 3 in bob": [
        {"tool_calls": [tool_call("deposit", account="bob", amount=-3)]},
        {"content": "I could not."},
    ],
    "do nothing": [{"content": "Nothing done."}],
}


def test_environment_class_runs_in_the_sandbox_and_its_state_is_checked(tmp_path):
    (tmp_path / "bank.py").write_text(BANK)
    answer = by_turn(ENV_SCRIPT)
    httpd = scripted_server(answer)
    try:
        cache = ResponseCache(tmp_path / "cache")
        result = run(suite_file(tmp_path, ENV_SUITE), url_of(httpd), cache)
        again = run(suite_file(tmp_path, ENV_SUITE), url_of(httpd), cache)
    finally:
        httpd.shutdown()
        httpd.server_close()
    got = {c.id: (c.passed, c.label) for c in result.cases}
    assert result.requests == 3 + 3 + 2 + 1  # every turn of every episode
    assert got == {
        "deposit": (True, None),
        "strict": (False, "missing_call"),  # a balance call came first: not exactly these calls
        "overdrawn": (False, "tool_error"),
        "no-calls": (False, "wrong_state"),
    }
    deposit = next(c for c in result.cases if c.id == "deposit")
    tools = [m["content"] for m in deposit.transcript if m["role"] == "tool"]
    assert tools == [
        "10",
        '{"balance": 15}',
    ]  # the second turn replayed the first on a new instance
    over = next(c for c in result.cases if c.id == "overdrawn")
    assert "ValueError: amount must be positive" in over.reason
    assert "carol" in next(c for c in result.cases if c.id == "no-calls").reason
    # an unchanged rerun asks nothing: the episode replays from the cache, the environment too
    assert again.requests == 0 and [c.passed for c in again.cases] == [
        c.passed for c in result.cases
    ]


def test_call_orders_any_strict_and_subsequence():
    number = {"type": "object", "properties": {"x": {"type": "integer"}}}
    tools = ({"function": {"name": "f", "parameters": number}}, {"function": {"name": "g"}})
    a, b = Call("f", {"x": 1}), Call("g", {})
    want = [{"name": "g"}, {"name": "f", "arguments": {"x": [1]}}]
    assert match_calls([a, b], want, "any", tools).passed
    assert not match_calls([a, b], want, "subsequence", tools).passed
    assert match_calls([b, a, b], want, "subsequence", tools).passed
    assert not match_calls([b, a, b], want, "strict", tools).passed
    assert match_calls([b, a], want, "strict", tools).passed
    # a pairing a greedy matcher would miss: the first call fits both expected calls
    loose = [{"name": "f"}, {"name": "f", "arguments": {"x": [1]}}]
    assert match_calls([a, Call("f", {"x": 2})], loose, "any", tools).passed
    missed = match_calls([Call("f", {"x": 2})], want[1:], "any", tools)
    assert missed.label == "missing_call" and "2 not in [1]" in missed.reason


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "  - {id: a, prompt: p, state: {x: 1}, expect: {answer: x}}\n",
            "suite.yaml:9: cases[0].state: needs the suite's environment",
        ),
        (
            "  - {id: a, prompt: p, mocks: [{call: {name: raed_file}, result: 1}],"
            " expect: {answer: x}}\n",
            "suite.yaml:9: cases[0].mocks[0].call.name: 'raed_file' is not one of the tools",
        ),
        (
            "  - {id: a, prompt: p, expect: {answer: x, order: sometimes}}\n",
            "cases[0].expect.order: 'sometimes' is not one of any, strict, subsequence",
        ),
        ("  - {id: a, prompt: p, expect: {}}\n", "give at least one of calls, state, answer"),
    ],
)
def test_bad_agent_cases_fail_on_load_with_their_place(tmp_path, body, message):
    text = (
        "name: s\nkind: agent\n"
        + TOOLS.split("  - type: function\n    function:\n      name: deposit")[0]
    )
    path = suite_file(tmp_path, text + "cases:\n" + body)
    with pytest.raises(EvalError) as e:
        Suite.load(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_environment_without_a_tools_method_fails_on_load(tmp_path):
    (tmp_path / "bank.py").write_text(BANK.replace("def balance", "def _balance"))
    path = suite_file(tmp_path, ENV_SUITE)
    with pytest.raises(EvalError, match=r"environment: Bank in bank.py has no method 'balance'"):
        Suite.load(path)


CHROMIUM = find_chrome()


@pytest.mark.skipif(CHROMIUM is None, reason=chrome_install_hint(current()))
def test_cli_writes_the_transcript_and_the_report_shows_it_collapsed(tmp_path):
    httpd = scripted_server(by_turn(SCRIPT))
    try:
        run_dir = tmp_path / "run"
        done = run_punie(
            "eval", suite_file(tmp_path, MOCKS), "--model", "stub", "--base-url", url_of(httpd),
            "--run-dir", run_dir, "--no-cache", "--json",
        )  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    saved = EvalResult.read(out["results"][0]["file"])
    raw = json.loads((run_dir / "agent-mocks.stub.json").read_text())
    assert {k: raw["cases"][0][k] for k in ("id", "passed", "label")} == {
        "id": "pass", "passed": True, "label": None
    }  # fmt: skip
    assert saved.cases[0].transcript == raw["cases"][0]["transcript"]
    report = out["report"]
    html = Path(report).read_text()
    assert "<script>document.title" not in html  # model text escaped
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    dom = subprocess.run(
        [*cmd, "--virtual-time-budget=2000", "--dump-dom", f"file://{report}"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert "<title>Punie eval: agent-mocks</title>" in dom  # no model text ran
    assert dom.count('<details class="transcript">') == 5  # one per case, none open
    assert 'data-role="tool"' in dom and "print(1)\nprint(2)" in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom


CLOCK = """\
import time


class Clock:
    def __init__(self, spin=False):
        self.spin = spin

    def now(self):
        while self.spin:
            pass
        return time.time_ns()

    def state(self):
        return {}
"""

CLOCK_SUITE = """\
name: clock
kind: agent
environment: clock.py:Clock
limits: {wall_s: 1, cpu_s: 1}
tools: [{type: function, function: {name: now, parameters: {type: object, properties: {}}}}]
cases:
  - {id: spin, prompt: spin, state: {spin: true}, expect: {state: {}}}
  - {id: bad-state, prompt: idle, state: {colour: red}, expect: {state: {}}}
"""


def test_environment_runs_under_the_sandbox_limits_and_must_replay_the_same(tmp_path):
    (tmp_path / "clock.py").write_text(CLOCK)
    now = {"tool_calls": [tool_call("now")]}
    script = {"spin": [now, {"content": "done"}], "idle": [{"content": "done"}], "tick": [now]}
    httpd = scripted_server(by_turn(script))
    try:
        result = run(suite_file(tmp_path, CLOCK_SUITE), url_of(httpd))
        # a method whose result changes between runs cannot be replayed: the run stops, saying so
        two_turns = CLOCK_SUITE.split("cases:")[0] + "cases: [{id: t, prompt: tick, expect: {}}]"
        two_turns = two_turns.replace("expect: {}", "expect: {answer: x}")
        with pytest.raises(EvalError, match="replaying call 1 \\(now\\) gave .* deterministic"):
            run(suite_file(tmp_path, two_turns, "tick.yaml"), url_of(httpd))
    finally:
        httpd.shutdown()
        httpd.server_close()
    spin, bad = result.cases
    assert spin.label == "tool_error" and "wall-time limit" in spin.reason
    assert spin.transcript[2]["role"] == "tool" and spin.transcript[2]["error"] is True
    assert bad.label == "wrong_state"
    assert "final state is unknown" in bad.reason and "unexpected keyword argument" in bad.reason
