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

from punie.errors import PunieError

BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# Real rows nest a dozen levels at most (tools -> function -> parameters -> properties -> ...).
# Python's json (which templates and mlx_lm use to write values back out) runs out of stack near
# 1000 levels, orjson writes at most 255 and reads at most 1024: a bound well below all of them
# means a row that reads here can also be written, rendered and hashed everywhere after.
MAX_DEPTH = 100


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
        raise PunieError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        for n, line in enumerate(f, 1):
            if line.startswith(BOM):
                line = line[len(BOM) :]
            elif n == 1 and line.startswith(_UTF16_BOMS):
                raise PunieError(f"{path}: UTF-16 text; save it as UTF-8 (one JSON object a line)")
            yield n, line


def loads(raw: bytes) -> Any:
    """The JSON value of one line; raises `BadJSON` for anything the json module cannot read."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson is stricter than the json module the trainers read with, so json has the last
        # word, and its messages are the clearer ones.
        value = _json_loads(raw)
    # Counting brackets is C-speed; only a line with many of them is walked for its depth.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise BadJSON("json", _too_deep())
    return value


def _json_loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise BadJSON("line", "not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise BadJSON("json", f"not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise BadJSON("json", _too_deep()) from None
    except ValueError as e:  # the only other one: an integer past Python's digit limit
        if "integer string conversion" not in str(e):
            raise
        limit = sys.get_int_max_str_digits()
        raise BadJSON(
            "json", f"an integer of more than {limit} digits, more than Python will read"
        ) from None


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep; Punie reads at most {MAX_DEPTH}"


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
