"""`punie train`, `punie runs list|show` and `punie fuse`: parse, call the library, render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from punie.train import runs
from punie.train.callbacks import TrainingCallback
from punie.train.config import field_help
from punie.train.records import MetricsRecord
from punie.train.rundir import RunDir

console = Console(stderr=True)

runs_app = typer.Typer(help="List and inspect training runs (the folders under adapters/).")

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Folder that holds the run folders.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class LiveProgress(TrainingCallback):
    """A rich bar over iterations with the latest train/val loss, tokens/s and peak memory."""

    def __init__(self, progress: Progress, total: int, start: int = 0):
        self._p = progress
        self._stats: dict[str, str] = {}
        self._task = progress.add_task("train", total=total, completed=start, stats="loading")

    def on_warning(self, message: str) -> None:
        warning = f"[yellow]warning:[/yellow] {message}"
        self._p.console.print(warning, highlight=False, soft_wrap=True)

    def on_step(self, iteration: int) -> None:
        self._show(iteration)

    def on_train_report(self, record: MetricsRecord) -> None:
        self._stats["train"] = f"train {record.train_loss:.3f}"
        self._stats["tok/s"] = f"{record.tokens_per_second or 0:,.0f} tok/s"
        self._stats["mem"] = f"peak {record.peak_memory or 0:.2f} GB"
        self._show(record.iteration)

    def on_validation_report(self, record: MetricsRecord) -> None:
        self._stats["val"] = f"val {record.val_loss:.3f} @ {record.iteration}"
        self._show(record.iteration)

    def _show(self, iteration: int) -> None:
        order = ("train", "val", "tok/s", "mem")
        stats = " · ".join(self._stats[k] for k in order if k in self._stats) or "starting"
        self._p.update(self._task, completed=iteration, stats=stats)


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
    )


def train_command(
    config_file: Annotated[
        Path | None,
        typer.Argument(help="Config file (.toml, .yaml or .json); see docs/training.md."),
    ] = None,
    model: Annotated[str | None, typer.Option(help=field_help("model"))] = None,
    data: Annotated[str | None, typer.Option(help=field_help("data"))] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name: the run folder is RUNS_DIR/NAME.")
    ] = None,
    runs_dir: RunsDir = runs.DEFAULT_RUNS_DIR,
    fine_tune_type: Annotated[str | None, typer.Option(help=field_help("fine_tune_type"))] = None,
    iters: Annotated[int | None, typer.Option(help=field_help("iters"))] = None,
    epochs: Annotated[float | None, typer.Option(help=field_help("epochs"))] = None,
    batch_size: Annotated[int | None, typer.Option(help=field_help("batch_size"))] = None,
    learning_rate: Annotated[float | None, typer.Option(help=field_help("learning_rate"))] = None,
    rank: Annotated[int | None, typer.Option(help=field_help("rank"))] = None,
    mask_prompt: Annotated[
        bool | None,
        typer.Option(
            "--mask-prompt/--no-mask-prompt",
            help=field_help("mask_prompt"),
        ),
    ] = None,
    from_adapter: Annotated[
        str | None,
        typer.Option(help=field_help("from_adapter")),
    ] = None,
    backend: Annotated[str | None, typer.Option(help=field_help("backend"))] = None,
    method: Annotated[str | None, typer.Option(help=field_help("method"))] = None,
    launcher: Annotated[
        str | None,
        typer.Option(help="peft backend: `accelerate` runs `accelerate launch` (DDP/FSDP/ZeRO)."),
    ] = None,
    num_processes: Annotated[
        int | None, typer.Option(help="With --launcher accelerate: processes (GPUs) in all.")
    ] = None,
    hosts: Annotated[
        str | None,
        typer.Option(
            help="mlx backend: data-parallel over these hosts with mlx.launch (ring): "
            "IPs, comma-separated (127.0.0.1,127.0.0.1 is 2 local processes), or a hostfile."
        ),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any config key: --set lr_schedule=cosine (repeatable)."),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Resume this interrupted run (name or folder) from its checkpoint."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a run folder that already holds a run.")
    ] = False,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved config (TOML) and exit.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Train an adapter with mlx_lm's trainer (or another installed backend).

    Settings come from the config file, then `--set key=value`, then the flags here. Every
    assistant turn of a chat row trains with `--mask-prompt`. The run folder gets the adapter,
    `best/` (lowest validation loss, or the best score on the `select_by` suite), `checkpoint/`,
    `metrics.jsonl` and `run.json`. `--method grpo` continues an SFT adapter (`--from-adapter`)
    with GRPO: prompts and rewards from `--set reward_suite=SUITE`, scored as `punie eval` scores
    them; every sampled completion goes to `rollouts.jsonl` (see docs/training.md). With
    `--backend peft` the same config runs through TRL's GRPOTrainer, rewarded by the same scorers.
    `--method dpo --from-adapter SFT_RUN` trains DPO, Cal-DPO or Dr-DPO (`--set
    preference_loss=cal_dpo`, `--set beta=0.1`) on preference rows from `punie dataset pairs`.
    Ctrl-C stops cleanly and keeps the checkpoint: continue with `punie train --resume NAME`.
    """
    from punie import api
    from punie.train.config import to_toml

    flags = {
        "model": model,
        "data": data,
        "fine_tune_type": fine_tune_type,
        "iters": iters,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "rank": rank,
        "mask_prompt": mask_prompt,
        "from_adapter": from_adapter,
        "backend": backend,
        "method": method,
    }
    if resume:
        config = api.run_config(resume, runs_dir=runs_dir, iters=iters)
    else:
        config = api.load_config(
            config_file,
            overrides=flags,
            sets=sets,
            name=name,
            runs_dir=runs_dir,
            options={"launcher": launcher, "num_processes": num_processes, "hosts": hosts},
        )
    if print_config:
        print(to_toml(config), end="")
        return
    with _progress(disable=as_json) as progress:
        done = runs.read_metrics(RunDir(Path(config.adapter_path)).metrics) if resume else []
        live = LiveProgress(progress, config.iters, max((r["iteration"] for r in done), default=0))
        if resume:
            result = api.resume(resume, runs_dir=runs_dir, iters=iters, events=live)
        else:
            result = api.train(config, events=live, overwrite=overwrite)
    if as_json:
        print(json.dumps(result.record, indent=2))
        return
    console.print(_summary(result.record), highlight=False)
    print(result.run_dir)


