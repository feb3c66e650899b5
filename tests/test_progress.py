"""Progress columns: a step of unknown size spins, one of known size counts."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from punie.cli import StepsColumn


def _rendered(total: int | None, completed: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=False, color_system=None)
    with Progress(StepsColumn(), console=console, auto_refresh=False) as progress:
        task = progress.add_task("step", total=total)
        progress.update(task, completed=completed)
        progress.refresh()
    return out.getvalue()


def test_a_step_without_a_size_shows_a_spinner_not_none():
    shown = _rendered(None, 1)
    assert "None" not in shown and "/" not in shown
    assert shown.strip()  # something moves


def test_a_step_with_a_size_shows_done_over_total():
    assert "3/10" in _rendered(10, 3)
