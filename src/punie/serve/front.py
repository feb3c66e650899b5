"""A served model, as clients see it: Punie's front server on 127.0.0.1, mlx_lm.server behind.

    with FrontServer("path/to/model", adapters=["runs/demo"], api_key="k") as server:
        client = OpenAI(base_url=server.url, api_key="k")
        client.chat.completions.create(model="demo", ...)   # the adapter's id: its run name

This is `punie.Server` and what `punie serve` runs. The front (`punie.serve.app`) runs on a thread
of this process; the backend is a managed mlx_lm.server child (`punie.serve.server.Server`) on a
port of its own. The front's socket is bound before the model loads, so a taken port is refused
at once, and it is held from then on, so nothing can take it in between. The front counts as
started when its `/health` answers through our socket and the backend behind it is healthy
(the backend is ours: `Server` checks that its own child holds the listening socket).
"""

from __future__ import annotations

import errno
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from punie.errors import ServerError
from punie.sampling import DEFAULT_SAMPLING, Sampling
from punie.serve.app import FrontConfig, make_app
from punie.serve.models import Registry, ServedModel, adapter_spec, build_registry
from punie.serve.server import CONSTRAIN_CHOICES, HOST, STARTUP_TIMEOUT_S, Server
from punie.serve.upstream import Upstream
from punie.train.rundir import ADAPTER_WEIGHTS, has_adapter

FRONT_START_S = 15.0
AdapterSpec = str | Path | tuple[str | None, str | Path]


@dataclass(frozen=True)
class ServeConfig:
    """What a front server serves, and how."""

    model: str
    adapters: tuple[tuple[str | None, str], ...] = ()  # (id or None for the run name, folder)
    name: str | None = None  # the base model's id (default: the folder's name or the hub id)
    port: int | None = None  # None: a free one
    api_key: str | None = None
    constrain: str | None = None  # "tools": constrained decoding (tool_choice, response_format)
    sampling: Sampling = DEFAULT_SAMPLING
    startup_timeout: float = STARTUP_TIMEOUT_S
    log: Path | None = None

    def registry(self) -> Registry:
        return build_registry(self.model, self.adapters, self.name)


def _adapter_specs(adapter, adapters: Iterable[AdapterSpec]) -> tuple[tuple[str | None, str], ...]:
    out = [(None, str(adapter))] if adapter else []
    for spec in adapters:
        if isinstance(spec, tuple):
            out.append((spec[0], str(spec[1])))
        else:
            out.append(adapter_spec(str(spec)))
    return tuple(out)


