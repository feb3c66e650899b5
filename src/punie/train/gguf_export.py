"""A fused model folder -> one GGUF file, through llama.cpp's own Python writer (`gguf`).

mlx_lm exports GGUF for llama, mistral and mixtral only; most local agent models are Qwen. This
writes the Qwen2, Qwen3, Llama and Mistral families the way llama.cpp's `convert_hf_to_gguf.py`
does: the same tensor names (`gguf`'s own name map), Llama's and Mistral's q/k rows permuted to
llama.cpp's rotary layout, Llama 3's rope frequency factors as `rope_freqs.weight`, and the
byte-level BPE tokenizer as metadata (`tokenizer.ggml.model = gpt2`: tokens, merges, token types,
bos/eos/pad ids, the chat template).

`f16` writes matrices as float16, `q8_0` as 8-bit blocks of 32 (a matrix whose rows are not a
multiple of 32 stays float16); vectors (norms, biases) stay float32 in both, as llama.cpp keeps
them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from punie.errors import BackendError

QUANTS = ("f16", "q8_0")
# model_type -> (llama.cpp architecture, q/k rows permuted to llama.cpp's rotary layout)
ARCHITECTURES = {
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
    "llama": ("llama", True),
    "mistral": ("llama", True),  # llama.cpp writes Mistral as llama
}
# tokenizer.json split patterns -> llama.cpp's `tokenizer.ggml.pre` names.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {_QWEN2_SPLIT: "qwen2", _LLAMA3_SPLIT: "llama-bpe"}


def _gguf():
    try:
        import gguf
    except ImportError:
        raise BackendError("--gguf: needs the gguf package (pip install 'punie[gguf]')") from None
    return gguf


@dataclass(frozen=True)
class Vocab:
    """The tokenizer as llama.cpp stores it."""

    tokens: list[str]
    types: list[int]  # gguf.TokenType values
    merges: list[str]
    pre: str
    bos: int | None
    eos: int | None
    pad: int | None
    add_bos: bool
    chat_template: str


def check_exportable(model_dir: Path) -> None:
    """Refuse, in one line and before anything runs, a model this exporter cannot write."""
    config = _read_json(model_dir / "config.json")
    kind = config.get("model_type", "")
    if kind not in ARCHITECTURES:
        raise BackendError(
            f"--gguf: exports {', '.join(ARCHITECTURES)} models; {model_dir.name} is "
            f"{kind or 'an unknown type'} (fuse without --gguf)"
        )
    rope = config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type"))
    if rope_type not in (None, "default", "llama3"):
        raise BackendError(
            f"--gguf: {model_dir.name}: rope_scaling type {rope_type!r} is not exported "
            "(default and llama3 are)"
        )
    read_vocab(model_dir, int(config["vocab_size"]))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError(f"--gguf: {path} is missing") from None


def pre_tokenizer_name(tokenizer: dict[str, Any], where: Path) -> str:
    """llama.cpp's name for how the text is split before BPE, read from tokenizer.json."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"]:
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern in PRE_TOKENIZERS:
            return PRE_TOKENIZERS[pattern]
    raise BackendError(
        f"--gguf: {where}: pre_tokenizer {'+'.join(map(str, kinds))} is not one llama.cpp "
        "knows by name (GPT-2, Qwen2 or Llama 3 byte-level splits are)"
    )


