"""The calls behind each `punie` command, for Python: train, resume, fuse, evaluate, compare.

Each is one step of the loop with the decisions the CLI used to make for itself: where a run
goes and what it is called, how an interrupted run continues, which backend fuses a run (the one
that trained it), which results are compared with which. The CLI parses its arguments, calls one
of these and renders what it returns; `import punie` reaches them as `punie.train`, ...
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from punie.backends import get_backend
from punie.backends.base import FuseResult
from punie.bootstrap import LoopConfig, LoopProgress, LoopResult, run_loop
from punie.data.ablate import ablate_rows
from punie.data.decontaminate import decontaminate
from punie.errors import ConfigError, EvalError, PunieError
from punie.eval.ablate import ablate_suite, is_suite
from punie.eval.cache import ResponseCache, default_cache_dir
from punie.eval.client import REQUEST_TIMEOUT_S, Target
from punie.eval.compare import Comparison
from punie.eval.compare import compare as compare_results
from punie.eval.generate import Generated
from punie.eval.generate import generate as generate_rows
from punie.eval.generate import load_prompts as load_generate_prompts
from punie.eval.pairs import write_pairs
from punie.eval.prompts import load_prompts
from punie.eval.runner import CaseResult, EvalResult
from punie.eval.solutions import write_sft_rows
from punie.eval.suite import Suite
from punie.model.resolve import resolve_model
from punie.report.html import write_report as write_html
from punie.report.runs import RunComparison, write_runs_page
from punie.report.runs import compare_runs as compare_run_folders
from punie.sampling import DEFAULT_SAMPLING, Sampling
from punie.serve.server import STARTUP_TIMEOUT_S, Server
from punie.session import EvalPlan, EvalRun, load_results, results_files, run_eval
from punie.sweep import SweepResult, SweepRun, parse_grid
from punie.sweep import sweep as run_sweep
from punie.train import runs
from punie.train.callbacks import TrainingEvents
from punie.train.config import TrainConfig, parse_override, resolve_config
from punie.train.launch import RunResult, start
from punie.train.rundir import RunDir

Run = RunResult  # what `train` and `resume` return: the run folder and its record
BACKEND_OPTIONS = ("launcher", "num_processes")  # flags that ride in `TrainConfig.extra`


def default_run_dir(model: str, runs_dir: Path | str = runs.DEFAULT_RUNS_DIR) -> Path:
    """`RUNS_DIR/<model folder name>-<YYYYmmdd-HHMMSS>`: a new run's folder when none is named."""
    stem = Path(str(model).rstrip("/")).name or "model"
    return Path(runs_dir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_config(
    path: Path | str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    sets: Iterable[str] | None = None,
    name: str | None = None,
    runs_dir: Path | str = runs.DEFAULT_RUNS_DIR,
    options: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """A training config: the file at `path`, then `sets` (`"key=value"`), then `overrides`
    (None values skipped). The run folder is `runs_dir/name`, else the config's `adapter_path`,
    else `default_run_dir`. `options` are the backend's own (launcher, ...), kept in `extra`."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if name:
        given["adapter_path"] = str(Path(runs_dir) / name)
    config = resolve_config(
        path,
        given,
        list(sets or []),
        default_adapter_path=lambda data: str(default_run_dir(data.get("model", ""), runs_dir)),
    )
    options = {k: v for k, v in (options or {}).items() if v is not None}
    return config.with_(extra={**config.extra, **options}) if options else config


def train(
    config: TrainConfig | Path | str,
    *,
    events: TrainingEvents | None = None,
    overwrite: bool = False,
) -> Run:
    """Train `config` (a TrainConfig, or a config file) into its run folder; return the Run.

    `events` (a `TrainingCallback` subclass, say) hears the training as it goes: each train and
    validation report (a `MetricsRecord`, as written to metrics.jsonl), checkpoints, warnings,
    the stage's start and end. A folder that already holds a run is refused unless `overwrite`.
    Ctrl-C raises TrainingInterrupted and keeps the checkpoint: continue with `resume`."""
    if not isinstance(config, TrainConfig):
        config = load_config(config)
    check_suites(config)
    return start(config, events=events, overwrite=overwrite)


def check_suites(config: TrainConfig) -> None:
    """Load the suites a run reads (`reward_suite`, `select_by`) before any run folder exists,
    so a typo in one fails in a second, naming its file, line and field."""

    for key in ("reward_suite", "select_by"):
        value = getattr(config, key)
        if value:
            try:
                Suite.load(value)
            except PunieError as e:
                raise ConfigError(f"{key}: {e}") from None


def run_config(
    run: Path | str, *, runs_dir: Path | str = runs.DEFAULT_RUNS_DIR, iters: int | None = None
) -> TrainConfig:
    """The config a run (a name under `runs_dir`, or a run folder) was started with; `iters`
    raises its target, for a run that should go on longer."""
    config = TrainConfig.load(RunDir(runs.find_run(run, runs_dir)).config)
    return config.with_(iters=iters) if iters is not None else config


def resume(
    run: Run | Path | str,
    *,
    runs_dir: Path | str = runs.DEFAULT_RUNS_DIR,
    iters: int | None = None,
    events: TrainingEvents | None = None,
) -> Run:
    """Continue an interrupted run from its checkpoint, with the config it started with (and
    the data it started with: a changed file is refused)."""
    folder = run.run_dir if isinstance(run, RunResult) else run
    config = run_config(folder, runs_dir=runs_dir, iters=iters)
    return start(config, events=events, resume=True)


def fuse(
    run: Run | Path | str,
    out: Path | str,
    *,
    runs_dir: Path | str = runs.DEFAULT_RUNS_DIR,
    checkpoint: str = "best",
    dequantize: bool = False,
    gguf: str | None = None,
    parity: bool = True,
) -> FuseResult:
    """Merge a run's adapter into its base model at `out`, through the backend that trained the
    run (`config.json`'s `backend`): mlx_lm's fuser for an mlx run, PEFT's merge for a peft run.
    `gguf="f16"` or `"q8_0"` also writes `out/model.gguf` (mlx runs)."""
    run_dir = runs.find_run(run.run_dir if isinstance(run, RunResult) else run, runs_dir)
    backend = get_backend(TrainConfig.load(RunDir(run_dir).config).backend)
    return backend.fuse(
        run_dir, Path(out), checkpoint=checkpoint, dequantize=dequantize, gguf=gguf, parity=parity
    )


def compare_training_runs(
    names: Iterable[Path | str],
    *,
    runs_dir: Path | str = runs.DEFAULT_RUNS_DIR,
    out: Path | str | None = None,
) -> RunComparison:
    """Training runs (names under `runs_dir`, or run folders) side by side: the config keys that
    differ, each run's final metrics and loss curves; with `out`, also one HTML page there."""
    folders = [runs.find_run(n, runs_dir) for n in names]
    if len(folders) < 2:
        raise PunieError("runs compare: name at least two runs")
    comparison = compare_run_folders(folders)
    if out is not None:
        names_shown = ", ".join(r.name for r in comparison.runs)
        write_runs_page(out, comparison, title=f"Punie runs: {names_shown}")
    return comparison


def sweep(
    config: TrainConfig | Path | str,
    grid: Mapping[str, list[Any]] | Iterable[str],
    *,
    name: str | None = None,
    runs_dir: Path | str = runs.DEFAULT_RUNS_DIR,
    select_by: str | None = None,
    sets: Iterable[str] | None = None,
    events: TrainingEvents | None = None,
    on_run: Callable[[SweepRun], None] | None = None,
    cache_dir: Path | None = None,
) -> SweepResult:
    """Train every point of `grid` ({key: values}, or `"key=v1,v2"` items) on top of `config` (a
    config file or a TrainConfig), one run at a time, in `runs_dir/name` (default: the config
    file's stem, or "sweep"); rank the runs
    by `select_by` (a held-out suite, scored on each run's adapter with `evaluate`) or by
    validation loss; write sweep.json and sweep.html there. A rerun skips finished runs."""
    points = dict(grid) if isinstance(grid, Mapping) else parse_grid(list(grid))
    default = "sweep" if isinstance(config, TrainConfig) else Path(config).stem
    folder = Path(runs_dir) / (name or default)
    overrides = dict(parse_override(item) for item in sets or [])

    def train_one(cfg: TrainConfig, resume: bool, overwrite: bool) -> RunResult:
        return start(cfg, events=events, resume=resume, overwrite=overwrite)

    def score(suite: str, cfg: TrainConfig, adapter: Path, out: Path) -> float:
        result = evaluate(suite, cfg.model, adapter, run_dir=out, cache_dir=cache_dir)
        return result.score

    return run_sweep(
        config, points, folder=folder, train=train_one, select_by=select_by, score=score,
        sets=overrides, on_run=on_run,
    )  # fmt: skip


def evaluate(
    suite: Suite | Path | str,
    model: str,
    adapter: Path | str | None = None,
    base_url: str | None = None,
    *,
    sampling: Sampling = DEFAULT_SAMPLING,
    run_dir: Path | None = None,
    report: Path | None = None,
    concurrency: int = 4,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    api_key: str | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_S,
    request_timeout: float = REQUEST_TIMEOUT_S,
    constrain: str | None = None,
) -> EvalResult:
    """Score `model` (with `adapter`) on one suite (a file, a built-in name, or a loaded Suite)
    through a managed mlx_lm.server, or the OpenAI-compatible server at `base_url`. The results
    file and a report land in `run_dir` (default `runs/eval-TIME`). For several suites or
    adapters through one server, see `evaluate_plan`. `constrain="tools"` starts the managed
    server with constrained decoding (docs/serving.md)."""
    if isinstance(suite, Suite):
        if suite.path is None:
            raise EvalError(f"suite {suite.name!r}: has no file; save it and pass the path")
        suite = suite.path
    plan = EvalPlan(
        suites=(str(suite),),
        model=model,
        adapters=(str(adapter) if adapter is not None else None,),
        base_url=base_url,
        run_dir=run_dir,
        report=report,
        sampling=sampling,
        concurrency=concurrency,
        cache_dir=cache_dir,
        use_cache=use_cache,
        api_key=api_key,
        startup_timeout=startup_timeout,
        request_timeout=request_timeout,
        constrain=constrain,
    )
    return run_eval(plan).results[0]


def evaluate_plan(
    plan: EvalPlan, on_case: Callable[[str, CaseResult], None] | None = None
) -> EvalRun:
    """Every suite of `plan` for the base model and/or each adapter, through one server:
    one results file per (suite, variant) and one report. `on_case(label, case)` sees progress."""
    return run_eval(plan, on_case=on_case)


def _result(r: EvalResult | Path | str) -> EvalResult:
    return r if isinstance(r, EvalResult) else EvalResult.read(Path(r))


def compare(a: EvalResult | Path | str, b: EvalResult | Path | str) -> Comparison:
    """B against A (results or results files) on the cases both ran: the change in score with a
    95% interval, McNemar's exact test, and the cases that flipped each way, per category."""
    return compare_results(_result(a), _result(b))


def compare_runs(runs: Iterable[EvalResult | Path | str]) -> list[Comparison]:
    """Each later result of a suite against the first result of that suite (the baseline).
    Accepts results, results files and eval run folders (every results file in them)."""
    results = _results(runs)
    firsts: dict[str, EvalResult] = {}
    comparisons = []
    for r in results:
        if r.suite in firsts:
            comparisons.append(compare_results(firsts[r.suite], r))
        else:
            firsts[r.suite] = r
    if not comparisons:
        raise EvalError("nothing to compare: give at least two runs of the same suite")
    return comparisons


def _results(items: Iterable[EvalResult | Path | str]) -> list[EvalResult]:
    out: list[EvalResult] = []
    for item in items:
        out += [item] if isinstance(item, EvalResult) else load_results([Path(item)])
    return out


def write_report(
    path: Path | str, results: Iterable[EvalResult | Path | str], *, title: str | None = None
) -> Path:
    """An HTML report of `results` side by side (scores, intervals, per-case answers)."""
    loaded = _results(results)
    title = title or "Punie: " + " vs ".join(r.label for r in loaded)
    return write_html(path, loaded, title=title)


def decontaminate_dataset(
    path: Path | str, out: Path | str, against: Iterable[Path | str], **options: Any
):
    """Drop the rows of `path` that hold a prompt of the eval suites (files or built-in names) or
    datasets in `against`; `options` are `punie.data.decontaminate.decontaminate`'s (n,
    threshold, rejects, skip_invalid). Returns the written output and its manifest counts."""
    prompts = [prompt for source in against for prompt in load_prompts(source)]
    return decontaminate(path, out, prompts, **options)


def pair_dataset(
    results: Iterable[Path | str],
    out: Path | str,
    *,
    suites: Iterable[Path | str] = (),
    chosen: str = "passing",
    against: Iterable[Path | str] = (),
    n: int = 8,
    threshold: float = 0.5,
):
    """Preference rows (`prompt`, `chosen`, `rejected`, `tools`) mined from eval results (files
    or eval run folders):
    per case, a passing response over a failing one (`chosen="expected"`: the expected calls
    where nothing passed). `suites` are the suite files the results name (built-in ones are
    found by name); rows overlapping the suites or datasets in `against` are refused as
    `decontaminate_dataset` refuses them. Returns the written output; its manifest counts the
    pairs and lists the cases skipped, with why."""
    prompts = [prompt for source in against for prompt in load_prompts(source)]
    return write_pairs(
        results_files([Path(r) for r in results]),
        out,
        suites=list(suites),
        chosen=chosen,
        against=prompts,
        n=n,
        threshold=threshold,
    )


def ablate_dataset(
    path: Path | str,
    out: Path | str,
    span: str,
    *,
    mode: str,
    seed: int = 0,
):
    """Drop (`mode="drop"`) or swap between rows (`"shuffle"`, seeded) the part of every prompt
    that the regex `span`'s group named `span` matches, in a dataset (.jsonl or folder) or an
    eval suite (.yaml or built-in name). A dataset gives its Output; a suite, its manifest."""
    if is_suite(path):
        return ablate_suite(path, out, span, mode=mode, seed=seed)
    return ablate_rows(path, out, span, mode=mode, seed=seed)


def generate(
    prompts: Path | str,
    out: Path | str,
    *,
    model: str,
    adapter: Path | str | None = None,
    base_url: str | None = None,
    samples: int = 1,
    sampling: Sampling = DEFAULT_SAMPLING,
    system: str | None = None,
    concurrency: int = 4,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    api_key: str | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_S,
    request_timeout: float = REQUEST_TIMEOUT_S,
    on_row: Callable[[dict], None] | None = None,
) -> Generated:
    """Sample `samples` responses per case of a suite (file or built-in name; each sample scored)
    or per row of a prompts JSONL, from `model` (with `adapter`) through a managed mlx_lm.server,
    or from `model` at the OpenAI-compatible `base_url`. Rows go to `out` in the responses format
    `punie eval score` reads, with provenance; an interrupted run continues from `out.partial`."""
    requests = load_generate_prompts(prompts, system)
    cache = ResponseCache((cache_dir or default_cache_dir()) if use_cache else None)
    options = dict(
        samples=samples,
        sampling=sampling,
        concurrency=concurrency,
        cache=cache,
        request_timeout=request_timeout,
        on_row=on_row,
    )
    if base_url is not None:
        return generate_rows(requests, Target(base_url, model, None, api_key), out, **options)
    folder = str(resolve_model(model))
    adapter_path = str(Path(adapter).resolve()) if adapter else None
    log = Path(out).with_name(Path(out).name + ".server.log")
    with Server(folder, log=log, sampling=sampling, startup_timeout=startup_timeout) as server:
        target = Target(server.base_url, folder, adapter_path)
        return generate_rows(requests, target, out, **options)


def from_results(
    results: Iterable[Path | str],
    out: Path | str,
    *,
    suites: Iterable[Path | str] = (),
    passed_only: bool = False,
    keep_reasoning: bool = False,
    dedupe_against: Iterable[Path | str] = (),
    against: Iterable[Path | str] = (),
    n: int = 8,
    threshold: float = 0.5,
):
    """SFT rows from scored responses: eval results files (or run folders) and `punie generate`
    output. `passed_only` keeps the passing ones (rejection sampling); `keep_reasoning` keeps the
    whole answer text; rows already in `dedupe_against` (training files) are dropped and rows
    overlapping the suites or datasets in `against` refused. Returns the written Output."""
    paths = [Path(p) for p in results]
    files = [q for p in paths for q in (results_files([p]) if p.is_dir() else [p])]
    prompts = [prompt for source in against for prompt in load_prompts(source)]
    return write_sft_rows(
        files,
        out,
        suites=list(suites),
        passed_only=passed_only,
        keep_reasoning=keep_reasoning,
        seen=list(dedupe_against),
        against=prompts,
        n=n,
        threshold=threshold,
    )


def loop(
    config: LoopConfig | Path | str,
    *,
    progress: LoopProgress | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoopResult:
    """The bootstrap loop (docs/loop.md): solve, verify, train, evaluate, per iteration, until
    the target, the iteration cap, or an iteration that solves nothing new. A rerun continues an
    interrupted loop where it stopped."""
    if not isinstance(config, LoopConfig):
        config = LoopConfig.load(config, dict(overrides or {}))
    return run_loop(config, progress)
