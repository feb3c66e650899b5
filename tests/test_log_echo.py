"""mlx_lm's memory warning leaves the child's log for the console (punie.logecho)."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import pytest

from punie.logecho import LogEcho
from punie.serve.server import Server

WARNING = (
    "[WARNING] Generating with a model that requires 7300 MB which is close to the maximum "
    "recommended size of 5461 MB. This can be slow. See the documentation for possible "
    "work-arounds: https://github.com/ml-explore/mlx-lm/tree/main#large-models"
)


def test_the_memory_warning_a_child_writes_reaches_the_console_once(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(f"{WARNING.replace('7300', '1')}\n")  # an earlier run's: not news
    out = io.StringIO()
    child = f"print('INFO loading'); print({WARNING!r}); print({WARNING!r}); print('done')"
    with LogEcho(log, "mlx_lm.server", out=out, interval=0.05), open(log, "ab") as sink:
        subprocess.run([sys.executable, "-c", child], stdout=sink, check=True)
    assert out.getvalue() == f"mlx_lm.server: {WARNING}\n"


def test_a_line_written_in_two_pieces_is_echoed_whole(tmp_path):
    log = tmp_path / "train.log"
    out = io.StringIO()
    echo = LogEcho(log, "trainer", out=out)
    log.write_text(WARNING[:40])
    echo.poll()
    assert out.getvalue() == ""
    with open(log, "a") as f:
        f.write(WARNING[40:] + "\n")
    echo.poll()
    assert out.getvalue() == f"trainer: {WARNING}\n"


@pytest.mark.slow
def test_server_echoes_its_memory_warning_while_it_runs_and_stops_following(
    tiny_model, tmp_path, capsys
):
    log = tmp_path / "server.log"
    with Server(tiny_model, log=log):
        with open(log, "a") as f:  # the line mlx_lm prints on a Mac near its working-set limit
            f.write(WARNING + "\n")
        deadline = time.monotonic() + 5
        while WARNING not in capsys.readouterr().err:
            assert time.monotonic() < deadline, "the warning stayed in the log"
            time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name == "log-echo"]
