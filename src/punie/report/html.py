"""Self-contained HTML reports: eval results in, one file out (inline CSS and SVG, no network).

Jinja2 autoescaping is on for every template, so model text is always shown, never run. The SVG
charts are built here from numbers and our own labels, each label escaped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from punie import __version__
from punie.errors import warn
from punie.eval.compare import Comparison, compare
from punie.eval.runner import EvalResult
from punie.eval.stats import wilson
from punie.fsio import atomic_file, read_jsonl_lenient

COLOURS = ("#5b7bd5", "#2e9e62", "#e07b39", "#8e5bd5", "#c9a227", "#3aa6b9")


def bar_chart(runs: list[EvalResult], width: int = 720) -> str:
    """Grouped horizontal bars, one group per category (and "overall"), with 95% Wilson whiskers."""
    groups = [("overall", [(r.passed, len(r.cases)) for r in runs])]
    cats = sorted({c.category for r in runs for c in r.cases})
    if len(cats) > 1:
        for cat in cats:
            groups.append((cat, [r.by_category().get(cat, (0, 0)) for r in runs]))
    bar, gap, left, right = 14, 10, 150, 100
    scale = width - left - right
    top = 22  # the legend
    height = top + len(groups) * (bar * len(runs) + gap) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        ' role="img" aria-label="pass rate per category with 95% intervals">'
    ]
    for i, r in enumerate(runs):
        x = left + i * 130
        parts.append(
            f'<rect x="{x}" y="2" width="12" height="12" fill="{COLOURS[i % len(COLOURS)]}"/>'
            f'<text x="{x + 16}" y="12" font-size="12">{escape(r.label[:16])}</text>'
        )
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x = left + scale * t
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - 22}" stroke="#e3e6ee"/>'
            f'<text x="{x:.1f}" y="{height - 8}" font-size="11" text-anchor="middle"'
            f' fill="#667">{int(t * 100)}%</text>'
        )
    y = top + 4
    for name, counts in groups:
        parts.append(
            f'<text x="0" y="{y + bar * len(runs) / 2 + 4:.1f}" font-size="12">'
            f"{escape(name[:22])}</text>"
        )
        for i, (p, n) in enumerate(counts):
            rate = p / n if n else 0.0
            lo, hi = wilson(p, n)
            colour = COLOURS[i % len(COLOURS)]
            parts += [
                f'<rect x="{left}" y="{y}" width="{scale * rate:.1f}" height="{bar - 2}"'
                f' fill="{colour}"><title>{escape(runs[i].label)}: {p}/{n}</title></rect>',
                f'<line x1="{left + scale * lo:.1f}" x2="{left + scale * hi:.1f}"'
                f' y1="{y + bar / 2 - 1}" y2="{y + bar / 2 - 1}"'
                ' stroke="#222" stroke-width="1.5"/>',
                f'<text x="{left + scale + 6}" y="{y + bar - 3}" font-size="11">'
                f"{100 * rate:.0f}% ({p}/{n})</text>",
            ]
            y += bar
        y += gap
    parts.append("</svg>")
    return "".join(parts)


def loss_chart(metrics_path: Path | str | None, width: int = 640, height: int = 200) -> str | None:
    """The train/val loss curve from a run's metrics.jsonl, as inline SVG; None without data."""
    if not metrics_path or not Path(metrics_path).is_file():
        return None
    series = loss_points(metrics_path)
    points = series["train_loss"] + series["val_loss"]
    if not points:
        return None
    x_max = max(p[0] for p in points) or 1
    y_lo = min(0.0, *(p[1] for p in points))  # a loss below 0 (a reward) still fits
    y_max = max(p[1] for p in points)
    span = (y_max - y_lo) or 1
    pad = 30

    def xy(p):
        return (
            f"{pad + (width - 2 * pad) * p[0] / x_max:.1f},"
            f"{height - pad - (height - 2 * pad) * (p[1] - y_lo) / span:.1f}"
        )

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    for key, colour in (("train_loss", "#5b7bd5"), ("val_loss", "#e07b39")):
        if series[key]:
            pts = " ".join(xy(p) for p in series[key])
            svg.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
            svg.append(
                f'<text x="{width - 120}" y="{20 if key == "train_loss" else 36}" '
                f'fill="{colour}" font-size="12">{key}</text>'
            )
    svg.append(
        f'<text x="{pad}" y="{height - 8}" font-size="11">0 … {x_max:g} iterations; '
        f"loss {y_lo:.2f} … {y_max:.2f}</text></svg>"
    )
    return "".join(svg)


