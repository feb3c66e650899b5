"""Hostile input on the output side (issue 10, items 1, 6, 7, 9): Punie never deletes what it did
not write, one process writes a run, names never escape their folder, and a bad disk or a damaged
log is one line, not a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cli_support import PUNIE, one_line_error, punie
from punie.fsio import MARKER
from punie.session import results_path, variant_label
from train_support import single_turn_row, workspace


def write_rows(path: Path, n: int, pad: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [single_turn_row(f"f{i}.py" + "x" * pad) for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def rows(tmp_path) -> Path:
    return write_rows(tmp_path / "in" / "train.jsonl", 40)


# --- item 1: an output folder is replaced only when Punie wrote everything in it -------------


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["dataset", "split", "{rows}", "-o", "{out}"],
        ["dataset", "filter", "{rows_dir}", "--min-turn-chars", "1", "-o", "{out}"],
        ["dataset", "download", "sample", "--max", "20", "-o", "{out}"],
        ["model", "tiny", "{out}"],
    ],
    ids=["split", "filter", "download", "model-tiny"],
)
def test_an_output_folder_holding_a_users_file_is_refused_and_kept(tmp_path, rows, command):
    out = user_folder(tmp_path / "d")
    args = [a.format(rows=rows, rows_dir=rows.parent, out=out) for a in command]
    line = one_line_error(punie(*args))
    assert str(out) in line and "notes.txt" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".d.")]  # no temp left


def test_output_dot_never_empties_the_current_folder(tmp_path, rows):
    here = user_folder(tmp_path / "work")
    line = one_line_error(punie("dataset", "split", str(rows), "-o", ".", cwd=here))
    assert line.startswith("error: .:")
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt"]


def test_a_previous_output_of_the_same_kind_is_replaced(tmp_path, rows):
    out = tmp_path / "splits"
    assert punie("dataset", "split", str(rows), "-o", str(out)).returncode == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["kind"] == "dataset" and "train.jsonl" in marker["files"]
    again = punie("dataset", "split", str(rows), "-o", str(out), "--seed", "7")
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "manifest.json").read_text())["seed"] == 7


def test_a_file_added_to_a_previous_output_blocks_its_replacement(tmp_path, rows):
    out = tmp_path / "splits"
    assert punie("dataset", "split", str(rows), "-o", str(out)).returncode == 0
    (out / "extra").mkdir()
    (out / "extra" / "keep.md").write_text("mine")
    line = one_line_error(punie("dataset", "split", str(rows), "-o", str(out)))
    assert "extra" in line
    assert (out / "extra" / "keep.md").read_text() == "mine"


def test_an_output_of_another_kind_is_refused(tmp_path, rows):
    model = tmp_path / "m"
    assert punie("model", "tiny", str(model)).returncode == 0
    line = one_line_error(punie("dataset", "split", str(rows), "-o", str(model)))
    assert "model" in line and "dataset" in line
    assert (model / "model.safetensors").is_file()


@pytest.mark.parametrize("suffix", ["", "/sub"])
def test_a_folder_output_naming_a_file_is_one_line(tmp_path, rows, suffix):
    target = tmp_path / "f.txt"
    target.write_text("mine")
    line = one_line_error(punie("dataset", "split", str(rows), "-o", f"{target}{suffix}"))
    assert str(target) in line
    assert target.read_text() == "mine"


def test_a_file_output_never_overwrites_a_users_file(tmp_path, rows):
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"keep": true}\n')
    line = one_line_error(
        punie("dataset", "filter", str(rows), "--min-turn-chars", "1", "-o", str(mine))
    )
    assert str(mine) in line
    assert mine.read_text() == '{"keep": true}\n'
    ours = tmp_path / "ours.jsonl"
    for _ in range(2):  # Punie's own output, listed in its manifest, is replaced
        result = punie("dataset", "filter", str(rows), "--min-turn-chars", "1", "-o", str(ours))
        assert result.returncode == 0, result.stderr


# --- items 1 and 6: run folders: --overwrite replaces only a stopped Punie run -----------------


@pytest.fixture
def train_ws(tmp_path, tiny_model) -> Path:
    return workspace(tmp_path, tiny_model, "c.toml")


def train(ws: Path, name: str, *extra: str, **kw) -> subprocess.CompletedProcess:
    return punie("train", str(ws / "c.toml"), "--runs-dir", str(ws / "runs"), "--name", name,
                 *extra, **kw)  # fmt: skip


def test_train_overwrite_refuses_a_folder_that_is_not_a_run(train_ws):
    folder = user_folder(train_ws / "runs" / "x")
    for extra in ([], ["--overwrite"]):
        line = one_line_error(train(train_ws, "x", *extra))
        assert str(folder) in line and "not a Punie run" in line
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


@contextlib.contextmanager
def holding_the_lock(run_dir: Path):
    """Another process holding the run folder's lock, as a running `punie train` does."""
    code = (
        "import sys, time\nfrom punie.train.runs import lock_run\n"
        "lock = lock_run(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"held\n"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_run_being_written_is_refused_to_a_second_writer(train_ws):
    run_dir = train_ws / "runs" / "x"
    (run_dir).mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"name": "x", "status": "running"}))
    with holding_the_lock(run_dir) as pid:
        for extra in ([], ["--overwrite"]):
            line = one_line_error(train(train_ws, "x", *extra))
            assert "'x'" in line and f"pid {pid}" in line
        listed = json.loads(punie("runs", "list", "--runs-dir", str(train_ws / "runs"),
                                  "--json").stdout)  # fmt: skip
        assert listed[0]["status"] == "running"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    listed = json.loads(punie("runs", "list", "--runs-dir", str(train_ws / "runs"),
                              "--json").stdout)  # fmt: skip
    assert listed[0]["status"] == "interrupted"  # the lock is gone with its holder


