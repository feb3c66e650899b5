"""`punie train` vs bare `python -m mlx_lm lora`: same tiny-model training, wall time and losses.

Both run with the same child environment (punie.proc.child_env: OpenBLAS preloaded), the same
settings (one TrainConfig; `punie.train.mlx.lora_command` builds the bare command from it) and
single-turn chat rows, on which punie's every-assistant-turn mask equals mlx_lm's --mask-prompt.
Runs alternate (punie, bare, punie, bare, ...) so drift in machine load hits both alike.

    .venv/bin/python benchmarks/train.py [--rounds 3] [--iters 200]

Prints a table of wall times, the median ratio punie/bare (target <= 1.02) and the largest
difference between the two train-loss curves (parsed from mlx_lm's printed table for the bare
run: acceptable in a benchmark, never in the product).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from punie.data.sample import splits
from punie.fsio import write_jsonl
from punie.model.tiny import build_tiny_model
from punie.proc import child_env
from punie.train.config import TrainConfig, to_toml
from punie.train.mlx import lora_command, lora_yaml
from punie.train.rundir import RunDir
from punie.train.runs import read_metrics

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TRAIN_ROW = re.compile(r"^\s*(\d+)\s+([0-9.]+|nan)\s+[▼▲]")


def bare_losses(stdout: str) -> dict[int, float]:
    losses = {}
    for line in _ANSI.sub("", stdout).splitlines():
        m = _TRAIN_ROW.match(line)
        if m:
            losses[int(m.group(1))] = float(m.group(2))
    return losses


def timed(cmd: list[str]) -> tuple[float, str]:
    tic = time.monotonic()
    result = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
    wall = time.monotonic() - tic
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return wall, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="punie-bench-train-"))
    model = build_tiny_model(work / "model", seed=0)
    for name, rows in splits(400, 40, 40, seed=0).items():
        write_jsonl(work / "data" / f"{name}.jsonl", rows)
    base = TrainConfig(
        model=str(model), data=str(work / "data"), rank=8, scale=5.0, num_layers=-1,
        learning_rate=1e-3, batch_size=4, iters=args.iters, max_seq_length=512,
        mask_prompt=True, steps_per_report=10, steps_per_eval=50, val_batches=5,
        save_every=100, seed=0,
    )  # fmt: skip
    rows = []
    for r in range(args.rounds):
        ours = base.with_(adapter_path=str(work / "runs" / f"punie{r}"))
        config_file = work / f"punie{r}.toml"
        config_file.write_text(to_toml(ours))
        wall_p, _ = timed([sys.executable, "-m", "punie", "train", str(config_file), "--json"])
        theirs = base.with_(adapter_path=str(work / "runs" / f"bare{r}"))
        yaml_path = work / f"bare{r}.yaml"
        yaml_path.write_text(yaml.safe_dump(lora_yaml(theirs)))
        wall_b, stdout = timed(lora_command(theirs, yaml_path))
        ours_losses = {
            m["iteration"]: m["train_loss"]
            for m in read_metrics(RunDir(Path(ours.adapter_path)).metrics)
            if "train_loss" in m
        }
        theirs_losses = bare_losses(stdout)
        shared = sorted(set(ours_losses) & set(theirs_losses))
        diff = max(abs(ours_losses[i] - theirs_losses[i]) for i in shared)
        rows.append((r, wall_p, wall_b, wall_p / wall_b, len(shared), diff))

    print(f"tiny model, {args.iters} iters, batch 4, seq<=512, {args.rounds} alternating rounds")
    print(f"{'round':>5} {'punie s':>9} {'bare s':>9} {'ratio':>7} {'points':>7} {'max dloss':>10}")
    for r, wp, wb, ratio, n, diff in rows:
        print(f"{r:>5} {wp:>9.2f} {wb:>9.2f} {ratio:>7.3f} {n:>7} {diff:>10.2e}")
    ratio = statistics.median(x[3] for x in rows)
    worst = max(x[5] for x in rows)
    print(f"median ratio punie/bare: {ratio:.3f} (target <= 1.02); max loss diff {worst:.1e}")
    print(json.dumps({"median_ratio": round(ratio, 4), "max_loss_diff": worst}))


if __name__ == "__main__":
    main()
