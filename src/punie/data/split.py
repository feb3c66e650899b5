"""`punie dataset split`: train/valid/test by exact counts, keeping groups whole.

Two passes over the input, never holding rows. Without `--group-by`, each row picks its split by
sequential sampling (each split's remaining quota over the rows remaining), which hits the asked
counts exactly and needs no memory. With `--group-by FIELD`, the first pass counts rows per group,
groups are shuffled with the seed and dealt to test, then valid, until each has its share; the
second pass sends each row where its group went, so no group lands in two splits. `--stratify
FIELD` does the same within each value of FIELD, so every split has the same mix.

Rows keep their input order within a split (mlx_lm shuffles batches itself).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from punie.data.files import Record, dataset_files, records
from punie.data.filters import _field
from punie.data.output import Output, open_output
from punie.errors import DataError

SPLIT_NAMES = ("train", "valid", "test")


def _key(rec: Record, field: str | None) -> str:
    if field is None:
        return ""
    value = _field(rec.row, field)
    if value is None:
        raise DataError(f"{rec.path}:{rec.line}: {field}: missing (needed to split by it)")
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def split_dataset(
    path: Path | str,
    out: Path | str,
    *,
    valid: float = 0.1,
    test: float = 0.1,
    group_by: str | None = None,
    stratify: str | None = None,
    seed: int = 0,
) -> Output:
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise DataError(f"--valid {valid} and --test {test}: each in [0, 1), summing below 1")
    files = dataset_files(path)
    rng = random.Random(seed)
    # Pass 1: rows per (stratum, group); a group's stratum is that of its first row.
    groups: dict[str, Counter[str]] = {}
    stratum_of: dict[str, str] = {}
    for rec in records(files):
        g = _key(rec, group_by) if group_by else None
        s = stratum_of.setdefault(g, _key(rec, stratify)) if g is not None else _key(rec, stratify)
        groups.setdefault(s, Counter())[g if g is not None else ""] += 1
    warnings = _stratify_warnings(groups, stratify)
    if group_by:
        where = _deal_groups(groups, valid, test, rng)
    else:
        quota = {s: _quota(sum(c.values()), valid, test) for s, c in groups.items()}
    with open_output(out, SPLIT_NAMES, inputs=files, seed=seed) as o:
        for rec in records(files):
            if group_by:
                name = where[_key(rec, group_by)]
            else:
                name = _draw(quota[_key(rec, stratify)], rng)
            o.sinks[name].write(rec.raw)
        o.counts.update({s: o.sinks[s].rows for s in SPLIT_NAMES})
        o.counts["groups"] = sum(len(c) for c in groups.values()) if group_by else None
        o.counts["strata"] = len(groups) if stratify else None
        o.counts["warnings"] = warnings
    return o


def _stratify_warnings(strata: dict[str, Counter[str]], stratify: str | None) -> list[str]:
    """A field with about as many values as rows (an id, the text itself) cannot stratify: a
    stratum of one row gets round(0.1) = 0 valid and test rows, so nearly all go to train."""
    rows = sum(sum(c.values()) for c in strata.values())
    if not stratify or rows < 2 or 2 * len(strata) <= rows:
        return []
    return [
        f"--stratify {stratify}: {len(strata)} values for {rows} rows; strata this small cannot "
        "be split, so most rows go to train (stratify by a field with few values, such as a "
        "category)"
    ]


def _quota(n: int, valid: float, test: float) -> dict[str, int]:
    n_test, n_valid = round(n * test), round(n * valid)
    return {"train": n - n_test - n_valid, "valid": n_valid, "test": n_test}


def _draw(quota: dict[str, int], rng: random.Random) -> str:
    """Pick a split with probability proportional to its remaining quota, and spend it."""
    r = rng.randrange(sum(quota.values()))
    for name in SPLIT_NAMES:
        if r < quota[name]:
            quota[name] -= 1
            return name
        r -= quota[name]
    raise AssertionError("quota exhausted")


def _deal_groups(
    strata: dict[str, Counter[str]], valid: float, test: float, rng: random.Random
) -> dict[str, str]:
    where: dict[str, str] = {}
    for stratum in sorted(strata):
        sizes = strata[stratum]
        names = sorted(sizes)
        rng.shuffle(names)
        target = _quota(sum(sizes.values()), valid, test)
        filled = Counter()
        for g in names:
            # Fill test, then valid, to their row targets; a group that would overshoot by more
            # than it helps goes on to the next split.
            for split in ("test", "valid"):
                need = target[split] - filled[split]
                if need > 0 and sizes[g] <= 2 * need:
                    break
            else:
                split = "train"
            where[g] = split
            filled[split] += sizes[g]
    return where
