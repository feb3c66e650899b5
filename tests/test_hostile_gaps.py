"""Hostile input, the gaps left after issue 10: one-file outputs never replace a user's file, the
metrics readers share the one JSONL reader, code scores say what the sandbox did, stats bound
huge rows, a silent server fails within the request timeout, and a JSON array saved as
train.jsonl is refused before a run folder exists.

Each test runs the real `punie` CLI (or the real reader) on real files; the silent server is a
real socket that accepts connections and never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from cli_support import one_line_error, punie
from punie.errors import PunieWarning
from punie.eval.sandbox import protections
from punie.fsio import read_jsonl_lenient, read_jsonl_tolerant
from train_support import config_toml, multi_turn_row, single_turn_row, write_data


def write_lines(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def mixed_rows(tmp_path) -> Path:
    """Ten rows, five of which `--min-messages 3` removes."""
    rows = [multi_turn_row(f"m{i}.py") for i in range(5)]
    rows += [single_turn_row(f"s{i}.py") for i in range(5)]
    return write_lines(tmp_path / "in" / "rows.jsonl", rows)


def results(label: str) -> dict:
    case = {"id": "one", "category": "default", "passed": True, "label": None, "reason": "",
            "expected": {"answer": "2"}, "content": "2", "tool_calls": None}  # fmt: skip
    return {"suite": "s", "kind": "reasoning", "label": label, "model": "m", "adapter": None,
            "sampling": {}, "cases": [case, {**case, "id": "two", "passed": False}]}  # fmt: skip


REASONING_SUITE = """\
name: tiny
kind: reasoning
scorer: numeric
cases:
  - {id: a, prompt: "1 + 1?", expect: {answer: 2}}
  - {id: b, prompt: "2 + 2?", expect: {answer: 4}}
"""


# --- 1: a one-file output replaces only a file Punie wrote --------------------------------------


def test_rejects_never_overwrites_a_users_file(tmp_path, mixed_rows):
    mine = tmp_path / "why.jsonl"
    mine.write_text("my notes\n")
    out = tmp_path / "kept.jsonl"
    filter_ = ["dataset", "filter", str(mixed_rows), "--min-messages", "3", "-o", str(out)]
    line = one_line_error(punie(*filter_, "--rejects", str(mine)))
    assert str(mine) in line and "not a Punie rejects output" in line
    assert mine.read_text() == "my notes\n"
    assert not out.exists()  # refused before any row was written
    ours = tmp_path / "ours.rejects.jsonl"
    for _ in range(2):  # Punie's own rejects file is replaced
        result = punie(*filter_, "--rejects", str(ours))
        assert result.returncode == 0, result.stderr
        assert len(ours.read_text().splitlines()) == 5


def test_a_one_file_output_never_overwrites_a_users_manifest_beside_it(tmp_path, mixed_rows):
    mine = tmp_path / "kept.manifest.json"
    mine.write_text('{"mine": true}\n')
    out = tmp_path / "kept.jsonl"
    line = one_line_error(
        punie("dataset", "filter", str(mixed_rows), "--min-messages", "3", "-o", str(out))
    )
    assert str(mine) in line
    assert mine.read_text() == '{"mine": true}\n' and not out.exists()


def test_compare_report_never_overwrites_a_users_file(tmp_path):
    a, b = tmp_path / "s.a.json", tmp_path / "s.b.json"
    a.write_text(json.dumps(results("a")))
    b.write_text(json.dumps(results("b")))
    mine = tmp_path / "report.html"
    mine.write_text("<html>my page</html>")
    line = one_line_error(punie("eval", "compare", str(a), str(b), "-o", str(mine)))
    assert str(mine) in line and "not a Punie report output" in line
    assert mine.read_text() == "<html>my page</html>"
    ours = tmp_path / "ours.html"
    for _ in range(2):  # a report Punie wrote carries its generator mark and is replaced
        result = punie("eval", "compare", str(a), str(b), "-o", str(ours))
        assert result.returncode == 0, result.stderr
        assert '<meta name="generator" content="punie ' in ours.read_text()


def test_eval_refuses_a_users_report_or_results_file_before_asking_anything(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(REASONING_SUITE)
    mine = tmp_path / "mine.html"
    mine.write_text("<p>mine</p>")
    # nothing listens on port 9: a refusal that came after asking would name the server instead
    run = ["eval", str(suite), "--model", "m", "--base-url", "http://127.0.0.1:9", "--no-cache"]
    line = one_line_error(punie(*run, "--run-dir", str(tmp_path / "r1"), "-o", str(mine)))
    assert str(mine) in line and "127.0.0.1" not in line
    assert mine.read_text() == "<p>mine</p>"
    run_dir = tmp_path / "r2"
    run_dir.mkdir()
    results_file = run_dir / "tiny.m.json"  # --base-url: labelled by the model id
    results_file.write_text('{"mine": 1}')
    line = one_line_error(punie(*run, "--run-dir", str(run_dir)))
    assert str(results_file) in line and "127.0.0.1" not in line
    assert results_file.read_text() == '{"mine": 1}'


# --- 2: the metrics readers parse with punie.jsonl ----------------------------------------------


def deep_line(depth: int = 100_000) -> str:
    return '{"a": ' + "[" * depth + "]" * depth + "}\n"


def test_the_tolerant_reader_drops_a_bom_and_skips_unreadable_lines(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        '\ufeff{"iteration": 1}\n'
        + deep_line()
        + f'{{"n": {"9" * 5000}}}\n'  # an integer past Python's digit limit
        + '{"iteration": 2}\n'
        + '{"iteration": 3',  # cut short by a killed writer
        encoding="utf-8",
    )
    assert read_jsonl_tolerant(log) == [{"iteration": 1}, {"iteration": 2}]


def test_the_lenient_reader_drops_a_bom_and_names_each_skipped_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('\ufeff{"iteration": 1}\n' + deep_line() + '{"iteration": 3', encoding="utf-8")
    with pytest.warns(PunieWarning) as caught:
        rows = list(read_jsonl_lenient(log))
    assert rows == [(1, {"iteration": 1})]
    said = [str(w.message) for w in caught]
    assert said == [
        f"{log}:2: skipped: nested more than 254 levels deep, more than Punie reads",
        f"{log}:3: skipped: cut short (its writer stopped mid-line)",
    ]


# --- 3: code scores printed as JSON say what the sandbox did ------------------------------------


def test_score_json_of_a_code_suite_lists_the_sandbox_protections(tmp_path):
    suite = tmp_path / "code.yaml"
    suite.write_text(
        "name: c\nkind: code\ncases:\n"
        "  - {id: add, prompt: add, expect: {tests: 'assert add(1, 2) == 3'}}\n"
    )
    answers = write_lines(
        tmp_path / "r.jsonl",
        [{"id": "add", "content": "```python\ndef add(a, b):\n    return a + b\n```"}],
    )
    result = punie("eval", "score", str(suite), "--responses", str(answers), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["score"] == 1.0
    assert data["sandbox"] == protections() and data["sandbox"]


# --- 4: stats --model does not tokenize a row surely over the limit -----------------------------


def test_stats_counts_a_huge_row_as_too_long_without_tokenizing_it(tmp_path, tiny_model):
    rows = [single_turn_row(f"f{i}.py") for i in range(3)]
    huge = single_turn_row("huge.py")
    huge["messages"][0]["content"] = "x" * 70_000  # over 2048 tokens at 32 characters a token
    data = write_lines(tmp_path / "rows.jsonl", [*rows, huge])
    result = punie("dataset", "stats", str(data), "--model", str(tiny_model), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["too_long"] == 1
    assert stats["tokens"]["max"] < 200  # the huge row is not in the token distribution
    assert sum(stats["rows"]["rows.jsonl"].values()) == 4
    tight = punie(
        "dataset", "stats", str(data), "--model", str(tiny_model), "--max-seq-length", "1",
        "--json",
    )  # fmt: skip
    assert json.loads(tight.stdout)["too_long"] == 4


# --- 5: a server that accepts and never answers fails within the request timeout ----------------


@pytest.fixture
def silent_server():
    """A real TCP server on 127.0.0.1 that accepts every connection and never writes a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    sock.close()


