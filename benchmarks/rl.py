"""GRPO rollouts: sampling inside training vs mlx_lm's `batch_generate` alone, and where a step's
time goes.

Part 1, the same prompts (the sample task's, with its four tools, through the chat template), the
same group size, temperature and token budget, the same LoRA adapter, the same seed:

- `punie rollout`: `punie.train.rollout.sample` on the model object being trained (LoRA layers
  wrapped by `prepare_model`, adapter loaded with `load_trainable`), as the GRPO worker calls it;
- `mlx_lm batch_generate`: what a user would otherwise run, a model loaded by
  `mlx_lm.utils.load(model, adapter_path=...)` and `batch_generate(..., sampler=...)`.

Rounds alternate which goes first. On a shared machine the wall time swings with other load, so
the table gives the median and the best round (the least disturbed) with the spread (min–max),
and the CPU seconds of this process, which load moves less. The target is a ratio ≥ 0.8.

Part 2 runs a few GRPO iterations (`GRPOStep`) on the sample task's prompts and splits each
step's time between the rollout (sampling + scoring) and the update (reference pass + optimizer
updates); the first step, which compiles, is left out.

    .venv/bin/python benchmarks/rl.py [--prompts 8] [--group 4] [--max-tokens 48] [--rounds 4]
        [--temperature 1.0] [--steps 4] [--adapter ADAPTER]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table


def build(args, work: Path, n_prompts: int):
    import mlx.core as mx
    from mlx_lm.utils import load

    from punie.data.sample import eval_suite
    from punie.model.tiny import build_tiny_model
    from punie.train.checkpoint import save_adapter
    from punie.train.config import TrainConfig
    from punie.train.setup import prepare_model

    model_dir = build_tiny_model(work / "model", seed=0)
    suite = eval_suite(max(n_prompts, 8), seed=3)
    (work / "prompts.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    config = TrainConfig(
        model=str(model_dir),
        data="",
        method="grpo",
        reward_suite=str(work / "prompts.yaml"),
        rank=16,
        scale=5.0,
        num_layers=-1,
        batch_size=n_prompts,
        learning_rate=1e-4,
        max_seq_length=1024,
        adapter_path=str(work / "run"),
    )
    # An adapter with non-zero B (a fresh LoRA is the identity), saved for mlx_lm to load.
    model, tokenizer = load(str(model_dir))
    mx.random.seed(0)
    prepare_model(model, config)
    model.update(_nudged(model))
    save_adapter(work / "adapter", model, config)
    if args.adapter:  # an SFT adapter of the same tiny model (seed 0), rank 16, all layers
        shutil.rmtree(work / "adapter")
        shutil.copytree(args.adapter, work / "adapter")
    return model_dir, config, model, tokenizer


def _nudged(model):
    """The trainable weights with every lora_b given small random values."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    flat = [
        (k, mx.random.normal(v.shape) * 0.01 if k.endswith("lora_b") else v)
        for k, v in tree_flatten(model.trainable_parameters())
    ]
    return tree_unflatten(flat)


