"""The two records a run writes, typed and versioned: `MetricsRecord` and `RunRecord`.

Both backends write metrics through `MetricsLog` (one JSON object a line in metrics.jsonl) and
`punie.train.launch` writes the run record for every backend, so a new backend or training method
adds fields here, never a file format of its own. The fields are documented in docs/training.md
("The run folder"); `schema_version` goes up when a field changes meaning or goes away (adding a
field does not change it). Readers accept older lines: a record without `schema_version` is
version 0, the schema before it was versioned.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

METRICS_SCHEMA_VERSION = 1
RUN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class MetricsRecord:
    """One report: a training report (train_loss and its companions) or a validation report
    (val_loss, val_time), at `iteration`, the number of optimizer steps done so far."""

    iteration: int
    train_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    iterations_per_second: float | None = None
    trained_tokens: int | None = None  # tokens trained on since the run started (cumulative)
    peak_memory: float | None = None  # GB: MLX's or CUDA's peak, else the process's max RSS
    val_loss: float | None = None
    val_time: float | None = None  # seconds the validation took
    # GRPO (a train report): the rollout batch's rewards, KL to the reference and speeds.
    reward_mean: float | None = None  # task + format reward, over the batch's completions
    reward_std: float | None = None
    format_reward_mean: float | None = None  # the format term alone
    zero_variance_fraction: float | None = None  # groups whose rewards were all equal
    kl: float | None = None  # mean k3 KL per live token; absent when kl_beta = 0
    clip_fraction: float | None = None  # live tokens whose ratio was clipped
    completion_length: float | None = None  # mean sampled tokens per completion
    rollout_tokens_per_second: float | None = None  # sampled tokens / rollout seconds
    update_tokens_per_second: float | None = None  # tokens forwarded in the updates / seconds
    rollout_time: float | None = None  # seconds sampling (and scoring) this step
    update_time: float | None = None  # seconds in the reference pass and the updates
    # Checkpoint selection by suite (`select_by`): an evaluation report.
    eval_score: float | None = None  # the suite's score (0..1) of the adapter at `iteration`
    eval_time: float | None = None
    grad_norm: float | None = None  # global L2 norm before clipping (mean over the report's steps)
    token_accuracy: float | None = None  # argmax hits / trained tokens, in the report's steps
    skipped_steps: int | None = None  # updates skipped in the report's steps (NaN/inf gradient)
    val_token_accuracy: float | None = None  # argmax hits / trained tokens over the validation
    # Preference training (method dpo): the stage of the schedule, and the rewards β·r (means).
    stage: int | None = None
    reward_chosen: float | None = None
    reward_rejected: float | None = None
    reward_margin: float | None = None
    reward_accuracy: float | None = None  # the fraction of pairs with r_chosen > r_rejected
    val_reward_margin: float | None = None
    val_reward_accuracy: float | None = None
    schema_version: int = METRICS_SCHEMA_VERSION

    @classmethod
    def train(
        cls,
        iteration: int,
        *,
        train_loss: float,
        learning_rate: float,
        tokens_per_second: float,
        iterations_per_second: float,
        trained_tokens: int,
        peak_memory: float,
        grad_norm: float | None = None,
        token_accuracy: float | None = None,
        skipped_steps: int | None = None,
    ) -> MetricsRecord:
        return cls(
            iteration=int(iteration),
            train_loss=float(train_loss),
            learning_rate=float(learning_rate),
            tokens_per_second=float(tokens_per_second),
            iterations_per_second=float(iterations_per_second),
            trained_tokens=int(trained_tokens),
            peak_memory=float(peak_memory),
            grad_norm=_float_or_none(grad_norm),
            token_accuracy=_float_or_none(token_accuracy),
            skipped_steps=int(skipped_steps) if skipped_steps else None,
        )

    @classmethod
    def validation(
        cls,
        iteration: int,
        *,
        val_loss: float,
        val_time: float,
        token_accuracy: float | None = None,
    ) -> MetricsRecord:
        return cls(
            iteration=int(iteration),
            val_loss=float(val_loss),
            val_time=float(val_time),
            val_token_accuracy=_float_or_none(token_accuracy),
        )

    @classmethod
    def evaluation(cls, iteration: int, *, eval_score: float, eval_time: float) -> MetricsRecord:
        return cls(iteration=int(iteration), eval_score=float(eval_score), eval_time=eval_time)

    @property
    def is_evaluation(self) -> bool:
        return self.eval_score is not None

    @property
    def is_train(self) -> bool:
        return self.train_loss is not None

    @property
    def is_validation(self) -> bool:
        return self.val_loss is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON line: the fields this report has (a train report has no val_loss)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> MetricsRecord:
        return _from_known(cls, row)


def _float_or_none(value: float | None) -> float | None:
    """A finite float, or None: JSON has no NaN, and a NaN norm is counted in skipped_steps."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


