"""The code sandbox stops what generated code must not do; pass@k matches its closed form."""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path

import pytest

from punie.eval.code import extract_code, score_code
from punie.eval.sandbox import Limits, isolation, protections, run_python
from punie.eval.stats import pass_at_k
from punie.platform import mentioning

FAST = Limits(wall_s=4, cpu_s=2, memory_mb=256)


def test_good_code_passes():
    verdict = score_code(
        "```python\ndef add(a, b):\n    return a + b\n```", {"tests": "assert add(1, 2) == 3"}
    )
    assert verdict.passed, verdict


def test_failing_assert_fails_with_the_error():
    verdict = score_code("def add(a, b):\n    return a - b", {"tests": "assert add(1, 2) == 3"})
    assert (verdict.passed, verdict.label) == (False, "test_failed")
    assert "AssertionError" in verdict.reason


def test_infinite_loop_is_stopped():
    start = time.monotonic()
    outcome = run_python("while True:\n    pass\n", FAST)
    assert not outcome.passed
    assert time.monotonic() - start < FAST.wall_s + 3


def test_fork_bomb_is_stopped_and_leaves_no_process():
    marker = f"punie-fork-bomb-{os.getpid()}-{time.time_ns()}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    # Re-executed with the marker in its command line, so `ps` finds every copy, and only these.
    src = "import os, sys\n"
    src += f"os.execv(sys.executable, [sys.executable, '-c', {bomb!r}, {marker!r}])\n"
    start = time.monotonic()
    outcome = run_python(src, Limits(wall_s=3, cpu_s=2, memory_mb=256, nproc=32))
    assert not outcome.passed
    assert time.monotonic() - start < 10
    time.sleep(0.3)
    assert mentioning(marker) == []


def test_memory_hog_is_stopped():
    outcome = run_python("x = []\nwhile True:\n    x.append(bytearray(50_000_000))\n", FAST)
    assert not outcome.passed
    assert "MemoryError" in outcome.why() or "signal" in outcome.why()


@pytest.mark.skipif(not isolation().network, reason="no network namespace on this machine")
def test_network_call_is_blocked():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        outcome = run_python(code, FAST)
        # The kernel completes a handshake into the backlog without accept(): nothing is there.
        srv.setblocking(False)
        with pytest.raises(BlockingIOError):
            srv.accept()
    assert not outcome.passed
    assert "Network is unreachable" in outcome.why() or "refused" in outcome.why()


def test_output_is_capped():
    outcome = run_python("print('x' * 1_000_000)", Limits(output_bytes=1000))
    assert len(outcome.stdout) < 1100
    assert outcome.stdout.endswith("[output cut]")


def test_code_runs_in_its_own_empty_folder():
    outcome = run_python("import os\nprint(sorted(os.listdir('.')))\nprint(os.getcwd())")
    listing, cwd = outcome.stdout.splitlines()
    assert "punie-sandbox-" in cwd
    assert "main.py" in listing and str(Path.cwd()) != cwd


def test_protections_say_what_is_active():
    active = protections()
    assert "wall-time limit" in active
    assert any("network" in p.lower() for p in active)


def test_extract_code_takes_the_last_fenced_block():
    text = "First try:\n```python\nx = 1\n```\nBetter:\n```python\nx = 2\n```\n"
    assert extract_code(text) == "x = 2"


def _closed_form(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize(
    "n, c, k", [(10, 3, 1), (10, 3, 5), (20, 0, 5), (20, 20, 1), (7, 2, 6), (200, 37, 10)]
)
def test_pass_at_k_matches_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_closed_form(n, c, k), abs=1e-12)


def test_pass_at_1_is_the_pass_rate():
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)


def test_pass_at_k_is_one_when_fewer_failures_than_k():
    assert pass_at_k(10, 8, 3) == 1.0


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
