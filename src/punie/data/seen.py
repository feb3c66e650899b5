"""What has been seen before, kept on disk so memory stays flat however many rows stream past.

Dedupe, mix and stats need to know whether a row's hash came up earlier, and where. A Python set
of ints costs about 100 bytes a row, so a 10-million-row input would need a gigabyte just for
that. `FirstSeen` keeps the keys in a temporary SQLite file instead, with a fixed page cache: the
process holds two megabytes of it and the operating system's file cache holds the rest. One insert
costs about 8 µs on a slow core, a tenth of the cost of parsing and checking the row it belongs to.

Keys are 64-bit hashes; a location (`at`) is whatever integer the caller packs (file, line).
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

# SQLite's page cache, the one place memory grows, and it stops here. 2 MB (SQLite's default)
# rather than more: at a million rows a 16 MB cache saved ~2 µs an insert, against 14 MB of memory.
CACHE_KB = 2 * 1024


def _signed(key: int) -> int:
    """SQLite integers are signed 64-bit; hashes arrive unsigned."""
    return key - (1 << 64) if key >= 1 << 63 else key


class FirstSeen:
    """64-bit keys and where each was first seen; optionally, where each repeat was seen.

    Use as a context manager: the temporary file is removed on exit.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="punie-seen-")
        self._db = sqlite3.connect(Path(self._dir.name) / "seen.db", isolation_level=None)
        # Nothing here must survive a crash, so no journal and no fsync.
        for pragma in (
            "journal_mode=OFF",
            "synchronous=OFF",
            "locking_mode=EXCLUSIVE",
            f"cache_size=-{CACHE_KB}",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE first (key INTEGER PRIMARY KEY, at INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE repeat (at INTEGER PRIMARY KEY)")
        self._db.execute("BEGIN")

    def __enter__(self) -> FirstSeen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()

    def get(self, key: int) -> int | None:
        """Where `key` was first seen, or None; remembers nothing."""
        hit = self._db.execute("SELECT at FROM first WHERE key = ?", (_signed(key),)).fetchone()
        return None if hit is None else hit[0]

    def first(self, key: int, at: int) -> int | None:
        """None if `key` is new (and remember it at `at`), else where it was first seen."""
        key = _signed(key)
        if self._db.execute("INSERT OR IGNORE INTO first VALUES (?, ?)", (key, at)).rowcount:
            return None
        return self.get(key)

    def first_of(self, keys: Sequence[int], at: int) -> int | None:
        """None if none of `keys` was seen (and remember them all at `at`), else the earliest
        place any of them was seen."""
        keys = [_signed(k) for k in keys]
        marks = ",".join("?" * len(keys))
        hit = self._db.execute(
            f"SELECT min(at) FROM first WHERE key IN ({marks})", keys
        ).fetchone()[0]
        if hit is None:
            self._db.executemany(
                "INSERT OR IGNORE INTO first VALUES (?, ?)", [(k, at) for k in keys]
            )
        return hit

    def repeat(self, at: int) -> None:
        """Remember that the row at `at` repeats an earlier one."""
        self._db.execute("INSERT OR IGNORE INTO repeat VALUES (?)", (at,))

    def repeats(self, lo: int, hi: int) -> Iterator[int]:
        """The repeats remembered at `lo <= at < hi`, in ascending order, streamed."""
        yield from (
            at
            for (at,) in self._db.execute(
                "SELECT at FROM repeat WHERE at >= ? AND at < ? ORDER BY at", (lo, hi)
            )
        )
