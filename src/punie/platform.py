"""Every choice Punie makes by operating system, in one place.

Each choice is a pure function of a `Host` (the OS name, its version, the CPU, whether Python runs
translated), so the tests run the Darwin branch on Linux by passing a Darwin `Host` in, never by
patching `sys.platform`. `current()` reads the machine Punie runs on; everything else takes a host.

Standard library only, Python 3.9 syntax: scripts/setup loads this file with the system python3
(3.9 on macOS) before uv and .venv exist (scripts/check_platform.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform as _stdlib_platform
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Host:
    system: str  # "linux" or "darwin" (sys.platform's spelling)
    machine: str  # "x86_64", "arm64", "aarch64"
    release: str = ""  # macOS product version ("14.5") or the Linux kernel release
    translated: bool = False  # an x86_64 Python under Rosetta on Apple silicon

    @property
    def is_mac(self) -> bool:
        return self.system == "darwin"

    @property
    def is_linux(self) -> bool:
        return self.system.startswith("linux")


@functools.cache
def current() -> Host:
    """The machine this process runs on."""
    system = "darwin" if sys.platform == "darwin" else sys.platform
    release = _stdlib_platform.mac_ver()[0] if system == "darwin" else _stdlib_platform.release()
    return Host(
        system, _stdlib_platform.machine(), release, _rosetta() if system == "darwin" else False
    )


def _rosetta() -> bool:
    import subprocess

    try:
        out = subprocess.run(
            ["sysctl", "-n", "sysctl.proc_translated"], capture_output=True, text=True, timeout=5
        )
    except OSError:
        return False
    return out.stdout.strip() == "1"


# --- sandbox: rlimits and isolation strategy (eval/sandbox.py) ---

# A uid with no processes of its own, so RLIMIT_NPROC counts only what the sandboxed code forks.
_NOBODY = {"linux": 65534, "darwin": 4294967294}  # macOS's nobody is -2
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7, "arm64": 0xC00000B7}
_NR_SOCKET = {"x86_64": 41, "aarch64": 198, "arm64": 198}
_NR_IO_URING_SETUP = 425  # the same number on both: io_uring can open sockets past seccomp
_X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True)
class SandboxStrategy:
    """One way to start sandboxed code: a command prefix and what it isolates."""

    prefix: tuple[str, ...]
    network: bool = False  # a new network namespace: no network but an unconfigured loopback
    pid_namespace: bool = False  # every process the code forks dies with it; a fresh /proc
    mount_namespace: bool = False  # private tmpfs /tmp, /var/tmp, /dev/shm and a fresh /proc


def sandbox_strategies(host: Host, unshare: str | None) -> tuple[SandboxStrategy, ...]:
    """The ways to isolate code on `host`, strongest first; the sandbox keeps the first that works.

    Namespaces are Linux's alone (`unshare -r` maps the caller to root in a new user namespace,
    which lets it make the others without privileges). Elsewhere only rlimits and a temp folder.
    """
    out = []
    if host.is_linux and unshare:
        base = (unshare, "-rn", "--pid", "--fork", "--kill-child")
        out.append(SandboxStrategy((*base, "--mount", "--mount-proc"), True, True, True))
        out.append(SandboxStrategy(base, True, True))
        out.append(SandboxStrategy((unshare, "-rn"), True))
    out.append(SandboxStrategy(()))
    return tuple(out)


def sandbox_uid(host: Host, euid: int) -> int | None:
    """The uid to run code as: nobody for a root caller (the kernel exempts root from
    RLIMIT_NPROC), else None to stay the caller."""
    return _NOBODY.get(host.system) if euid == 0 else None


def memory_limit_from_parent(host: Host) -> bool:
    """macOS refuses an RLIMIT_AS below a process's current address space, and arm64 processes
    map hundreds of GiB: there the parent polls the child's resident memory instead."""
    return host.is_mac


