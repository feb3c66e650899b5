"""Scoring generated code: run the model's program with the case's tests in the sandbox.

The program is the last fenced code block of the response in the suite's `language` (```python
... ```, ```q ... ```) or a bare ```, or the whole response when it has no fence.

Python with no `runner`: the case's `expect.tests` (Python, usually asserts) run after it in the
same script; the case passes when the script runs to its end (the sandbox's completion token
arrives) and exits 0 within the limits.

Any language, with a `runner` (a command template such as `["q", "{file}"]`): a small Python
driver runs inside the same sandbox (same namespaces, rlimits and seccomp filter, inherited by
everything it starts). It writes the program to `solution.<ext>` and runs the runner once per
test: a test gives `stdin` and the expected `stdout`, or a `script` appended to the program (in
its own file), or both. A test passes when the runner exits 0 within `wall_s` and, when `stdout`
is given, prints it (trailing spaces and blank lines aside). Coverage is the fraction of tests
passed; the case passes when all do.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re

from punie.errors import EvalError
from punie.eval.sandbox import Limits, isolation, run_python
from punie.eval.verdict import Verdict

LABELS = ("no_code", "test_failed", "timeout")

_FENCE_WORDS = {
    "python": ("python", "py", "python3"),
    "javascript": ("javascript", "js"),
    "typescript": ("typescript", "ts"),
    "shell": ("shell", "sh", "bash"),
    "sh": ("sh", "shell", "bash"),
    "bash": ("bash", "sh", "shell"),
}
_EXTENSIONS = {"python": "py", "javascript": "js", "typescript": "ts", "shell": "sh"}
_EXTENSIONS |= {"bash": "sh", "ruby": "rb", "rust": "rs", "haskell": "hs", "perl": "pl"}
_EXTENSIONS |= {"kotlin": "kt", "c#": "cs", "csharp": "cs", "c++": "cpp"}
# Where the driver looks for a runner named without a folder (the sandbox's PATH is /usr/bin:/bin).
RUNNER_PATH = "/usr/local/bin:/usr/bin:/bin"


def extension(language: str) -> str:
    return _EXTENSIONS.get(language.lower(), language.lower())


@functools.cache
def _fence(language: str) -> re.Pattern:
    words = "|".join(re.escape(w) for w in _FENCE_WORDS.get(language.lower(), (language,)))
    return re.compile(rf"```[ \t]*(?:{words})?[ \t]*\n(.*?)```", re.S | re.I)


def extract_code(text: str, language: str = "python") -> str:
    blocks = _fence(language).findall(text or "")
    return (blocks[-1] if blocks else text or "").strip()


def score_code(
    text: str,
    expect: dict,
    limits: Limits | None = None,
    *,
    language: str = "python",
    runner: tuple[str, ...] = (),
) -> Verdict:
    code = extract_code(text, language)
    if not code:
        return Verdict(False, "no_code", "the response has no code", coverage=0.0)
    limits = limits or Limits()
    if runner or isinstance(expect["tests"], list):
        return _score_with_runner(code, expect["tests"], limits, language, runner)
    program = f"{code}\n\n# --- tests ---\n{expect['tests']}\n"
    outcome = run_python(program, limits)
    if outcome.passed:
        return Verdict(True, reason=f"tests passed in {outcome.wall_s:.2f}s", coverage=1.0)
    label = "timeout" if outcome.timed_out else "test_failed"
    return Verdict(False, label, outcome.why(), coverage=0.0)


def _tests(tests: str | list[dict]) -> list[dict]:
    items = [{"script": tests}] if isinstance(tests, str) else tests
    return [{k: str(v) for k, v in t.items()} for t in items]


def _score_with_runner(
    code: str, tests: str | list[dict], limits: Limits, language: str, runner: tuple[str, ...]
) -> Verdict:
    runner = runner or ("python3", "{file}")
    check_runner(runner, limits)
    items = _tests(tests)
    results = _drive(runner, code, items, extension(language), limits)
    if results is None:
        # The driver itself did not finish: every test counts as failed.
        return Verdict(False, "timeout", "the tests ran past their wall-time limit", coverage=0.0)
    passed = sum(r["passed"] for r in results)
    coverage = passed / len(results)
    if passed == len(results):
        return Verdict(True, reason=f"{passed}/{len(results)} tests passed", coverage=1.0)
    i, first = next((i, r) for i, r in enumerate(results) if not r["passed"])
    label = "timeout" if first.get("timed_out") else "test_failed"
    why = f"{passed}/{len(results)} tests passed; tests[{i}]: {first['why']}"
    return Verdict(False, label, why, coverage=coverage)


def _drive(
    runner: tuple[str, ...], code: str, tests: list[dict], ext: str, limits: Limits
) -> list[dict] | None:
    job = {"runner": list(runner), "code": code, "tests": tests, "ext": ext}
    job |= {"timeout_s": limits.wall_s, "output_bytes": limits.output_bytes, "path": RUNNER_PATH}
    # Each test gets the whole wall_s; the driver gets them all, and a little to start.
    whole = dataclasses.replace(limits, wall_s=limits.wall_s * max(1, len(tests)) + 5)
    outcome = run_python(DRIVER.replace("JOB_JSON", repr(json.dumps(job))), whole)
    if not outcome.passed:
        if outcome.timed_out:
            return None
        raise EvalError(f"code sandbox: the test driver failed: {outcome.why()}")
    lines = outcome.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    if "runner_missing" in report:
        raise EvalError(_missing_runner(report["runner_missing"]))
    return report["tests"]


@functools.cache
def check_runner(runner: tuple[str, ...], limits: Limits) -> None:
    """Refuse, with one line, a runner the sandbox cannot start (probed once per runner)."""
    _drive(runner, "", [], "txt", limits)


def _missing_runner(exe: str) -> str:
    iso = isolation()
    where = [f"not on {RUNNER_PATH}" if "/" not in exe else "not there"]
    if iso.mount_namespace:
        where.append("/tmp, /var/tmp and /dev/shm are private")
    if iso.uid is not None:
        where.append(f"it must be executable by uid {iso.uid}")
    return (
        f"runner: {exe!r} cannot be started inside the code sandbox ({'; '.join(where)}); "
        "install it system-wide or give its absolute path"
    )


# Runs inside the sandbox: a Python program like any other, so it keeps the harness's guarantees
# (limits, namespaces, the completion token). It prints one JSON line last: the tests' results.
DRIVER = r"""
import json, os, shutil, signal, subprocess

