"""`punie eval --base-url` against a scripted OpenAI-compatible server that records every path.

The URL `punie serve` prints ends in `/v1`; the one a user types may not, or may end in a slash.
Each must reach `/v1/chat/completions` once per case. The results are labelled by the model id
(the one the server says answered, else the one asked for), never "base", and a server that
answers with another id than the one asked for is recorded (requested_model, answered_model) and
warned about once.
"""

from __future__ import annotations

import json
import subprocess

import pytest

import punie
from cli_support import punie as run_punie
from openai_stub import CHAT, completion, scripted_server
from punie.eval.client import api_root

SUITE = (
    "name: {name}\nkind: reasoning\nscorer: numeric\ncases:\n"
    "  - {{id: a, prompt: q1, expect: {{answer: 42}}}}\n"
    "  - {{id: b, prompt: q2, expect: {{answer: 7}}}}\n"
)


class Scripted:
    """A server on 127.0.0.1 that answers `Answer: 42` on CHAT only (404 elsewhere, as
    mlx_lm.server does) and says `answered` (or the requested id; or nothing) answered."""

    def __init__(self, answered: str | None = None, *, say_model: bool = True):
        self.models: list[str] = []

        def answer(body):
            self.models.append(body["model"])
            reply = completion(answered or body["model"], {"content": "Answer: 42"})
            if not say_model:
                del reply["model"]
            return reply

        self.httpd = scripted_server(answer)
        self.paths = self.httpd.paths
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers: list[Scripted] = []

    def start(answered: str | None = None, *, say_model: bool = True) -> Scripted:
        servers.append(Scripted(answered, say_model=say_model))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _suites(tmp_path, *names: str) -> list[str]:
    paths = []
    for name in names:
        path = tmp_path / f"{name}.yaml"
        path.write_text(SUITE.format(name=name))
        paths.append(str(path))
    return paths


def _eval(tmp_path, suites: list[str], model: str, base_url: str) -> subprocess.CompletedProcess:
    return run_punie(
        "eval", "run", *suites, "--model", model, "--base-url", base_url,
        "--run-dir", tmp_path / "run", "--cache-dir", tmp_path / "cache", "--json",
    )  # fmt: skip


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "", "/"])
def test_every_form_of_the_url_reaches_v1_chat_completions(scripted, tmp_path, suffix):
    server = scripted()
    done = _eval(tmp_path, _suites(tmp_path, "s"), "mine", server.url + suffix)
    assert done.returncode == 0, done.stderr
    assert server.paths == [CHAT, CHAT]  # one request per case, none to /v1/v1/...
    summary = json.loads(done.stdout)
    [result] = summary["results"]
    assert result["label"] == "mine" and result["passed"] == 1
    assert result["file"].endswith("s.mine.json")
    saved = json.loads((tmp_path / "run" / "s.mine.json").read_text())
    assert saved["requested_model"] == saved["answered_model"] == "mine"
    assert "warning" not in done.stderr


def test_an_api_root_under_a_path_keeps_its_path():
    assert api_root("http://h:1/api/v1/") == "http://h:1/api"
    assert api_root("http://h:1/api") == "http://h:1/api"
    assert api_root("http://h:1/v1/v1") == "http://h:1/v1"  # one /v1 is the server's


def test_results_are_labelled_by_the_model_that_answered_and_the_mismatch_warned_once(
    scripted, tmp_path
):
    server = scripted("mine-2026-01-01")
    done = _eval(tmp_path, _suites(tmp_path, "s1", "s2"), "mine", server.url + "/v1")
    assert done.returncode == 0, done.stderr
    assert set(server.models) == {"mine"}  # every request named the id asked for
    summary = json.loads(done.stdout)["results"]
    assert {(r["label"], r["requested_model"], r["answered_model"]) for r in summary} == {
        ("mine-2026-01-01", "mine", "mine-2026-01-01")
    }
    for suite in ("s1", "s2"):
        saved = json.loads((tmp_path / "run" / f"{suite}.mine-2026-01-01.json").read_text())
        assert saved["requested_model"] == "mine"
        assert saved["answered_model"] == "mine-2026-01-01"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, done.stderr
    assert "'mine'" in warnings[0] and "'mine-2026-01-01' answered" in warnings[0]
    # another model's answers are not kept under the requested model's cache key
    again = _eval(tmp_path, _suites(tmp_path, "s1", "s2"), "mine", server.url)
    assert again.returncode == 0, again.stderr
    assert len(server.paths) == 8


def test_a_server_that_names_no_model_gets_the_requested_id_as_label(scripted, tmp_path):
    server = scripted(say_model=False)
    done = _eval(tmp_path, _suites(tmp_path, "s"), "org/Model-1", server.url + "/v1/")
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)["results"]
    assert result["label"] == "org_Model-1"  # a safe file name: the label names the file
    saved = json.loads((tmp_path / "run" / "s.org_Model-1.json").read_text())
    assert saved["requested_model"] == "org/Model-1" and saved["answered_model"] is None


def test_evaluate_takes_the_url_punie_serve_prints(scripted, tmp_path):
    server = scripted()
    [suite] = _suites(tmp_path, "s")
    result = punie.evaluate(
        suite, "mine", base_url=server.url + "/v1", run_dir=tmp_path / "run", use_cache=False
    )
    assert server.paths == [CHAT, CHAT]
    assert result.label == "mine" and result.answered_model == "mine"
