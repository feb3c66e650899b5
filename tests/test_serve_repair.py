"""The front server's answer to a backend that misbehaves: a reply that claims tool calls it does
not hold, a dropped connection. The backend is the scripted OpenAI server (these faults cannot be
caused on demand in mlx_lm.server); the front is the real app, through Starlette's test client."""

from __future__ import annotations

import openai
import pytest
from starlette.testclient import TestClient

from openai_stub import Events, chunk, completion, scripted_server
from punie.serve.app import FrontConfig, make_app
from punie.serve.models import build_registry
from punie.serve.upstream import Upstream

REGISTRY = build_registry("/models/base", (("demo", "/runs/demo"),))
ASK = [{"role": "user", "content": "Show me a.py"}]
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {}}}]


@pytest.fixture(params=[None])
def front(request):
    """A front whose backend answers with whatever the test puts in `replies`."""
    seen: list[dict] = []
    replies: list = []

    def answer(body):
        seen.append(body)
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply  # the handler dies: the connection closes with no answer
        return reply

    backend = scripted_server(answer)
    upstream = Upstream("127.0.0.1", backend.server_address[1])
    app = make_app(FrontConfig(REGISTRY, upstream, constrain=request.param))
    with TestClient(app) as http:
        sdk = openai.OpenAI(
            base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0
        )
        yield sdk, seen, replies
    backend.shutdown()
    backend.server_close()


def test_the_backend_is_asked_for_the_ids_model_and_adapter(front):
    sdk, seen, replies = front
    replies.append(completion("/models/base", {"role": "assistant", "content": "hi"}))
    r = sdk.chat.completions.create(model="demo", messages=ASK, tools=TOOLS, tool_choice="none")
    assert r.model == "demo" and r.choices[0].message.content == "hi"
    assert seen[0]["model"] == "/models/base" and seen[0]["adapters"] == "/runs/demo"
    assert "tools" not in seen[0] and "tool_choice" not in seen[0]


def test_a_reply_claiming_calls_it_lacks_finishes_with_stop_and_keeps_its_text(front):
    sdk, _, replies = front
    message = {"role": "assistant", "content": "<tool_call>{oops", "tool_calls": []}
    replies.append(completion("/models/base", message, finish_reason="tool_calls"))
    r = sdk.chat.completions.create(model="demo", messages=ASK, tools=TOOLS)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == "<tool_call>{oops"
    assert not r.choices[0].message.tool_calls


def test_a_call_with_unreadable_arguments_is_moved_to_content(front):
    sdk, _, replies = front
    bad = {"id": "1", "type": "function", "function": {"name": "read_file", "arguments": "{x"}}
    message = {"role": "assistant", "content": None, "tool_calls": [bad]}
    replies.append(completion("/models/base", message, finish_reason="tool_calls"))
    r = sdk.chat.completions.create(model="demo", messages=ASK, tools=TOOLS)
    assert r.choices[0].finish_reason == "stop"
    assert '"arguments": "{x"' in r.choices[0].message.content


def test_a_dropped_connection_is_an_openai_error_not_a_dropped_connection(front):
    sdk, _, replies = front
    replies.append(KeyError("arguments"))  # what mlx_lm.server raised formatting a bad call
    with pytest.raises(openai.InternalServerError) as e:
        sdk.chat.completions.create(model="demo", messages=ASK, tools=TOOLS)
    assert e.value.status_code == 502
    assert e.value.code == "backend_unavailable" and "mlx_lm.server" in e.value.message


@pytest.mark.parametrize("front", ["tools"], indirect=True)
def test_with_constrained_decoding_tool_choice_and_response_format_reach_the_backend(front):
    sdk, seen, replies = front
    replies.append(completion("/models/base", {"role": "assistant", "content": "{}"}))
    choice = {"type": "function", "function": {"name": "read_file"}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    sdk.chat.completions.create(
        model="demo", messages=ASK, tools=TOOLS, tool_choice=choice, response_format=fmt
    )
    assert seen[0]["tool_choice"] == choice and seen[0]["response_format"] == fmt


def test_a_stream_is_relabelled_under_the_served_id_and_ends(front):
    sdk, seen, replies = front
    replies.append(Events([chunk("Hel"), chunk("lo", finish_reason="stop")]))
    chunks = list(sdk.chat.completions.create(model="demo", messages=ASK, stream=True))
    assert [c.model for c in chunks] == ["demo", "demo"]
    assert "".join(c.choices[0].delta.content for c in chunks) == "Hello"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert seen[0]["stream"] is True


@pytest.mark.parametrize("n", [1, 2])
def test_a_stream_cut_before_done_raises_in_the_client_not_a_silent_end(front, n):
    sdk, _, replies = front
    replies += [Events([chunk("Hel")])] * (n - 1) + [Events([chunk("Hel")], done=False)]
    stream = sdk.chat.completions.create(model="demo", messages=ASK, stream=True, n=n)
    with pytest.raises(openai.APIError, match="ended before \\[DONE\\]"):
        list(stream)
