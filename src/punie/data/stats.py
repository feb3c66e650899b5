"""`punie dataset stats`: what is in a dataset, counted in one streaming pass.

Distributions are kept as value -> count tables (turns per row, tokens per row), so memory grows
with the number of distinct lengths, not rows; duplicates are counted by hash in a temporary
SQLite file (`punie.data.seen`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from punie.chat.template import ChatTemplate
from punie.data.checks import at_least
from punie.data.dedupe import exact_hash
from punie.data.files import dataset_files, records
from punie.data.render import surely_too_long
from punie.data.rows import tool_calls
from punie.data.seen import FirstSeen


@dataclass(frozen=True)
class Distribution:
    counts: dict[int, int]

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> int:
        target, seen = q * (self.n - 1), 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen > target:
                return value
        return max(self.counts, default=0)

    @property
    def mean(self) -> float:
        return sum(v * c for v, c in self.counts.items()) / self.n if self.n else 0.0

    def histogram(self, bins: int = 10) -> list[tuple[int, int, int]]:
        """(low, high, rows) for equal-width bins over the observed range."""
        if not self.counts:
            return []
        lo, hi = min(self.counts), max(self.counts)
        width = max(1, -(-(hi - lo + 1) // bins))
        out = [[lo + i * width, lo + (i + 1) * width - 1, 0] for i in range(bins)]
        for v, c in self.counts.items():
            out[(v - lo) // width][2] += c
        return [tuple(b) for b in out if b[0] <= hi]


@dataclass(frozen=True)
class DatasetStats:
    rows: dict[str, dict[str, int]]  # split (or file) -> kind -> rows
    turns: Distribution
    tools: dict[str, int]
    rows_with_calls: int
    tokens: Distribution | None
    duplicates: int
    too_long: int = 0  # rows over max_seq_length by their characters alone, so not tokenized

    def to_dict(self) -> dict:
        def dist(d: Distribution | None) -> dict | None:
            if d is None or not d.n:
                return None
            q = {f"p{int(p * 100)}": d.quantile(p) for p in (0.5, 0.9, 0.99)}
            return {"min": min(d.counts), "mean": round(d.mean, 2), **q, "max": max(d.counts)}

        return {
            "rows": self.rows,
            "turns": dist(self.turns),
            "tools": self.tools,
            "rows_with_calls": self.rows_with_calls,
            "tokens": dist(self.tokens),
            "too_long": self.too_long,
            "duplicates": self.duplicates,
        }


def dataset_stats(
    path: Path | str, model: str | None = None, max_seq_length: int = 2048
) -> DatasetStats:
    """With `model`, rows are tokenized as training will; a row surely longer than
    `max_seq_length` by its characters (`render.surely_too_long`) is counted in `too_long`
    instead, as validate and filter do, so one huge row cannot cost gigabytes."""
    at_least("--max-seq-length", max_seq_length, 1)
    template = None
    if model:
        template = ChatTemplate(model)
    rows: dict[str, Counter] = {}
    turns, tokens, tools = Counter(), Counter(), Counter()
    dupes = with_calls = too_long = 0
    with FirstSeen() as seen:
        for rec in records(dataset_files(path)):
            rows.setdefault(rec.split or Path(rec.path).name, Counter())[rec.kind] += 1
            if rec.kind == "chat":
                turns[len(rec.row["messages"])] += 1
            names = [fn.get("name") for _, fn in tool_calls(rec.row)]
            tools.update(names)
            with_calls += bool(names)
            if template is not None and surely_too_long(rec.row, max_seq_length):
                too_long += 1
            elif template is not None:
                tokens[template.length(rec.row)] += 1
            dupes += seen.first(exact_hash(rec.row), 0) is not None
    return DatasetStats(
        rows={k: dict(v) for k, v in rows.items()},
        turns=Distribution(dict(turns)),
        tools=dict(tools.most_common()),
        rows_with_calls=with_calls,
        tokens=Distribution(dict(tokens)) if template is not None else None,
        duplicates=dupes,
        too_long=too_long,
    )
