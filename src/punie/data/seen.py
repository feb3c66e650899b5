"""What has been seen before, kept on disk so memory stays flat however many rows stream past.

Dedupe, mix and stats need to know whether a row's hash came up earlier, and where. A Python set
of ints costs about 100 bytes a row, so a 10-million-row input would need a gigabyte just for
that. `FirstSeen` keeps the keys in a temporary SQLite file instead, with a fixed page cache: the
process holds two megabytes of it and the operating system's file cache holds the rest. One insert
costs about 8 µs on a slow core, a tenth of the cost of parsing and checking the row it belongs to.

Near-dedupe's `Buckets` keeps, the same way, each kept row's LSH band keys and its shingle hashes
(8 bytes a distinct word 3-gram), so that a candidate's exact Jaccard is computed from disk.

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
BUCKET = 100  # kept rows a band key leads to (see Buckets)


def _signed(key: int) -> int:
    """SQLite integers are signed 64-bit; hashes arrive unsigned."""
    return key - (1 << 64) if key >= 1 << 63 else key


class _Scratch:
    """A SQLite file in a temporary folder, removed on close; a context manager."""

    def __init__(self, *tables: str) -> None:
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
        for table in tables:
            self._db.execute(f"CREATE TABLE {table}")
        self._db.execute("BEGIN")

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._dir.cleanup()


class FirstSeen(_Scratch):
    """64-bit keys and where each was first seen; optionally, where each repeat was seen.

    Use as a context manager: the temporary file is removed on exit.
    """

    def __init__(self) -> None:
        super().__init__(
            "first (key INTEGER PRIMARY KEY, at INTEGER NOT NULL)",
            "repeat (at INTEGER PRIMARY KEY)",
        )

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


class Buckets(_Scratch):
    """The LSH index of near-dedupe: each kept row's band keys, its signature and its shingle
    hashes, so candidates can be ranked and then checked exactly from disk.

    A bucket (the rows sharing one band key) holds at most BUCKET rows. Templated data puts
    thousands of similar rows that are not near duplicates into the same buckets, and every new
    row would be ranked against all of them: the cost per row would grow with the input. A row
    kept after its bucket filled is still indexed in its other bands; `add` says how many it
    missed, so the command can report it.
    """

    def __init__(self) -> None:
        super().__init__(
            "band (key INTEGER NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (key, at)) WITHOUT ROWID",
            "signature (at INTEGER PRIMARY KEY, sig BLOB NOT NULL)",
            "shingles (at INTEGER PRIMARY KEY, hashes BLOB NOT NULL)",
        )

    def candidates(self, keys: Sequence[int]) -> list[tuple[int, bytes]]:
        """(at, signature) of every kept row sharing any of `keys`: at most BUCKET a key."""
        marks = ",".join("?" * len(keys))
        return self._db.execute(
            "SELECT at, sig FROM signature WHERE at IN "
            f"(SELECT at FROM band WHERE key IN ({marks}))",
            [_signed(k) for k in keys],
        ).fetchall()

    def shingles(self, at: int) -> bytes:
        return self._db.execute("SELECT hashes FROM shingles WHERE at = ?", (at,)).fetchone()[0]

    def add(self, at: int, keys: Sequence[int], sig: bytes, hashes: bytes) -> int:
        """Index a kept row; the number of its keys whose bucket was already full."""
        signed = [_signed(k) for k in keys]
        marks = ",".join("?" * len(keys))
        full = {
            key
            for (key,) in self._db.execute(
                f"SELECT key FROM band WHERE key IN ({marks}) GROUP BY key HAVING count(*) >= ?",
                [*signed, BUCKET],
            )
        }
        self._db.executemany(
            "INSERT OR IGNORE INTO band VALUES (?, ?)", [(k, at) for k in signed if k not in full]
        )
        self._db.execute("INSERT INTO signature VALUES (?, ?)", (at, sig))
        self._db.execute("INSERT INTO shingles VALUES (?, ?)", (at, hashes))
        return len(full)
