"""The errors a user sees: each message is the whole story, on one line.

Every kind derives from `PunieError`, so `except PunieError` catches them all; the kind says
which part of Punie refused (the data, the config, a training backend, a server, an evaluation).
Which exit code each kind gets is decided in one place, `punie.cli.EXIT_CODES`: the library
raises, only the command-line shell turns errors into exit codes. Anything else that escapes is
a bug and keeps its traceback.
"""

from __future__ import annotations


class PunieError(Exception):
    """Unusable input or a refused request: the message names the file, line and field."""


class ConfigError(PunieError):
    """A training config, flag or option value that cannot be used."""


class DataError(PunieError):
    """A dataset file or row that cannot be read, parsed or used."""


class BackendError(PunieError):
    """A training backend (or its trainer process) refused or failed a run, a fuse or a merge."""


class TrainingInterrupted(BackendError):
    """The trainer stopped on a signal (Ctrl-C, SIGTERM) after writing its checkpoint."""


class ServerError(PunieError):
    """A model server could not start, or stopped answering."""


class ConstraintError(PunieError):
    """A request's tools, tool_choice or response_format that cannot be decoded to a grammar."""


class EvalError(PunieError):
    """An eval suite, recorded response or results file that cannot be used."""


class PunieWarning(UserWarning):
    """Something skipped that the user should know about; the CLI prints it as one line."""


def warn(message: str) -> None:
    """Say, in one line, what was skipped and where (`metrics.jsonl:7: ...`)."""
    import warnings

    warnings.warn(PunieWarning(message), stacklevel=2)


__all__ = [
    "BackendError",
    "ConfigError",
    "ConstraintError",
    "DataError",
    "EvalError",
    "PunieError",
    "PunieWarning",
    "ServerError",
    "TrainingInterrupted",
    "warn",
]
