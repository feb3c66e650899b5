"""Rewards from the eval scorers: a completion is scored as `punie eval` would score it.

The task term is the suite kind's own verdict (`punie.eval.scoring.score`): 1 for pass, 0 for
fail. With `reward = "partial"` a tool-calling case earns the fraction of its expected calls
that some call of the completion matches (schema-valid, accepted values), over the larger of
the expected and the made call counts, so an extra call costs too; a code case earns the
fraction of its tests that passed (the scorer's `coverage`, for suites with a list of tests);
reasoning has no partial credit. Code runs only in the sandbox, through the code scorer.

The format term is separate (`format_reward`, reported apart): it pays for a well-formed answer
whatever its content: for tool calling, every `<tool_call>` block parses and names a known tool
(an answer with no call is well-formed when the case expects none); for code, a fenced block in
the suite's language; for reasoning, an answer the suite's `answer_pattern` finds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from punie.chat.toolcalls import Malformed, parse_calls
from punie.eval.code import _fence
from punie.eval.scoring import score
from punie.eval.suite import Case, Suite
from punie.eval.toolcalls import _schemas, check_call, match_call
from punie.eval.verdict import Response


@dataclass(frozen=True)
class Reward:
    task: float
    format: float
    label: str | None  # the scorer's failure label, None when it passed

    @property
    def total(self) -> float:
        return self.task + self.format


def partial_tool_credit(suite: Suite, case: Case, text: str) -> float:
    """The fraction of expected calls matched by a schema-valid call of `text`."""
    try:
        calls = parse_calls(text, None)
    except Malformed:
        return 0.0
    expected = case.expect.get("calls") or []
    if not expected:
        return 0.0 if calls else 1.0
    schemas = _schemas(suite.tools_for(case))
    valid = [c for c in calls if check_call(c, schemas).passed]
    fits = [
        [j for j, c in enumerate(valid) if match_call(c, want, suite.strings).passed]
        for want in expected
    ]
    matched = _max_pairing(fits)
    return matched / max(len(expected), len(calls))


def _max_pairing(fits: list[list[int]]) -> int:
    """How many expected calls can each get a distinct matching call (`fits[i]`: the calls that
    match expected call i): a maximum bipartite matching, as the scorer pairs calls."""
    paired_with: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j not in seen:
                seen.add(j)
                if j not in paired_with or augment(paired_with[j], seen):
                    paired_with[j] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(fits)))


def well_formed(suite: Suite, case: Case, text: str) -> bool:
    if suite.kind == "tool_calling":
        try:
            calls = parse_calls(text, None)
        except Malformed:
            return False
        names = set(_schemas(suite.tools_for(case)))
        expects_calls = bool(case.expect.get("calls"))
        return all(c.name in names for c in calls) and bool(calls) == expects_calls
    if suite.kind == "code":
        return bool(_fence(suite.language).search(text or ""))
    return re.search(suite.answer_pattern, text or "") is not None


def reward(suite: Suite, case: Case, text: str, *, mode: str, format_weight: float) -> Reward:
    verdict = score(suite, case, Response(id=case.id, content=text))
    task = 1.0 if verdict.passed else 0.0
    if not verdict.passed and mode == "partial":
        if suite.kind == "tool_calling":
            task = partial_tool_credit(suite, case, text)
        elif verdict.coverage is not None:
            task = float(verdict.coverage)
    fmt = format_weight if format_weight and well_formed(suite, case, text) else 0.0
    return Reward(task, fmt, verdict.label)
