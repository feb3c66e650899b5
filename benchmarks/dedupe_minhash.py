"""Near-dedupe: Punie against datasketch's MinHashLSH on the same rows, shingles and threshold.

    uv sync --group bench          # datasketch (not installed by default)
    .venv/bin/python benchmarks/dedupe_minhash.py --rows 20000

Generates N chat rows in clusters: a base of 40 to 80 random words (from 50,000; a fifth start with
the same phrase "i would like to know the") and variants with 1 to 10 words replaced, so that the
Jaccard similarities inside a cluster run from about 0.4 to 0.97 and those across clusters stay
near 0 (checked on a sample). Each tool dedupes the rows in order, keeping the first of each near
group, at the same threshold, with 128 permutations and Punie's shingles (word 3-grams of the
conversation):

- punie: `dedupe_dataset` on the file (reading, exact hashes and writing included; timed again
  with `near=False` to show that part);
- datasketch, its default bands for the threshold; and datasketch with Punie's bands. Each reads
  the file, shingles with Punie's function, and removes a row when `query` returns any kept row
  (a candidate is taken as a duplicate: MinHashLSH has no exact check), else inserts it.

Each tool's decisions are judged against exact Jaccard, within its own kept rows: a removal is
right when an earlier kept row is at least the threshold; a miss is a kept row that has one.
Timings alternate the three, `--rounds` times, and give the median and the spread of wall and CPU
time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rounds import spread

VOCAB = 50_000
PHRASE = "I would like to know the"
# What punie's time includes and datasketch's does not: reading and checking rows, exact hashes,
# writing the output and its manifest.
EXACT = "punie --no-near (its reading, checking, exact hashes, writing)"


def generate(n: int, seed: int) -> tuple[list[dict], list[int]]:
    """Rows in a shuffled order, and each row's cluster."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(VOCAB)]
    bases = []
    for _ in range(int(n * 0.4)):
        words = rng.choices(vocab, k=rng.randrange(40, 81))
        if rng.random() < 0.2:
            words[:6] = PHRASE.split()
        bases.append(words)
    rows = [(i, b) for i, b in enumerate(bases)]
    while len(rows) < n:
        c = rng.randrange(len(bases))
        v = list(bases[c])
        for i in rng.sample(range(len(v)), rng.randrange(1, 11)):
            v[i] = rng.choice(vocab)
        rows.append((c, v))
    rng.shuffle(rows)
    reply = "Here is what I found."
    return [
        {
            "messages": [
                {"role": "user", "content": " ".join(w)},
                {"role": "assistant", "content": reply},
            ]
        }
        for _, w in rows
    ], [c for c, _ in rows]


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def judge(removed: list[bool], grams: list[set], cluster: list[int], t: float) -> dict:
    """Best exact Jaccard of each row with an earlier row the tool kept (same cluster)."""
    kept_in: dict[int, list[int]] = {}
    out = {"right": 0, "wrong": 0, "missed": 0, "best": []}
    for i, gone in enumerate(removed):
        best = max((jaccard(grams[i], grams[k]) for k in kept_in.get(cluster[i], ())), default=0)
        out["best"].append(best)
        if gone:
            out["right" if best >= t else "wrong"] += 1
        else:
            out["missed"] += best >= t
            kept_in.setdefault(cluster[i], []).append(i)
    removals = out["right"] + out["wrong"]
    out["precision"] = out["right"] / removals if removals else 1.0
    out["recall"] = out["right"] / (out["right"] + out["missed"] or 1)
    return out


def run_punie(src: Path, out: Path, t: float) -> list[bool]:
    from punie.data.dedupe import dedupe_dataset

    rejects = out.with_suffix(".rejects.jsonl")
    dedupe_dataset(src, out, threshold=t, rejects=rejects)
    lines = set()
    with open(rejects) as f:
        for line in f:
            where = json.loads(line)["reason"].split(": ", 1)[0]
            lines.add(int(where.rsplit(":", 1)[1]))
    return [i + 1 in lines for i in range(sum(1 for _ in open(src)))]


def run_exact(src: Path, out: Path) -> list[bool]:
    from punie.data.dedupe import dedupe_dataset

    dedupe_dataset(src, out, near=False)
    return []


