"""The bootstrap loop's HTML report: solved problems and held-out score per iteration, with
intervals, and McNemar's exact test between consecutive iterations and against the start.

One self-contained page like the eval report (inline CSS and SVG, autoescaped, no network).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from punie import __version__
from punie.eval.compare import Comparison, compare
from punie.eval.runner import EvalResult
from punie.fsio import atomic_file
from punie.report.html import bar_chart


@dataclass(frozen=True)
class IterationRow:
    iteration: int
    result: EvalResult  # the held-out suite's results after this iteration's training
    solved_new: int | None = None  # None for the start (iteration 0: nothing solved yet)
    solved_total: int | None = None
    distilled: int = 0
    train_rows: int | None = None


def _compare(a: EvalResult, b: EvalResult) -> Comparison | None:
    return compare(a, b) if a is not b else None


def render_loop(rows: list[IterationRow], *, title: str, problems: int, stop: str | None) -> str:
    env = Environment(
        loader=PackageLoader("punie.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    table = []
    for i, row in enumerate(rows):
        table.append(
            {
                "row": row,
                "lo": row.result.interval[0],
                "hi": row.result.interval[1],
                "prev": _compare(rows[i - 1].result, row.result) if i else None,
                "start": _compare(rows[0].result, row.result) if i else None,
            }
        )
    return env.get_template("loop.html.j2").render(
        title=title,
        table=table,
        problems=problems,
        stop=stop,
        suite=rows[0].result.suite if rows else "",
        chart=Markup(bar_chart([r.result for r in rows])) if rows else "",
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
    )


def write_loop_report(
    path: Path | str,
    rows: list[IterationRow],
    *,
    title: str,
    problems: int,
    stop: str | None = None,
) -> Path:
    with atomic_file(path, kind="report") as f:
        f.write(render_loop(rows, title=title, problems=problems, stop=stop))
    return Path(path)
