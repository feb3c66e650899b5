"""`punie sweep` and `punie runs compare` on the tiny model: a 2x2 grid of very short runs,
killed halfway (SIGTERM) and run again, then two of its runs compared."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_support import punie
from punie.errors import ConfigError
from punie.report.runs import RunComparison, RunSummary, render_runs_page
from punie.sweep import grid_points, parse_grid, point_name
from train_support import config_toml, write_data

GRID = ["--grid", "learning_rate=1e-3,4e-3", "--grid", "rank=2,4"]


def _completed(folder: Path) -> list[str]:
    done = []
    for record in folder.glob("*/run.json"):
        try:
            if json.loads(record.read_text())["status"] == "completed":
                done.append(record.parent.name)
        except (json.JSONDecodeError, KeyError):
            pass  # being written
    return done


@pytest.fixture(scope="module")
def swept(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    data = write_data(root / "data", n_train=8, n_valid=2)
    config = root / "base.toml"
    config.write_text(config_toml(tiny_model, data, iters=4, steps_per_eval=2, save_every=2,
                                  steps_per_report=2))  # fmt: skip
    args = ["sweep", str(config), *GRID, "--runs-dir", str(root / "runs"), "--name", "sw"]
    folder = root / "runs" / "sw"
    first = subprocess.Popen([sys.executable, "-m", "punie", *args], cwd=root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while len(_completed(folder)) < 2:
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "two runs did not finish within 240 s"
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    killed_after = sorted(_completed(folder))
    created = {
        n: json.loads((folder / n / "run.json").read_text())["created"] for n in killed_after
    }
    rerun = punie(*args, "--json", cwd=root, timeout=400)
    assert rerun.returncode == 0, rerun.stderr
    return {"root": root, "folder": folder, "first": first, "killed_after": killed_after,
            "created": created, "result": json.loads(rerun.stdout)}  # fmt: skip


def test_grid_values_are_read_as_toml_and_every_combination_is_a_run():
    grid = parse_grid(["learning_rate=1e-4,2e-4", "rank=8,16", "optimizer=adam,sgd"])
    assert grid["learning_rate"] == [1e-4, 2e-4] and grid["optimizer"] == ["adam", "sgd"]
    points = grid_points(grid)
    assert len(points) == 8 and points[0] == {"learning_rate": 1e-4, "rank": 8, "optimizer": "adam"}
    assert point_name(points[0]) == "learning_rate-0.0001_rank-8_optimizer-adam"
    with pytest.raises(ConfigError, match="--grid lr=1: lr: not a config key"):
        parse_grid(["lr=1"])


@pytest.mark.slow
def test_a_2x2_sweep_ranks_its_runs_and_a_rerun_after_a_kill_skips_finished_ones(swept):
    result, folder = swept["result"], swept["folder"]
    assert swept["first"].returncode != 0  # it was stopped before the end
    assert len(swept["killed_after"]) >= 2
    rows = result["runs"]
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    skipped = {r["name"] for r in rows if r["action"] == "skipped"}
    assert skipped == set(swept["killed_after"])  # finished before the kill: not trained again
    for name, created in swept["created"].items():
        assert json.loads((folder / name / "run.json").read_text())["created"] == created
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores)  # lowest best validation loss first
    assert result["ranked_by"] == "best val_loss" and result["best"] == rows[0]["name"]
    best_val = json.loads((folder / rows[0]["name"] / "run.json").read_text())["best_val_loss"]
    assert rows[0]["score"] == best_val
    page = (folder / "sweep.html").read_text()
    assert page.count('<span class="tag">best</span>') == 1
    assert f'data-run="{rows[0]["name"]}"' in page.split("best</span>")[0]
    assert json.loads((folder / "sweep.json").read_text())["best"] == rows[0]["name"]


@pytest.mark.slow
def test_runs_compare_shows_config_differences_final_metrics_and_curves(swept):
    folder = swept["folder"]
    a, b = "learning_rate-0.001_rank-2", "learning_rate-0.004_rank-4"
    out = swept["root"] / "compare.html"
    done = punie("runs", "compare", a, b, "--runs-dir", str(folder), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["config_differences"] == {"rank": [2, 4], "learning_rate": [0.001, 0.004]}
    assert [r["name"] for r in summary["runs"]] == [a, b]
    assert all(r["last_iteration"] == 4 and r["token_accuracy"] is not None
               for r in summary["runs"])  # fmt: skip
    page = out.read_text()
    assert page.count("<polyline") == 4  # train and validation, for each run
    assert "<script" not in page
    table = punie("runs", "compare", a, b, "--runs-dir", str(folder), "--out", "-")
    assert table.returncode == 0 and "learning_rate" in table.stdout and "0.004" in table.stdout


def test_runs_compare_page_escapes_names_and_values():
    hostile = "<script>alert(1)</script>"
    run = RunSummary(hostile, "/tmp/x", {"data": hostile}, {"status": hostile},
                     {"train_loss": [(1.0, 2.0), (2.0, 1.0)]})  # fmt: skip
    page = render_runs_page(RunComparison((run, run), {"data": [hostile, "d"]}), title=hostile)
    assert hostile not in page and "&lt;script&gt;" in page


def test_runs_compare_needs_two_runs(tmp_path):
    done = punie("runs", "compare", "only", "--runs-dir", str(tmp_path))
    assert done.returncode != 0 and "only: no such run" in done.stderr


def test_a_suite_ranks_higher_scores_first_and_unscored_runs_last(tmp_path):
    from punie.sweep import SweepRun, rank

    def run(name: str, score: float | None) -> SweepRun:
        status = "completed" if score is not None else "failed"
        return SweepRun(name, tmp_path / name, {}, status, "trained", score)

    ranking = rank([run("a", 0.5), run("b", 0.9), run("c", None), run("d", 0.0)], "held-out")
    assert [name for name, _ in ranking.rows] == ["b", "a", "d", "c"]
    assert ranking.best == "b" and ranking.higher_is_better and ranking.by == "held-out"