def read_vocab(model_dir: Path, vocab_size: int) -> Vocab:
    """Tokens (padded to the model's vocab_size, as llama.cpp does), types, merges, special ids."""
    gguf = _gguf()
    where = model_dir / "tokenizer.json"
    tokenizer = _read_json(where)
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or (tokenizer.get("decoder") or {}).get("type") != "ByteLevel":
        raise BackendError(
            f"--gguf: {where}: only byte-level BPE tokenizers are exported "
            "(a sentencepiece tokenizer is not)"
        )
    pre = pre_tokenizer_name(tokenizer, where)
    by_id = {i: t for t, i in model["vocab"].items()}
    types = {i: int(gguf.TokenType.NORMAL) for i in by_id}
    for added in tokenizer.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = int(
            gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        )
    size = max(vocab_size, max(by_id) + 1)
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    kinds = [types.get(i, int(gguf.TokenType.UNUSED)) for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    config = _tokenizer_config(model_dir)
    ids = {t: i for i, t in enumerate(tokens)}

    def special(name: str) -> int | None:
        token = config.get(name)
        token = token.get("content") if isinstance(token, dict) else token
        return ids.get(token) if token else None

    return Vocab(
        tokens=tokens,
        types=kinds,
        merges=merges,
        pre=pre,
        bos=special("bos_token"),
        eos=special("eos_token"),
        pad=special("pad_token"),
        add_bos=bool(config.get("add_bos_token", False)) and special("bos_token") is not None,
        chat_template=_chat_template(model_dir, config),
    )


def _tokenizer_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _chat_template(model_dir: Path, config: dict[str, Any]) -> str:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = config.get("chat_template") or ""
    if isinstance(template, list):  # named templates: llama.cpp reads the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), "")
    return template


def load_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's safetensors files, as float32 numpy arrays."""
    import mlx.core as mx

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise BackendError(f"--gguf: {model_dir} has no .safetensors weights")
    weights: dict[str, np.ndarray] = {}
    for file in files:
        for name, value in mx.load(str(file)).items():
            weights[name] = np.array(value.astype(mx.float32))
    return weights


def permute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotary halves -> llama.cpp's interleaved pairs (convert_hf_to_gguf's `permute`)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def llama3_rope_factors(config: dict[str, Any], head_dim: int) -> np.ndarray:
    """Llama 3's per-frequency rope scaling, as convert_hf_to_gguf computes it."""
    rope = config["rope_scaling"]
    base = float(config.get("rope_theta", 10000.0))
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old = float(rope.get("original_max_position_embeddings", 8192))
    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * base ** (i / head_dim)
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _encode(gguf, weight: np.ndarray, quant: str) -> tuple[np.ndarray, Any]:
    """(data, raw dtype or None): vectors float32, matrices float16 or Q8_0."""
    if weight.ndim < 2:
        return weight.astype(np.float32), None
    q8 = gguf.GGMLQuantizationType.Q8_0
    if quant == "q8_0" and weight.shape[-1] % gguf.GGML_QUANT_SIZES[q8][0] == 0:
        return gguf.quants.quantize(weight, q8), q8
    return weight.astype(np.float16), None


def write_gguf(model_dir: Path, path: Path, quant: str, *, name: str = "") -> Path:
    """Write `model_dir` (a Hugging Face folder: config.json, safetensors, tokenizer.json) to
    `path` as GGUF, its matrices `quant` (f16 or q8_0)."""
    if quant not in QUANTS:
        raise BackendError(f"--gguf: {quant!r} is not one of {', '.join(QUANTS)}")
    gguf = _gguf()
    check_exportable(model_dir)
    config = _read_json(model_dir / "config.json")
    arch_name, permute = ARCHITECTURES[config["model_type"]]
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    vocab = read_vocab(model_dir, int(config["vocab_size"]))

    writer = gguf.GGUFWriter(str(path), arch_name)
    # transformers tells Mistral from Llama (one llama.cpp architecture) by the name.
    writer.add_name(name or (f"{config['model_type']}-{model_dir.name}"))
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(len(vocab.tokens))
    if head_dim != int(config["hidden_size"]) // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if permute:
        writer.add_rope_dimension_count(head_dim)
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for ident, add in (
        (vocab.bos, writer.add_bos_token_id),
        (vocab.eos, writer.add_eos_token_id),
        (vocab.pad, writer.add_pad_token_id),
    ):
        if ident is not None:
            add(ident)
    writer.add_add_bos_token(vocab.add_bos)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)

    names = gguf.get_tensor_name_map(arch, layers)
    weights = load_weights(model_dir)
    if (config.get("rope_scaling") or {}).get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(config, head_dim))
    for hf_name in sorted(weights):
        weight = weights[hf_name]
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        if permute and hf_name.endswith("self_attn.q_proj.weight"):
            weight = permute_rows(weight, heads)
        elif permute and hf_name.endswith("self_attn.k_proj.weight"):
            weight = permute_rows(weight, kv_heads)
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise BackendError(f"--gguf: {model_dir.name}: no GGUF name for tensor {hf_name}")
        data, raw = _encode(gguf, weight, quant)
        writer.add_tensor(gguf_name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