def sweep_command(
    config_file: Annotated[
        Path, typer.Argument(help="The config every run starts from (.toml, .yaml or .json).")
    ],
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid", "-g", help="key=value1,value2 (repeat for more keys; every combination runs)."
        ),
    ],
    select_by: Annotated[
        str | None,
        typer.Option(
            help="A held-out eval suite (file or built-in name) scored on each run's adapter; "
            "default: rank by the best validation loss."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Sweep name: its runs go to RUNS_DIR/NAME (default: the config stem)."),
    ] = None,
    runs_dir: RunsDir = runs.DEFAULT_RUNS_DIR,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="key=value on top of the config file.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Train a grid of runs, one at a time, and rank them: a table, sweep.json and sweep.html
    (the runs compared, the best marked). Run it again after an interrupt: finished runs are
    skipped, an interrupted one resumes from its checkpoint.

    Example: punie sweep base.toml --grid learning_rate=1e-4,2e-4 --grid rank=8,16"""
    from punie import api

    def on_run(run) -> None:
        if not as_json:
            detail = f" ({run.error})" if run.error else ""
            console.print(f"{run.name}: {run.action}, {run.status}{detail}", highlight=False)

    result = api.sweep(
        config_file,
        grid,
        name=name,
        runs_dir=runs_dir,
        select_by=select_by,
        sets=sets,
        on_run=on_run,
    )
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(title=f"sweep {result.folder} ranked by {result.ranking.by}")
    for column in ("#", "run", result.ranking.by, "status", ""):
        table.add_column(column)
    status = {r.name: r.status for r in result.runs}
    for i, (run_name, score) in enumerate(result.ranking.rows, start=1):
        mark = "best" if run_name == result.ranking.best else ""
        table.add_row(str(i), run_name, _fmt(score, ".4f"), status[run_name], mark)
    Console().print(table)
    print(result.page)


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _summary(r: dict[str, Any]) -> str:
    best = (
        f"best val {_fmt(r.get('best_val_loss'))} at iteration {r.get('best_iteration')}"
        if r.get("best_iteration") is not None
        else "no validation data"
    )
    early = " (stopped early)" if r.get("stopped_early") else ""
    return (
        f"{r['name']}: {r['status']}{early}, {r.get('last_iteration')} iterations in "
        f"{_fmt(r.get('wall_s'), '.1f')}s; final train {_fmt(r.get('final_train_loss'))}, {best}; "
        f"peak memory {_fmt(r.get('peak_memory_gb'), '.2f')} GB"
    )


@runs_app.command("list")
def runs_list(runs_dir: RunsDir = runs.DEFAULT_RUNS_DIR, as_json: AsJson = False) -> None:
    """Every run under the runs folder, newest first."""
    records = runs.list_runs(runs_dir)
    if as_json:
        print(json.dumps(records, indent=2))
        return
    table = Table(title=f"runs in {runs_dir}")
    for column in ("name", "status", "type", "iters", "train", "best val", "@", "wall s", "from"):
        table.add_column(column)
    for r in records:
        parent = (r.get("lineage") or [{}])[-1].get("run") or ""
        table.add_row(
            r["name"],
            r["status"],
            r.get("fine_tune_type", ""),
            f"{r.get('last_iteration', 0)}/{r.get('iters')}",
            _fmt(r.get("final_train_loss")),
            _fmt(r.get("best_val_loss")),
            str(r.get("best_iteration", "") if r.get("best_iteration") is not None else ""),
            _fmt(r.get("wall_s"), ".1f"),
            parent,
        )
    Console().print(table)


@runs_app.command("show")
def runs_show(
    name: Annotated[str, typer.Argument(help="Run name (under --runs-dir) or run folder.")],
    runs_dir: RunsDir = runs.DEFAULT_RUNS_DIR,
    as_json: AsJson = False,
) -> None:
    """One run's record: status, data hashes, lineage, versions, metrics summary; for a GRPO
    run, sampled completions of its first and last steps (from rollouts.jsonl)."""
    run_dir = runs.find_run(name, runs_dir)
    record = runs.current_status(run_dir, runs.load_record(run_dir))
    samples = runs.rollout_samples(run_dir)
    if as_json:
        print(json.dumps({**record, "rollout_samples": samples} if samples else record, indent=2))
        return
    table = Table(title=str(run_dir), show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in record.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(key, shown)
    Console().print(table)
    if samples:
        Console().print(_samples_table(samples))


def _samples_table(samples: dict[str, Any]) -> Table:
    table = Table(title="rollouts: first and last step")
    for column in ("step", "prompt", "reward", "advantage", "completion"):
        table.add_column(column)
    for step in samples.values():
        for r in step["rows"]:
            table.add_row(
                str(step["iteration"]),
                r["prompt_id"],
                f"{r['reward']:.2f}",
                f"{r['advantage']:+.2f}",
                Text(r["completion"][:160]),  # model output: shown as text, never as markup
            )
    return table


@runs_app.command("compare")
def runs_compare(
    names: Annotated[
        list[str], typer.Argument(help="Two or more runs: names under --runs-dir, or run folders.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="The HTML page (default: RUNS_DIR/compare.html); '-' for none."
        ),
    ] = None,
    runs_dir: RunsDir = runs.DEFAULT_RUNS_DIR,
    as_json: AsJson = False,
) -> None:
    """Runs side by side: the config keys that differ, final metrics (losses, token accuracy,
    grad norm, wall time, memory) and every run's loss curves, as a table and one self-contained
    HTML page.

    Example: punie runs compare lr-1e-4 lr-2e-4 --out compare.html"""
    from punie import api
    from punie.report.runs import FINAL_KEYS, shown

    page = None if out == Path("-") else (out or Path(runs_dir) / "compare.html")
    comparison = api.compare_training_runs(names, runs_dir=runs_dir, out=page)
    if as_json:
        print(json.dumps({**comparison.to_dict(), "page": str(page) if page else None}, indent=2))
        return
    table = Table(title="config differences" if comparison.differences else "same config")
    table.add_column("key", style="bold")
    for run in comparison.runs:
        table.add_column(run.name)
    for key, values in comparison.differences.items():
        table.add_row(key, *(shown(v) for v in values))
    Console().print(table)
    final = Table(title="final metrics")
    final.add_column("metric", style="bold")
    for run in comparison.runs:
        final.add_column(run.name, justify="right")
    for key in FINAL_KEYS:
        final.add_row(key, *(shown(run.final[key]) for run in comparison.runs))
    Console().print(final)
    if page:
        print(page)


def fuse_command(
    run: Annotated[str, typer.Argument(help="Run name (under --runs-dir) or run folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the fused model.")],
    checkpoint: Annotated[
        str, typer.Option(help="Which adapter: best (lowest val loss) or final.")
    ] = "best",
    dequantize: Annotated[
        bool, typer.Option(help="Write a dequantized (fp16) model from a quantized base.")
    ] = False,
    gguf: Annotated[
        str | None,
        typer.Option(
            help="Also write model.gguf, matrices f16 or q8_0 (Qwen2/Qwen3, Llama/Mistral).",
            metavar="f16|q8_0",
        ),
    ] = None,
    parity: Annotated[
        bool, typer.Option(help="Check greedy answers of base+adapter against the fused model.")
    ] = True,
    runs_dir: RunsDir = runs.DEFAULT_RUNS_DIR,
    as_json: AsJson = False,
) -> None:
    """Merge a run's adapter into its base model, through the backend that trained the run.

    An mlx run is fused by mlx_lm, gets an Ollama Modelfile, and is checked to answer exactly as
    base+adapter does (greedy, a few prompts); a peft run is merged by PEFT."""
    from punie import api

    result = api.fuse(
        run,
        out,
        runs_dir=runs_dir,
        checkpoint=checkpoint,
        dequantize=dequantize,
        gguf=gguf,
        parity=parity,
    )
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    console.print(result.summary(), highlight=False)
    print(result.out)
