"""`punie sweep CONFIG --grid key=v1,v2 ...`: a grid of training runs, ranked, on one page.

Every point of the grid (the product of the `--grid` values) is one named run in the sweep's
folder, `RUNS_DIR/SWEEP/<key>-<value>_...`, trained one at a time with the config file plus that
point. A rerun of the same sweep skips runs that finished (completed or failed), resumes one
that was interrupted from its checkpoint, and starts afresh one that never got to a checkpoint:
so a sweep killed halfway continues where it stopped.

Runs are ranked by `select_by`, a held-out eval suite scored on each run's adapter (its best/
adapter when it has one) through `punie.api.evaluate` (higher is better), or else by the best
validation loss (lower is better). The result is `sweep.json`, a table, and `sweep.html` (the
runs compared, `punie.report.runs`) with the best run marked.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie.errors import ConfigError, PunieError, TrainingInterrupted
from punie.fsio import safe_file_name, write_json
from punie.report.runs import Ranking, compare_runs, write_runs_page
from punie.train import runs
from punie.train.config import TrainConfig, read_config_file
from punie.train.rundir import RunDir

SELECTION_FILE = "selection.json"  # in each run folder: the score select_by gave it
FINISHED = ("completed", "failed")


@dataclass(frozen=True)
class SweepRun:
    name: str
    path: Path
    point: dict[str, Any]
    status: str  # completed, failed, interrupted; "skipped" is reported through `action`
    action: str  # trained, resumed or skipped (finished by an earlier invocation)
    score: float | None
    error: str | None = None


@dataclass(frozen=True)
class SweepResult:
    folder: Path
    runs: tuple[SweepRun, ...]
    ranking: Ranking
    page: Path

    @property
    def best(self) -> SweepRun | None:
        return next((r for r in self.runs if r.name == self.ranking.best), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "ranked_by": self.ranking.by,
            "higher_is_better": self.ranking.higher_is_better,
            "best": self.ranking.best,
            "page": str(self.page),
            "runs": [
                {
                    "rank": i + 1,
                    "name": name,
                    "score": score,
                    **next(
                        {
                            "point": r.point,
                            "status": r.status,
                            "action": r.action,
                            "path": str(r.path),
                            "error": r.error,
                        }
                        for r in self.runs
                        if r.name == name
                    ),  # fmt: skip
                }
                for i, (name, score) in enumerate(self.ranking.rows)
            ],
        }


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`["learning_rate=1e-4,2e-4", "rank=8,16"]` -> {key: values}; each value read as TOML (a
    number, true/false), else kept as a string. Keys must be config keys."""
    grid: dict[str, list[Any]] = {}
    known = set(TrainConfig.keys())
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--grid {item}: expected key=value1,value2,...")
        if key not in known:
            raise ConfigError(f"--grid {item}: {key}: not a config key (see docs/training.md)")
        if key in ("model", "data", "adapter_path"):
            raise ConfigError(f"--grid {item}: {key}: a sweep varies how runs train, not this")
        if key in grid:
            raise ConfigError(f"--grid {item}: {key} is already in the grid")
        grid[key] = [_value(v.strip()) for v in raw.split(",") if v.strip()]
    if not grid:
        raise ConfigError("--grid: give at least one key=value1,value2,...")
    return grid


def _value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first key varying slowest."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def point_name(point: dict[str, Any]) -> str:
    """A run name for a point: `learning_rate-0.0001_rank-8`."""
    return safe_file_name("_".join(f"{k}-{v}" for k, v in point.items()))


def base_config(config: TrainConfig | Path | str) -> tuple[dict[str, Any], str]:
    """(the keys every run starts from, what to call them in an error)."""
    if isinstance(config, TrainConfig):
        data = config.to_dict()
        data.pop("adapter_path")
        return data, "config"
    return read_config_file(config), str(config)


def run_configs(
    config: TrainConfig | Path | str,
    grid: dict[str, list[Any]],
    folder: Path,
    sets: dict[str, Any] | None = None,
) -> list[tuple[dict[str, Any], TrainConfig]]:
    """(point, config) for every point, each config checked before anything trains."""
    data, source = base_config(config)
    base = {**data, **(sets or {})}
    out = []
    for point in grid_points(grid):
        keys = {**base, **point, "adapter_path": str(folder / point_name(point))}
        out.append((point, TrainConfig.from_dict(keys, source=f"{source} with {point}")))
    return out


Trainer = Callable[[TrainConfig, bool, bool], Any]  # (config, resume, overwrite) -> run result
Scorer = Callable[[str, TrainConfig, Path, Path], float]  # (suite, config, adapter, out) -> score


