"""`punie dataset validate`: check every row, and with a model, render each through its template.

Row problems (bad JSON, wrong types, unknown roles, roles out of order, empty turns, and with a
model: templates that fail, tool calls that do not render back, rows over the sequence limit,
tool-call turns that training's own loss mask (`punie.chat.masking`) leaves out; preference rows
rendered prompt + chosen and prompt + rejected, as TRL renders them for DPO) are reported one by
one and counted; the input is unusable (exit 2) only when a file is missing, binary or empty, or a
folder has no splits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from punie.chat.template import ChatTemplate
from punie.data.files import dataset_files, lines, parse
from punie.data.render import chat_problems, preference_problems, surely_too_long
from punie.data.schema import Problem, check_row, detect_kind, role_order, unknown_kind_reason


@dataclass(frozen=True)
class FileSummary:
    path: str
    split: str
    kind: str | None
    rows: int
    bad_rows: int


@dataclass(frozen=True)
class ValidationSummary:
    files: tuple[FileSummary, ...]
    problems: int
    by_field: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.problems == 0


def validate(
    path: Path | str,
    *,
    model: str | None = None,
    max_seq_length: int = 2048,
    mask_prompt: bool = True,
    on_problem: Callable[[Problem], None] = lambda p: None,
) -> ValidationSummary:
    """Check every row of the dataset at `path`; each problem goes to `on_problem` as found."""
    template = ChatTemplate(model) if model else None
    files, total, by_field = [], 0, Counter()
    for df in dataset_files(path):
        p, kind, rows, bad = str(df.path), None, 0, 0
        for n, raw in lines(df.path, arrays=not df.split):
            rows += 1
            found = _row_problems(p, n, raw, kind, template, max_seq_length, mask_prompt)
            if isinstance(found, str):
                kind = kind or found
                continue
            bad += 1
            for problem in found:
                total += 1
                by_field[problem.field.split("[")[0].split(".")[0]] += 1
                on_problem(problem)
        files.append(FileSummary(p, df.split, kind, rows, bad))
    return ValidationSummary(tuple(files), total, dict(by_field))


def row_checks(row: dict, kind: str) -> list[tuple[str, str]]:
    """What is wrong with a row of `kind` without a model, as (field, reason): its shape, then
    for chat rows the order of its turns. Convert runs the same checks on every row it writes."""
    bad = check_row(row, kind)
    if bad:
        return [bad]
    if kind == "chat":
        order = role_order(row["messages"])
        if order:
            return [order]
    return []


def _row_problems(
    path: str,
    n: int,
    raw: bytes,
    kind: str | None,
    template,
    max_seq_length: int,
    mask_prompt: bool,
) -> str | list[Problem]:
    """The row's kind when it is fine, else its problems."""
    row = parse(path, n, raw)
    if isinstance(row, Problem):
        return [row]
    row_kind = detect_kind(row)
    if row_kind is None:
        return [Problem(path, n, "row", unknown_kind_reason(row))]
    if kind is not None and row_kind != kind:
        return [Problem(path, n, "row", f"a {row_kind} row in a file of {kind} rows")]
    bad = check_row(row, row_kind)
    if bad:
        return [Problem(path, n, *bad)]
    found = []
    if template is not None:
        too_long = surely_too_long(row, max_seq_length)
        if too_long:
            reason = f"{too_long}; over --max-seq-length {max_seq_length}, it would be cut"
            return [Problem(path, n, "row", reason)]
    if row_kind == "chat":
        order = role_order(row["messages"])
        if order:
            found.append(Problem(path, n, *order))
        if template is not None:
            found += [
                Problem(path, n, *p)
                for p in chat_problems(template, row, max_seq_length, mask_prompt)
            ]
    elif row_kind == "preference" and template is not None:
        found += [Problem(path, n, *p) for p in preference_problems(template, row, max_seq_length)]
    elif template is not None:
        length = template.length(row)
        if length > max_seq_length:
            reason = f"{length} tokens > --max-seq-length {max_seq_length}; it would be cut"
            found.append(Problem(path, n, "row", reason))
    return found or row_kind
