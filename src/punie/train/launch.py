"""`punie train` as a library call: validate, pick the backend, own the run record.

`start(config)` checks everything it can before any process starts (config values, the data
folder, the backend's own `check`), writes the run folder's `config.json` and a `running` record,
hands the run to `backend.train(config, run, events)`, and finally marks the record
completed, interrupted (Ctrl-C, or the trainer stopped by a signal) or failed. A backend resumes
when the run folder it is given holds its checkpoint; `start(..., resume=True)` is how a caller
asks for that, and a fresh run refuses a folder that already holds a run unless told to replace it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from punie.backends import get_backend
from punie.errors import ConfigError, PunieError, TrainingInterrupted
from punie.fsio import write_json
from punie.train import runs, stages
from punie.train.callbacks import Callbacks, TrainingCallback, TrainingEvents
from punie.train.config import TrainConfig
from punie.train.records import MetricsSummary, RunRecord
from punie.train.rundir import RunDir
from punie.train.tracking import check_report_to


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    run: RunRecord

    @property
    def record(self) -> dict[str, Any]:
        """run.json as plain data."""
        return self.run.to_dict()

    @property
    def adapter_path(self) -> Path:
        return RunDir(self.run_dir).adapter

    @property
    def best_adapter(self) -> Path | None:
        return RunDir(self.run_dir).best_adapter()


def resolve_iters(config: TrainConfig) -> TrainConfig:
    """With `epochs`, the iteration count that covers them (mlx_lm drops a last short batch);
    with `stages`, the count their plan adds up to (`punie.train.stages`)."""
    if config.stages:
        rows = runs.data_manifest(config.data).get("train", {}).get("rows", 0)
        iters = stages.plan(config, rows)[-1].end
        return config.with_(iters=iters, warmup_steps=min(config.warmup_steps, iters - 1))
    if config.epochs is None:
        return config
    rows = runs.data_manifest(config.data).get("train", {}).get("rows", 0)
    per_epoch = rows // config.batch_size
    if per_epoch < 1:
        raise ConfigError(
            f"epochs: {config.data}/train.jsonl has {rows} rows, fewer than one batch of "
            f"{config.batch_size}"
        )
    iters = max(1, math.ceil(config.epochs * per_epoch))
    return config.with_(iters=iters, warmup_steps=min(config.warmup_steps, iters - 1))


def check_data(config: TrainConfig) -> dict[str, Any]:
    data = Path(config.data)
    if not data.is_dir():
        raise ConfigError(f"data: {data}: no such folder (it needs train.jsonl, valid.jsonl)")
    manifest = runs.data_manifest(data)
    train = manifest.get("train")
    if not train or train["rows"] == 0:
        raise ConfigError(f"data: {data}/train.jsonl is missing or empty")
    if train["rows"] < config.batch_size:
        raise ConfigError(
            f"batch_size: {config.batch_size} is more than the {train['rows']} rows of "
            f"{data}/train.jsonl"
        )
    valid = manifest.get("valid")
    if valid and 0 < valid["rows"] < config.batch_size:
        raise ConfigError(
            f"batch_size: {config.batch_size} is more than the {valid['rows']} rows of "
            f"{data}/valid.jsonl (validation needs one full batch)"
        )
    return manifest


def check(config: TrainConfig):
    """Everything that can fail before training starts; returns (backend, config, manifest)."""
    backend = get_backend(config.backend)
    caps = backend.capabilities()
    if config.fine_tune_type not in caps.fine_tune_types:
        allowed = ", ".join(caps.fine_tune_types)
        raise ConfigError(
            f"fine_tune_type: {config.fine_tune_type!r} is not supported by backend "
            f"{config.backend} ({allowed})"
        )
    if config.method not in caps.methods:
        raise ConfigError(
            f"method: {config.method!r} is not supported by backend {config.backend} "
            f"({', '.join(caps.methods)})"
        )
    if config.select_by and not caps.select_by:
        raise ConfigError(
            f"select_by: backend {config.backend} does not pick checkpoints by a suite; "
            "evaluate its checkpoints with `punie eval run` instead"
        )
    config = resolve_iters(config)
    manifest = check_data(config) if config.data else {}
    manifest.update(runs.suite_manifest(config))
    if config.from_adapter and not Path(config.from_adapter).exists():
        raise ConfigError(f"from_adapter: {config.from_adapter}: no such file or folder")
    check_report_to(config.report_to)
    backend.check(config)
    return backend, config, manifest


def _versions(backend) -> dict[str, str]:
    found = dict(getattr(backend, "versions", dict)())
    with contextlib.suppress(PackageNotFoundError):
        found["punie"] = version("punie")
    return found


class _Warnings(TrainingCallback):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_warning(self, message: str) -> None:
        self.seen.append(message)


def start(
    config: TrainConfig,
    *,
    events: TrainingEvents | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Train `config` into its run folder (`config.adapter_path`) and return the run's record;
    `events` hears the backend's training events as they come."""
    run = RunDir(Path(config.adapter_path))
    if resume:
        runs.load_record(run.path)  # a clear error for a folder that is not a run
    backend, config, manifest = check(config)
    lock = runs.claim(run.path, resume=resume, overwrite=overwrite)  # one writer per run folder
    if resume:
        record = RunRecord.from_dict(runs.load_record(run.path))  # as its last writer left it
        for split, entry in manifest.items():
            if split in record.data and record.data[split]["sha256"] != entry["sha256"]:
                lock.release()
                raise ConfigError(
                    f"resume: {entry['path']} changed since the run started (sha256 differs); "
                    "start a new run, or use --from-adapter to build on this one"
                )
        if not run.checkpoint.is_dir():
            lock.release()
            raise ConfigError(f"resume: {run.path} has no checkpoint to resume from")
        record = replace(
            record, status="running", pid=os.getpid(), iters=config.iters,
            resumes=record.resumes + 1,
        )  # fmt: skip
    else:
        record = RunRecord(
            name=run.name,
            status="running",
            backend=config.backend,
            method=config.method,
            fine_tune_type=config.fine_tune_type,
            model=config.model,
            data=manifest,
            iters=config.iters,
            lineage=runs.lineage(config.from_adapter),
            versions=_versions(backend),
            git_commit=runs.git_commit(),
            created=runs.now(),
            pid=os.getpid(),
        )
    write_json(run.config, config.to_dict())
    runs.write_record(run.path, record.to_dict())

    warnings = _Warnings()
    tic = time.monotonic()
    status, error = "failed", None
    try:
        backend.train(config, run, Callbacks(warnings, events))
        status = "completed"
    except (KeyboardInterrupt, TrainingInterrupted):
        status = "interrupted"
        raise
    except PunieError as e:
        error = str(e)
        raise
    finally:
        summary = MetricsSummary.of(runs.read_metric_records(run.metrics))
        record = replace(
            record,
            **asdict(summary),
            status=status,
            error=error,
            finished=runs.now(),
            wall_s=round(record.wall_s + time.monotonic() - tic, 3),
            best_adapter="best" if run.best_adapter() else None,
            stopped_early=status == "completed" and summary.last_iteration < config.iters,
            warnings=record.warnings + warnings.seen,
            pid=None,
        )
        runs.write_record(run.path, record.to_dict())
        lock.release()
    return RunResult(run.path, record)
