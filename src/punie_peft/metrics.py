"""Trainer logs -> the records of `metrics.jsonl`, the schema the MLX backend writes.

A record has `iteration` and either `train_loss` (with `learning_rate`, `tokens_per_second`,
`peak_memory` in GB) or `val_loss`. Only the main process writes, so a multi-process run has one
file. Lines are appended and flushed as training goes: the file is a live log that `punie runs`
and the progress display read while the run is still going.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from punie.platform import current, peak_rss_bytes


def peak_memory_gb() -> float:
    """Peak memory of this process: the CUDA allocator's peak where there is one, else max RSS."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 1e9
    return peak_rss_bytes(current(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1e9


def record_from_log(logs: dict[str, Any], step: int, speed: float | None) -> dict | None:
    """One Trainer log dict -> one metrics record, or None for logs that are neither."""
    if "loss" in logs:
        return {
            "iteration": step,
            "train_loss": float(logs["loss"]),
            "learning_rate": float(logs.get("learning_rate", 0.0)),
            "tokens_per_second": round(speed or 0.0, 1),
            "peak_memory": round(peak_memory_gb(), 3),
        }
    if "eval_loss" in logs:
        return {"iteration": step, "val_loss": float(logs["eval_loss"])}
    return None


class MetricsWriter(TrainerCallback):
    """Appends a record to `path` on every train/eval log, and hands it to `on_metrics`."""

    def __init__(self, path: Path, on_metrics=None):
        self.path = Path(path)
        self.on_metrics = on_metrics
        self.records: list[dict] = []
        self._last = (time.monotonic(), 0)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")
        self._last = (time.monotonic(), state.num_input_tokens_seen or 0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        speed = None
        if "loss" in logs:
            now, tokens = time.monotonic(), state.num_input_tokens_seen or 0
            then, before = self._last
            speed = (tokens - before) / max(now - then, 1e-9)
            self._last = (now, tokens)
        record = record_from_log(logs, state.global_step, speed)
        if record is None:
            return
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.on_metrics:
            self.on_metrics(record)
