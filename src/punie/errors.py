"""The one exception type a user sees: its message is the whole story, on one line.

The CLI prints `error: <message>` and exits with `exit_code` (2 for unusable input, by default);
anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class PunieError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class PunieWarning(UserWarning):
    """Something skipped that the user should know about; the CLI prints it as one line."""


def warn(message: str) -> None:
    """Say, in one line, what was skipped and where (`metrics.jsonl:7: ...`)."""
    import warnings

    warnings.warn(PunieWarning(message), stacklevel=2)
