"""Run folders on disk: finding, listing, locking and claiming them, and reading them back.

The layout of a run folder is `punie.train.rundir.RunDir`'s; the records it holds are
`punie.train.records`'. Everything here is backend-neutral: any backend that writes metrics.jsonl
through `MetricsLog` gets the same record.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from punie import jsonl, platform
from punie.errors import PunieError
from punie.fsio import file_sha256, read_jsonl_tolerant, write_json
from punie.train.records import MetricsRecord, MetricsSummary
from punie.train.rundir import RunDir, adapter_weights

DEFAULT_RUNS_DIR = Path("adapters")


def data_manifest(data: Path | str) -> dict[str, dict[str, Any]]:
    """sha256, size and row count of each split file in a data folder."""
    manifest = {}
    for split in ("train", "valid", "test"):
        path = Path(data) / f"{split}.jsonl"
        if path.is_file():
            rows = _count_rows(path)
            manifest[split] = {
                "path": str(path),
                "sha256": file_sha256(path),
                "bytes": path.stat().st_size,
                "rows": rows,
            }
    return manifest


def suite_manifest(config) -> dict[str, dict[str, Any]]:
    """The suites a run reads (`reward_suite`, `select_by`): path and sha256 of each file; a
    built-in suite's name stands alone. A resume refuses a file that changed since."""
    manifest = {}
    for key in ("reward_suite", "select_by"):
        value = getattr(config, key)
        if not value:
            continue
        path = Path(value)
        manifest[key] = (
            {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
            if path.is_file()
            else {"path": value, "sha256": None}
        )
    return manifest


def _count_rows(path: Path) -> int:
    """Non-blank lines of a JSONL split; a JSON array saved as .jsonl is refused here, before a
    run folder exists, since the trainer would take each of its lines for a row."""
    rows = 0
    for _, line in jsonl.lines(path):
        if not line.strip():
            continue
        if rows == 0 and line.lstrip().startswith(b"["):
            raise jsonl.array_error(path, "training reads one JSON object a line")
        rows += 1
    return rows


def git_commit(cwd: Path | None = None) -> str | None:
    """`git describe --always --dirty` of the working folder, or None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=40"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl as plain data; a last line cut short by a kill is skipped."""
    return read_jsonl_tolerant(path)


def read_metric_records(path: Path | str) -> list[MetricsRecord]:
    """The records of a metrics.jsonl, typed."""
    return [MetricsRecord.from_dict(row) for row in read_jsonl_tolerant(path)]


def summarize_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(MetricsSummary.of([MetricsRecord.from_dict(r) for r in rows]))


def rollout_samples(run_dir: Path | str, per_step: int = 3) -> dict[str, dict[str, Any]]:
    """A GRPO run's first and last steps as `{"first"|"last": {"iteration", "rows"}}`, a few
    completions of each, best reward first; empty when the run wrote no rollouts."""
    rows = read_jsonl_tolerant(RunDir(Path(run_dir)).rollouts)
    if not rows:
        return {}
    out = {}
    for key, iteration in (("first", rows[0]["iteration"]), ("last", rows[-1]["iteration"])):
        step = [r for r in rows if r["iteration"] == iteration]
        step.sort(key=lambda r: -r["reward"])
        out[key] = {"iteration": iteration, "rows": step[:per_step]}
    return out


def load_record(run_dir: Path | str) -> dict[str, Any]:
    path = RunDir(Path(run_dir)).record
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PunieError(f"{run_dir}: not a run folder (no {path.name})") from None
    except json.JSONDecodeError as e:
        raise PunieError(f"{path}: not valid JSON ({e})") from None


def write_record(run_dir: Path | str, record: dict[str, Any]) -> None:
    write_json(RunDir(Path(run_dir)).record, record)


def lineage(from_adapter: str | None) -> list[dict[str, Any]]:
    """The chain of runs an adapter comes from, oldest first (empty for a fresh adapter)."""
    if not from_adapter:
        return []
    path = Path(from_adapter)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder, folder.parent):  # a run folder, or its best/ or checkpoint/
        if RunDir(candidate).is_run():
            parent = load_record(candidate)
            entry = {
                "run": parent.get("name"),
                "path": str(candidate),
                "adapter": str(path),
                "adapter_sha256": _adapter_hash(path),
            }
            return [*parent.get("lineage", []), entry]
    return [
        {"run": None, "path": None, "adapter": str(path), "adapter_sha256": _adapter_hash(path)}
    ]


