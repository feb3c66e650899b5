"""`validate --model` renders rows through the model's chat template as training will."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from punie.data.sample import splits
from punie.data.validate import validate


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def call(name, **arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def problems_of(path, model, **kw):
    found = []
    summary = validate(path, model=str(model), on_problem=found.append, **kw)
    return summary, [str(p) for p in found]


def test_sample_set_is_clean_through_the_tiny_models_template(tmp_path, tiny_model):
    data = write_rows(tmp_path / "d.jsonl", splits(20, 0, 0)["train"])
    summary, found = problems_of(data, tiny_model)
    assert found == [] and summary.clean and summary.files[0].rows == 20


AGENT_ROW = {
    "messages": [
        {"role": "user", "content": "Read a.py"},
        {"role": "assistant", "content": "", "tool_calls": [call("read_file", path="a.py")]},
        {"role": "tool", "content": "print(1)"},
        {"role": "assistant", "content": "It prints 1."},
    ]
}


def validate_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "punie", "dataset", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_multi_turn_agent_row_validates_clean_because_training_trains_every_assistant_turn(
    tmp_path, tiny_model
):
    data = write_rows(tmp_path / "d.jsonl", [AGENT_ROW])
    result = validate_cli(data, "--model", tiny_model)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "masked" not in result.stdout
    # The same row through training's own loss mask: the tool-call turn carries loss.
    from punie.chat.masking import assistant_turns, trained_spans
    from punie.chat.template import ChatTemplate

    tokenizer = ChatTemplate(tiny_model).tokenizer
    messages = AGENT_ROW["messages"]
    _, spans = trained_spans(tokenizer, messages, mask_prompt=True)
    assert dict(assistant_turns(tokenizer, messages))[1] in spans


def test_tool_call_cut_at_max_seq_length_is_reported_as_masked(tmp_path, tiny_model):
    from punie.chat.masking import assistant_turns
    from punie.chat.template import ChatTemplate

    turns = dict(assistant_turns(ChatTemplate(tiny_model).tokenizer, AGENT_ROW["messages"]))
    start, _ = turns[1]
    data = write_rows(tmp_path / "d.jsonl", [AGENT_ROW])
    for mask in ("--mask-prompt", "--no-mask-prompt"):
        result = validate_cli(data, "--model", tiny_model, "--max-seq-length", start, mask)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{data}:1: messages[1].tool_calls: masked out of the loss" in result.stdout
        assert f"cut at --max-seq-length {start}" in result.stdout


def test_rows_over_max_seq_length_are_reported_with_their_length(tmp_path, tiny_model):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "x " * 300},
                {"role": "assistant", "content": "ok"},
            ]
        }
    ]
    _, found = problems_of(write_rows(tmp_path / "d.jsonl", rows), tiny_model, max_seq_length=64)
    assert len(found) == 1 and "tokens > --max-seq-length 64" in found[0]


# Renders content only: tool calls vanish.
PLAIN = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content or '' }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def with_template(tmp_path, tiny_model, template):
    """A copy of the tiny model whose tokenizer uses `template`."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    for extra in model.glob("chat_template.*"):
        extra.unlink()
    return model


def test_tool_calls_a_template_drops_are_reported(tmp_path, tiny_model):
    model = with_template(tmp_path, tiny_model, PLAIN)
    data = write_rows(tmp_path / "d.jsonl", splits(3, 0, 0, seed=1)["train"])
    summary, found = problems_of(data, model)
    with_calls = [r for r in splits(3, 0, 0, seed=1)["train"] if "tool_calls" in r["messages"][-1]]
    assert with_calls and len(found) == len(with_calls)
    assert all("renders no <tool_call>" in p for p in found)


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([{"role": "assistant", "content": "hi"}], "messages[0].role"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "messages[1].role",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}],
            "messages[1].role",
        ),
        ([{"role": "user", "content": "  "}], "messages[0].content"),
    ],
    ids=["assistant-first", "two-users", "late-system", "empty-turn"],
)
def test_roles_out_of_order_and_empty_turns_are_problems(tmp_path, messages, field):
    found = []
    summary = validate(
        write_rows(tmp_path / "d.jsonl", [{"messages": messages}]), on_problem=found.append
    )
    assert summary.problems == 1 and found[0].field == field and found[0].line == 1


def preference(chosen_call=True, **extra):
    call_it = {"role": "assistant", "content": "", "tool_calls": [call("read_file", path="a.py")]}
    chosen = call_it if chosen_call else {"role": "assistant", "content": "Here it is."}
    return {
        "prompt": [{"role": "user", "content": "Show me a.py"}],
        "chosen": [chosen],
        "rejected": [{"role": "assistant", "content": "I cannot read files."}],
        **extra,
    }


def test_preference_rows_render_through_the_template_as_trl_renders_them(tmp_path, tiny_model):
    data = write_rows(tmp_path / "d.jsonl", [preference()])
    summary, found = problems_of(data, tiny_model)
    assert found == [] and summary.files[0].kind == "preference"
    _, found = problems_of(data, tiny_model, max_seq_length=20)
    assert [p.split(": ")[1] for p in found] == ["chosen", "rejected"]
    assert "prompt + chosen: " in found[0] and "tokens > --max-seq-length 20" in found[0]
    _, found = problems_of(data, with_template(tmp_path, tiny_model, PLAIN))
    assert found == [
        f"{data}:1: chosen[0].tool_calls: the chat template renders no <tool_call> for this turn"
    ]


def test_preference_prompt_the_template_renders_differently_is_reported(tmp_path, tiny_model):
    # Like some reasoning templates: the generation prompt opens a <think> the full render lacks.
    template = PLAIN.replace("assistant\n{% endif %}", "assistant\n<think>{% endif %}")
    model = with_template(tmp_path, tiny_model, template)
    data = write_rows(tmp_path / "d.jsonl", [preference(chosen_call=False)])
    _, found = problems_of(data, model)
    assert len(found) == 2 and all("renders the prompt differently" in p for p in found)


def test_preference_rows_mixing_text_and_messages_are_refused(tmp_path):
    row = {**preference(), "chosen": "a string answer"}
    found = []
    validate(write_rows(tmp_path / "d.jsonl", [row]), on_problem=found.append)
    assert [(p.line, p.field) for p in found] == [(1, "row")]
    assert "prompt and rejected are message lists but the rest are strings" in found[0].reason
