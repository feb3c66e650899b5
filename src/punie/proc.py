"""Child processes that never outlive the command that started them.

Every subprocess Punie starts (the trainer, the server) runs in its own process group, so one
signal reaches it and everything it forked. On normal exit, on error and on Ctrl-C the group gets
SIGTERM, then SIGKILL after a grace period.

On Linux, MLX's CPU wheel bundles the reference BLAS, about 20 times slower at matrix products than
OpenBLAS. Where the system has OpenBLAS (Debian: libopenblas0-pthread), children get it through
LD_PRELOAD; `cblas_sgemm` has the same ABI, so only the speed changes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

_OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
)


def openblas_path() -> str | None:
    if not sys.platform.startswith("linux") or os.environ.get("PUNIE_NO_OPENBLAS"):
        return None
    return next((p for p in _OPENBLAS_CANDIDATES if Path(p).exists()), None)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for an MLX child process."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    blas = openblas_path()
    if blas and blas not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(filter(None, [blas, env.get("LD_PRELOAD")]))
    env.update(extra or {})
    return env


def python_module(module: str, *args: str) -> list[str]:
    """`python -m module args...` with the interpreter running Punie."""
    return [sys.executable, "-m", module, *args]


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after `grace` seconds."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # orphans of a child that already exited
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def child_process(
    cmd: Sequence[str],
    *,
    log: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdout: int | None = None,
    grace: float = 10.0,
) -> Iterator[subprocess.Popen]:
    """Start `cmd` in a new process group; the group is stopped when the block exits, however."""
    log_file = open(log, "ab") if log else None  # noqa: SIM115 - closed in finally
    out = stdout if stdout is not None else (log_file or subprocess.DEVNULL)
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env or child_env(),
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=log_file or (subprocess.STDOUT if stdout is not None else subprocess.DEVNULL),
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_group(proc, grace)
        if log_file:
            log_file.close()
