"""What the guarded optimizer and the counting loss cost per training step, part by part.

`benchmarks/train.py` compares whole processes (`punie train` vs `mlx_lm lora`), whose step times
also move with the batches each run draws and with the machine. This one builds three compiled
steps in one process, as mlx_lm's trainer builds its step (`mx.compile` over the model's and the
optimizer's state), on the tiny model with the same LoRA layers, and times them on the same fixed
batches, alternating their order each round:

- bare: `mlx.optimizers.Adam` and `masked_loss` (what `mlx_lm lora` runs);
- guard: `punie.train.setup.build_optimizer` (the `GuardedOptimizer`: global norm, non-finite
  skip; clipping too with `--clip`) and `masked_loss`;
- punie: the guard and `counting_loss` (token accuracy, finite losses): what `punie train` runs.

So guard - bare is the guard's cost and punie - guard the token tally's. Per variant: the median
milliseconds per step over the rounds, their spread, and the CPU milliseconds per step (all
threads of this process). The script re-executes itself with `punie.proc.child_env` (OpenBLAS
preloaded), as the training children run.

    .venv/bin/python benchmarks/train_step.py [--rounds 7] [--batches 8] [--repeats 5] [--clip]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx_lm.utils import load
from rounds import spread

from punie.data.sample import splits
from punie.fsio import write_jsonl
from punie.model.tiny import build_tiny_model
from punie.proc import child_env
from punie.train.config import TrainConfig
from punie.train.events import EventChannel
from punie.train.masking import counting_loss, iterate_batches, masked_loss
from punie.train.setup import build_optimizer, prepare_model, training_data

VARIANTS = ("bare", "guard", "punie")


def compiled_step(config: TrainConfig, variant: str):
    """A fresh model and optimizer, and mlx_lm's compiled step over them."""
    mx.random.seed(config.seed)
    model, _ = load(config.model)
    prepare_model(model, config)
    if variant == "bare":
        optimizer, loss = optim.Adam(learning_rate=config.learning_rate), masked_loss
    else:
        optimizer = build_optimizer(config)
        loss = masked_loss if variant == "guard" else counting_loss(optimizer)
    loss_and_grad = nn.value_and_grad(model, loss)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, mask):
        (value, ntoks), grads = loss_and_grad(model, tokens, mask)
        optimizer.update(model, grads)
        return value, ntoks

    model.train()
    return step, state


def time_steps(step, state, batches: list, repeats: int) -> tuple[float, float]:
    """(wall ms, CPU ms) per step over `repeats` passes through `batches`."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        for tokens, mask in batches:
            value, ntoks = step(tokens, mask)
            mx.eval(state, value, ntoks)
    n = repeats * len(batches)
    return 1000 * (time.perf_counter() - wall) / n, 1000 * (time.process_time() - cpu) / n


def main() -> None:
    env = child_env()
    if env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD"):  # as the training children run
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=8, help="fixed batches per pass")
    parser.add_argument("--repeats", type=int, default=5, help="passes per variant per round")
    parser.add_argument("--clip", action="store_true", help="max_grad_norm set (never reached)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="punie-bench-step-"))
    model = build_tiny_model(work / "model", seed=0)
    for name, rows in splits(400, 40, 40, seed=0).items():
        write_jsonl(work / "data" / f"{name}.jsonl", rows)
    config = TrainConfig(
        model=str(model), data=str(work / "data"), adapter_path=str(work), rank=8, scale=5.0,
        num_layers=-1, learning_rate=1e-3, batch_size=4, max_seq_length=512, mask_prompt=True,
        max_grad_norm=1e6 if args.clip else None, seed=0,
    )  # fmt: skip
    _, tokenizer = load(config.model)
    with open(os.devnull, "w") as devnull:
        train_set, _ = training_data(config, tokenizer, EventChannel(devnull))
    np.random.seed(config.seed)
    draw = iterate_batches(train_set, config.batch_size, config.max_seq_length, loop=True)
    batches = [next(draw) for _ in range(args.batches)]

    steps = {v: compiled_step(config, v) for v in VARIANTS}
    for step, state in steps.values():  # compile and warm up
        time_steps(step, state, batches, 1)
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            w, c = time_steps(*steps[v], batches, args.repeats)
            wall[v].append(w)
            cpu[v].append(c)

    print(f"tiny model, {args.batches} fixed batches x {args.repeats} per round, batch 4, "
          f"{args.rounds} alternating rounds{', clipping on' if args.clip else ''}")  # fmt: skip
    print(f"{'variant':>7} {'step ms median (min-max)':>26} {'CPU ms/step':>12} {'vs bare':>8}")
    bare = statistics.median(wall["bare"])
    for v in VARIANTS:
        print(f"{v:>7} {spread(wall[v]):>26} {statistics.median(cpu[v]):>12.2f} "
              f"{statistics.median(wall[v]) / bare:>8.3f}")  # fmt: skip
    paired = [p / b for p, b in zip(wall["punie"], wall["bare"], strict=True)]
    print(f"punie/bare paired per round: {spread(paired, 3)} (target <= 1.02)")
    print(json.dumps({v: round(statistics.median(wall[v]), 3) for v in VARIANTS}))


if __name__ == "__main__":
    main()
