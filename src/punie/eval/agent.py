"""Scoring an agent's episode: the calls it made, the state it left, the answer it gave.

A case's `expect` holds any of three checks, and passes when all hold:

- `calls`: each expected call appears among the episode's calls, matched as in `tool_calling`
  (the tool's schema, then the accepted values, strings compared as the suite's `strings`
  says). `order: any` (default) pairs expected calls with distinct calls in any order (a
  bipartite matching, so a greedy pairing never misses a valid one; other calls are allowed, so
  tool_calling's matcher, which pairs equal counts, is not reused); `subsequence` wants them
  in that order with others between allowed; `strict` wants exactly these calls in this order.
  `calls: []` means: call no tool.
- `state`: a mapping the environment's final state must contain (nested mappings are compared
  key by key, so unnamed keys are free; other values must be equal).
- `answer`: the final reply's text, scored with a reasoning scorer (`scorer`, the suite's default
  for agents being `contains`) on the whole text.

An episode that never answered without a call is `max_turns`. A failed check whose episode also
met a tool error is `tool_error` (the error is the likelier cause; the reason names both), else
the first failed check labels it: `missing_call`, `wrong_state`, `wrong_answer`.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from punie.chat.toolcalls import Call
from punie.eval.environment import Environment
from punie.eval.reasoning import SCORERS
from punie.eval.toolcalls import check_call, match_call
from punie.eval.verdict import Verdict

LABELS = ("max_turns", "tool_error", "missing_call", "wrong_state", "wrong_answer")
ORDERS = ("any", "strict", "subsequence")
_EXPECT_KEYS = ("calls", "order", "state", "answer", "scorer", "tolerance")


def load_environment(spec: Any, source: str, tool_names: set[str], bad) -> Environment:
    """`file.py:ClassName`, the file relative to the suite's folder, checked without running it."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise bad("environment", f"{spec!r} is not 'file.py:ClassName'")
    file, name = spec.split(":")
    path = (Path(source).parent / file).resolve()
    if not path.is_file():
        raise bad("environment", f"{path}: no such file")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, ValueError) as e:
        raise bad("environment", f"{path}: not valid Python ({e})") from None
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    if not found:
        raise bad("environment", f"{path}: no class {name!r} at its top level")
    cls = found[0]
    if not cls.bases:  # with a base class, methods may be inherited: the run will tell
        methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
        for tool in sorted(tool_names | {"state"}):
            if tool not in methods:
                raise bad("environment", f"{name} in {path.name} has no method {tool!r}")
    return Environment(str(path), name)


def check_agent_case(case: dict, tool_names: set[str], has_environment: bool, bad) -> None:
    """Check an agent case's expect, mocks and state when the suite loads."""
    expect = case["expect"]
    unknown = sorted(set(expect) - set(_EXPECT_KEYS))
    if unknown:
        raise bad(f"expect.{unknown[0]}", f"unknown (allowed: {', '.join(_EXPECT_KEYS)})")
    if not {"calls", "state", "answer"} & set(expect):
        raise bad("expect", "give at least one of calls, state, answer")
    if "calls" in expect:
        _check_calls(expect["calls"], tool_names, "expect.calls", bad)
    if expect.get("order", "any") not in ORDERS:
        raise bad("expect.order", f"{expect['order']!r} is not one of {', '.join(ORDERS)}")
    if "state" in expect:
        if not isinstance(expect["state"], dict):
            raise bad("expect.state", "must be a mapping the final state contains")
        if not has_environment:
            raise bad("expect.state", "needs the suite's environment (mocks keep no state)")
    if "answer" in expect:
        scorer = expect.get("scorer")
        if scorer is not None and scorer not in SCORERS:
            raise bad("expect.scorer", f"{scorer!r} is not one of {', '.join(SCORERS)}")
        if scorer == "regex":
            answers = expect["answer"] if isinstance(expect["answer"], list) else [expect["answer"]]
            for a in answers:
                try:
                    re.compile(str(a))
                except re.error as e:
                    raise bad("expect.answer", f"{a!r} is not a valid regex ({e})") from None
    mocks = case.get("mocks")
    if mocks is not None:
        if has_environment:
            raise bad("mocks", "the suite has an environment; give a case mocks or state, not both")
        if not isinstance(mocks, list):
            raise bad("mocks", "must be a list of {call: {name, arguments}, result}")
        for j, m in enumerate(mocks):
            if not isinstance(m, dict) or "call" not in m or "result" not in m:
                raise bad(f"mocks[{j}]", "must be a mapping with call and result")
            _check_calls([m["call"]], tool_names, f"mocks[{j}].call", bad, single=True)
    state = case.get("state")
    if state is not None:
        if not has_environment:
            raise bad("state", "needs the suite's environment: environment: 'file.py:ClassName'")
        if not isinstance(state, dict):
            raise bad("state", "must be a mapping: the environment's constructor arguments")


def _check_calls(calls: Any, tool_names: set[str], where: str, bad, single: bool = False) -> None:
    if not isinstance(calls, list):
        raise bad(where, "must be a list of calls ([] means: call no tool)")
    for j, call in enumerate(calls):
        at = where if single else f"{where}[{j}]"
        if not isinstance(call, dict) or "name" not in call:
            raise bad(f"{at}.name", "missing")
        if call["name"] not in tool_names:
            raise bad(f"{at}.name", f"{call['name']!r} is not one of the tools")
        if not isinstance(call.get("arguments", {}), dict):
            raise bad(f"{at}.arguments", "must map names to values")


