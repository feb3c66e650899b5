"""`punie dataset dedupe`: exact duplicates by normalized content hash, near ones by MinHash.

Exact: a row's content (lower-cased, whitespace collapsed, keys sorted, `source`/`id` ignored) is
hashed to 64 bits. Near (`punie.data.minhash`): the word 3-gram shingles of the row's conversation
(without system prompt and tool schemas unless `include_system`) make a MinHash signature whose
LSH bands find candidates among the rows kept so far; a row is removed only when its exact
Jaccard similarity with a candidate reaches the threshold, and its reject says which row and
what Jaccard.

Several inputs are deduped as one: folders pool their splits, files pool into one file. Splits are
read test, valid, train, and the first copy is kept: a training row that repeats an eval row is the
one removed. The hashes, band keys, signatures and shingles of the kept rows live in temporary
SQLite files (`punie.data.seen`), so memory stays flat as the input grows; a band's bucket holds
at most `seen.BUCKET` rows, so the work per row does too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from punie.data import jsonfile, minhash
from punie.data.files import Record
from punie.data.pipeline import keep_rows
from punie.data.rows import content_key
from punie.data.seen import Buckets, FirstSeen

ORDER = ("test", "valid", "train", "")
THRESHOLD = 0.8


def exact_hash(row: dict) -> int:
    return int.from_bytes(hashlib.blake2b(content_key(row), digest_size=8).digest(), "big")


class Seen:
    """Says which earlier row a row repeats, remembering what it needs of the kept rows on disk."""

    def __init__(
        self, near: bool = True, threshold: float = THRESHOLD, include_system: bool = False
    ):
        self._threshold = minhash.check_threshold(threshold)
        self._bands = minhash.bands_for(self._threshold)
        self._cutoff = minhash.plausible(self._threshold)
        self._include_system = include_system
        self._exact = FirstSeen()
        self._buckets = Buckets() if near else None
        self._where: list[str] = []
        # Kept rows left out of a full bucket in some band: a later near duplicate of one is
        # found only through its other bands.
        self.crowded = 0

    def __enter__(self) -> Seen:
        return self

    def __exit__(self, *exc: object) -> None:
        self._exact.close()
        if self._buckets is not None:
            self._buckets.close()

    def check(self, rec: Record) -> str | None:
        """None when new (and remember it), else the reason it is a duplicate."""
        key, at = exact_hash(rec.row), self._pack(rec)
        if self._buckets is None:
            first = self._exact.first(key, at)
            return None if first is None else f"exact duplicate: of {self._loc(first)}"
        # A near duplicate is not remembered, so look before adding the exact hash.
        first = self._exact.get(key)
        if first is not None:
            return f"exact duplicate: of {self._loc(first)}"
        grams = minhash.shingles(rec.row, include_system=self._include_system)
        if grams:  # a row with no words to compare is never a near duplicate
            hashes = minhash.hashes(grams)
            sig = minhash.signature(hashes)
            keys = self._bands.keys(sig)
            match = self._match(hashes, sig, keys)
            if match is not None:
                kept, j = match
                return f"near duplicate: of {self._loc(kept)}, Jaccard {j:.3f}"
            self.crowded += self._buckets.add(at, keys, minhash.packed(sig), hashes.tobytes()) > 0
        self._exact.first(key, at)
        return None

    def report(self, counts: dict) -> None:
        counts["near"] = {
            "threshold": self._threshold,
            "include_system": self._include_system,
            "bands": self._bands.b,
            "rows_per_band": self._bands.r,
            "crowded": self.crowded,
        }

    def _match(self, hashes: np.ndarray, sig: np.ndarray, keys: list[int]):
        """(kept row, exact Jaccard) of a kept row at least the threshold, or None. The band
        candidates are ranked by signature agreement and only plausible ones checked exactly:
        templated rows sharing bands by the thousand would otherwise each cost a comparison."""
        assert self._buckets is not None
        found = self._buckets.candidates(keys)
        if not found:
            return None
        est = minhash.agreement(sig, [s for _, s in found])
        likely = [(-e, kept) for e, (kept, _) in zip(est, found, strict=True) if e >= self._cutoff]
        for _, kept in sorted(likely):
            j = minhash.jaccard(hashes, np.frombuffer(self._buckets.shingles(kept), dtype="<u8"))
            if j >= self._threshold:
                return kept, j
        return None

    def _pack(self, rec: Record) -> int:
        if not self._where or self._where[-1] != rec.path:
            self._where.append(rec.path)
        return (len(self._where) - 1) << 40 | rec.line

    def _loc(self, packed: int) -> str:
        path = self._where[packed >> 40]
        return f"{path}:{jsonfile.place(path, packed & ((1 << 40) - 1))}"


def dedupe_dataset(
    path: Path | str | Sequence[Path | str],
    out: Path | str,
    *,
    near: bool = True,
    threshold: float = THRESHOLD,
    include_system: bool = False,
    rejects: Path | str | None = None,
    skip_invalid: bool = False,
):
    """Write `path`'s rows less exact duplicates and (with `near`) rows whose shingle Jaccard
    with an earlier kept row is at least `threshold`."""
    with Seen(near=near, threshold=threshold, include_system=include_system) as seen:
        return keep_rows(
            path,
            out,
            seen.check,
            rejects=rejects,
            skip_invalid=skip_invalid,
            order=ORDER,
            finish=seen.report if near else None,
        )
