"""Training runs side by side: `punie runs compare A B ...` and the page of `punie sweep`.

`compare_runs(run_dirs)` reads each run folder (config.json, run.json, metrics.jsonl) into plain
data: the config keys whose values differ between the runs, each run's final metrics, and its
loss curves. `render_runs_page` turns that into one self-contained HTML page (inline CSS and SVG,
Jinja2 autoescaping on: run names and config values are shown, never run), optionally with a
ranking whose best row is marked (a sweep's).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from punie import __version__
from punie.errors import PunieError
from punie.fsio import atomic_file
from punie.report.html import COLOURS, loss_points
from punie.train.rundir import RunDir
from punie.train.runs import current_status, load_record, read_metrics

# Keys that name the run rather than describe how it trained.
NOT_COMPARED = ("adapter_path",)
FINAL_KEYS = (
    "status", "last_iteration", "final_train_loss", "final_val_loss", "best_val_loss",
    "best_iteration", "token_accuracy", "val_token_accuracy", "grad_norm", "wall_s",
    "peak_memory_gb",
)  # fmt: skip


@dataclass(frozen=True)
class RunSummary:
    name: str
    path: str
    config: dict[str, Any]
    final: dict[str, Any]  # FINAL_KEYS
    curves: dict[str, list[tuple[float, float]]]  # train_loss / val_loss -> (iteration, loss)


@dataclass(frozen=True)
class RunComparison:
    runs: tuple[RunSummary, ...]
    differences: dict[str, list[Any]]  # config key -> each run's value, where they differ

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{"name": r.name, "path": r.path, **r.final} for r in self.runs],
            "config_differences": self.differences,
        }


@dataclass(frozen=True)
class Ranking:
    """A sweep's order: `rows` best first, each a run name and its score; `best` is rows[0]."""

    by: str  # what ranked them: "val_loss" or the held-out suite's name
    higher_is_better: bool
    rows: tuple[tuple[str, float | None], ...] = field(default_factory=tuple)

    @property
    def best(self) -> str | None:
        return self.rows[0][0] if self.rows and self.rows[0][1] is not None else None


def summarize_run(run_dir: Path) -> RunSummary:
    run = RunDir(Path(run_dir))
    record = current_status(run.path, load_record(run.path))
    try:
        config = json.loads(run.config.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise PunieError(f"{run.config}: cannot read the run's config ({e})") from None
    rows = read_metrics(run.metrics) if run.metrics.is_file() else []
    final = {k: record.get(k) for k in FINAL_KEYS}
    for key, source in (("token_accuracy", "train_loss"), ("grad_norm", "train_loss"),
                        ("val_token_accuracy", "val_loss")):  # fmt: skip
        last = [r[key] for r in rows if source in r and r.get(key) is not None]
        final[key] = last[-1] if last else None
    curves = loss_points(run.metrics) if run.metrics.is_file() else {}
    return RunSummary(record.get("name") or run.path.name, str(run.path), config, final, curves)


def config_differences(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Each key whose value is not the same in every config, with every config's value."""
    keys = dict.fromkeys(k for c in configs for k in c if k not in NOT_COMPARED)
    out = {}
    for key in keys:
        values = [c.get(key) for c in configs]
        if any(v != values[0] for v in values[1:]):
            out[key] = values
    return out


def compare_runs(run_dirs: list[Path]) -> RunComparison:
    runs = tuple(summarize_run(Path(d)) for d in run_dirs)
    return RunComparison(runs, config_differences([r.config for r in runs]))


def curves_chart(runs: tuple[RunSummary, ...], width: int = 760, height: int = 260) -> str | None:
    """Every run's loss curves on one inline SVG: train solid, validation dashed, a colour each."""
    points = [p for r in runs for series in r.curves.values() for p in series]
    if not points:
        return None
    x_max = max(p[0] for p in points) or 1
    y_lo, y_hi = min(0.0, *(p[1] for p in points)), max(p[1] for p in points)
    span, pad, legend = (y_hi - y_lo) or 1, 34, 150

    def xy(p: tuple[float, float]) -> str:
        x = pad + (width - legend - 2 * pad) * p[0] / x_max
        y = height - pad - (height - 2 * pad) * (p[1] - y_lo) / span
        return f"{x:.1f},{y:.1f}"

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        ' aria-label="loss curves: train solid, validation dashed">'
    ]
    for i, run in enumerate(runs):
        colour = COLOURS[i % len(COLOURS)]
        for key, dash in (("train_loss", ""), ("val_loss", ' stroke-dasharray="5,4"')):
            series = run.curves.get(key) or []
            if series:
                pts = " ".join(xy(p) for p in series)
                svg.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash}'
                    f' points="{pts}"><title>{escape(run.name)} {key}</title></polyline>'
                )
        svg.append(
            f'<text x="{width - legend + 8}" y="{20 + 16 * i}" fill="{colour}" font-size="12">'
            f"{escape(run.name[:22])}</text>"
        )
    svg.append(
        f'<text x="{pad}" y="{height - 8}" font-size="11">0 … {x_max:g} iterations; loss '
        f"{y_lo:.2f} … {y_hi:.2f}; train solid, validation dashed</text></svg>"
    )
    return "".join(svg)


def shown(value: Any) -> str:
    """A config value or metric as the table shows it."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def render_runs_page(
    comparison: RunComparison, *, title: str, ranking: Ranking | None = None, notes: str = ""
) -> str:
    env = Environment(
        loader=PackageLoader("punie.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["shown"] = shown
    return env.get_template("runs.html.j2").render(
        title=title,
        comparison=comparison,
        final_keys=FINAL_KEYS,
        ranking=ranking,
        curves_svg=curves_chart(comparison.runs),
        notes=notes,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
    )


def write_runs_page(
    path: Path | str,
    comparison: RunComparison,
    *,
    title: str,
    ranking: Ranking | None = None,
    notes: str = "",
) -> Path:
    with atomic_file(path, kind="report") as f:
        f.write(render_runs_page(comparison, title=title, ranking=ranking, notes=notes))
    return Path(path)
