"""`punie loop CONFIG`: generate, verify, train, repeat (docs/loop.md).

Each iteration solves the still-unsolved problems of a problem suite with the current model (k
samples each, scored by the suite's scorer or sandbox as they arrive), asks a teacher for the ones
still unsolved (optional; those rows are marked distilled), adds one verified solution per newly
solved problem to the training set, trains (from the base or continuing from the last adapter)
and scores the result on a held-out suite. Iteration 0 is the start: the base model, or the given
adapter, or a warm-up SFT on `data`. The loop stops at `target_solved`, at `max_iterations`, or
after an iteration that solved nothing new.

Everything lands in `out/iteration_N/` (solved/, data/, adapter/, evaluation/, dataset_stats.json,
metadata.json, written last); `final_report.json` and `report.html` are rewritten after each
iteration. A rerun skips every iteration that has its metadata and every step whose output is
complete, so an interrupted loop continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from punie.errors import ConfigError, PunieError
from punie.eval.cache import ResponseCache, default_cache_dir
from punie.eval.client import Target
from punie.eval.generate import Prompts, generate, suite_prompts
from punie.eval.runner import EvalResult, run_suite
from punie.eval.solutions import Answer, generated_answers, sft_row
from punie.eval.suite import Suite
from punie.fsio import read_jsonl, write_json, write_jsonl
from punie.model.resolve import resolve_model
from punie.report.loop import IterationRow, write_loop_report
from punie.sampling import Sampling
from punie.serve.server import Server
from punie.train import runs
from punie.train.config import TrainConfig, read_config_file
from punie.train.launch import start as start_training
from punie.train.rundir import RunDir, has_adapter

TRAIN_FROM = ("base", "continue")


@dataclass(frozen=True)
class LoopConfig:
    model: str  # the base model (folder or hub id)
    problems: str  # the suite whose problems the loop solves
    heldout: str  # the suite it is scored on; must share no prompt with `problems`
    out: str = "loop"
    adapter: str | None = None  # start from this adapter (else from `data`'s warm-up, or base)
    data: str | None = None  # a dataset folder (train.jsonl, valid.jsonl) always trained on
    warmup_iters: int = 0  # an SFT on `data` alone before iteration 1 (when no `adapter`)
    max_iterations: int = 3
    target_solved: int | None = None  # stop once this many problems are solved (default all)
    stop_when_stalled: bool = True  # stop after an iteration that solved nothing new
    samples: int = 4  # k: samples per unsolved problem
    temperature: float = 0.8
    max_tokens: int = 128
    system: str | None = None  # replaces the problem suite's system prompt when solving
    keep_reasoning: bool = False  # keep the whole answer text (a teacher's reasoning) in rows
    train_from: str = "continue"  # `base`: each iteration trains afresh; `continue`: from last
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys (iters, rank, ...)
    seed: int = 0
    concurrency: int = 4
    teacher_base_url: str | None = None
    teacher_model: str | None = None
    teacher_adapter: str | None = None  # an mlx_lm.server teacher: the adapter each request names
    teacher_api_key: str | None = None
    cache: bool = True

    @classmethod
    def load(cls, path: Path | str, overrides: dict[str, Any] | None = None) -> LoopConfig:
        """A TOML or YAML file (the `train` table holds TrainConfig keys), then `overrides`."""
        data = {
            **read_config_file(path),
            **{k: v for k, v in (overrides or {}).items() if v is not None},
        }
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"{path}: {key}: unknown key (known: {', '.join(sorted(known))})")
        for key in ("model", "problems", "heldout"):
            if not data.get(key):
                raise ConfigError(f"{path}: {key}: required")
        if data.get("train_from", "continue") not in TRAIN_FROM:
            raise ConfigError(f"{path}: train_from: {data['train_from']!r} is not base or continue")
        if not isinstance(data.get("train", {}), dict):
            raise ConfigError(f"{path}: train: must be a table of training settings")
        config = cls(**data)
        if config.teacher_base_url and not config.teacher_model:
            raise ConfigError(f"{path}: teacher_model: required with teacher_base_url")
        if config.samples < 1 or config.max_iterations < 1:
            raise ConfigError(f"{path}: samples and max_iterations must be 1 or more")
        return config

    @property
    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.max_tokens)


@dataclass(frozen=True)
class Iteration:
    n: int
    solved_new: int
    solved_total: int
    distilled: int
    train_rows: int
    adapter: str | None
    heldout: EvalResult
    wall_s: float


@dataclass(frozen=True)
class LoopResult:
    out: Path
    start: EvalResult
    iterations: tuple[Iteration, ...]
    stop: str
    report: Path
    final_report: Path


class LoopProgress:
    """What the loop tells its caller; the CLI prints it."""

    def step(self, text: str) -> None: ...


def _folder(config: LoopConfig, n: int) -> Path:
    return Path(config.out) / f"iteration_{n}"


def _train_config(config: LoopConfig, data: Path, adapter: Path, from_adapter: str | None):
    base = {
        "fine_tune_type": "lora",
        "num_layers": -1,
        "mask_prompt": True,
        "iters": 100,
        "steps_per_eval": 1000,
        "val_batches": 2,
        "save_every": 50,
        "seed": config.seed,
    }
    values = {**base, **config.train}
    values.update(model=config.model, data=str(data), adapter_path=str(adapter))
    values["from_adapter"] = from_adapter
    return TrainConfig.from_dict(values, source="loop config: train")


def _train(tconfig: TrainConfig) -> Path:
    """Train, or keep a completed run: a run killed midway is trained again from its start."""
    run = RunDir(Path(tconfig.adapter_path))
    done = run.is_run() and has_adapter(run.path)
    if done and runs.load_record(run.path).get("status") == "completed":
        return run.adapter
    return start_training(tconfig, overwrite=True).adapter_path


def _evaluate(
    server: Server,
    config: LoopConfig,
    suite: Suite,
    adapter: str | None,
    folder: Path,
    label: str,
    cache: ResponseCache,
) -> EvalResult:
    path = folder / "evaluation" / f"{suite.name}.json"
    if path.is_file():
        return EvalResult.read(path)
    target = Target(server.base_url, model=config.model, adapter=adapter)
    result = run_suite(
        suite,
        target,
        label=label,
        concurrency=config.concurrency,
        cache=cache,
        server_status=server.status,
    )
    result.write(path)
    return result


def _solved_ids(config: LoopConfig, before: int) -> dict[str, int]:
    """Problem id -> the iteration that solved it, for iterations 1..before-1."""
    out = {}
    for n in range(1, before):
        rows = _folder(config, n) / "solved" / "rows.jsonl"
        for _, row in read_jsonl(rows) if rows.is_file() else ():
            out.setdefault(row["problem"], n)
    return out


def _answers(
    rows_path: Path, suite: Suite, n: int, *, distilled: bool, keep_reasoning: bool
) -> list[tuple[str, dict]]:
    """(problem id, SFT row of its first passing sample) per problem solved in `rows_path`."""
    first: dict[str, Answer] = {}
    for answer in generated_answers(rows_path, {suite.name: suite}):
        if answer.passed and answer.id not in first:
            first[answer.id] = answer
    marks = {"distilled": True} if distilled else {}
    return [
        (pid, {**sft_row(a, keep_reasoning), "problem": pid, "iteration": n, **marks})
        for pid, a in first.items()
    ]


def _subset(prompts: Prompts, ids: set[str]) -> Prompts:
    return Prompts(tuple(r for r in prompts.requests if r.id in ids), prompts.suite)


def _solve(config, server, problems, unsolved, folder, cache, progress) -> tuple[int, int]:
    """Sample the unsolved problems, then the teacher for the rest; write solved/rows.jsonl.
    Returns (newly solved, of which distilled)."""
    solved = folder / "solved"
    rows_path = solved / "rows.jsonl"
    if rows_path.is_file():
        rows = [r for _, r in read_jsonl(rows_path)]
        return len(rows), sum(bool(r.get("distilled")) for r in rows)
    if not unsolved:
        write_jsonl(rows_path, [])
        return 0, 0
    prompts = _subset(suite_prompts(problems, config.system), unsolved)
    student = Target(server.base_url, model=config.model, adapter=_current_adapter(config, folder))
    n = int(folder.name.split("_")[1])
    options = dict(
        first_sample=(n - 1) * config.samples,  # fresh samples each iteration, not cached ones
        samples=config.samples,
        sampling=config.sampling,
        concurrency=config.concurrency,
        cache=cache,
    )
    if not (solved / "responses.jsonl").is_file():  # a complete file: sampled before a kill
        step = f"sampling {len(unsolved)} unsolved problems × {config.samples}"
        progress.step(f"{folder.name}: {step}")
        generate(prompts, student, solved / "responses.jsonl", **options)
    keep = config.keep_reasoning
    found = _answers(solved / "responses.jsonl", problems, n, distilled=False, keep_reasoning=keep)
    left = unsolved - {pid for pid, _ in found}
    distilled: list[tuple[str, dict]] = []
    if config.teacher_base_url and left:
        teacher = Target(
            config.teacher_base_url,
            model=config.teacher_model,
            adapter=config.teacher_adapter,
            api_key=config.teacher_api_key,
        )
        if not (solved / "teacher.jsonl").is_file():
            progress.step(f"{folder.name}: asking the teacher for {len(left)} problems")
            generate(_subset(prompts, left), teacher, solved / "teacher.jsonl", **options)
        distilled = _answers(
            solved / "teacher.jsonl", problems, n, distilled=True, keep_reasoning=keep
        )
    write_jsonl(rows_path, [row for _, row in found + distilled])
    return len(found) + len(distilled), len(distilled)


def _current_adapter(config: LoopConfig, folder: Path) -> str | None:
    """The adapter the model being improved has at the start of iteration `folder`."""
    n = int(folder.name.split("_")[1])
    for m in range(n - 1, -1, -1):
        adapter = _folder(config, m) / "adapter"
        if has_adapter(adapter):
            return str(adapter.resolve())
    return str(Path(config.adapter).resolve()) if config.adapter else None


def _dataset(config: LoopConfig, n: int) -> tuple[Path, dict]:
    """iteration_n/data: the given `data` rows plus every solution found in iterations 1..n."""
    folder = _folder(config, n)
    solved = [
        r
        for m in range(1, n + 1)
        for _, r in read_jsonl(_folder(config, m) / "solved" / "rows.jsonl")
    ]
    base_train = base_valid = []
    if config.data:
        base_train = [r for _, r in read_jsonl(Path(config.data) / "train.jsonl")]
        base_valid = [r for _, r in read_jsonl(Path(config.data) / "valid.jsonl")]
    train = base_train + solved
    valid = base_valid or solved[: max(1, len(solved) // 5)]
    data = folder / "data"
    write_jsonl(data / "train.jsonl", train)
    write_jsonl(data / "valid.jsonl", valid)
    stats = {
        "iteration": n,
        "train_rows": len(train),
        "valid_rows": len(valid),
        "from_data": len(base_train),
        "solutions": len(solved),
        "distilled": sum(bool(r.get("distilled")) for r in solved),
        "solutions_by_iteration": {
            str(m): sum(1 for r in solved if r.get("iteration", m) == m) for m in range(1, n + 1)
        },
    }
    write_json(folder / "dataset_stats.json", stats)
    return data, stats


def _start(config, server, heldout, cache, progress) -> EvalResult:
    """Iteration 0: the warm-up (if any) and the start's held-out score."""
    folder = _folder(config, 0)
    adapter = str(Path(config.adapter).resolve()) if config.adapter else None
    if adapter is None and config.data and config.warmup_iters > 0:
        progress.step(f"iteration_0: warm-up SFT on {config.data} ({config.warmup_iters} iters)")
        tconfig = _train_config(config, Path(config.data), folder / "adapter", None)
        adapter = str(_train(tconfig.with_(iters=config.warmup_iters)).resolve())
    if not (folder / "evaluation" / f"{heldout.name}.json").is_file():
        progress.step("iteration_0: scoring the start on the held-out suite")
    result = _evaluate(server, config, heldout, adapter, folder, "start", cache)
    if not (folder / "metadata.json").is_file():
        write_json(
            folder / "metadata.json",
            {"iteration": 0, "adapter": adapter, "heldout": _score(result)},
        )
    return result