def throughput(args, work: Path) -> Table:
    import mlx.core as mx
    from mlx_lm.generate import batch_generate
    from mlx_lm.sample_utils import make_sampler
    from mlx_lm.utils import load

    from punie.rl.trainer import load_prompts
    from punie.train.rollout import sample
    from punie.train.setup import load_trainable

    model_dir, config, model, tokenizer = build(args, work, args.prompts)
    load_trainable(model, work / "adapter", "adapter")
    _, prompts = load_prompts(config, tokenizer)
    tokens = [p.tokens for p in prompts[: args.prompts]]
    plain, plain_tok = load(str(model_dir), adapter_path=str(work / "adapter"))

    def ours() -> int:
        mx.random.seed(1)
        r = sample(
            model,
            tokenizer,
            tokens,
            group_size=args.group,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
        )
        return r.tokens

    def theirs() -> int:
        mx.random.seed(1)
        repeated = [t for t in tokens for _ in range(args.group)]
        r = batch_generate(
            plain,
            plain_tok,
            repeated,
            max_tokens=args.max_tokens,
            sampler=make_sampler(temp=args.temperature),
            return_token_ids=True,
        )
        # batch_generate drops the stop token; count it back where a completion stopped early
        return sum(len(t) + (len(t) < args.max_tokens) for t in r.token_ids)

    runs = {"punie rollout (in training)": ours, "mlx_lm batch_generate (alone)": theirs}
    for fn in runs.values():
        fn()  # warm-up: compile, caches
    seen: dict[str, list[tuple[float, float, int]]] = {k: [] for k in runs}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            n = runs[name]()
            seen[name].append((time.perf_counter() - wall, time.process_time() - cpu, n))

    table = Table(
        title=(
            f"Rollout throughput: {args.prompts} prompts × G={args.group}, ≤{args.max_tokens} "
            f"tokens, T={args.temperature}, {args.rounds} alternating rounds"
        )
    )
    for col in ("engine", "tok/s median", "tok/s best", "spread (min–max)", "CPU s/round",
                "tokens/round", "ratio (median)"):  # fmt: skip
        table.add_column(col)
    medians = {name: statistics.median(n / w for w, _, n in rows) for name, rows in seen.items()}
    reference = medians["mlx_lm batch_generate (alone)"]
    for name, rows in seen.items():
        rates = [n / w for w, _, n in rows]
        table.add_row(
            name,
            f"{medians[name]:.0f}",
            f"{max(rates):.0f}",
            f"{min(rates):.0f}–{max(rates):.0f}",
            f"{statistics.median(c for _, c, _ in rows):.2f}",
            f"{statistics.median(n for _, _, n in rows):.0f}",
            f"{medians[name] / reference:.2f}",
        )
    return table


def split(args, work: Path) -> Table:
    import mlx.core as mx
    from mlx_lm.utils import load

    from punie.rl.trainer import GRPOStep, load_prompts
    from punie.train.config import TrainConfig
    from punie.train.setup import build_optimizer, load_trainable, prepare_model, trainable

    model_dir = work / "model"
    config = TrainConfig(
        model=str(model_dir),
        data="",
        method="grpo",
        reward_suite=str(work / "prompts.yaml"),
        rank=16,
        scale=5.0,
        num_layers=-1,
        batch_size=args.prompts,
        group_size=args.group,
        max_completion_tokens=args.max_tokens,
        temperature=args.temperature,
        learning_rate=1e-4,
        max_seq_length=1024,
    )
    model, tokenizer = load(str(model_dir))
    mx.random.seed(0)
    prepare_model(model, config)
    load_trainable(model, work / "adapter", "adapter")
    suite, prompts = load_prompts(config, tokenizer)
    step = GRPOStep(
        config, model, tokenizer, build_optimizer(config), suite, prompts, dict(trainable(model))
    )
    records = [step.run(it)[0] for it in range(args.steps + 1)][1:]
    table = Table(title=f"GRPO step time split ({args.steps} steps after the first, kl_beta 0.04)")
    for col in ("part", "s/step median", "share", "tok/s median"):
        table.add_column(col)
    roll = statistics.median(r.rollout_time for r in records)
    upd = statistics.median(r.update_time for r in records)
    table.add_row(
        "rollout (sample + score)",
        f"{roll:.2f}",
        f"{roll / (roll + upd):.0%}",
        f"{statistics.median(r.rollout_tokens_per_second for r in records):.0f}",
    )
    table.add_row(
        "update (ref pass + step)",
        f"{upd:.2f}",
        f"{upd / (roll + upd):.0%}",
        f"{statistics.median(r.update_tokens_per_second for r in records):.0f}",
    )
    zero = statistics.mean(r.zero_variance_fraction for r in records)
    table.caption = f"zero-variance groups: {zero:.0%} of groups (their update is skipped)"
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument(
        "--adapter",
        help="an SFT adapter of the tiny model (seed 0, rank 16, num_layers -1) to start from; "
        "without one the rewards are all 0 and part 2 has no update to time",
    )
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        console.print(throughput(args, work))
        console.print(split(args, work))


if __name__ == "__main__":
    main()
