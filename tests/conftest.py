"""Shared fixtures: the tiny model is built once per test session, in a temp folder."""

from __future__ import annotations

import subprocess

import pytest

from punie.model.tiny import build_tiny_model
from punie.proc import child_env, python_module


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", seed=0)


@pytest.fixture(scope="session")
def quantized_model(tmp_path_factory, tiny_model):
    """The tiny model quantized to 4 bits by `mlx_lm convert` (QLoRA's base)."""
    out = tmp_path_factory.mktemp("q") / "tiny-4bit"
    # Group size 32: the tiny model's MLP width (352) is not a multiple of the default 64.
    cmd = python_module("mlx_lm", "convert", "--hf-path", str(tiny_model),
                        "--mlx-path", str(out), "-q", "--q-group-size", "32")  # fmt: skip
    subprocess.run(cmd, env=child_env(), check=True, capture_output=True, timeout=300)
    return out


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
    from train_support import overfit_adapter

    root = tmp_path_factory.mktemp("parrot")
    return overfit_adapter(tiny_model, root, [CALL_ROW] * 4, max_seq_length=128)
