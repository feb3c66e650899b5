"""GGUF export (`punie.train.gguf_export`): tokenizer metadata, the tiny Llama's greedy parity
through transformers' GGUF loading, and one-line refusals. The Qwen2 export of a trained run,
through `punie fuse --gguf`, is in test_train_run.py."""

from __future__ import annotations

import json

import pytest

from punie.errors import BackendError
from punie.model.tiny import build_tiny_model
from punie.train.fuse import _FALLBACK_PROMPTS
from punie.train.gguf_export import write_gguf
from train_support import TOOLS

gguf = pytest.importorskip("gguf")

PROMPTS = [{"messages": m, "tools": TOOLS} for m in _FALLBACK_PROMPTS]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("llama") / "tiny-llama", architecture="llama")


def field(reader, key):
    value = reader.fields[key]
    return value.contents()


def test_gguf_carries_the_byte_level_bpe_tokenizer(tiny_model, tmp_path):
    path = write_gguf(tiny_model, tmp_path / "m.gguf", "f16")
    reader = gguf.GGUFReader(path)
    tokenizer = json.loads((tiny_model / "tokenizer.json").read_text())
    assert field(reader, "general.architecture") == "qwen2"
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 1024
    assert tokens[tokenizer["model"]["vocab"]["Ġthe"]] == "Ġthe"
    assert field(reader, "tokenizer.ggml.merges")[:3] == [
        " ".join(m) if isinstance(m, list) else m for m in tokenizer["model"]["merges"][:3]
    ]
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[tokens.index("<|im_end|>")] == gguf.TokenType.CONTROL
    assert types[tokens.index("<tool_call>")] == gguf.TokenType.USER_DEFINED
    assert field(reader, "tokenizer.ggml.eos_token_id") == tokens.index("<|im_end|>")
    template = json.loads((tiny_model / "tokenizer_config.json").read_text())["chat_template"]
    assert field(reader, "tokenizer.chat_template") == template


@pytest.mark.slow
def test_tiny_llama_gguf_gives_transformers_the_same_greedy_tokens(tiny_llama, tmp_path):
    pytest.importorskip("torch")
    from gguf_support import greedy_parity

    path = write_gguf(tiny_llama, tmp_path / "llama.gguf", "f16")
    reader = gguf.GGUFReader(path)
    assert field(reader, "general.architecture") == "llama"
    assert "blk.0.attn_q.bias" not in {t.name for t in reader.tensors}
    rows = greedy_parity(tiny_llama, path, PROMPTS)
    assert all(r["same_prompt_ids"] and r["same_tokens"] for r in rows), rows
    assert max(r["max_logit_diff"] for r in rows) < 0.05  # float16 rounding only


@pytest.mark.slow
def test_q8_0_gguf_stays_within_8_bit_rounding_of_the_model(tiny_llama, tmp_path):
    """8-bit blocks move logits by about 0.2 on this model (logits span about ±19), enough to flip
    a near tie of the random weights, so the tokens are not compared; a wrong layout or scale
    would move them by whole units."""
    pytest.importorskip("torch")
    from gguf_support import greedy_parity

    path = write_gguf(tiny_llama, tmp_path / "llama.gguf", "q8_0")
    kinds = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert kinds["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    rows = greedy_parity(tiny_llama, path, PROMPTS[:1], max_tokens=4)
    assert rows[0]["same_prompt_ids"] and 0 < rows[0]["max_logit_diff"] < 0.5


def test_unknown_quant_and_architecture_are_one_line_errors(tiny_model, tmp_path):
    with pytest.raises(BackendError, match="'q4' is not one of f16, q8_0"):
        write_gguf(tiny_model, tmp_path / "a.gguf", "q4")
    other = tmp_path / "phi"
    other.mkdir()
    config = json.loads((tiny_model / "config.json").read_text()) | {"model_type": "phi3"}
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        BackendError, match="exports qwen2, qwen3, llama, mistral models; phi is phi3"
    ):
        write_gguf(other, tmp_path / "b.gguf", "f16")
    assert not (tmp_path / "a.gguf").exists() and not (tmp_path / "b.gguf").exists()


def test_the_tiny_llama_is_the_tiny_model_without_biases(tiny_model, tiny_llama):
    from punie.train.gguf_export import load_weights

    config = json.loads((tiny_llama / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    llama, qwen = load_weights(tiny_llama), load_weights(tiny_model)
    assert set(llama) == {k for k in qwen if not k.endswith("_proj.bias")}
    name = "model.layers.0.self_attn.q_proj.weight"
    assert (llama[name] == qwen[name]).all()


def test_modelfile_writes_the_models_own_tool_format_in_go(tiny_model, tmp_path):
    from punie.train.fuse import QWEN_TOOLS_MARKER, modelfile

    tiny = modelfile(tiny_model, "r", gguf=True)
    assert "FROM ./model.gguf" in tiny
    assert "{{ .Function.Name }}(" in tiny and "<tool_call>" in tiny  # one line a tool
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    template = "<|im_start|>system ... " + QWEN_TOOLS_MARKER + " ..."
    (qwen / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    text = modelfile(qwen, "r", gguf=False)
    assert "<tools>" in text and "<tool_response>" in text and "FROM ." in text
    (qwen / "tokenizer_config.json").write_text(json.dumps({"chat_template": "[INST]"}))
    assert "TEMPLATE" not in modelfile(qwen, "r", gguf=False)
