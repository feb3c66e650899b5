"""Every choice Punie makes by operating system, in one place.

Each choice is a pure function of a `Host` (the OS name, its version, the CPU, whether Python runs
translated), so the tests run the Darwin branch on Linux by passing a Darwin `Host` in, never by
patching `sys.platform`. `current()` reads the machine Punie runs on; everything else takes a host.
"""

from __future__ import annotations

import functools
import platform as _stdlib_platform
import sys
from dataclasses import dataclass


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


# --- memory: peak RSS units ---


# --- processes: discovery without reading /proc directly ---


# --- setup: where uv lives ---
