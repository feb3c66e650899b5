"""Summaries of repeated measurements, shared by the benchmark scripts (run as
`python benchmarks/<script>.py`, so this folder is on their import path)."""

from __future__ import annotations

import random
import statistics


def spread(values: list[float], digits: int = 2) -> str:
    """`median (min-max)`: the middle and the extremes of the rounds, never one lucky run."""
    median, low, high = statistics.median(values), min(values), max(values)
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def throughput_ratio(
    direct: list[float], other: list[float], resamples: int = 4000
) -> tuple[float, float, float]:
    """(direct/other total time, 5th and 95th percentile over rounds resampled with replacement,
    each round's two runs kept together): the same work on both sides, so the ratio of totals is
    the throughput ratio, and the interval says how far the rounds let it be trusted."""
    pairs = list(zip(direct, other, strict=True))
    rng = random.Random(0)
    ratios = []
    for _ in range(resamples):
        drawn = rng.choices(pairs, k=len(pairs))
        ratios.append(sum(d for d, _ in drawn) / sum(o for _, o in drawn))
    ratios.sort()
    return (
        sum(direct) / sum(other),
        ratios[int(0.05 * resamples)],
        ratios[int(0.95 * resamples) - 1],
    )
