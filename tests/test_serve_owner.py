"""A managed server counts as ready only when its OWN child answers: on Linux, the socket that
listens on the port must be the child's (punie.platform.holds_listener), not merely something
healthy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from punie.errors import ServerError
from punie.platform import holds_listener
from punie.serve.server import HOST, Server

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="no /proc/net: the OS does not say who listens"
)

LISTENER = (
    "import socket, time\n"
    "s = socket.socket()\n"
    "s.bind(('127.0.0.1', 0))\n"
    "s.listen()\n"
    "print(s.getsockname()[1], flush=True)\n"
    "time.sleep(60)\n"
)


def test_holds_listener_names_the_process_that_listens():
    child = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        assert holds_listener(child.pid, port) is True
        assert holds_listener(os.getpid(), port) is False
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def _healthy_server(port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer((HOST, port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


class _Upstaged(Server):
    """A child that never listens, and another process that takes the port just after the
    bind test: the race a real mlx_lm.server can lose, staged so that it always happens."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]

    def _free_port(self) -> None:
        super()._free_port()
        self.intruder = _healthy_server(self.port)


def test_a_health_answer_from_another_process_is_not_our_server(tmp_path):
    server = _Upstaged("unused-model", log=tmp_path / "server.log", startup_timeout=2.0)
    try:
        with pytest.raises(ServerError, match="answered, but not from our mlx_lm.server"):
            server.start()
    finally:
        server.intruder.shutdown()
        server.intruder.server_close()
    assert server.status() == "mlx_lm.server is not running"  # the child was stopped
