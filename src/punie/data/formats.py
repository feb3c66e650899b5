"""The row formats Punie reads, and the one place that knows them.

A dataset is a folder with `train.jsonl`, `valid.jsonl` and/or `test.jsonl` (what `mlx_lm lora`
reads) or a single JSONL file. Each file holds rows of one kind, detected from its first row the
way mlx_lm does (prompt+completion, then messages, then text), plus preference rows:

- chat: `{"messages": [{"role", "content", "tool_calls"?}, ...], "tools": [...]?}`
- completions: `{"prompt": str, "completion": str}`
- text: `{"text": str}`
- preference: `{"prompt", "chosen", "rejected"}`, each a string or a list of messages

Files are read line by line as bytes and never held whole; a single file may also be a JSON array
of rows (`punie.data.jsonfile`), streamed element by element. A bad row becomes a `Problem` naming
file, line and field; `records` raises it (or hands it to a callback, for `--skip-invalid`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from punie import jsonl
from punie.data import jsonfile
from punie.errors import DataError

KINDS = ("chat", "completions", "text", "preference")
ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "valid", "test")
# Formats `punie dataset convert` brings in; named here so validate can point at it.
FOREIGN = {
    "conversations": "ShareGPT",
    "instruction": "Alpaca",
    "chat": "glaive",
    "answers": "xLAM",
    "chosen_messages": "LLaMA-Factory pairs",
}


@dataclass(frozen=True)
class Problem:
    """What is wrong with one row: printed as `file:line: field: reason`."""

    path: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.reason}"


class RowError(DataError):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


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
            raise jsonfile.array_error(path, "mlx_lm reads a dataset folder's splits as JSON lines")
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
        return Problem(path, n, "row", f"a row is a JSON object, got {_type(value)}")
    return value


def detect_kind(row: dict) -> str | None:
    if "prompt" in row and "chosen" in row and "rejected" in row:
        return "preference"
    if "prompt" in row and "completion" in row:
        return "completions"
    if "messages" in row:
        return "chat"
    if "text" in row:
        return "text"
    return None


def unknown_kind_reason(row: dict) -> str:
    for key, name in FOREIGN.items():
        if key in row:
            return f"looks like {name}; run `punie dataset convert` first"
    keys = ", ".join(sorted(row)[:5]) or "none"
    return (
        f"not a known row kind (keys: {keys}); expected messages, prompt+completion, text, "
        "or prompt+chosen+rejected"
    )


def check_row(row: dict, kind: str) -> tuple[str, str] | None:
    """The first thing wrong with a row of `kind`, as (field, reason); None when it is fine."""
    if kind == "chat":
        return check_chat(row)
    if kind == "completions":
        return _check_strings(row, ("prompt", "completion"))
    if kind == "text":
        return _check_strings(row, ("text",))
    return _check_preference(row)


def check_chat(row: dict) -> tuple[str, str] | None:
    messages = row.get("messages")
    if not isinstance(messages, list):
        return "messages", f"must be a list of messages, got {_type(messages)}"
    if not messages:
        return "messages", "empty; a chat row needs at least one message"
    bad = check_messages(messages, "messages")
    if bad:
        return bad
    tools = row.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools", f"must be a list of tool schemas, got {_type(tools)}"
        for i, tool in enumerate(tools):
            fn = tool.get("function", tool) if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                return f"tools[{i}]", "must be an object with a function name"
    return None


def check_messages(messages: list, where: str) -> tuple[str, str] | None:
    # Field names are built only on failure: this runs for every message of every row.
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"{where}[{i}]", f"a message is an object, got {_type(m)}"
        role = m.get("role")
        if role not in ROLES:
            return f"{where}[{i}].role", f"{role!r} is not one of {', '.join(ROLES)}"
        content = m.get("content")
        calls = m.get("tool_calls")
        if content is not None and not isinstance(content, str):
            return f"{where}[{i}].content", f"must be a string, got {_type(content)}"
        if calls is not None:
            if role != "assistant":
                return f"{where}[{i}].tool_calls", f"only assistant turns call tools, not {role}"
            bad = _check_calls(calls, f"{where}[{i}].tool_calls")
            if bad:
                return bad
        if not (content or "").strip() and not calls:
            return f"{where}[{i}].content", "empty turn"
    return None


def role_order(messages: list[dict]) -> tuple[str, str] | None:
    """Where the turn order breaks what chat templates expect (system first, then turns)."""
    prev, caller = None, None  # caller: the last assistant turn, by index
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "system" and i != 0:
            return f"messages[{i}].role", "system is only allowed as the first message"
        if role == "tool" and prev not in ("assistant", "tool"):
            return f"messages[{i}].role", f"a tool result must follow a tool call, not {prev}"
        if role == "tool" and not messages[caller].get("tool_calls"):
            return f"messages[{i}].role", (
                f"a tool result must follow a tool call; messages[{caller}], the assistant turn "
                "before it, calls no tool"
            )
        if role == "assistant":
            caller = i
        if role == "assistant" and prev in (None, "system"):
            return f"messages[{i}].role", "the first turn after the system prompt is the user's"
        if role == "user" and prev == "user":
            return f"messages[{i}].role", "two user turns in a row"
        if role == prev == "assistant":
            return f"messages[{i}].role", "two assistant turns in a row"
        prev = role
    return None


def _check_calls(calls: Any, where: str) -> tuple[str, str] | None:
    if not isinstance(calls, list) or not calls:
        return where, "must be a non-empty list of calls"
    for j, tc in enumerate(calls):
        fn = tc.get("function", tc) if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            return f"{where}[{j}].function.name", "missing; a call needs a function name"
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                return f"{where}[{j}].function.arguments", "a string that is not JSON"
        if not isinstance(args, dict):
            return f"{where}[{j}].function.arguments", f"must be an object, got {_type(args)}"
    return None


def _check_strings(row: dict, keys: tuple[str, ...]) -> tuple[str, str] | None:
    for key in keys:
        if not isinstance(row.get(key), str):
            return key, f"must be a string, got {_type(row.get(key))}"
    if not row[keys[-1]].strip():
        return keys[-1], "empty"
    return None


def _check_preference(row: dict) -> tuple[str, str] | None:
    for key in ("prompt", "chosen", "rejected"):
        value = row[key]
        if isinstance(value, list):
            bad = check_messages(value, key) if value else (key, "empty message list")
            if bad:
                return bad
        elif not isinstance(value, str):
            return key, f"must be a string or a list of messages, got {_type(value)}"
    lists = [key for key in ("prompt", "chosen", "rejected") if isinstance(row[key], list)]
    if 0 < len(lists) < 3:
        shape = "is a message list" if len(lists) == 1 else "are message lists"
        return "row", (
            f"{' and '.join(lists)} {shape} but the rest are strings; TRL reads a row as all "
            "text or all messages"
        )
    return None


def _type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else f"a {type(value).__name__}"
    )


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


def texts(row: dict, roles: tuple[str, ...] = ("user", "assistant")) -> list[str]:
    """The natural-language content of a row of any kind, for `roles` where it has messages."""
    if "messages" in row and isinstance(row["messages"], list):
        return [m.get("content") or "" for m in row["messages"] if m.get("role") in roles]
    out = []
    for key in ("text", "prompt", "completion", "chosen", "rejected"):
        value = row.get(key)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out += [m.get("content") or "" for m in value if m.get("role") in roles]
    return out


def prompts(row: dict) -> list[str]:
    """The user-side text of a row: what an eval prompt would look like."""
    value = row.get("messages", row.get("prompt", row.get("text")))
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [m.get("content") or "" for m in value if m.get("role") == "user"]
    return []


def tool_calls(row: dict) -> Iterator[tuple[int, dict]]:
    """(message index, function) for every tool call in a chat row."""
    for i, m in enumerate(row.get("messages") or ()):
        for tc in m.get("tool_calls") or ():
            yield i, tc.get("function", tc)


def content_key(row: dict) -> bytes:
    """The row's content, normalized (case, whitespace, key order; `source` and `id` ignored) for
    exact-duplicate hashing. Normalizes the JSON text in C-speed string passes, not per value."""
    if "source" in row or "id" in row:
        row = {k: v for k, v in row.items() if k not in ("source", "id")}
    try:
        text = orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:  # what only json takes: integers past 64 bits, lone surrogates
        text = json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if "\\" in text:
        text = text.replace("\\n", " ").replace("\\t", " ").replace("\\r", " ")
    text = text.lower()
    return " ".join(text.split()).encode("utf-8", "surrogatepass")
