"""Intervals and paired tests for small suites, where a score without an interval misleads."""

from __future__ import annotations

import math


def wilson(passed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a pass rate (95% by default)."""
    if total == 0:
        return (0.0, 1.0)
    p = passed / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (A only) and c (B only)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021) from n samples of which c passed: 1 - C(n-c,k)/C(n,k).

    Computed as a product, which stays exact where the binomials overflow a float.
    """
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def newcombe_delta(p1: int, n1: int, p2: int, n2: int, z: float = 1.96) -> tuple[float, float]:
    """A 95% interval for the difference of two rates (p2/n2 - p1/n1), Newcombe's hybrid Wilson.

    It treats the two runs as independent, which is conservative when they share cases.
    """
    r1, r2 = (p1 / n1 if n1 else 0.0), (p2 / n2 if n2 else 0.0)
    l1, u1 = wilson(p1, n1, z)
    l2, u2 = wilson(p2, n2, z)
    d = r2 - r1
    return (
        d - math.sqrt((r2 - l2) ** 2 + (u1 - r1) ** 2),
        d + math.sqrt((u2 - r2) ** 2 + (r1 - l1) ** 2),
    )
