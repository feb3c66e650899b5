"""Benchmark `punie dataset` against HF `datasets` and `jq` on generated chat rows.

    uv sync --group bench          # HF datasets (not installed by default); jq comes from apt
    .venv/bin/python benchmarks/datasets.py --rows 1000000

Generates N tool-calling chat rows (the sample task's shape, with its tool schemas, ~1 KB a row,
about 5% exact duplicates), then times validate, filter, dedupe and mix done three ways: `punie
dataset`, HF `datasets` (load_dataset json, then filter/map, then to_json), and jq where it
applies. Each run is its own subprocess, measured by a small wrapper process whose only child it
is, so `getrusage(RUSAGE_CHILDREN).ru_maxrss` is that run's peak RSS. Punie also runs each
operation on a tenth of the rows, to show its peak memory does not grow with input size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from punie.platform import current, peak_rss_bytes

ROLES = ("system", "user", "assistant", "tool")


def generate(path: Path, n: int, seed: int) -> None:
    from punie.data.sample import chat_row, examples

    rng = random.Random(seed)
    pool = examples(5000, seed)
    with open(path, "w") as f:
        kept: list[str] = []
        for i in range(n):
            if kept and rng.random() < 0.05:
                f.write(rng.choice(kept))
                continue
            row = chat_row(pool[i % len(pool)])
            row["messages"][1]["content"] += f" (request {i})"
            line = json.dumps(row) + "\n"
            if len(kept) < 1000:
                kept.append(line)
            f.write(line)


# The HF `datasets` side, run in a child: `python datasets.py --hf OP IN OUT`.
def hf(op: str, src: str, out: str, n: int) -> None:
    # This file is named datasets.py: drop its folder from the path so the library is found.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from datasets import concatenate_datasets, disable_progress_bars, load_dataset

    disable_progress_bars()
    ds = load_dataset("json", data_files=src, split="train")
    if op == "validate":
        ok = ds.filter(
            lambda r: (
                isinstance(r["messages"], list)
                and all(m["role"] in ROLES and isinstance(m["content"], str) for m in r["messages"])
            )
        )
        print(len(ok))
    elif op == "filter":
        keep = ds.filter(
            lambda r: len(r["messages"]) >= 3 and any(m.get("tool_calls") for m in r["messages"])
        )
        keep.to_json(out)
    elif op == "dedupe":
        import hashlib

        seen: set[bytes] = set()
        hashed = ds.map(
            lambda r: {
                "_h": hashlib.blake2b(
                    json.dumps(r["messages"], sort_keys=True).encode(), digest_size=8
                ).digest()
            }
        )

        def first(r) -> bool:
            if r["_h"] in seen:
                return False
            seen.add(r["_h"])
            return True

        hashed.filter(first).remove_columns("_h").to_json(out)
    elif op == "mix":
        other = load_dataset(
            "json", data_files=src.replace("chat.jsonl", "other.jsonl"), split="train"
        )
        a = ds.shuffle(seed=0).select(range(n // 2))
        b = other.shuffle(seed=0).select(range(n // 2))
        concatenate_datasets([a, b]).shuffle(seed=0).to_json(out)


# The wrapper, run as `python datasets.py --measure CMD...`: its only child is CMD.
def measure(cmd: list[str]) -> None:
    t = time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    peak = peak_rss_bytes(current(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(
        json.dumps(
            {"rc": rc.returncode, "wall": wall, "rss_mb": peak / 2**20, "err": rc.stderr[-300:]}
        )
    )


def run(cmd: list[str], env: dict) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--measure", *cmd], capture_output=True, text=True, env=env
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if out["rc"] != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out['err']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-hf", action="store_true", help="Only punie and jq.")
    ap.add_argument("--ops", default="validate,filter,dedupe,mix", help="Comma-separated subset.")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="punie-bench-"))
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-cache"), "HF_HUB_OFFLINE": "1"}
    try:
        n = args.rows
        src, other = work / "chat.jsonl", work / "other.jsonl"
        small, small_other = work / "small.jsonl", work / "small-other.jsonl"
        t = time.perf_counter()
        generate(src, n, args.seed)
        generate(other, n, args.seed + 1)
        generate(small, max(n // 10, 1), args.seed)
        generate(small_other, max(n // 10, 1), args.seed + 1)
        size_mb = src.stat().st_size / 1e6
        print(
            f"generated 2 x {n} rows ({size_mb:.0f} MB each) in {time.perf_counter() - t:.0f}s",
            flush=True,
        )

        py, punie = sys.executable, [sys.executable, "-m", "punie", "dataset"]
        jq_select = 'select(all(.messages[]; .role | IN("system","user","assistant","tool")))'
        jq_filter = "select((.messages | length) >= 3 and any(.messages[]; .tool_calls))"
        ops = {
            "validate": {
                "punie": punie + ["validate", str(src)],
                "datasets": [py, __file__, "--hf", "validate", str(src), "-", str(n)],
                "jq": ["jq", "-c", jq_select, str(src)],
                "punie (N/10)": punie + ["validate", str(small)],
            },
            "filter": {
                "punie": punie
                + [
                    "filter",
                    str(src),
                    "-o",
                    str(work / "f.jsonl"),
                    "--min-messages",
                    "3",
                    "--require-tool-calls",
                ],
                "datasets": [
                    py,
                    __file__,
                    "--hf",
                    "filter",
                    str(src),
                    str(work / "hf-f.jsonl"),
                    str(n),
                ],
                "jq": ["jq", "-c", jq_filter, str(src)],
                "punie (N/10)": punie
                + [
                    "filter",
                    str(small),
                    "-o",
                    str(work / "fs.jsonl"),
                    "--min-messages",
                    "3",
                    "--require-tool-calls",
                ],
            },
            "dedupe": {
                "punie": punie + ["dedupe", str(src), "-o", str(work / "d.jsonl"), "--no-near"],
                "punie (N/10)": punie
                + ["dedupe", str(small), "-o", str(work / "ds.jsonl"), "--no-near"],
                "datasets": [
                    py,
                    __file__,
                    "--hf",
                    "dedupe",
                    str(src),
                    str(work / "hf-d.jsonl"),
                    str(n),
                ],
            },
            "mix": {
                "punie": punie
                + [
                    "mix",
                    f"{src}=0.5",
                    f"{other}=0.5",
                    "-o",
                    str(work / "m.jsonl"),
                    "--total",
                    str(n),
                ],
                "punie (N/10)": punie
                + [
                    "mix",
                    f"{small}=0.5",
                    f"{small_other}=0.5",
                    "-o",
                    str(work / "ms.jsonl"),
                    "--total",
                    str(max(n // 10, 1)),
                ],
                "datasets": [
                    py,
                    __file__,
                    "--hf",
                    "mix",
                    str(src),
                    str(work / "hf-m.jsonl"),
                    str(n),
                ],
            },
        }
        print(f"\n{'op':<9} {'tool':<13} {'rows/s':>10} {'wall s':>8} {'peak RSS MB':>12}")
        results: dict = {}
        ops = {op: tools for op, tools in ops.items() if op in args.ops.split(",")}
        for op, tools in ops.items():
            for tool, cmd in tools.items():
                if tool == "datasets" and args.skip_hf:
                    continue
                if tool == "jq" and not shutil.which("jq"):
                    continue
                shutil.rmtree(work / "hf-cache", ignore_errors=True)
                r = run(cmd, env)
                rows = n // 10 if "N/10" in tool else n
                results[(op, tool)] = r
                rate, wall, rss = rows / r["wall"], r["wall"], r["rss_mb"]
                print(f"{op:<9} {tool:<13} {rate:>10,.0f} {wall:>8.1f} {rss:>12.0f}", flush=True)
        print(
            "\npunie vs datasets: throughput ratio, peak memory fraction; punie's own peak at N/10"
        )
        for op in ops:
            p, d = results.get((op, "punie")), results.get((op, "datasets"))
            tenth = results.get((op, "punie (N/10)"))
            line = f"{op:<9}"
            if p and d:
                speed, memory = d["wall"] / p["wall"], p["rss_mb"] / d["rss_mb"]
                line += f" {speed:>5.1f}x the throughput, {memory:.2f} of the peak memory;"
            if p and tenth:
                line += f" {p['rss_mb']:.0f} MB at N vs {tenth['rss_mb']:.0f} MB at N/10"
            print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measure(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--hf":
        hf(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
