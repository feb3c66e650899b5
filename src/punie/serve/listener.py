"""Which process listens on a local TCP port: the check that the server answering is our child.

A health answer alone proves only that *something* answers on the port. Linux says who: the
sockets listening on a port are in /proc/net/tcp and tcp6 (by inode), and a process's sockets are
its /proc/PID/fd links (`socket:[INODE]`). Elsewhere (macOS) there is no such cheap, unprivileged
view, and `holds_listener` answers None: the caller falls back to what it knows (the port was
free just before the child started, and the child still runs).
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

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
