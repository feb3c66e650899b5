"""Checks on the numbers a data command is given, made before a row is read.

A count of 0 or -5, a share of -1 or NaN do not fail by themselves: they quietly drop every row,
or none, or crash deep in a loop. Each check here fails at once with one line naming the option,
the value and what is allowed. Option names are spelled as on the command line, which is where
most values come from; the library functions call the same checks.
"""

from __future__ import annotations

from punie.errors import DataError


def at_least(option: str, value: int | None, low: int) -> None:
    """`value` is None (not given) or an integer of at least `low`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise DataError(f"{option} {value}: must be a whole number of at least {low}")


def share(option: str, value: float) -> None:
    """`value` is a share in (0, 1]: 0 would match everything, and more than 1 nothing."""
    if not (isinstance(value, int | float) and 0 < value <= 1):
        raise DataError(f"{option} {value}: must be a share above 0 and at most 1, e.g. 0.5")
