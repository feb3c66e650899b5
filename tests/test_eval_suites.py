"""Suites load strictly (errors name file, line and field); `punie eval score` needs no model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from punie.errors import PunieError
from punie.eval.scoring import score_file
from punie.eval.suite import Suite, builtin_suites

TOOLS_SUITE = """\
name: tools-basic
kind: tool_calling          # tool_calling | reasoning | code
system: "optional system prompt, same as in training"
tools:
  - type: function
    function:
      name: read_file
      description: Read
      parameters: {type: object, properties: {path: {type: string}}, required: [path]}
cases:
  - id: read-1
    messages: [{role: user, content: "Show me src/app.py"}]
    expect:
      calls:
        - name: read_file
          arguments: {path: ["src/app.py", "./src/app.py"]}
      order: any
  - id: chat-1
    messages: [{role: user, content: "hi"}]
    expect:
      calls: []
"""


def write(tmp_path, text: str, name: str = "suite.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_issue_shape_loads(tmp_path):
    suite = Suite.load(write(tmp_path, TOOLS_SUITE))
    assert (suite.name, suite.kind, len(suite.cases)) == ("tools-basic", "tool_calling", 2)
    assert suite.messages_for(suite.cases[0])[0]["role"] == "system"


def test_builtin_suites_all_load():
    names = set(builtin_suites())
    assert {"tools-basic", "reasoning-basic", "code-basic"} <= names
    kinds = {Suite.load(n).kind for n in names}
    assert kinds == {"tool_calling", "reasoning", "code"}


def test_unknown_tool_in_expect_names_line_and_field(tmp_path):
    path = write(tmp_path, TOOLS_SUITE.replace("- name: read_file", "- name: raed_file"))
    with pytest.raises(PunieError) as e:
        Suite.load(path)
    assert str(e.value) == (
        f"{path}:11: cases[0].expect.calls[0].name: 'raed_file' is not one of the tools"
    )


def test_bad_role_is_named(tmp_path):
    path = write(tmp_path, TOOLS_SUITE.replace('role: user, content: "hi"', "role: wizard"))
    with pytest.raises(PunieError, match=r":18: cases\[1\]\.messages\[0\]\.role: 'wizard'"):
        Suite.load(path)


def test_missing_calls_is_an_error_not_a_silent_no_call(tmp_path):
    path = write(tmp_path, TOOLS_SUITE.replace("      calls: []\n", "      order: any\n"))
    with pytest.raises(PunieError, match=r"cases\[1\]\.expect\.calls: missing"):
        Suite.load(path)


def test_k_above_samples_is_rejected(tmp_path):
    data = yaml.safe_load(builtin_suites()["code-basic"].read_text())
    data.update(samples=2, k=[1, 5])
    with pytest.raises(PunieError, match=r"k: \[1, 5\]"):
        Suite.from_dict(data, source="s.yaml")


def test_bad_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\nkind: [unclosed\n")
    with pytest.raises(PunieError, match=r"suite\.yaml:\d+: not valid YAML"):
        Suite.load(path)


def test_score_file_scores_recorded_responses(tmp_path):
    suite = Suite.load(write(tmp_path, TOOLS_SUITE))
    responses = write(
        tmp_path,
        json.dumps(
            {
                "id": "read-1",
                "content": '<tool_call>{"name": "read_file", '
                '"arguments": {"path": "./src/app.py"}}</tool_call>',
            }
        )
        + "\n"
        + json.dumps({"id": "chat-1", "content": "hello!", "tool_calls": []})
        + "\n",
        "responses.jsonl",
    )
    cases = score_file(suite, responses)
    assert [(c.id, c.passed) for c in cases] == [("read-1", True), ("chat-1", True)]


def test_missing_response_fails_that_case(tmp_path):
    suite = Suite.load(write(tmp_path, TOOLS_SUITE))
    responses = write(tmp_path, json.dumps({"id": "chat-1", "content": "hi"}) + "\n", "r.jsonl")
    cases = score_file(suite, responses)
    assert cases[0].label == "no_response" and cases[1].passed


def test_bad_responses_line_is_named(tmp_path):
    suite = Suite.load(write(tmp_path, TOOLS_SUITE))
    responses = write(tmp_path, '{"id": "read-1", "content": ""}\n{oops\n', "r.jsonl")
    with pytest.raises(PunieError, match=r"r\.jsonl:2: not valid JSON"):
        score_file(suite, responses)


def test_cli_score_json(tmp_path):
    suite = write(tmp_path, TOOLS_SUITE)
    responses = write(
        tmp_path,
        json.dumps({"id": "read-1", "content": "no idea"})
        + "\n"
        + json.dumps({"id": "chat-1", "content": "hi"})
        + "\n",
        "r.jsonl",
    )
    from typer.testing import CliRunner

    from punie.cli import app

    out = CliRunner().invoke(
        app, ["eval", "score", str(suite), "--responses", str(responses), "--json"]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["score"] == 0.5
    assert [(c["id"], c["passed"]) for c in data["cases"]] == [("read-1", False), ("chat-1", True)]
    assert data["cases"][0]["reason"]


def test_cli_score_bad_suite_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from punie.cli import main; main()",
            "eval",
            "score",
            str(tmp_path / "nope.yaml"),
            "--responses",
            str(tmp_path / "r.jsonl"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such suite" in proc.stderr
