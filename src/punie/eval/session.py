"""`punie eval`: one call from suites and a model to results files and a report.

It starts a managed mlx_lm.server (unless given `base_url`), runs every suite for the base model
and/or each adapter through that one server (each request names its adapter), writes one results
JSON per suite and variant into the run folder beside the server's log, and renders the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from punie.errors import PunieError
from punie.eval.cache import ResponseCache, default_cache_dir
from punie.eval.client import Sampling, Target
from punie.eval.runner import CaseResult, EvalResult, run_suite
from punie.eval.suite import Suite
from punie.report.html import write_report
from punie.serve.server import Server


@dataclass(frozen=True)
class EvalPlan:
    suites: tuple[str, ...]
    model: str
    adapters: tuple[str | None, ...] = (None,)  # None is the base model
    base_url: str | None = None  # any OpenAI-compatible server instead of a managed one
    run_dir: Path | None = None
    report: Path | None = None
    sampling: Sampling = field(default_factory=Sampling)
    concurrency: int = 4
    cache_dir: Path | None = None
    use_cache: bool = True
    api_key: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class EvalRun:
    run_dir: Path
    results: tuple[EvalResult, ...]
    files: tuple[Path, ...]
    report: Path
    server_log: Path | None


def default_run_dir() -> Path:
    return Path("runs") / datetime.now().strftime("eval-%Y%m%d-%H%M%S")


def variant_label(adapter: str | None, taken: set[str]) -> str:
    base = "base" if adapter is None else (Path(adapter).name or "adapted")
    label, n = base, 2
    while label in taken:
        label, n = f"{base}-{n}", n + 1
    return label


def _check_adapter(adapter: str) -> None:
    if not (Path(adapter) / "adapters.safetensors").is_file():
        raise PunieError(f"{adapter}: not an adapter folder (no adapters.safetensors)")


def run_eval(plan: EvalPlan, on_case: Callable[[str, CaseResult], None] | None = None) -> EvalRun:
    """Evaluate every (suite, variant) pair of `plan`; `on_case(label, result)` reports progress."""
    suites = [Suite.load(s) for s in plan.suites]
    for adapter in plan.adapters:
        if adapter is not None and plan.base_url is None:
            _check_adapter(adapter)
    run_dir = plan.run_dir or default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache((plan.cache_dir or default_cache_dir()) if plan.use_cache else None)
    model = plan.model
    if plan.base_url is None:
        from punie.model.resolve import resolve_model

        model = str(resolve_model(plan.model))
    log = run_dir / "server.log" if plan.base_url is None else None
    server_ctx = (
        Server(model, log=log, max_tokens=plan.sampling.max_tokens)
        if plan.base_url is None
        else contextlib.nullcontext()
    )
    results, files, taken = [], [], set()
    with server_ctx as server:
        base_url = plan.base_url or server.base_url
        for adapter in plan.adapters:
            label = variant_label(adapter, taken)
            taken.add(label)
            adapter_path = (
                str(Path(adapter).resolve()) if adapter and not plan.base_url else adapter
            )
            target = Target(base_url, model=model, adapter=adapter_path, api_key=plan.api_key)
            metrics = Path(adapter) / "metrics.jsonl" if adapter else None
            for suite in suites:
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
                )
                results.append(result)
                files.append(result.write(run_dir / f"{suite.name}.{label}.json"))
    title = plan.title or f"Punie eval: {', '.join(s.name for s in suites)}"
    report = write_report(plan.report or run_dir / "report.html", results, title=title)
    return EvalRun(run_dir, tuple(results), tuple(files), report, log)


def load_results(paths: list[Path]) -> list[EvalResult]:
    """Results files, or run folders (every `*.json` results file in them, in name order)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.glob("*.json") if f.name.count(".") >= 2)
            if not found:
                raise PunieError(f"{p}: no results files (<suite>.<label>.json) in this folder")
            out += [EvalResult.read(f) for f in found]
        else:
            out.append(EvalResult.read(p))
    return out
