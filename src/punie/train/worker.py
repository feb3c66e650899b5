"""The training child process: `python -m punie.train.worker RUN_DIR`.

Reads `RUN_DIR/config.json`, builds the model the way `mlx_lm lora` does (same seeds in the same
order; `punie.train.setup`) and runs `mlx_lm.tuner.trainer.train` with the run's hooks between
steps (`punie.train.loop`; checkpoints in `punie.train.checkpoint`). Every assistant turn trains
(`punie.train.masking`: per-token masks and their loss).

SIGTERM/SIGINT: the current step finishes, a checkpoint is written, and the worker exits 130.
Progress goes to the parent as JSON lines on the original stdout (`punie.train.events`); a
failure is one `{"event": "failed", "reason", "field"}` line and exit code 2. mlx_lm's own output
(and any traceback) goes to `RUN_DIR/train.log`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

from punie.errors import PunieError
from punie.fsio import write_json
from punie.train.config import TrainConfig
from punie.train.events import EventChannel
from punie.train.rundir import RunDir, adapter_config_file
from punie.train.tracking import close_all

INTERRUPTED_EXIT = 130
FAILED_EXIT = 2


def redirect_output(log: Path) -> EventChannel:
    """The event channel on this process's stdout; its own output from now on to `log`."""
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return EventChannel(events)


class StopHandler:
    """SIGTERM/SIGINT: ask the loop to checkpoint and stop between two steps."""

    def __init__(self) -> None:
        self.requested = False
        self.loop = None

    def __call__(self, signum, frame) -> None:
        self.requested = True
        if self.loop is not None:
            self.loop.stop_requested = True

    def attach(self, loop) -> None:
        self.loop = loop
        loop.stop_requested = self.requested


def install_stop_handler() -> StopHandler:
    handler = StopHandler()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return handler


def run(run: RunDir, events: EventChannel, selector=None) -> int:
    """Train the run to its end; `selector` (see `Loop`) scores checkpoints for `select_by`."""
    # mlx, and the worker's modules built on it, load here: after the output is redirected to
    # train.log, and never in a process that only imports this module.
    import mlx.core as mx
    import numpy as np
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.utils import load

    from punie.train.loop import EarlyStop, Interrupted, Loop
    from punie.train.masking import counting_loss
    from punie.train.setup import (
        adapter_config,
        build_optimizer,
        load_trainable,
        prepare_model,
        resolve_num_layers,
        training_data,
    )

    stop = install_stop_handler()

    config = TrainConfig.from_dict(json.loads(run.config.read_text()), source=str(run.config))
    resuming = run.checkpoint_state.is_file()
    # Under `mlx.launch` (`punie train --hosts`) this is one rank of a data-parallel run: mlx_lm's
    # trainer averages the gradients over the ranks; rank 0 alone writes and reports.
    world = mx.distributed.init()
    primary = world.rank() == 0
    print(f"punie worker: rank {world.rank()} of {world.size()}", flush=True)  # to train.log
    if not primary:
        events = EventChannel(open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115

    # The same seeding, in the same order, as `mlx_lm lora`.
    np.random.seed(config.seed)
    model, tokenizer = load(config.model)
    config = resolve_num_layers(model, config, events)
    if config.method == "dpo":  # preference pairs, a frozen reference, its own step
        from punie.train.dpo import run_dpo

        return run_dpo(run, config, model, tokenizer, events, resuming, stop)
    train_set, valid = training_data(config, tokenizer, events)
    mx.random.seed(config.seed)
    prepare_model(model, config)
    if config.from_adapter and not resuming:
        load_trainable(model, Path(config.from_adapter), "from_adapter")

    optimizer = build_optimizer(config)
    loop = Loop(run, config, model, optimizer, valid, events, selector, primary=primary)
    stop.attach(loop)
    if resuming:
        loop.restore_checkpoint()
    elif primary:
        for stale in (run.best, run.checkpoint):
            shutil.rmtree(stale, ignore_errors=True)
    if loop.completed >= config.iters:
        events.send("done", iteration=loop.completed)
        return 0

    if primary:
        write_json(adapter_config_file(run.adapter), adapter_config(config))
    events.send("started", iteration=loop.completed, iters=config.iters)
    scratch = run.mlx_lm_scratch
    args = TrainingArgs(
        batch_size=config.batch_size,
        iters=config.iters - loop.completed,
        val_batches=config.val_batches,
        steps_per_report=config.steps_per_report,
        steps_per_eval=config.iters + 1,  # validation is the loop's, on the global count
        steps_per_save=config.iters + 1,  # checkpoints are the loop's, with optimizer state
        # mlx_lm saves its final weights here unchecked; the run's adapter is `finish`'s.
        adapter_file=str(scratch),
        max_seq_length=config.max_seq_length,
        grad_checkpoint=config.grad_checkpoint,
        grad_accumulation_steps=config.grad_accumulation_steps,
    )
    try:
        train(
            model=model,
            optimizer=optimizer,
            train_dataset=train_set,
            val_dataset=None,
            args=args,
            loss=counting_loss(optimizer),
            iterate_batches=loop.batches,
            training_callback=loop,
        )
    except EarlyStop:
        events.send("early_stop", iteration=loop.completed)
    except Interrupted:
        events.send("interrupted", iteration=loop.completed)
        return INTERRUPTED_EXIT
    else:
        loop.completed = config.iters  # `train` returns after the last step, with no next fetch
        events.send("step", iteration=loop.completed)
    finally:
        scratch.unlink(missing_ok=True)
    loop.finish()
    events.send("done", iteration=loop.completed, peak_memory=mx.get_peak_memory() / 1e9)
    return 0


def main(argv: list[str] | None = None, train_run=run) -> int:
    """`python -m ... RUN_DIR`: `train_run(run, events)` with the worker's output, failure event,
    exit codes and trackers (`punie.rl.worker` passes its own run)."""
    argv = sys.argv[1:] if argv is None else argv
    rundir = RunDir(Path(argv[0]))
    events = redirect_output(rundir.log)
    try:
        return train_run(rundir, events)
    except PunieError as e:  # a request the model cannot meet, bad data, a non-finite loss
        events.failed(e)
        return FAILED_EXIT
    finally:
        close_all()  # the trackers of `report_to`, however the run ended


if __name__ == "__main__":
    sys.exit(main())
