"""`punie dataset mix` (sample sources to ratios) and `punie dataset merge` (concatenate, shuffled).

Mix makes two passes. The first counts each source's rows that are not exact duplicates of a row
seen earlier (in any source). Targets are then the asked ratios of `--total` (by default the
largest total every source can fill); a source that runs short gives all it has and its shortfall
is spread over the others by their ratios, and the result says so. The second pass takes each
source's quota by sequential sampling (every row equally likely, no rows held) and interleaves the
sources at random, so the output is a seeded shuffle across sources that keeps each source's order.

Merge keeps every row, adds `source` (the file it came from) and shuffles fully: it remembers one
byte offset per row (16 bytes a row), shuffles those, and reads the rows back by offset.
"""

from __future__ import annotations

import json
import math
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from punie.data.dedupe import exact_hash
from punie.data.formats import DataFile, dataset_files, lines, records
from punie.data.output import Output, open_output
from punie.errors import PunieError


@dataclass(frozen=True)
class Source:
    path: str
    ratio: float


def parse_source(spec: str) -> Source:
    path, sep, ratio = spec.rpartition("=")
    try:
        value = float(ratio)
    except ValueError:
        value = -1.0
    if not sep or not path or not (value > 0 and math.isfinite(value)):
        raise PunieError(
            f"{spec!r}: expected PATH=RATIO with a positive ratio, e.g. chat.jsonl=0.4"
        )
    return Source(path, value)


def allocate(
    available: list[int], ratios: list[float], total: int | None
) -> tuple[list[int], list[str]]:
    """Rows to take from each source, and notes on where the asked ratios could not be met."""
    weights = [r / sum(ratios) for r in ratios]
    notes: list[str] = []
    if total is None:
        total = min(math.floor(a / w) for a, w in zip(available, weights, strict=True))
    if total > sum(available):
        notes.append(f"asked for {total} rows but the sources have {sum(available)}; took all")
        total = sum(available)
    take = [0] * len(available)
    active = set(range(len(available)))
    remaining = total
    while True:
        share = sum(weights[i] for i in active)
        short = [i for i in active if remaining * weights[i] / share > available[i]]
        if not short:
            break
        for i in short:
            notes.append(
                f"source {i + 1} ran short: it has {available[i]} unique rows of the "
                f"{remaining * weights[i] / share:.0f} its ratio asks for; the rest went to the "
                "other sources by their ratios"
            )
        for i in short:
            take[i] = available[i]
            remaining -= available[i]
            active.discard(i)
    if active:
        share = sum(weights[i] for i in active)
        exact = {i: remaining * weights[i] / share for i in active}
        for i in active:
            take[i] = math.floor(exact[i])
        # Largest remainders get the leftover rows, lowest index first on ties: deterministic.
        left = remaining - sum(take[i] for i in active)
        for i in sorted(active, key=lambda i: (take[i] - exact[i], i))[:left]:
            take[i] += 1
    return take, notes


def mix(
    sources: list[Source], out: Path | str, *, total: int | None = None, seed: int = 0
) -> Output:
    if not sources:
        raise PunieError("give at least one PATH=RATIO source")
    files = [dataset_files(s.path) for s in sources]
    # Pass 1: unique rows per source; duplicates are remembered by location (few, we hope).
    seen: set[int] = set()
    dupes: set[tuple[int, str, int]] = set()
    available = []
    for i, fs in enumerate(files):
        n = 0
        for rec in records(fs):
            h = exact_hash(rec.row)
            if h in seen:
                dupes.add((i, rec.path, rec.line))
            else:
                seen.add(h)
                n += 1
        available.append(n)
    del seen
    take, notes = allocate(available, [s.ratio for s in sources], total)
    rng = random.Random(seed)
    streams = [
        _sample(i, fs, dupes, available[i], take[i], random.Random(f"{seed}:{i}"))
        for i, fs in enumerate(files)
    ]
    inputs = [f for fs in files for f in fs]
    with open_output(out, None, inputs=inputs, seed=seed) as o:
        remaining = list(take)
        while any(remaining):
            i = _pick(remaining, rng)
            o.sink.write(next(streams[i]))
            remaining[i] -= 1
        want = [s.ratio / sum(x.ratio for x in sources) for s in sources]
        o.counts.update(
            {
                "total": o.sink.rows,
                "duplicates_dropped": len(dupes),
                "notes": notes,
                "sources": [
                    {
                        "path": s.path,
                        "ratio": round(want[i], 6),
                        "target": round(want[i] * o.sink.rows) if o.sink.rows else 0,
                        "actual": take[i],
                        "actual_ratio": round(take[i] / o.sink.rows, 6) if o.sink.rows else 0,
                        "available": available[i],
                    }
                    for i, s in enumerate(sources)
                ],
            }
        )
    return o


def _pick(remaining: list[int], rng: random.Random) -> int:
    """A source index, with probability proportional to the rows it still has to give."""
    r = rng.randrange(sum(remaining))
    for i, left in enumerate(remaining):
        if r < left:
            return i
        r -= left
    raise AssertionError("nothing remaining")


def _sample(
    i: int, files: list[DataFile], dupes: set, n: int, k: int, rng: random.Random
) -> Iterator[bytes]:
    """k of the source's n unique rows, each equally likely (Knuth's selection sampling).

    Pass 1 already checked every row, so this pass only reads lines: no JSON is parsed twice."""
    for df in files:
        path = str(df.path)
        for line, raw in lines(df.path):
            if k == 0:
                return
            if (i, path, line) in dupes:
                continue
            if rng.randrange(n) < k:
                k -= 1
                yield raw
            n -= 1


def merge(paths: list[Path | str], out: Path | str, *, seed: int = 0) -> Output:
    """All rows of `paths`, each with its `source`, in a seeded shuffle. Folders in, folder out."""
    if not paths:
        raise PunieError("give at least one input to merge")
    folders = all(Path(p).is_dir() for p in paths)
    files = [f for p in paths for f in dataset_files(p)]
    # Pass 1: check every row and remember where it starts (records raises on any bad line, so
    # every line is a row and offsets add up).
    offsets: dict[str, array] = {}
    for fi, df in enumerate(files):
        pos = 0
        locs = offsets.setdefault(df.split if folders else "", array("q"))
        for rec in records([df]):
            locs.extend((fi, pos))
            pos += len(rec.raw)
    splits = tuple(s for s in ("train", "valid", "test") if s in offsets) if folders else None
    handles = [open(df.path, "rb") for df in files]  # noqa: SIM115 - closed in finally
    try:
        with open_output(out, splits, inputs=files, seed=seed) as o:
            for split, locs in offsets.items():
                order = np.frombuffer(locs, dtype=np.int64).reshape(-1, 2).copy()
                np.random.default_rng(seed).shuffle(order)
                sink = o.sinks[split]
                for fi, pos in order.tolist():
                    f = handles[fi]
                    f.seek(pos)
                    row = json.loads(f.readline())
                    row["source"] = str(files[fi].path)
                    sink.write_row(row)
            o.counts.update({"rows": {s: len(v) // 2 for s, v in offsets.items()}})
    finally:
        for f in handles:
            f.close()
    return o
