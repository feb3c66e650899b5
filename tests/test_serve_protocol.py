"""The front server's rules, as pure functions: served ids, what each OpenAI parameter becomes
for mlx_lm.server, OpenAI's error shape, and the repair of replies that claim calls they lack."""

from __future__ import annotations

import pytest

from punie.errors import ServerError
from punie.serve.models import adapter_spec, build_registry
from punie.serve.protocol import ApiError, backend_error, merge_replies, prepare, repair_choice

TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {}}}]
REGISTRY = build_registry("/m/base", ((None, "/runs/demo"), ("other", "/runs/x")), None)


def _body(**extra):
    return {"model": "demo", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_each_adapter_is_served_under_its_run_name_or_given_id():
    assert REGISTRY.ids == ("base", "demo", "other")
    assert REGISTRY.get("demo").adapter == "/runs/demo"
    assert REGISTRY.get("base").adapter is None
    assert adapter_spec("name=/runs/x") == ("name", "/runs/x")
    assert adapter_spec("/runs/x") == (None, "/runs/x")


def test_two_things_under_one_id_are_refused():
    with pytest.raises(ServerError, match="'demo' names both"):
        build_registry("/m/base", ((None, "/a/demo"), (None, "/b/demo")))


def test_an_id_becomes_its_model_folder_and_adapter():
    fwd = prepare(_body(), REGISTRY, None)
    assert fwd.served.id == "demo"
    assert fwd.body["model"] == "/m/base" and fwd.body["adapters"] == "/runs/demo"
    assert "adapters" not in prepare(_body(model="base"), REGISTRY, None).body


@pytest.mark.parametrize("model", ["gpt-4o-mini", "/m/base", "default_model"])
def test_anything_but_a_served_id_is_a_404_in_openai_shape(model):
    with pytest.raises(ApiError) as e:
        prepare(_body(model=model), REGISTRY, None)
    assert e.value.status == 404
    error = e.value.body()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (
        error["code"] == "model_not_found" and "served ids: base, demo, other" in error["message"]
    )


def test_fields_that_would_load_another_model_are_refused():
    for field, value in (("adapters", "/elsewhere"), ("draft_model", "some/hub-model")):
        with pytest.raises(ApiError) as e:
            prepare(_body(**{field: value}), REGISTRY, None)
        assert e.value.status == 400 and e.value.param == field


def test_tool_choice_none_drops_the_tools():
    body = prepare(_body(tools=TOOLS, tool_choice="none"), REGISTRY, None).body
    assert "tools" not in body and "tool_choice" not in body


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "read_file"}}]
)
def test_forcing_a_call_needs_constrained_decoding(choice):
    with pytest.raises(ApiError, match="--constrain tools") as e:
        prepare(_body(tools=TOOLS, tool_choice=choice), REGISTRY, None)
    assert e.value.status == 400 and e.value.param == "tool_choice"
    assert (
        prepare(_body(tools=TOOLS, tool_choice=choice), REGISTRY, "tools").body["tool_choice"]
        == choice
    )


def test_a_named_function_must_be_one_of_the_tools():
    choice = {"type": "function", "function": {"name": "delete_all"}}
    with pytest.raises(ApiError, match="not one of the tools"):
        prepare(_body(tools=TOOLS, tool_choice=choice), REGISTRY, "tools")


def test_a_json_schema_response_format_needs_constrained_decoding():
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with pytest.raises(ApiError) as e:
        prepare(_body(response_format=fmt), REGISTRY, None)
    assert e.value.param == "response_format"
    assert prepare(_body(response_format=fmt), REGISTRY, "tools").body["response_format"] == fmt
    assert (
        "response_format"
        not in prepare(_body(response_format={"type": "text"}), REGISTRY, None).body
    )


def test_n_asks_for_n_samples_and_is_bounded():
    fwd = prepare(_body(n=3), REGISTRY, None)
    assert fwd.n == 3 and "n" not in fwd.body
    with pytest.raises(ApiError, match="n: must be an integer"):
        prepare(_body(n=0), REGISTRY, None)


def test_a_claimed_call_that_is_not_there_finishes_with_stop():
    choice = {
        "finish_reason": "tool_calls",
        "message": {"content": "I will call", "tool_calls": []},
    }
    has_call, note = repair_choice(choice, "message")
    assert not has_call and note
    assert choice == {"finish_reason": "stop", "message": {"content": "I will call"}}


def test_a_malformed_call_is_moved_to_content_with_its_text():
    bad = {"type": "function", "function": {"name": "read_file", "arguments": "{not json"}}
    good = {"type": "function", "function": {"name": "read_file", "arguments": '{"path": "a"}'}}
    choice = {
        "finish_reason": "tool_calls",
        "message": {"content": None, "tool_calls": [bad, good]},
    }
    assert repair_choice(choice, "message")[0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [good]
    assert "{not json" in choice["message"]["content"]


def test_a_streamed_finish_after_a_call_delta_keeps_tool_calls():
    choice = {"finish_reason": "tool_calls", "delta": {}}
    repair_choice(choice, "delta", calls_seen=True)
    assert choice["finish_reason"] == "tool_calls"


def test_n_answers_merge_into_one_with_the_id_that_answered():
    one = {"object": "chat.completion", "model": "/m/base", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"content": "a"}}
    ], "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}  # fmt: skip
    merged, notes = merge_replies([one, one], "demo")
    assert merged["model"] == "demo" and not notes
    assert [c["index"] for c in merged["choices"]] == [0, 1]
    assert merged["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_backend_errors_come_back_in_openai_shape():
    refused = backend_error(400, '{"error": "temperature must be at least 0"}')
    assert refused.status == 400 and "temperature must be at least 0" in refused.message
    failed = backend_error(404, '{"error": "adapter not found"}')  # mlx_lm's answer to a load error
    assert failed.status == 500 and failed.body()["error"]["type"] == "server_error"
    assert backend_error(404, "Not Found").message.endswith("Not Found")


def test_punie_server_checks_its_arguments_before_anything_starts(tmp_path):
    from punie.serve.front import FrontServer
    from punie.train.rundir import ADAPTER_WEIGHTS

    with pytest.raises(ServerError, match="--constrain: 'json' is not one of tools"):
        FrontServer("/m/base", constrain="json")
    with pytest.raises(ServerError, match=f"not an adapter folder \\(no {ADAPTER_WEIGHTS}\\)"):
        FrontServer("/m/base", adapters=[tmp_path])
    for name in ("demo", "x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ADAPTER_WEIGHTS).write_bytes(b"")
    adapters = [tmp_path / "demo", ("mine", tmp_path / "x")]
    server = FrontServer("/m/base", adapters=adapters, name="b")
    assert server.ids == ("b", "demo", "mine") and server.port is None  # nothing bound yet