def test_a_stale_pid_of_a_live_process_does_not_make_a_run_live(train_ws):
    run_dir = train_ws / "runs" / "x"
    run_dir.mkdir(parents=True)
    record = {"name": "x", "status": "running", "pid": os.getpid(), "created": 1.0}
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / ".lock").write_text(f"{os.getpid()}\n")  # left by a run that died
    listed = json.loads(punie("runs", "list", "--runs-dir", str(train_ws / "runs"),
                              "--json").stdout)  # fmt: skip
    assert listed[0]["status"] == "interrupted"


@pytest.mark.slow
def test_two_trainings_of_one_run_never_both_run(train_ws):
    first = subprocess.Popen(
        [*PUNIE, "train", str(train_ws / "c.toml"), "--runs-dir", str(train_ws / "runs"),
         "--name", "x", "--iters", "2000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        metrics = train_ws / "runs" / "x" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not metrics.is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        for extra in ([], ["--overwrite"]):
            line = one_line_error(train(train_ws, "x", *extra))
            assert "'x'" in line and f"pid {first.pid}" in line
        resume = punie("train", "--resume", "x", "--runs-dir", str(train_ws / "runs"))
        assert f"pid {first.pid}" in one_line_error(resume)
        assert first.poll() is None and metrics.is_file()
    finally:
        os.killpg(first.pid, 2)
        first.wait(timeout=60)
    record = json.loads((train_ws / "runs" / "x" / "run.json").read_text())
    assert record["status"] == "interrupted"
    again = train(train_ws, "x", "--overwrite", "--iters", "2", timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]


# --- item 7: suite names and labels become file names only when safe ---------------------------


def write_suite(path: Path, name: str) -> Path:
    suite = {
        "name": name,
        "kind": "reasoning",
        "cases": [{"id": "one", "prompt": "1+1?", "expect": {"answer": "2"}}],
    }
    path.write_text(json.dumps(suite), encoding="utf-8")  # JSON is YAML
    return path


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "..", ".hidden", "a\\b", ""])
def test_a_suite_name_that_is_not_a_safe_file_name_is_refused_at_load(tmp_path, name):
    suite = write_suite(tmp_path / "s.yaml", name)
    answers = tmp_path / "r.jsonl"
    answers.write_text('{"id": "one", "content": "2"}\n')
    line = one_line_error(punie("eval", "score", str(suite), "--responses", str(answers)))
    assert f"{suite}: name:" in line and "safe file name" in line


def test_the_results_writer_never_leaves_the_run_folder(tmp_path):
    for suite, label in [("../../x", "base"), ("/etc/passwd", "a/../../b"), ("s", "..")]:
        path = results_path(tmp_path, suite, label)
        assert path.parent == tmp_path and path.name.endswith(".json")


def test_labels_differing_only_in_case_get_their_own_files():
    taken = {"base"}
    label = variant_label("adapters/Base", taken)
    assert label.casefold() != "base"
    assert variant_label("runs/EXP", {"exp", "EXP-2"}).casefold() == "exp-3"


def test_suites_whose_names_differ_only_in_case_are_refused(tmp_path):
    a = write_suite(tmp_path / "a.yaml", "Exp")
    b = write_suite(tmp_path / "b.yaml", "exp")
    result = punie("eval", "run", str(a), str(b), "--model", str(tmp_path / "no-model"),
                   "--run-dir", str(tmp_path / "run"))  # fmt: skip
    line = one_line_error(result)
    assert "'exp'" in line and "'Exp'" in line
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.json"))


