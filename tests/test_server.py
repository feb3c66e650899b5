"""A real mlx_lm.server on the tiny model: started, evaluated, stopped, and killed mid-run."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from punie.cli import app
from punie.errors import PunieError
from punie.eval.cache import ResponseCache
from punie.eval.client import Target
from punie.eval.runner import EvalResult, run_suite
from punie.eval.suite import Suite
from punie.platform import mentioning
from punie.sampling import Sampling
from punie.serve.server import Server

pytestmark = pytest.mark.slow

SAMPLING = Sampling(temperature=0.0, max_tokens=24)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("run") / "server.log"
    with Server(tiny_model, log=log) as s:
        yield s


def test_server_is_healthy_on_loopback_and_logs_to_the_run_folder(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{server.base_url}/health").status_code == 200
    assert server.status() is None
    assert server.log.is_file()


def test_suite_runs_with_latency_tokens_and_identity(server, tiny_model, tmp_path):
    target = Target(server.base_url, model=str(tiny_model))
    cache = ResponseCache(tmp_path / "cache")
    result = run_suite(
        Suite.load("tools-basic"), target, label="base", sampling=SAMPLING, cache=cache
    )
    assert len(result.cases) == 11 and result.requests == 11
    assert all(c.latency_s > 0 and c.completion_tokens for c in result.cases)
    assert result.identity["model_hash"] and result.identity["template_hash"]
    assert result.sampling == SAMPLING.as_dict()
    # The multi-turn case (assistant tool call, then a tool result) was rendered and answered.
    assert any(c.id == "after-result-1" and c.label != "malformed" for c in result.cases)
    path = result.write(tmp_path / "tools-basic.base.json")
    assert EvalResult.read(path) == result


def test_unchanged_rerun_is_served_from_the_cache(server, tiny_model, tmp_path):
    target = Target(server.base_url, model=str(tiny_model))
    cache = ResponseCache(tmp_path / "cache")
    suite = Suite.load("reasoning-basic")
    first = run_suite(suite, target, label="base", sampling=SAMPLING, cache=cache)
    again = run_suite(suite, target, label="base", sampling=SAMPLING, cache=cache)
    assert again.requests == 0 and all(c.cached for c in again.cases)
    assert [c.content for c in again.cases] == [c.content for c in first.cases]
    other = Sampling(temperature=0.0, max_tokens=25)
    assert run_suite(suite, target, label="base", sampling=other, cache=cache).requests == 9


def test_adapter_is_named_in_each_request_and_hashed(server, tiny_model, tmp_path):
    # An adapter folder that is not a real adapter: the server refuses it and nothing is cached.
    fake = tmp_path / "adapter"
    fake.mkdir()
    (fake / "adapter_config.json").write_text("{}")
    target = Target(server.base_url, model=str(tiny_model), adapter=str(fake))
    cache = ResponseCache(tmp_path / "cache")
    with pytest.raises(PunieError, match="got no answer"):
        run_suite(Suite.load("tools-basic"), target, label="x", sampling=SAMPLING, cache=cache)
    assert len(cache) == 0


def test_sigkill_mid_run_fails_clearly_and_the_cache_resumes(server, tiny_model, tmp_path):
    suite = Suite.load("tools-basic")
    cache = ResponseCache(tmp_path / "cache")
    with Server(tiny_model, log=tmp_path / "victim.log") as victim:
        pgid = victim.pid
        done = []

        def kill_after_three(result):
            done.append(result)
            if len(done) == 3:
                os.kill(victim.pid, signal.SIGKILL)

        target = Target(victim.base_url, model=str(tiny_model))
        with pytest.raises(PunieError) as e:
            run_suite(
                suite,
                target,
                label="base",
                sampling=SAMPLING,
                concurrency=1,
                cache=cache,
                on_case=kill_after_three,
                server_status=victim.status,
            )
    message = str(e.value)
    assert "\n" not in message
    assert "killed by signal 9" in message and "run again to resume" in message
    assert not _group_alive(pgid)
    kept = len(cache)
    assert kept >= 3
    # Resume on another server of the same model: only the missing cases are asked.
    target = Target(server.base_url, model=str(tiny_model))
    resumed = run_suite(suite, target, label="base", sampling=SAMPLING, cache=cache)
    assert len(resumed.cases) == len(suite.cases)
    assert resumed.requests == len(suite.cases) - kept


def _servers_except(model: Path, port: int) -> list[int]:
    """mlx_lm.server processes of this session's tiny model, but for the one on `port`."""
    return [
        p.pid
        for p in mentioning(f"--model {model} ")
        if "mlx_lm server" in p.command and f"--port {port} " not in p.command
    ]


def test_cli_eval_writes_results_log_and_report_and_leaves_no_server(server, tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "eval", "tools-basic", "--model", str(tiny_model), "--run-dir", str(run_dir),
        "--cache-dir", str(tmp_path / "cache"), "--max-tokens", "24", "-o",
        str(tmp_path / "report.html"), "--json",
    ]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["results"][0]["total"] == 11
    assert (run_dir / "server.log").is_file()
    assert EvalResult.read(Path(summary["results"][0]["file"])).label == "base"
    assert "tools-basic" in (tmp_path / "report.html").read_text()
    assert _servers_except(tiny_model, server.port) == []
    assert _servers_except(tiny_model, 0) == [server.pid]  # the search does see a live server
