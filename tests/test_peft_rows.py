"""Which tokens carry loss in the peft backend (needs a tokenizer, not torch)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from punie.errors import PunieError  # noqa: E402
from punie_peft.rows import IGNORE, tokenize_file, tokenize_row  # noqa: E402

TOOL_TURN = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"type": "function", "function": {"name": "read_file",
                                                     "arguments": {"path": "a.py"}}}],
}  # fmt: skip
ROW = {
    "messages": [
        {"role": "system", "content": "You are Punie."},
        {"role": "user", "content": "Show me a.py"},
        TOOL_TURN,
        {"role": "tool", "content": "print('hi')"},
        {"role": "assistant", "content": "It prints hi."},
    ]
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _trained_text(tokenizer, row, **kw) -> str:
    t = tokenize_row(tokenizer, row, **kw)
    pairs = zip(t.input_ids, t.labels, strict=True)
    return tokenizer.decode([i for i, label in pairs if label != IGNORE])


def test_mask_prompt_trains_every_assistant_turn_and_nothing_else(tokenizer):
    text = _trained_text(tokenizer, ROW, mask_prompt=True)
    assert '<tool_call>\n{"name": "read_file"' in text  # the first turn, not only the last
    assert "It prints hi.<|im_end|>" in text
    assert "Show me a.py" not in text and "print('hi')" not in text and "system" not in text


def test_without_mask_prompt_every_token_trains(tokenizer):
    t = tokenize_row(tokenizer, ROW, mask_prompt=False)
    assert t.labels == t.input_ids


def test_tools_are_rendered_by_the_models_own_template(tokenizer):
    row = {**ROW, "tools": [{"type": "function", "function": {"name": "read_file",
                                                              "parameters": {}}}]}  # fmt: skip
    full = tokenizer.decode(tokenize_row(tokenizer, row, mask_prompt=True).input_ids)
    assert full == tokenizer.apply_chat_template(
        row["messages"], tools=row["tools"], tokenize=False
    )
    assert "read_file" in full.split("<|im_end|>")[0]


def test_prompt_completion_rows_train_on_the_completion(tokenizer):
    text = _trained_text(tokenizer, {"prompt": "Hi", "completion": "Hello!"}, mask_prompt=True)
    assert text.startswith("Hello!") and "Hi" not in text


def test_a_row_without_a_known_format_names_file_and_line(tokenizer, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok"}\n{"question": "?"}\n')
    with pytest.raises(PunieError, match=r"train.jsonl:2: keys \['question'\]: expected"):
        tokenize_file(tokenizer, path, mask_prompt=False, max_length=64)
