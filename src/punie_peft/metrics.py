"""Trainer logs -> `MetricsRecord`s in metrics.jsonl, through the same `MetricsLog` as MLX.

A Trainer log with `loss` is a training report (with `learning_rate`, tokens and iterations per
second since the last report, `trained_tokens` so far and `peak_memory` in GB, the Trainer's
`grad_norm` and TRL's `mean_token_accuracy`); one with `eval_loss` is a validation report
(`val_time` is the Trainer's `eval_runtime`, `val_token_accuracy` TRL's eval accuracy). TRL's
accuracy is the mean of per-batch accuracies, MLX's the hits over all tokens of the report.
Only the main process writes, so a multi-process run has one file (and one set of `report_to`
trackers).
"""

from __future__ import annotations

import resource
import time
from dataclasses import replace
from typing import Any

from transformers import TrainerCallback

from punie.platform import current, peak_rss_bytes
from punie.train.callbacks import TrainingCallback, TrainingEvents
from punie.train.config import TrainConfig
from punie.train.records import MetricsLog, MetricsRecord
from punie.train.rundir import RunDir
from punie.train.tracking import open_trackers


def peak_memory_gb() -> float:
    """Peak memory of this process: the CUDA allocator's peak where there is one, else max RSS."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 1e9
    return peak_rss_bytes(current(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1e9


# GRPOTrainer's log keys -> the MetricsRecord fields the MLX trainer fills. TRL's reward_std is
# over the whole batch (sample std), as Punie's (population std); `rollout_*` are
# `punie_peft.grpo`'s own.
GRPO_LOG_KEYS = {
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "rewards/format_reward/mean": "format_reward_mean",
    "frac_reward_zero_std": "zero_variance_fraction",
    "kl": "kl",
    "clip_ratio/region_mean": "clip_fraction",
    "completions/mean_length": "completion_length",
    "rollout_time": "rollout_time",
    "rollout_tokens_per_second": "rollout_tokens_per_second",
}


def grpo_fields(logs: dict[str, Any]) -> dict[str, float]:
    """The GRPO fields of a GRPOTrainer log ({} for other trainers' logs)."""
    if "reward" not in logs:
        return {}
    found = {field: float(logs[key]) for key, field in GRPO_LOG_KEYS.items() if key in logs}
    found.setdefault("format_reward_mean", 0.0)  # no format term: it paid nothing, as on MLX
    if "step_time" in logs and "rollout_time" in found:
        found["update_time"] = max(float(logs["step_time"]) - found["rollout_time"], 0.0)
    return found


# TRL's DPO log keys -> the shared preference fields (the MLX backend's names).
TRAIN_REWARDS = {
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
}
VALID_REWARDS = {
    "eval_rewards/margins": "val_reward_margin",
    "eval_rewards/accuracies": "val_reward_accuracy",
}


def _with_preference(record: MetricsRecord, logs: dict[str, Any]) -> MetricsRecord:
    names = TRAIN_REWARDS if record.is_train else VALID_REWARDS
    fields = {ours: float(logs[theirs]) for theirs, ours in names.items() if theirs in logs}
    if "stage" in logs:
        fields["stage"] = int(logs["stage"])
    return replace(record, **fields) if fields else record


def record_from_log(
    logs: dict[str, Any], step: int, tokens: int, tokens_per_s: float, steps_per_s: float
) -> MetricsRecord | None:
    """One Trainer log dict -> one metrics record, or None for logs that are neither."""
    if "loss" in logs:
        record = MetricsRecord.train(
            step,
            train_loss=logs["loss"],
            learning_rate=logs.get("learning_rate", 0.0),
            tokens_per_second=round(tokens_per_s, 1),
            iterations_per_second=round(steps_per_s, 4),
            trained_tokens=tokens,
            peak_memory=round(peak_memory_gb(), 3),
            grad_norm=logs.get("grad_norm"),
            token_accuracy=logs.get("mean_token_accuracy"),
        )
        return _with_preference(replace(record, **grpo_fields(logs)), logs)
    if "eval_loss" in logs:
        record = MetricsRecord.validation(
            step,
            val_loss=logs["eval_loss"],
            val_time=float(logs.get("eval_runtime", 0.0)),
            token_accuracy=logs.get("eval_mean_token_accuracy"),
        )
        return _with_preference(record, logs)
    return None


class MetricsWriter(TrainerCallback):
    """Appends a record to the run's metrics.jsonl on every train/eval log, and tells `events`."""

    def __init__(
        self,
        run: RunDir,
        events: TrainingEvents | None = None,
        stage: str = "sft",
        steps_per_iteration: int = 1,
    ):
        self.run = run
        # GRPO: a Punie iteration is one rollout batch, `steps_per_iteration` Trainer steps
        self.per = max(int(steps_per_iteration), 1)
        self.events = events or TrainingCallback()
        self.stage = stage
        self.records: list[MetricsRecord] = []
        self._log: MetricsLog | None = None
        self._last = (time.monotonic(), 0, 0)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            config = TrainConfig.load(self.run.config)
            sinks = open_trackers(self.run.path, config)  # report_to: the same records
            self._log = MetricsLog(self.run.metrics, fresh=True, sinks=sinks)
            self.events.on_stage_start(
                self.stage, state.global_step // self.per, state.max_steps // self.per
            )
        self._last = (time.monotonic(), state.num_input_tokens_seen or 0, state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.events.on_step(state.global_step // self.per)

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
            steps_per_s = (state.global_step - step_before) / self.per / elapsed
            self._last = (now, tokens, state.global_step)
        step = state.global_step // self.per
        record = record_from_log(logs, step, tokens, tokens_per_s, steps_per_s)
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
            self.events.on_stage_end(self.stage, state.global_step // self.per, "completed")
