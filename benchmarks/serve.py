"""Front server overhead: the same concurrent load on `punie serve` and on the mlx_lm.server behind.

One real `punie serve` (a subprocess) on the tiny model; the load generator (httpx, asyncio)
sends the same chat requests at the same concurrency either to its URL, naming the served id, or
straight to the mlx_lm.server it started (found as its child process), naming the model folder:
what a user would otherwise run. Rounds alternate which goes first, and each round's two runs
are compared back to back (the paired ratio). The tiny model answers in milliseconds, so the
front's share of each request is as large as it will ever be: a worst case. `--hidden 512
--layers 8` builds a model whose tokens cost about 5 times more, closer to a real one. On a shared
machine wall times swing with other load, so the table gives the best round beside the median, the
per-request latency (median, p90: the steady state, warm-up excluded), and the CPU each process
spent per request (their /proc counters), which load moves far less: where the machine's CPU is
the limit, the front costs a throughput share of front CPU / (front + backend CPU).

The headline ratio is the throughput over the whole experiment: all direct wall time over all
front wall time, the same requests on both sides. On two cores a run of 64 requests to the tiny
model swings by half (OpenBLAS's worker threads spin while they wait, on cores the backend already
fills; `OPENBLAS_NUM_THREADS=1` narrows it), far more than the front's share, so one round's
ratio says little; the 90% interval comes from resampling whole rounds (each round's
two runs kept together), and it narrows as rounds are added.

    .venv/bin/python benchmarks/serve.py [--requests 64] [--concurrency 8] [--rounds 3] [--stream]
        [--max-tokens 64] [--fixed-length] [--hidden 128] [--layers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from rounds import throughput_ratio

from punie.model.tiny import TinyShape, build_tiny_model
from punie.platform import children_of, processes

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reply_lengths(n: int, mean: int, fixed: bool) -> list[int]:
    """max_tokens of each request: all `mean`, or spread evenly over 0.25-1.75 x mean in a fixed
    shuffled order (the golden-ratio sequence), the same list for both targets.

    The tiny model never stops early, so max_tokens is each reply's length. Agent replies vary in
    length; equal lengths make a closed-loop client's requests start and end in lockstep, which
    lets mlx_lm.server prefill each wave of 8 as one batch, and any hop spreads those arrivals.
    With one OpenBLAS thread (the quietest backend) the lockstep cost the front 9% and varied
    lengths 6%; with the default threads the difference was lost in the noise (JOURNAL)."""
    if fixed:
        return [mean] * n
    return [max(1, round(mean * (0.25 + 1.5 * ((i * 0.6180339887) % 1)))) for i in range(n)]


async def load(url: str, model: str, lengths: list[int], concurrency: int, stream: bool):
    """(wall s, per-request latencies, completion tokens) for one request per entry of `lengths`
    (its max_tokens), `concurrency` at once."""
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = [0]
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:

        async def one(i: int) -> None:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"Show me file {i}.py"}],
                "tools": TOOLS,
                "max_tokens": lengths[i],
                "temperature": 0.0,
                "stream": stream,
            }
            async with limit:
                t0 = time.perf_counter()
                if stream:
                    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                        r.raise_for_status()
                        async for line in r.aiter_lines():
                            if line.startswith("data: {"):
                                tokens[0] += 1  # one event a token, or close to it
                else:
                    r = await http.post("/v1/chat/completions", json=body)
                    r.raise_for_status()
                    tokens[0] += r.json()["usage"]["completion_tokens"]
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(len(lengths))))
        return time.perf_counter() - start, latencies, tokens[0]


def start_serve(model: Path, log: Path) -> tuple[subprocess.Popen, str, str, int]:
    cmd = [sys.executable, "-m", "punie", "serve", str(model), "--json", "--log", str(log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(proc.stdout.readline())
    [backend] = [p for p in children_of(proc.pid, processes()) if "mlx_lm" in p.command]
    port = backend.command.split("--port ")[1].split()[0]
    return proc, info["url"].removesuffix("/v1"), f"http://127.0.0.1:{port}", backend.pid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64, help="the mean reply length")
    ap.add_argument(
        "--fixed-length",
        action="store_true",
        help="every reply max_tokens long: lockstep batches, the front's worst case",
    )
    ap.add_argument(
        "--hidden",
        type=int,
        default=TinyShape.hidden_size,
        help="the model's width (the MLP scales with it): wider is slower a token, as real models",
    )
    ap.add_argument("--layers", type=int, default=TinyShape.num_hidden_layers)
    ap.add_argument("--stream", action="store_true", help="stream every answer (SSE)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shape = TinyShape(num_hidden_layers=args.layers).widened(args.hidden)
        model = build_tiny_model(Path(tmp) / "tiny", seed=0, shape=shape)
        proc, front_url, direct_url, backend = start_serve(model, Path(tmp) / "server.log")
        try:
            targets = {
                "mlx_lm.server": (direct_url, str(model)),
                "punie front": (front_url, "tiny"),
            }
            for url, name in targets.values():  # warm-up: the model, the prompt cache, the pool
                asyncio.run(load(url, name, [8] * args.concurrency, args.concurrency, args.stream))
            lengths = reply_lengths(args.requests, args.max_tokens, args.fixed_length)
            walls = {k: [] for k in targets}
            lats = {k: [] for k in targets}
            toks = {k: [] for k in targets}
            front_cpu = {k: [] for k in targets}
            backend_cpu = {k: [] for k in targets}
            for r in range(args.rounds):
                order = list(targets) if r % 2 == 0 else list(reversed(targets))
                for who in order:
                    url, name = targets[who]
                    cpu0, bcpu0 = cpu_seconds(proc.pid), cpu_seconds(backend)
                    wall, lat, tok = asyncio.run(
                        load(url, name, lengths, args.concurrency, args.stream)
                    )
                    front_cpu[who].append(cpu_seconds(proc.pid) - cpu0)
                    backend_cpu[who].append(cpu_seconds(backend) - bcpu0)
                    walls[who].append(wall)
                    lats[who] += lat
                    toks[who].append(tok)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    n = args.requests
    mode = "streamed" if args.stream else "whole answers"
    length = "max_tokens" if args.fixed_length else "max_tokens mean"
    title = (
        f"{n} requests ({mode}), concurrency {args.concurrency}, {length} {args.max_tokens}, "
        f"{args.rounds} rounds, tiny model (hidden {args.hidden}, {args.layers} layers)"
    )
    table = Table(title=title)
    cols = ("target", "best wall s", "median wall s", "best req/s", "tokens/s (best)",
            "latency p50 ms", "latency p90 ms", "punie serve CPU ms/req",
            "mlx_lm.server CPU ms/req")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col == "target" else "right")
    for who in targets:
        best = min(walls[who])
        i = walls[who].index(best)
        lat = sorted(lats[who])
        table.add_row(
            who,
            f"{best:.2f}",
            f"{statistics.median(walls[who]):.2f}",
            f"{n / best:.1f}",
            f"{toks[who][i] / best:.0f}",
            f"{1000 * statistics.median(lat):.0f}",
            f"{1000 * lat[int(0.9 * (len(lat) - 1))]:.0f}",
            f"{1000 * statistics.median(front_cpu[who]) / n:.2f}",
            f"{1000 * statistics.median(backend_cpu[who]) / n:.1f}",
        )
    Console(width=150).print(table)
    d, f = walls["mlx_lm.server"], walls["punie front"]
    total, low, high = throughput_ratio(d, f)
    paired = sorted(a / b for a, b in zip(d, f, strict=True))  # each round's two runs, back to back
    print(
        f"throughput ratio front/direct (target >= 0.95): {total:.3f} over all "
        f"{args.rounds} rounds, 90% interval {low:.3f}-{high:.3f}; paired per round: median "
        f"{statistics.median(paired):.3f} (range {paired[0]:.3f}-{paired[-1]:.3f}); best rounds "
        f"{min(d) / min(f):.3f}"
    )
    front_ms = statistics.median(front_cpu["punie front"]) - statistics.median(
        front_cpu["mlx_lm.server"]
    )  # the punie process idles through direct rounds: that much is not the front's
    back_ms = statistics.median(backend_cpu["punie front"])
    print(f"CPU-bound estimate: {back_ms / (back_ms + front_ms):.3f} (backend / backend + front)")
    print(f"wall s per round: { ({k: [round(x, 2) for x in v] for k, v in walls.items()}) }")


if __name__ == "__main__":
    main()
