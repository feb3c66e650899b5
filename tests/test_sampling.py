"""Every entry point samples with the same defaults, from `punie.sampling`."""

from __future__ import annotations

import inspect

import typer.main

from punie.cli import app
from punie.eval.client import ChatClient
from punie.eval.runner import run_suite
from punie.sampling import DEFAULT_SAMPLING
from punie.serve.server import Server
from punie.session import EvalPlan


def option_defaults(*path: str) -> dict[str, object]:
    command = typer.main.get_command(app)
    ctx = None
    for name in path:
        command = command.get_command(ctx, name)
    return {p.name: p.default for p in command.params}


def test_eval_and_serve_commands_default_to_the_shared_sampling():
    run = option_defaults("eval", "run")
    assert (run["temperature"], run["max_tokens"], run["top_p"]) == (
        DEFAULT_SAMPLING.temperature,
        DEFAULT_SAMPLING.max_tokens,
        DEFAULT_SAMPLING.top_p,
    )
    assert option_defaults("serve")["max_tokens"] == DEFAULT_SAMPLING.max_tokens


def test_the_managed_server_gets_the_shared_sampling_as_its_own_defaults(tmp_path):
    argv = Server(tmp_path).command()
    flags = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert flags["--max-tokens"] == str(DEFAULT_SAMPLING.max_tokens)
    assert float(flags["--temp"]) == DEFAULT_SAMPLING.temperature
    assert float(flags["--top-p"]) == DEFAULT_SAMPLING.top_p


def test_library_entry_points_default_to_the_shared_sampling():
    assert EvalPlan(suites=(), model="m").sampling == DEFAULT_SAMPLING
    assert inspect.signature(ChatClient.chat).parameters["sampling"].default is DEFAULT_SAMPLING
    assert inspect.signature(run_suite).parameters["sampling"].default is DEFAULT_SAMPLING