TRAIN_FIELDS = (
    "train_loss", "learning_rate", "tokens_per_second", "iterations_per_second",
    "trained_tokens", "peak_memory", "grad_norm", "token_accuracy",
)  # fmt: skip
# skipped_steps: only in a report where an update was skipped, so not in every train report.
VALIDATION_FIELDS = ("val_loss", "val_time", "val_token_accuracy")
GRPO_FIELDS = (
    "reward_mean", "reward_std", "format_reward_mean", "zero_variance_fraction", "kl",
    "clip_fraction", "completion_length", "rollout_tokens_per_second", "update_tokens_per_second",
    "rollout_time", "update_time",
)  # fmt: skip
EVALUATION_FIELDS = ("eval_score", "eval_time")
PREFERENCE_FIELDS = ("reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy")
VALIDATION_PREFERENCE_FIELDS = ("val_reward_margin", "val_reward_accuracy")


class MetricsSink(Protocol):
    """Somewhere else the same records go (a tracker: TensorBoard, W&B; `punie.train.tracking`)."""

    def write(self, record: MetricsRecord) -> None: ...

    def close(self) -> None: ...


class MetricsLog:
    """metrics.jsonl, appended one record a line and flushed at once: a live log that `punie runs`
    and the progress display read while the run goes on. Each record also goes to `sinks`."""

    def __init__(self, path: Path | str, *, fresh: bool = False, sinks: Sequence[MetricsSink] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w" if fresh else "a", encoding="utf-8")  # noqa: SIM115
        self.sinks = tuple(sinks)

    def append(self, record: MetricsRecord) -> None:
        self._file.write(json.dumps(record.to_dict()) + "\n")
        self._file.flush()
        for sink in self.sinks:
            sink.write(record)

    def close(self, *, keep_sinks: bool = False) -> None:
        """Close the file, and the sinks unless a new log over the same run takes them on."""
        self._file.close()
        if not keep_sinks:
            for sink in self.sinks:
                sink.close()


@dataclass(frozen=True)
class MetricsSummary:
    last_iteration: int = 0
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    best_iteration: int | None = None
    best_val_loss: float | None = None
    peak_memory_gb: float | None = None
    best_eval_score: float | None = None  # with select_by: the best checkpoint's suite score
    final_val_reward_accuracy: float | None = None

    @classmethod
    def of(cls, records: list[MetricsRecord]) -> MetricsSummary:
        train = [r for r in records if r.is_train]
        val = [r for r in records if r.is_validation]
        scored = [r for r in records if r.is_evaluation]
        best = min(val, key=lambda r: (r.val_loss, r.iteration)) if val else None
        # With select_by, best/ is the highest-scoring checkpoint (the earliest on a tie).
        top = max(scored, key=lambda r: (r.eval_score, -r.iteration)) if scored else None
        peaks = [r.peak_memory for r in train if r.peak_memory is not None]
        return cls(
            last_iteration=max((r.iteration for r in records), default=0),
            final_train_loss=train[-1].train_loss if train else None,
            final_val_loss=val[-1].val_loss if val else None,
            best_iteration=top.iteration if top else best.iteration if best else None,
            best_val_loss=best.val_loss if best else None,
            peak_memory_gb=max(peaks) if peaks else None,
            best_eval_score=top.eval_score if top else None,
            final_val_reward_accuracy=val[-1].val_reward_accuracy if val else None,
        )


STATUSES = ("running", "completed", "interrupted", "failed")


@dataclass(frozen=True)
class RunRecord:
    """run.json: what ran, on what data, how it ended, and a summary of its metrics."""

    name: str
    status: str  # one of STATUSES
    backend: str
    method: str
    fine_tune_type: str
    model: str
    iters: int
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> path, sha256, rows
    lineage: list[dict[str, Any]] = field(default_factory=list)  # the runs this one builds on
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    created: float = 0.0
    pid: int | None = None  # the writer's pid while running
    wall_s: float = 0.0
    resumes: int = 0
    finished: float | None = None
    error: str | None = None
    best_adapter: str | None = None  # "best" when best/ holds an adapter
    stopped_early: bool = False
    warnings: list[str] = field(default_factory=list)
    last_iteration: int = 0
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    best_iteration: int | None = None
    best_val_loss: float | None = None
    peak_memory_gb: float | None = None
    best_eval_score: float | None = None
    final_val_reward_accuracy: float | None = None  # method dpo, with the saved adapter
    schema_version: int = RUN_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.pid is None:
            del data["pid"]
        if not self.warnings:
            del data["warnings"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        return _from_known(cls, data)


def _from_known(cls, data: dict[str, Any]):
    """`cls` from the keys it knows; a line written before records were versioned is version 0.
    Unknown keys are dropped so a newer writer's fields never break an older reader."""
    known = {f.name for f in fields(cls)}
    kept = {k: v for k, v in data.items() if k in known}
    kept.setdefault("schema_version", 0)
    return cls(**kept)
