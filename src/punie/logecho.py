"""Lines of a child's log that belong on the console too, not only in the log file.

mlx_lm prints "[WARNING] Generating with a model that requires N MB which is close to the maximum
recommended size of M MB. This can be slow." when the weights nearly fill the GPU's recommended
working set (Apple silicon: see docs/mac.md). The server and the trainer write their output to a
log file that nobody reads while things are merely slow, so `LogEcho` follows that file while the
child runs and copies such lines to stderr, each distinct line once.

    with LogEcho(run_dir / "server.log", "mlx_lm.server"):
        ...
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO

PATTERNS = ("close to the maximum recommended size",)


def worth_echoing(line: str) -> bool:
    return any(p in line for p in PATTERNS)


class LogEcho:
    """Follows `path` from its current end on a daemon thread; `stop()` reads what is left."""

    def __init__(self, path: Path, source: str, out: TextIO | None = None, interval: float = 0.5):
        self.path = Path(path)
        self.source = source
        self.out = out
        self.interval = interval
        self._offset = self.path.stat().st_size if self.path.exists() else 0
        self._partial = b""
        self._seen: set[str] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="log-echo", daemon=True)

    def start(self) -> LogEcho:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        self.poll()

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if worth_echoing(line) and line not in self._seen:
                self._seen.add(line)
                print(f"{self.source}: {line}", file=self.out or sys.stderr, flush=True)

    def _follow(self) -> None:
        while not self._done.wait(self.interval):
            self.poll()

    def __enter__(self) -> LogEcho:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
