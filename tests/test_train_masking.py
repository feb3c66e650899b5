"""Loss masking: with mask_prompt, every assistant turn carries loss, and nothing else does."""

from __future__ import annotations

import numpy as np
import pytest

from train_support import TOOLS, multi_turn_row, single_turn_row

mx = pytest.importorskip("mlx.core")

from mlx_lm.tuner.datasets import CacheDataset, ChatDataset  # noqa: E402
from mlx_lm.tuner.trainer import default_loss  # noqa: E402
from mlx_lm.tuner.trainer import iterate_batches as mlx_batches  # noqa: E402
from mlx_lm.utils import load  # noqa: E402

from punie.train.masking import ChatTurns, iterate_batches, masked_loss  # noqa: E402


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    return load(str(tiny_model))


def trained_text(tokenizer, row, mask_prompt=True) -> tuple[str, str]:
    """(text of the target positions that carry loss, text of those that do not) for one row;
    position 0 is never a target."""
    dataset = CacheDataset(ChatTurns([row], tokenizer, mask_prompt))
    batch, mask = next(iterate_batches(dataset, 1, 512))
    tokens, on = np.array(batch)[0], np.array(mask)[0]
    length = len(dataset[0][0])
    pairs = list(zip(tokens[1:length], on[1:length], strict=True))
    trained = [int(t) for t, m in pairs if m]
    ignored = [int(t) for t, m in pairs if not m]
    return tokenizer.decode(trained), tokenizer.decode(ignored)


def test_every_assistant_turn_carries_loss(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    trained, ignored = trained_text(tokenizer, multi_turn_row("main.py", tools=TOOLS))
    # The tool call sits in the first of two assistant turns: it must train.
    assert '{"name": "read_file", "arguments": {"path": "main.py"}}' in trained
    assert "Read main.py." in trained
    assert trained.count("<|im_end|>") == 2  # each turn learns to end
    # The system prompt, tools, user question and tool result never carry loss.
    for text in ("Open main.py", "# Tools", "<|im_start|>tool\nok", "<|im_start|>user"):
        assert text in ignored
        assert text not in trained


def test_mlx_lm_mask_prompt_would_drop_the_earlier_tool_call(model_and_tokenizer):
    """The trap this masking exists for: upstream masks all but the final message."""
    _, tokenizer = model_and_tokenizer
    row = multi_turn_row("main.py")
    tokens, offset = ChatDataset([row], tokenizer, mask_prompt=True).process(row)
    assert "read_file" not in tokenizer.decode(tokens[offset:])
    trained, _ = trained_text(tokenizer, row)
    assert "read_file" in trained


def test_without_mask_prompt_every_target_trains(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    trained, ignored = trained_text(tokenizer, multi_turn_row("a.py"), mask_prompt=False)
    assert "Open a.py" in trained
    assert ignored == ""


def test_single_turn_loss_is_mlx_lms_loss_exactly(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rows = [single_turn_row(p) for p in ("a.py", "bb.md", "c.txt", "main.py")] * 2
    ours = CacheDataset(ChatTurns(rows, tokenizer, mask_prompt=True))
    theirs = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))
    np.random.seed(1)
    expected = [default_loss(model, *b)[0].item() for b in mlx_batches(theirs, 2, 512)]
    np.random.seed(1)
    got = [masked_loss(model, *b)[0].item() for b in iterate_batches(ours, 2, 512)]
    assert got == expected
