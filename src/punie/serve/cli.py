"""`punie serve`: a managed mlx_lm.server in the foreground, until Ctrl-C."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from punie.sampling import DEFAULT_SAMPLING
from punie.serve.server import STARTUP_TIMEOUT_S

console = Console(stderr=True)
PROGRESS_EVERY_S = 5


def waiting_line(timeout: float):
    """An `on_wait` that says every few seconds how long the server has been loading."""

    shown = [0]

    def report(elapsed: float) -> None:
        if elapsed // PROGRESS_EVERY_S > shown[0]:
            shown[0] = int(elapsed // PROGRESS_EVERY_S)
            console.print(f"waiting for mlx_lm.server: {elapsed:.0f}s of {timeout:g}s")

    return report


def serve(
    model: Annotated[str, typer.Argument(help="Model folder or hub id.")],
    adapter: Annotated[
        Path | None, typer.Option("--adapter", "-a", help="LoRA adapter folder to serve with it.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")
    ] = None,
    log: Annotated[
        Path | None, typer.Option(help="Server log file (default: runs/serve-PORT/server.log).")
    ] = None,
    max_tokens: Annotated[
        int, typer.Option(help="Default max tokens per answer, for requests that name none.")
    ] = DEFAULT_SAMPLING.max_tokens,
    startup_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the server to load the model and answer.")
    ] = STARTUP_TIMEOUT_S,
    constrain: Annotated[
        str | None,
        typer.Option(
            help="Constrained decoding: 'tools' makes every tool call valid JSON for one of the "
            "request's tool schemas (tool_choice auto, required or a named function) and honours "
            "a JSON response_format. Requests without them are served as before."
        ),
    ] = None,
) -> None:
    """Serve a model (and adapter) with mlx_lm.server on 127.0.0.1, OpenAI-compatible.

    Requests should name the model folder as `model` (and the adapter folder as `adapters`); a
    request without `model` gets the model and adapter given here. Ctrl-C stops the server and
    everything it started."""
    from punie.errors import ServerError
    from punie.model.resolve import resolve_model
    from punie.serve.server import Server
    from punie.train.rundir import ADAPTER_WEIGHTS, has_adapter

    folder = resolve_model(model)
    if adapter and not has_adapter(adapter):
        raise ServerError(f"{adapter}: not an adapter folder (no {ADAPTER_WEIGHTS})")
    server = Server(
        folder,
        adapter=adapter,
        port=port,
        sampling=replace(DEFAULT_SAMPLING, max_tokens=max_tokens),
        startup_timeout=startup_timeout,
        on_wait=waiting_line(startup_timeout),
        constrain=constrain,
    )
    server.log = log or Path("runs") / f"serve-{server.port}" / "server.log"
    with server:
        console.print(f"serving {folder}" + (f" with adapter {adapter}" if adapter else ""))
        if constrain:
            console.print(f"constrained decoding: {constrain}")
        console.print(f"log: {server.log}")
        print(f"{server.base_url}/v1", flush=True)
        code = server.wait()
        ended = server.status()
    if code:
        raise ServerError(ended or f"mlx_lm.server exited with code {code}")
