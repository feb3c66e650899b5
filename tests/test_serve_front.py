"""`punie serve` as the clients users point at it see it: the openai SDK against a real
`punie serve` (a subprocess) on the tiny model, with a parrot adapter (which always calls
read_file) served under its own id. One server for the module; the last test stops it with
SIGTERM.

The adapter served is conftest's parrot trained on the same row with `tools` in it: the session's
parrot never saw a tool list in its prompt and answers noise once one is there."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from cli_support import PUNIE, punie
from punie.platform import mentioning
from train_support import TOOLS

pytestmark = pytest.mark.slow

KEY = "test-key"
ASK = [{"role": "user", "content": "Show me a.py"}]


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    models: list[dict]
    adapter: Path
    log: Path

    def backend_pids(self) -> list[int]:
        return [p.pid for p in mentioning(str(self.adapter)) if "mlx_lm server" in p.command]

    def backend_port(self) -> int:
        [proc] = [p for p in mentioning(str(self.adapter)) if "mlx_lm server" in p.command]
        return int(re.search(r"--port (\d+)", proc.command).group(1))


@pytest.fixture(scope="module")
def tools_parrot(tiny_model, tmp_path_factory):
    """conftest's parrot (the same config), trained on its row with the tool list in it."""
    from conftest import CALL_ROW
    from train_support import overfit_adapter

    root = tmp_path_factory.mktemp("tools-parrot")
    return overfit_adapter(tiny_model, root, [{**CALL_ROW, "tools": TOOLS}] * 4, max_seq_length=256)


@pytest.fixture(scope="module")
def served(tiny_model, tools_parrot, tmp_path_factory):
    parrot_adapter = tools_parrot
    tmp = tmp_path_factory.mktemp("serve")
    args = [
        "serve", str(tiny_model), "--adapter", f"parrot={parrot_adapter}", "--name", "tiny-base",
        "--api-key", KEY, "--json", "--log", str(tmp / "server.log"), "--max-tokens", "24",
    ]  # fmt: skip
    stderr = open(tmp / "stderr.txt", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*PUNIE, *args], stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = proc.stdout.readline()  # the URL line, once the server answers (or EOF on exit)
        assert line, (tmp / "stderr.txt").read_text()
        info = json.loads(line)
        yield Served(proc, info["url"], info["models"], Path(parrot_adapter), tmp / "server.log")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        proc.stdout.close()
        stderr.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url, api_key=KEY, max_retries=0)


def test_the_printed_url_ends_in_v1_and_names_each_id(served, tiny_model):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", served.url)
    assert [(m["id"], m["adapter"]) for m in served.models] == [
        ("tiny-base", None),
        ("parrot", str(served.adapter)),
    ]
    health = httpx.get(served.url.removesuffix("/v1") + "/health").json()
    assert health == {"status": "ok", "models": ["tiny-base", "parrot"]}


def test_models_list_returns_the_served_ids(client):
    assert [m.id for m in client.models.list()] == ["tiny-base", "parrot"]


def test_the_adapter_id_with_tools_returns_tool_calls(client):
    r = client.chat.completions.create(
        model="parrot", messages=ASK, tools=TOOLS, max_tokens=40, temperature=0
    )
    assert r.model == "parrot"
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0].function
    assert call.name == "read_file" and json.loads(call.arguments) == {"path": "a.py"}


def test_the_base_id_returns_the_base_models_answer(client, served, tiny_model):
    r = client.chat.completions.create(
        model="tiny-base", messages=ASK, tools=TOOLS, max_tokens=12, temperature=0
    )
    assert r.model == "tiny-base"
    assert not r.choices[0].message.tool_calls
    # The same request straight to mlx_lm.server behind, naming the folder and no adapter.
    direct = httpx.post(
        f"http://127.0.0.1:{served.backend_port()}/v1/chat/completions",
        json={
            "model": str(tiny_model),
            "messages": ASK,
            "tools": TOOLS,
            "max_tokens": 12,
            "temperature": 0,
        },  # fmt: skip
        timeout=120,
    ).json()
    assert r.choices[0].message.content == direct["choices"][0]["message"]["content"]


def test_an_unknown_id_gets_a_404_the_sdk_parses(client, tiny_model):
    for model in ("gpt-4o-mini", str(tiny_model)):
        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model=model, messages=ASK, max_tokens=4)
        assert e.value.code == "model_not_found" and e.value.param == "model"
        assert "tiny-base, parrot" in e.value.message


def test_a_wrong_api_key_gets_a_401(served):
    wrong = openai.OpenAI(base_url=served.url, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        wrong.models.list()
    assert e.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="parrot", messages=ASK, max_tokens=4)


def test_tool_choice_none_returns_no_call(client):
    r = client.chat.completions.create(
        model="parrot", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=40, temperature=0
    )
    assert not r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason != "tool_calls"


def test_tool_choice_required_is_refused_without_constrained_decoding(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="parrot", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=4
        )
    assert e.value.param == "tool_choice" and "--constrain tools" in e.value.message


def test_streaming_with_tools_yields_the_tool_call_deltas(client):
    stream = client.chat.completions.create(
        model="parrot", messages=ASK, tools=TOOLS, max_tokens=40, temperature=0, stream=True
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {"parrot"}
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].function.name == "read_file"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"path": "a.py"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_n_samples_come_back_as_n_choices(client):
    r = client.chat.completions.create(
        model="parrot", messages=ASK, tools=TOOLS, max_tokens=40, temperature=0, n=2
    )
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.tool_calls for c in r.choices)


def test_n_streams_interleave_under_their_choice_index(client):
    stream = client.chat.completions.create(
        model="parrot", messages=ASK, tools=TOOLS, max_tokens=40, temperature=0, n=2, stream=True
    )
    calls = {}
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                calls[choice.index] = tc.function.name
    assert calls == {0: "read_file", 1: "read_file"}


def test_punie_eval_through_the_printed_url_labels_results_by_the_id(served, tmp_path):
    out = punie(
        "eval", "run", "tools-basic", "--base-url", served.url, "--model", "parrot",
        "--api-key", KEY, "--run-dir", tmp_path / "run", "--no-cache", "--max-tokens", "40",
        "--json", timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    [result] = json.loads(out.stdout)["results"]
    saved = json.loads(Path(result["file"]).read_text())
    assert saved["label"] == "parrot"
    assert saved["requested_model"] == saved["answered_model"] == "parrot"


def test_a_taken_port_is_refused_before_the_model_loads(served, tiny_model):
    port = served.url.split(":")[-1].removesuffix("/v1")
    started = time.monotonic()
    out = punie("serve", tiny_model, "--port", port)
    assert out.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert time.monotonic() - started < 30


def test_sigterm_stops_the_front_and_every_child(served):
    backends = served.backend_pids()
    assert len(backends) == 1
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(timeout=60)
    for pid in backends:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(served.url + "/models")