def contains(state: Any, want: Any) -> bool:
    """Does `state` hold `want`? Mappings key by key (extra keys allowed), else equality."""
    if isinstance(want, dict):
        return isinstance(state, dict) and all(
            k in state and contains(state[k], v) for k, v in want.items()
        )
    return state == want


def score_episode(
    *,
    ended: bool,
    replies: int,
    calls: list[Call],
    tool_errors: list[str],
    state: dict | None,
    final_text: str,
    state_failure: str | None = None,
    expect: dict,
    tools: tuple[dict, ...],
    scorer: str,
    tolerance: float,
    strings: str = "exact",
) -> Verdict:
    """The verdict on one episode (see the module's docstring for the order of labels)."""
    if not ended:
        return Verdict(False, "max_turns", f"still calling tools after {replies} replies")
    failures: list[Verdict] = []
    if "calls" in expect:
        order = expect.get("order", "any")
        failures.append(match_calls(calls, expect["calls"], order, tools, strings))
    if "state" in expect:
        if state is None:
            why = f" ({state_failure})" if state_failure else ""
            failures.append(Verdict(False, "wrong_state", f"the final state is unknown{why}"))
        elif not contains(state, expect["state"]):
            shown = json.dumps(state, ensure_ascii=False, default=repr)[:200]
            failures.append(Verdict(False, "wrong_state", f"final state {shown}"))
    if "answer" in expect:
        failures.append(_score_answer(final_text, expect, scorer, tolerance))
    failed = [v for v in failures if not v.passed]
    if not failed:
        return Verdict(True, reason=f"{len(calls)} calls in {replies} replies")
    if tool_errors:
        return Verdict(False, "tool_error", f"{tool_errors[0][:120]}; then {failed[0].reason}")
    return failed[0]


def _score_answer(text: str, expect: dict, scorer: str, tolerance: float) -> Verdict:
    scorer = expect.get("scorer", scorer)
    accepted = expect["answer"] if isinstance(expect["answer"], list) else [expect["answer"]]
    options = {"tolerance": expect.get("tolerance", tolerance)}
    if any(SCORERS[scorer](text, a, options) for a in accepted):
        return Verdict(True)
    shown = ", ".join(repr(str(a)) for a in accepted)
    return Verdict(False, "wrong_answer", f"answered {text[:80]!r}, expected {shown} ({scorer})")


def match_calls(
    calls: list[Call],
    expected: list[dict],
    order: str,
    tools: tuple[dict, ...],
    strings: str = "exact",
) -> Verdict:
    """Did the episode make the expected calls (see the module's docstring for `order`)?"""
    if not expected:
        if calls:
            return Verdict(False, "missing_call", f"expected no call, made {len(calls)}")
        return Verdict(True)
    schemas = {t.get("function", t)["name"]: _params(t) for t in tools}
    ok = [[_fits(c, want, schemas, strings) for c in calls] for want in expected]
    if order == "strict":
        if len(calls) != len(expected) or not all(ok[i][i] for i in range(len(expected))):
            made = ", ".join(c.name for c in calls) or "none"
            return _missing(expected, calls, schemas, strings, f"made {made}, in this order")
        return Verdict(True)
    if order == "subsequence":
        at = 0
        for j in range(len(calls)):
            if at < len(expected) and ok[at][j]:
                at += 1
        if at < len(expected):
            return _missing(expected[at:], calls, schemas, strings, "after the calls before it")
        return Verdict(True)
    pairing = _max_matching(ok)
    unmatched = [want for i, want in enumerate(expected) if i not in pairing]
    if unmatched:
        return _missing(unmatched, calls, schemas, strings, "among the calls")
    return Verdict(True)


def _params(tool: dict) -> dict:
    fn = tool.get("function", tool)
    return fn.get("parameters") or {"type": "object", "properties": {}}


def _fits(call: Call, want: dict, schemas: dict, strings: str) -> bool:
    return match_call(call, want, strings).passed and check_call(call, schemas).passed


def _missing(
    expected: list[dict], calls: list[Call], schemas: dict, strings: str, where: str
) -> Verdict:
    """`missing_call`, naming the first missing call and why its nearest namesake did not do."""
    want = expected[0]
    args = json.dumps(want.get("arguments") or {}, ensure_ascii=False)
    near = [c for c in calls if c.name == want["name"]]
    why = ""
    if near:
        verdict = match_call(near[0], want, strings)
        if verdict.passed:
            verdict = check_call(near[0], schemas)
        why = f" ({verdict.reason})" if verdict.reason else ""
    return Verdict(False, "missing_call", f"no {want['name']}({args}) {where}{why}")


def _max_matching(ok: list[list[bool]]) -> dict[int, int]:
    """Kuhn's augmenting paths: expected index -> call index, as many pairs as can be."""
    owner: dict[int, int] = {}  # call -> expected

    def augment(i: int, seen: set[int]) -> bool:
        for j, fits in enumerate(ok[i]):
            if fits and j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(ok)):
        augment(i, set())
    return {i: j for j, i in owner.items()}