def sandbox_rlimits(
    host: Host,
    *,
    cpu_s: int,
    memory_mb: int,
    file_mb: int,
    nproc: int,
    user_processes: int | None = None,
) -> tuple[tuple[str, int, int], ...]:
    """(resource name, soft, hard) for the child, by host.

    RLIMIT_NPROC counts every process of the child's uid: with `user_processes` (the caller's
    current count, when the code keeps the caller's uid) the limit allows `nproc` more than that,
    since a desktop user already runs hundreds. With a fresh uid (None) it is `nproc` itself.
    """
    mb = 1024 * 1024
    limits = [("RLIMIT_CPU", cpu_s, cpu_s + 1)]
    if not memory_limit_from_parent(host):
        limits.append(("RLIMIT_AS", memory_mb * mb, memory_mb * mb))
    procs = nproc + (user_processes or 0)
    limits += [
        ("RLIMIT_FSIZE", file_mb * mb, file_mb * mb),
        ("RLIMIT_NPROC", procs, procs),
        ("RLIMIT_NOFILE", 256, 256),
        ("RLIMIT_CORE", 0, 0),
    ]
    return tuple(limits)


def unix_socket_filter(host: Host) -> bytes | None:
    """A seccomp BPF program that refuses socket(AF_UNIX, ...) (so no host Unix socket can be
    reached, whatever its permissions), io_uring (which opens sockets past the filter) and
    foreign syscall ABIs (x32, i386); None where Linux's seccomp or the CPU is not known.

    Returns the `struct sock_filter` array, ready for prctl(PR_SET_SECCOMP).
    """
    import struct

    arch = _AUDIT_ARCH.get(host.machine)
    if not host.is_linux or arch is None:
        return None
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, eacces, eperm = 0x7FFF0000, 0x00050000 | 13, 0x00050000 | 1
    x86 = host.machine == "x86_64"
    prog = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, arch),
        (ret, 0, 0, eperm),
        (ld, 0, 0, 0),  # seccomp_data.nr
        (jge, 0, 1, _X32_SYSCALL_BIT) if x86 else (jeq, 0, 1, 0xFFFFFFFF),
        (ret, 0, 0, eperm),
        (jeq, 0, 1, _NR_IO_URING_SETUP),
        (ret, 0, 0, eperm),
        (jeq, 0, 3, _NR_SOCKET[host.machine]),
        (ld, 0, 0, 16),  # the low half of args[0], the domain (both CPUs are little-endian)
        (jeq, 0, 1, 1),  # AF_UNIX
        (ret, 0, 0, eacces),
        (ret, 0, 0, allow),
    ]
    return b"".join(struct.pack("=HBBI", *op) for op in prog)