def _score(result: EvalResult) -> dict:
    return {
        "suite": result.suite,
        "score": result.score,
        "passed": result.passed,
        "total": len(result.cases),
        "interval": list(result.interval),
    }


def _check_disjoint(problems: Suite, heldout: Suite) -> None:
    def asked(s: Suite) -> dict[str, str]:
        return {json.dumps(s.messages_for(c), sort_keys=True): c.id for c in s.cases}

    shared = asked(problems).keys() & asked(heldout).keys()
    if shared:
        case = asked(problems)[sorted(shared)[0]]
        raise ConfigError(
            f"{problems.path}: case {case!r} is also in the held-out suite {heldout.path}; "
            "the held-out suite must share no prompt with the problems"
        )


def run_loop(
    config: LoopConfig,
    progress: LoopProgress | None = None,
    on_iteration: Callable[[Iteration], None] | None = None,
) -> LoopResult:
    progress = progress or LoopProgress()
    problems, heldout = Suite.load(config.problems), Suite.load(config.heldout)
    _check_disjoint(problems, heldout)
    out = Path(config.out)
    earlier = _earlier_loop(out)
    config = _resolved(config)
    _check_same_loop(out, earlier, config)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(config))
    target = config.target_solved or len(problems.cases)
    cache = ResponseCache(default_cache_dir() if config.cache else None)
    iterations: list[Iteration] = []
    stop = f"max_iterations ({config.max_iterations}) reached"
    with Server(config.model, log=out / "server.log") as server:
        start = _start(config, server, heldout, cache, progress)
        _write_reports(config, problems, start, iterations, None)
        for n in range(1, config.max_iterations + 1):
            t0 = time.monotonic()
            folder = _folder(config, n)
            meta = folder / "metadata.json"
            if meta.is_file():
                it = _read_iteration(folder, config, heldout)
            else:
                solved = _solved_ids(config, n)
                unsolved = {c.id for c in problems.cases} - set(solved)
                new, distilled = _solve(config, server, problems, unsolved, folder, cache, progress)
                if new == 0 and config.stop_when_stalled:
                    stop = f"iteration {n} solved nothing new"
                    write_json(
                        meta,
                        {
                            "iteration": n,
                            "solved_new": 0,
                            "stalled": True,
                            "solved_total": len(solved),
                        },
                    )
                    break
                data, stats = _dataset(config, n)
                adapter = _current_adapter(config, folder)
                if stats["train_rows"]:  # nothing to train on: the model stays as it was
                    frm = adapter if config.train_from == "continue" else None
                    progress.step(f"{folder.name}: training on {stats['train_rows']} rows")
                    tconfig = _train_config(config, data, folder / "adapter", frm)
                    adapter = str(_train(tconfig).resolve())
                progress.step(f"{folder.name}: scoring on the held-out suite")
                label = f"iteration_{n}"
                result = _evaluate(server, config, heldout, adapter, folder, label, cache)
                wall = round(time.monotonic() - t0, 3)
                total = len(solved) + new
                it = Iteration(n, new, total, distilled, stats["train_rows"], adapter, result, wall)
                write_json(meta, _metadata(it))
            if it.solved_new == 0 and it.heldout is None:  # a stalled iteration, read back
                stop = f"iteration {n} solved nothing new"
                break
            iterations.append(it)
            if on_iteration:
                on_iteration(it)
            _write_reports(config, problems, start, iterations, None)
            if it.solved_total >= target:
                stop = f"target reached: {it.solved_total} of {len(problems.cases)} solved"
                break
            if it.solved_new == 0 and config.stop_when_stalled:
                stop = f"iteration {n} solved nothing new"
                break
    report, final = _write_reports(config, problems, start, iterations, stop)
    return LoopResult(out, start, tuple(iterations), stop, report, final)


