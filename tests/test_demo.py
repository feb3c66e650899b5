"""The main job end to end, shortened: real model, server, mlx_lm training and report."""

import json
import subprocess
import sys

import pytest

from punie.sampling import DEFAULT_SAMPLING

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_reports_both_scores_and_leaves_no_process(tmp_path):
    work = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-c",
        "from punie.cli import main; main()",
        "demo",
        "--workdir",
        str(work),
        "--iters",
        "40",
        "--n-train",
        "120",
        "--n-eval",
        "12",
        "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])

    report = work / "report.html"
    assert summary["report"] == str(report) and report.is_file()
    html = report.read_text()
    base = json.loads((work / "results" / "base.json").read_text())
    adapted = json.loads((work / "results" / "adapted.json").read_text())
    assert base["total"] == adapted["total"] == 12
    assert base["sampling"] == adapted["sampling"] == DEFAULT_SAMPLING.as_dict()
    assert summary["base"] == base["score"] and summary["adapted"] == adapted["score"]
    for result in (base, adapted):
        assert f"{100 * result['score']:.1f}%" in html
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org", "")
    assert (work / "adapters" / "demo" / "adapters.safetensors").is_file()
    # The server and the trainer ran in their own process groups; none outlives the command.
    left = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
    assert left.stdout.strip() == ""
