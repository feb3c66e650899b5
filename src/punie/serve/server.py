"""A managed `mlx_lm.server`: started on 127.0.0.1 and a free port, stopped however we leave.

    with Server("path/to/model", log=run_dir / "server.log") as server:
        client = ChatClient(server.base_url)

The server's output (its log) goes to `log`, normally the run folder's `server.log`.

The port is bind-tested on 127.0.0.1 just before the server starts, so a port that something
else holds is refused at once instead of that something answering our health checks. A health
answer counts only while our process is alive and, where the OS says who listens (Linux,
`punie.platform.holds_listener`), only when our process holds the listening socket. A free port
picked for us can still be taken by another process between the test and the server's own bind
(mlx_lm.server then hangs, its bind error in its log): the server is stopped and started again
on another free port, up to `PORT_ATTEMPTS` times. A port the caller named is never swapped for
another. Loading a model can take minutes: `startup_timeout` bounds the wait and
`on_wait(elapsed_s)` is called about once a second while it lasts, so a caller can show progress.

One server answers for the base model and any adapter: each request names `model` (the folder) and
`adapters` explicitly, and mlx_lm.server loads that pair. Nothing is inferred from `/v1/models`,
which lists cached hub models before the one we started.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from punie.errors import ServerError
from punie.logecho import LogEcho
from punie.platform import holds_listener
from punie.proc import python_module, spawn, stop_group
from punie.sampling import DEFAULT_SAMPLING, Sampling

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 120.0
PORT_ATTEMPTS = 5
BIND_FAILED = "Address already in use"  # strerror(EADDRINUSE), on Linux and macOS


CONSTRAIN_CHOICES = ("tools",)


def backend_module(constrain: str | None) -> tuple[str, ...]:
    """`python -m` arguments of the server to start: mlx_lm.server itself, or, with a
    constraint, `punie.serve.backend` (mlx_lm.server plus constrained decoding)."""
    if constrain is None:
        return ("mlx_lm", "server")
    if constrain not in CONSTRAIN_CHOICES:
        raise ServerError(f"constrain: {constrain!r} is not one of {', '.join(CONSTRAIN_CHOICES)}")
    return ("punie.serve.backend",)


class _PortTaken(Exception):
    """Our server lost its port to another process before it could bind it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> None:
    """Refuse a port that something already listens on (a one-line PunieError)."""
    if not 0 < port < 65536:
        raise ServerError(f"port: {port} is not a TCP port (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as e:
            why = "is already in use" if e.errno == errno.EADDRINUSE else f"cannot be used ({e})"
            raise ServerError(
                f"port {port} on {HOST} {why}; pick another --port or leave it out for a free one"
            ) from None


class Server:
    def __init__(
        self,
        model: Path | str,
        *,
        adapter: Path | str | None = None,
        log: Path | None = None,
        port: int | None = None,
        sampling: Sampling = DEFAULT_SAMPLING,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        on_wait: Callable[[float], None] | None = None,
        constrain: str | None = None,
    ):
        if not 0 < startup_timeout < float("inf"):
            raise ServerError(
                f"startup timeout: must be a positive number of seconds, got {startup_timeout}"
            )
        self.model = str(model)
        self.adapter = str(adapter) if adapter else None
        self.log = Path(log) if log else None
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.sampling = sampling
        self.startup_timeout = startup_timeout
        self.on_wait = on_wait
        backend_module(constrain)  # refuse an unknown constraint before anything starts
        self.constrain = constrain
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._log_path: Path | None = None  # `log`, or a temporary file for the bind check
        self._attempt_offset = 0
        self._echo: LogEcho | None = None
        self._foreign_answer = False  # something other than our child answered /health

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        cmd = python_module(
            *backend_module(self.constrain),
            "--model",
            self.model,
            "--host",
            HOST,
            "--port",
            str(self.port),
            *self.sampling.server_args(),
            "--log-level",
            "WARNING",
        )
        if self.adapter:
            cmd += ["--adapter-path", self.adapter]
        if self.constrain:
            cmd += ["--constrain", self.constrain]
        return cmd

    def start(self) -> Server:
        self._free_port()  # before anything is opened that stop() would have to close
        self._open_log()
        try:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                self._attempt_offset = self._log_file.tell()
                self._proc = spawn(self.command(), stdout=self._log_file, stderr=self._log_file)
                try:
                    self._wait_healthy()
                    return self
                except _PortTaken:
                    stop_group(self._proc, grace=2.0)
                    self._proc = None
                    if self.fixed_port or attempt == PORT_ATTEMPTS:
                        raise ServerError(
                            f"mlx_lm.server could not bind port {self.port} on {HOST}: another "
                            f"process took it ({attempt} tries)"
                        ) from None
                    self.port = free_port()
                    self._free_port()
        except BaseException:
            self.stop()
            raise
        return self

    def _free_port(self) -> None:
        """Bind-test the port; a port picked for us that is taken now is swapped for another."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                check_port_free(self.port)
                return
            except ServerError:
                if self.fixed_port or attempt == PORT_ATTEMPTS:
                    raise
                self.port = free_port()

    def _open_log(self) -> None:
        if self.log:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_path = self.log
            self._echo = LogEcho(self.log, "mlx_lm.server").start()  # its memory warning
        else:
            fd, name = tempfile.mkstemp(prefix="punie-server-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()

    def _lost_port(self) -> bool:
        """Whether this attempt's server failed to bind (its log says so)."""
        with open(self._log_path, "rb") as f:
            f.seek(self._attempt_offset)
            return BIND_FAILED.encode() in f.read()

    def status(self) -> str | None:
        """None while the server runs; otherwise one line saying how it ended."""
        if self._proc is None:
            return "mlx_lm.server is not running"
        code = self._proc.poll()
        if code is None:
            return None
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        where = f"; see {self.log}" if self.log else ""
        return f"mlx_lm.server (pid {self._proc.pid}) {how}{where}"

    def wait(self) -> int:
        """Block until the server exits (for `punie serve`); returns its exit code."""
        return self._proc.wait() if self._proc else 0

    def _wait_healthy(self) -> None:
        start = time.monotonic()
        next_report = start + 1.0
        while (elapsed := time.monotonic() - start) < self.startup_timeout:
            if self._lost_port():  # it hangs (or exits) after a failed bind
                raise _PortTaken()
            if self._proc.poll() is not None:
                where = f"; see {self.log}" if self.log else ""
                raise ServerError(
                    f"mlx_lm.server for {self.model} exited with code {self._proc.returncode}"
                    f" before it was ready{where}"
                )
            if self._answers():
                return
            if self.on_wait and time.monotonic() >= next_report:
                self.on_wait(elapsed)
                next_report += 1.0
            time.sleep(0.25)
        where = f"; see {self.log}" if self.log else ""
        if self._foreign_answer:
            raise ServerError(
                f"port {self.port} on {HOST} answered, but not from our mlx_lm.server (pid "
                f"{self._proc.pid}): another process listens there; pick another --port{where}"
            )
        raise ServerError(
            f"mlx_lm.server did not answer on {self.base_url} within {self.startup_timeout:g}s"
            f" (set a longer startup timeout for a slow model){where}"
        )

    def _answers(self) -> bool:
        """Healthy, and ours: our process still runs and, where the OS can say (Linux), holds
        the socket listening on the port; elsewhere, the port was free when it started
        (`/v1/models` cannot tell: it fails outright without a hub cache folder)."""
        with contextlib.suppress(httpx.HTTPError):
            healthy = httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200
            if not healthy or self._proc.poll() is not None:
                return False
            if holds_listener(self._proc.pid, self.port) is False:
                self._foreign_answer = True  # keep waiting: our child may yet fail to bind
                return False
            return True
        return False

    def stop(self) -> None:
        if self._proc is not None:
            stop_group(self._proc, grace=10.0)
            self._proc = None
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        if self._log_path is not None and self._log_path != self.log:
            self._log_path.unlink(missing_ok=True)
        self._log_path = None
        if self._echo:
            self._echo.stop()
            self._echo = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