def sweep(
    config_file: TrainConfig | Path | str,
    grid: dict[str, list[Any]],
    *,
    folder: Path,
    train: Trainer,
    select_by: str | None = None,
    score: Scorer | None = None,
    sets: dict[str, Any] | None = None,
    on_run: Callable[[SweepRun], None] | None = None,
) -> SweepResult:
    """Train every grid point not finished yet, one at a time, then rank and write the page.
    `train` and `score` are `punie.api.train`/`evaluate` shaped (the api passes them)."""
    if select_by and score is None:
        raise PunieError("sweep: select_by needs a scorer")
    planned = run_configs(config_file, grid, folder, sets)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "sweep.json", _plan(config_file, grid, select_by, sets, planned))
    done: list[SweepRun] = []
    for point, config in planned:
        run = _run_one(point, config, train)
        if run.status == "completed" and select_by:
            run = _with_score(run, select_by, config, score)
        done.append(run)
        if on_run:
            on_run(run)
    ranking = rank(done, select_by)
    comparison = compare_runs([r.path for r in done if RunDir(r.path).is_run()])
    title = f"Punie sweep {folder.name}: {len(done)} runs, ranked by {ranking.by}"
    page = write_runs_page(folder / "sweep.html", comparison, title=title, ranking=ranking)
    result = SweepResult(folder, tuple(done), ranking, page)
    write_json(folder / "sweep.json", {**_plan(config_file, grid, select_by, sets, planned),
                                       **result.to_dict()})  # fmt: skip
    return result


def _plan(config_file, grid, select_by, sets, planned) -> dict[str, Any]:
    return {
        "config": "(a TrainConfig)" if isinstance(config_file, TrainConfig) else str(config_file),
        "grid": grid,
        "set": sets or {},
        "select_by": select_by,
        "runs": [point_name(p) for p, _ in planned],
    }


def _run_one(point: dict[str, Any], config: TrainConfig, train: Trainer) -> SweepRun:
    path = Path(config.adapter_path)
    run = RunDir(path)
    status = _status(path)
    if status in FINISHED:
        record = runs.load_record(path)
        return SweepRun(run.name, path, point, status, "skipped", None, record.get("error"))
    resume = status is not None and run.checkpoint_state.is_file()
    try:
        train(config, resume, status is not None and not resume)
    except TrainingInterrupted:
        raise
    except PunieError as e:  # one run failing (a NaN, say) does not stop the sweep
        if not run.is_run():
            raise
        return SweepRun(run.name, path, point, "failed", "trained", None, str(e))
    action = "resumed" if resume else "trained"
    return SweepRun(run.name, path, point, _status(path) or "failed", action, None)


def _status(path: Path) -> str | None:
    if not RunDir(path).is_run():
        return None
    return runs.current_status(path, runs.load_record(path)).get("status")


def _with_score(run: SweepRun, suite: str, config: TrainConfig, score: Scorer) -> SweepRun:
    saved = run.path / SELECTION_FILE
    if saved.is_file():
        data = json.loads(saved.read_text(encoding="utf-8"))
        if data.get("select_by") == suite and data.get("score") is not None:
            return _replace_score(run, float(data["score"]))
    rundir = RunDir(run.path)
    adapter = rundir.best_adapter() or rundir.adapter
    value = score(suite, config, Path(adapter), run.path / "select")
    write_json(saved, {"select_by": suite, "adapter": str(adapter), "score": value})
    return _replace_score(run, value)


def _replace_score(run: SweepRun, value: float) -> SweepRun:
    from dataclasses import replace

    return replace(run, score=value)


def rank(done: list[SweepRun], select_by: str | None) -> Ranking:
    """Best first: by the suite's score (higher better), else by best validation loss (lower
    better; the final train loss where a run has no validation). Unscored runs go last."""
    if select_by:
        scored = [(r.name, r.score) for r in done]
        key = lambda row: (row[1] is None, -(row[1] or 0.0))  # noqa: E731
        return Ranking(select_by, True, tuple(sorted(scored, key=key)))
    rows = []
    for r in done:
        record = runs.load_record(r.path) if RunDir(r.path).is_run() else {}
        value = record.get("best_val_loss")
        if value is None:
            value = record.get("final_train_loss")
        rows.append((r.name, None if r.status != "completed" else value))
    key = lambda row: (row[1] is None, row[1] or 0.0)  # noqa: E731
    return Ranking("best val_loss", False, tuple(sorted(rows, key=key)))
