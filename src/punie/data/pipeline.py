"""The shape shared by filter, dedupe and decontaminate: stream rows, keep some, say why not.

A folder goes in, a folder with the same splits comes out; a file goes in, a file comes out.
Several inputs (dedupe takes them) must be all folders, whose splits are pooled split by split,
or all files, pooled into one. Every removed row (and, with `--skip-invalid`, every invalid one)
can be kept in a rejects file with its reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from punie.data.files import SPLITS, Record, all_files, records
from punie.data.output import Output, open_output
from punie.data.schema import Problem
from punie.errors import DataError

Decide = Callable[[Record], str | None]


def rejects_path(out: Path | str) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.rejects.jsonl")


Inputs = Path | str | Sequence[Path | str]


def _paths(inputs: Inputs) -> list[Path | str]:
    return [inputs] if isinstance(inputs, Path | str) else list(inputs)


def output_splits(inputs: Inputs) -> tuple[str, ...] | None:
    """The splits an output mirrors: its folders' splits, or None for files."""
    paths = _paths(inputs)
    folders = [Path(p).is_dir() for p in paths]
    if not all(folders):
        if any(folders):
            raise DataError("give only dataset folders or only .jsonl files, not both")
        return None
    found = {f.split for f in all_files(paths)}
    return tuple(s for s in SPLITS if s in found)


def keep_rows(
    path: Inputs,
    out: Path | str,
    decide: Decide,
    *,
    rejects: Path | str | None = None,
    skip_invalid: bool = False,
    seed: int | None = None,
    order: Sequence[str] | None = None,
    finish: Callable[[dict], None] | None = None,
) -> Output:
    """Write the rows of `path` for which `decide` returns None; count the reasons for the rest.

    `order` visits splits in that order (dedupe keeps the first copy, so it reads test first).
    `finish(counts)` adds the caller's numbers before the manifest is written.
    """
    files = all_files(_paths(path))
    if order is not None:
        files = sorted(files, key=lambda f: order.index(f.split) if f.split in order else 0)
    if skip_invalid and rejects is None:
        rejects = rejects_path(out)
    splits = output_splits(path)
    removed: Counter[str] = Counter()
    with open_output(out, splits, inputs=files, seed=seed, rejects=rejects) as o:

        def invalid(problem: Problem, raw: bytes) -> None:
            removed["invalid"] += 1
            o.rejects.reject(problem, raw)

        for rec in records(files, on_invalid=invalid if skip_invalid else None):
            reason = decide(rec)
            if reason is None:
                o.sinks[rec.split if splits else ""].write(rec.raw)
                continue
            removed[reason.split(":")[0]] += 1
            if o.rejects is not None:
                o.rejects.reject(f"{rec.path}:{rec.line}: {reason}", rec.raw)
        o.counts.update(
            {
                "kept": sum(s.rows for s in o.sinks.values()),
                "removed": dict(sorted(removed.items())),
            }
        )
        if finish is not None:
            finish(o.counts)
    return o
