"""Reading dataset files: which files a dataset has, their lines, and their valid rows.

A dataset is a folder with `train.jsonl`, `valid.jsonl` and/or `test.jsonl` (what `mlx_lm lora`
reads) or a single JSONL file. Files are read line by line as bytes and never held whole; a single
file may also be a JSON array of rows (`punie.data.jsonfile`), streamed element by element.
`records` checks each row (`punie.data.schema`) and raises a bad one as `RowError` (or hands it
to a callback, for `--skip-invalid`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from punie import jsonl
from punie.data import jsonfile
from punie.data.schema import (
    Problem,
    RowError,
    check_row,
    detect_kind,
    type_name,
    unknown_kind_reason,
)
from punie.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Record:
    """One row as read: where it came from, its parsed value and its exact bytes."""

    path: str
    line: int
    split: str
    kind: str
    row: dict
    raw: bytes


@dataclass(frozen=True)
class DataFile:
    path: Path
    split: str  # train/valid/test, or "" for a single file


def dataset_files(path: Path | str) -> list[DataFile]:
    """The files of a dataset: a folder's splits in train, valid, test order, or the one file."""
    p = Path(path)
    if p.is_dir():
        found = [DataFile(p / f"{s}.jsonl", s) for s in SPLITS if (p / f"{s}.jsonl").is_file()]
        if not found:
            arrays = [f"{s}.json" for s in SPLITS if (p / f"{s}.json").is_file()]
            hint = (
                f" ({', '.join(arrays)} is there: mlx_lm reads a folder's splits as JSON lines; "
                "give the .json file itself, or convert it to .jsonl with `punie dataset convert`)"
                if arrays
                else ""
            )
            raise DataError(f"{p}: no train.jsonl, valid.jsonl or test.jsonl in this folder{hint}")
        return found
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if not p.is_file():
        raise DataError(f"{p}: not a regular file")
    return [DataFile(p, "")]


def all_files(paths: Iterable[Path | str]) -> list[DataFile]:
    return [f for p in paths for f in dataset_files(p)]


def lines(path: Path, *, arrays: bool = True) -> Iterator[tuple[int, bytes]]:
    """Non-final lines of a file with their 1-based numbers; raises on binary or empty files.
    JSON lines are read by `punie.jsonl`, as training reads them (a leading byte-order mark
    dropped).

    A JSON array file yields its elements instead, numbered by `Index` (printed `[i]`), when
    `arrays`; a split file of a dataset folder (what mlx_lm reads) passes `arrays=False`, and an
    array there is one error naming it."""
    form = jsonfile.sniff(path)
    if form == "dataset_info":
        raise jsonfile.dataset_info_error(path)
    if form == "array":
        if not arrays:
            raise jsonl.array_error(path, "mlx_lm reads a dataset folder's splits as JSON lines")
        yield from jsonfile.elements(path)
        return
    n = 0
    for n, line in jsonl.lines(path):  # noqa: B007 - n is read after the loop
        if b"\0" in line:
            raise DataError(f"{path}:{n}: not a text file (NUL byte); expected JSON lines")
        yield n, line
    if n == 0:
        raise DataError(f"{path}:1: empty file; expected one JSON object per line")


def parse(path: str, n: int, raw: bytes) -> dict | Problem:
    if not raw.strip():
        return Problem(path, n, "line", "blank line; mlx_lm reads every line as JSON")
    try:
        value = jsonl.loads(raw)
    except jsonl.BadJSON as e:
        return Problem(path, n, e.field, e.reason)
    if not isinstance(value, dict):
        return Problem(path, n, "row", f"a row is a JSON object, got {type_name(value)}")
    return value


OnInvalid = Callable[[Problem, bytes], None]


def records(files: Iterable[DataFile], on_invalid: OnInvalid | None = None) -> Iterator[Record]:
    """Every valid row of `files` in order. A bad row raises `RowError`, or, with `on_invalid`,
    is handed to it and skipped. Each file's kind comes from its first valid row."""
    for df in files:
        path, kind = str(df.path), None
        for n, raw in lines(df.path, arrays=not df.split):
            row = parse(path, n, raw)
            if isinstance(row, Problem):
                _invalid(row, raw, on_invalid)
                continue
            row_kind = detect_kind(row)
            problem = None
            if row_kind is None:
                problem = Problem(path, n, "row", unknown_kind_reason(row))
            elif kind is not None and row_kind != kind:
                problem = Problem(path, n, "row", f"a {row_kind} row in a file of {kind} rows")
            else:
                bad = check_row(row, row_kind)
                if bad:
                    problem = Problem(path, n, *bad)
            if problem:
                _invalid(problem, raw, on_invalid)
                continue
            kind = row_kind
            yield Record(path, n, df.split, row_kind, row, raw)


def _invalid(problem: Problem, raw: bytes, on_invalid: OnInvalid | None) -> None:
    if on_invalid is None:
        raise RowError(problem)
    on_invalid(problem, raw)
