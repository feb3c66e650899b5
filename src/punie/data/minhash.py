"""MinHash over word 3-gram shingles, LSH bands chosen for a Jaccard threshold, and exact Jaccard.

A row's shingles are the word 3-grams of its conversation: every turn's text and tool calls, by
default without the system prompt and tool schemas (a long shared system prompt would make rows
that differ in their request look alike). Each shingle is hashed to 64 bits with blake2b; the
signature's permutation p is `min((a_p·h + b_p) mod (2⁶¹−1))` over the shingle hashes, with a_p and
b_p uniform below the prime. The products reach 2¹²², so they are computed in 32-bit halves and
folded with 2⁶¹ ≡ 1 (mod 2⁶¹−1), exactly, in uint64 numpy over shingles × permutations at once
(about 15 times faster than Python integers). Two signatures agree at a permutation with
probability equal to the Jaccard similarity of the two shingle sets.

LSH cuts the signature into b bands of r rows: rows sharing a whole band are candidates, with
probability 1 − (1 − J^r)^b. Nothing is removed on a candidate alone: dedupe ranks candidates by
signature agreement and checks the plausible ones' exact Jaccard. So a false candidate costs a
comparison while a missed one keeps a duplicate, and (b, r) are chosen for recall: a pair right
at the threshold is found 99% of the time (for 0.8, 21 bands of 6), not datasketch's balance of
the two errors (9 bands of 13 for 0.8 and 128 permutations, which finds a pair at 0.8 only 40%
of the time).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache

import numpy as np

from punie.errors import DataError

NUM_PERM = 128
SHINGLE = 3  # words a shingle
PRIME = (1 << 61) - 1
_M = np.uint64(PRIME)
_LO32 = np.uint64(0xFFFFFFFF)
_LO29 = np.uint64((1 << 29) - 1)
# Fixed seed: a signature must mean the same in every run.
_rng = np.random.default_rng(20261126)
_A = _rng.integers(1, PRIME, NUM_PERM, dtype=np.uint64)
_B = _rng.integers(0, PRIME, NUM_PERM, dtype=np.uint64)
_A_HI, _A_LO = (_A >> np.uint64(32))[:, None], (_A & _LO32)[:, None]
_BAND_MIX = _rng.integers(0, 1 << 63, NUM_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
_BAND_SALT = _rng.integers(0, 1 << 63, NUM_PERM, dtype=np.uint64)
# A pair right at the threshold is a candidate this often; pairs above it more often still.
RECALL = 0.99


def check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:  # also refuses NaN
        raise DataError(f"--threshold {threshold}: a Jaccard similarity, from 0 to 1")
    return float(threshold)


def words(row: dict, *, include_system: bool = False) -> list[str]:
    """The row's conversation as lower-cased words: turn texts and tool calls, in order; the
    system prompt and tool schemas only with `include_system`."""
    parts: list[str] = []
    if include_system and row.get("tools"):
        parts.append(_json(row["tools"]))
    for key in ("messages", "text", "prompt", "completion", "chosen", "rejected"):
        value = row.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for m in value:
                if not isinstance(m, dict) or (m.get("role") == "system" and not include_system):
                    continue
                content = m.get("content")
                parts.append(content if isinstance(content, str) else _json(content or ""))
                parts += [_json(tc.get("function", tc)) for tc in m.get("tool_calls") or ()]
    return " ".join(parts).lower().split()


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def shingles(row: dict, *, include_system: bool = False) -> set[str]:
    """The row's word 3-grams (one shingle of all its words when it has fewer than three)."""
    w = words(row, include_system=include_system)
    if len(w) < SHINGLE:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i : i + SHINGLE]) for i in range(len(w) - SHINGLE + 1)}


def hashes(grams: set[str]) -> np.ndarray:
    """64-bit hashes of the shingles, sorted and unique (the form `jaccard` takes)."""
    raw = b"".join(
        hashlib.blake2b(g.encode("utf-8", "surrogatepass"), digest_size=8).digest() for g in grams
    )
    return np.unique(np.frombuffer(raw, dtype="<u8"))


def signature(h: np.ndarray) -> np.ndarray:
    """NUM_PERM minimums of (a·h + b) mod (2⁶¹−1), exact; `h` must not be empty."""
    h = (h % _M)[None, :]
    h_hi, h_lo = h >> np.uint64(32), h & _LO32
    lo = _A_LO * h_lo  # < 2⁶⁴
    mid = _A_HI * h_lo + _A_LO * h_hi  # < 2⁶², weighs 2³² = 2⁶¹/2²⁹
    hi = _A_HI * h_hi  # < 2⁵⁸, weighs 2⁶⁴ ≡ 2³
    s = (lo & _M) + (lo >> np.uint64(61))
    s += (mid >> np.uint64(29)) + ((mid & _LO29) << np.uint64(32)) + (hi << np.uint64(3))
    s = (s & _M) + (s >> np.uint64(61)) + _B[:, None]  # < 2⁶³
    s = (s & _M) + (s >> np.uint64(61))
    s = np.where(s >= _M, s - _M, s)
    return s.min(axis=1)


@dataclass(frozen=True)
class Bands:
    """b bands of r signature values each (b·r ≤ NUM_PERM)."""

    b: int
    r: int

    def p_candidate(self, j: float) -> float:
        return 1 - (1 - j**self.r) ** self.b

    def keys(self, sig: np.ndarray) -> list[int]:
        """One 64-bit key a band: a random linear hash of its values (wrapping mod 2⁶⁴) plus a
        salt for its number. Equal bands give equal keys; a rare equal key for unequal bands only
        adds a candidate, which the exact check then turns down."""
        bands = sig[: self.b * self.r].reshape(self.b, self.r)
        return ((bands * _BAND_MIX[: self.r]).sum(axis=1) + _BAND_SALT[: self.b]).tolist()


@cache
def bands_for(threshold: float, num_perm: int = NUM_PERM) -> Bands:
    """The longest bands (fewest false candidates) that still make a pair right at `threshold` a
    candidate with probability RECALL; the most bands that fit in `num_perm`."""
    for r in range(num_perm, 0, -1):
        bands = Bands(num_perm // r, r)
        if bands.p_candidate(threshold) >= RECALL:
            return bands
    return Bands(num_perm, 1)  # thresholds under ~0.035: the best there is


def packed(sig: np.ndarray) -> bytes:
    """The signature as stored: the low 32 bits of each value, which two different values share
    once in 4 billion."""
    return sig.astype("<u4").tobytes()


def agreement(sig: np.ndarray, stored: list[bytes]) -> np.ndarray:
    """For each `packed` signature, the share of permutations where it equals `sig`: an unbiased
    estimate of the two rows' Jaccard."""
    others = np.frombuffer(b"".join(stored), dtype="<u4").reshape(len(stored), -1)
    return (others == sig.astype("<u4")).mean(axis=1)


def plausible(threshold: float) -> float:
    """The least agreement worth an exact check: 4.5 standard deviations of the estimate below
    `threshold`, so a pair at the threshold falls under it about 3 times in a million."""
    return threshold - 4.5 * (threshold * (1 - threshold) / NUM_PERM) ** 0.5


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted, unique hash arrays."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 1.0