def test_eval_against_a_silent_server_fails_in_one_line_within_the_request_timeout(
    tmp_path, silent_server
):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(REASONING_SUITE)
    start = time.monotonic()
    result = punie(
        "eval", str(suite), "--model", "m", "--base-url", silent_server, "--no-cache",
        "--run-dir", str(tmp_path / "run"), "--request-timeout", "1.5",
        timeout=60,
    )  # fmt: skip
    took = time.monotonic() - start
    line = one_line_error(result)
    assert "no answer within 1.5s" in line and silent_server in line, line
    assert took < 30, took
    bad = punie("eval", str(suite), "--model", "m", "--base-url", silent_server,
                "--request-timeout", "0")  # fmt: skip
    assert "--request-timeout" in one_line_error(bad)


# --- 6: a JSON array saved as train.jsonl is named before a run folder exists -------------------


@pytest.mark.parametrize("indent", [None, 2])
def test_train_refuses_a_json_array_saved_as_jsonl_before_making_a_run(tmp_path, indent):
    data = write_data(tmp_path / "data")
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    (data / "train.jsonl").write_text(json.dumps(rows, indent=indent))
    config = tmp_path / "config.toml"
    config.write_text(config_toml(tmp_path / "no-model-needed", data))
    runs = tmp_path / "runs"
    result = punie("train", str(config), "--runs-dir", str(runs), "--name", "arr")
    line = one_line_error(result)
    assert str(data / "train.jsonl") in line and "a JSON array, not JSON lines" in line
    assert not (runs / "arr").exists()


def test_a_file_named_where_a_folder_is_wanted_is_one_line(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = one_line_error(punie("dataset", "download", "sample", "-o", str(target)))
    assert str(target) in line
    assert target.read_text() == "mine"
    data = write_data(tmp_path / "data")
    config = tmp_path / "config.toml"
    config.write_text(config_toml(tmp_path / "no-model-needed", data))
    line = one_line_error(punie("train", str(config), "--runs-dir", str(target), "--name", "x"))
    assert str(target) in line
    assert target.read_text() == "mine"


@pytest.mark.parametrize("mine", ["suite.yaml", "report.html", "results/base.json", "data/x.txt"])
def test_demo_refuses_a_users_file_in_its_folder_before_any_work(tmp_path, mine):
    work = tmp_path / "demo"
    (work / mine).parent.mkdir(parents=True)
    (work / mine).write_text("mine")
    line = one_line_error(punie("demo", "--workdir", str(work), timeout=60))
    assert str(work / Path(mine).parts[0]) in line
    assert (work / mine).read_text() == "mine"
    assert not (work / "model").exists()  # refused before the tiny model was built
