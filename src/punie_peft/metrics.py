"""Trainer logs -> `MetricsRecord`s in metrics.jsonl, through the same `MetricsLog` as MLX.

A Trainer log with `loss` is a training report (with `learning_rate`, tokens and iterations per
second since the last report, `trained_tokens` so far and `peak_memory` in GB); one with
`eval_loss` is a validation report (`val_time` is the Trainer's `eval_runtime`). Only the main
process writes, so a multi-process run has one file.
"""

from __future__ import annotations

import resource
import time
from typing import Any

from transformers import TrainerCallback

from punie.platform import current, peak_rss_bytes
from punie.train.callbacks import TrainingCallback, TrainingEvents
from punie.train.records import MetricsLog, MetricsRecord
from punie.train.rundir import RunDir


def peak_memory_gb() -> float:
    """Peak memory of this process: the CUDA allocator's peak where there is one, else max RSS."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 1e9
    return peak_rss_bytes(current(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1e9


def record_from_log(
    logs: dict[str, Any], step: int, tokens: int, tokens_per_s: float, steps_per_s: float
) -> MetricsRecord | None:
    """One Trainer log dict -> one metrics record, or None for logs that are neither."""
    if "loss" in logs:
        return MetricsRecord.train(
            step,
            train_loss=logs["loss"],
            learning_rate=logs.get("learning_rate", 0.0),
            tokens_per_second=round(tokens_per_s, 1),
            iterations_per_second=round(steps_per_s, 4),
            trained_tokens=tokens,
            peak_memory=round(peak_memory_gb(), 3),
        )
    if "eval_loss" in logs:
        return MetricsRecord.validation(
            step, val_loss=logs["eval_loss"], val_time=float(logs.get("eval_runtime", 0.0))
        )
    return None


class MetricsWriter(TrainerCallback):
    """Appends a record to the run's metrics.jsonl on every train/eval log, and tells `events`."""

    def __init__(self, run: RunDir, events: TrainingEvents | None = None, stage: str = "sft"):
        self.run = run
        self.events = events or TrainingCallback()
        self.stage = stage
        self.records: list[MetricsRecord] = []
        self._log: MetricsLog | None = None
        self._last = (time.monotonic(), 0, 0)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._log = MetricsLog(self.run.metrics, fresh=True)
            self.events.on_stage_start(self.stage, state.global_step, state.max_steps)
        self._last = (time.monotonic(), state.num_input_tokens_seen or 0, state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.events.on_step(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        tokens = state.num_input_tokens_seen or 0
        tokens_per_s = steps_per_s = 0.0
        if "loss" in logs:
            now = time.monotonic()
            then, before, step_before = self._last
            elapsed = max(now - then, 1e-9)
            tokens_per_s = (tokens - before) / elapsed
            steps_per_s = (state.global_step - step_before) / elapsed
            self._last = (now, tokens, state.global_step)
        record = record_from_log(logs, state.global_step, tokens, tokens_per_s, steps_per_s)
        if record is None:
            return
        self.records.append(record)
        if self._log is not None:
            self._log.append(record)
        if record.is_train:
            self.events.on_train_report(record)
        else:
            self.events.on_validation_report(record)

    def on_train_end(self, args, state, control, **kwargs):
        if self._log is not None:
            self._log.close()
            self._log = None
            self.events.on_stage_end(self.stage, state.global_step, "completed")
