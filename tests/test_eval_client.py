"""The client records who answered. mlx_lm.server echoes the requested model, so a server that
answers with another model is a fault we can only stage: a few lines of http.server."""

from __future__ import annotations

import pytest

from openai_stub import completion, scripted_server
from punie.eval.cache import ResponseCache
from punie.eval.client import Target
from punie.eval.runner import run_suite
from punie.eval.suite import Suite
from punie.sampling import Sampling


def _fake_server(answered_model: str | None):
    seen = []

    def answer(body):
        seen.append(body)
        return completion(answered_model or body["model"], {"content": "Answer: 42"})

    return scripted_server(answer), seen


@pytest.fixture
def honest():
    httpd, seen = _fake_server(None)
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()


@pytest.fixture
def impostor():
    httpd, _ = _fake_server("some/other-model")
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_a_different_answering_model_is_recorded_and_never_cached(impostor, tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    result = run_suite(
        Suite.load("reasoning-basic"), Target(impostor, model="mine"), label="x", cache=cache
    )
    assert (result.requested_model, result.answered_model) == ("mine", "some/other-model")
    assert len(cache) == 0  # an answer from another model is never kept under this one's key


def test_requests_name_model_adapter_and_sampling(honest):
    url, seen = honest
    target = Target(url, model="mine", adapter="/adapters/a")
    sampling = Sampling(temperature=0.7, max_tokens=17, top_p=0.9)
    result = run_suite(Suite.load("reasoning-basic"), target, label="x", sampling=sampling)
    assert {(b["model"], b["adapters"], b["temperature"], b["max_tokens"]) for b in seen} == {
        ("mine", "/adapters/a", 0.7, 17)
    }
    assert result.sampling == {"temperature": 0.7, "max_tokens": 17, "top_p": 0.9}
    assert sum(c.passed for c in result.cases) == 1  # only add-1's answer is 42


def test_samples_give_pass_at_k(honest, tmp_path):
    url, seen = honest
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        "name: s\nkind: reasoning\nscorer: numeric\nsamples: 3\nk: [1, 3]\ncases:\n"
        "  - {id: a, prompt: q, expect: {answer: 42}}\n"
        "  - {id: b, prompt: q, expect: {answer: 7}}\n"
    )
    result = run_suite(Suite.load(suite_file), Target(url, model="m"), label="x")
    assert len(seen) == 6
    assert result.pass_at_k == {"1": 0.5, "3": 0.5}
    assert [(c.n, c.c) for c in result.cases] == [(3, 3), (3, 0)]