def _adapter_hash(path: Path) -> str | None:
    file = adapter_weights(path)
    return file_sha256(file) if file.is_file() else None


def find_run(name: str | Path, runs_dir: Path | str = DEFAULT_RUNS_DIR) -> Path:
    """A run folder from its path or its name under `runs_dir`."""
    for candidate in (Path(name), Path(runs_dir) / str(name)):
        if RunDir(candidate).is_run():
            return candidate
    known = ", ".join(r["name"] for r in list_runs(runs_dir)) or "none"
    raise PunieError(f"{name}: no such run (in {runs_dir}: {known})")


def list_runs(runs_dir: Path | str = DEFAULT_RUNS_DIR) -> list[dict[str, Any]]:
    """Every run record under `runs_dir`, newest first; a `running` run whose process is gone
    reads as `interrupted`."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    records = []
    for folder in sorted(root.iterdir()):
        if RunDir(folder).is_run():
            records.append(current_status(folder, load_record(folder)))
    return sorted(records, key=lambda r: r.get("created", 0), reverse=True)


def current_status(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The record with live numbers from metrics.jsonl, and stale `running` marked stopped."""
    record = {**record, "path": str(run_dir)}
    if record.get("status") == "running":
        record.update(summarize_metrics(read_metrics(RunDir(run_dir).metrics)))
        live = is_live(run_dir)
        if live is None:  # a run from before run folders had a lock: its pid is all there is
            pid = record.get("pid")
            live = bool(pid) and platform.exists(pid)
        if not live:
            record["status"] = "interrupted"
    return record


def now() -> float:
    return round(time.time(), 3)


class RunLock:
    """The one writer's hold on a run folder: an exclusive flock on its `.lock` file.

    The kernel drops the lock when the holder exits, however it dies, so a lock is never stale
    and a reused pid cannot pass for a live run.
    """

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir = run_dir
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


def lock_run(run_dir: Path | str) -> RunLock:
    """Take the run folder's lock (creating the folder), or say in one line who holds it."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PunieError(f"{run_dir}: a part of this path is a file, not a folder") from None
    fd = os.open(RunDir(run_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        by = f" (pid {holder})" if holder.isdigit() else ""
        raise PunieError(
            f"{run_dir}: run {run_dir.name!r} is being written by another punie{by}; "
            "wait for it to finish or stop it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return RunLock(run_dir, fd)


def is_live(run_dir: Path | str) -> bool | None:
    """Whether a punie process holds the run folder's lock now; None when it has no lock file."""
    try:
        fd = os.open(RunDir(Path(run_dir)).lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def claim(run_dir: Path | str, *, resume: bool = False, overwrite: bool = False) -> RunLock:
    """Lock `run_dir` for one writer and make it ready: a fresh run needs a new or empty folder,
    or (with `overwrite`) one that is a Punie run no process is writing, which is emptied; a
    resume needs the run to be stopped. A folder that is not a Punie run is never touched."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise PunieError(f"{run_dir}: is a file; a run needs a folder")
    lock_name = RunDir(run_dir).lock.name
    is_run = RunDir(run_dir).is_run()
    if not resume and not is_run and run_dir.is_dir():
        other = sorted(p.name for p in run_dir.iterdir() if p.name != lock_name)
        if other:
            raise PunieError(
                f"{run_dir}: is not empty and is not a Punie run (it holds {other[0]}); "
                "pick another --name"
            )
    lock = lock_run(run_dir)
    if not resume and is_run:
        if not overwrite:
            lock.release()
            raise PunieError(
                f"{run_dir}: already holds a run; pick another --name, --resume it, "
                "or pass --overwrite"
            )
        for entry in run_dir.iterdir():
            if entry.name == lock_name:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    return lock