def run_datasketch(src: Path, t: float, params: tuple[int, int] | None) -> list[bool]:
    from datasketch import MinHash, MinHashLSH

    from punie.data.minhash import NUM_PERM, shingles

    lsh = MinHashLSH(threshold=t, num_perm=NUM_PERM, params=params)
    removed = []
    with open(src) as f:
        for i, line in enumerate(f):
            m = MinHash(num_perm=NUM_PERM)
            m.update_batch([g.encode() for g in shingles(json.loads(line))])
            if lsh.query(m):
                removed.append(True)
            else:
                lsh.insert(i, m)
                removed.append(False)
    return removed


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w, time.process_time() - c, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t = args.threshold

    import datasketch  # noqa: F401  (imported here, not inside the first timed run)

    from punie.data.minhash import bands_for, shingles

    rows, cluster = generate(args.rows, args.seed)
    grams = [shingles(r) for r in rows]
    rng = random.Random(1)
    cross = max(
        jaccard(grams[a], grams[b])
        for a, b in (rng.sample(range(len(rows)), 2) for _ in range(20_000))
        if cluster[a] != cluster[b]
    )
    truth_pairs = sum(
        jaccard(grams[a], grams[b]) >= t
        for c in _members(cluster).values()
        for i, a in enumerate(c)
        for b in c[:i]
    )
    pb = bands_for(t)
    tools: dict[str, Callable[[], list[bool]]]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "rows.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tools = {
            f"punie (bands {pb.b}x{pb.r}, exact check)": lambda: run_punie(
                src, Path(tmp) / "out.jsonl", t
            ),
            "datasketch (its bands)": lambda: run_datasketch(src, t, None),
            f"datasketch (bands {pb.b}x{pb.r})": lambda: run_datasketch(src, t, (pb.b, pb.r)),
            EXACT: lambda: run_exact(src, Path(tmp) / "exact.jsonl"),
        }
        walls: dict[str, list[float]] = {k: [] for k in tools}
        cpus: dict[str, list[float]] = {k: [] for k in tools}
        removed: dict[str, list[bool]] = {}
        for _ in range(args.rounds):
            for name, fn in tools.items():
                w, c, r = timed(fn)
                walls[name].append(w)
                cpus[name].append(c)
                removed[name] = r

    from datasketch import MinHashLSH

    ds = MinHashLSH(threshold=t, num_perm=128)
    print(
        f"{args.rows} rows, threshold {t}, 128 permutations; {truth_pairs} planted pairs at or "
        f"above it; largest cross-cluster Jaccard in 20,000 sampled pairs {cross:.3f}; "
        f"datasketch's own bands {ds.b}x{ds.r}; load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| tool | removed | right | wrong | missed | precision | recall | wall s | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    verdicts = {}
    for name in tools:
        if name == EXACT:
            cells = "| — " * 6
            print(f"| {name} {cells}| {spread(walls[name])} | {spread(cpus[name])} |")
            continue
        v = verdicts[name] = judge(removed[name], grams, cluster, t)
        print(
            f"| {name} | {v['right'] + v['wrong']} | {v['right']} | {v['wrong']} | {v['missed']} "
            f"| {v['precision']:.4f} | {v['recall']:.4f} | {spread(walls[name])} "
            f"| {spread(cpus[name])} |"
        )
    print("\nShare of rows removed, by their best exact Jaccard with an earlier kept row:\n")
    bins = [0, 0.3, 0.5, 0.6, 0.7, t - 0.05, t, t + 0.05, 0.9, 1.01]
    judged = [n for n in tools if n != EXACT]
    print("| Jaccard | " + " | ".join(judged) + " |")
    print("|---" * (len(judged) + 1) + "|")
    for lo, hi in zip(bins, bins[1:], strict=False):
        cells = []
        for name in judged:
            hit = [
                g
                for g, b in zip(removed[name], verdicts[name]["best"], strict=True)
                if lo <= b < hi
            ]
            cells.append(f"{sum(hit) / len(hit):.3f} of {len(hit)}" if hit else "—")
        print(
            f"| [{lo:.2f}, {min(hi, 1):.2f}{')' if hi <= 1 else ']'} | " + " | ".join(cells) + " |"
        )
    names = list(tools)
    a, b = ({i for i, r in enumerate(removed[n]) if r} for n in names[:2])
    c = {i for i, r in enumerate(removed[names[2]]) if r}
    print(
        f"\nOverlap of removed rows: punie and datasketch (its bands) {len(a & b)}, punie only "
        f"{len(a - b)}, datasketch only {len(b - a)}; punie and datasketch (same bands) "
        f"{len(a & c)}, punie only {len(a - c)}, datasketch only {len(c - a)}."
    )


def _members(cluster: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, c in enumerate(cluster):
        out.setdefault(c, []).append(i)
    return out


if __name__ == "__main__":
    main()
