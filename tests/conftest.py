"""Shared fixtures: the tiny model is built once per test session, in a temp folder."""

from __future__ import annotations

import pytest

from punie.model.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", seed=0)


CALL_ROW = {
    "messages": [
        {"role": "user", "content": "Show me a.py"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "read_file", "arguments": {"path": "a.py"}},
                }
            ],
        },
    ]
}


@pytest.fixture(scope="session")
def parrot_adapter(tiny_model, tmp_path_factory):
    """A full fine-tune that answers every prompt with the same read_file call.

    A random model never emits a tool call, so tests of the server's tool-call path need one
    that does; overfitting a single short row takes seconds.
    """
    from punie.fsio import write_jsonl
    from punie.train.config import TrainConfig
    from punie.train.launch import start

    root = tmp_path_factory.mktemp("parrot")
    for split in ("train", "valid"):
        write_jsonl(root / "data" / f"{split}.jsonl", [CALL_ROW] * 4)
    config = TrainConfig(
        model=str(tiny_model),
        data=str(root / "data"),
        adapter_path=str(root / "adapter"),
        fine_tune_type="full",
        num_layers=-1,
        learning_rate=3e-3,
        batch_size=2,
        iters=40,
        mask_prompt=True,
        max_seq_length=128,
        steps_per_eval=1000,
        val_batches=1,
        save_every=1000,
    )
    return start(config, overwrite=True).adapter_path
