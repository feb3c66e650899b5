"""`punie generate` and `punie dataset from-results`: sampled responses with provenance, resumed
after an interruption, turned into SFT rows (rejection sampling)."""

from __future__ import annotations

import json

import pytest
import yaml

from cli_support import punie, run_main
from openai_stub import completion, scripted_server
from punie.fsio import SUITE_HEADER
from train_support import TOOLS

FILES = ["a.py", "b.py", "c.py", "d.py"]


def _suite(path, files=FILES):
    cases = [
        {
            "id": f"read-{name}",
            "messages": [{"role": "user", "content": f"Show me the file {name}"}],
            "expect": {"calls": [{"name": "read_file", "arguments": {"path": [name]}}]},
        }
        for name in files
    ]
    suite = {"name": "reads", "kind": "tool_calling", "tools": TOOLS, "cases": cases}
    path.write_text(SUITE_HEADER + yaml.safe_dump(suite, sort_keys=False))
    return path


def _call(path: str) -> dict:
    call = {"type": "function", "function": {"name": "read_file", "arguments": {"path": path}}}
    return {"role": "assistant", "content": "<think>it is a read</think>", "tool_calls": [call]}


def _asked_file(body: dict) -> str:
    return body["messages"][-1]["content"].rsplit(" ", 1)[-1]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_from_results_passed_only_keeps_exactly_the_passing_ones(tmp_path, capsys):
    # the "teacher" reads the right file for a.py and c.py, and always a.py otherwise
    def answer(body):
        asked = _asked_file(body)
        return completion("teacher-7b", _call(asked if asked in ("a.py", "c.py") else "a.py"))

    server = scripted_server(answer)
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        out = tmp_path / "responses.jsonl"
        args = ["generate", _suite(tmp_path / "suite.yaml"), "-o", out, "--model", "teacher"]
        args += ["--base-url", url, "--samples", "2", "--temperature", "0.7", "--no-cache"]
        code, stdout, err = run_main(args, capsys)
    finally:
        server.shutdown()
    assert code == 0, err
    rows = _rows(out)
    assert [(r["id"], r["sample"]) for r in rows] == [
        (f"read-{f}", s) for f in FILES for s in (0, 1)
    ]
    passing = {(r["id"], r["sample"]) for r in rows if r["passed"]}
    assert passing == {("read-a.py", 0), ("read-a.py", 1), ("read-c.py", 0), ("read-c.py", 1)}
    p = rows[0]["provenance"]
    assert p["model"] == "teacher-7b" and p["requested_model"] == "teacher"
    assert p["sampling"]["temperature"] == 0.7 and p["time"]
    assert not (tmp_path / "responses.jsonl.partial").exists()
    # the responses format `eval score` reads: scored again, the same verdicts
    args = ["eval", "score", tmp_path / "suite.yaml", "--responses", out, "--json"]
    code, stdout, err = run_main(args, capsys)
    assert code == 0, err
    assert [c["passed"] for c in json.loads(stdout)["cases"]] == [True, False, True, False]

    sft = tmp_path / "sft.jsonl"
    code, _, err = run_main(
        ["dataset", "from-results", out, "--passed-only", "-o", sft, "--json"], capsys
    )
    assert code == 0, err
    kept = _rows(sft)
    # two samples of a.py (and of c.py) are the same answer: one row each survives the dedupe
    assert sorted(r["id"] for r in kept) == ["reads/read-a.py#0", "reads/read-c.py#0"]
    for r in kept:
        assert r["messages"][-1] == {"role": "assistant", "content": "", **_call_of(r)}
        assert r["source"] == "teacher-7b" and r["tools"] == TOOLS
    manifest = json.loads((tmp_path / "sft.manifest.json").read_text())
    assert manifest["counts"]["removed"] == {"duplicate": 2, "failed": 4}


def _call_of(row):
    return {"tool_calls": row["messages"][-1]["tool_calls"]}


def test_from_results_keeps_reasoning_only_when_asked_and_refuses_eval_prompts(tmp_path, capsys):
    server = scripted_server(lambda body: completion("t", _call(_asked_file(body))))
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        out = tmp_path / "r.jsonl"
        suite = _suite(tmp_path / "suite.yaml", ["a.py", "b.py"])
        code, _, err = run_main(
            ["generate", suite, "-o", out, "-m", "t", "--base-url", url, "--no-cache"], capsys
        )
        assert code == 0, err
    finally:
        server.shutdown()
    held = _suite(tmp_path / "held.yaml", ["b.py"])
    sft = tmp_path / "sft.jsonl"
    args = ["dataset", "from-results", out, "-o", sft, "--keep-reasoning", "--against", held]
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    (row,) = _rows(sft)
    assert row["id"] == "reads/read-a.py#0"
    assert row["messages"][-1]["content"] == "<think>it is a read</think>"
    counts = json.loads((tmp_path / "sft.manifest.json").read_text())["counts"]
    assert counts["removed"] == {"contaminated": 1}
    assert counts["contaminated"][0]["prompt"] == "reads/read-b.py"

    # a row already in the training set is not added again
    again = tmp_path / "again.jsonl"
    args = ["dataset", "from-results", out, "-o", again, "--keep-reasoning"]
    code, _, err = run_main([*args, "--dedupe-against", sft], capsys)
    assert code == 0, err
    assert [r["id"] for r in _rows(again)] == ["reads/read-b.py#0"]


