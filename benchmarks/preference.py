"""One DPO step with the precomputed reference vs one SFT step over the same tokens (MLX).

What a user would otherwise run is an SFT step (mlx_lm's trainer: masked cross-entropy, one
forward and backward pass) or a DPO step that runs the frozen reference every step (TRL's way,
with a second model or the adapter switched off). All three run here on the same batches: B pairs
are 2B sequences (chosen + rejected), and the SFT step trains on exactly the answer tokens the DPO
loss scores. Each step is compiled as mlx_lm compiles its own (`mx.compile` over model, optimizer
and RNG state) and timed after warm-up; the variants alternate within each round (the order
rotates) so drift in machine load hits all alike.

    .venv/bin/python benchmarks/preference.py [--rounds 5] [--steps 20] [--batch-size 4]
        [--model PATH]   # default: the embedded tiny model; any mlx_lm model folder works

Prints, per variant, the median steady-state step wall time and its spread over rounds (min-max
of the per-round medians), CPU time per step, and the ratio to the SFT step (target: DPO with the
precomputed reference <= 1.3x).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx_lm.utils import load

from punie.chat.preference import pair_tokens
from punie.data.sample import splits
from punie.model.tiny import build_tiny_model
from punie.train.config import TrainConfig
from punie.train.dpo import make_step
from punie.train.pair_data import pair_batch, sequence_logps, split_halves
from punie.train.setup import prepare_model
from punie.train.stages import plan


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """The sample task's chat rows as pairs: the row's answer over another row's."""
    rows = splits(n, 1, 1, seed=seed)["train"]
    rng = random.Random(seed)
    out = []
    for row in rows:
        other = rng.choice([r for r in rows if r["messages"][-1] != row["messages"][-1]])
        out.append(
            {
                "prompt": row["messages"][:-1],
                "chosen": [row["messages"][-1]],
                "rejected": [other["messages"][-1]],
                "tools": row.get("tools"),
            }
        )
    return out


def sft_step(model, optimizer):
    """mlx_lm's step shape: mean cross-entropy over the marked targets, grad, update."""

    def loss_fn(model, tokens, mask):
        logits = model(tokens[:, :-1])
        ce = nn.losses.cross_entropy(logits, tokens[:, 1:]) * mask
        return ce.astype(mx.float32).sum() / mask.sum()

    value_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, mask):
        loss, grad = value_and_grad(model, tokens, mask)
        optimizer.update(model, grad)
        return loss

    return lambda tokens, mask, ref_c, ref_r: step(tokens, mask)


def dpo_step(model, optimizer, stage):
    step = make_step(model, optimizer, stage, gas=1)
    return lambda tokens, mask, ref_c, ref_r: step(tokens, mask, ref_c, ref_r, None, True)[0]


def dpo_step_with_reference(model, reference, optimizer, stage):
    """The reference's forward pass every step, then the policy's step."""
    step = make_step(model, optimizer, stage, gas=1)
    forward = mx.compile(lambda tokens, mask: sequence_logps(reference, tokens, mask))

    def run(tokens, mask, ref_c, ref_r):
        ref_c, ref_r = split_halves(mx.stop_gradient(forward(tokens, mask)))
        return step(tokens, mask, ref_c, ref_r, None, True)[0]

    return run


def timed(step, model, optimizer, batches, refs, steps: int, warmup: int):
    """Per-step wall and CPU seconds over `steps` steps after `warmup` (compilation) steps."""
    walls, cpus = [], []
    for i in range(warmup + steps):
        tokens, mask = batches[i % len(batches)]
        ref_c, ref_r = refs[i % len(batches)]
        wall, cpu = time.perf_counter(), time.process_time()
        out = step(tokens, mask, ref_c, ref_r)
        mx.eval(out, model.state, optimizer.state)
        if i >= warmup:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--warmup", type=int, default=None, help="steps before timing (default: every batch once)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()

    model_path = args.model or build_tiny_model(
        Path(tempfile.mkdtemp(prefix="punie-bench-pref-")) / "model", seed=0
    )
    config = TrainConfig(model=str(model_path), data=".", rank=8, scale=5.0, num_layers=-1)
    mx.random.seed(0)
    model, tokenizer = load(str(model_path))
    reference, _ = load(str(model_path))
    prepare_model(model, config)
    prepare_model(reference, config)
    reference.update(model.parameters())  # the same starting point, frozen
    reference.freeze()
    reference.eval()

    pairs = [pair_tokens(tokenizer, row) for row in preference_rows(4 * args.batch_size)]
    pairs.sort(key=lambda p: p.length)  # batches of like lengths, as training makes them
    groups = [range(i, i + args.batch_size) for i in range(0, len(pairs), args.batch_size)]
    batches = [pair_batch(pairs, list(g), 2048) for g in groups]
    refs = [split_halves(sequence_logps(reference, t, m)) for t, m in batches]
    mx.eval(refs)
    stage = plan(config.with_(method="dpo"), len(pairs))[0]
    warmup = len(batches) if args.warmup is None else args.warmup  # each shape compiled once
    optimizer = optim.Adam(learning_rate=1e-5)
    variants = {
        "sft step": sft_step(model, optimizer),
        "dpo, reference precomputed": dpo_step(model, optimizer, stage),
        "dpo, reference every step": dpo_step_with_reference(model, reference, optimizer, stage),
    }
    names = list(variants)
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    model.train()
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            results[name].append(
                timed(
                    variants[name],
                    model,
                    optimizer,
                    batches,
                    refs,
                    args.steps,
                    warmup if r == 0 else 1,
                )  # fmt: skip
            )

    tokens = sum(int(m.sum().item()) for _, m in batches) / len(batches)
    print(
        f"model {model_path}; {args.batch_size} pairs a step ({2 * args.batch_size} sequences, "
        f"{tokens:.0f} scored tokens on average); {args.rounds} rounds x {args.steps} steps, "
        "order rotated each round\n"
    )
    base = statistics.median(w for w, _ in results["sft step"])
    print(f"| {'variant':28} | step ms (median) | spread ms | CPU ms/step | vs SFT |")
    print(f"|{'-' * 30}|------------------|-----------|-------------|--------|")
    for name in names:
        walls = [w for w, _ in results[name]]
        cpus = [c for _, c in results[name]]
        wall = statistics.median(walls)
        spread = f"{1e3 * min(walls):.1f}-{1e3 * max(walls):.1f}"
        print(
            f"| {name:28} | {1e3 * wall:16.1f} | {spread:>9} | "
            f"{1e3 * statistics.median(cpus):11.1f} | {wall / base:5.2f}x |"
        )


if __name__ == "__main__":
    main()