def tree_rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid` and all its descendants (None once it is gone), read with psutil
    when installed, else one `ps` call; neither reads /proc by hand, so both work on macOS."""
    try:
        import psutil
    except ImportError:
        return _ps_tree_rss(pid)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _ps_tree_rss(pid: int) -> int | None:
    import subprocess

    try:
        out = subprocess.run(
            ["ps", "-A", "-o", "pid=,ppid=,rss="], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return rss_of_tree(out, pid)


def rss_of_tree(ps_output: str, pid: int) -> int | None:
    """Bytes resident in `pid` and its descendants, from `ps -A -o pid=,ppid=,rss=` (KiB on
    Linux and macOS alike)."""
    rss, table = {}, []
    for line in ps_output.splitlines():
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            table.append(Process(int(fields[0]), int(fields[1]), ""))
            rss[int(fields[0])] = int(fields[2])
    if pid not in rss:
        return None
    return 1024 * (rss[pid] + sum(rss[p.pid] for p in children_of(pid, table)))


def user_process_count(uid: int) -> int:
    """How many processes `uid` runs now (for a process limit relative to it)."""
    import subprocess

    try:
        out = subprocess.run(
            ["ps", "-A", "-o", "uid="], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.split() if line == str(uid))


# --- memory: peak RSS units ---


def peak_rss_bytes(host: Host, ru_maxrss: int) -> int:
    """`getrusage(...).ru_maxrss` in bytes: XNU reports bytes, Linux kibibytes."""
    return ru_maxrss if host.is_mac else ru_maxrss * 1024


# --- processes: discovery without reading /proc directly ---
# /proc exists only on Linux; `ps -o pid=,ppid=,command=` answers the same on both systems (-ww:
# never cut the command at the terminal's width). psutil, where installed, avoids the fork.

PS_COMMAND = ("ps", "-ww", "-A", "-o", "pid=,ppid=,command=")


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    command: str  # the arguments joined by spaces ("" where the OS hides them)


def parse_ps(text: str) -> list[Process]:
    """The rows of `PS_COMMAND`'s output."""
    found = []
    for line in text.splitlines():
        fields = line.split(None, 2)
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            found.append(
                Process(int(fields[0]), int(fields[1]), fields[2] if len(fields) > 2 else "")
            )
    return found


def processes(source: str = "auto") -> list[Process]:
    """Every process visible to this user; `source`: "psutil", "ps", or "auto" (psutil if found)."""
    if source == "auto":
        import importlib.util

        source = "psutil" if importlib.util.find_spec("psutil") else "ps"
    if source == "psutil":
        import psutil

        found = []
        for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
            found.append(
                Process(p.info["pid"], p.info["ppid"] or 0, " ".join(p.info["cmdline"] or ()))
            )
        return found
    import subprocess

    out = subprocess.run(PS_COMMAND, capture_output=True, text=True, check=True, timeout=30)
    return parse_ps(out.stdout)


def children_of(pid: int, table: list[Process]) -> list[Process]:
    """The processes in `table` whose parent is `pid`, then theirs, and so on (parents first)."""
    found, parents = [], {pid}
    while True:
        layer = [p for p in table if p.ppid in parents and p not in found and p.pid != pid]
        if not layer:
            return found
        found += layer
        parents = {p.pid for p in layer}


def mentioning(text: str, table: list[Process] | None = None) -> list[Process]:
    """The processes whose command line contains `text` (this process and its `ps` excluded)."""
    import os

    table = processes() if table is None else table
    return [p for p in table if text in p.command and p.pid != os.getpid() and not _is_ps(p)]


def _is_ps(p: Process) -> bool:
    return p.command.startswith(" ".join(PS_COMMAND))


def exists(pid: int) -> bool:
    """Whether a process `pid` exists (a zombie counts until its parent reaps it)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


# --- processes: who listens on a local port (is the server answering our child?) ---
#
# A health answer proves only that *something* answers on the port. Linux says who: sockets
# listening on a port are in /proc/net/tcp and tcp6 (by inode), and a process's sockets are its
# /proc/PID/fd links (`socket:[INODE]`). macOS has no such cheap, unprivileged view, so
# `holds_listener` answers None there and the caller falls back to what it knows (the port was
# free just before the child started, and the child still runs).

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column
# The listening addresses a connection to 127.0.0.1 can reach.
REACHES_LOOPBACK = {"127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0"}


def _address(hex_addr: str) -> str:
    """/proc/net/tcp's address: 32-bit words in host byte order, 1 word (IPv4) or 4 (IPv6)."""
    raw = b"".join(
        struct.pack("=I", int(hex_addr[i : i + 8], 16)) for i in range(0, len(hex_addr), 8)
    )
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def listener_inodes(port: int, proc: Path = Path("/proc")) -> set[str] | None:
    """Inodes of the sockets listening on `port` at an address 127.0.0.1 reaches; None where
    /proc/net does not exist."""
    inodes: set[str] = set()
    found = False
    for table in ("tcp", "tcp6"):
        try:
            rows = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for row in rows:
            fields = row.split()
            addr, port_hex = fields[1].split(":")
            if (
                fields[3] == LISTEN
                and int(port_hex, 16) == port
                and _address(addr) in REACHES_LOOPBACK
            ):
                inodes.add(fields[9])
    return inodes if found else None


def holds_listener(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds a socket listening on `port` (reachable at 127.0.0.1); None
    where this system cannot say (no /proc, or nothing visible listens there)."""
    inodes = listener_inodes(port)
    if not inodes:
        return None
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    for fd in fds:
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except OSError:  # closed since listed
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


# --- setup: where uv lives ---
# `pip install --user uv` puts uv in the user base's bin: ~/.local/bin on Linux, but
# ~/Library/Python/X.Y/bin under a python.org or Xcode (framework) Python on macOS.


def uv_dirs(host: Host, *, home: str, user_base: str, scripts: str) -> list[str]:
    """Where a uv installed by its own installer, by pip (--user or not) or by Homebrew lands."""
    dirs = [f"{home}/.local/bin", f"{user_base}/bin", scripts]
    if host.is_mac:
        dirs.append("/opt/homebrew/bin")
    return list(dict.fromkeys(dirs))


def uv_dirs_here() -> list[str]:
    import os
    import site
    import sysconfig

    return uv_dirs(
        current(),
        home=os.path.expanduser("~"),
        user_base=site.getuserbase(),
        scripts=sysconfig.get_path("scripts"),
    )


def uv_install_hint(host: Host) -> str:
    """What to run where pip refuses to install uv (an externally managed Python)."""
    if host.is_mac:
        return "brew install uv"
    return "curl -LsSf https://astral.sh/uv/install.sh | sh  (or: pipx install uv)"


def mlx_supported(host: Host) -> str | None:
    """None where MLX has wheels (Linux; macOS 14+ on arm64), else the reason, in one line."""
    if host.is_linux:
        return None
    if not host.is_mac:
        return f"Punie needs macOS 14+ on Apple silicon, or Linux; this is {host.system}"
    if host.translated:
        return (
            "this python3 runs under Rosetta (x86_64); MLX needs a native arm64 Python "
            "on Apple silicon (e.g. /usr/bin/python3 or Homebrew's in /opt/homebrew)"
        )
    if host.machine != "arm64":
        return f"this is an Intel Mac ({host.machine}); MLX needs Apple silicon (M1 or later)"
    if _version(host.release) < (14,):
        return f"this is macOS {host.release or '(unknown)'}; MLX needs macOS 14 (Sonoma) or later"
    return None


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


# --- reports: a headless Chrome or Chromium for the rendered-report test ---

MAC_BROWSERS = (
    "Google Chrome.app/Contents/MacOS/Google Chrome",
    "Chromium.app/Contents/MacOS/Chromium",
)


def chrome_candidates(host: Host, env: dict[str, str]) -> list[str]:
    """Browsers to try, best first: `PUNIE_CHROME`, then names on PATH, then macOS app bundles."""
    found = [env["PUNIE_CHROME"]] if env.get("PUNIE_CHROME") else []
    found += ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
    if host.is_mac:
        roots = ["/Applications"] + ([f"{env['HOME']}/Applications"] if env.get("HOME") else [])
        found += [f"{root}/{app}" for root in roots for app in MAC_BROWSERS]
    return found


def find_chrome(host: Host | None = None, env: dict[str, str] | None = None) -> str | None:
    """The first of `chrome_candidates` that is an executable (names looked up on env's PATH)."""
    import os
    import shutil

    env = dict(os.environ) if env is None else env
    for candidate in chrome_candidates(host or current(), env):
        path = shutil.which(candidate, path=env.get("PATH", ""))
        if path:
            return path
    return None


def chrome_install_hint(host: Host) -> str:
    if host.is_mac:
        return "no Chrome or Chromium found: brew install --cask chromium, or set PUNIE_CHROME"
    return "chromium is not installed (scripts/setup --test), or set PUNIE_CHROME"


# --- children: parent-death ---

PARENT_DEATH_WATCHES = ("pdeathsig", "poll")


def parent_death_watch(host: Host) -> str:
    """How a child notices that Punie is gone, even after a `kill -9` that runs no cleanup.

    Linux has `prctl(PR_SET_PDEATHSIG)`: the kernel signals the child when its parent exits.
    macOS has no equivalent, so there the child polls `getppid()`, which changes (to 1 or a
    subreaper) when the parent dies; see `punie.lifeline`.
    """
    return "pdeathsig" if host.is_linux else "poll"
