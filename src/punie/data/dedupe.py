"""`punie dataset dedupe`: exact duplicates by normalized content hash, near ones by MinHash.

Exact: a row's content (lower-cased, whitespace collapsed, keys sorted, `source`/`id` ignored) is
hashed to 64 bits. Near: word 3-gram shingles of the row's text and tool calls make a 64-value
MinHash signature, cut into 8 bands of 8; two rows sharing a band are near duplicates, which
catches pairs above about 0.8 Jaccard similarity (and few below 0.6).

Several inputs are deduped as one: folders pool their splits, files pool into one file. Splits are
read test, valid, train, and the first copy is kept: a training row that repeats an eval row is the
one removed. The hashes and band keys seen so far live in a temporary SQLite file
(`punie.data.seen`), so memory stays flat as the input grows.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from punie.data import jsonfile
from punie.data.formats import Record, content_key, texts, tool_calls
from punie.data.pipeline import keep_rows
from punie.data.seen import FirstSeen

ORDER = ("test", "valid", "train", "")
_PERM, _BANDS = 64, 8
_PRIME = np.uint64((1 << 61) - 1)
_rng = np.random.default_rng(1)  # fixed: signatures must mean the same in every run
_A = _rng.integers(1, 1 << 31, _PERM, dtype=np.uint64)
_B = _rng.integers(0, 1 << 31, _PERM, dtype=np.uint64)
_MIX = _rng.integers(1, 1 << 63, _PERM // _BANDS, dtype=np.uint64)


def exact_hash(row: dict) -> int:
    return int.from_bytes(hashlib.blake2b(content_key(row), digest_size=8).digest(), "big")


def shingles(row: dict, n: int = 3) -> np.ndarray:
    words = " ".join(texts(row)).lower().split()
    words += [json.dumps(fn, sort_keys=True) for _, fn in tool_calls(row)]
    grams = {" ".join(words[i : i + n]) for i in range(max(len(words) - n + 1, 1))}
    return np.fromiter((zlib.crc32(g.encode()) for g in grams), np.uint64, len(grams))


def band_keys(row: dict) -> list[int]:
    """The row's LSH band hashes: equal in any band means near duplicate."""
    h = shingles(row)
    sig = ((_A[:, None] * h[None, :] + _B[:, None]) % _PRIME).min(axis=1)
    bands = (sig.reshape(_BANDS, -1) * _MIX).sum(axis=1)  # wraps mod 2**64: a polynomial hash
    return [int(b) for b in bands]


class Seen:
    """Says which earlier row a row repeats, remembering exact hashes and band keys on disk."""

    def __init__(self, near: bool = True):
        self._exact = FirstSeen()
        self._bands = FirstSeen() if near else None
        self._where: list[str] = []

    def __enter__(self) -> Seen:
        return self

    def __exit__(self, *exc: object) -> None:
        self._exact.close()
        if self._bands is not None:
            self._bands.close()

    def check(self, rec: Record) -> str | None:
        """None when new (and remember it), else the reason it is a duplicate."""
        key, at = exact_hash(rec.row), self._pack(rec)
        if self._bands is None:
            first = self._exact.first(key, at)
            return None if first is None else f"exact duplicate: of {self._loc(first)}"
        # A near duplicate is not remembered, so look before adding the exact hash.
        first = self._exact.get(key)
        if first is not None:
            return f"exact duplicate: of {self._loc(first)}"
        # Band keys are salted with their band's number: equal keys in different bands mean
        # nothing.
        first = self._bands.first_of([b ^ i for i, b in enumerate(band_keys(rec.row))], at)
        if first is not None:
            return f"near duplicate: of {self._loc(first)}"
        self._exact.first(key, at)
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
    rejects: Path | str | None = None,
    skip_invalid: bool = False,
):
    with Seen(near=near) as seen:
        return keep_rows(
            path, out, seen.check, rejects=rejects, skip_invalid=skip_invalid, order=ORDER
        )
