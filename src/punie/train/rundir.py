"""The run folder's layout, in one place: every file and folder a run holds, by name.

    run.json            the run record (records.RunRecord), written by punie.train.launch
    config.json         the resolved TrainConfig the trainer reads
    metrics.jsonl       one MetricsRecord a line, appended and flushed as training goes
    rollouts.jsonl      grpo: every sampled completion, its reward and advantage, by step
    train.log           the trainer's own output (and any traceback)
    select-server.log   with select_by: the log of the server that scores checkpoints
    .lock               flock'ed by the one process that writes the run, for the run's life
    adapters.safetensors, adapter_config.json
                        the final adapter, loadable by mlx_lm (server, generate, fuse)
    best/               the adapter with the lowest validation loss (or, with select_by, the
                        highest score on that suite)
    checkpoint/         what a resume needs: weights, optimizer state, batch order, RNG state
    reference.safetensors
                        method dpo: the frozen reference's log-probs of every pair, computed once
    dropped.jsonl       method dpo: the pairs each stage's `drop_noisy` left out, and why
    peft/, model/       the peft backend's own formats (a PEFT adapter; a full fine-tune)
    backend.json, launch.log
                        the peft backend's record of what ran where, and accelerate's log

Code that needs a path asks a `RunDir` for it; no other module spells these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def record(self) -> Path:
        return self.path / "run.json"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def rollouts(self) -> Path:
        return self.path / "rollouts.jsonl"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def select_log(self) -> Path:
        """The log of the mlx_lm.server that scores checkpoints for `select_by`."""
        return self.path / "select-server.log"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    @property
    def adapter(self) -> Path:
        """The final adapter's folder: the run folder itself."""
        return self.path

    @property
    def best(self) -> Path:
        return self.path / "best"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def checkpoint_state(self) -> Path:
        return self.checkpoint / "state.json"

    @property
    def checkpoint_optimizer(self) -> Path:
        return self.checkpoint / "optimizer.safetensors"

    @property
    def reference(self) -> Path:
        return self.path / "reference.safetensors"

    @property
    def dropped(self) -> Path:
        return self.path / "dropped.jsonl"

    @property
    def peft(self) -> Path:
        return self.path / "peft"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def backend_record(self) -> Path:
        return self.path / "backend.json"

    @property
    def launch_log(self) -> Path:
        return self.path / "launch.log"

    @property
    def trainer_scratch(self) -> Path:
        """Where a trainer may write its own files during the run; removed at the end."""
        return self.path / ".trainer"

    @property
    def mlx_lm_scratch(self) -> Path:
        """Where mlx_lm's trainer saves its unchecked final weights; removed when it returns."""
        return self.path / ".mlx_lm-final.safetensors"

    def is_run(self) -> bool:
        return self.record.is_file()

    def best_adapter(self) -> Path | None:
        """`best/` when it holds an adapter (a run with validation data), else None."""
        return self.best if has_adapter(self.best) else None


def adapter_weights(folder: Path | str) -> Path:
    """The weights file of an mlx_lm adapter folder, or the file itself when given one."""
    folder = Path(folder)
    return folder / ADAPTER_WEIGHTS if folder.is_dir() else folder


def adapter_config_file(folder: Path | str) -> Path:
    return Path(folder) / ADAPTER_CONFIG


def has_adapter(folder: Path | str) -> bool:
    return (Path(folder) / ADAPTER_WEIGHTS).is_file()
