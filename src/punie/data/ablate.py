"""`punie dataset ablate`: drop a span of every prompt, or swap spans between rows.

The span is what a regex's named group `span` matches in a prompt's text (every match, in every
user turn, or in a string `prompt`/`text`). `drop` removes it; `shuffle` gives each matched span
the text of another, by a seeded permutation that moves every span to a different place (a
cyclic shift of a shuffled order), so same input and seed give the same bytes. An eval run on
the ablated suite next to the plain one shows whether a model reads that part of the prompt
(the "no-draft" and "shuffled-draft" tests). Suites are ablated in `punie.eval.ablate`.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from pathlib import Path

from punie.data.files import all_files, records
from punie.data.output import Output, open_output
from punie.data.pipeline import output_splits
from punie.errors import DataError

MODES = ("drop", "shuffle")

Slot = tuple[dict, str]  # a text to ablate: container[key]


def span_pattern(regex: str) -> re.Pattern:
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise DataError(f"--span {regex!r}: not a valid regex ({e})") from None
    if "span" not in pattern.groupindex:
        raise DataError(
            f"--span {regex!r}: has no group named `span`; mark the part to ablate as (?P<span>...)"
        )
    return pattern


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise DataError(f"--mode {mode!r}: must be one of {', '.join(MODES)}")


def prompt_slots(row: dict) -> list[Slot]:
    """Where a row's prompt text lives: its user turns, or a string `prompt` (or `text`)."""
    value = row.get("messages", row.get("prompt"))
    if isinstance(value, list):
        return [
            (m, "content")
            for m in value
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
        ]
    for key in ("prompt", "text"):
        if isinstance(row.get(key), str):
            return [(row, key)]
    return []


def ablate_slots(
    slots_by_row: list[list[Slot]], pattern: re.Pattern, mode: str, seed: int
) -> dict[str, int]:
    """Ablate, in place, the spans in the rows' slots; count the rows and spans touched."""
    check_mode(mode)
    found = []  # (slot, start, end, text) of every non-empty span, in row order
    matched_rows = 0
    for slots in slots_by_row:
        before = len(found)
        for container, key in slots:
            for m in pattern.finditer(container[key]):
                start, end = m.span("span")
                if start >= 0 and end > start:
                    found.append(((container, key), start, end, m.group("span")))
        matched_rows += len(found) > before
    if mode == "shuffle" and 0 < matched_rows < 2:
        raise DataError("--mode shuffle: the span is found in only one row; nothing to swap with")
    if mode == "drop":
        new = [""] * len(found)
    else:
        order = list(range(len(found)))
        random.Random(seed).shuffle(order)
        new = [""] * len(found)
        for k, i in enumerate(order):
            new[i] = found[order[(k + 1) % len(order)]][3]
    # splice each text's spans from its end, so earlier offsets stay valid
    edits: dict[tuple[int, str], tuple[dict, list[tuple[int, int, str]]]] = {}
    for ((container, key), start, end, _), text in zip(found, new, strict=True):
        edits.setdefault((id(container), key), (container, []))[1].append((start, end, text))
    for (_, key), (container, spans) in edits.items():
        text = container[key]
        for start, end, replacement in sorted(spans, reverse=True):
            text = text[:start] + replacement + text[end:]
        container[key] = text
    return {
        "rows": len(slots_by_row),
        "rows_matched": matched_rows,
        "spans": len(found),
    }


def ablate_rows(
    path: Path | str, out: Path | str, regex: str, *, mode: str, seed: int = 0
) -> Output:
    """Write `path` (a .jsonl file or a dataset folder) with every prompt's span ablated; a
    folder's splits are shuffled each within itself."""
    pattern = span_pattern(regex)
    check_mode(mode)
    files = all_files([path])
    splits = output_splits(path)
    by_split: dict[str, list[dict]] = defaultdict(list)
    for rec in records(files):
        by_split[rec.split if splits else ""].append(rec.row)
    counts: dict[str, int] = defaultdict(int)
    for rows in by_split.values():
        for k, v in ablate_slots([prompt_slots(r) for r in rows], pattern, mode, seed).items():
            counts[k] += v
    if counts["spans"] == 0:
        raise DataError(f"{path}: --span {regex!r} matches no prompt; nothing to ablate")
    with open_output(out, splits, inputs=files, seed=seed) as o:
        for split, rows in by_split.items():
            for row in rows:
                o.sinks[split].write_row(row)
        o.counts.update({"mode": mode, "span": regex, **counts})
    return o