# --- item 9: a bad disk, a damaged metrics or results file: one line, never a traceback --------


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 KiB filesystem (tmpfs); `mount` needs root, so elsewhere the test is skipped."""
    mounted = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, small_disk):
    big = write_rows(tmp_path / "big" / "train.jsonl", 400, pad=200)  # > 64 KiB
    disk = small_disk("size=64k")
    split = ["split", str(big), "-o", str(disk / "out")]
    filtered = ["filter", str(big), "--min-turn-chars", "1", "-o", str(disk / "o.jsonl")]
    for args in (split, filtered):
        line = one_line_error(punie("dataset", *args))
        assert "No space left on device" in line and str(disk) in line
        assert list(disk.iterdir()) == []


def test_a_read_only_disk_is_one_line(tmp_path, rows, small_disk):
    disk = small_disk("ro,size=64k")
    line = one_line_error(punie("dataset", "split", str(rows), "-o", str(disk / "out")))
    assert "Read-only file system" in line and str(disk / "out") in line
    line = one_line_error(punie("model", "tiny", str(disk / "m")))
    assert "Read-only file system" in line


def test_a_read_only_run_folder_is_one_line_at_the_cli_boundary(tmp_path, small_disk):
    disk = small_disk("ro,size=64k")
    result = punie("eval", "run", "reasoning-basic", "--model", str(tmp_path / "none"),
                   "--run-dir", str(disk / "run"))  # fmt: skip
    line = one_line_error(result)
    assert str(disk / "run") in line and "Read-only file system" in line


def results(tmp_path: Path, label: str, metrics: Path | None = None) -> dict:
    case = {"id": "one", "category": "default", "passed": True, "label": None, "reason": "",
            "expected": {"answer": "2"}, "content": "2", "tool_calls": None,
            "latency_s": 0.1}  # fmt: skip
    data = {"suite": "s", "kind": "reasoning", "label": label, "model": "m", "adapter": None,
            "sampling": {}, "cases": [case, {**case, "id": "two", "passed": False}],
            "metrics": str(metrics) if metrics else None}  # fmt: skip
    return data


def test_damaged_metrics_lines_are_skipped_with_a_warning_and_the_chart_renders(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        '{"iteration": 1, "train_loss": 2.0}\n'
        '{"iteration": 2, "train_loss": NaN}\n'
        "not json\n"
        '{"iteration": "three", "train_loss": 1.0}\n'
        '{"iteration": 4, "train_loss": Infinity, "val_loss": -Infinity}\n'
        '{"iteration": 5, "train_loss": 1.0, "val_loss": 1.5}\n'
    )
    a, b = tmp_path / "s.a.json", tmp_path / "s.b.json"
    a.write_text(json.dumps(results(tmp_path, "a", metrics)))
    b.write_text(json.dumps(results(tmp_path, "b")))
    out = tmp_path / "r.html"
    result = punie("eval", "compare", str(a), str(b), "-o", str(out))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    for where in (":2: train_loss", ":3: skipped", ":4: iteration", ":4: ", ":5: val_loss"):
        assert f"warning: {metrics}{where}" in result.stderr
    html = out.read_text()
    svgs = [s + "</svg>" for s in html.split("<svg")[1:]]
    for svg in svgs:  # every chart is well-formed SVG with only finite coordinates
        root = ET.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")
        for el in root.iter():
            assert not any(
                bad in v.lower() for v in el.attrib.values() for bad in ("nan", "inf")
            ), el.attrib
    assert "<polyline" in html


def test_a_damaged_case_in_a_results_file_is_skipped_with_a_warning(tmp_path):
    a, b = tmp_path / "s.a.json", tmp_path / "s.b.json"
    a.write_text(json.dumps(results(tmp_path, "a")))
    damaged = results(tmp_path, "b")
    damaged["cases"][1] = {**damaged["cases"][1], "passed": "yes", "latency_s": None}
    damaged["cases"].append("not a case")
    damaged["cases"][0]["latency_s"] = float("nan")
    b.write_text(json.dumps(damaged))
    result = punie("eval", "compare", str(a), str(b), "--json")
    assert result.returncode == 0, result.stderr
    assert f"warning: {b}: cases[1]: skipped: passed" in result.stderr
    assert f"warning: {b}: cases[2]: skipped" in result.stderr
    assert f"warning: {b}: cases[0]: latency_s" in result.stderr
    assert json.loads(result.stdout)["comparisons"][0]["suite"] == "s"
    broken = tmp_path / "s.c.json"
    broken.write_text('{"cases": [1, 2')
    line = one_line_error(punie("eval", "compare", str(a), str(broken)))
    assert str(broken) in line
