"""`punie dataset mix` (sample sources to ratios) and `punie dataset merge` (concatenate, shuffled).

Mix makes two passes. The first counts each source's rows that are not exact duplicates of a row
seen earlier (in any source); the hashes, and the places of the repeats, go to a temporary SQLite
file (`punie.data.seen`), not memory. Targets are then the asked ratios of `--total` (by default the
largest total every source can fill); a source that runs short gives all it has and its shortfall
is spread over the others by their ratios, and the result says so. The second pass takes each
source's quota by sequential sampling (every row equally likely, no rows held) and interleaves the
sources at random, so the output is a seeded shuffle across sources that keeps each source's order.

Merge keeps every row, adds `source` (the file it came from) and shuffles fully, through
temporary bucket files rather than memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from punie.data.checks import at_least
from punie.data.dedupe import exact_hash
from punie.data.files import SPLITS, DataFile, dataset_files, lines, records
from punie.data.output import Output, open_output
from punie.data.seen import FirstSeen
from punie.errors import DataError

# A source's share of the mix is at least this: less would not give it one row in a billion, so
# ratios that far apart are a slip (1e308 next to 1), not a mix.
MIN_SHARE = 1e-9
BUCKET_BYTES = 16 << 20  # merge holds one bucket at a time
MAX_BUCKETS = 512  # open files; past 8 GB of input, buckets grow instead


@dataclass(frozen=True)
class Source:
    path: str
    ratio: float

    def __post_init__(self) -> None:
        ratio = self.ratio
        if not (isinstance(ratio, int | float) and ratio > 0 and math.isfinite(ratio)):
            raise DataError(f"{self.path}={ratio}: a ratio must be a positive, finite number")


def parse_source(spec: str) -> Source:
    path, sep, ratio = spec.rpartition("=")
    try:
        value = float(ratio)
    except ValueError:
        value = -1.0
    if not sep or not path or not (value > 0 and math.isfinite(value)):
        raise DataError(f"{spec!r}: expected PATH=RATIO with a positive ratio, e.g. chat.jsonl=0.4")
    return Source(path, value)


def shares(ratios: list[float]) -> list[float]:
    """Each ratio over their sum, scaled by the largest first so that no sum overflows."""
    top = max(ratios)
    scaled = [r / top for r in ratios]
    return [r / sum(scaled) for r in scaled]


def allocate(
    available: list[int], ratios: list[float], total: int | None
) -> tuple[list[int], list[str]]:
    """Rows to take from each source, and notes on where the asked ratios could not be met."""
    weights = shares(ratios)
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
        raise DataError("give at least one PATH=RATIO source")
    at_least("--total", total, 1)
    for s, w in zip(sources, shares([s.ratio for s in sources]), strict=True):
        if w < MIN_SHARE:
            raise DataError(
                f"{s.path}={s.ratio}: a share of {w:.3g}, under one row in a billion; ratios are "
                "relative (a.jsonl=0.7 b.jsonl=0.3), so keep them within a billion of each other"
            )
    files = [dataset_files(s.path) for s in sources]
    _each_file_once(sources, files)
    with FirstSeen() as seen:
        available, repeats = _count_unique(files, seen)
        take, notes = allocate(available, [s.ratio for s in sources], total)
        rng = random.Random(seed)
        streams = [
            _sample(_numbered(files, i), seen, available[i], take[i], random.Random(f"{seed}:{i}"))
            for i in range(len(files))
        ]
        inputs = [f for fs in files for f in fs]
        with open_output(out, None, inputs=inputs, seed=seed) as o:
            remaining = list(take)
            while any(remaining):
                i = _pick(remaining, rng)
                o.sink.write(next(streams[i]))
                remaining[i] -= 1
            rows = o.sink.rows
            want = shares([s.ratio for s in sources])
            per_source = [
                {
                    "path": s.path,
                    "ratio": round(want[i], 6),
                    "target": round(want[i] * rows) if rows else 0,
                    "actual": take[i],
                    "actual_ratio": round(take[i] / rows, 6) if rows else 0,
                    "available": available[i],
                }
                for i, s in enumerate(sources)
            ]
            o.counts.update(total=rows, duplicates_dropped=repeats, notes=notes, sources=per_source)
    return o


def _each_file_once(sources: list[Source], files: list[list[DataFile]]) -> None:
    """A file named by two sources would give all its rows to the first and none to the second."""
    named: dict[Path, str] = {}
    for s, fs in zip(sources, files, strict=True):
        for df in fs:
            key = df.path.resolve()
            if key in named:
                raise DataError(
                    f"{df.path}: named by two sources ({named[key]} and {s.path}); "
                    "give each file once, with its whole ratio"
                )
            named[key] = s.path


def _count_unique(files: list[list[DataFile]], seen: FirstSeen) -> tuple[list[int], int]:
    """Pass 1: each source's rows that repeat no earlier row, and how many repeats there were.
    Each repeat's place (file number << 40 | line) goes into `seen`, so pass 2 can skip it
    without parsing again."""
    available, repeats = [], 0
    for i in range(len(files)):
        n = 0
        for number, df in _numbered(files, i):
            for rec in records([df]):
                at = number << 40 | rec.line
                if seen.first(exact_hash(rec.row), at) is None:
                    n += 1
                else:
                    seen.repeat(at)
                    repeats += 1
        available.append(n)
    return available, repeats


def _pick(remaining: list[int], rng: random.Random) -> int:
    """A source index, with probability proportional to the rows it still has to give."""
    r = rng.randrange(sum(remaining))
    for i, left in enumerate(remaining):
        if r < left:
            return i
        r -= left
    raise AssertionError("nothing remaining")


def _numbered(files: list[list[DataFile]], i: int) -> list[tuple[int, DataFile]]:
    """Source i's files, each with its number among all sources' files."""
    start = sum(len(fs) for fs in files[:i])
    return list(enumerate(files[i], start))


def _sample(
    files: list[tuple[int, DataFile]], seen: FirstSeen, n: int, k: int, rng: random.Random
) -> Iterator[bytes]:
    """k of the source's n unique rows, each equally likely (Knuth's selection sampling).

    Pass 1 already checked every row and noted the repeats, so this pass only reads lines: no
    JSON is parsed twice."""
    for number, df in files:
        skip = seen.repeats(number << 40, (number + 1) << 40)
        next_skip = next(skip, None)
        for line, raw in lines(df.path, arrays=not df.split):
            if k == 0:
                return
            if line == next_skip:
                next_skip = next(skip, None)
                continue
            if rng.randrange(n) < k:
                k -= 1
                yield raw
            n -= 1


def merge(paths: list[Path | str], out: Path | str, *, seed: int = 0) -> Output:
    """All rows of `paths`, each with its `source`, in a seeded shuffle. Folders in, folder out.

    The shuffle is external, so memory stays flat: pass 1 checks every row and appends it to one
    of k temporary bucket files chosen at random; pass 2 shuffles each bucket in memory and writes
    the buckets in order. Random buckets, each shuffled, make every order equally likely. k is
    the input size over `BUCKET_BYTES` (at most `MAX_BUCKETS` open files), so each bucket fits
    in memory however large the input."""
    if not paths:
        raise DataError("give at least one input to merge")
    folders = all(Path(p).is_dir() for p in paths)
    files = [f for p in paths for f in dataset_files(p)]
    size = sum(f.path.stat().st_size for f in files)
    k = min(max(1, math.ceil(size / BUCKET_BYTES)), MAX_BUCKETS)
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="punie-merge-") as tmp:
        with contextlib.ExitStack() as stack:
            buckets: dict[str, list[IO[bytes]]] = {}
            for rec in records(files):
                split = rec.split if folders else ""
                if split not in buckets:
                    buckets[split] = [
                        stack.enter_context(open(Path(tmp) / f"{split or 'rows'}.{b}", "wb"))
                        for b in range(k)
                    ]
                rec.row["source"] = rec.path
                line = json.dumps(rec.row, ensure_ascii=False).encode() + b"\n"
                buckets[split][rng.randrange(k)].write(line)
                counts[split] += 1
        splits = tuple(s for s in SPLITS if s in buckets) if folders else None
        with open_output(out, splits, inputs=files, seed=seed) as o:
            for split in counts:
                for b in range(k):
                    rows = (Path(tmp) / f"{split or 'rows'}.{b}").read_bytes().splitlines(True)
                    random.Random(f"{seed}:{split}:{b}").shuffle(rows)
                    for row in rows:
                        o.sinks[split].write(row)
            o.counts.update({"rows": dict(counts)})
    return o
