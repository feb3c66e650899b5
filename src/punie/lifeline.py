"""`python -m punie.lifeline WATCH PARENT_PID MODULE ARGS...`: run `python -m MODULE ARGS...`
so that it ends when Punie ends, however Punie ends.

Punie stops its children itself on every exit it gets to run code for (`punie.proc`), but a
`kill -9`, a crash or a closed Terminal runs none of it, and an orphaned `mlx_lm.server` keeps
its model's memory. So every Python child runs under this module, in the same process (same pid,
same signals), armed first with one of the watches `punie.platform.parent_death_watch` picks:

- `pdeathsig` (Linux): the kernel sends SIGTERM when the parent dies (strictly, when the parent's
  thread that started the child ends: start long-lived children from a thread that lives as long
  as they should, as Punie does from its main thread);
- `poll` (macOS, and anywhere): a daemon thread checks `getppid()` twice a second and, when
  the parent is gone, sends SIGTERM to the child's process group, then SIGKILL after a grace
  period (the training worker uses it to finish its step and write a checkpoint).

A parent that died before the watch was armed is caught by comparing `getppid()` with
PARENT_PID once armed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import runpy
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_INTERVAL_S = 0.5
KILL_GRACE_S = 30.0


def command(cmd: list[str], watch: str, parent: int) -> list[str]:
    """`[python, -m, module, args...]` run under the lifeline; any other argv is returned as is."""
    if len(cmd) >= 3 and cmd[0] == sys.executable and cmd[1] == "-m":
        return [cmd[0], "-m", __name__, watch, str(parent), *cmd[2:]]
    return list(cmd)


def _set_pdeathsig(sig: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _stop_own_group(grace: float) -> None:
    # Our own group when we lead one (children start in a new session); else only ourselves.
    me = os.getpid()
    kill = (lambda s: os.killpg(me, s)) if os.getpgrp() == me else (lambda s: os.kill(me, s))
    kill(signal.SIGTERM)
    time.sleep(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        kill(signal.SIGKILL)


def _poll(parent: int, interval: float, grace: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    _stop_own_group(grace)


def arm(watch: str, parent: int, *, interval: float = POLL_INTERVAL_S, grace: float = KILL_GRACE_S):
    """Make this process end when `parent` does."""
    if watch == "pdeathsig":
        _set_pdeathsig(signal.SIGTERM)
    elif watch == "poll":
        thread = threading.Thread(
            target=_poll, args=(parent, interval, grace), name="punie-lifeline", daemon=True
        )
        thread.start()
    else:
        raise SystemExit(f"punie.lifeline: unknown watch {watch!r} (pdeathsig or poll)")
    if os.getppid() != parent:
        raise SystemExit(f"punie.lifeline: parent {parent} exited before the child started")


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        raise SystemExit("usage: python -m punie.lifeline WATCH PARENT_PID MODULE [ARGS...]")
    watch, parent, module, *args = argv
    arm(watch, int(parent))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
