"""Running `punie` as a user does, for tests: a real subprocess, or `punie.cli.main` in-process
for the many cheap cases, and the one-line-error check the hostile-input tests share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PUNIE = [sys.executable, "-m", "punie"]


def punie(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `punie` in a subprocess: exit code, stdout and stderr as a user sees them."""
    return subprocess.run(
        [*PUNIE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def run_main(args, capsys) -> tuple[int, str, str]:
    """`punie.cli.main` in-process (what the console script runs): exit code, stdout, stderr."""
    from punie.cli import main

    old = sys.argv
    sys.argv = ["punie", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error a refused command printed: exactly one line, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr  # (a progress line may come before it)
    return errors[0]
