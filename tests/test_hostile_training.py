"""Hostile input to training and serving: cut rows, NaN, non-finite settings, signals, busy ports.

Each test runs the real thing: `punie` as a subprocess on the tiny model, real signals, real
sockets. Processes are found with `punie.platform.mentioning`, never by reading /proc.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from punie import lifeline
from punie.cli import exit_code
from punie.errors import BackendError, PunieError, ServerError
from punie.fsio import write_jsonl
from punie.platform import Host, children_of, mentioning, parent_death_watch, processes
from punie.serve.server import Server, free_port
from train_support import config_toml, multi_turn_row, single_turn_row, write_data

PUNIE = [sys.executable, "-m", "punie"]


def punie(*args: str, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run([*PUNIE, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def processes_mentioning(*needles: str) -> list[int]:
    """Pids of live processes whose command line holds every needle (psutil or `ps`)."""
    return [p.pid for p in mentioning(needles[0]) if all(n in p.command for n in needles)]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def long_row(path: str) -> dict:
    """A row whose only trained tokens (the assistant turn) lie past 64 tokens."""
    row = single_turn_row(path)
    row["messages"][0]["content"] = "Please show me this file. " * 40 + path
    return row


def write_rows(folder: Path, train: list[dict], valid: list[dict]) -> Path:
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "valid.jsonl", valid)
    return folder


def finite_safetensors(path: Path) -> bool:
    import mlx.core as mx

    return all(bool(mx.isfinite(w).all().item()) for w in mx.load(str(path)).values())


# --- config: every number finite, seeds in range (no model needed) ---------------------------


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("epochs=nan", "epochs: must be a finite number, got nan"),
        ("learning_rate=nan", "learning_rate: must be a finite number, got nan"),
        ("learning_rate=inf", "learning_rate: must be a finite number, got inf"),
        ("scale=-inf", "scale: must be a finite number, got -inf"),
        ("seed=-1", r"seed: must be in \[0, 4294967295\], got -1"),
        ("cut_rows=maybe", "cut_rows: 'maybe' is not one of skip, refuse"),
    ],
)
def test_non_finite_numbers_and_negative_seeds_are_refused_in_one_line(tmp_path, item, message):
    import re

    result = punie(
        "train", "--model", "m", "--data", str(tmp_path), "--set", item, "--print-config"
    )
    assert result.returncode == 2
    assert re.search(message, result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_non_finite_numbers_nested_in_extra_are_refused(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('model = "m"\ndata = "d"\nextra = { betas = [0.9, nan] }\n')
    from punie.train.config import TrainConfig

    with pytest.raises(PunieError, match=r"extra.betas\[1\]: must be a finite number, got nan"):
        TrainConfig.load(path)


# --- which rows can train: the count matches the mask the loss uses ---------------------------


def test_trained_count_agrees_with_the_loss_mask(tiny_model):
    import numpy as np
    from mlx_lm.utils import load

    from punie.chat.masking import trained_count
    from punie.train.masking import ChatTurns, Processed, iterate_batches

    _, tokenizer = load(str(tiny_model))
    rows = [long_row("a.py"), single_turn_row("b.md"), multi_turn_row("c.txt")]
    turns = ChatTurns(rows, tokenizer, mask_prompt=True)
    for max_len in (16, 64, 512):
        for row in rows:
            tokens, spans = turns.process(row)
            data = Processed([row], [(tokens, spans)])
            _, mask = next(iterate_batches(data, 1, max_len))
            assert trained_count(spans, len(tokens), max_len) == int(np.array(mask)[0, 1:].sum())
    tokens, spans = turns.process(rows[0])
    assert len(tokens) > 64 and trained_count(spans, len(tokens), 64) == 0


# --- real training runs -----------------------------------------------------------------------


@pytest.mark.slow
def test_rows_cut_entirely_by_max_seq_length_are_refused_when_none_would_be_left(
    tmp_path, tiny_model
):
    data = write_rows(tmp_path / "data", [long_row(f"f{i}.py") for i in range(8)],
                      [single_turn_row("a.py")] * 2)  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text(config_toml(tiny_model, data, max_seq_length=64, iters=4))
    result = punie("train", str(config), "--runs-dir", str(tmp_path), "--name", "cut")
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert f"{data / 'train.jsonl'}: 8 of 8 rows have no trained token" in error
    assert f"(first: {data / 'train.jsonl'}:1)" in error and "none would be left" in error
    record = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert record["status"] == "failed"
    assert not (tmp_path / "cut" / "adapters.safetensors").exists()


@pytest.mark.slow
def test_some_cut_rows_are_skipped_with_one_warning_and_the_adapter_is_finite(tmp_path, tiny_model):
    # Every fourth row cannot train: with batch size 1 such a row alone was a 0/0 = NaN batch.
    train = [long_row("x.py") if i % 4 == 2 else single_turn_row("a.py") for i in range(12)]
    data = write_rows(tmp_path / "data", train, [single_turn_row("b.md")] * 2)
    config = tmp_path / "c.toml"
    config.write_text(
        config_toml(tiny_model, data, max_seq_length=64, batch_size=1, iters=12, save_every=4)
    )
    result = punie("train", str(config), "--runs-dir", str(tmp_path), "--name", "some")
    assert result.returncode == 0, result.stderr
    warning = f"{data / 'train.jsonl'}: 3 of 12 rows have no trained token within " \
              f"max_seq_length=64 (first: {data / 'train.jsonl'}:3); skipped them"  # fmt: skip
    assert f"warning: {warning}\n" in result.stderr  # one line
    run = tmp_path / "some"
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["warnings"] == [warning]
    assert finite_safetensors(run / "adapters.safetensors")
    losses = [r["train_loss"] for r in map(json.loads, (run / "metrics.jsonl").open())
              if "train_loss" in r]  # fmt: skip
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)


@pytest.mark.slow
def test_cut_rows_refuse_setting_refuses_any_cut_row(tmp_path, tiny_model):
    train = [long_row("x.py")] + [single_turn_row("a.py")] * 7
    data = write_rows(tmp_path / "data", train, [single_turn_row("b.md")] * 2)
    config = tmp_path / "c.toml"
    config.write_text(config_toml(tiny_model, data, max_seq_length=64, cut_rows="refuse"))
    result = punie("train", str(config), "--runs-dir", str(tmp_path), "--name", "refuse")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert "1 of 8 rows have no trained token" in error and "train.jsonl:1)" in error


@pytest.mark.slow
def test_non_finite_loss_fails_the_run_and_keeps_the_last_finite_checkpoint(tmp_path, tiny_model):
    data = write_data(tmp_path / "data", n_train=8, n_valid=2)
    config = tmp_path / "c.toml"
    # SGD at 1e30 keeps step 1 finite and overflows on step 2.
    config.write_text(config_toml(tiny_model, data, learning_rate=1e30, optimizer="sgd",
                                  iters=8, save_every=1, steps_per_eval=100))  # fmt: skip
    result = punie("train", str(config), "--runs-dir", str(tmp_path), "--name", "nan")
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "training stopped at iteration 2: the training loss is nan" in error
    run = tmp_path / "nan"
    assert f"last finite checkpoint (iteration 1) is kept in {run / 'checkpoint'}" in error
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] in error
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 1
    assert finite_safetensors(run / "checkpoint" / "adapters.safetensors")
    assert not (run / "adapters.safetensors").exists()  # no final adapter from NaN weights
    assert not list(run.glob(".mlx_lm-*"))
    assert "NaN" not in (run / "metrics.jsonl").read_text()


def test_unknown_lora_target_module_is_refused_before_anything_starts(tmp_path, tiny_model):
    data = write_data(tmp_path / "data", n_train=8, n_valid=2)
    config = tmp_path / "c.toml"
    config.write_text(config_toml(tiny_model, data, target_modules=["self_attn.qproj"]))
    result = punie("train", str(config), "--runs-dir", str(tmp_path), "--name", "keys")
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: target_modules: 'self_attn.qproj' is not a module LoRA can")
    assert "self_attn.q_proj" in error  # what there is instead
    assert not (tmp_path / "keys").exists()


def test_the_worker_checks_target_modules_against_the_loaded_model(tiny_model):
    from mlx_lm.utils import load

    from punie.train.events import TrainingFailed
    from punie.train.setup import check_target_modules, lora_targets

    model, _ = load(str(tiny_model))
    in_layers, whole = lora_targets(model)
    assert {"self_attn.q_proj", "mlp.down_proj"} <= in_layers
    check_target_modules(["self_attn.q_proj", "model.embed_tokens"], in_layers, whole, "tiny")
    for bad in ("self_attn.qproj", "input_layernorm"):  # absent; present but not a matrix
        with pytest.raises(TrainingFailed, match=f"target_modules: '{bad}' is not a module LoRA"):
            check_target_modules([bad], in_layers, whole, "tiny")


@pytest.mark.slow
def test_sigterm_to_punie_train_checkpoints_and_marks_the_run_interrupted(tmp_path, tiny_model):
    data = write_data(tmp_path / "data", n_train=16, n_valid=2)
    config = tmp_path / "c.toml"
    config.write_text(config_toml(tiny_model, data, iters=1000, save_every=2, steps_per_eval=500))
    run = tmp_path / "term"
    cmd = [*PUNIE, "train", str(config), "--runs-dir", str(tmp_path), "--name", "term"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    wait_until(lambda: (run / "checkpoint" / "state.json").exists() or proc.poll() is not None,
               180, "the first checkpoint")  # fmt: skip
    os.kill(proc.pid, signal.SIGTERM)  # punie only, as a process manager would
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 128 + signal.SIGTERM, stderr.decode()
    assert "interrupted (SIGTERM)" in stderr.decode()
    record = json.loads((run / "run.json").read_text())
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert record["status"] == "interrupted"
    assert record["last_iteration"] == state["iteration"] >= 2
    assert processes_mentioning(str(run)) == []


@pytest.mark.slow
def test_kill_9_of_punie_train_still_leaves_a_checkpoint_and_no_worker(tmp_path, tiny_model):
    data = write_data(tmp_path / "data", n_train=16, n_valid=2)
    config = tmp_path / "c.toml"
    config.write_text(config_toml(tiny_model, data, iters=1000, save_every=5, steps_per_eval=500))
    run = tmp_path / "k9"
    cmd = [*PUNIE, "train", str(config), "--runs-dir", str(tmp_path), "--name", "k9"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    state = run / "checkpoint" / "state.json"
    wait_until(lambda: state.exists() or proc.poll() is not None, 180, "the first checkpoint")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_until(lambda: not processes_mentioning("punie.train.worker", str(run)), 60, "the worker")
    # The worker stopped between two steps and wrote a checkpoint there, not only every 5th.
    iteration = json.loads(state.read_text())["iteration"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert iteration == max(r["iteration"] for r in records) >= 5
    assert (
        punie("runs", "show", "k9", "--runs-dir", str(tmp_path), "--json").stdout.count(
            '"status": "interrupted"'
        )
        == 1
    )


# --- serving: signals, parent death, busy ports, slow starts ----------------------------------


def start_serve(tiny_model: Path, port: int, cwd: Path) -> subprocess.Popen:
    cmd = [*PUNIE, "serve", str(tiny_model), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    line = proc.stdout.readline().decode()  # the URL, printed once the server answers
    assert line.startswith(f"http://127.0.0.1:{port}/v1"), proc.stderr.read().decode()
    return proc


def backends_of(pid: int) -> list[int]:
    """The mlx_lm.server behind a `punie serve` (its child, on a port of its own)."""
    return [p.pid for p in children_of(pid, processes()) if "mlx_lm" in p.command]


def running(pids: list[int]) -> list[int]:
    """Those of `pids` still running mlx_lm (a zombie's command line is gone)."""
    return [p.pid for p in processes() if p.pid in pids and "mlx_lm" in p.command]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_to_punie_serve_leaves_no_server(tmp_path, tiny_model, sig):
    port = free_port()
    proc = start_serve(tiny_model, port, tmp_path)
    servers = backends_of(proc.pid)
    assert len(servers) == 1
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
    assert proc.returncode == 128 + sig
    assert running(servers) == []


@pytest.mark.slow
def test_kill_9_of_punie_serve_takes_the_server_down_within_seconds(tmp_path, tiny_model):
    port = free_port()
    proc = start_serve(tiny_model, port, tmp_path)
    servers = backends_of(proc.pid)
    assert len(servers) == 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    wait_until(lambda: not running(servers), 10, "the server")


def test_parent_death_watch_is_pdeathsig_on_linux_and_polling_on_macos():
    assert parent_death_watch(Host("linux", "x86_64")) == "pdeathsig"
    assert parent_death_watch(Host("darwin", "arm64", "14.5")) == "poll"


@pytest.mark.parametrize("watch", ["pdeathsig", "poll"] if sys.platform == "linux" else ["poll"])
def test_a_guarded_child_exits_when_its_parent_is_killed(tmp_path, watch):
    # A parent that starts `python -m http.server` under the lifeline, then waits forever.
    marker = f"--directory {tmp_path}"
    parent = (
        "import os, subprocess, sys, time\n"
        "from punie import lifeline\n"
        f"cmd = [sys.executable, '-m', 'http.server', '0', '--bind', '127.0.0.1', "
        f"'--directory', {str(tmp_path)!r}]\n"
        f"subprocess.Popen(lifeline.command(cmd, {watch!r}, os.getpid()), start_new_session=True,"
        " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        wait_until(lambda: processes_mentioning("punie.lifeline", marker), 20, "the child")
    finally:
        proc.kill()
        proc.wait()
    wait_until(lambda: not processes_mentioning("punie.lifeline", marker), 10, "the child to end")


def test_lifeline_wraps_only_python_modules():
    cmd = [sys.executable, "-m", "mlx_lm", "server", "--port", "1"]
    assert lifeline.command(cmd, "poll", 42) == [
        sys.executable, "-m", "punie.lifeline", "poll", "42", "mlx_lm", "server", "--port", "1"
    ]  # fmt: skip
    assert lifeline.command(["ls", "-l"], "poll", 42) == ["ls", "-l"]


def test_serve_on_a_port_in_use_says_so_at_once(tmp_path, tiny_model):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        tic = time.monotonic()
        result = punie("serve", str(tiny_model), "--port", str(port), cwd=tmp_path, timeout=60)
        took = time.monotonic() - tic
    assert result.returncode == 2
    assert f"error: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert took < 15  # no model was loaded, no health checks against the holder
    assert processes_mentioning("mlx_lm", f"--port {port}") == []


class _Silent(Server):
    """A real process on the port that never answers: a model too slow to load, say."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_server_that_never_answers_reports_progress_and_times_out(tmp_path, tiny_model):
    seen: list[float] = []
    server = _Silent(tiny_model, startup_timeout=2.5, on_wait=seen.append, log=tmp_path / "s.log")
    with pytest.raises(PunieError, match=r"did not answer on http://127.0.0.1:\d+ within 2.5s"):
        server.start()
    assert len(seen) >= 1 and all(0 < s < 2.5 for s in seen)
    assert server.pid is None  # stopped


@pytest.mark.parametrize("command", ["serve", "eval"])
def test_startup_timeout_is_a_setting_and_must_be_positive(tmp_path, tiny_model, command):
    args = [str(tiny_model)] if command == "serve" else ["tools-basic", "--model", str(tiny_model)]
    result = punie(command, *args, "--startup-timeout", "0", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "startup timeout: must be a positive number of seconds, got 0" in result.stderr


class _LosesTheRace(Server):
    """Another process takes the first port picked for us after the bind test, before
    mlx_lm.server binds it: the race a free-port picker can lose."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.holders: list[socket.socket] = []

    def command(self) -> list[str]:
        if not self.holders:
            holder = socket.socket()
            holder.bind(("127.0.0.1", self.port))
            holder.listen()
            self.holders.append(holder)
        return super().command()


def test_a_server_that_loses_its_port_starts_again_on_another(tmp_path, tiny_model):
    server = _LosesTheRace(tiny_model, log=tmp_path / "s.log", startup_timeout=60)
    try:
        with server:
            lost = server.holders[0].getsockname()[1]
            assert server.port != lost
            assert httpx.get(f"{server.base_url}/health").status_code == 200
            assert processes_mentioning("mlx_lm", f"--port {lost}") == []  # the loser is stopped
        assert "Address already in use" in (tmp_path / "s.log").read_text()
    finally:
        for holder in server.holders:
            holder.close()


def test_a_named_port_taken_before_the_bind_is_one_line_not_a_retry(tmp_path, tiny_model):
    port = free_port()
    server = _LosesTheRace(tiny_model, port=port, startup_timeout=60)
    try:
        with pytest.raises(ServerError, match=f"could not bind port {port} on 127.0.0.1"):
            server.start()
        assert server.port == port and server.pid is None
    finally:
        for holder in server.holders:
            holder.close()


@pytest.mark.slow
def test_the_worker_reports_a_failure_as_one_structured_event(tmp_path, tiny_model):
    from punie.proc import child_env
    from punie.train.config import TrainConfig
    from punie.train.events import TrainingFailed
    from punie.train.mlx import run_worker, worker_command

    data = write_data(tmp_path / "data", n_train=8, n_valid=2)
    run = tmp_path / "run"
    run.mkdir()
    # Only the loaded model can say this module is missing (the parent's check reads headers).
    config = TrainConfig(model=str(tiny_model), data=str(data), adapter_path=str(run), iters=2,
                         batch_size=2, num_layers=2,
                         target_modules=("self_attn.qproj",))  # fmt: skip
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    out = subprocess.run(worker_command(run), capture_output=True, env=child_env(), timeout=120)
    assert out.returncode == 2
    assert b"\x1b" not in out.stdout  # no terminal colour codes on the event channel
    event = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert event["event"] == "failed" and event["field"] == "target_modules"
    assert event["reason"].startswith("'self_attn.qproj' is not a module LoRA can adapt")
    with pytest.raises(TrainingFailed) as e:
        run_worker(run)
    assert str(e.value) == f"target_modules: {event['reason']}" and "\n" not in str(e.value)
    assert isinstance(e.value, BackendError) and exit_code(e.value) == 2
