"""Where an agent's tool calls get their results: a case's mocks, or a Python class in the sandbox.

- **Mocks**: a call whose name and arguments equal a mock's `call` gets its `result`; any other
  call gets a tool error message, so the model sees what a real tool would say to a bad call.
- **Environment**: `environment: "bank.py:Bank"` names a class whose methods are the tools. Each
  case builds a fresh instance from its `state` (`Bank(**state)`) and the final state is what its
  `state()` method returns.

The environment runs in the code sandbox (punie/eval/sandbox.py) with the suite's `limits`. The
sandbox runs one program to its end and proves it did, so there is no process that lives from one
turn to the next: each turn runs one program that builds the instance from the case's state,
replays the calls of earlier turns, makes the new calls and prints their results and the state.
Replaying needs deterministic methods; a replayed call whose result differs from the first time
fails the case with a one-line error, rather than scoring a world the model never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie.chat.toolcalls import Call
from punie.errors import EvalError
from punie.eval.sandbox import Limits, run_python

_MARK = "@@punie-environment@@ "  # starts the one line of results the program prints


@dataclass(frozen=True)
class Environment:
    path: str  # the class's file, absolute
    class_name: str

    def source(self) -> str:
        return Path(self.path).read_text(encoding="utf-8")

    def __str__(self) -> str:
        return f"{Path(self.path).name}:{self.class_name}"


@dataclass(frozen=True)
class ToolResult:
    content: str  # what the model reads in the `tool` message
    error: bool = False  # the call failed: no mock for it, an unknown tool, the method raised


@dataclass(frozen=True)
class Executed:
    results: tuple[ToolResult, ...]  # one per new call
    state: dict | None = None  # the environment's state after the calls (None for mocks)
    failure: str | None = None  # why the environment's program failed, when it did


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def mock_results(calls: list[Call], mocks: tuple[dict, ...]) -> Executed:
    """The mocks' answers to `calls`: equal name and arguments (as JSON values), else an error."""
    out = []
    for call in calls:
        for mock in mocks:
            want = mock["call"]
            if want["name"] == call.name and (want.get("arguments") or {}) == call.arguments:
                out.append(ToolResult(as_text(mock.get("result"))))
                break
        else:
            shown = json.dumps(call.arguments, ensure_ascii=False)
            out.append(ToolResult(f"error: no result for {call.name}({shown})", error=True))
    return Executed(tuple(out))


def environment_program(
    env: Environment, source: str, state: dict, tools: list[str], calls: list[Call]
) -> str:
    """The sandboxed program for one turn: the class's file, then the replay of `calls`."""
    job = {
        "state": state,
        "tools": tools,
        "calls": [{"name": c.name, "arguments": c.arguments} for c in calls],
    }
    return f"""{source}


def _punie_turn(job):
    import json

    job = json.loads(job)
    env = {env.class_name}(**job["state"])
    out = []
    for call in job["calls"]:
        if call["name"] not in job["tools"]:
            out.append({{"error": "unknown tool " + repr(call["name"])}})
            continue
        try:
            result = getattr(env, call["name"])(**call["arguments"])
        except Exception as e:
            out.append({{"error": type(e).__name__ + ": " + str(e)}})
            continue
        out.append({{"result": result}})
    return json.dumps({{"results": out, "state": env.state()}}, default=repr)


print({_MARK!r} + _punie_turn({json.dumps(job)!r}))
"""


def run_environment(
    env: Environment,
    state: dict,
    tools: list[str],
    done: list[Call],
    earlier: list[ToolResult],
    new: list[Call],
    limits: Limits,
) -> Executed:
    """Make the `new` calls on a fresh instance after replaying `done` (whose results were
    `earlier`). A program that fails (the class cannot be built, a call hangs past the limits)
    answers every new call with the error, and leaves the state unknown."""
    program = environment_program(env, env.source(), state, tools, done + new)
    outcome = run_python(program, limits)
    line = next((x for x in reversed(outcome.stdout.split("\n")) if x.startswith(_MARK)), None)
    if not outcome.passed or line is None:
        why = f"environment {env} failed: {outcome.why()}"
        return Executed(tuple(ToolResult(f"error: {why}", error=True) for _ in new), None, why)
    data = json.loads(line[len(_MARK) :])
    results = [_tool_result(r) for r in data["results"]]
    for i, (was, now) in enumerate(zip(earlier, results, strict=False)):
        if was != now:
            raise EvalError(
                f"environment {env}: replaying call {i + 1} ({done[i].name}) gave "
                f"{now.content[:80]!r}, not {was.content[:80]!r} as before: its methods must be "
                "deterministic (each turn replays the case's calls on a fresh instance)"
            )
    return Executed(tuple(results[len(done) :]), data["state"])


def _tool_result(r: dict) -> ToolResult:
    if "error" in r:
        return ToolResult(f"error: {r['error']}", error=True)
    return ToolResult(as_text(r["result"]))
