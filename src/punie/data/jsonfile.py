"""What a data file holds before its rows are read: JSON lines, a JSON array, or something else.

Every LLaMA-Factory dataset and `alpaca_data.json` is one JSON array of rows, so the dataset
commands read arrays wherever they read JSON lines. An array is streamed element by element with
ijson (a multi-gigabyte array never sits in memory), and each element is handed on as one line of
compact JSON, so everything downstream (parsing, checks, writing the row's exact bytes) is the
same as for JSON lines. An element's place is its 0-based index, printed `file.json:[12]`.

A LLaMA-Factory `dataset_info.json` (a map of dataset names to descriptions) is not rows either;
`sniff` names it so the error can say what to run instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import orjson

from punie import jsonl
from punie.errors import DataError, PunieError

# The keys that make a dataset_info.json entry: where its rows live.
_INFO_SOURCES = ("file_name", "hf_hub_url", "ms_hub_url", "script_url", "cloud_file_name")
_SNIFF_BYTES = 1 << 16
_INFO_MAX_BYTES = 16 << 20
_BOM = b"\xef\xbb\xbf"


class Index(int):
    """An array element's 0-based index: an int (sortable, packable) that prints as `[12]`, so
    `f"{path}:{line}"` names it the way it names a line number."""

    def __str__(self) -> str:
        return f"[{int(self)}]"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def sniff(path: Path | str) -> str:
    """ "array", "dataset_info" or "jsonl", from the file's name and first bytes."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return "jsonl"  # the reader reports the error with its own words
    head = head.removeprefix(_BOM).lstrip()
    if head.startswith(b"["):
        # A .jsonl whose first line is a whole JSON value is JSON lines with a bad row in it.
        first = head.split(b"\n", 1)[0]
        return "jsonl" if path.suffix == ".jsonl" and _is_json(first) else "array"
    if head.startswith(b"{") and is_dataset_info(path, head):
        return "dataset_info"
    return "jsonl"


def place(path: str, n: int) -> int:
    """Row n of `path` as `lines` numbers it: an `Index` in an array file, for messages that
    kept only the number (dedupe packs file and line into one int)."""
    return Index(n) if _sniffed(path) == "array" else n


@lru_cache(maxsize=64)
def _sniffed(path: str) -> str:
    return sniff(path)


def _is_json(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def is_dataset_info(path: Path, head: bytes) -> bool:
    if path.name == "dataset_info.json":
        return True
    first = head.split(b"\n", 1)[0].strip()
    if first != b"{":  # a JSON-lines row opens and closes on its first line
        return False
    if path.stat().st_size > _INFO_MAX_BYTES:  # not a list of datasets; not worth reading
        return False
    try:
        value = json.loads(path.read_bytes().removeprefix(_BOM))
    except (ValueError, OSError, RecursionError):
        return False
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, dict) and any(k in v for k in _INFO_SOURCES) for v in value.values())
    )


def dataset_info_error(path: Path | str) -> PunieError:
    return DataError(
        f"{path}: a LLaMA-Factory dataset_info.json (a map of dataset names, not rows); convert "
        f"one of its datasets: `punie dataset convert {path} NAME -o OUT.jsonl`"
    )


def elements(path: Path | str) -> Iterator[tuple[Index, bytes]]:
    """Each element of a JSON array file as (index, one line of compact JSON)."""
    import ijson

    with open(path, "rb") as f:
        if f.read(3) != _BOM:
            f.seek(0)
        i = -1
        try:
            # use_float: numbers as float/int like json.loads gives, not Decimal.
            for i, value in enumerate(ijson.items(f, "item", use_float=True)):
                try:
                    line = _dumps(value)
                except RecursionError:  # ijson builds any depth; json cannot write it back
                    raise DataError(f"{path}:{Index(i)}: json: {jsonl.TOO_DEEP}") from None
                yield Index(i), line
        except ijson.JSONError as e:
            at = Index(i + 1)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"{path}:{at}: not valid JSON ({reason}); the array stops here") from e
        if i < 0:
            raise DataError(f"{path}: an empty JSON array; no rows")


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # what only json writes: integers past 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