def loss_points(metrics_path: Path | str) -> dict[str, list[tuple[float, float]]]:
    """The (iteration, loss) points of a metrics.jsonl that can be drawn; a line or a value that
    cannot (bad JSON, NaN, inf, not a number) is left out with a warning naming file:line."""
    series: dict[str, list[tuple[float, float]]] = {"train_loss": [], "val_loss": []}
    for n, m in read_jsonl_lenient(metrics_path):
        it = m.get("iteration")
        if not _finite(it):
            warn(f"{metrics_path}:{n}: iteration: {it!r} is not a finite number; line skipped")
            continue
        for key, points in series.items():
            value = m.get(key)
            if value is None:
                continue
            if _finite(value):
                points.append((float(it), float(value)))
            else:
                warn(f"{metrics_path}:{n}: {key}: {value!r} is not a finite number; not drawn")
    return series


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _shown(case) -> str:
    text = case.content or ""
    if case.tool_calls:
        calls = json.dumps(case.tool_calls, ensure_ascii=False)
        text = f"{text}\n{calls}" if text.strip() else calls
    return text


@dataclass(frozen=True)
class SuiteSection:
    suite: str
    kind: str
    runs: list[EvalResult]
    comparisons: list[Comparison]  # each later run against the first
    chart: str
    categories: list[str]
    case_rows: list[dict]


def _section(runs: list[EvalResult]) -> SuiteSection:
    by_id = [{c.id: c for c in run.cases} for run in runs]
    ids = list(dict.fromkeys(c.id for run in runs for c in run.cases))
    first = {}
    for index in reversed(by_id):
        first.update(index)
    rows = []
    for case_id in ids:
        cells = []
        for index in by_id:
            c = index.get(case_id)
            cells.append({**c.__dict__, "shown": _shown(c)} if c else None)
        rows.append(
            {
                "id": case_id,
                "category": first[case_id].category,
                "expected": json.dumps(first[case_id].expected, ensure_ascii=False),
                "cells": cells,
                "flipped": len({c["passed"] for c in cells if c}) > 1,
            }
        )
    return SuiteSection(
        suite=runs[0].suite,
        kind=runs[0].kind,
        runs=runs,
        comparisons=[compare(runs[0], r) for r in runs[1:]],
        chart=bar_chart(runs),
        categories=sorted({c.category for run in runs for c in run.cases}),
        case_rows=rows,
    )


def render(
    runs: list[EvalResult], *, title: str, metrics: Path | str | None = None, notes: str = ""
) -> str:
    """One page for any number of runs: a section per suite, later runs compared with the first."""
    if not runs:
        raise ValueError("a report needs at least one run")
    env = Environment(
        loader=PackageLoader("punie.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.globals["wilson"] = wilson
    suites = list(dict.fromkeys(r.suite for r in runs))
    sections = [_section([r for r in runs if r.suite == s]) for s in suites]
    metrics = metrics or next((r.metrics for r in runs if r.metrics), None)
    return env.get_template("report.html.j2").render(
        title=title,
        sections=sections,
        loss_svg=loss_chart(metrics) if metrics else None,
        metrics_path=str(metrics) if metrics else None,
        notes=notes,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
    )


def write_report(
    path: Path | str,
    runs: list[EvalResult],
    *,
    title: str,
    metrics: Path | str | None = None,
    notes: str = "",
) -> Path:
    with atomic_file(path, kind="report") as f:
        f.write(render(runs, title=title, metrics=metrics, notes=notes))
    return Path(path)
