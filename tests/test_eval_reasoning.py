"""Reasoning scorers: the final answer is extracted by the suite's pattern, then compared."""

from __future__ import annotations

import pytest

from punie.eval.reasoning import DEFAULT_PATTERN, extract_answer, score_answer


def judge(text: str, answer, scorer: str, tolerance: float = 1e-6) -> bool:
    verdict = score_answer(
        text,
        {"answer": answer},
        scorer=scorer,
        pattern=DEFAULT_PATTERN,
        options={"tolerance": tolerance},
    )
    return verdict.passed


@pytest.mark.parametrize(
    "text, answer, scorer, passed",
    [
        ("Answer: Paris", "Paris", "exact", True),
        ("Answer: paris", "Paris", "exact", False),
        ("Answer: paris.", "Paris", "normalized", True),
        ("Answer:   New   York!", "new york", "normalized", True),
        ("Answer: New Jersey", "new york", "normalized", False),
        ("Answer: 42", 42, "numeric", True),
        ("Answer: 42.004", 42, "numeric", False),
        ("Answer: 1,000", 1000, "numeric", True),
        ("Answer: about 2.5 litres", 2.5, "numeric", True),
        ("Answer: (b)", "B", "choice", True),
        ("Answer: B) Mercury", "B", "choice", True),
        ("Answer: C", "B", "choice", False),
        ("Answer: Yes, it is.", "yes", "yes_no", True),
        ("Answer: no", True, "yes_no", False),  # YAML reads a bare `yes` as True
        ("Answer: maybe", "yes", "yes_no", False),
        ("Answer: warm", ["hot", "warm"], "normalized", True),
    ],
)
def test_scorers(text, answer, scorer, passed):
    assert judge(text, answer, scorer) is passed


def test_numeric_tolerance_is_absolute():
    assert judge("Answer: 3.14", 3.14159, "numeric", tolerance=0.01)
    assert not judge("Answer: 3.1", 3.14159, "numeric", tolerance=0.01)


def test_last_final_answer_wins():
    text = "Answer: 41 was my first guess.\nLet me check again.\nAnswer: 42"
    assert extract_answer(text) == "42"


def test_no_final_answer_is_its_own_failure():
    verdict = score_answer(
        "It is 42.", {"answer": 42}, scorer="numeric", pattern=DEFAULT_PATTERN, options={}
    )
    assert (verdict.passed, verdict.label) == (False, "no_answer")


def test_a_number_in_the_reasoning_is_not_the_answer():
    assert not judge("17 + 25 = 42, so\nAnswer: 43", 42, "numeric")


def test_suite_pattern_without_group_uses_whole_match():
    assert extract_answer("the result is \\boxed{7}", r"\\boxed\{\d+\}") == "\\boxed{7}"
