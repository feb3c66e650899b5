"""What `punie backends` shows: each installed backend and what it supports.

A backend that fails to load (its plugin's libraries missing or broken) is listed with the reason
rather than hiding the others. Loading a backend must not import its engine (torch for `peft`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from punie.backends import available


def describe_backends() -> list[dict[str, Any]]:
    """One plain dict per installed backend, sorted by name."""
    out = []
    for name, entry_point in sorted(available().items()):
        row: dict[str, Any] = {"name": name, "entry_point": entry_point.value}
        try:
            backend = entry_point.load()()
            row.update(asdict(backend.capabilities()))
            row["versions"] = dict(getattr(backend, "versions", dict)())
            missing = getattr(backend, "missing_libraries", None)
            row["ready"] = not (missing() if missing else [])
            if not row["ready"]:
                row["missing"] = missing()
        except Exception as e:  # a broken plugin is reported, not fatal to the listing
            row.update(ready=False, error=f"{type(e).__name__}: {e}")
        out.append(row)
    return out
