"""Self-contained HTML reports: eval results in, one file out (inline CSS and SVG, no network).

Jinja2 autoescaping is on for every template, so model text is always shown, never run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from punie import __version__
from punie.eval.runner import EvalResult
from punie.eval.stats import mcnemar_exact
from punie.fsio import atomic_file


@dataclass(frozen=True)
class Comparison:
    """B against A on the cases both ran."""

    delta: float
    gained: tuple[str, ...]  # failed in A, passed in B
    lost: tuple[str, ...]
    p_value: float


def compare(a: EvalResult, b: EvalResult) -> Comparison:
    pa = {c.id: c.passed for c in a.cases}
    pb = {c.id: c.passed for c in b.cases}
    shared = sorted(pa.keys() & pb.keys())
    gained = tuple(i for i in shared if pb[i] and not pa[i])
    lost = tuple(i for i in shared if pa[i] and not pb[i])
    n = len(shared) or 1
    delta = (sum(pb[i] for i in shared) - sum(pa[i] for i in shared)) / n
    return Comparison(delta, gained, lost, mcnemar_exact(len(gained), len(lost)))


def bar_chart(runs: list[EvalResult], width: int = 640) -> str:
    """Horizontal bars with 95% Wilson intervals, as inline SVG."""
    row, left, right = 34, 120, 60
    scale = width - left - right
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row * len(runs) + 24}"'
        ' role="img" aria-label="scores with 95% intervals">'
    ]
    for i, run in enumerate(runs):
        y = 8 + i * row
        lo, hi = run.interval
        parts += [
            f'<text x="0" y="{y + 16}" font-size="13">{escape(run.label)}</text>',
            f'<rect x="{left}" y="{y}" width="{scale * run.score:.1f}" height="20"'
            f' fill="{"#5b7bd5" if i == 0 else "#2e9e62"}"/>',
            f'<line x1="{left + scale * lo:.1f}" x2="{left + scale * hi:.1f}" y1="{y + 10}"'
            f' y2="{y + 10}" stroke="#222" stroke-width="2"/>',
            f'<text x="{left + scale + 6}" y="{y + 15}" font-size="12">{100 * run.score:.1f}%</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def loss_chart(metrics_path: Path, width: int = 640, height: int = 200) -> str | None:
    """The train/val loss curve from a run's metrics.jsonl, as inline SVG; None without data."""
    if not metrics_path or not Path(metrics_path).is_file():
        return None
    series: dict[str, list[tuple[float, float]]] = {"train_loss": [], "val_loss": []}
    for line in Path(metrics_path).read_text().splitlines():
        m = json.loads(line)
        for key, points in series.items():
            if m.get(key) is not None:
                points.append((m["iteration"], m[key]))
    points = series["train_loss"] + series["val_loss"]
    if not points:
        return None
    x_max = max(p[0] for p in points) or 1
    y_max = max(p[1] for p in points) or 1
    pad = 30

    def xy(p):
        return (
            f"{pad + (width - 2 * pad) * p[0] / x_max:.1f},"
            f"{height - pad - (height - 2 * pad) * p[1] / y_max:.1f}"
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
        f'<text x="{pad}" y="{height - 8}" font-size="11">0 … {x_max} iterations; '
        f"loss 0 … {y_max:.2f}</text></svg>"
    )
    return "".join(svg)


def _shown(case) -> str:
    if case.tool_calls:
        return json.dumps(case.tool_calls, ensure_ascii=False)
    return case.content


def render(runs: list[EvalResult], *, title: str, metrics: Path | None = None) -> str:
    env = Environment(
        loader=PackageLoader("punie.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    by_id = [{c.id: c for c in run.cases} for run in runs]
    case_rows = []
    for case in runs[0].cases:
        cells = []
        for index in by_id:
            c = index.get(case.id)
            if c is not None:
                cells.append({**c.__dict__, "shown": _shown(c)})
        case_rows.append(
            {
                "id": case.id,
                "category": case.category,
                "expected": json.dumps(case.expected, ensure_ascii=False),
                "cells": cells,
            }
        )
    categories = sorted({c.category for run in runs for c in run.cases})
    return env.get_template("report.html.j2").render(
        title=title,
        suite=runs[0].suite,
        runs=runs,
        comparison=compare(runs[0], runs[1]) if len(runs) >= 2 else None,
        categories=categories,
        case_rows=case_rows,
        chart=bar_chart(runs),
        loss_svg=loss_chart(metrics) if metrics else None,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
    )


def write_report(
    path: Path, runs: list[EvalResult], *, title: str, metrics: Path | None = None
) -> Path:
    with atomic_file(path) as f:
        f.write(render(runs, title=title, metrics=metrics))
    return Path(path)
