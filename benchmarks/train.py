"""`punie train` vs bare `python -m mlx_lm lora`: same tiny-model training; wall time, CPU time,
steady-state step time and losses.

Both run with the same child environment (punie.proc.child_env: OpenBLAS preloaded), the same
settings (one TrainConfig; `punie.train.mlx.lora_command` builds the bare command from it) and
single-turn chat rows, on which punie's every-assistant-turn mask equals mlx_lm's --mask-prompt.
Rounds alternate which goes first (punie, bare; bare, punie; ...) so drift in machine load hits
both alike.

Three numbers per run, because they answer different questions:
- wall time: what a user waits, start-up (imports, model load, tokenizing) included;
- CPU time (user + system, the process and its children): the work done, which other load on
  the machine moves far less than it moves wall time;
- steady-state step time: the median seconds per optimizer step over the training reports after
  the first (mlx_lm's own `iterations_per_second`, which counts step time only), so start-up and
  validation are out of it. For the bare run the same numbers come from mlx_lm's own callback
  hook, through a three-line shim around `mlx_lm.lora.main` (a benchmark may do this; the product
  never does).

    .venv/bin/python benchmarks/train.py [--rounds 5] [--iters 200] [--hidden 128]

`--hidden` widens the model (the intermediate size in proportion, the same 4 layers and LoRA
arrays): the guard's and the token tally's cost is per array and per logit, so a wider model
shows how much of the ratio is that fixed cost.

Prints one row per run, then the median ratio punie/bare of each number with its spread over the
rounds (target: steady-state <= 1.02), and the largest difference between the two loss curves.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rounds import spread

from punie.data.sample import splits
from punie.fsio import write_jsonl
from punie.model.tiny import TinyShape, build_tiny_model
from punie.proc import child_env
from punie.train.config import TrainConfig, to_toml
from punie.train.mlx import lora_command, lora_yaml
from punie.train.rundir import RunDir
from punie.train.runs import read_metrics

# Bare mlx_lm lora with mlx_lm's own reporting hook recording its train reports (it/s, loss).
SHIM = """
import json, sys
import mlx_lm.lora as lora
from mlx_lm.tuner.callbacks import TrainingCallback
class Record(TrainingCallback):
    def on_train_loss_report(self, info):
        print("BENCH " + json.dumps(info), flush=True)
lora.get_reporting_callbacks = lambda *a, **k: Record()
sys.argv = ["mlx_lm.lora", *sys.argv[1:]]
lora.main()
"""


def bare_command(config: TrainConfig, yaml_path: Path) -> list[str]:
    cmd = lora_command(config, yaml_path)
    return [sys.executable, "-c", SHIM, *cmd[cmd.index("lora") + 1 :]]


def bare_reports(stdout: str) -> list[dict]:
    return [json.loads(line[6:]) for line in stdout.splitlines() if line.startswith("BENCH ")]


def punie_reports(run_dir: Path) -> list[dict]:
    return [m for m in read_metrics(RunDir(run_dir).metrics) if "train_loss" in m]


def steady_step_s(reports: list[dict]) -> float:
    """Median seconds per step over the reports after the first (compile, warm-up)."""
    later = reports[1:] or reports
    return statistics.median(1 / r["iterations_per_second"] for r in later)


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the command and its children, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.monotonic()
    result = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
    wall = time.monotonic() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return wall, cpu, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=TinyShape.hidden_size)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="punie-bench-train-"))
    shape = TinyShape().widened(args.hidden)
    model = build_tiny_model(work / "model", seed=0, shape=shape)
    for name, rows in splits(400, 40, 40, seed=0).items():
        write_jsonl(work / "data" / f"{name}.jsonl", rows)
    base = TrainConfig(
        model=str(model), data=str(work / "data"), rank=8, scale=5.0, num_layers=-1,
        learning_rate=1e-3, batch_size=4, iters=args.iters, max_seq_length=512,
        mask_prompt=True, steps_per_report=10, steps_per_eval=50, val_batches=5,
        save_every=100, seed=0,
    )  # fmt: skip
    runs: list[dict] = []
    for r in range(args.rounds):
        order = ("punie", "bare") if r % 2 == 0 else ("bare", "punie")
        for who in order:
            cfg = base.with_(adapter_path=str(work / "runs" / f"{who}{r}"))
            if who == "punie":
                config_file = work / f"punie{r}.toml"
                config_file.write_text(to_toml(cfg))
                cmd = [sys.executable, "-m", "punie", "train", str(config_file), "--json"]
                wall, cpu, _ = timed(cmd)
                reports = punie_reports(Path(cfg.adapter_path))
            else:
                yaml_path = work / f"bare{r}.yaml"
                yaml_path.write_text(yaml.safe_dump(lora_yaml(cfg)))
                wall, cpu, stdout = timed(bare_command(cfg, yaml_path))
                reports = bare_reports(stdout)
            losses = {int(x["iteration"]): float(x["train_loss"]) for x in reports}
            runs.append({"round": r, "who": who, "wall": wall, "cpu": cpu,
                         "step": steady_step_s(reports), "losses": losses})  # fmt: skip

    print(f"tiny model (hidden {args.hidden}), {args.iters} iters, batch 4, seq<=512, "
          f"{args.rounds} alternating rounds")  # fmt: skip
    print(f"{'round':>5} {'who':>6} {'wall s':>8} {'CPU s':>8} {'step ms':>8}")
    for x in runs:
        print(f"{x['round']:>5} {x['who']:>6} {x['wall']:>8.2f} {x['cpu']:>8.2f} "
              f"{1000 * x['step']:>8.2f}")  # fmt: skip
    by = {(x["round"], x["who"]): x for x in runs}
    ratios = {k: [by[(r, "punie")][k] / by[(r, "bare")][k] for r in range(args.rounds)]
              for k in ("wall", "cpu", "step")}  # fmt: skip
    diffs = []
    for r in range(args.rounds):
        ours, theirs = by[(r, "punie")]["losses"], by[(r, "bare")]["losses"]
        diffs += [abs(ours[i] - theirs[i]) for i in set(ours) & set(theirs)]
    print("ratio punie/bare, median (min-max) over rounds:")
    print(f"  wall {spread(ratios['wall'], 3)}; CPU {spread(ratios['cpu'], 3)}; "
          f"steady-state step {spread(ratios['step'], 3)} (target <= 1.02)")  # fmt: skip
    print(f"max train-loss difference: {max(diffs):.1e} over {len(diffs)} points")
    summary = {k: round(statistics.median(v), 4) for k, v in ratios.items()}
    print(json.dumps({"median_ratio": summary, "max_loss_diff": max(diffs)}))


if __name__ == "__main__":
    main()
