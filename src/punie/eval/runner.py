"""Run a suite against a target and score every case: Suite + Target -> EvalResult."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from punie.eval.client import ChatClient, Reply, Sampling, Target
from punie.eval.stats import wilson
from punie.eval.suite import Case, Suite
from punie.eval.toolcalls import score_tool_calls
from punie.fsio import write_json


@dataclass(frozen=True)
class CaseResult:
    id: str
    category: str
    passed: bool
    label: str | None
    reason: str
    expected: dict
    content: str
    tool_calls: list[dict] | None
    latency_s: float | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class EvalResult:
    suite: str
    kind: str
    label: str  # what the report calls this model, e.g. "base" or "adapted"
    model: str
    adapter: str | None
    sampling: dict
    cases: tuple[CaseResult, ...]

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def score(self) -> float:
        return self.passed / len(self.cases) if self.cases else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.passed, len(self.cases))

    def by_category(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for c in self.cases:
            p, n = out.get(c.category, (0, 0))
            out[c.category] = (p + c.passed, n + 1)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict:
        return {**asdict(self), "score": self.score, "passed": self.passed, "total": len(self.cases)}

    def write(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> EvalResult:
        data = json.loads(Path(path).read_text())
        cases = tuple(CaseResult(**c) for c in data["cases"])
        fields = {k: data[k] for k in ("suite", "kind", "label", "model", "adapter", "sampling")}
        return cls(**fields, cases=cases)


def score_reply(suite: Suite, case: Case, content: str, tool_calls: list[dict] | None):
    if suite.kind != "tool_calling":
        raise NotImplementedError(f"{suite.kind} suites are scored by punie.eval.scorers")
    return score_tool_calls(content, tool_calls, case.expect, suite.tools)


def case_result(suite: Suite, case: Case, reply: Reply) -> CaseResult:
    verdict = score_reply(suite, case, reply.content, reply.tool_calls)
    return CaseResult(
        id=case.id,
        category=case.category,
        passed=verdict.passed,
        label=verdict.label,
        reason=verdict.reason,
        expected=case.expect,
        content=reply.content,
        tool_calls=reply.tool_calls,
        latency_s=round(reply.latency_s, 4),
        completion_tokens=reply.completion_tokens,
    )


async def _run(suite: Suite, target: Target, sampling: Sampling, concurrency: int, on_case):
    async with ChatClient(target, concurrency=concurrency) as client:

        async def one(case: Case) -> CaseResult:
            reply = await client.chat(suite.messages_for(case), suite.tools, sampling)
            result = case_result(suite, case, reply)
            if on_case:
                on_case(result)
            return result

        return await asyncio.gather(*(one(c) for c in suite.cases))


def run_suite(
    suite: Suite,
    target: Target,
    *,
    label: str,
    sampling: Sampling = Sampling(),
    concurrency: int = 4,
    on_case=None,
) -> EvalResult:
    """Ask `target` every case of `suite` (at most `concurrency` at once) and score the answers."""
    results = asyncio.run(_run(suite, target, sampling, concurrency, on_case))
    return EvalResult(
        suite=suite.name,
        kind=suite.kind,
        label=label,
        model=target.model,
        adapter=target.adapter,
        sampling=sampling.as_dict(),
        cases=tuple(results),
    )
