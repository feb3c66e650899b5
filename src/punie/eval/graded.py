"""Model-graded suites: a grader model scores each answer against a rubric, or prefers one of two.

- **Rubric** mode: the model under test answers each case; the grader reads the rubric (the
  case's, else the suite's), the question, an optional reference answer and the answer, and ends
  its reply with `GRADE: C`, `GRADE: P` or `GRADE: I` (`scale: cpi`, the default) or `GRADE: 1`
  to `GRADE: 5` (`scale: 1-5`). The last such line is the grade; the rest of the reply is the
  rationale, kept in the results. A case passes at `pass_grade` or better (C, or 4).
- **Pairwise** mode (`compare: [A, B]`): both variants answer, and the grader is asked twice, A
  in the first position and then B, ending `PREFERENCE: 1`, `2` or `tie`. A variant wins a case
  only when it is preferred in both orders; a grader that prefers whichever answer comes first
  yields a tie, not a win (position bias cancelled, and measured: `first_position_rate`). B's
  win rate counts ties as half, with a Wilson interval (stats.wilson).

Grader calls go through the runner's `ask`, so through the same response cache as any answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from punie.eval.client import Reply, Target
from punie.eval.stats import wilson
from punie.eval.verdict import Verdict
from punie.sampling import Sampling

LABELS = ("low_grade", "no_grade", "lost", "tie")
SCALES = {"cpi": ("I", "P", "C"), "1-5": ("1", "2", "3", "4", "5")}  # worst first
_DEFAULT_PASS = {"cpi": "C", "1-5": "4"}
_LINE = r"(?im)^[\s*#>_`]*{word}[\s*_`]*[:=][\s*_`]*\(?({values})\b[^\n]*$"
GRADER_MAX_TOKENS = 512  # room for a rationale, whatever the run's max_tokens

Ask = Callable[[list[dict]], Awaitable[tuple[Reply, bool]]]


@dataclass(frozen=True)
class Grading:
    grader: Target  # base_url "" until the run names one: `for_run` fills it in
    rubric: str | None = None
    scale: str = "cpi"
    pass_grade: str = "C"
    compare: tuple[Any, Any] | None = None  # pairwise: two variants (see `variant_target`)
    folder: str = "."  # the suite's folder, where relative adapter paths start


def _model_spec(value: Any, where: str, bad) -> tuple[str, str | None]:
    if isinstance(value, str) and value:
        return value, None
    if isinstance(value, dict) and isinstance(value.get("model"), str):
        adapter = value.get("adapter")
        if adapter is not None and not isinstance(adapter, str):
            raise bad(f"{where}.adapter", "must be a path")
        return value["model"], adapter
    raise bad(where, f"{value!r} is not a model name or {{model, adapter}}")


def load_grading(data: dict, source: str, bad) -> Grading:
    if "grader" not in data:
        raise bad("grader", "missing: the model that grades (a folder, hub id or server's id)")
    model, adapter = _model_spec(data["grader"], "grader", bad)
    scale = str(data.get("scale", "cpi"))
    if scale not in SCALES:
        raise bad("scale", f"{scale!r} is not one of {', '.join(SCALES)}")
    pass_grade = str(data.get("pass_grade", _DEFAULT_PASS[scale])).upper()
    if pass_grade not in SCALES[scale]:
        raise bad("pass_grade", f"{pass_grade!r} is not one of {', '.join(SCALES[scale])}")
    rubric = data.get("rubric")
    if rubric is not None and not isinstance(rubric, str):
        raise bad("rubric", "must be text")
    compare = data.get("compare")
    if compare is not None:
        if not isinstance(compare, list) or len(compare) != 2:
            raise bad("compare", "must be two variants: [A, B]")
        for i, v in enumerate(compare):
            if isinstance(v, dict):
                _model_spec(v, f"compare[{i}]", bad)
            elif not isinstance(v, str) or not v:
                raise bad(f"compare[{i}]", f"{v!r} is not base, an adapter or {{model, adapter}}")
        compare = tuple(compare)
    return Grading(
        grader=Target("", model, adapter),
        rubric=rubric,
        scale=scale,
        pass_grade=pass_grade,
        compare=compare,
        folder=str(Path(source).parent),
    )


def check_graded_case(case: dict, grading: Grading, bad) -> None:
    rubric = case.get("rubric")
    if rubric is not None and not isinstance(rubric, str):
        raise bad("rubric", "must be text")
    if rubric is None and grading.rubric is None:
        raise bad("rubric", "missing: give the suite a rubric, or this case one")
    if case.get("reference") is not None and not isinstance(case["reference"], str):
        raise bad("reference", "must be text")


def variant_target(variant: Any, run: Target, folder: str, local: bool) -> Target:
    """A pairwise variant as a request target: `base` (the run's model, no adapter), an adapter
    folder (relative to the suite's folder; a managed server needs it absolute), or a mapping
    `{model, adapter}` for another model on the same server."""
    if variant == "base":
        return replace(run, adapter=None)
    if isinstance(variant, dict):
        return replace(run, model=variant["model"], adapter=variant.get("adapter"))
    path = Path(folder) / variant
    return replace(run, adapter=str(path.resolve()) if local else variant)


def grader_sampling(sampling: Sampling) -> Sampling:
    """Greedy, with room for a rationale: a grade should not move between runs."""
    return Sampling(temperature=0.0, max_tokens=max(sampling.max_tokens, GRADER_MAX_TOKENS))


def question_text(messages: list[dict]) -> str:
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) == 1:
        return str(turns[0].get("content") or "")
    return "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in turns)


def rubric_prompt(question: str, answer: str, rubric: str, reference: str | None, scale: str):
    if scale == "cpi":
        how = "GRADE: C (correct: meets the rubric), GRADE: P (partly) or GRADE: I (incorrect)"
    else:
        how = "GRADE: N, where N is 1 (fails the rubric) to 5 (meets it fully)"
    ref = f"\n\n## Reference answer\n{reference}" if reference else ""
    text = (
        "Grade the answer to the question below against the rubric.\n\n"
        f"## Rubric\n{rubric}\n\n## Question\n{question}{ref}\n\n## Answer\n{answer}\n\n"
        f"Give your reasons briefly, then end with one line: {how}."
    )
    return [{"role": "user", "content": text}]


def pairwise_prompt(question: str, first: str, second: str, rubric: str) -> list[dict]:
    text = (
        "Two answers to the same question follow. Judge which better meets the rubric.\n\n"
        f"## Rubric\n{rubric}\n\n## Question\n{question}\n\n"
        f"## Answer 1\n{first}\n\n## Answer 2\n{second}\n\n"
        "Give your reasons briefly, then end with one line: PREFERENCE: 1, PREFERENCE: 2 "
        "or PREFERENCE: tie."
    )
    return [{"role": "user", "content": text}]


def parse_line(text: str, word: str, values: tuple[str, ...]) -> tuple[str | None, str]:
    """The last `WORD: value` line of `text` (value upper-cased) and the text without it."""
    pattern = _LINE.format(word=word, values="|".join(map(re.escape, values)))
    matches = list(re.finditer(pattern, text or ""))
    if not matches:
        return None, (text or "").strip()
    m = matches[-1]
    rationale = (text[: m.start()] + text[m.end() :]).strip()
    return m.group(1).upper(), rationale


def grade_verdict(grade: str | None, grading: Grading) -> Verdict:
    order = SCALES[grading.scale]
    if grade is None:
        shown = "C/P/I" if grading.scale == "cpi" else "1-5"
        return Verdict(False, "no_grade", f"the grader gave no 'GRADE: {shown}' line")
    if order.index(grade) >= order.index(grading.pass_grade):
        return Verdict(True, reason=f"grade {grade}")
    return Verdict(False, "low_grade", f"grade {grade}, below {grading.pass_grade}")


def preference_verdict(first: str | None, second: str | None) -> tuple[Verdict, str | None]:
    """The case's verdict for B, and the winner ("A", "B", "tie"), from the two orders' answers:
    `first` with A in position 1, `second` with B in position 1."""
    if first is None or second is None:
        return Verdict(False, "no_grade", "the grader gave no 'PREFERENCE: 1/2/tie' line"), None
    one = {"1": "A", "2": "B"}.get(first, "tie")
    two = {"1": "B", "2": "A"}.get(second, "tie")
    if one == two == "B":
        return Verdict(True, reason="B preferred in both orders"), "B"
    if one == two == "A":
        return Verdict(False, "lost", "A preferred in both orders"), "A"
    if first == second and first != "TIE":
        why = f"position bias: position {first} preferred in both orders"
        return Verdict(False, "tie", why), "tie"
    return Verdict(False, "tie", f"first order: {one}, second order: {two}"), "tie"


@dataclass(frozen=True)
class GradedCase:
    verdict: Verdict
    reply: Reply  # the answer shown: the only one, or B's
    cached: bool
    grading: dict  # grades or preferences, rationales, and (pairwise) both answers


async def grade_rubric(case, messages: list[dict], answer: tuple[Reply, bool], grading: Grading,
                       grader: Ask) -> GradedCase:  # fmt: skip
    reply, cached = answer
    rubric = case.rubric or grading.rubric
    prompt = rubric_prompt(
        question_text(messages), reply.content, rubric, case.reference, grading.scale
    )
    judged, judged_cached = await grader(prompt)
    grade, rationale = parse_line(judged.content, "grade", SCALES[grading.scale])
    return GradedCase(
        verdict=grade_verdict(grade, grading),
        reply=reply,
        cached=cached and judged_cached,
        grading={"mode": "rubric", "grade": grade, "rationale": rationale, "rubric": rubric},
    )


async def grade_pair(case, messages: list[dict], a: tuple[Reply, bool], b: tuple[Reply, bool],
                     grading: Grading, grader: Ask) -> GradedCase:  # fmt: skip
    rubric = case.rubric or grading.rubric
    q = question_text(messages)
    (ra, ca), (rb, cb) = a, b
    (j1, c1), (j2, c2) = await asyncio.gather(
        grader(pairwise_prompt(q, ra.content, rb.content, rubric)),
        grader(pairwise_prompt(q, rb.content, ra.content, rubric)),
    )
    values = ("1", "2", "tie")
    p1, why1 = parse_line(j1.content, "preference", values)
    p2, why2 = parse_line(j2.content, "preference", values)
    verdict, winner = preference_verdict(p1, p2)
    return GradedCase(
        verdict=verdict,
        reply=rb,
        cached=ca and cb and c1 and c2,
        grading={
            "mode": "pairwise",
            "winner": winner,
            "answers": {"A": ra.content, "B": rb.content},
            "calls": [
                {"first": "A", "preference": p1, "rationale": why1},
                {"first": "B", "preference": p2, "rationale": why2},
            ],
            "rubric": rubric,
        },
    )


def summarize(grading: Grading, cases: list[dict]) -> dict:
    """The run's summary from each case's `grading` record: grade counts and mean, or B's win
    rate (ties half) with its Wilson interval and how often the grader took position 1."""
    if grading.compare is None:
        order = SCALES[grading.scale]
        grades = [g["grade"] for g in cases if g and g.get("grade")]
        counts = {k: grades.count(k) for k in reversed(order)}
        # None, not 0, when nothing was graded: no grade is not a low grade
        mean = None
        if grades:
            mean = sum(order.index(g) for g in grades) / (len(order) - 1) / len(grades)
        return {"mode": "rubric", "scale": grading.scale, "grades": counts, "mean": mean}
    decided = [g for g in cases if g and g.get("winner")]
    wins = sum(g["winner"] == "B" for g in decided)
    losses = sum(g["winner"] == "A" for g in decided)
    ties = len(decided) - wins - losses
    n = len(decided)
    picks = [c["preference"] for g in decided for c in g["calls"] if c["preference"] != "TIE"]
    return {
        "mode": "pairwise",
        "a": str(grading.compare[0]),
        "b": str(grading.compare[1]),
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "no_grade": len(cases) - n,
        "win_rate": (wins + ties / 2) / n if n else 0.0,
        "interval": list(wilson(wins + ties / 2, n)),
        "first_position_rate": picks.count("1") / len(picks) if picks else None,
    }