def bind_listener(port: int | None) -> socket.socket:
    """A listening socket on 127.0.0.1 (`port`, or a free one), or a one-line ServerError."""
    if port is not None and not 0 < port < 65536:
        raise ServerError(f"port: {port} is not a TCP port (1-65535)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not past a live listener
    try:
        sock.bind((HOST, port or 0))
        sock.listen(128)
    except OSError as e:
        sock.close()
        why = "is already in use" if e.errno == errno.EADDRINUSE else f"cannot be used ({e})"
        raise ServerError(
            f"port {port} on {HOST} {why}; pick another --port or leave it out for a free one"
        ) from None
    return sock


class FrontServer:
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
        adapters: Iterable[AdapterSpec] = (),
        name: str | None = None,
        api_key: str | None = None,
        constrain: str | None = None,
    ):
        if constrain is not None and constrain not in CONSTRAIN_CHOICES:
            raise ServerError(
                f"--constrain: {constrain!r} is not one of {', '.join(CONSTRAIN_CHOICES)}"
            )
        self.config = ServeConfig(
            model=str(model),
            adapters=_adapter_specs(adapter, adapters),
            name=name,
            port=port,
            api_key=api_key or None,
            constrain=constrain,
            sampling=sampling,
            startup_timeout=startup_timeout,
            log=Path(log) if log else None,
        )
        self.registry = self.config.registry()
        for served in self.registry.models:
            if served.adapter and not has_adapter(served.adapter):
                raise ServerError(f"{served.adapter}: not an adapter folder (no {ADAPTER_WEIGHTS})")
        # The first adapter is loaded at start: it is what a server with adapters is for.
        first = self.registry.models[1].adapter if len(self.registry.models) > 1 else None
        self.backend = Server(
            model,
            adapter=first,
            log=log,
            sampling=sampling,
            startup_timeout=startup_timeout,
            on_wait=on_wait,
            constrain=constrain,
        )
        self.port = port
        self._sock: socket.socket | None = None
        self._uvicorn = None
        self._thread: threading.Thread | None = None
        self._log_handler: logging.Handler | None = None

    @classmethod
    def from_config(cls, config: ServeConfig, on_wait=None) -> FrontServer:
        return cls(
            config.model,
            adapters=config.adapters,
            name=config.name,
            port=config.port,
            api_key=config.api_key,
            constrain=config.constrain,
            sampling=config.sampling,
            startup_timeout=config.startup_timeout,
            log=config.log,
            on_wait=on_wait,
        )

    # What `punie.Server` always offered: the model, its adapter, the log, the URL.
    @property
    def model(self) -> str:
        return self.config.model

    @property
    def adapter(self) -> str | None:
        return self.backend.adapter

    @property
    def log(self) -> Path | None:
        return self.backend.log

    @log.setter
    def log(self, path: Path | None) -> None:
        self.backend.log = Path(path) if path else None

    @property
    def base_url(self) -> str:
        """The front's root; clients that want the OpenAI base URL take `url` (with /v1)."""
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def ids(self) -> tuple[str, ...]:
        return self.registry.ids

    @property
    def models(self) -> tuple[ServedModel, ...]:
        return self.registry.models

    @property
    def pid(self) -> int | None:
        """The backend's pid (the front runs in this process)."""
        return self.backend.pid

    def command(self) -> list[str]:
        return self.backend.command()

    def bind(self) -> FrontServer:
        """Take the port now (`start` does, if not done): a taken port fails before the model
        loads, and `port` is known, say to name the log after it."""
        if self._sock is None:
            self._sock = bind_listener(self.config.port)
            self.port = self._sock.getsockname()[1]
        return self

    def start(self) -> FrontServer:
        self.bind()  # before minutes of model loading
        try:
            self.backend.start()
            self._start_front()
            self._check_answers()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_front(self) -> None:
        import uvicorn

        if self.backend.log:
            self._log_handler = logging.FileHandler(self.backend.log)
            self._log_handler.setFormatter(
                logging.Formatter("%(asctime)s punie front: %(message)s")
            )
            logging.getLogger("punie.serve").addHandler(self._log_handler)
        app = make_app(
            FrontConfig(
                self.registry,
                Upstream(HOST, self.backend.port),
                api_key=self.config.api_key,
                constrain=self.config.constrain,
            )
        )
        config = uvicorn.Config(
            app, log_config=None, access_log=False, log_level="warning", lifespan="on"
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._uvicorn.run,
            kwargs={"sockets": [self._sock]},
            name="punie-front",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + FRONT_START_S
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServerError(f"the front server on {self.base_url} did not start")
            time.sleep(0.02)

    def _check_answers(self) -> None:
        """Our front, through our socket, with our backend behind it, lists our ids."""
        try:
            r = httpx.get(f"{self.base_url}/health", timeout=10.0)
            if r.status_code == 200 and r.json().get("models") == list(self.ids):
                return
            why = f"answered {r.status_code} {' '.join(r.text.split())[:120]}"
        except (httpx.HTTPError, ValueError) as e:
            why = f"did not answer ({type(e).__name__})"
        where = f"; see {self.log}" if self.log else ""
        raise ServerError(f"{self.base_url}/health {why}: mlx_lm.server is not healthy{where}")

    def status(self) -> str | None:
        """None while the front and its backend run; otherwise one line saying what ended."""
        ended = self.backend.status()
        if ended:
            return ended
        if self._thread is None or not self._thread.is_alive():
            return f"the front server on {self.base_url} is not running"
        return None

    def wait(self) -> int:
        """Block until the backend or the front ends (for `punie serve`); the backend's code."""
        while self.status() is None:
            proc = self.backend._proc
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
        proc = self.backend._proc
        return proc.returncode if proc and proc.returncode is not None else 1

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        self._uvicorn = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.backend.stop()
        if self._log_handler is not None:
            logging.getLogger("punie.serve").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def __enter__(self) -> FrontServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
