"""HTML reports: intervals, comparisons, inert model text, and a real headless-browser render."""

from __future__ import annotations

import json
import subprocess

import pytest
from typer.testing import CliRunner

from punie.cli import app
from punie.errors import PunieWarning
from punie.eval.compare import compare
from punie.eval.runner import CaseResult, EvalResult
from punie.eval.stats import mcnemar_exact
from punie.platform import chrome_install_hint, current, find_chrome
from punie.report.html import render, write_report

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def run(label: str, outcomes: dict[str, bool], *, content: str = "ok") -> EvalResult:
    cases = tuple(
        CaseResult(
            id=cid,
            category=cid.split("-")[0],
            passed=ok,
            label=None if ok else "value_error",
            reason="" if ok else 'read_file.path: "b" not in ["a"]',
            expected={"calls": [{"name": "read_file", "arguments": {"path": ["a"]}}]},
            content=content,
            tool_calls=None,
            latency_s=0.12,
            completion_tokens=9,
        )
        for cid, ok in outcomes.items()
    )
    return EvalResult(
        suite="tools", kind="tool_calling", label=label, model="m", adapter=None,
        sampling={"temperature": 0.0, "max_tokens": 32}, cases=cases,
    )  # fmt: skip


def outcomes(read: int, listing: int, n: int = 10) -> dict[str, bool]:
    out = {f"read-{i}": i < read for i in range(n)}
    out |= {f"list-{i}": i < listing for i in range(n)}
    return out


def test_hostile_model_text_is_escaped(tmp_path):
    html = render([run("base", {"read-0": False}, content=HOSTILE)], title="t")
    assert "<script>" not in html and 'onerror="document' not in html
    assert "&lt;script&gt;document.title=" in html


def test_report_shows_category_intervals_and_comparison():
    base, adapted = run("base", outcomes(2, 5)), run("adapted", outcomes(9, 5))
    html = render([base, adapted], title="Base vs adapted")
    assert 'data-label="base" data-score="0.3500"' in html
    assert 'data-label="adapted" data-score="0.7000"' in html
    assert "95% CI" in html and "McNemar exact p" in html
    assert "read-2" in html and "flipped to pass" in html


def test_compare_counts_flips_and_tests_them_paired():
    base, adapted = run("base", outcomes(2, 5)), run("adapted", outcomes(9, 4))
    cmp = compare(base, adapted)
    assert cmp.gained == tuple(f"read-{i}" for i in range(2, 9))
    assert cmp.lost == ("list-4",)
    assert cmp.p_value == pytest.approx(mcnemar_exact(7, 1))
    read = next(c for c in cmp.categories if c.category == "read")
    assert read.delta == pytest.approx(0.7) and read.improved and not read.regressed


def test_a_drop_beyond_the_interval_is_a_regression():
    cmp = compare(run("a", outcomes(10, 5)), run("b", outcomes(1, 5)))
    assert [c.category for c in cmp.regressions] == ["read"]
    small = compare(run("a", outcomes(6, 5)), run("b", outcomes(5, 5)))
    assert not small.regressed  # one case of ten is noise, not a regression


def test_cli_compare_fails_on_regression(tmp_path):
    a = run("a", outcomes(10, 5)).write(tmp_path / "tools.a.json")
    b = run("b", outcomes(1, 5)).write(tmp_path / "tools.b.json")
    out = tmp_path / "compare.html"
    gate = CliRunner().invoke(
        app, ["eval", "compare", str(a), str(b), "-o", str(out), "--fail-on-regression"]
    )
    assert gate.exit_code == 1 and "regression" in gate.output
    assert out.is_file()
    fine = CliRunner().invoke(
        app, ["eval", "compare", str(a), str(a), "--json", "--fail-on-regression"]
    )
    assert fine.exit_code == 0, fine.output
    assert json.loads(fine.stdout)["comparisons"][0]["delta"] == 0


def test_loss_curve_is_embedded(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"iteration": i, "train_loss": 3.0 - i / 10} for i in range(1, 11)]
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"iteration": 11, "trai')
    with pytest.warns(PunieWarning, match=r"metrics.jsonl:11: skipped: cut short"):
        html = render([run("base", outcomes(1, 1))], title="t", metrics=metrics)
    assert "Training loss" in html and "<polyline" in html


CHROMIUM = find_chrome()  # PATH, then macOS's app bundles; PUNIE_CHROME overrides both


def _chromium(*args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    cmd += ["--disable-dev-shm-usage", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=chrome_install_hint(current()))
def test_report_renders_in_headless_chromium(tmp_path):
    base = run("base", outcomes(2, 5), content=HOSTILE)
    adapted = run("adapted", outcomes(9, 5))
    report = write_report(tmp_path / "report.html", [base, adapted], title="Rendered report")
    dom = _chromium("--virtual-time-budget=2000", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-500:]
    assert "<title>Rendered report</title>" in dom.stdout  # the hostile script did not run
    assert "pwned" not in dom.stdout.split("</title>")[0]
    assert "35.0%" in dom.stdout and "70.0%" in dom.stdout
    png = tmp_path / "report.png"
    shot = _chromium(f"--screenshot={png}", "--window-size=1200,900", report.as_uri())
    assert shot.returncode == 0, shot.stderr[-500:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # more than a blank page
