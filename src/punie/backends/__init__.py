"""Training backends: a small protocol, and a registry fed by the `punie.backends` entry points.

The MLX backend ships with Punie; others (the PyTorch/PEFT/TRL plugin) register an entry point
in the `punie.backends` group and are found at run time. The core never imports their libraries.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from punie.backends.base import Backend, Capabilities, FuseResult
from punie.errors import BackendError

GROUP = "punie.backends"


def available() -> dict[str, object]:
    """Installed backends by name (entry points, not yet loaded)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def get_backend(name: str) -> Backend:
    eps = available()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise BackendError(f"backend: {name!r} is not installed (installed: {known})")
    factory = eps[name].load()
    return factory()


__all__ = ["Backend", "Capabilities", "FuseResult", "GROUP", "available", "get_backend"]
