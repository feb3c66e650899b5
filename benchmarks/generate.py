"""`punie generate` throughput against a bare load generator on the same server.

Both send the same request bodies (every case of a suite, `--samples` times, at temperature 0.7)
to one tiny-model mlx_lm.server with the same concurrency. The bare generator is a plain
httpx/asyncio loop that only counts replies; punie's generate also scores each sample, appends it
to the partial file, and writes the final file atomically. Rounds alternate which goes first. On
a shared machine wall times swing with other load, so the table gives the best round beside the
median and the spread, and the client-side CPU per sample (this process only), which load does
not move.

    .venv/bin/python benchmarks/generate.py [--cases 24] [--samples 4] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from eval import widened  # noqa: E402  (the sibling benchmark's suite widener)

from punie.eval.client import Target, request_body  # noqa: E402
from punie.eval.generate import generate, suite_prompts  # noqa: E402
from punie.eval.suite import Suite  # noqa: E402
from punie.model.tiny import build_tiny_model  # noqa: E402
from punie.sampling import Sampling  # noqa: E402
from punie.serve.server import Server  # noqa: E402


async def bare(suite: Suite, target: Target, sampling: Sampling, samples: int, conc: int) -> int:
    """Every (case, sample) request through plain httpx; returns completion tokens received."""
    limit = asyncio.Semaphore(conc)
    tokens = 0
    async with httpx.AsyncClient(base_url=target.base_url, timeout=300) as http:

        async def one(case) -> None:
            nonlocal tokens
            body = request_body(target, suite.messages_for(case), suite.tools, sampling)
            async with limit:
                r = await http.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            tokens += r.json()["usage"]["completion_tokens"]

        await asyncio.gather(*(one(c) for c in suite.cases for _ in range(samples)))
    return tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    sampling = Sampling(temperature=0.7, max_tokens=args.max_tokens)
    n = args.cases * args.samples
    times: dict[str, list[float]] = {"bare": [], "punie": []}
    cpus: dict[str, list[float]] = {"bare": [], "punie": []}
    tokens: dict[str, list[int]] = {"bare": [], "punie": []}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "model", seed=0)
        suite = widened(Suite.load("tools-basic"), args.cases)
        prompts = suite_prompts(suite)
        with Server(model, log=Path(tmp) / "server.log") as server:
            target = Target(server.base_url, model=str(model))
            asyncio.run(bare(suite, target, sampling, 1, args.concurrency))  # warm-up

            def run_bare() -> int:
                return asyncio.run(bare(suite, target, sampling, args.samples, args.concurrency))

            def run_punie() -> int:
                out = Path(tmp) / "out.jsonl"
                out.unlink(missing_ok=True)
                got: list[int] = []
                generate(
                    prompts, target, out, samples=args.samples, sampling=sampling,
                    concurrency=args.concurrency,
                    on_row=lambda row: got.append(row["completion_tokens"] or 0),
                )  # fmt: skip
                return sum(got)

            runs = {"bare": run_bare, "punie": run_punie}
            for r in range(args.rounds):
                for who in ("bare", "punie") if r % 2 == 0 else ("punie", "bare"):
                    cpu, wall = time.process_time(), time.perf_counter()
                    tokens[who].append(runs[who]())
                    times[who].append(time.perf_counter() - wall)
                    cpus[who].append(time.process_time() - cpu)
    title = f"{args.cases} cases × {args.samples} samples, concurrency {args.concurrency}"
    table = Table(title=f"{title}, max_tokens {args.max_tokens}, {args.rounds} rounds")
    cols = ("what", "best wall s", "median wall s", "spread s", "samples/s (median)")
    cols += ("tokens/s (median)", "client CPU ms/sample")
    for col in cols:
        table.add_column(col, justify="left" if col == "what" else "right")
    names = {"bare": "bare httpx load generator", "punie": "punie generate (no cache)"}
    for who, name in names.items():
        med = statistics.median(times[who])
        tok = statistics.median(t / w for t, w in zip(tokens[who], times[who], strict=True))
        table.add_row(
            name, f"{min(times[who]):.2f}", f"{med:.2f}",
            f"{max(times[who]) - min(times[who]):.2f}", f"{n / med:.1f}", f"{tok:.0f}",
            f"{1000 * statistics.median(cpus[who]) / n:.2f}",
        )  # fmt: skip
    Console(width=150).print(table)
    best = min(times["bare"]) / min(times["punie"])
    med = statistics.median(times["bare"]) / statistics.median(times["punie"])
    print(f"throughput ratio punie/bare: best {best:.3f}, median {med:.3f} (target >= 0.9)")
    print(f"wall s per round: { ({k: [round(x, 2) for x in v] for k, v in times.items()}) }")


if __name__ == "__main__":
    main()
