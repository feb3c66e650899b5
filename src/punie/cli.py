"""The `punie` command: a thin shell over the library. Each command parses, calls, renders.

Command groups live beside the code they drive (`punie/<area>/cli.py`) and are mounted here.
"""

from __future__ import annotations

import json
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from punie import __version__
from punie.backends.cli import backends_command
from punie.data.cli import dataset_app
from punie.errors import PunieError, PunieWarning, TrainingInterrupted
from punie.eval.cli import app as eval_app
from punie.fsio import DISK_ERRNOS
from punie.serve.cli import serve as serve_command
from punie.train.cli import fuse_command, runs_app, sweep_command, train_command

console = Console(stderr=True)

app = typer.Typer(
    name="punie",
    help=(
        "Punie: teach a small open model your agent's tools, and prove it got better.\n\n"
        "Start with `punie demo` (the whole loop on a built-in tiny model), then bring your own "
        "data with `punie dataset`, train with `punie train`, and measure with `punie eval`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

model_app = typer.Typer(help="Build or fetch models (the embedded tiny model, hub models).")

# The loop in order: model -> data -> train -> serve/eval; then records and plumbing.
app.add_typer(model_app, name="model")
app.add_typer(dataset_app, name="dataset")
app.command("train")(train_command)
app.command("sweep")(sweep_command)
app.add_typer(runs_app, name="runs")
app.command("fuse")(fuse_command)
app.command("serve")(serve_command)
app.add_typer(eval_app, name="eval")
app.command("backends")(backends_command)


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        print(__version__)
        raise typer.Exit(0)


@model_app.command("tiny")
def model_tiny(
    out: Annotated[
        Path, typer.Argument(help="Folder to write the model to (replaced if present).")
    ],
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
    architecture: Annotated[
        str, typer.Option(help="qwen2, or llama (the same model without q/k/v biases).")
    ] = "qwen2",
) -> None:
    """Write the embedded tiny model: Qwen2 architecture, random weights, a locally trained
    byte-level BPE tokenizer and a chat template with tool calls. Same seed, same bytes."""
    from punie.errors import ConfigError
    from punie.model.tiny import ARCHITECTURES, build_tiny_model

    if architecture not in ARCHITECTURES:
        raise ConfigError(
            f"--architecture: {architecture!r} is not one of {', '.join(ARCHITECTURES)}"
        )
    print(build_tiny_model(out, seed=seed, architecture=architecture))


@model_app.command("resolve")
def model_resolve(
    name: Annotated[str, typer.Argument(help="A local model folder or a hub id (owner/name).")],
) -> None:
    """Print the local folder for a model, downloading a hub id into the HF cache if needed."""
    from punie.model.resolve import resolve_model

    print(resolve_model(name))


class StepsColumn(ProgressColumn):
    """`done/total` for a step of known size; a spinner for one with none (never `1/None`)."""

    def __init__(self) -> None:
        super().__init__()
        self._spinner = SpinnerColumn(finished_text="✓")

    def render(self, task: Task) -> RenderableType:
        if task.total is None:
            return self._spinner.render(task)
        return Text(f"{int(task.completed)}/{int(task.total)}")


class _RichProgress:
    def __init__(self, progress: Progress):
        self._p = progress
        self._task = None

    def step(self, name: str) -> None:
        if self._task is not None:
            self._p.update(self._task, completed=self._p.tasks[self._task].total or 1)
            self._p.stop_task(self._task)
        self._task = self._p.add_task(name, total=None)

    def advance(self, done: int, total: int) -> None:
        self._p.update(self._task, completed=done, total=total)

    def done(self, summary: str) -> None:
        self.step("Done")
        self._p.update(self._task, total=1, completed=1)
        self._p.console.print(summary, highlight=False)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Working folder for every artefact.")] = Path(
        "punie-demo"
    ),
    iters: Annotated[int, typer.Option(help="LoRA training iterations.")] = 400,
    n_train: Annotated[int, typer.Option(help="Training rows to generate.")] = 400,
    n_eval: Annotated[int, typer.Option(help="Held-out eval cases.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed for model, data and training.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run the whole loop on the embedded tiny model: build it, write a tool-calling dataset and a
    held-out eval suite, evaluate the base model through a real mlx_lm.server, train a LoRA
    adapter with mlx_lm, evaluate again, and write an HTML report comparing the two."""
    from punie.demo import DemoConfig, run_demo

    cfg = DemoConfig(workdir=workdir, iters=iters, n_train=n_train, n_eval=n_eval, seed=seed)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        StepsColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=as_json) as progress:
        result = run_demo(cfg, _RichProgress(progress))
    if as_json:
        summary = {
            "base": result.base.score,
            "adapted": result.adapted.score,
            "report": str(result.report),
            "wall_s": round(result.wall_s, 1),
        }
        print(json.dumps(summary))
    else:
        print(result.report)


@app.command()
def generate(
    prompts: Annotated[
        str,
        typer.Argument(
            help="An eval suite (file or built-in name: each sample is scored) or a JSONL file "
            "of prompt rows (`messages`, or a `prompt` string; `tools` and `id` optional)."
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="Responses file to write (.jsonl).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model folder or hub id (or --base-url's name).")
    ],
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter folder.")] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="Any OpenAI-compatible server (a teacher on vLLM, Ollama, mlx_lm)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="PUNIE_API_KEY", help="Bearer token for --base-url.")
    ] = None,
    samples: Annotated[int, typer.Option(help="Responses per prompt (needs temperature > 0).")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate per answer, at most.")] = 256,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling.")] = 1.0,
    system: Annotated[
        str | None,
        typer.Option(help='System prompt replacing the prompts\' own ("Think step by step...").'),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 4,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Response cache (default: ~/.cache/punie/responses).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask the model every time.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Sample responses for suite cases or prompt rows, concurrently, into OUT.jsonl.

    Rows are in the responses format `punie eval score` reads, plus the request (`messages`,
    `tools`) and `provenance` (the model that answered, by the server's word, its content
    hashes, the sampling settings, the time). Answers are cached as eval caches them, each
    finished sample is appended to OUT.jsonl.partial, and a rerun after an interruption
    continues from it; OUT appears only when every sample is in. Turn the rows into training
    data with `punie dataset from-results`."""
    from punie.api import generate as run_generate
    from punie.sampling import Sampling

    done = 0

    def tick(_row) -> None:
        nonlocal done
        done += 1
        if not as_json and done % 10 == 0:
            console.print(f"{done} samples", highlight=False)

    g = run_generate(
        prompts,
        out,
        model=model,
        adapter=adapter,
        base_url=base_url,
        samples=samples,
        sampling=Sampling(temperature=temperature, max_tokens=max_tokens, top_p=top_p),
        system=system,
        concurrency=concurrency,
        cache_dir=cache_dir,
        use_cache=not no_cache,
        api_key=api_key,
        on_row=tick,
    )
    summary = {
        "out": str(g.out),
        "rows": g.rows,
        "requested": g.requested,
        "resumed": g.resumed,
        "passed": g.passed,
        "answered_model": g.answered_model,
        "wall_s": g.wall_s,
    }
    if as_json:
        print(json.dumps(summary))
        return
    passed = f", {g.passed} passed" if g.passed is not None else ""
    print(f"wrote {g.out}: {g.rows} rows from {g.answered_model}{passed}")


class _LoopPrinter:
    def step(self, text: str) -> None:
        console.print(text, highlight=False)


@app.command("loop")
def loop_command(
    config: Annotated[Path, typer.Argument(help="Loop config (.toml or .yaml; docs/loop.md).")],
    out: Annotated[Path | None, typer.Option(help="Loop folder (overrides `out`).")] = None,
    max_iterations: Annotated[int | None, typer.Option(help="Overrides `max_iterations`.")] = None,
    teacher_base_url: Annotated[
        str | None,
        typer.Option(help="Ask this OpenAI-compatible server for what the student cannot solve."),
    ] = None,
    teacher_model: Annotated[str | None, typer.Option(help="The teacher's model name.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final report as JSON.")
    ] = False,
) -> None:
    """The bootstrap loop: per iteration, sample the still-unsolved problems of a suite (k
    samples), keep the verified solutions, train on everything solved so far, and score on a
    held-out suite; stop at the target, the iteration cap, or an iteration that solves nothing
    new. Writes OUT/iteration_N/..., final_report.json and report.html; rerun the same command
    after an interruption to continue where it stopped."""
    from punie.api import loop

    overrides = {
        "out": str(out) if out else None,
        "max_iterations": max_iterations,
        "teacher_base_url": teacher_base_url,
        "teacher_model": teacher_model,
    }
    result = loop(config, progress=_LoopPrinter(), overrides=overrides)
    if as_json:
        print(result.final_report.read_text(encoding="utf-8"))
        return
    for it in result.iterations:
        print(
            f"iteration {it.n}: solved {it.solved_total} (+{it.solved_new}), "
            f"held-out {100 * it.heldout.score:.1f}%"
        )
    print(f"stopped: {result.stop}; report: {result.report}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A PunieWarning is one line for the user; any other warning keeps Python's form."""
    if issubclass(category, PunieWarning):
        console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


# The one place an error becomes an exit code; the first kind that matches wins. Every other
# PunieError (config, data, backend, server, eval) is unusable input: 2.
EXIT_CODES: tuple[tuple[type[PunieError], int], ...] = (
    (TrainingInterrupted, 130),  # as a shell reports Ctrl-C; the checkpoint is kept
    (PunieError, 2),
)


def exit_code(error: PunieError) -> int:
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))


def main() -> None:
    """Entry point: PunieError becomes a one-line message and its exit code (EXIT_CODES);
    Ctrl-C exits 130, SIGTERM and SIGHUP take the same way out and exit 128 + the signal's
    number."""
    from punie.proc import stop_on_signals

    warnings.showwarning = _show_warning
    received = stop_on_signals()
    try:
        app()
    except PunieError as e:
        # escaped: a message may hold brackets rich would take for markup (`punie[wandb]`)
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(exit_code(e))
    except OSError as e:
        # a full, read-only or forbidden disk is the user's to fix; any other OSError is a bug
        # and keeps its traceback
        if e.errno not in DISK_ERRNOS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        message = escape(f"{where}{e.strerror}")
        console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:  # typer exits 130 on its own; this one arrived outside it
        _interrupted(received())
    except SystemExit:
        if received() is None:
            raise
        _interrupted(received())


def _interrupted(signum: int | None) -> None:
    name = f" ({signal.Signals(signum).name})" if signum else ""
    console.print(f"[yellow]interrupted{name}[/yellow]")
    sys.exit(128 + (signum or signal.SIGINT))
