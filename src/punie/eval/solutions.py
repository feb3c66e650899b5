"""`punie dataset from-results`: SFT rows from scored responses (rejection sampling, distillation).

The responses come from eval results files (one response per case, the first sample; the prompt is
rebuilt from the suite, as `dataset pairs` does) or from `punie generate` output (every sample,
each row carrying its request and, for a suite's cases, whether it passed). Each kept response
becomes a chat row: the request's messages, then the answer as the assistant turn. By default the
turn keeps only the final answer: `<think>` blocks go, a tool call keeps its calls without the
text around them, and a reasoning suite's answer keeps the last answer line alone;
`keep_reasoning` keeps the whole text (a teacher's chain of thought, for distillation).

Rows that repeat one of `seen` (training files) or an earlier row are dropped as duplicates (the
exact content hash of `punie dataset dedupe`); rows that overlap the `against` prompts are refused
as `punie dataset decontaminate` refuses them. The manifest counts each.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from punie.data.checks import at_least, share
from punie.data.decontaminate import NgramIndex, Prompt
from punie.data.dedupe import exact_hash
from punie.data.files import DataFile, dataset_files, records
from punie.data.output import Output, open_output
from punie.errors import EvalError
from punie.eval.pairs import MAX_LISTED, suites_for
from punie.eval.reasoning import DEFAULT_PATTERN
from punie.eval.runner import EvalResult
from punie.eval.suite import Suite
from punie.fsio import read_jsonl

_THINK = re.compile(r"<think>.*?(?:</think>|$)\s*", re.S)


@dataclass(frozen=True)
class Answer:
    """One scored (or unscored) response with the request it answered."""

    where: str  # suite/case#sample or file:line
    messages: tuple[dict, ...]
    tools: tuple[dict, ...]
    content: str
    tool_calls: list[dict] | None
    passed: bool | None  # None: nothing scored it (prompt rows)
    kind: str | None = None  # the suite's kind, for what "the final answer" is
    pattern: str = DEFAULT_PATTERN
    model: str | None = None  # who answered, where known
    id: str | None = None  # the case or prompt row answered


def final_message(answer: Answer, keep_reasoning: bool = False) -> dict:
    """The assistant turn for `answer`: the whole text with `keep_reasoning`, else the final
    answer or call alone."""
    content = answer.content or ""
    if not keep_reasoning:
        content = _THINK.sub("", content).strip()
        if answer.tool_calls:
            content = ""
        elif answer.kind == "reasoning":
            last = list(re.finditer(answer.pattern, content))
            content = last[-1].group(0).strip() if last else content
    message: dict = {"role": "assistant", "content": content}
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    return message


def sft_row(answer: Answer, keep_reasoning: bool = False) -> dict:
    row = {"messages": [*answer.messages, final_message(answer, keep_reasoning)]}
    if answer.tools:
        row["tools"] = list(answer.tools)
    row["id"] = answer.where
    if answer.model:
        row["source"] = answer.model
    return row


def result_answers(
    results: Sequence[EvalResult], paths: Sequence[Path], suites: dict[str, Suite]
) -> Iterator[Answer]:
    """Each case of results files as an Answer, the prompt rebuilt from its suite."""
    for path, result in zip(paths, results, strict=True):
        suite = suites[result.suite]
        cases = {c.id: c for c in suite.cases}
        for c in result.cases:
            case = cases.get(str(c.id))
            if case is None:
                raise EvalError(f"{path}: case {c.id!r} is not a case of suite {suite.path}")
            yield Answer(
                where=f"{result.suite}/{c.id}",
                messages=tuple(suite.messages_for(case)),
                tools=tuple(suite.tools_for(case)),
                content=c.content,
                tool_calls=c.tool_calls,
                passed=c.passed,
                kind=suite.kind,
                pattern=suite.answer_pattern,
                model=result.answered_model or result.model,
                id=str(c.id),
            )


def generated_answers(path: Path, suites: dict[str, Suite]) -> Iterator[Answer]:
    """The rows of `punie generate` output as Answers (each carries its request)."""
    for n, row in read_jsonl(path):
        if not isinstance(row.get("messages"), list):
            raise EvalError(f"{path}:{n}: messages: missing (not a `punie generate` row)")
        passed = row.get("passed")
        if passed is not None and not isinstance(passed, bool):
            raise EvalError(f"{path}:{n}: passed: {passed!r} is not true or false")
        suite = suites.get(row.get("suite") or "")
        provenance = row.get("provenance") if isinstance(row.get("provenance"), dict) else {}
        yield Answer(
            where=f"{row.get('suite') or path.name}/{row.get('id')}#{row.get('sample', 0)}",
            messages=tuple(row["messages"]),
            tools=tuple(row.get("tools") or ()),
            content=row.get("content") or "",
            tool_calls=row.get("tool_calls") or None,
            passed=passed,
            kind=suite.kind if suite else None,
            pattern=suite.answer_pattern if suite else DEFAULT_PATTERN,
            model=provenance.get("model") or provenance.get("requested_model"),
            id=str(row.get("id")),
        )


def load_answers(paths: Sequence[Path], suites: Sequence[Suite] = ()) -> list[Answer]:
    """Answers from results files (.json) and `punie generate` output (.jsonl), in order."""
    given = {s.name: s for s in suites}
    json_paths = [p for p in paths if p.suffix != ".jsonl"]
    read = [EvalResult.read(p) for p in json_paths]
    by_name = suites_for(read, json_paths, given.values())
    out: list[Answer] = list(result_answers(read, json_paths, by_name))
    for p in paths:
        if p.suffix == ".jsonl":
            out += generated_answers(p, by_name)
    return out


def seen_hashes(files: Sequence[Path | str]) -> set[int]:
    """The exact content hashes of every row of the training files (or dataset folders)."""
    return {exact_hash(rec.row) for f in files for rec in records(dataset_files(Path(f)))}


def write_sft_rows(
    results: Sequence[Path | str],
    out: Path | str,
    *,
    suites: Sequence[Path | str] = (),
    passed_only: bool = False,
    keep_reasoning: bool = False,
    seen: Sequence[Path | str] = (),
    against: Sequence[Prompt] = (),
    n: int = 8,
    threshold: float = 0.5,
) -> Output:
    """SFT rows at `out` (.jsonl) from `results`, with a manifest counting what was kept, failed,
    unscored, duplicated or refused as contaminated."""
    at_least("--n", n, 1)
    share("--threshold", threshold)
    if not results:
        raise EvalError("give at least one results file")
    paths = [Path(p) for p in results]
    answers = load_answers(paths, [Suite.load(s) for s in suites])
    index = NgramIndex(list(against), n)
    known = seen_hashes(seen)
    removed: Counter[str] = Counter()
    refused = []
    with open_output(out, None, inputs=[DataFile(p, "") for p in paths]) as o:
        for answer in answers:
            if passed_only and answer.passed is not True:
                removed["failed" if answer.passed is False else "unscored"] += 1
                continue
            row = sft_row(answer, keep_reasoning)
            hit = index.contaminated(row, threshold) if against else None
            if hit is not None:
                refused.append({"row": answer.where, "prompt": hit[0], "overlap": round(hit[1], 3)})
                removed["contaminated"] += 1
                continue
            h = exact_hash(row)
            if h in known:
                removed["duplicate"] += 1
                continue
            known.add(h)
            o.sink.write_row(row)
        o.counts.update(
            {
                "responses": len(answers),
                "rows": o.sink.rows,
                "passed_only": passed_only,
                "keep_reasoning": keep_reasoning,
                "removed": dict(sorted(removed.items())),
                "contaminated": refused[:MAX_LISTED],
                "deduped_against": [str(s) for s in seen],
            }
        )
    return o
