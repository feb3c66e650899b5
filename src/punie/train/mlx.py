"""Training on MLX: TrainConfig -> a `python -m mlx_lm lora` run in a child process.

`lora_command` is pure (config in, argv out); `run_training` is the edge that runs it, writes its
log to the run folder, and reports progress lines to a callback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from punie.errors import PunieError
from punie.fsio import atomic_file
from punie.proc import child_process, python_module
from punie.train.config import TrainConfig

# mlx_lm prints "   20    5.808 ▼    180    2.2k" per report; only the iteration is read from it,
# for progress. Numbers are taken from structured callbacks by the worker, never from this table.
_ITER_LINE = re.compile(r"^\s*(\d+)\s")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class TrainOutcome:
    adapter_path: Path
    wall_s: float
    log: Path


def lora_yaml(config: TrainConfig) -> dict:
    """The options mlx_lm reads only from its YAML config file."""
    return {
        "lora_parameters": {"rank": config.rank, "scale": config.scale, "dropout": config.dropout}
    }


def lora_command(config: TrainConfig, yaml_path: Path) -> list[str]:
    cmd = python_module(
        "mlx_lm",
        "lora",
        "--train",
        "--model", config.model,
        "--data", config.data,
        "--adapter-path", config.adapter_path,
        "--fine-tune-type", config.fine_tune_type,
        "--num-layers", str(config.num_layers),
        "--learning-rate", str(config.learning_rate),
        "--batch-size", str(config.batch_size),
        "--iters", str(config.iters),
        "--max-seq-length", str(config.max_seq_length),
        "--grad-accumulation-steps", str(config.grad_accumulation_steps),
        "--seed", str(config.seed),
        "--steps-per-report", str(config.steps_per_report),
        "--steps-per-eval", str(config.steps_per_eval),
        "--val-batches", str(config.val_batches),
        "--save-every", str(config.save_every),
        "-c", str(yaml_path),
    )  # fmt: skip
    if config.mask_prompt:
        cmd.append("--mask-prompt")
    if config.grad_checkpoint:
        cmd.append("--grad-checkpoint")
    if config.resume_adapter_file:
        cmd += ["--resume-adapter-file", config.resume_adapter_file]
    return cmd


def run_training(
    config: TrainConfig, *, on_iteration: Callable[[int], None] | None = None
) -> TrainOutcome:
    """Run mlx_lm's trainer to completion; raise PunieError (with the log's tail) if it fails."""
    out = Path(config.adapter_path)
    out.mkdir(parents=True, exist_ok=True)
    yaml_path = out / "lora_config.yaml"
    with atomic_file(yaml_path) as f:
        yaml.safe_dump(lora_yaml(config), f)
    log = out / "train.log"
    log.unlink(missing_ok=True)
    start = time.monotonic()
    with child_process(lora_command(config, yaml_path), stdout=-1, grace=5.0) as proc:
        with open(log, "w", encoding="utf-8") as sink:
            for raw in iter(proc.stdout.readline, b""):
                line = _ANSI.sub("", raw.decode("utf-8", "replace"))
                sink.write(line)
                for piece in line.split("\r"):
                    m = _ITER_LINE.match(piece)
                    if m and on_iteration and "val" not in piece:
                        on_iteration(int(m.group(1)))
        code = proc.wait()
    if code != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise PunieError(f"mlx_lm lora exited with code {code}: {tail} (log: {log})")
    return TrainOutcome(adapter_path=out, wall_s=time.monotonic() - start, log=log)
