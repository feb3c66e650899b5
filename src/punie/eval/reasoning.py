"""Scoring short-answer reasoning: pull the final answer out of the text, then compare it.

The suite declares where the answer is (`answer_pattern`, a regex whose first group is the answer;
the last match wins, so a model may think aloud first) and how to compare it (`scorer`):

- `exact`: the same string, after trimming surrounding whitespace;
- `normalized`: the same after folding case, collapsing whitespace and dropping punctuation;
- `numeric`: the same number within `tolerance` (absolute, default 1e-6); `1,000` and `1e3` parse;
- `choice`: the same option letter (`B`, `(b)`, `b.` and `B)` all read as `B`);
- `yes_no`: the same polarity (`yes`/`true`/`y` against `no`/`false`/`n`);
- `contains`: the accepted answer appears in the text (case and runs of whitespace ignored);
- `regex`: the accepted answer, a regular expression, matches somewhere in the text.

`number` is another name for `numeric`.

A case's `expect.answer` is one accepted answer or a list of them.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable

from punie.eval.verdict import Verdict

DEFAULT_PATTERN = r"(?im)^\s*(?:final\s+)?answer\s*[:=]\s*(.+?)\s*$"
LABELS = ("no_answer", "wrong_answer")

_PUNCT = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def extract_answer(text: str, pattern: str = DEFAULT_PATTERN) -> str | None:
    """The last match of `pattern` in `text` (its first group, if it has one), or None."""
    matches = list(re.finditer(pattern, text or ""))
    if not matches:
        return None
    m = matches[-1]
    return (m.group(1) if m.re.groups else m.group(0)).strip()


def normalize(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def parse_number(text: str) -> float | None:
    m = _NUMBER.search(text.replace(" ", ""))
    if not m:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def parse_choice(text: str) -> str | None:
    m = re.match(r"^\W*([A-Za-z])(?:\W|$)", text.strip())
    return m.group(1).upper() if m else None


_YES = {"yes", "y", "true", "correct"}
_NO = {"no", "n", "false", "incorrect"}


def parse_yes_no(text: str) -> bool | None:
    words = normalize(text).split()
    if not words:
        return None
    return True if words[0] in _YES else False if words[0] in _NO else None


def _exact(got: str, want: str, _: dict) -> bool:
    return got.strip() == str(want).strip()


def _normalized(got: str, want: str, _: dict) -> bool:
    return normalize(got) == normalize(str(want))


def _numeric(got: str, want: str, options: dict) -> bool:
    a, b = parse_number(got), parse_number(str(want))
    tol = float(options.get("tolerance", 1e-6))
    return a is not None and b is not None and math.isclose(a, b, rel_tol=0.0, abs_tol=tol)


def _choice(got: str, want: str, _: dict) -> bool:
    a = parse_choice(got)
    return a is not None and a == parse_choice(str(want))


def _yes_no(got: str, want: str, _: dict) -> bool:
    a = parse_yes_no(got)
    want_b = want if isinstance(want, bool) else parse_yes_no(str(want))
    return a is not None and a == want_b


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _contains(got: str, want: str, _: dict) -> bool:
    # Punctuation is kept: dropping it would make "3.5" found in "35".
    return _fold(str(want)) in _fold(got)


def _regex(got: str, want: str, _: dict) -> bool:
    return re.search(str(want), got) is not None


SCORERS: dict[str, Callable[[str, str, dict], bool]] = {
    "exact": _exact,
    "normalized": _normalized,
    "numeric": _numeric,
    "number": _numeric,
    "choice": _choice,
    "yes_no": _yes_no,
    "contains": _contains,
    "regex": _regex,
}


def score_answer(text: str, expect: dict, *, scorer: str, pattern: str, options: dict) -> Verdict:
    """Score a reasoning response: extract with `pattern`, compare with `scorer`."""
    got = extract_answer(text, pattern)
    if got is None:
        return Verdict(False, "no_answer", f"no final answer matching {pattern!r}")
    accepted = expect["answer"] if isinstance(expect["answer"], list) else [expect["answer"]]
    if any(SCORERS[scorer](got, want, options) for want in accepted):
        return Verdict(True, reason=f"answer {got!r}")
    shown = ", ".join(repr(str(a)) for a in accepted)
    return Verdict(False, "wrong_answer", f"answered {got[:80]!r}, expected {shown} ({scorer})")
