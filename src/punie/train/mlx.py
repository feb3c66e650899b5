"""Training on MLX: the worker child process, seen from the parent.

`run_worker` starts `python -m punie.train.worker RUN_DIR` (or, with `hosts`, one a host under
`mlx.launch`) through `punie.proc` (own process
group, OpenBLAS preloaded, stopped with SIGTERM then SIGKILL however the block exits), reads its
JSON-line events (`punie.train.events`) and turns them into `TrainingEvents` calls. A `failed`
event becomes one PunieError line naming the field at fault.

`lora_command` is the equivalent bare `python -m mlx_lm lora` invocation, kept pure (config in,
argv out) for the benchmark that compares the two.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from punie.errors import BackendError, TrainingInterrupted
from punie.logecho import LogEcho
from punie.proc import child_process, python_module
from punie.train.callbacks import TrainingCallback, TrainingEvents
from punie.train.config import TrainConfig, effective_num_layers
from punie.train.events import TrainingFailed
from punie.train.records import MetricsRecord
from punie.train.rundir import RunDir

# Enough for the worker to finish the step it is in and write its checkpoint.
STOP_GRACE_S = 30.0
INTERRUPTED_EXIT = 130


SFT_WORKER = "punie.train.worker"
# GRPO, and any run that picks checkpoints by a suite, scores inside training: that worker sits
# above punie.eval and punie.serve (tests/test_layers.py), so it is named here, not imported.
EVAL_WORKER = "punie.rl.worker"


def worker_module(config: TrainConfig) -> str:
    return EVAL_WORKER if config.method == "grpo" or config.select_by else SFT_WORKER


def worker_command(run_dir: Path, module: str = SFT_WORKER, hosts: str | None = None) -> list[str]:
    """The worker; with `hosts`, one worker a host under `mlx.launch` (MLX's launcher, ring
    backend): a comma-separated list of IPs (repeat one for several processes on it), or a
    hostfile in mlx.launch's JSON format."""
    worker = python_module(module, str(run_dir))
    if not hosts:
        return worker
    where = ["--hostfile", hosts] if Path(hosts).is_file() else ["--hosts", hosts]
    return [
        launcher(), *where, "--backend", "ring", "--python", sys.executable, "--", *worker[1:],
    ]  # fmt: skip


def launcher() -> str:
    """mlx.launch from the environment running Punie (the same MLX as the workers')."""
    beside = Path(sys.executable).parent / "mlx.launch"
    found = str(beside) if beside.is_file() else shutil.which("mlx.launch")
    if not found:
        raise BackendError("--hosts: mlx.launch is not installed beside this Python (mlx>=0.22)")
    return found


def dispatch(event: dict[str, Any], run: RunDir, events: TrainingEvents, stage: str) -> None:
    """One worker event -> the callback's named event."""
    kind = event.get("event")
    if kind == "started":
        events.on_stage_start(stage, event["iteration"], event["iters"])
    elif kind == "step":
        events.on_step(event["iteration"])
    elif kind == "metrics":
        record = MetricsRecord.from_dict(event["record"])
        if record.is_train:
            events.on_train_report(record)
        if record.is_validation:
            events.on_validation_report(record)
    elif kind == "checkpoint":
        events.on_checkpoint(event["iteration"], run.checkpoint)
    elif kind == "best":
        events.on_checkpoint(event["iteration"], run.best)
    elif kind == "warning":
        events.on_warning(event["message"])


def run_worker(
    run_dir: Path,
    events: TrainingEvents | None = None,
    stage: str = "sft",
    module: str = SFT_WORKER,
    hosts: str | None = None,
) -> dict[str, Any]:
    """Run the worker to its end (on `hosts`, data-parallel); return its last event. Raises
    PunieError if it failed."""
    run = RunDir(Path(run_dir))
    events = events or TrainingCallback()
    last: dict[str, Any] = {}
    failed: dict[str, Any] | None = None
    cmd = worker_command(run.path, module, hosts)
    with child_process(cmd, stdout=subprocess.PIPE, grace=STOP_GRACE_S) as proc:
        with open(run.log, "a", encoding="utf-8") as sink, LogEcho(run.log, "trainer"):
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace")
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    sink.write(line)  # output from before the worker took over its stdout
                    continue
                if event.get("event") == "failed":
                    failed = event
                dispatch(event, run, events, stage)
                last = event
        code = proc.wait()
    iteration = last.get("iteration", 0)
    if code == INTERRUPTED_EXIT and last.get("event") == "interrupted":
        events.on_stage_end(stage, iteration, "interrupted")
        raise TrainingInterrupted(
            f"training stopped at iteration {iteration}; checkpoint kept in "
            f"{run.checkpoint} (resume with `punie train --resume {run.path}`)"
        )
    if code != 0:
        events.on_stage_end(stage, iteration, "failed")
        if failed:
            raise TrainingFailed.from_event(failed)
        tail = " | ".join(run.log.read_text(errors="replace").strip().splitlines()[-3:])
        raise BackendError(f"trainer exited with code {code}: {tail} (log: {run.log})")
    events.on_stage_end(stage, iteration, "completed")
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
        "--num-layers", str(effective_num_layers(config.num_layers, None)),
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
