"""`punie eval`: run suites against a model, score recorded responses, compare runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from punie.eval.client import REQUEST_TIMEOUT_S
from punie.sampling import DEFAULT_SAMPLING, Sampling
from punie.serve.server import STARTUP_TIMEOUT_S

console = Console(stderr=True)


class _RunByDefault(TyperGroup):
    """`punie eval SUITE...` means `punie eval run SUITE...`, as the docs write it."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        # Probed only when help is shown: starting the sandbox costs a subprocess or a few.
        from punie.eval.sandbox import protections

        self.epilog = "Code sandbox on this machine: " + "; ".join(protections()) + "."
        super().format_help(ctx, formatter)


app = typer.Typer(
    cls=_RunByDefault,
    help=(
        "Measure a model on eval suites (tool calling, reasoning, code, multi-turn agent, "
        "model-graded) and compare runs.\n\n"
        "`punie eval SUITE... --model M [--adapter A]` runs suites through a managed "
        "mlx_lm.server (or `--base-url` for any OpenAI-compatible server) and writes results and "
        "an HTML report. `punie eval score` scores recorded responses with no model; "
        "`punie eval compare` puts runs side by side with paired statistics."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


@app.command("run")
def run(
    suites: Annotated[
        list[str], typer.Argument(help="Suite files, or built-in names (see `punie eval suites`).")
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder or hub id.")],
    adapter: Annotated[
        list[Path] | None,
        typer.Option("--adapter", "-a", help="LoRA adapter folder; repeat to evaluate several."),
    ] = None,
    with_base: Annotated[
        bool, typer.Option("--with-base", help="Also evaluate the base model (no adapter).")
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(help="Use this OpenAI-compatible server (vLLM, Ollama, llama.cpp) instead."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="PUNIE_API_KEY", help="Bearer token for --base-url.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Report path (default: RUN_DIR/report.html)."),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run folder for results and server.log (default: runs/eval-TIME)."),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature.")
    ] = DEFAULT_SAMPLING.temperature,
    max_tokens: Annotated[
        int, typer.Option(help="Tokens to generate per answer, at most.")
    ] = DEFAULT_SAMPLING.max_tokens,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling.")] = DEFAULT_SAMPLING.top_p,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 4,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Response cache (default: ~/.cache/punie/responses).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ask the model every time.")] = False,
    startup_timeout: Annotated[
        float, typer.Option(help="Seconds for the managed server to load the model and answer.")
    ] = STARTUP_TIMEOUT_S,
    request_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds one request may take to be answered in full; a server that never "
            "answers fails the run after this."
        ),
    ] = REQUEST_TIMEOUT_S,
    grader_base_url: Annotated[
        str | None,
        typer.Option(
            help="Graded suites: the OpenAI-compatible server that answers for the suite's "
            "`grader` (default: the server the run uses, which loads the grader's folder)."
        ),
    ] = None,
    grader_api_key: Annotated[
        str | None,
        typer.Option(envvar="PUNIE_GRADER_API_KEY", help="Bearer token for --grader-base-url."),
    ] = None,
    constrain: Annotated[
        str | None,
        typer.Option(
            help="Constrained decoding in the managed server: 'tools' makes every tool call valid "
            "JSON for one of the case's tool schemas (see docs/serving.md)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Evaluate a model (and adapters) on suites: `<suite>.<label>.json` per run, and a report.

    Every request names the model and adapter; answers are cached by the model's and adapter's
    content hash, chat template, messages, tools and sampling, so an interrupted run resumes and an
    unchanged rerun asks nothing."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from punie.api import evaluate_plan
    from punie.session import EvalPlan

    adapters: list[str | None] = [str(a) for a in adapter or []]
    if with_base or not adapters:
        adapters.insert(0, None)
    plan = EvalPlan(
        suites=tuple(suites),
        model=model,
        adapters=tuple(adapters),
        base_url=base_url,
        run_dir=run_dir,
        report=out,
        sampling=Sampling(temperature=temperature, max_tokens=max_tokens, top_p=top_p),
        concurrency=concurrency,
        cache_dir=cache_dir,
        use_cache=not no_cache,
        api_key=api_key,
        startup_timeout=startup_timeout,
        request_timeout=request_timeout,
        grader_base_url=grader_base_url,
        grader_api_key=grader_api_key,
        constrain=constrain,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed} cases"))
    with Progress(*columns, TimeElapsedColumn(), console=console, disable=as_json) as progress:
        tasks: dict[str, int] = {}

        def tick(label: str, _result) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(f"eval {label}", total=None)
            progress.advance(tasks[label])

        outcome = evaluate_plan(plan, on_case=tick)
    if as_json:
        print(
            json.dumps(
                {
                    "run_dir": str(outcome.run_dir),
                    "report": str(outcome.report),
                    "results": [
                        {
                            "suite": r.suite,
                            "label": r.label,
                            "requested_model": r.requested_model,
                            "answered_model": r.answered_model,
                            "score": r.score,
                            "interval": list(r.interval),
                            "passed": r.passed,
                            "total": len(r.cases),
                            "requests": r.requests,
                            "pass_at_k": r.pass_at_k,
                            "sandbox": r.sandbox,
                            "summary": r.summary,
                            "file": str(f),
                        }
                        for r, f in zip(outcome.results, outcome.files, strict=True)
                    ],
                }
            )
        )
        return
    table = Table("suite", "model", "score", "95% CI", "passed", "asked", "wall")
    for r in outcome.results:
        lo, hi = r.interval
        table.add_row(
            r.suite,
            r.label,
            _pct(r.score),
            f"{_pct(lo)}–{_pct(hi)}",
            f"{r.passed}/{len(r.cases)}",
            str(r.requests),
            f"{r.wall_s:.1f}s",
        )
    Console().print(table)
    for r in outcome.results:
        s = r.summary
        if s.get("mode") == "pairwise":
            lo, hi = s["interval"]
            print(
                f"{r.suite}: {s['b']} over {s['a']}: win rate {_pct(s['win_rate'])} "
                f"(95% CI {_pct(lo)}–{_pct(hi)}; {s['wins']} won, {s['ties']} tied, "
                f"{s['losses']} lost; ties count half)"
            )
    print(outcome.report)


@app.command("score")
def score(
    suite: Annotated[str, typer.Argument(help="Suite file or built-in name.")],
    responses: Annotated[
        Path,
        typer.Option(
            help='JSONL: {"id", "content", "tool_calls"?} per line; repeat ids for samples.'
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print cases and score as JSON.")] = False,
) -> None:
    """Score recorded responses against a suite, with no model at all."""
    from punie.eval.sandbox import protections
    from punie.eval.scoring import score_file
    from punie.eval.suite import Suite

    s = Suite.load(suite)
    cases = score_file(s, responses)
    total = sum(c.passed for c in cases) / len(cases)
    if as_json:
        rows = [
            {"id": c.id, "passed": c.passed, "label": c.label, "reason": c.reason}
            | ({"coverage": c.coverage} if s.kind == "code" else {})
            for c in cases
        ]
        # as in a results file: what the code sandbox did here, so a score says what it trusted
        sandbox = protections() if s.kind == "code" else []
        print(json.dumps({"suite": s.name, "cases": rows, "score": total, "sandbox": sandbox}))
        return
    coverage = s.kind == "code"  # the fraction of each case's tests passed
    table = Table("case", "category", "result", *(["coverage"] if coverage else []), "reason")
    for c in cases:
        verdict = "[green]pass[/green]" if c.passed else f"[red]fail[/red] {c.label}"
        shown = [_pct(c.coverage or 0.0)] if coverage else []
        table.add_row(c.id, c.category, verdict, *shown, c.reason)
    Console().print(table)
    print(f"score {_pct(total)} ({sum(c.passed for c in cases)}/{len(cases)})")


@app.command("compare")
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Results files or run folders; the first is the baseline."),
    ],
    out: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write an HTML report.")
    ] = None,
    fail_on_regression: Annotated[
        bool,
        typer.Option(
            help="Exit 1 when any category (or the total) of a later run is worse than the "
            "baseline beyond its 95% interval."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparisons as JSON.")] = False,
) -> None:
    """Compare runs of the same suites: deltas with 95% intervals per category, McNemar's exact
    test on the shared cases, and the cases that flipped each way."""
    from punie.api import compare_runs, load_results, write_report

    results = load_results(runs)
    comparisons = compare_runs(results)
    if out:
        write_report(out, results, title="Punie compare: " + " vs ".join(r.label for r in results))
    if as_json:
        print(json.dumps({"comparisons": [c.to_dict() for c in comparisons]}))
    else:
        table = Table("suite", "category", "baseline", "candidate", "Δ", "95% CI", "")
        for c in comparisons:
            for cd in c.categories:
                flag = "[red]regressed[/red]" if cd.regressed else ""
                table.add_row(
                    c.suite,
                    cd.category,
                    f"{c.a_label} {cd.a[0]}/{cd.a[1]}",
                    f"{c.b_label} {cd.b[0]}/{cd.b[1]}",
                    f"{100 * cd.delta:+.1f}",
                    f"{100 * cd.interval[0]:+.1f} … {100 * cd.interval[1]:+.1f}",
                    flag,
                )
            table.add_row(
                c.suite,
                "[b]all[/b]",
                f"{c.a_label}",
                f"{c.b_label}",
                f"{100 * c.delta:+.1f}",
                f"{100 * c.interval[0]:+.1f} … {100 * c.interval[1]:+.1f}",
                f"McNemar p={c.p_value:.3g}, +{len(c.gained)}/-{len(c.lost)}",
            )
        Console().print(table)
        if out:
            print(out)
    if fail_on_regression and any(c.regressed for c in comparisons):
        bad = [f"{c.suite}/{cd.category}" for c in comparisons for cd in c.regressions]
        where = ", ".join(bad) or ", ".join(c.suite for c in comparisons if c.regressed)
        console.print(f"[red]regression:[/red] {where}")
        raise typer.Exit(1)


import_app = typer.Typer(
    help="Make suites from other benchmarks' files (`punie eval import bfcl ...`).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(import_app, name="import")


@import_app.command("bfcl")
def import_bfcl(
    questions: Annotated[
        Path,
        typer.Argument(help="A BFCL v3/v4 question file (JSON lines), e.g. BFCL_v4_simple.json."),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="The suite file to write.")],
    answers: Annotated[
        Path | None,
        typer.Option(
            help="Its possible-answer file (possible_answer/...); not needed for irrelevance."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="The suite's name (default: bfcl-<file name>).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Convert a Berkeley Function Calling Leaderboard file into a `tool_calling` suite.

    Categories simple, multiple, parallel, parallel_multiple, irrelevance and live_*: each entry
    becomes a case with its own tools; dotted function names become underscored, as BFCL gives
    them to function-calling models; strings compare normalized, as BFCL's checker does.
    docs/eval-suites.md lists where a Punie verdict differs from BFCL's, and why."""
    from punie.eval.bfcl import import_bfcl as convert

    suite = convert(questions, output, answers, name)
    counts: dict[str, int] = {}
    for c in suite.cases:
        counts[c.category] = counts.get(c.category, 0) + 1
    if as_json:
        print(json.dumps({"suite": suite.name, "file": str(output), "categories": counts}))
        return
    table = Table("category", "cases")
    for category, n in sorted(counts.items()):
        table.add_row(category, str(n))
    Console().print(table)
    print(output)


@app.command("suites")
def suites() -> None:
    """List the built-in suites."""
    from punie.eval.suite import Suite, builtin_suites

    table = Table("name", "kind", "cases", "file")
    for name, path in sorted(builtin_suites().items()):
        s = Suite.load(path)
        table.add_row(name, s.kind, str(len(s.cases)), str(path))
    Console().print(table)
