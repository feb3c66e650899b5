"""The same tiny-model training config through both backends on this machine: mlx vs peft.

    scripts/setup --test                     # CPU torch + peft + trl + accelerate into .venv
    .venv/bin/python benchmarks/backends.py [--iters 60] [--batch-size 4] [--rounds 1]

One config (LoRA rank 8, scale 20 -> PEFT alpha 160, the last 2 blocks, every assistant turn
trained, constant learning rate), one dataset (the sample tool-calling task), through
`punie.train.launch.start` with `backend = "mlx"` and then `backend = "peft"`. Reported per
backend: wall time, mean training tokens/s over the reports after the first (the first includes
warm-up), the peak memory the backend reports, and the final train and validation loss.

Peak memory is each engine's own measure and they are not the same thing: mlx_lm reports MLX's
allocator peak (tensors only); the peft backend on CPU reports the training process's max RSS,
which includes the Python, torch and transformers runtime (about 0.6 GB before any tensor). On a
CUDA device the peft backend reports torch's allocator peak instead, comparable to MLX's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from punie.data.sample import splits
from punie.fsio import write_jsonl
from punie.model.tiny import build_tiny_model
from punie.train.config import TrainConfig
from punie.train.launch import start
from punie.train.rundir import RunDir
from punie.train.runs import read_metrics

# benchmarks/datasets.py would shadow Hugging Face `datasets` (TRL imports it) for a script run
# from this folder, whose folder Python puts first on sys.path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def run(backend: str, model: Path, data: Path, out: Path, args) -> dict:
    config = TrainConfig(
        model=str(model), data=str(data), adapter_path=str(out / backend), backend=backend,
        iters=args.iters, batch_size=args.batch_size, learning_rate=1e-3, rank=8, scale=20.0,
        num_layers=2, max_seq_length=512, mask_prompt=True, steps_per_report=10,
        steps_per_eval=args.iters, val_batches=2, save_every=args.iters, seed=0,
    )  # fmt: skip
    result = start(config, overwrite=True)
    metrics = read_metrics(RunDir(result.run_dir).metrics)
    speeds = [r["tokens_per_second"] for r in metrics if r.get("train_loss") is not None][1:]
    return {
        "backend": backend,
        "wall_s": result.record.get("wall_s"),
        "tokens_per_second": statistics.mean(speeds) if speeds else None,
        "peak_memory_gb": result.record.get("peak_memory_gb"),
        "final_train_loss": result.record.get("final_train_loss"),
        "final_val_loss": result.record.get("final_val_loss"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--backends", default="mlx,peft")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / "tiny", seed=0)
        data = tmp / "data"
        for name, rows in splits(n_train=args.rows, n_valid=16, n_test=0, seed=0).items():
            if rows:
                write_jsonl(data / f"{name}.jsonl", rows)
        results = [
            run(backend, model, data, tmp / f"round{i}", args)
            for i in range(args.rounds)
            for backend in args.backends.split(",")
        ]
    table = Table(title=f"tiny model, {args.iters} iters, batch {args.batch_size}, this CPU")
    for column in ("backend", "wall s", "tokens/s", "peak mem GB", "final train", "final val"):
        table.add_column(column, justify="right")

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    for r in results:
        table.add_row(
            r["backend"],
            fmt(r["wall_s"], ".1f"),
            fmt(r["tokens_per_second"], ".0f"),
            fmt(r["peak_memory_gb"], ".3f"),
            fmt(r["final_train_loss"], ".3f"),
            fmt(r["final_val_loss"], ".3f"),
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
