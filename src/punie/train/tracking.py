"""`report_to`: the records of metrics.jsonl, also written through TensorBoard or W&B.

Each tracker is a `MetricsSink` on the run's `MetricsLog`, so it gets exactly the records
metrics.jsonl gets, on both backends, tagged by their field names (`train_loss`, `val_loss`,
`learning_rate`, ...) at step `iteration`. TensorBoard events go to `<run>/tensorboard` through
tensorboardX (a pure-Python writer, much lighter than TensorFlow or torch's copy); W&B runs in
offline mode into `<run>/wandb` (`wandb sync` uploads it later), so training never waits on the
network. Both are optional extras, checked before the run starts.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from punie.errors import ConfigError
from punie.train.records import MetricsRecord, MetricsSink

# report_to name -> (module it needs, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}
_SKIPPED = {"iteration", "schema_version"}
_open: list[MetricsSink] = []  # this process's trackers, for `close_all` at exit


def check_report_to(report_to: tuple[str, ...]) -> None:
    """Refuse, in one line, a tracker whose library is not installed."""
    for name in report_to:
        module, extra = TRACKERS[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"report_to: {name} needs the {module} package (pip install 'punie[{extra}]')"
            ) from None


def scalars(record: MetricsRecord) -> dict[str, float]:
    """The record's numbers by field name: what every tracker writes at `record.iteration`."""
    return {k: float(v) for k, v in record.to_dict().items() if k not in _SKIPPED}


class TensorBoardSink:
    def __init__(self, folder: Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(folder))

    def write(self, record: MetricsRecord) -> None:
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, record.iteration)
        self.writer.flush()  # a live run is watched while it trains

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, name: str, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(  # into run_dir/wandb/offline-run-<time>-<id>/
            mode="offline",
            dir=str(run_dir),
            project="punie",
            name=name,
            config=config,
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.closed = False

    def write(self, record: MetricsRecord) -> None:
        self.run.log(scalars(record), step=record.iteration)

    def close(self) -> None:
        if not self.closed:
            import wandb

            self.closed = True
            self.run.finish()
            # finish() returns before W&B's service has written the run file; teardown waits
            # for it and stops the service, which no Punie command may leave behind.
            wandb.teardown()


def open_trackers(run_dir: Path, config: Any) -> list[MetricsSink]:
    """The sinks `config.report_to` asks for, writing under `run_dir`."""
    check_report_to(config.report_to)
    sinks: list[MetricsSink] = []
    for name in config.report_to:
        if name == "tensorboard":
            sinks.append(TensorBoardSink(run_dir / "tensorboard"))
        else:
            sinks.append(WandbSink(run_dir, run_dir.name, config.to_dict()))
    _open.extend(sinks)
    return sinks


def close_all() -> None:
    """Close every tracker this process opened (flushes TensorBoard, finishes the W&B run)."""
    while _open:
        _open.pop().close()
