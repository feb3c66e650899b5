"""`punie dataset pairs`: preference rows mined from eval results (docs/datasets.md).

A results file holds every response to a case (all `samples` of it) and whether each passed;
several files of the same suite (base and adapted, or runs with different seeds) give a case
more. A case with a passing and a failing one makes one row: the prompt is the request the
eval sent (the suite's system prompt and the case's turns, with the suite's tools), chosen the
first passing response and rejected the first failing one, in the order the files were given.
With `chosen="expected"`, a case where nothing passed takes its expected calls as chosen.

Results name their suite but do not carry its messages, so the suite is loaded again: from the
files given, else the built-in suite of that name. Rows that overlap the `against` suites are
refused as `punie dataset decontaminate` refuses them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from punie.data.checks import at_least, share
from punie.data.decontaminate import NgramIndex, Prompt
from punie.data.files import DataFile
from punie.data.output import Output, open_output
from punie.errors import EvalError
from punie.eval.runner import CaseResult, EvalResult
from punie.eval.suite import Case, Suite

CHOSEN = ("passing", "expected")
MAX_LISTED = 10_000


@dataclass(frozen=True)
class Skipped:
    case: str  # suite/case id
    reason: str


def response_message(result: CaseResult) -> dict:
    """The assistant turn a case result holds."""
    message: dict = {"role": "assistant", "content": result.content or ""}
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    return message


def expected_message(case: Case) -> dict | None:
    """The expected calls as an assistant turn, each argument its first accepted value; None
    when the case expects no call (there is no expected text to write) or is not a tool case."""
    calls = case.expect.get("calls")
    if not calls:
        return None
    out = []
    for call in calls:
        args = {}
        for name, accepted in (call.get("arguments") or {}).items():
            values = accepted if isinstance(accepted, list) else [accepted]
            given = [v for v in values if v != ""]  # "" marks an optional argument
            if given:
                args[name] = given[0]
        out.append({"type": "function", "function": {"name": call["name"], "arguments": args}})
    return {"role": "assistant", "content": "", "tool_calls": out}


def each_sample(result: CaseResult) -> list[CaseResult]:
    """A case result per sample (one when the eval took one sample), in sample order."""
    if not result.samples:
        return [result]
    return [
        replace(
            result,
            content=s.get("content") or "",
            tool_calls=s.get("tool_calls"),
            passed=s["passed"],
            label=s.get("label"),
            samples=[],
        )
        for s in result.samples
    ]


def case_pairs(
    results: Sequence[EvalResult], suites: dict[str, Suite], chosen: str = "passing"
) -> tuple[list[dict], list[Skipped]]:
    """One preference row per case that has a passing and a failing response (or, with
    `chosen="expected"`, a failing one and expected calls), and the cases skipped, with why."""
    if chosen not in CHOSEN:
        raise EvalError(f"--chosen: {chosen!r} is not one of {', '.join(CHOSEN)}")
    answers: dict[tuple[str, str], list[CaseResult]] = {}
    for result in results:
        for c in result.cases:
            answers.setdefault((result.suite, str(c.id)), []).extend(each_sample(c))
    rows, skipped = [], []
    for (name, case_id), got in answers.items():
        where = f"{name}/{case_id}"
        suite = suites[name]
        case = next((c for c in suite.cases if c.id == case_id), None)
        if case is None:
            skipped.append(Skipped(where, f"not a case of the suite ({suite.path})"))
            continue
        passing = [c for c in got if c.passed]
        failing = [c for c in got if not c.passed]
        if not failing:
            skipped.append(Skipped(where, f"no failing response (of {len(got)})"))
            continue
        if passing:
            good = response_message(passing[0])
        elif chosen == "expected":
            good = expected_message(case)
            if good is None:
                skipped.append(Skipped(where, "nothing passed and no expected calls to write"))
                continue
        else:
            skipped.append(Skipped(where, f"no passing response (of {len(got)})"))
            continue
        row = {
            "prompt": suite.messages_for(case),
            "chosen": [good],
            "rejected": [response_message(failing[0])],
            "id": where,
        }
        if suite.tools_for(case):
            row["tools"] = list(suite.tools_for(case))
        rows.append(row)
    return rows, skipped


def suites_for(results: Sequence[EvalResult], paths: Sequence[Path], given: Iterable[Suite]):
    """Each results file's suite, by name: one of `given`, else the built-in of that name."""
    by_name = {s.name: s for s in given}
    for path, result in zip(paths, results, strict=True):
        if result.suite in by_name:
            continue
        try:
            by_name[result.suite] = Suite.load(result.suite)
        except EvalError:
            raise EvalError(
                f"{path}: suite {result.suite!r} is neither given (--suite FILE) nor built in"
            ) from None
    return by_name


def write_pairs(
    results: Sequence[Path | str],
    out: Path | str,
    *,
    suites: Sequence[Path | str] = (),
    chosen: str = "passing",
    against: Sequence[Prompt] = (),
    n: int = 8,
    threshold: float = 0.5,
) -> Output:
    """Mine `results` into preference rows at `out` (.jsonl), with a manifest that counts the
    pairs and lists every case skipped and every row refused for overlapping `against`."""
    at_least("--n", n, 1)
    share("--threshold", threshold)
    if not results:
        raise EvalError("give at least one results file")
    paths = [Path(p) for p in results]
    read = [EvalResult.read(p) for p in paths]
    by_name = suites_for(read, paths, [Suite.load(s) for s in suites])
    rows, skipped = case_pairs(read, by_name, chosen)
    index = NgramIndex(list(against), n)
    with open_output(out, None, inputs=[DataFile(p, "") for p in paths]) as o:
        refused = []
        for row in rows:
            hit = index.contaminated(row, threshold) if against else None
            if hit is not None:
                pid, overlap = hit
                refused.append({"case": row["id"], "prompt": pid, "overlap": round(overlap, 3)})
                continue
            o.sink.write_row(row)
        reasons = Counter(s.reason.split(" (")[0] for s in skipped)
        o.counts.update(
            {
                "pairs": o.sink.rows,
                "cases": len(rows) + len(skipped),
                "skipped": [{"case": s.case, "reason": s.reason} for s in skipped][:MAX_LISTED],
                "skipped_by_reason": dict(sorted(reasons.items())),
                "contaminated": refused[:MAX_LISTED],
                "removed": {"contaminated": len(refused)} if refused else {},
            }
        )
    return o
