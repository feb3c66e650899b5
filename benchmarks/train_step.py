"""What the guarded optimizer and the counting loss cost per step, isolated from start-up.

`benchmarks/train.py` compares whole processes (`punie train` vs `mlx_lm lora`); on a loaded
machine their step times swing by more than any overhead worth measuring. This one runs mlx_lm's
own compiled `train` loop in this process on the tiny model, the same LoRA layers and the same
batches, twice per round, alternating which goes first:

- bare: mlx_lm's optimizer as `mlx_lm lora` builds it, and `masked_loss`;
- punie: `punie.train.setup.build_optimizer` (the `GuardedOptimizer`: global norm, non-finite
  skip; clipping too with `--clip`) and `counting_loss` (token accuracy, finite losses).

Per run: the steady-state step time (median seconds per step over mlx_lm's reports after the
first, its own `iterations_per_second`), and the CPU time per step (this process, all threads,
over the whole loop), which other load on the machine moves far less than it moves wall time.
The script re-executes itself with `punie.proc.child_env` (OpenBLAS preloaded), as the training
children run.

    .venv/bin/python benchmarks/train_step.py [--rounds 5] [--iters 200] [--clip]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.trainer import TrainingArgs, train
from mlx_lm.utils import load

from punie.data.sample import splits
from punie.fsio import write_jsonl
from punie.model.tiny import build_tiny_model
from punie.proc import child_env
from punie.train.config import TrainConfig
from punie.train.events import EventChannel
from punie.train.masking import counting_loss, iterate_batches, masked_loss
from punie.train.setup import build_optimizer, prepare_model, training_data


class Reports(TrainingCallback):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_train_loss_report(self, info: dict) -> None:
        self.rows.append(info)


def one_run(config: TrainConfig, guarded: bool) -> dict:
    np.random.seed(config.seed)  # the same batches in the same order, as mlx_lm lora seeds them
    mx.random.seed(config.seed)
    model, tokenizer = load(config.model)
    train_set, _ = training_data(config, tokenizer, EventChannel(open("/dev/null", "w")))  # noqa: SIM115
    prepare_model(model, config)
    if guarded:
        optimizer = build_optimizer(config)
        loss = counting_loss(optimizer)
    else:
        optimizer, loss = optim.Adam(learning_rate=config.learning_rate), masked_loss
    reports = Reports()
    args = TrainingArgs(batch_size=config.batch_size, iters=config.iters,
                        steps_per_report=config.steps_per_report,
                        steps_per_eval=config.iters + 1, steps_per_save=config.iters + 1,
                        adapter_file=str(Path(config.adapter_path) / "scratch.safetensors"),
                        max_seq_length=config.max_seq_length)  # fmt: skip
    cpu, wall = time.process_time(), time.perf_counter()
    train(model=model, optimizer=optimizer, train_dataset=train_set, args=args, loss=loss,
          iterate_batches=iterate_batches, training_callback=reports)  # fmt: skip
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    later = reports.rows[1:] or reports.rows
    return {
        "step_s": statistics.median(1 / r["iterations_per_second"] for r in later),
        "cpu_step_s": cpu / config.iters,
        "wall_s": wall,
        "loss": reports.rows[-1]["train_loss"],
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    env = child_env()
    if env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD"):  # as the training children run
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--clip", action="store_true", help="max_grad_norm set (never reached)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="punie-bench-step-"))
    model = build_tiny_model(work / "model", seed=0)
    for name, rows in splits(400, 40, 40, seed=0).items():
        write_jsonl(work / "data" / f"{name}.jsonl", rows)
    config = TrainConfig(
        model=str(model), data=str(work / "data"), adapter_path=str(work), rank=8, scale=5.0,
        num_layers=-1, learning_rate=1e-3, batch_size=4, iters=args.iters, max_seq_length=512,
        mask_prompt=True, steps_per_report=10, max_grad_norm=1e6 if args.clip else None, seed=0,
    )  # fmt: skip
    runs = []
    for r in range(args.rounds):
        for who in ("punie", "bare") if r % 2 == 0 else ("bare", "punie"):
            runs.append({"round": r, "who": who, **one_run(config, who == "punie")})
    print(f"tiny model, {args.iters} steps, batch 4, seq<=512, {args.rounds} alternating rounds")
    print(f"{'round':>5} {'who':>6} {'step ms':>8} {'CPU ms/step':>12} {'wall s':>8} {'loss':>8}")
    for x in runs:
        print(f"{x['round']:>5} {x['who']:>6} {1000 * x['step_s']:>8.2f} "
              f"{1000 * x['cpu_step_s']:>12.2f} {x['wall_s']:>8.2f} {x['loss']:>8.4f}")  # fmt: skip
    by = {(x["round"], x["who"]): x for x in runs}
    ratios = {k: [by[(r, "punie")][k] / by[(r, "bare")][k] for r in range(args.rounds)]
              for k in ("step_s", "cpu_step_s")}  # fmt: skip
    print("ratio punie/bare, median (min-max) over rounds:")
    print(f"  steady-state step {spread(ratios['step_s'])}; "
          f"CPU per step {spread(ratios['cpu_step_s'])} (target <= 1.02)")  # fmt: skip
    print(json.dumps({k: round(statistics.median(v), 4) for k, v in ratios.items()}))


if __name__ == "__main__":
    main()
