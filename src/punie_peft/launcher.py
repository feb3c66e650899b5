"""Many processes, one GPU each (or CPU processes), through `accelerate launch`.

`accelerate_command` is pure: a Launch plan in, argv out. `run_accelerate` is the edge: it writes
the config for the workers, runs the command in its own process group (punie.proc: the group is
stopped on error or Ctrl-C), and hands each new metrics.jsonl record to a callback while it runs.

Every process runs `python -m punie_peft.worker <run_dir>` (the config is run_dir/config.json);
the Trainer inside sees the distributed environment torchrun sets and trains with DDP (gloo on
CPU, NCCL on GPUs).
FSDP or DeepSpeed ZeRO come from an accelerate config file (`accelerate config`), passed through.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie.errors import BackendError
from punie.fsio import write_json
from punie.proc import child_env, child_process
from punie.train.callbacks import TrainingCallback, TrainingEvents
from punie.train.records import MetricsRecord
from punie.train.rundir import RunDir

WORKER = "punie_peft.worker"


@dataclass(frozen=True)
class Launch:
    num_processes: int = 2
    cpu: bool = False  # CPU processes talking over gloo instead of one GPU each
    config_file: str | None = None  # accelerate's YAML: FSDP, DeepSpeed ZeRO, mixed precision
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int = 29500


def accelerate_command(plan: Launch, run_dir: Path) -> list[str]:
    """The `accelerate launch` argv that runs the worker in `plan.num_processes` processes."""
    if plan.num_processes < 1:
        raise BackendError(f"num_processes: must be at least 1, got {plan.num_processes}")
    if plan.num_machines > 1 and not plan.main_process_ip:
        raise BackendError("main_process_ip: required when num_machines > 1 (the rank-0 machine)")
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if plan.config_file:
        cmd += ["--config_file", plan.config_file]
    elif plan.num_processes > 1 or plan.num_machines > 1:
        # torchrun-style DDP; on CPU the workers' Trainer (use_cpu) picks gloo.
        cmd += ["--multi_gpu"]
    cmd += [
        "--num_processes", str(plan.num_processes),
        "--num_machines", str(plan.num_machines),
        "--machine_rank", str(plan.machine_rank),
        "--main_process_port", str(plan.main_process_port),
        "--mixed_precision", "no",
        "--dynamo_backend", "no",
    ]  # fmt: skip
    if plan.main_process_ip:
        cmd += ["--main_process_ip", plan.main_process_ip]
    return [*cmd, "-m", WORKER, str(run_dir)]


def launch_env(plan: Launch) -> dict[str, str]:
    extra = {"OMP_NUM_THREADS": "1"} if plan.cpu else {}
    if plan.cpu:
        extra["ACCELERATE_USE_CPU"] = "true"
        extra["CUDA_VISIBLE_DEVICES"] = ""
    return child_env(extra)


def _new_records(path: Path, seen: int) -> tuple[list[MetricsRecord], int]:
    if not path.exists():
        return [], seen
    lines = path.read_text(encoding="utf-8").splitlines()
    complete = [json.loads(line) for line in lines[seen:] if line.endswith("}")]
    return [MetricsRecord.from_dict(r) for r in complete], seen + len(complete)


def run_accelerate(
    config: Any, run: RunDir, plan: Launch, events: TrainingEvents | None = None
) -> Path:
    """Run the training under accelerate; return the adapter path from the backend record.
    The workers write metrics.jsonl; its new records are read back here for `events`."""
    events = events or TrainingCallback()
    run.path.mkdir(parents=True, exist_ok=True)
    write_json(run.config, config.to_dict())  # what the workers read
    run.metrics.unlink(missing_ok=True)
    run.backend_record.unlink(missing_ok=True)
    log = run.launch_log
    log.unlink(missing_ok=True)
    cmd = accelerate_command(plan, run.path)
    seen = 0

    def tell(records: list[MetricsRecord]) -> None:
        for r in records:
            events.on_step(r.iteration)
            if r.is_train:
                events.on_train_report(r)
            if r.is_validation:
                events.on_validation_report(r)

    events.on_stage_start(config.method, 0, config.iters)
    with child_process(cmd, log=log, env=launch_env(plan), grace=10.0) as proc:
        while proc.poll() is None:
            time.sleep(0.5)
            records, seen = _new_records(run.metrics, seen)
            tell(records)
        code = proc.wait()
    records, seen = _new_records(run.metrics, seen)
    tell(records)
    if code != 0 or not run.backend_record.exists():
        events.on_stage_end(config.method, 0, "failed")
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise BackendError(f"accelerate launch exited with code {code}: {tail} (log: {log})")
    record = json.loads(run.backend_record.read_text(encoding="utf-8"))
    events.on_stage_end(config.method, int(record.get("iterations", 0)), "completed")
    return Path(record["adapter"])
