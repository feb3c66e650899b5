"""Code suites in any language: a runner command in the sandbox, tests as stdin -> stdout pairs
or scripts, and each case's coverage (the fraction of its tests passed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cli_support import run_main
from openai_stub import completion, scripted_server
from punie.errors import EvalError
from punie.eval.sandbox import isolation
from punie.eval.suite import Suite

LIMITS = {"wall_s": 3, "cpu_s": 2, "memory_mb": 256}
ADD = {
    "id": "add",
    "prompt": "Print the sum of the two numbers on each line.",
    "expect": {
        "tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "2 2\n5 5\n", "stdout": "4\n10"}]
    },
}

AWK_SUITE = {
    "name": "awk-sums",
    "kind": "code",
    "language": "awk",
    "runner": ["awk", "-f", "{file}"],
    "limits": LIMITS,
    "cases": [
        ADD,
        {**ADD, "id": "half-right"},
        {**ADD, "id": "no-code"},
        {**ADD, "id": "slow", "expect": {"tests": ADD["expect"]["tests"][:1]}},
    ],
}
AWK_ANSWERS = {
    "add": "```awk\n{ print $1 + $2 }\n```",
    "half-right": "Here:\n```awk\n{ print $1 + 2 }\n```",  # right for 1 2, wrong for 2 2 / 5 5
    "no-code": "",
    "slow": '```awk\nBEGIN { system("sleep 10") }\n```',  # waits, using no CPU
}
SH_SUITE = {
    "name": "sh-scripts",
    "kind": "code",
    "language": "sh",
    "runner": ["sh", "{file}"],
    "limits": LIMITS,
    "cases": [
        {
            "id": "double",
            "prompt": "Write a shell function double.",
            "expect": {
                "tests": [
                    {"script": '[ "$(double 2)" = 4 ]'},
                    {"script": "double 21", "stdout": "42"},
                    {"script": '[ "$(double -1)" = -2 ]'},
                ]
            },
        },
        {
            "id": "one-script",
            "prompt": "Write a shell function double.",
            "expect": {"tests": 'test "$(double 3)" = 6'},
        },
    ],
}
SH_ANSWERS = {
    "double": "```sh\ndouble() { echo $(( $1 * 2 )); }\n```",
    "one-script": "```bash\ndouble() { echo $(( $1 + 2 )); }\n```",
}


def score_json(tmp_path: Path, suite: dict, answers: dict, capsys) -> dict:
    path = tmp_path / f"{suite['name']}.yaml"
    path.write_text(yaml.safe_dump(suite))
    responses = tmp_path / "responses.jsonl"
    responses.write_text(
        "".join(json.dumps({"id": i, "content": a}) + "\n" for i, a in answers.items())
    )
    code, out, err = run_main(["eval", "score", path, "--responses", responses, "--json"], capsys)
    assert code == 0, err
    return {c["id"]: c for c in json.loads(out)["cases"]}


def test_an_awk_suite_reports_each_case_coverage(tmp_path, capsys):
    cases = score_json(tmp_path, AWK_SUITE, AWK_ANSWERS, capsys)
    got = {i: (c["passed"], c["label"], c["coverage"]) for i, c in cases.items()}
    assert got == {
        "add": (True, None, 1.0),
        "half-right": (False, "test_failed", 0.5),
        "no-code": (False, "no_code", 0.0),
        "slow": (False, "timeout", 0.0),
    }
    reason = cases["half-right"]["reason"]
    assert reason == "1/2 tests passed; tests[1]: stdout line 2: got '7', expected '10'"
    assert "wall-time limit" in cases["slow"]["reason"]


def test_shell_scripts_run_after_the_code_and_count_one_test_each(tmp_path, capsys):
    cases = score_json(tmp_path, SH_SUITE, SH_ANSWERS, capsys)
    assert (cases["double"]["passed"], cases["double"]["coverage"]) == (True, 1.0)
    # One script is one test: all or nothing (the bash fence is read for language sh).
    assert (cases["one-script"]["passed"], cases["one-script"]["coverage"]) == (False, 0.0)
    assert "exit status 1" in cases["one-script"]["reason"]


def test_results_of_a_run_carry_coverage_beside_pass_and_pass_at_k(tmp_path):
    from punie.eval.client import Target
    from punie.eval.runner import run_suite

    replies = iter(["```awk\n{ print $1 + $2 }\n```", "```awk\n{ print 3 }\n```"])

    def answer(body):
        return completion(body["model"], {"content": next(replies)})

    httpd = scripted_server(answer)
    try:
        suite = Suite.from_dict(
            {**AWK_SUITE, "cases": [ADD], "samples": 2, "k": [1, 2]}, source="awk.yaml"
        )
        target = Target(f"http://127.0.0.1:{httpd.server_port}", "scripted")
        result = run_suite(suite, target, label="scripted", concurrency=1)
    finally:
        httpd.shutdown()
        httpd.server_close()
    (case,) = result.cases
    assert (case.passed, case.coverage, case.n, case.c) == (True, 1.0, 2, 1)
    assert result.pass_at_k == {"1": 0.5, "2": 1.0}
    written = result.write(tmp_path / "awk.scripted.json")
    assert json.loads(written.read_text())["cases"][0]["coverage"] == 1.0
    from punie.api import write_report

    report = write_report(tmp_path / "report.html", [result], title="awk")
    assert "coverage 100%" in Path(report).read_text()


def test_a_python_suite_may_give_stdin_stdout_tests_with_no_runner(tmp_path, capsys):
    suite = {
        "name": "py-io",
        "kind": "code",
        "limits": LIMITS,
        "cases": [{**ADD, "id": "py"}],
    }
    answer = (
        "```python\nimport sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())))\n```"
    )
    cases = score_json(tmp_path, suite, {"py": answer}, capsys)
    assert (cases["py"]["passed"], cases["py"]["coverage"]) == (True, 1.0)


def test_a_runner_the_sandbox_cannot_start_is_one_line_naming_it(tmp_path, capsys):
    suite = {**AWK_SUITE, "runner": ["no-such-language-7", "{file}"]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    responses = tmp_path / "r.jsonl"
    responses.write_text(json.dumps({"id": "add", "content": "x"}) + "\n")
    code, _, err = run_main(["eval", "score", path, "--responses", responses], capsys)
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert "runner: 'no-such-language-7' cannot be started inside the code sandbox" in err


def test_a_runner_under_tmp_is_out_of_the_sandbox_reach():
    # The sandbox mounts its own /tmp (and runs as nobody when root): a runner that lives under
    # the host's /tmp is not there, whatever the host sees. Checked before any code runs.
    iso = isolation()
    if not iso.mount_namespace and iso.uid is None:
        pytest.skip("no mount namespace and no uid switch here: /tmp is shared")
    import tempfile

    from punie.eval.code import check_runner
    from punie.eval.sandbox import Limits

    folder = Path(tempfile.mkdtemp(prefix="punie-runner-", dir="/tmp"))
    try:
        runner = folder / "q"
        shutil.copy("/bin/sh", runner)
        runner.chmod(0o755)
        assert runner.exists()
        with pytest.raises(EvalError, match=f"runner: '{runner}' cannot be started"):
            check_runner((str(runner), "{file}"), Limits(wall_s=5))
        check_runner(("/bin/sh", "{file}"), Limits(wall_s=5))  # a system one is fine
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"runner": None, "language": "q"}, "runner: missing: how to run q code"),
        ({"runner": ["q", "x.q"]}, "runner: ['q', 'x.q'] never names the program"),
        ({"runner": ["{file}"]}, "runner: the first word is the program"),
        ({"language": "q r"}, "language: 'q r' is not a language name"),
    ],
)
def test_bad_runner_settings_fail_the_load(change, error):
    data = {**AWK_SUITE, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(EvalError, match=f"s.yaml: {error}".replace("[", r"\[").replace("]", r"\]")):
        Suite.from_dict(data, source="s.yaml")


def test_a_test_with_neither_stdout_nor_script_fails_the_load():
    data = {**AWK_SUITE, "cases": [{**ADD, "expect": {"tests": [{"stdin": "1 2"}]}}]}
    with pytest.raises(EvalError, match=r"cases\[0\]\.expect\.tests\[0\]: needs stdout"):
        Suite.from_dict(data, source="s.yaml")
