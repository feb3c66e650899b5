"""Atomic file and folder writes: a reader never sees half an output, and nothing of the user's
is ever replaced.

Every output Punie writes goes to a temporary sibling first and is renamed into place only once it
is complete; on any error (or Ctrl-C) the temporary is removed and the destination is untouched.

A folder output carries a marker, `.punie-output.json`, naming its kind (`dataset`, `model`, ...)
and every entry Punie wrote in it. An existing folder is replaced only when it is empty or when
its marker says it is a Punie output of the same kind and it holds nothing the marker does not
list; anything else is refused before any work starts, so a user's file is never deleted.

A one-file output a user names (`-o report.html`, `--rejects FILE`, `-o OUT.jsonl`) is written by
`atomic_file(path, kind=...)`, with the same rule: an existing file is replaced only when it is
empty or recognisably Punie's output of that kind (`FILE_KINDS`: a manifest beside it lists it,
or its first bytes carry what Punie writes there); anything else is refused in one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from punie import jsonl
from punie.errors import PunieError, warn

MARKER = ".punie-output.json"

# Errors of the disk rather than of Punie: said in one line naming the output, never a traceback.
DISK_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}
)


def disk_error(path: Path | str, e: OSError) -> PunieError:
    """The one-line error for an output that the disk would not take (named as the user named
    it, not as the temporary being written)."""
    return PunieError(f"{path}: cannot write ({e.strerror or e})")


def _is_disk_error(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_ERRNOS


# How much of an existing file is read to tell whether Punie wrote it: its head, never the whole.
HEAD_BYTES = 4096


def file_manifest(path: Path | str) -> Path:
    """The manifest Punie writes beside a one-file output: `OUT.jsonl` -> `OUT.manifest.json`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.manifest.json")


def _head(path: Path, size: int = HEAD_BYTES) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _listed_in_manifest(path: Path) -> bool:
    manifest = _json_head(file_manifest(path))
    return isinstance(manifest, dict) and path.name in (manifest.get("outputs") or {})


def _json_head(path: Path) -> Any:
    # a manifest is a few hundred bytes; one past this bound is not one Punie wrote
    raw = _head(path, 1 << 20)
    try:
        return json.loads(raw) if len(raw) < 1 << 20 else None
    except (ValueError, RecursionError):
        return None


# The first line of an eval suite Punie writes (the demo's), so a rerun knows it for its own.
SUITE_HEADER = "# Written by punie: an eval suite (see docs/eval-suites.md).\n"

# kind -> (what marks a file as Punie's output of that kind, in words; the test of it)
FILE_KINDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "dataset": ("no manifest beside it listing it", _listed_in_manifest),
    "manifest": (
        "not a Punie manifest",
        lambda p: isinstance(m := _json_head(p), dict) and {"punie", "outputs"} <= m.keys(),
    ),
    "report": (
        "no Punie generator mark in its head",
        lambda p: re.search(rb'<meta name="generator" content="punie[ "]', _head(p)) is not None,
    ),
    "rejects": (
        'its first line is not a {"reason": ..., "row": ...} reject',
        lambda p: _head(p).startswith(b'{"reason": '),
    ),
    "suite": (
        "not an eval suite Punie wrote",
        lambda p: _head(p).startswith(SUITE_HEADER.encode()),
    ),
    "responses": (
        "its first line is not a row `punie generate` wrote",
        lambda p: (
            re.match(rb'\{"id": .{0,2000}?, "sample": \d+, "provenance": \{', _head(p), re.S)
            is not None
        ),
    ),
    "results": (
        "not a Punie eval results file",
        lambda p: re.match(rb'\{\s*"adapter": .*"cases": \[', _head(p), re.S) is not None,
    ),
}


def check_file_replaceable(path: Path | str, kind: str) -> None:
    """Refuse, with one line, to replace `path` unless it is missing, empty, or a Punie output
    of `kind` (see `FILE_KINDS`)."""
    path = Path(path)
    if path.is_dir():
        raise PunieError(f"{path}: is a folder; name a file to write")
    if not path.exists() and not path.is_symlink():
        return
    why, is_ours = FILE_KINDS[kind]
    if path.is_symlink():
        why = "a link"
    elif path.is_file() and (path.stat().st_size == 0 or is_ours(path)):
        return
    raise PunieError(
        f"{path}: exists and is not a Punie {kind} output ({why}); "
        "name a new file or move this one away"
    )


