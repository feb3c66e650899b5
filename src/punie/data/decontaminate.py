"""`punie dataset decontaminate`: drop training rows that contain an eval suite's prompts.

Each eval prompt is cut into word n-grams (`n` words, or the whole prompt when it is shorter); a
row is contaminated by a prompt when it contains at least `threshold` of that prompt's n-grams.
Words are lower-cased runs of letters and digits, so punctuation and spacing do not hide a leak.
The index holds the suites' n-grams only; rows stream past it.

The prompts come in as `Prompt`s: `dataset_prompts` reads a dataset's user turns, and
`punie.eval.prompts.load_prompts` an eval suite's (data sits below eval and never reads suites).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from punie.data.checks import at_least, share
from punie.data.files import Record, dataset_files, records
from punie.data.pipeline import keep_rows
from punie.data.rows import prompts, texts

_WORD = re.compile(r"\w+")
MAX_LISTED = 10_000


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


def is_dataset(path: Path | str) -> bool:
    p = Path(path)
    return p.is_dir() or p.suffix == ".jsonl"


def dataset_prompts(path: Path | str) -> list[Prompt]:
    """The user turns of a dataset (folder or .jsonl), each named by its file and line."""
    return [
        Prompt(f"{Path(r.path).name}:{r.line}", text)
        for r in records(dataset_files(Path(path)))
        for text in prompts(r.row)
    ]


class NgramIndex:
    def __init__(self, prompts: list[Prompt], n: int):
        self.prompts = [p for p in prompts if _WORD.search(p.text)]
        self.sizes: dict[int, int] = {}  # n-gram length -> how many prompts use it
        self.total: list[int] = []
        self.index: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, p in enumerate(self.prompts):
            words = _WORD.findall(p.text.lower())
            k = min(n, len(words))
            grams = {tuple(words[j : j + k]) for j in range(len(words) - k + 1)}
            self.total.append(len(grams))
            self.sizes[k] = self.sizes.get(k, 0) + 1
            for g in grams:
                self.index[g].append(i)

    def overlaps(self, text: str) -> dict[int, float]:
        """Prompt index -> fraction of its n-grams found in `text`."""
        words = _WORD.findall(text.lower())
        hits: dict[int, int] = defaultdict(int)
        for k in self.sizes:
            for g in {tuple(words[j : j + k]) for j in range(len(words) - k + 1)}:
                for i in self.index.get(g, ()):
                    hits[i] += 1
        return {i: h / self.total[i] for i, h in hits.items()}

    def contaminated(self, row: dict, threshold: float) -> tuple[str, float] | None:
        """The prompt `row` holds the most of, and that share, when it is `threshold` or more."""
        found = self.overlaps("\n".join(texts(row, ("system", "user", "assistant", "tool"))))
        if not found:
            return None
        i, share = max(found.items(), key=lambda kv: (kv[1], -kv[0]))
        return (self.prompts[i].id, share) if share >= threshold else None


def decontaminate(
    path: Path | str,
    out: Path | str,
    against: list[Prompt],
    *,
    n: int = 8,
    threshold: float = 0.5,
    rejects: Path | str | None = None,
    skip_invalid: bool = False,
):
    at_least("--n", n, 1)
    share("--threshold", threshold)
    index = NgramIndex(against, n)
    hits: list[dict] = []

    def decide(rec: Record) -> str | None:
        hit = index.contaminated(rec.row, threshold)
        if hit is None:
            return None
        pid, share = hit
        if len(hits) < MAX_LISTED:
            hits.append(
                {"row": f"{rec.path}:{rec.line}", "prompt": pid, "overlap": round(share, 3)}
            )
        return f"contaminated: {share:.0%} of the {n}-grams of {pid}"

    def finish(counts: dict) -> None:
        counts.update({"prompts": len(index.prompts), "n": n, "threshold": threshold})
        counts["hits"] = hits

    return keep_rows(path, out, decide, rejects=rejects, skip_invalid=skip_invalid, finish=finish)
