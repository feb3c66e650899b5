"""`punie eval`: one call from suites and a model to results files and a report.

It starts a managed mlx_lm.server (unless given `base_url`, or unless the response cache already
holds every answer the plan asks for: then no server starts at all), runs every suite for the base
model and/or each adapter through that one server (each request names its adapter), writes one
results JSON per suite and variant into the run folder beside the server's log, and renders the
report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from punie.errors import EvalError, warn
from punie.eval.cache import ResponseCache, default_cache_dir
from punie.eval.client import REQUEST_TIMEOUT_S, Target
from punie.eval.runner import CaseResult, EvalResult, fully_cached, run_suite
from punie.eval.suite import Suite
from punie.fsio import check_file_replaceable, file_in, safe_file_name
from punie.model.resolve import resolve_model
from punie.report.html import write_report
from punie.sampling import DEFAULT_SAMPLING, Sampling
from punie.serve.server import STARTUP_TIMEOUT_S, Server
from punie.train.rundir import ADAPTER_WEIGHTS, RunDir, has_adapter


@dataclass(frozen=True)
class EvalPlan:
    suites: tuple[str, ...]
    model: str
    adapters: tuple[str | None, ...] = (None,)  # None is the base model
    base_url: str | None = None  # any OpenAI-compatible server instead of a managed one
    run_dir: Path | None = None
    report: Path | None = None
    sampling: Sampling = DEFAULT_SAMPLING
    concurrency: int = 4
    cache_dir: Path | None = None
    use_cache: bool = True
    api_key: str | None = None
    title: str | None = None
    startup_timeout: float = STARTUP_TIMEOUT_S  # seconds for the managed server to answer
    request_timeout: float = REQUEST_TIMEOUT_S  # seconds for one answer, sent to last byte
    grader_base_url: str | None = None  # graded suites: the grader's server (default: the run's)
    grader_api_key: str | None = None  # for grader_base_url (default: api_key)
    constrain: str | None = None  # the managed server's constrained decoding ("tools")


@dataclass(frozen=True)
class EvalRun:
    run_dir: Path
    results: tuple[EvalResult, ...]
    files: tuple[Path, ...]
    report: Path
    server_log: Path | None


def default_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("eval-%Y%m%d-%H%M%S")


def variant_label(adapter: str | None, taken: set[str], model_id: str | None = None) -> str:
    """A label for the variant, unique among `taken` even ignoring case: labels name results
    files, and `Base` and `base` are one file on a case-insensitive disk (macOS, Windows).

    `model_id` names the no-adapter variant of a server Punie did not start (`--base-url`):
    there "base" says nothing, as the id says which of the server's models answered."""
    if adapter is not None:
        base = safe_file_name(Path(adapter).name or "adapted")
    else:
        base = "base" if model_id is None else safe_file_name(model_id)
    folded = {t.casefold() for t in taken}
    label, n = base, 2
    while label.casefold() in folded:
        label, n = f"{base}-{n}", n + 1
    return label


def results_path(run_dir: Path, suite: str, label: str) -> Path:
    """`<suite>.<label>.json` in `run_dir`, each part a safe file name, never outside it."""
    return file_in(run_dir, f"{safe_file_name(suite)}.{safe_file_name(label)}.json")


def _check_suite_names(suites: list[Suite]) -> None:
    """Two suites whose names differ only in case would write the same results files."""
    seen: dict[str, Suite] = {}
    for s in suites:
        other = seen.setdefault(s.name.casefold(), s)
        if other is not s:
            raise EvalError(
                f"{s.path}: suite name {s.name!r} is also the name of {other.path} "
                f"({other.name!r}; names are compared ignoring case); rename one"
            )


def _check_adapter(adapter: str) -> None:
    if not has_adapter(adapter):
        raise EvalError(f"{adapter}: not an adapter folder (no {ADAPTER_WEIGHTS})")


def _check_outputs(plan: EvalPlan, suites: list[Suite], run_dir: Path) -> None:
    """Refuse before any model is asked to replace a results file or report Punie did not write."""
    taken: set[str] = set()
    for adapter in plan.adapters:
        label = variant_label(adapter, taken, _served_id(plan))
        taken.add(label)
        for suite in suites:
            check_file_replaceable(results_path(run_dir, suite.name, label), "results")
    check_file_replaceable(plan.report or run_dir / "report.html", "report")


def _served_id(plan: EvalPlan) -> str | None:
    """The id that names the no-adapter variant: the requested model's, for `--base-url`."""
    return plan.model if plan.base_url is not None else None


def _answered_label(result: EvalResult, label: str, taken: set[str]) -> str:
    """The label a `--base-url` model's results get from the id its server answered with (one
    id; several, or none, leave the requested id's label)."""
    answered = result.answered_model
    if not answered or ", " in answered:
        return label
    return variant_label(None, taken, answered)


def _warn_mismatch(result: EvalResult) -> None:
    warn(
        f"{result.base_url}: asked for model {result.requested_model!r} but "
        f"{result.answered_model!r} answered; the results record both "
        "(requested_model, answered_model)"
    )


