"""Eval harness overhead: the same suite through punie's runner vs a bare load generator.

Both send the same request bodies to the same tiny-model mlx_lm.server with the same concurrency;
the bare generator is a plain httpx/asyncio loop that only counts replies. Rounds alternate which
goes first, so the server's prompt cache favours neither. On a shared machine the wall times swing
with other load, so the table gives the best round (the least disturbed) beside the median, and the
client-side CPU per case (this process only; the server is another), which load does not move.
Then the cached rerun: a suite already answered, asked again with the response cache on; and the
same through the CLI, `punie eval run` on the demo's 40-case suite: once to fill the cache (it
starts mlx_lm.server, and leaves Python's bytecode caches), then rerun, when every answer is
cached and no server starts; the rerun is timed as a user sees it (the whole process, `--rounds`
times) beside its CPU time.

    .venv/bin/python benchmarks/eval.py [--cases 48] [--rounds 3] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from punie.data.sample import eval_suite
from punie.eval.cache import ResponseCache
from punie.eval.client import Target, request_body
from punie.eval.runner import run_suite
from punie.eval.suite import Suite
from punie.model.tiny import build_tiny_model
from punie.proc import child_env
from punie.sampling import Sampling
from punie.serve.server import Server


def widened(suite: Suite, n: int) -> Suite:
    """`n` cases cycled from `suite`, each with its own id and a distinct user turn."""
    raw = {
        "name": suite.name,
        "kind": suite.kind,
        "system": suite.system,
        "tools": list(suite.tools),
    }
    cases = []
    for i in range(n):
        c = suite.cases[i % len(suite.cases)]
        msgs = [dict(m) for m in c.messages]
        msgs[-1]["content"] = f"{msgs[-1]['content']} (#{i})"
        cases.append({"id": f"{c.id}-{i}", "messages": msgs, "expect": c.expect})
    return Suite.from_dict({**raw, "cases": cases})


async def bare(suite: Suite, target: Target, sampling: Sampling, concurrency: int) -> float:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=target.base_url, timeout=300) as http:

        async def one(case) -> None:
            body = request_body(target, suite.messages_for(case), suite.tools, sampling)
            async with limit:
                r = await http.post("/v1/chat/completions", json=body)
            r.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one(c) for c in suite.cases))
        return time.perf_counter() - start


def punie(suite: Suite, target: Target, sampling: Sampling, concurrency: int, cache=None) -> float:
    start = time.perf_counter()
    run_suite(suite, target, label="bench", sampling=sampling, concurrency=concurrency, cache=cache)
    return time.perf_counter() - start


def timed(fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of fn()."""
    cpu = time.process_time()
    wall = fn()
    return wall, time.process_time() - cpu


def cli_eval(suite: Path, model: Path, work: Path, run: str) -> tuple[float, float]:
    """(wall s, CPU s) of one `punie eval run` process with the response cache in `work`."""
    cmd = [sys.executable, "-m", "punie", "eval", "run", str(suite), "--model", str(model),
           "--run-dir", str(work / run), "--cache-dir", str(work / "cli-cache"),
           "--json"]  # fmt: skip
    # As a user's Python runs: with bytecode caches (kept under `work`), even where the
    # environment sets PYTHONDONTWRITEBYTECODE (then every start recompiles ~500 modules, ~0.8 s).
    env = {k: v for k, v in child_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cached_cli(model: Path, work: Path, rounds: int) -> tuple[float, list[tuple[float, float]]]:
    """The demo suite through the CLI: the filling run's wall time, then each cached rerun's."""
    import yaml

    suite = work / "demo-suite.yaml"
    suite.write_text(yaml.safe_dump(eval_suite(40, 0), sort_keys=False))
    fill, _ = cli_eval(suite, model, work, "fill")
    reruns = [cli_eval(suite, model, work, f"rerun{i}") for i in range(rounds)]
    assert not any((work / f"rerun{i}" / "server.log").exists() for i in range(rounds))
    return fill, reruns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    sampling = Sampling(temperature=0.0, max_tokens=args.max_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "model", seed=0)
        suite = widened(Suite.load("tools-basic"), args.cases)
        with Server(model, log=Path(tmp) / "server.log") as server:
            target = Target(server.base_url, model=str(model))
            asyncio.run(bare(suite, target, sampling, args.concurrency))  # warm-up
            times: dict[str, list[float]] = {"bare": [], "punie": []}
            cpus: dict[str, list[float]] = {"bare": [], "punie": []}
            runs = {
                "bare": lambda: asyncio.run(bare(suite, target, sampling, args.concurrency)),
                "punie": lambda: punie(suite, target, sampling, args.concurrency),
            }
            for r in range(args.rounds):
                for who in ("bare", "punie") if r % 2 == 0 else ("punie", "bare"):
                    wall, cpu = timed(runs[who])
                    times[who].append(wall)
                    cpus[who].append(cpu)
            cache = ResponseCache(Path(tmp) / "cache")
            fill = punie(suite, target, sampling, args.concurrency, cache)
            rerun = punie(suite, target, sampling, args.concurrency, cache)
        cli_fill, cli_reruns = cached_cli(model, Path(tmp), args.rounds)
    n = len(suite.cases)
    title = f"{n} cases, concurrency {args.concurrency}, max_tokens {args.max_tokens}"
    table = Table(title=f"{title}, {args.rounds} rounds")
    for col in ("what", "best wall s", "median wall s", "best cases/s", "client CPU ms/case"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for who, name in (("bare", "bare httpx load generator"), ("punie", "punie runner (no cache)")):
        best, med = min(times[who]), statistics.median(times[who])
        cpu = 1000 * statistics.median(cpus[who]) / n
        table.add_row(name, f"{best:.2f}", f"{med:.2f}", f"{n / best:.1f}", f"{cpu:.1f}")
    table.add_row("punie, filling the cache", f"{fill:.2f}", "", f"{n / fill:.1f}", "")
    table.add_row("punie, cached rerun", f"{rerun:.3f}", "", f"{n / rerun:.0f}", "")
    walls = [w for w, _ in cli_reruns]
    table.add_row("punie eval run (CLI), demo suite, filling", f"{cli_fill:.2f}", "", "", "")
    table.add_row(
        "punie eval run (CLI), cached: no server",
        f"{min(walls):.3f}",
        f"{statistics.median(walls):.3f}",
        "",
        f"CPU {statistics.median(c for _, c in cli_reruns):.2f} s",
    )
    Console().print(table)
    best = min(times["bare"]) / min(times["punie"])
    med = statistics.median(times["bare"]) / statistics.median(times["punie"])
    print(f"throughput ratio punie/bare: best {best:.3f}, median {med:.3f} (target >= 0.9)")
    print(f"wall s per round: { ({k: [round(x, 2) for x in v] for k, v in times.items()}) }")
    print(f"cached CLI rerun wall s: {[round(w, 3) for w in walls]} (target < 1)")


if __name__ == "__main__":
    main()