JOB = json.loads(JOB_JSON)


def runner_path(exe):
    if "/" in exe:
        return exe if os.path.isfile(exe) and os.access(exe, os.X_OK) else None
    return shutil.which(exe, path=JOB["path"])


def read_capped(path):
    with open(path, "rb") as f:
        return f.read(JOB["output_bytes"]).decode("utf-8", errors="replace")


def lines(text):
    out = [line.rstrip() for line in text.splitlines()]
    while out and not out[-1]:
        out.pop()
    return out


def run_one(i, test, solution, exe):
    path = solution
    if "script" in test:
        path = os.path.abspath(f"test_{i}.{JOB['ext']}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(JOB["code"] + "\n" + test["script"] + "\n")
    argv = [exe] + [a.replace("{file}", path) for a in JOB["runner"][1:]]
    with open(f"stdin_{i}", "w", encoding="utf-8") as f:
        f.write(test.get("stdin", ""))
    with open(f"stdin_{i}", "rb") as stdin, open(f"out_{i}", "wb") as out, \
            open(f"err_{i}", "wb") as err:
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err,
                                    start_new_session=True)
        except OSError as e:
            return {"passed": False, "why": f"cannot start the runner: {e}"}
        try:
            code = proc.wait(timeout=JOB["timeout_s"])
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"passed": False, "timed_out": True,
                    "why": f"killed after the {JOB['timeout_s']}s wall-time limit"}
    got, errors = read_capped(f"out_{i}"), read_capped(f"err_{i}")
    if code != 0:
        last = [x for x in errors.splitlines() if x.strip()]
        status = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return {"passed": False, "why": status + (f": {last[-1][:160]}" if last else "")}
    if "stdout" in test:
        want, have = lines(test["stdout"]), lines(got)
        if want != have:
            at = next((n for n, (a, b) in enumerate(zip(want, have)) if a != b),
                      min(len(want), len(have)))
            w = want[at] if at < len(want) else "<end of output>"
            h = have[at] if at < len(have) else "<end of output>"
            return {"passed": False,
                    "why": f"stdout line {at + 1}: got {h[:80]!r}, expected {w[:80]!r}"}
    return {"passed": True, "why": ""}


def main():
    exe = runner_path(JOB["runner"][0])
    if exe is None:
        print(json.dumps({"runner_missing": JOB["runner"][0]}))
        return
    solution = os.path.abspath(f"solution.{JOB['ext']}")
    with open(solution, "w", encoding="utf-8") as f:
        f.write(JOB["code"] + "\n")
    results = [run_one(i, t, solution, exe) for i, t in enumerate(JOB["tests"])]
    print(json.dumps({"tests": results}))


main()
"""
