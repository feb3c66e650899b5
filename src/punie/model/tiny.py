"""The embedded default model: a deterministic tiny Qwen2-architecture model (or Llama).

Nothing can be downloaded at run time on the machines Punie is tested on, so every test and the
demo run on a model built here: random weights from a seed, a byte-level BPE tokenizer trained on
`corpus.txt`, and the ChatML-with-tools template in `chat_template.jinja`. The folder it writes is
an ordinary Hugging Face model folder that mlx_lm and transformers both load. `architecture="llama"`
writes the same model as a Llama (no q/k/v biases), for the code that differs by family (GGUF).

Same seed and shape, same bytes: weights are drawn with numpy's PCG64 and written by our own
safetensors writer (sorted keys, no timestamps), and the tokenizer is trained single-threaded.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from punie.fsio import atomic_dir, write_json

ARCHITECTURES = ("qwen2", "llama")
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Added but not special: they must survive decoding so the server's tool parser sees them.
TOOL_TOKENS = ("<tool_call>", "</tool_call>")


@dataclass(frozen=True)
class TinyShape:
    """Model dimensions. The defaults learn the demo's tool-calling task in minutes on 2 cores."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 352
    vocab_size: int = 1024
    max_position_embeddings: int = 2048

    def widened(self, hidden_size: int) -> TinyShape:
        """This shape at another width, the MLP scaled alike: a slower model a token, for
        benchmarks that need a token to cost more."""
        scale = hidden_size / self.hidden_size
        return replace(
            self, hidden_size=hidden_size, intermediate_size=int(scale * self.intermediate_size)
        )


def _corpus() -> str:
    return resources.files("punie.model").joinpath("corpus.txt").read_text(encoding="utf-8")


def chat_template() -> str:
    return resources.files("punie.model").joinpath("chat_template.jinja").read_text("utf-8")


def _train_tokenizer(vocab_size: int):
    # Imported here so that `punie --help` does not pay for the tokenizers import.
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus().splitlines(keepends=True), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return tokenizer


def _tokenizer_config(tokenizer) -> dict:
    added = {}
    for token in (*SPECIAL_TOKENS, *TOOL_TOKENS):
        added[str(tokenizer.token_to_id(token))] = {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": token in SPECIAL_TOKENS,
        }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "chat_template": chat_template(),
    }


def _model_config(shape: TinyShape, eos_id: int, pad_id: int, architecture: str) -> dict:
    family = {
        "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
        "llama": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "attention_bias": False,
            "mlp_bias": False,
        },
    }[architecture]
    return {
        **family,
        **asdict(shape),
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "bos_token_id": pad_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


def _weights(shape: TinyShape, seed: int, architecture: str) -> dict[str, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    head_dim = shape.hidden_size // shape.num_attention_heads
    h, kv = shape.hidden_size, shape.num_key_value_heads * head_dim

    def normal(rows: int, cols: int, std: float | None = None) -> np.ndarray:
        # 1/sqrt(fan_in) keeps activations at unit scale through the random layers.
        std = cols**-0.5 if std is None else std
        return rng.normal(0.0, std, size=(rows, cols)).astype(np.float32)

    # The embedding is tied to the output head, and the final norm scales hidden states to
    # sqrt(hidden_size), so the largest logit a token can get is about hidden_size * std. The
    # usual 0.02 caps that near 2.5, too flat for a LoRA over frozen weights to ever fit the
    # data; 0.15 allows about 19.
    weights = {"model.embed_tokens.weight": normal(shape.vocab_size, h, std=0.15)}
    for i in range(shape.num_hidden_layers):
        p = f"model.layers.{i}"
        weights |= {
            f"{p}.self_attn.q_proj.weight": normal(h, h),
            f"{p}.self_attn.q_proj.bias": np.zeros(h, np.float32),
            f"{p}.self_attn.k_proj.weight": normal(kv, h),
            f"{p}.self_attn.k_proj.bias": np.zeros(kv, np.float32),
            f"{p}.self_attn.v_proj.weight": normal(kv, h),
            f"{p}.self_attn.v_proj.bias": np.zeros(kv, np.float32),
            f"{p}.self_attn.o_proj.weight": normal(h, h),
            f"{p}.mlp.gate_proj.weight": normal(shape.intermediate_size, h),
            f"{p}.mlp.up_proj.weight": normal(shape.intermediate_size, h),
            f"{p}.mlp.down_proj.weight": normal(h, shape.intermediate_size),
            f"{p}.input_layernorm.weight": np.ones(h, np.float32),
            f"{p}.post_attention_layernorm.weight": np.ones(h, np.float32),
        }
    weights["model.norm.weight"] = np.ones(h, np.float32)
    if architecture == "llama":  # the same draws; Llama has no attention biases
        weights = {k: v for k, v in weights.items() if not k.endswith("_proj.bias")}
    return weights


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write float32 tensors in the safetensors layout, byte-for-byte reproducibly."""
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        size = tensors[name].nbytes
        header[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format asks for 8-byte alignment
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name in sorted(tensors):
            f.write(np.ascontiguousarray(tensors[name], dtype="<f4").tobytes())


def build_tiny_model(
    out: Path, *, seed: int = 0, shape: TinyShape = TinyShape(), architecture: str = "qwen2"
) -> Path:
    """Write the tiny model folder to `out` (atomically) and return it."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}")
    out = Path(out)
    tokenizer = _train_tokenizer(shape.vocab_size - 64)
    if tokenizer.get_vocab_size() > shape.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.get_vocab_size()} tokens > {shape.vocab_size}")
    eos_id = tokenizer.token_to_id("<|im_end|>")
    pad_id = tokenizer.token_to_id("<|endoftext|>")

    with atomic_dir(out, kind="model") as tmp:
        tokenizer.save(str(tmp / "tokenizer.json"))
        write_json(tmp / "tokenizer_config.json", _tokenizer_config(tokenizer))
        write_json(
            tmp / "special_tokens_map.json",
            {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        )
        write_json(tmp / "config.json", _model_config(shape, eos_id, pad_id, architecture))
        write_json(
            tmp / "generation_config.json",
            {"eos_token_id": eos_id, "pad_token_id": pad_id, "do_sample": False},
        )
        write_safetensors(tmp / "model.safetensors", _weights(shape, seed, architecture))
        meta = {"seed": seed, "shape": asdict(shape)}
        if architecture != "qwen2":  # the Qwen2 folder stays byte-for-byte what it was
            meta["architecture"] = architecture
        write_json(tmp / "punie_tiny.json", meta)
    return out
