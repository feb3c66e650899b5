"""B against A, honestly: per-category deltas with intervals, a paired test, the flipped cases.

Two runs of one suite share their cases, so the paired test is McNemar's exact test on the cases
only one of them passed. A category *regresses* when the whole 95% interval of its delta lies below
zero; `punie eval compare --fail-on-regression` exits non-zero on that, for a user's own CI.
"""

from __future__ import annotations

from dataclasses import dataclass

from punie.errors import EvalError
from punie.eval.runner import EvalResult
from punie.eval.stats import mcnemar_exact, newcombe_delta, wilson


@dataclass(frozen=True)
class CategoryDelta:
    category: str
    a: tuple[int, int]  # (passed, total)
    b: tuple[int, int]
    delta: float
    interval: tuple[float, float]

    @property
    def regressed(self) -> bool:
        return self.interval[1] < 0

    @property
    def improved(self) -> bool:
        return self.interval[0] > 0


@dataclass(frozen=True)
class Comparison:
    """B (`b_label`) against A (`a_label`) on the cases both ran."""

    suite: str
    a_label: str
    b_label: str
    shared: int
    delta: float
    interval: tuple[float, float]
    gained: tuple[str, ...]  # failed in A, passed in B
    lost: tuple[str, ...]  # passed in A, failed in B
    p_value: float
    categories: tuple[CategoryDelta, ...]
    only_a: tuple[str, ...] = ()
    only_b: tuple[str, ...] = ()

    @property
    def regressions(self) -> tuple[CategoryDelta, ...]:
        return tuple(c for c in self.categories if c.regressed)

    @property
    def regressed(self) -> bool:
        return self.interval[1] < 0 or bool(self.regressions)

    def to_dict(self) -> dict:
        return {
            "suite": self.suite,
            "a": self.a_label,
            "b": self.b_label,
            "shared": self.shared,
            "delta": self.delta,
            "interval": list(self.interval),
            "p_value": self.p_value,
            "gained": list(self.gained),
            "lost": list(self.lost),
            "only_a": list(self.only_a),
            "only_b": list(self.only_b),
            "regressed": self.regressed,
            "categories": [
                {
                    "category": c.category,
                    "a": list(c.a),
                    "b": list(c.b),
                    "delta": c.delta,
                    "interval": list(c.interval),
                    "regressed": c.regressed,
                }
                for c in self.categories
            ],
        }


def compare(a: EvalResult, b: EvalResult) -> Comparison:
    if a.suite != b.suite:
        raise EvalError(f"cannot compare suite {a.suite!r} with suite {b.suite!r}")
    ca = {c.id: c for c in a.cases}
    cb = {c.id: c for c in b.cases}
    shared = [i for i in ca if i in cb]
    if not shared:
        raise EvalError(f"{a.label} and {b.label} share no case of suite {a.suite!r}")
    gained = tuple(i for i in shared if cb[i].passed and not ca[i].passed)
    lost = tuple(i for i in shared if ca[i].passed and not cb[i].passed)
    categories = []
    for cat in sorted({ca[i].category for i in shared}):
        ids = [i for i in shared if ca[i].category == cat]
        pa, pb, n = sum(ca[i].passed for i in ids), sum(cb[i].passed for i in ids), len(ids)
        categories.append(
            CategoryDelta(cat, (pa, n), (pb, n), (pb - pa) / n, newcombe_delta(pa, n, pb, n))
        )
    pa = sum(ca[i].passed for i in shared)
    pb = sum(cb[i].passed for i in shared)
    n = len(shared)
    return Comparison(
        suite=a.suite,
        a_label=a.label,
        b_label=b.label,
        shared=n,
        delta=(pb - pa) / n,
        interval=newcombe_delta(pa, n, pb, n),
        gained=gained,
        lost=lost,
        p_value=mcnemar_exact(len(gained), len(lost)),
        categories=tuple(categories),
        only_a=tuple(i for i in ca if i not in cb),
        only_b=tuple(i for i in cb if i not in ca),
    )


def category_rows(run: EvalResult) -> list[dict]:
    """Per-category pass counts with 95% Wilson intervals, then the overall row."""
    rows = []
    for cat, (p, n) in run.by_category().items():
        rows.append({"category": cat, "passed": p, "total": n, "interval": wilson(p, n)})
    return rows
