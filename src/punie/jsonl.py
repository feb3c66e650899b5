"""One way to read JSON lines, shared by every JSONL file Punie reads: datasets (`punie.data`),
the training data the trainers tokenize, eval results.

Sharing it is the point: `punie dataset validate` and `punie train` must accept exactly the same
lines, or a file passes the check and fails an hour later.

- A file is read line by line as bytes, never held whole.
- A UTF-8 byte-order mark at the start of a line is dropped. Windows editors write one at the
  start of a file, and `cat` of such files leaves one at the start of each part. Dropping it
  here means what Punie writes from these lines, and what it hands to the trainers, has none.
- Values are parsed by orjson, and what orjson refuses by the json module, which mlx_lm and TRL
  read with (NaN, integers past 64 bits, lone surrogates).
- A line the json module cannot take either is `BadJSON`, with a reason that fits one line, never
  a traceback: that includes values nested deeper than `MAX_DEPTH` and integers longer than
  Python's digit limit, which the json module answers with RecursionError and ValueError.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from punie.errors import DataError

BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# Real rows nest a dozen levels at most (tools -> function -> parameters -> properties -> ...).
# orjson writes at most 254 levels and reads 1024; Python's json (which templates and mlx_lm use)
# runs out of stack near 1000 either way. A bound at orjson's writing limit means a row read here
# can be written, hashed and rendered everywhere after, and orjson can check it at C speed.
MAX_DEPTH = 254
TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep, more than Punie reads"


class BadJSON(ValueError):
    """Why a line is not JSON Punie can read: `field` ("line" or "json") and a one-line reason."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def lines(path: Path | str) -> Iterator[tuple[int, bytes]]:
    """Every line of a file as bytes, with its 1-based number and without a leading BOM."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a generator cannot use `with` early
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        for n, line in enumerate(f, 1):
            if line.startswith(BOM):
                line = line[len(BOM) :]
            elif n == 1 and line.startswith(_UTF16_BOMS):
                raise DataError(f"{path}: UTF-16 text; save it as UTF-8 (one JSON object a line)")
            yield n, line


def array_error(path: Path | str, why: str) -> DataError:
    """A JSON array where JSON lines are read: one line naming the file, instead of an error on
    every line of the array."""
    return DataError(
        f"{path}: a JSON array, not JSON lines; {why}. Turn it into JSON lines with "
        f"`punie dataset convert {path} -o OUT.jsonl`"
    )


def loads(raw: bytes) -> Any:
    """The JSON value of one line; raises `BadJSON` for anything the json module cannot read."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson is stricter than the json module the trainers read with, so json has the last
        # word, and its messages are the clearer ones.
        value = _json_loads(raw)
    if _too_deep(raw, value):
        raise BadJSON("json", TOO_DEEP)
    return value


def _json_loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise BadJSON("line", "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise BadJSON("json", f"not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise BadJSON("json", TOO_DEEP) from None
    except ValueError as e:  # the only other one: an integer past Python's digit limit
        if "integer string conversion" not in str(e):
            raise
        limit = sys.get_int_max_str_digits()
        raise BadJSON(
            "json", f"an integer of more than {limit} digits, more than Python will read"
        ) from None


def _too_deep(raw: bytes, value: Any) -> bool:
    # Checks cost C-speed passes: nesting needs as many brackets as levels, and orjson refuses to
    # write past MAX_DEPTH. Only what orjson cannot write for another reason (integers past 64
    # bits, lone surrogates) is walked in Python.
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return False
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return _deeper_than(value, MAX_DEPTH)
    return False


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` deep; iterative, so it cannot overflow."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False
