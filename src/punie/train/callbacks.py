"""What a backend tells its caller while it trains: a protocol of named events.

A backend calls these on the callback it is given, whatever its engine (mlx_lm's trainer in a
child process, TRL's Trainer, or several processes under accelerate). `TrainingCallback` does
nothing on every event, so a caller overrides only those it cares about; `Callbacks` fans one
event out to several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from punie.train.records import MetricsRecord


@runtime_checkable
class TrainingEvents(Protocol):
    def on_stage_start(self, stage: str, iteration: int, iters: int) -> None:
        """A stage (a training method's run: `sft`, `dpo`, ...) starts at `iteration`."""

    def on_step(self, iteration: int) -> None:
        """`iteration` optimizer steps are done."""

    def on_train_report(self, record: MetricsRecord) -> None:
        """A training report, as written to metrics.jsonl."""

    def on_validation_report(self, record: MetricsRecord) -> None:
        """A validation report, as written to metrics.jsonl."""

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        """A checkpoint (or the best adapter) was written at `iteration` to `path`."""

    def on_warning(self, message: str) -> None:
        """Something the user should know (rows set aside, say), in one line."""

    def on_stage_end(self, stage: str, iteration: int, status: str) -> None:
        """The stage ended at `iteration`: completed, early_stop, interrupted or failed."""


class TrainingCallback:
    """A `TrainingEvents` that ignores every event; subclass it and override what you need."""

    def on_stage_start(self, stage: str, iteration: int, iters: int) -> None:
        pass

    def on_step(self, iteration: int) -> None:
        pass

    def on_train_report(self, record: MetricsRecord) -> None:
        pass

    def on_validation_report(self, record: MetricsRecord) -> None:
        pass

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        pass

    def on_warning(self, message: str) -> None:
        pass

    def on_stage_end(self, stage: str, iteration: int, status: str) -> None:
        pass


class Callbacks(TrainingCallback):
    """Several callbacks as one, called in order."""

    def __init__(self, *callbacks: TrainingEvents | None):
        self._all = [c for c in callbacks if c is not None]

    def on_stage_start(self, stage: str, iteration: int, iters: int) -> None:
        for c in self._all:
            c.on_stage_start(stage, iteration, iters)

    def on_step(self, iteration: int) -> None:
        for c in self._all:
            c.on_step(iteration)

    def on_train_report(self, record: MetricsRecord) -> None:
        for c in self._all:
            c.on_train_report(record)

    def on_validation_report(self, record: MetricsRecord) -> None:
        for c in self._all:
            c.on_validation_report(record)

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        for c in self._all:
            c.on_checkpoint(iteration, path)

    def on_warning(self, message: str) -> None:
        for c in self._all:
            c.on_warning(message)

    def on_stage_end(self, stage: str, iteration: int, status: str) -> None:
        for c in self._all:
            c.on_stage_end(stage, iteration, status)