def grader_target(plan: EvalPlan, suite: Suite, base_url: str) -> Target | None:
    """Where a graded suite's grader answers: `--grader-base-url`, else the run's own server,
    which (managed) loads the grader's folder as it loads any model a request names."""
    if suite.grading is None:
        return None
    spec = suite.grading.grader
    if plan.grader_base_url:
        key = plan.grader_api_key or plan.api_key
        return Target(plan.grader_base_url, spec.model, spec.adapter, api_key=key)
    if plan.base_url is None:
        adapter = str(Path(suite.grading.folder, spec.adapter).resolve()) if spec.adapter else None
        return Target(base_url, str(resolve_model(spec.model)), adapter)
    return Target(base_url, spec.model, spec.adapter, api_key=plan.api_key)


def _adapter_path(plan: EvalPlan, adapter: str | None) -> str | None:
    """What requests name: a managed server's adapter by absolute path, as it loads it."""
    return str(Path(adapter).resolve()) if adapter and not plan.base_url else adapter


def _all_cached(plan: EvalPlan, suites: list[Suite], model: str, cache: ResponseCache) -> bool:
    """Whether every (suite, variant) answer of a managed-server plan is in the cache, so the
    server (seconds to start) need not start at all."""
    targets = [
        Target("", model, _adapter_path(plan, adapter), constrain=plan.constrain)
        for adapter in plan.adapters
    ]
    return all(
        fully_cached(suite, target, plan.sampling, cache) for target in targets for suite in suites
    )


def run_eval(plan: EvalPlan, on_case: Callable[[str, CaseResult], None] | None = None) -> EvalRun:
    """Evaluate every (suite, variant) pair of `plan`; `on_case(label, result)` reports progress."""
    suites = [Suite.load(s) for s in plan.suites]
    _check_suite_names(suites)
    if not 0 < plan.request_timeout < float("inf"):
        raise EvalError(
            f"--request-timeout: must be a positive number of seconds, got {plan.request_timeout}"
        )
    if plan.constrain and plan.base_url is not None:
        raise EvalError(
            "--constrain: applies to the managed server only; start `punie serve MODEL "
            "--constrain tools` and give its URL to --base-url (with --no-cache) instead"
        )
    for adapter in plan.adapters:
        if adapter is not None and plan.base_url is None:
            _check_adapter(adapter)
    for suite in suites:  # a pairwise suite's adapters, before any model is asked
        for variant in (suite.grading.compare or ()) if suite.grading else ():
            if isinstance(variant, str) and variant != "base" and plan.base_url is None:
                _check_adapter(str(Path(suite.grading.folder, variant)))
    run_dir = plan.run_dir or default_run_dir()
    _check_outputs(plan, suites, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache((plan.cache_dir or default_cache_dir()) if plan.use_cache else None)
    model = plan.model
    if plan.base_url is None:
        model = str(resolve_model(plan.model))
    managed = plan.base_url is None and not _all_cached(plan, suites, model, cache)
    log = run_dir / "server.log" if managed else None
    server_ctx = (
        Server(
            model,
            log=log,
            sampling=plan.sampling,
            startup_timeout=plan.startup_timeout,
            constrain=plan.constrain,
        )
        if managed
        else contextlib.nullcontext()
    )
    results, files, taken = [], [], set()
    with server_ctx as server:
        # "": every answer is in the cache, so no server was started and none is asked.
        base_url = plan.base_url or (server.base_url if server else "")
        for adapter in plan.adapters:
            label = variant_label(adapter, taken, _served_id(plan))
            taken.add(label)
            target = Target(
                base_url,
                model=model,
                adapter=_adapter_path(plan, adapter),
                api_key=plan.api_key,
                constrain=plan.constrain,
            )
            metrics = RunDir(Path(adapter)).metrics if adapter else None
            warned = False
            for i, suite in enumerate(suites):
                result = run_suite(
                    suite,
                    target,
                    label=label,
                    sampling=plan.sampling,
                    concurrency=plan.concurrency,
                    cache=cache,
                    metrics=metrics if metrics and metrics.is_file() else None,
                    on_case=(lambda r, label=label: on_case(label, r)) if on_case else None,
                    server_status=server.status if server else None,
                    request_timeout=plan.request_timeout,
                    grader=grader_target(plan, suite, base_url),
                )
                if result.answered_model not in (None, result.requested_model):
                    if not warned:  # once per variant: each suite's results record it
                        _warn_mismatch(result)
                        warned = True
                    if i == 0 and adapter is None and plan.base_url is not None:
                        taken.discard(label)  # a variant's files all share its first label
                        label = _answered_label(result, label, taken)
                        taken.add(label)
                result = replace(result, label=label)
                results.append(result)
                files.append(result.write(results_path(run_dir, suite.name, label)))
    title = plan.title or f"Punie eval: {', '.join(s.name for s in suites)}"
    report = write_report(plan.report or run_dir / "report.html", results, title=title)
    return EvalRun(run_dir, tuple(results), tuple(files), report, log)


def results_files(paths: list[Path]) -> list[Path]:
    """Results files, with each run folder given as its `*.json` results files, in name order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.glob("*.json") if f.name.count(".") >= 2)
            if not found:
                raise EvalError(f"{p}: no results files (<suite>.<label>.json) in this folder")
            out += found
        else:
            out.append(p)
    return out


def load_results(paths: list[Path]) -> list[EvalResult]:
    """Results files, or run folders (every `*.json` results file in them, in name order)."""
    return [EvalResult.read(f) for f in results_files(paths)]
