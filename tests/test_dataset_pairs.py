"""`punie dataset pairs` on results of real `punie eval run`s against a scripted server, and
`punie dataset ablate` on real datasets and suites, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cli_support import one_line_error, punie
from openai_stub import completion, scripted_server
from punie.eval.suite import Suite

SUITE = """\
name: tiny-tools
kind: tool_calling
system: "You are Punie. Use a tool when one fits."
tools:
  - type: function
    function:
      name: read_file
      parameters: {type: object, properties: {path: {type: string}}, required: [path]}
  - type: function
    function:
      name: list_dir
      parameters: {type: object, properties: {path: {type: string}}, required: [path]}
cases:
  - id: read
    messages: [{role: user, content: "Show me the file called alpha.py in the repository"}]
    expect: {calls: [{name: read_file, arguments: {path: ["alpha.py", "./alpha.py"]}}]}
  - id: list
    prompt: "List the docs folder"
    expect: {calls: [{name: list_dir, arguments: {path: ["docs"]}}]}
  - id: other
    prompt: "Read beta.py"
    expect: {calls: [{name: read_file, arguments: {path: ["beta.py"]}}]}
  - id: chat
    prompt: "Hello there"
    expect: {calls: []}
"""

# (model, case prompt) -> the call the scripted model makes; `good` gets `read` right, `base` not
ALPHA = "Show me the file called alpha.py in the repository"
CALLS = {
    ("base", ALPHA): ("list_dir", {"path": "."}),
    ("good", ALPHA): ("read_file", {"path": "alpha.py"}),
    ("base", "List the docs folder"): ("list_dir", {"path": "docs"}),
    ("good", "List the docs folder"): ("list_dir", {"path": "docs"}),
    ("base", "Read beta.py"): ("read_file", {"path": "gamma.py"}),
    ("good", "Read beta.py"): ("list_dir", {"path": "beta.py"}),
    ("base", "Hello there"): ("list_dir", {"path": "."}),
    ("good", "Hello there"): ("read_file", {"path": "hello"}),
}


def _scripted_server():
    def answer(body):
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        name, args = CALLS[body["model"], user]
        call = {"id": "c0", "type": "function"}
        call["function"] = {"name": name, "arguments": json.dumps(args)}
        message = {"role": "assistant", "content": "", "tool_calls": [call]}
        return completion(body["model"], message, finish_reason="tool_calls")

    return scripted_server(answer)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Results files of two real `punie eval run`s of the suite: the `base` and `good` models."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "suite.yaml").write_text(SUITE)
    httpd = _scripted_server()
    try:
        for model in ("base", "good"):
            done = punie(
                *("eval", "run", "suite.yaml", "--model", model, "--no-cache", "--json"),
                *("--base-url", f"http://127.0.0.1:{httpd.server_port}", "--run-dir", model),
                cwd=root,
            )
            assert done.returncode == 0, done.stderr
    finally:
        httpd.shutdown()
    return root


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pairs_put_a_passing_response_over_a_failing_one(results):
    base, good = "base/tiny-tools.base.json", "good/tiny-tools.good.json"
    done = punie("dataset", "pairs", base, good, "--suite", "suite.yaml", "-o", "p.jsonl",
                 cwd=results)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_rows(results / "p.jsonl")
    assert len(rows) == 1
    row = rows[0]
    suite = Suite.load(results / "suite.yaml")
    assert row["prompt"] == suite.messages_for(suite.cases[0])  # system prompt + the case's turns
    assert row["tools"] == list(suite.tools)
    chosen, rejected = row["chosen"][0], row["rejected"][0]
    assert chosen["role"] == rejected["role"] == "assistant"
    assert chosen["tool_calls"][0]["function"]["name"] == "read_file"
    assert rejected["tool_calls"][0]["function"]["name"] == "list_dir"
    manifest = json.loads((results / "p.manifest.json").read_text())
    assert manifest["counts"]["pairs"] == 1
    skipped = {s["case"]: s["reason"] for s in manifest["counts"]["skipped"]}
    assert skipped == {
        "tiny-tools/list": "no failing response (of 2)",
        "tiny-tools/other": "no passing response (of 2)",
        "tiny-tools/chat": "no passing response (of 2)",
    }
    assert [i["path"] for i in manifest["inputs"]] == [base, good]
    valid = punie("dataset", "validate", "p.jsonl", cwd=results)
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_pairs_render_through_a_models_chat_template(results, tiny_model):
    """The rows validate as training will read them: prompt with tools, then each completion.
    Eval run folders stand for the results files in them."""
    done = punie("dataset", "pairs", "base", "good", "--suite", "suite.yaml", "-o", "r.jsonl",
                 cwd=results)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in read_rows(results / "r.jsonl")] == ["tiny-tools/read"]
    valid = punie("dataset", "validate", "r.jsonl", "--model", str(tiny_model), "--json",
                  cwd=results)  # fmt: skip
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_chosen_expected_writes_the_expected_calls_where_nothing_passed(results):
    done = punie("dataset", "pairs", "base/tiny-tools.base.json", "--suite", "suite.yaml",
                 "--chosen", "expected", "-o", "e.jsonl", cwd=results)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r for r in read_rows(results / "e.jsonl")}
    # the base model passes only `list`; `chat` expects no call, so there is nothing to write
    assert sorted(rows) == ["tiny-tools/other", "tiny-tools/read"]
    expected = rows["tiny-tools/other"]["chosen"][0]["tool_calls"][0]["function"]
    assert expected == {"name": "read_file", "arguments": {"path": "beta.py"}}
    skipped = json.loads((results / "e.manifest.json").read_text())["counts"]["skipped"]
    assert {s["case"]: s["reason"] for s in skipped} == {
        "tiny-tools/list": "no failing response (of 1)",
        "tiny-tools/chat": "nothing passed and no expected calls to write",
    }
    assert punie("dataset", "validate", "e.jsonl", cwd=results).returncode == 0


def test_pairs_overlapping_an_eval_suite_are_refused(results):
    held_out = results / "held-out.yaml"
    held_out.write_text(
        "name: held-out\nkind: reasoning\ncases:\n"
        "  - {id: q, prompt: 'Show me the file called alpha.py in the repository', "
        "expect: {answer: x}}\n"
    )
    done = punie("dataset", "pairs", "base/tiny-tools.base.json", "good/tiny-tools.good.json",
                 "--suite", "suite.yaml", "--against", "held-out.yaml", "-o", "c.jsonl",
                 cwd=results)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (results / "c.jsonl").read_text() == ""
    counts = json.loads((results / "c.manifest.json").read_text())["counts"]
    assert counts["pairs"] == 0 and counts["removed"] == {"contaminated": 1}
    assert counts["contaminated"][0]["prompt"] == "held-out/q"


def test_a_results_file_of_an_unknown_suite_is_a_one_line_error(results):
    done = punie("dataset", "pairs", "base/tiny-tools.base.json", "-o", "u.jsonl", cwd=results)
    assert "suite 'tiny-tools' is neither given (--suite FILE) nor built in" in one_line_error(done)
    assert not (results / "u.jsonl").exists()


def test_pairs_never_overwrite_a_file_punie_did_not_write(results):
    (results / "mine.jsonl").write_text("keep me\n")
    done = punie("dataset", "pairs", "good/tiny-tools.good.json", "--suite", "suite.yaml",
                 "-o", "mine.jsonl", cwd=results)  # fmt: skip
    assert "not a Punie dataset output" in one_line_error(done)
    assert (results / "mine.jsonl").read_text() == "keep me\n"


# ---- ablate ----------------------------------------------------------------------------------

SPAN = r"Draft: (?P<span>[^\n]*)"


def draft_rows(n: int = 6) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Task {i}: fix the bug\nDraft: patch number {i}"},
                {"role": "assistant", "content": f"done {i}"},
            ]
        }
        for i in range(n)
    ]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ablate_drop_removes_the_span_from_every_prompt(tmp_path):
    write_rows(tmp_path / "in.jsonl", draft_rows())
    done = punie("dataset", "ablate", "in.jsonl", "--span", SPAN, "--mode", "drop",
                 "-o", "out.jsonl", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = read_rows(tmp_path / "out.jsonl")
    assert [r["messages"][0]["content"] for r in rows] == [
        f"Task {i}: fix the bug\nDraft: " for i in range(6)
    ]
    assert [r["messages"][1] for r in rows] == [r["messages"][1] for r in draft_rows()]
    counts = json.loads((tmp_path / "out.manifest.json").read_text())["counts"]
    assert (counts["rows"], counts["rows_matched"], counts["spans"]) == (6, 6, 6)


def test_ablate_shuffle_moves_every_span_to_another_row_deterministically(tmp_path):
    write_rows(tmp_path / "in.jsonl", draft_rows())
    for out, seed in (("a.jsonl", "1"), ("b.jsonl", "1")):
        done = punie("dataset", "ablate", "in.jsonl", "--span", SPAN, "--mode", "shuffle",
                     "--seed", seed, "-o", out, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    prompts = [r["messages"][0]["content"] for r in read_rows(tmp_path / "a.jsonl")]
    drafts = [p.split("Draft: ")[1] for p in prompts]
    assert sorted(drafts) == sorted(f"patch number {i}" for i in range(6))
    assert all(d != f"patch number {i}" for i, d in enumerate(drafts))  # none stays in place
    assert [p.split("\n")[0] for p in prompts] == [f"Task {i}: fix the bug" for i in range(6)]


def test_ablate_a_suite_writes_a_suite_that_loads_and_runs(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "name: drafts\nkind: reasoning\ncases:\n"
        + "".join(
            f"  - {{id: c{i}, prompt: 'Sum it\\nDraft: {i} plus {i}', "
            f"expect: {{answer: '{2 * i}'}}}}\n"
            for i in range(4)
        )
    )
    done = punie("dataset", "ablate", "s.yaml", "--span", SPAN, "--mode", "shuffle",
                 "--seed", "3", "-o", "s-shuffled.yaml", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    suite = Suite.load(tmp_path / "s-shuffled.yaml")
    assert suite.name == "drafts-shuffle"
    drafts = [c.messages[0]["content"].split("Draft: ")[1] for c in suite.cases]
    assert sorted(drafts) == [f"{i} plus {i}" for i in range(4)]
    assert all(d != f"{i} plus {i}" for i, d in enumerate(drafts))
    assert [c.expect for c in suite.cases] == [{"answer": str(2 * i)} for i in range(4)]
    manifest = json.loads((tmp_path / "s-shuffled.manifest.json").read_text())
    assert manifest["counts"]["spans"] == 4
    refused = punie("dataset", "ablate", "s-shuffled.yaml", "--span", SPAN, "--mode", "drop",
                    "-o", "s.yaml", cwd=tmp_path)  # fmt: skip
    assert "not a Punie suite output" in one_line_error(refused)
    again = punie("dataset", "ablate", "s.yaml", "--span", SPAN, "--mode", "drop",
                  "-o", "s-shuffled.yaml", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr  # Punie's own suite is Punie's to replace
    assert yaml.safe_load((tmp_path / "s-shuffled.yaml").read_text())["name"] == "drafts-drop"


@pytest.mark.parametrize(
    ("span", "mode", "says"),
    [
        (r"Draft: (.*)", "drop", "has no group named `span`"),
        (r"Draft: (?P<span>[", "drop", "not a valid regex"),
        (SPAN, "swap", "must be one of drop, shuffle"),
        (r"Nothing: (?P<span>.*)", "drop", "matches no prompt"),
    ],
)
def test_ablate_bad_arguments_are_one_line_errors(tmp_path, span, mode, says):
    write_rows(tmp_path / "in.jsonl", draft_rows(2))
    done = punie("dataset", "ablate", "in.jsonl", "--span", span, "--mode", mode,
                 "-o", "out.jsonl", cwd=tmp_path)  # fmt: skip
    assert says in one_line_error(done)
    assert not (tmp_path / "out.jsonl").exists()


def test_ablate_shuffle_refuses_a_span_found_in_one_row_only(tmp_path):
    rows = draft_rows(3)
    for r in rows[1:]:
        r["messages"][0]["content"] = "no draft here"
    write_rows(tmp_path / "in.jsonl", rows)
    done = punie("dataset", "ablate", "in.jsonl", "--span", SPAN, "--mode", "shuffle",
                 "-o", "out.jsonl", cwd=tmp_path)  # fmt: skip
    assert "found in only one row; nothing to swap with" in one_line_error(done)
    assert not (tmp_path / "out.jsonl").exists()


PAIR = ("chosen", "rejected")


def test_pairs_use_every_sample_of_one_results_file(tmp_path):
    """With samples > 1 the results keep every response, so one run of one model gives pairs."""
    suite = yaml.safe_load(SUITE)
    suite["cases"], suite["samples"] = suite["cases"][:1], 3
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    paths = iter(["gamma.py", "alpha.py", "beta.py"])  # only the second sample passes

    def answer(body):
        call = {"id": "c0", "type": "function"}
        call["function"] = {"name": "read_file", "arguments": json.dumps({"path": next(paths)})}
        message = {"role": "assistant", "content": "", "tool_calls": [call]}
        return completion(body["model"], message, finish_reason="tool_calls")

    httpd = scripted_server(answer)
    try:
        done = punie("eval", "run", "suite.yaml", "--model", "m", "--no-cache", "--run-dir", "r",
                     "--concurrency", "1", "--base-url", f"http://127.0.0.1:{httpd.server_port}",
                     cwd=tmp_path)  # fmt: skip
    finally:
        httpd.shutdown()
    assert done.returncode == 0, done.stderr
    case = json.loads(next((tmp_path / "r").glob("*.json")).read_text())["cases"][0]
    assert (case["n"], case["c"], [s["passed"] for s in case["samples"]]) == (3, 1, [0, 1, 0])
    done = punie("dataset", "pairs", "r", "--suite", "suite.yaml", "-o", "p.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (row,) = read_rows(tmp_path / "p.jsonl")
    args = [json.loads(row[k][0]["tool_calls"][0]["function"]["arguments"]) for k in PAIR]
    assert args == [{"path": "alpha.py"}, {"path": "gamma.py"}]
