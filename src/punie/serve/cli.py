"""`punie serve`: an OpenAI-compatible server for a model and its adapters, until Ctrl-C."""

from __future__ import annotations

import json
import os
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
        list[str] | None,
        typer.Option(
            "--adapter",
            "-a",
            help="LoRA adapter (run) folder to serve, as PATH (its id is the folder's name, the "
            "run name) or ID=PATH. Repeat for several.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The base model's id (default: the folder's name, or the hub id)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="PUNIE_API_KEY",
            help="Require this bearer token (Authorization: Bearer KEY) on every request.",
            show_envvar=True,
        ),
    ] = None,
    constrain: Annotated[
        str | None,
        typer.Option(
            help="Constrained decoding: 'tools' makes every tool call valid JSON for one of the "
            "request's tool schemas (tool_choice auto, required or a named function) and honours "
            "a JSON response_format (refused with 400 without it).",
        ),
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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the URL and the served ids as one JSON line.")
    ] = False,
) -> None:
    """Serve a model and its adapters on 127.0.0.1, OpenAI-compatible (base URL ends in /v1).

    Each served thing has an id, printed at start and listed by GET /v1/models: the base model
    under its folder's name (or --name), each adapter under its run name (or ID=PATH). A request
    names one as `model`; any other id gets 404. Point any OpenAI client at the printed URL:

        punie serve mlx-community/Qwen2.5-0.5B-Instruct-4bit --adapter runs/demo --api-key s3cret

        OpenAI(base_url="http://127.0.0.1:PORT/v1", api_key="s3cret")
            .chat.completions.create(model="demo", messages=..., tools=...)

    tool_choice 'none' drops the tools; 'required' and a named function need --constrain tools.
    n > 1 asks for n samples. Ctrl-C, SIGTERM and SIGHUP stop the server and everything it
    started. See docs/serving.md."""
    from punie.errors import ServerError
    from punie.model.resolve import resolve_model
    from punie.serve.front import FrontServer
    from punie.serve.models import adapter_spec, default_id
    from punie.train.rundir import ADAPTER_WEIGHTS, has_adapter

    specs = [adapter_spec(a) for a in adapter or []]
    for _, folder in specs:
        if not has_adapter(folder):
            raise ServerError(f"{folder}: not an adapter folder (no {ADAPTER_WEIGHTS})")
    folder = resolve_model(model)
    server = FrontServer(
        folder,
        adapters=[(i, str(Path(p).resolve())) for i, p in specs],
        name=name or default_id(model),  # a hub id is named as given, not by its cache folder
        port=port,
        api_key=api_key or os.environ.get("PUNIE_API_KEY") or None,
        constrain=constrain,
        sampling=replace(DEFAULT_SAMPLING, max_tokens=max_tokens),
        startup_timeout=startup_timeout,
        on_wait=waiting_line(startup_timeout),
    )
    server.bind()  # the port is checked and held before the model loads; the log names it
    server.log = log or Path("runs") / f"serve-{server.port}" / "server.log"
    with server:
        for m in server.models:
            console.print(f"model id {m.id!r}: {m.describe()}")
        if server.config.constrain:
            console.print(f"constrained decoding: {server.config.constrain}")
        console.print(f"log: {server.log}")
        if server.config.api_key:
            console.print("requests need: Authorization: Bearer <the --api-key>")
        if as_json:
            models = [{"id": m.id, "model": m.model, "adapter": m.adapter} for m in server.models]
            print(json.dumps({"url": server.url, "models": models}), flush=True)
        else:
            print(server.url, flush=True)
        code = server.wait()
        ended = server.status()
    if code:
        raise ServerError(ended or f"mlx_lm.server exited with code {code}")
