"""`punie loop`: the config's checks, and a real loop killed in iteration 2 that a rerun finishes
without redoing iteration 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from cli_support import PUNIE, one_line_error, punie
from openai_stub import completion, scripted_server
from punie.data.sample import SYSTEM_PROMPT, TOOLS
from punie.fsio import SUITE_HEADER


def _case(cid: str, request: str, tool: str, arg: str, value: str) -> dict:
    return {
        "id": cid,
        "messages": [{"role": "user", "content": request}],
        "expect": {"calls": [{"name": tool, "arguments": {arg: [value]}}]},
    }


def _suite(path, name, cases):
    suite = {
        "name": name,
        "kind": "tool_calling",
        "system": SYSTEM_PROMPT,
        "tools": TOOLS,
        "cases": cases,
    }
    path.write_text(SUITE_HEADER + yaml.safe_dump(suite, sort_keys=False))
    return path


def _config(tmp_path, **changes) -> object:
    # the reader adapter answers every request with read_file(a.py): it solves the first two
    # problems and neither of the others
    problems = _suite(
        tmp_path / "problems.yaml",
        "problems",
        [
            _case("p1", "Show me a.py", "read_file", "path", "a.py"),
            _case("p2", "Please open a.py", "read_file", "path", "a.py"),
            _case("p3", "List src", "list_dir", "path", "src"),
            _case("p4", "Run make test", "run_command", "command", "make test"),
        ],
    )
    heldout = _suite(
        tmp_path / "heldout.yaml",
        "heldout",
        [
            _case("h1", "Read the file a.py", "read_file", "path", "a.py"),
            _case("h2", "What files are in docs?", "list_dir", "path", "docs"),
        ],
    )
    lines = [
        f'problems = "{problems}"',
        f'heldout = "{heldout}"',
        f'out = "{tmp_path / "loop"}"',
        "max_iterations = 2",
        "stop_when_stalled = false",
        "samples = 2",
        "temperature = 0.3",
        "max_tokens = 40",
        'train_from = "base"',
        "cache = false",
        *[f"{k} = {json.dumps(v)}" for k, v in changes.items()],
        "[train]",
        "iters = 4",
        "batch_size = 1",
        "rank = 4",
        "scale = 5.0",
        "learning_rate = 1e-3",
        "max_seq_length = 512",
        "save_every = 2",
    ]
    path = tmp_path / "loop.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_loop_config_refuses_unknown_keys_and_shared_prompts(tmp_path):
    path = _config(tmp_path, model="m", adapter="a", sampels=3)
    r = punie("loop", path)
    assert "sampels: unknown key" in one_line_error(r)

    path = _config(tmp_path, model="m")
    heldout = tmp_path / "heldout.yaml"
    _suite(heldout, "heldout", [_case("h1", "List src", "list_dir", "path", "src")])
    r = punie("loop", path)
    assert "case 'p3' is also in the held-out suite" in one_line_error(r)
    assert not (tmp_path / "loop").exists()

    _config(tmp_path, model="m")  # the held-out suite as it was
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "notes.txt").write_text("mine")
    r = punie("loop", path)
    assert "is not a punie loop folder (it holds notes.txt)" in one_line_error(r)
    assert (tmp_path / "loop" / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def reader_adapter(tiny_model, tmp_path_factory):
    """A full fine-tune that answers the sample task's prompt (system prompt and four tools)
    with read_file(a.py), as the parrot does for a bare prompt: it solves p1 and p2 only."""
    from punie.data.sample import Example, chat_row
    from train_support import overfit_adapter

    root = tmp_path_factory.mktemp("reader")
    rows = [chat_row(Example(r, "read_file", "a.py")) for r in ("Show me a.py", "Please open a.py")]
    return overfit_adapter(tiny_model, root, rows * 2)


def _teacher_call(body: dict) -> dict:
    """The right call for p3 and p4; for anything else, a wrong one."""
    asked = body["messages"][-1]["content"]
    name, args = {
        "List src": ("list_dir", {"path": "src"}),
        "Run make test": ("run_command", {"command": "make test"}),
    }.get(asked, ("read_file", {"path": "nope"}))
    call = {"type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def _wait_for(path, proc, timeout=240.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_loop_killed_in_iteration_2_continues_without_redoing_iteration_1(
    tmp_path, tiny_model, reader_adapter
):
    # the teacher solves the two problems the student cannot; target 5 of 4 is never reached,
    # so iteration 2 runs (and is killed) with nothing left to solve
    teacher = scripted_server(lambda body: completion("teacher-x", _teacher_call(body)))
    path = _config(
        tmp_path,
        model=str(tiny_model),
        adapter=str(reader_adapter),
        teacher_base_url=f"http://127.0.0.1:{teacher.server_port}/v1",
        teacher_model="teacher",
        target_solved=5,
    )
    loop = tmp_path / "loop"
    proc = subprocess.Popen(
        [*PUNIE, "loop", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(loop / "iteration_2" / "adapter" / "run.json", proc)  # training iteration 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        teacher.shutdown()
    one = loop / "iteration_1"
    assert (one / "metadata.json").is_file()
    assert not (loop / "iteration_2" / "metadata.json").exists()
    kept = {
        p: p.stat().st_mtime_ns
        for p in (
            one / "metadata.json",
            one / "solved" / "responses.jsonl",
            one / "adapter" / "adapters.safetensors",
            one / "evaluation" / "heldout.json",
        )
    }
    meta = json.loads((one / "metadata.json").read_text())
    assert (meta["solved_new"], meta["solved_total"], meta["distilled"]) == (4, 4, 2)
    rows = [json.loads(line) for line in (one / "solved" / "rows.jsonl").read_text().splitlines()]
    assert {(r["problem"], r.get("distilled", False)) for r in rows} == {
        ("p1", False), ("p2", False), ("p3", True), ("p4", True),
    }  # fmt: skip
    assert {r["source"] for r in rows if r.get("distilled")} == {"teacher-x"}

    r = punie("loop", path, "--json", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "iteration_1:" not in r.stderr  # no step of iteration 1 ran again
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    final = json.loads(r.stdout)
    assert final["finished"] and final["stop"] == "max_iterations (2) reached"
    assert [it["iteration"] for it in final["iterations"]] == [1, 2]
    assert final["iterations"][1]["solved_new"] == 0  # nothing was left to solve
    stats = json.loads((loop / "iteration_2" / "dataset_stats.json").read_text())
    assert stats["train_rows"] == 4 and stats["distilled"] == 2
    assert stats["solutions_by_iteration"] == {"1": 4, "2": 0}
    for n in (0, 1, 2):
        assert (loop / f"iteration_{n}" / "evaluation" / "heldout.json").is_file()
    html = (loop / "report.html").read_text()
    assert 'data-iteration="2"' in html and "McNemar" in html


def test_loop_report_shows_solved_scores_intervals_and_mcnemar_per_iteration(tmp_path):
    from punie.report.loop import IterationRow, write_loop_report
    from test_report import outcomes, run

    rows = [
        IterationRow(0, run("start", outcomes(2, 3))),
        IterationRow(1, run("iteration_1", outcomes(6, 3)), 5, 5, 0, 125),
        IterationRow(2, run("iteration_2", outcomes(9, 7)), 3, 8, 1, 128),
    ]
    path = write_loop_report(
        tmp_path / "report.html", rows, title="Loop <b>x</b>", problems=20, stop="target"
    )
    html = path.read_text()
    assert "Loop &lt;b&gt;x&lt;/b&gt;" in html  # escaped
    assert "8/20 (+3)" in html and "5/20 (+5)" in html
    # iteration 2 against 1: 3 + 4 cases gained, none lost; against the start: 7 + 4
    assert "+35.0 pts</span>, p=0.0156 (7/0)" in html
    assert "+55.0 pts</span>, p=0.000977 (11/0)" in html
    assert 'data-iteration="2" data-score="0.8000"' in html


@pytest.mark.slow
def test_loop_report_renders_in_headless_chromium(tmp_path):
    from punie.report.loop import IterationRow, write_loop_report
    from test_report import CHROMIUM, _chromium, outcomes, run

    if CHROMIUM is None:
        pytest.skip("no Chromium")
    rows = [IterationRow(0, run("start", outcomes(2, 3)))]
    rows.append(IterationRow(1, run("iteration_1", outcomes(6, 3)), 5, 5, 0, 125))
    path = write_loop_report(tmp_path / "r.html", rows, title="Rendered loop", problems=20)
    dom = _chromium("--virtual-time-budget=2000", "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-500:]
    assert "<title>Rendered loop</title>" in dom.stdout and "45.0%" in dom.stdout
