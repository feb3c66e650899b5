"""Child processes that never outlive the command that started them.

Every subprocess Punie starts (the trainer, the server) runs in its own process group, so one
signal reaches it and everything it forked. On normal exit, on error and on Ctrl-C the group gets
SIGTERM, then SIGKILL after a grace period. SIGTERM and SIGHUP (a closed Terminal) reach the
`punie` command as Ctrl-C does (`stop_on_signals`, installed by the CLI), so they take the same
way out. Where Punie gets no chance to clean up (`kill -9`, a crash), each Python child ends on
its own: it runs under `punie.lifeline`, which watches for its parent's death.

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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from punie import lifeline
from punie.platform import current, parent_death_watch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

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


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C's KeyboardInterrupt would be."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_on_signals() -> Callable[[], int | None]:
    """Make SIGTERM and SIGHUP raise `Stopped` (a KeyboardInterrupt) in the main thread, once;
    returns a function that tells which of them arrived (None if neither did).

    Every cleanup written for Ctrl-C (children stopped, checkpoint kept, run marked interrupted)
    then runs for them too. Later ones are swallowed so that the cleanup finishes; the handler
    stays a Python function, not SIG_IGN, because children would inherit SIG_IGN across exec.
    """
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not fired:
            fired.append(signum)
            raise Stopped(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    return lambda: fired[0] if fired else None


def signal_group(pgid: int, sig: int) -> None:
    """Signal a process group that may be gone. macOS answers EPERM, not ESRCH, for a group whose
    leader has exited but is not reaped yet, so both mean: nothing left to signal."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after `grace` seconds."""
    if proc.poll() is not None:
        signal_group(proc.pid, signal.SIGKILL)  # orphans of a child that already exited
        return
    signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def spawn(
    cmd: Sequence[str],
    *,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start `cmd` in a new process group, under `punie.lifeline` when it is `python -m ...`."""
    guarded = lifeline.command(list(cmd), parent_death_watch(current()), os.getpid())
    return subprocess.Popen(
        guarded,
        cwd=cwd,
        env=env or child_env(),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


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
    err = log_file or (subprocess.STDOUT if stdout is not None else subprocess.DEVNULL)
    proc = spawn(cmd, stdout=out, stderr=err, cwd=cwd, env=env)
    try:
        yield proc
    finally:
        stop_group(proc, grace)
        if log_file:
            log_file.close()
