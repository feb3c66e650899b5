"""What `GuardedOptimizer` adds to one optimizer update, with nothing else in the step.

`benchmarks/train.py` and `benchmarks/train_step.py` time whole training steps, whose ~2% guard
cost hides inside the round-to-round spread of a shared machine. This one times the update alone,
compiled as mlx_lm compiles its step (the parameters and the optimizer state as the compiled
function's state), on the tiny model's real LoRA parameters, so a change to the guard shows up as
a difference in milliseconds:

- bare: `mlx.optimizers.Adam`, as `mlx_lm lora` builds it;
- guard: `punie.train.guard.GuardedOptimizer` around the same Adam (norm, non-finite skip);
- guard+clip: the same with `max_grad_norm` set (never reached).

Rounds alternate the order. Prints the median milliseconds per update and its spread.

    .venv/bin/python benchmarks/guard.py [--rounds 5] [--updates 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_map
from mlx_lm.utils import load

from punie.model.tiny import build_tiny_model
from punie.train.config import TrainConfig
from punie.train.guard import GuardedOptimizer
from punie.train.setup import prepare_model, trainable


def lora_parameters() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(Path(tmp) / "tiny", seed=0)
        model, _ = load(str(path))
        prepare_model(model, TrainConfig(model=str(path), data=tmp, rank=8, num_layers=-1))
        return dict(trainable(model))


def ms_per_update(params: dict, kind: str, updates: int) -> float:
    grads = tree_map(lambda p: mx.random.normal(p.shape, dtype=p.dtype), params)
    optimizer = optim.Adam(learning_rate=1e-3)
    if kind != "bare":
        optimizer = GuardedOptimizer(optimizer, 1e6 if kind == "guard+clip" else None)
    holder = {"params": dict(params)}
    optimizer.init(holder["params"])
    state = [holder, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def update(g):
        holder["params"] = optimizer.apply_gradients(g, holder["params"])

    update(grads)
    mx.eval(state)
    tic = time.perf_counter()
    for _ in range(updates):
        update(grads)
        mx.eval(state)
    return 1000 * (time.perf_counter() - tic) / updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=300)
    args = parser.parse_args()
    params = lora_parameters()
    kinds = ["bare", "guard", "guard+clip"]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            times[kind].append(ms_per_update(params, kind, args.updates))
    size = sum(p.size for p in params.values())
    print(f"tiny model LoRA: {len(params)} arrays, {size} values; {args.rounds} rounds")
    print(f"{'optimizer':>11} {'ms/update':>10} {'min-max':>14} {'added ms':>9}")
    base = statistics.median(times["bare"])
    for kind, values in times.items():
        median = statistics.median(values)
        print(f"{kind:>11} {median:>10.3f} {min(values):>6.3f}-{max(values):<7.3f} "
              f"{median - base:>9.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
