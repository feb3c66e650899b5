"""One entry point for scoring, whatever the suite's kind: (suite, case, response) -> Verdict.

Each kind registers a scorer in `SCORERS`; nothing else branches on the kind. `score_file` is
`punie eval score`: recorded responses (JSONL) scored with no model at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from punie.errors import EvalError
from punie.eval.code import score_code
from punie.eval.reasoning import score_answer
from punie.eval.stats import pass_at_k
from punie.eval.suite import Case, Suite
from punie.eval.toolcalls import score_tool_calls
from punie.eval.verdict import Response, Verdict
from punie.fsio import read_jsonl

Scorer = Callable[[Suite, Case, Response], Verdict]


def _tool_calling(suite: Suite, case: Case, r: Response) -> Verdict:
    return score_tool_calls(
        r.content,
        r.tool_calls,
        case.expect,
        suite.tools_for(case),
        r.finish_reason,
        strings=suite.strings,
    )


def _reasoning(suite: Suite, case: Case, r: Response) -> Verdict:
    return score_answer(
        r.content,
        case.expect,
        scorer=case.expect.get("scorer", suite.scorer),
        pattern=suite.answer_pattern,
        options={"tolerance": case.expect.get("tolerance", suite.tolerance)},
    )


def _code(suite: Suite, case: Case, r: Response) -> Verdict:
    return score_code(
        r.content, case.expect, suite.limits, language=suite.language, runner=suite.runner
    )


SCORERS: dict[str, Scorer] = {"tool_calling": _tool_calling, "reasoning": _reasoning, "code": _code}


def score(suite: Suite, case: Case, response: Response) -> Verdict:
    return SCORERS[suite.kind](suite, case, response)


@dataclass(frozen=True)
class ScoredCase:
    id: str
    category: str
    passed: bool  # the first sample's verdict: one honest draw per case
    label: str | None
    reason: str
    verdicts: tuple[Verdict, ...]  # one per sample

    @property
    def coverage(self) -> float | None:
        """Code: the fraction of the first sample's tests passed (None for other kinds)."""
        return self.verdicts[0].coverage

    @property
    def correct(self) -> int:
        return sum(v.passed for v in self.verdicts)


def mean_pass_at_k(counts: list[tuple[int, int]], k: int) -> float:
    """pass@k over cases, from each case's (samples, correct); cases with fewer than k skipped."""
    usable = [(n, c) for n, c in counts if n >= k]
    if not usable:
        return 0.0
    return sum(pass_at_k(n, c, k) for n, c in usable) / len(usable)


def score_case(suite: Suite, case: Case, responses: list[Response]) -> ScoredCase:
    verdicts = tuple(score(suite, case, r) for r in sorted(responses, key=lambda r: r.sample))
    first = verdicts[0]
    return ScoredCase(case.id, case.category, first.passed, first.label, first.reason, verdicts)


def read_responses(path: Path) -> dict[str, list[Response]]:
    """Responses JSONL by case id; a bad line fails naming its file and line."""
    out: dict[str, list[Response]] = {}
    for n, data in read_jsonl(path):
        if "id" not in data:
            raise EvalError(f"{path}:{n}: id: missing")
        if not isinstance(data.get("content", ""), str | None):
            raise EvalError(f"{path}:{n}: content: must be a string")
        if not isinstance(data.get("tool_calls") or [], list):
            raise EvalError(f"{path}:{n}: tool_calls: must be a list of OpenAI tool calls")
        r = Response.from_dict(data)
        out.setdefault(r.id, []).append(r)
    return out


def score_file(suite: Suite, responses_path: Path) -> list[ScoredCase]:
    """Score recorded responses; a case with no response fails as `no_response`."""
    if suite.kind not in SCORERS:
        raise EvalError(
            f"{suite.path}: a {suite.kind} suite is scored by running it (`punie eval`), "
            "not from recorded single responses"
        )
    responses = read_responses(responses_path)
    known = {c.id for c in suite.cases}
    stray = sorted(set(responses) - known)
    if stray:
        raise EvalError(f"{responses_path}: id {stray[0]!r} is not a case of suite {suite.name}")
    out = []
    for case in suite.cases:
        if case.id in responses:
            out.append(score_case(suite, case, responses[case.id]))
        else:
            v = Verdict(False, "no_response", "no response recorded for this case")
            out.append(ScoredCase(case.id, case.category, False, v.label, v.reason, (v,)))
    return out
