"""Scoring generated code: run the model's program with the case's tests in the sandbox.

The program is the last fenced code block of the response (```python ... ``` or a bare ```),
or the whole response when it has no fence. The case's `expect.tests` (Python, usually asserts)
run after it in the same script; the case passes when the script runs to its end (the sandbox's
completion token arrives) and exits 0 within the limits.
"""

from __future__ import annotations

import re

from punie.eval.sandbox import Limits, run_python
from punie.eval.verdict import Verdict

LABELS = ("no_code", "test_failed", "timeout")

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.S | re.I)


def extract_code(text: str) -> str:
    blocks = _FENCE.findall(text or "")
    return (blocks[-1] if blocks else text or "").strip()


def score_code(text: str, expect: dict, limits: Limits | None = None) -> Verdict:
    code = extract_code(text)
    if not code:
        return Verdict(False, "no_code", "the response has no code")
    program = f"{code}\n\n# --- tests ---\n{expect['tests']}\n"
    outcome = run_python(program, limits or Limits())
    if outcome.passed:
        return Verdict(True, reason=f"tests passed in {outcome.wall_s:.2f}s")
    label = "timeout" if outcome.timed_out else "test_failed"
    return Verdict(False, label, outcome.why())