@contextlib.contextmanager
def atomic_file(path: Path | str, mode: str = "w", *, kind: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; rename it onto `path` only if the block succeeds.

    With `kind` (a path the user named), an existing `path` that is not a Punie output of this
    kind (see `check_file_replaceable`) is refused before the block runs and again before the
    rename; without it, `path` lies in a folder Punie owns (a run folder, a temp folder).
    """
    path = Path(path)
    if kind is not None:
        check_file_replaceable(path, kind)
    elif path.is_dir():
        raise PunieError(f"{path}: is a folder; name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise PunieError(f"{path}: a part of this path is a file, not a folder") from None
    except OSError as e:
        raise disk_error(path, e) from None
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        if kind is not None:
            check_file_replaceable(path, kind)  # something may have appeared while the block ran
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # a write to this file fails with no file name: say which output the disk refused
        if _is_disk_error(e) and e.filename in (None, tmp):
            raise disk_error(path, OSError(e.errno, e.strerror)) from None
        raise


def entries(folder: Path) -> list[str]:
    """Every file and folder under `folder`, as sorted `/`-separated relative paths."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found += [(rel / name).as_posix() for name in dirs + files]
    return sorted(found)


def read_marker(folder: Path | str) -> dict[str, Any] | None:
    """The marker of a Punie folder output, or None when there is none (or it is unreadable)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(marker, dict) and isinstance(marker.get("files"), list)
    return marker if ok else None


def check_replaceable(path: Path | str, kind: str) -> None:
    """Refuse, with one line, to replace `path` unless it is missing, empty, or a Punie output of
    `kind` holding only what Punie wrote there."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise PunieError(f"{path}: is a file; name a folder (Punie writes a folder here)")
    with contextlib.suppress(OSError):
        if Path.cwd().resolve().is_relative_to(path.resolve()):
            raise PunieError(f"{path}: is the current folder (or holds it); name another folder")
    found = [e for e in entries(path) if e != MARKER]
    if not found and not (path / MARKER).exists():
        return
    marker = read_marker(path)
    if marker is None:
        raise PunieError(
            f"{path}: is not empty and is not a Punie output (it holds {found[0]}); "
            "name a new or empty folder"
        )
    if marker.get("kind") != kind:
        raise PunieError(
            f"{path}: holds a Punie {marker.get('kind')!s} output, not a {kind}; "
            "name another folder"
        )
    foreign = sorted(set(found) - set(marker["files"]))
    if foreign:
        raise PunieError(
            f"{path}: holds {foreign[0]}, which Punie did not write; "
            "move it away or name another folder"
        )


@contextlib.contextmanager
def atomic_dir(path: Path | str, *, kind: str) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; it replaces `path` only if the block succeeds.

    `kind` names what the folder is; an existing `path` that is not a Punie output of this kind
    (see `check_replaceable`) is refused before the block runs and again before the swap.
    """
    path = Path(path)
    check_replaceable(path, kind)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except (FileExistsError, NotADirectoryError):
        raise PunieError(f"{path}: a part of this path is a file, not a folder") from None
    except OSError as e:
        raise disk_error(path, e) from None
    old = None
    try:
        yield tmp
        marker = {"kind": kind, "files": entries(tmp)}
        with open(tmp / MARKER, "w", encoding="utf-8") as f:
            json.dump(marker, f, indent=2, sort_keys=True)
            f.write("\n")
        check_replaceable(path, kind)  # something may have appeared while the block ran
        if path.exists():
            # aside first, so a crash between the two renames keeps the old output
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            os.replace(old, path)
            old = None
        if _is_disk_error(e) and (e.filename is None or str(e.filename).startswith(str(tmp))):
            raise disk_error(path, OSError(e.errno, e.strerror)) from None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def is_safe_name(name: str) -> bool:
    """Whether `name` is one plain file name on every OS: letters, digits, `.`, `_`, `-`, no
    no leading dot or `-`, no `..`, at most 100 characters."""
    return bool(SAFE_NAME.fullmatch(name)) and ".." not in name


def safe_file_name(text: str) -> str:
    """`text` made a safe file name: every other character becomes `_` (`../x` -> `_._x`)."""
    name = _UNSAFE.sub("_", text)[:100].replace("..", "_.")
    return name if is_safe_name(name) else f"_{name}"[:100]


def file_in(folder: Path | str, name: str) -> Path:
    """`folder / name`, refused with one line unless it is a file directly inside `folder`."""
    folder = Path(folder)
    path = folder / name
    if not name or Path(name).name != name or path.resolve().parent != folder.resolve():
        raise PunieError(f"{name!r}: not a plain file name; it would be written outside {folder}")
    return path


def write_json(path: Path | str, data: Any, *, kind: str | None = None) -> None:
    with atomic_file(path, kind=kind) as f:
        json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path: Path | str, rows: Any) -> int:
    """Write an iterable of JSON-able rows, one per line; returns how many were written."""
    n = 0
    with atomic_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path | str) -> Iterator[tuple[int, dict]]:
    """Stream `(line number, row)` from a JSONL file, skipping blank lines.

    Lines are read by `punie.jsonl`, as `punie dataset validate` reads them; a line that is not a
    JSON object is a one-line PunieError naming the file and line.
    """
    first = True
    for n, raw in jsonl.lines(path):
        if not raw.strip():
            continue
        if first and raw.lstrip().startswith(b"["):
            raise jsonl.array_error(path, "each line must be one JSON object")
        first = False
        try:
            row = jsonl.loads(raw)
        except jsonl.BadJSON as e:
            raise PunieError(f"{path}:{n}: {e.reason}") from None
        if not isinstance(row, dict):
            raise PunieError(f"{path}:{n}: a row must be a JSON object")
        yield n, row


def read_jsonl_tolerant(path: Path | str) -> list[dict]:
    """The rows of a log-like JSONL file (metrics, events) that a writer may have been killed
    while appending to: a missing file is empty, and a cut-short line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for _, raw in jsonl.lines(path):
        with contextlib.suppress(jsonl.BadJSON):
            row = jsonl.loads(raw)
            if isinstance(row, dict):
                rows.append(row)
    return rows


def read_jsonl_lenient(path: Path | str) -> Iterator[tuple[int, dict]]:
    """`(line number, row)` of a JSONL file someone else may have written or cut short (metrics
    given to a report): a line that is not a JSON object is skipped with a warning naming it."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        warn(f"{path}: cannot read ({e.strerror}); left out")
        return
    for n, raw in jsonl.lines(path):
        if not raw.strip():
            continue
        try:
            row = jsonl.loads(raw)
        except jsonl.BadJSON as e:
            why = "cut short (its writer stopped mid-line)" if not raw.endswith(b"\n") else e.reason
            warn(f"{path}:{n}: skipped: {why}")
            continue
        if not isinstance(row, dict):
            warn(f"{path}:{n}: skipped: not a JSON object")
            continue
        yield n, row


def file_sha256(path: Path | str) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