SAME_LOOP = ("model", "problems", "heldout", "adapter", "data", "train_from")


def _earlier_loop(out: Path) -> dict | None:
    """The config of the loop `out` holds (None for a new or empty folder); a folder that holds
    anything else is refused before any work, so nothing of the user's is overwritten."""
    if out.exists() and not out.is_dir():
        raise PunieError(f"{out}: is a file; the loop needs a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not held:
        return None
    try:
        earlier = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if not isinstance(earlier, dict) or "problems" not in earlier:
        raise PunieError(
            f"{out}: is not empty and is not a punie loop folder (it holds {held[0]}); "
            "pick another `out`"
        )
    return earlier


def _check_same_loop(out: Path, earlier: dict | None, config: LoopConfig) -> None:
    """A rerun continues the loop in `out` only with the same model, suites, start and data."""
    now = asdict(config)
    changed = [k for k in SAME_LOOP if earlier is not None and earlier.get(k) != now[k]]
    if changed:
        raise PunieError(
            f"{out}: holds a loop with another {changed[0]} ({earlier.get(changed[0])!r}); "
            "pick another `out` to start a new loop"
        )


def _resolved(config: LoopConfig) -> LoopConfig:
    return replace(config, model=str(resolve_model(config.model)))


def _metadata(it: Iteration) -> dict:
    return {
        "iteration": it.n,
        "solved_new": it.solved_new,
        "solved_total": it.solved_total,
        "distilled": it.distilled,
        "train_rows": it.train_rows,
        "adapter": it.adapter,
        "heldout": _score(it.heldout),
        "wall_s": it.wall_s,
    }


def _read_iteration(folder: Path, config: LoopConfig, heldout: Suite):
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    if meta.get("stalled"):
        return Iteration(meta["iteration"], 0, meta.get("solved_total", 0), 0, 0, None, None, 0.0)
    result = EvalResult.read(folder / "evaluation" / f"{heldout.name}.json")
    return Iteration(
        meta["iteration"],
        meta["solved_new"],
        meta["solved_total"],
        meta.get("distilled", 0),
        meta["train_rows"],
        meta["adapter"],
        result,
        meta.get("wall_s", 0.0),
    )


def _write_reports(config, problems, start, iterations, stop) -> tuple[Path, Path]:
    out = Path(config.out)
    rows = [IterationRow(0, start)] + [
        IterationRow(it.n, it.heldout, it.solved_new, it.solved_total, it.distilled, it.train_rows)
        for it in iterations
    ]
    report = write_loop_report(
        out / "report.html",
        rows,
        title=f"Punie loop: {problems.name}",
        problems=len(problems.cases),
        stop=stop,
    )
    final = out / "final_report.json"
    write_json(
        final,
        {
            "problems": len(problems.cases),
            "stop": stop,
            "finished": stop is not None,
            "start": _score(start),
            "iterations": [_metadata(it) for it in iterations],
            "solved": iterations[-1].solved_total if iterations else 0,
        },
    )
    return report, final
