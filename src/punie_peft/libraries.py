"""The libraries the peft backend needs, found without importing them (no torch at start-up)."""

from __future__ import annotations

import contextlib
import importlib.util
from importlib.metadata import PackageNotFoundError, version

LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate")


def missing_libraries() -> list[str]:
    return [name for name in LIBRARIES if importlib.util.find_spec(name) is None]


def library_versions() -> dict[str, str]:
    found = {}
    for package in LIBRARIES:
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found