def test_generate_resumes_from_the_partial_file_asking_only_for_the_rest(tmp_path, capsys):
    asked = []

    def flaky(body):
        asked.append(_asked_file(body))
        if _asked_file(body) == "d.py":
            raise ConnectionError("the server died")  # the stub drops the connection
        return completion("m", _call(_asked_file(body)))

    server = scripted_server(flaky)
    suite = _suite(tmp_path / "suite.yaml")
    out = tmp_path / "out.jsonl"
    args = ["generate", suite, "-o", out, "-m", "m", "--no-cache", "--concurrency", "1"]
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        code, _, err = run_main([*args, "--base-url", url], capsys)
        assert code == 2 and "run again to continue" in err, err
        assert not out.exists()
        partial = _rows(tmp_path / "out.jsonl.partial")
        assert sorted(r["id"] for r in partial) == ["read-a.py", "read-b.py", "read-c.py"]
    finally:
        server.shutdown()

    asked.clear()
    server = scripted_server(
        lambda body: asked.append(_asked_file(body)) or completion("m", _call(_asked_file(body)))
    )
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        code, stdout, err = run_main([*args, "--base-url", url, "--json"], capsys)
    finally:
        server.shutdown()
    assert code == 0, err
    assert asked == ["d.py"]  # the three kept answers were not asked again
    summary = json.loads(stdout)
    assert summary["resumed"] == 3 and summary["requested"] == 1 and summary["passed"] == 4
    assert [r["id"] for r in _rows(out)] == [f"read-{f}" for f in FILES]
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_generate_refuses_to_replace_a_file_it_did_not_write(tmp_path):
    out = tmp_path / "mine.jsonl"
    out.write_text('{"id": 1}\n')
    suite = _suite(tmp_path / "suite.yaml")
    r = punie("generate", suite, "-o", out, "-m", "m", "--base-url", "http://127.0.0.1:9")
    assert r.returncode == 2 and "not a Punie responses output" in r.stderr
    assert out.read_text() == '{"id": 1}\n'


@pytest.mark.slow
def test_generate_against_a_second_local_server_records_its_model(tmp_path, tiny_model):
    from punie.serve.server import Server

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(
            json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": f"Hi {i}"}]})
            for i in range(3)
        )
        + "\n"
    )
    out = tmp_path / "teacher.jsonl"
    with Server(tiny_model, log=tmp_path / "teacher.log") as teacher:
        r = punie(
            "generate", prompts, "-o", out, "--model", tiny_model, "--base-url",
            teacher.base_url, "--max-tokens", "8", "--no-cache", "--json",
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    assert [row["id"] for row in rows] == ["p0", "p1", "p2"]
    for row in rows:
        p = row["provenance"]
        assert p["model"] == str(tiny_model)  # the id mlx_lm.server answered with
        assert p["base_url"] == teacher.base_url and p["identity"]["model_hash"]
        assert row["messages"][-1]["content"].startswith("Hi ")
    assert json.loads(r.stdout)["answered_model"] == str(tiny_model)


def test_from_results_reads_eval_results_files_rebuilding_prompts_from_the_suite(tmp_path, capsys):
    server = scripted_server(lambda body: completion("m-1", _call("a.py")))
    suite = _suite(tmp_path / "suite.yaml", ["a.py", "b.py"])
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        args = ["eval", "run", suite, "-m", "m", "--base-url", url, "--run-dir", tmp_path / "r"]
        code, _, err = run_main([*args, "--no-cache", "--json"], capsys)
        assert code == 0, err
    finally:
        server.shutdown()
    sft = tmp_path / "sft.jsonl"
    args = ["dataset", "from-results", tmp_path / "r", "--suite", suite, "--passed-only"]
    code, _, err = run_main([*args, "-o", sft], capsys)
    assert code == 0, err
    (row,) = _rows(sft)
    assert row["id"] == "reads/read-a.py" and row["source"] == "m-1"
    assert row["messages"][0] == {"role": "user", "content": "Show me the file a.py"}
    assert row["messages"][-1]["tool_calls"][0]["function"]["arguments"] == {"path": "a.py"}
