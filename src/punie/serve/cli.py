"""`punie serve`: a managed mlx_lm.server in the foreground, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


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
    max_tokens: Annotated[int, typer.Option(help="Default max tokens per answer.")] = 512,
) -> None:
    """Serve a model (and adapter) with mlx_lm.server on 127.0.0.1, OpenAI-compatible.

    Requests should name the model folder as `model` (and the adapter folder as `adapters`); a
    request without `model` gets the model and adapter given here. Ctrl-C stops the server and
    everything it started."""
    from punie.errors import PunieError
    from punie.model.resolve import resolve_model
    from punie.serve.server import Server

    folder = resolve_model(model)
    if adapter and not (adapter / "adapters.safetensors").is_file():
        raise PunieError(f"{adapter}: not an adapter folder (no adapters.safetensors)")
    server = Server(folder, adapter=adapter, port=port, max_tokens=max_tokens)
    server.log = log or Path("runs") / f"serve-{server.port}" / "server.log"
    with server:
        console.print(f"serving {folder}" + (f" with adapter {adapter}" if adapter else ""))
        console.print(f"log: {server.log}")
        print(f"{server.base_url}/v1", flush=True)
        code = server.wait()
        ended = server.status()
    if code:
        raise PunieError(ended or f"mlx_lm.server exited with code {code}")
