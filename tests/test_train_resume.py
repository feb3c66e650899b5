"""Ctrl-C stops cleanly; --resume continues the same run as if it had never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from punie.platform import mentioning
from punie.train.runs import read_metrics
from train_support import workspace

pytestmark = pytest.mark.slow
PUNIE = [sys.executable, "-m", "punie"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    return workspace(tmp_path_factory.mktemp("resume"), tiny_model, "c.toml")


@pytest.fixture(scope="module")
def reference(setup):
    cmd = [*PUNIE, "train", str(setup / "c.toml"), "--runs-dir", str(setup), "--name", "ref"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return setup / "ref"


@pytest.fixture(scope="module")
def interrupted(setup):
    """The same run with 1000 iterations, stopped by SIGINT to its process group."""
    run_dir = setup / "int"
    cmd = [*PUNIE, "train", str(setup / "c.toml"), "--runs-dir", str(setup), "--name", "int",
           "--iters", "1000"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint" / "state.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    return run_dir, proc, stderr.decode()


def test_ctrl_c_leaves_no_process_and_keeps_the_checkpoint(interrupted):
    run_dir, proc, stderr = interrupted
    assert proc.returncode == 130, stderr
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    assert mentioning(str(run_dir)) == []
    record = json.loads((run_dir / "run.json").read_text())
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert record["status"] == "interrupted"
    assert 8 <= state["iteration"] < 32
    assert record["last_iteration"] == state["iteration"]


def test_resume_continues_the_iteration_count_and_the_same_trajectory(interrupted, reference):
    run_dir, _, _ = interrupted
    stopped_at = json.loads((run_dir / "checkpoint" / "state.json").read_text())["iteration"]
    cmd = [*PUNIE, "train", "--resume", str(run_dir), "--iters", "32"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = [r for r in read_metrics(run_dir / "metrics.jsonl") if "train_loss" in r]
    expected = [r for r in read_metrics(reference / "metrics.jsonl") if "train_loss" in r]
    assert [r["iteration"] for r in resumed] == list(range(1, 33))
    # Weights, optimizer state, batch order and RNG all restored: the same losses after resume.
    after = [(r["iteration"], r["train_loss"]) for r in resumed if r["iteration"] > stopped_at]
    want = [(r["iteration"], r["train_loss"]) for r in expected if r["iteration"] > stopped_at]
    assert [i for i, _ in after] == [i for i, _ in want]
    assert [loss for _, loss in after] == pytest.approx([loss for _, loss in want], rel=1e-4)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["resumes"] == 1
