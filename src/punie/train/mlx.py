"""Training on MLX: the worker child process, seen from the parent.

`run_worker` starts `python -m punie.train.worker RUN_DIR` through `punie.proc` (own process
group, OpenBLAS preloaded, stopped with SIGTERM then SIGKILL however the block exits), reads its
JSON-line events and hands metrics records, per-iteration ticks and warnings (`{"warning": ...}`,
about the data, before training starts) to a callback.

`lora_command` is the equivalent bare `python -m mlx_lm lora` invocation, kept pure (config in,
argv out) for the benchmark that compares the two.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from punie.backends.base import MetricsCallback
from punie.errors import BackendError, TrainingInterrupted
from punie.logecho import LogEcho
from punie.proc import child_process, python_module
from punie.train.config import TrainConfig

# Enough for the worker to finish the step it is in and write its checkpoint.
STOP_GRACE_S = 30.0


def worker_command(run_dir: Path) -> list[str]:
    return python_module("punie.train.worker", str(run_dir))


def run_worker(run_dir: Path, on_metrics: MetricsCallback | None = None) -> dict:
    """Run the worker to its end; return its last event. Raises PunieError if it failed."""
    run_dir = Path(run_dir)
    log = run_dir / "train.log"
    last: dict = {}
    error = None
    with child_process(worker_command(run_dir), stdout=subprocess.PIPE, grace=STOP_GRACE_S) as proc:
        with open(log, "a", encoding="utf-8") as sink, LogEcho(log, "trainer"):  # memory warning
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace")
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    sink.write(line)  # output from before the worker took over its stdout
                    continue
                kind = event.get("event")
                if kind == "metrics" and on_metrics:
                    on_metrics(event["record"])
                elif kind == "step" and on_metrics:
                    on_metrics({"iteration": event["iteration"]})
                elif kind == "warning" and on_metrics:
                    on_metrics({"iteration": last.get("iteration", 0), "warning": event["message"]})
                elif kind == "error":
                    error = event["message"]
                last = event
        code = proc.wait()
    if code == 130 and last.get("event") == "interrupted":
        raise TrainingInterrupted(
            f"training stopped at iteration {last['iteration']}; checkpoint kept in "
            f"{run_dir / 'checkpoint'} (resume with `punie train --resume {run_dir}`)"
        )
    if code != 0:
        if error:
            raise BackendError(error)
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise BackendError(f"trainer exited with code {code}: {tail} (log: {log})")
    return last


def lora_yaml(config: TrainConfig) -> dict:
    """The options mlx_lm reads only from its YAML config file."""
    lora = {"rank": config.rank, "scale": config.scale, "dropout": config.dropout}
    if config.target_modules:
        lora["keys"] = list(config.target_modules)
    return {"lora_parameters": lora}


def lora_command(config: TrainConfig, yaml_path: Path) -> list[str]:
    """`python -m mlx_lm lora` with the same settings (constant learning rate only)."""
    cmd = python_module(
        "mlx_lm",
        "lora",
        "--train",
        "--model", config.model,
        "--data", config.data,
        "--adapter-path", config.adapter_path,
        "--fine-tune-type", config.fine_tune_type,
        "--optimizer", config.optimizer,
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
    return cmd
