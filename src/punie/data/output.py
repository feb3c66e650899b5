"""Where dataset commands write: atomic JSONL outputs, each with a `manifest.json` beside it.

An output is a folder of split files (`OUT/train.jsonl`, ..., `OUT/manifest.json`) or one file
(`OUT.jsonl` with `OUT.manifest.json` beside it). Rows are written as they stream past, into a
temporary that is renamed into place only when the whole command succeeded; any error leaves
nothing behind. The manifest records the inputs with their sha256, the command, the seed and the
counts, and holds nothing that changes between runs, so same inputs and seed give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from punie import __version__, jsonl
from punie.data.files import DataFile
from punie.data.schema import Problem
from punie.errors import DataError
from punie.fsio import (
    atomic_dir,
    atomic_file,
    check_file_replaceable,
    file_manifest,
    file_sha256,
    write_json,
)


class Sink:
    """One JSONL file being written: counts its rows and hashes its bytes."""

    def __init__(self, f: IO[bytes], name: str):
        self._f = f
        self.name = name
        self.rows = 0
        self._sha = hashlib.sha256()

    def write(self, raw: bytes) -> None:
        if not raw.endswith(b"\n"):
            raw += b"\n"
        self._f.write(raw)
        self._sha.update(raw)
        self.rows += 1

    def write_row(self, row: Any) -> None:
        self.write(json.dumps(row, ensure_ascii=False).encode())

    def reject(self, problem: Problem | str, raw: bytes) -> None:
        """Keep a removed row with the reason it was removed (for `--rejects`)."""
        try:
            row = jsonl.loads(raw)
        except jsonl.BadJSON:
            row = raw.decode("utf-8", "replace").rstrip("\n")
        self.write_row({"reason": str(problem), "row": row})

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


@dataclass
class Output:
    """The sinks of one command's output, and what its manifest will say."""

    path: Path
    sinks: dict[str, Sink]
    rejects: Sink | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    folder: bool = False

    @property
    def sink(self) -> Sink:
        return self.sinks[""]


def manifest_path(out: Path | str, folder: bool) -> Path:
    out = Path(out)
    return out / "manifest.json" if folder else file_manifest(out)


@contextlib.contextmanager
def open_output(
    out: Path | str,
    splits: tuple[str, ...] | None,
    *,
    inputs: list[DataFile],
    seed: int | None = None,
    rejects: Path | str | None = None,
    command: str | None = None,
) -> Iterator[Output]:
    """Sinks for `out`: one per split in a folder, or one file (key "") when `splits` is None.

    Empty split files are left out of a folder (mlx_lm treats an empty split as a missing one).
    """
    out = Path(out)
    with contextlib.ExitStack() as stack:
        reject_sink = None
        if rejects is not None:
            rf = stack.enter_context(atomic_file(rejects, "wb", kind="rejects"))
            reject_sink = Sink(rf, str(rejects))
        if splits is None:
            if out.is_dir():
                raise DataError(f"{out}: is a folder; this command writes one .jsonl file here")
            check_file_replaceable(manifest_path(out, folder=False), "manifest")
            f = stack.enter_context(atomic_file(out, "wb", kind="dataset"))
            result = Output(out, {"": Sink(f, out.name)}, reject_sink)
            yield result
            f.flush()
        else:
            if out.suffix == ".jsonl":
                raise DataError(f"{out}: this command writes a folder of splits; name a folder")
            tmp = stack.enter_context(atomic_dir(out, kind="dataset"))
            files = {s: stack.enter_context(open(tmp / f"{s}.jsonl", "wb")) for s in splits}
            sinks = {s: Sink(f, f"{s}.jsonl") for s, f in files.items()}
            result = Output(out, sinks, reject_sink, folder=True)
            yield result
            for s, f in files.items():
                f.close()
                if result.sinks[s].rows == 0:
                    (tmp / f"{s}.jsonl").unlink()
            write_json(tmp / "manifest.json", _manifest(result, inputs, seed, command))
    if splits is None:
        manifest = _manifest(result, inputs, seed, command)
        write_json(manifest_path(out, folder=False), manifest, kind="manifest")


def _manifest(
    out: Output, inputs: list[DataFile], seed: int | None, command: str | None
) -> dict[str, Any]:
    outputs = {
        s.name: {"rows": s.rows, "sha256": s.sha256} for s in out.sinks.values() if s.rows > 0
    }
    if out.rejects is not None:
        outputs[out.rejects.name] = {"rows": out.rejects.rows, "sha256": out.rejects.sha256}
    return {
        "punie": __version__,
        "command": command if command is not None else shlex.join(["punie", *sys.argv[1:]]),
        "seed": seed,
        "inputs": [{"path": str(f.path), "sha256": file_sha256(f.path)} for f in inputs],
        "outputs": outputs,
        "counts": out.counts,
    }
