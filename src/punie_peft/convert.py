"""LoRA adapters between mlx-lm's format and PEFT's, both ways, without torch.

mlx-lm (`adapters.safetensors` + `adapter_config.json`):
    model.layers.3.self_attn.q_proj.lora_a   (in, rank)
    model.layers.3.self_attn.q_proj.lora_b   (rank, out)
    y = W x + scale * (x @ lora_a) @ lora_b, on the last `num_layers` blocks
PEFT (`adapter_model.safetensors` + `adapter_config.json`):
    base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight   (rank, in)
    base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight   (out, rank)
    y = W x + (lora_alpha / r) * B A x, on `layers_to_transform`

So A = lora_a.T, B = lora_b.T and lora_alpha = scale * rank: the same update, exactly. DoRA,
rsLoRA-free assumptions and biases are checked, and what cannot move is refused in one line.
Tensors are read and written with MLX (a core dependency), which also handles bfloat16.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from punie.errors import BackendError
from punie.fsio import atomic_dir, write_json
from punie.train.rundir import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from punie_peft.mapping import lora_alpha, lora_scale

# mlx_lm's and PEFT's adapter folders share the config file's name, not the weights'.
MLX_WEIGHTS, PEFT_WEIGHTS = ADAPTER_WEIGHTS, "adapter_model.safetensors"
CONFIG = ADAPTER_CONFIG
PEFT_PREFIX = "base_model.model."
_MLX_KEY = re.compile(r"^(?P<module>.*\.layers\.(?P<layer>\d+)\.(?P<path>.+))\.lora_(?P<ab>[ab])$")
_PEFT_KEY = re.compile(
    r"^base_model\.model\.(?P<module>.*\.layers\.(?P<layer>\d+)\.(?P<path>.+))\.lora_(?P<ab>[AB])\.weight$"
)


def mlx_to_peft(weights: dict[str, Any], config: dict, base_model: str = "") -> tuple[dict, dict]:
    """(mlx weights, mlx adapter config) -> (PEFT weights, PEFT adapter config)."""
    kind = config.get("fine_tune_type", "lora")
    if kind != "lora":
        raise BackendError(f"convert: only LoRA adapters convert; this one is {kind!r}")
    params = config["lora_parameters"]
    rank, scale = int(params["rank"]), float(params["scale"])
    out, layers, paths = {}, set(), set()
    for key, value in weights.items():
        m = _MLX_KEY.match(key)
        if not m:
            raise BackendError(f"convert: {key}: not a LoRA tensor of a transformer block")
        layers.add(int(m["layer"]))
        paths.add(m["path"])
        out[f"{PEFT_PREFIX}{m['module']}.lora_{m['ab'].upper()}.weight"] = value.T
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": lora_alpha(scale, rank),
        "lora_dropout": float(params.get("dropout", 0.0)),
        "target_modules": sorted({p.rsplit(".", 1)[-1] for p in paths}),
        "layers_to_transform": sorted(layers),
        "layers_pattern": "layers",
        "bias": "none",
        "use_dora": False,
        "use_rslora": False,
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    return out, peft_config


def peft_to_mlx(weights: dict[str, Any], config: dict, num_hidden_layers: int) -> tuple[dict, dict]:
    """(PEFT weights, PEFT adapter config) -> (mlx weights, mlx adapter config)."""
    if config.get("peft_type", "LORA") != "LORA":
        raise BackendError(
            f"convert: only LoRA adapters convert; this one is {config['peft_type']}"
        )
    if config.get("use_dora"):
        raise BackendError("convert: DoRA adapters do not convert to mlx-lm's format here")
    if config.get("bias", "none") != "none":
        raise BackendError(f"convert: bias={config['bias']!r} has no mlx-lm equivalent")
    rank = int(config["r"])
    out, layers, paths = {}, set(), set()
    for key, value in weights.items():
        m = _PEFT_KEY.match(key)
        if not m:
            raise BackendError(f"convert: {key}: not a LoRA A/B weight of a transformer block")
        layers.add(int(m["layer"]))
        paths.add(m["path"])
        out[f"{m['module']}.lora_{m['ab'].lower()}"] = value.T
    first = min(layers)
    mlx_config = {
        "fine_tune_type": "lora",
        # mlx-lm adapts the last `num_layers` blocks; blocks in that range without weights keep
        # lora_b at zero, so they change nothing.
        "num_layers": num_hidden_layers - first,
        "lora_parameters": {
            "rank": rank,
            "scale": lora_scale(config["lora_alpha"], rank, bool(config.get("use_rslora"))),
            "dropout": float(config.get("lora_dropout", 0.0)),
            "keys": sorted(paths),
        },
    }
    return out, mlx_config


def _load(path: Path) -> dict:
    import mlx.core as mx

    return mx.load(str(path))


def _save(folder: Path, name: str, weights: dict) -> None:
    import mlx.core as mx

    tmp = folder / f".{name}.tmp.safetensors"  # mlx insists on the suffix
    mx.save_safetensors(str(tmp), weights, metadata={"format": "pt"})
    os.replace(tmp, folder / name)


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG
    if not path.exists():
        raise BackendError(f"convert: {path}: missing (is {folder} an adapter folder?)")
    return json.loads(path.read_text(encoding="utf-8"))


def is_mlx_adapter(folder: Path) -> bool:
    return (Path(folder) / MLX_WEIGHTS).exists()


def convert_mlx_to_peft(adapter: Path, out: Path, base_model: str = "") -> Path:
    """Write the PEFT form of an mlx-lm LoRA adapter folder to `out` (replaced atomically)."""
    adapter = Path(adapter)
    config = _read_config(adapter)
    weights, peft_config = mlx_to_peft(_load(adapter / MLX_WEIGHTS), config, base_model)
    with atomic_dir(out, kind="adapter") as tmp:
        _save(tmp, PEFT_WEIGHTS, weights)
        write_json(tmp / CONFIG, peft_config)
    return Path(out)


def convert_peft_to_mlx(adapter: Path, out: Path, num_hidden_layers: int | None = None) -> Path:
    """Write the mlx-lm form of a PEFT LoRA adapter folder to `out` (replaced atomically)."""
    adapter = Path(adapter)
    config = _read_config(adapter)
    if num_hidden_layers is None:
        base = Path(config.get("base_model_name_or_path") or "")
        if not (base / "config.json").exists():
            raise BackendError(
                f"convert: {adapter / CONFIG}: base_model_name_or_path is not a local model "
                "folder; pass the number of layers of the base model"
            )
        num_hidden_layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    weights, mlx_config = peft_to_mlx(_load(adapter / PEFT_WEIGHTS), config, num_hidden_layers)
    with atomic_dir(out, kind="adapter") as tmp:
        _save(tmp, MLX_WEIGHTS, weights)
        write_json(tmp / CONFIG, mlx_config)
    return Path(out)


def write_mlx_adapter(peft_dir: Path, run_dir: Path, num_hidden_layers: int) -> None:
    """Add the mlx-lm form of the run's PEFT adapter beside it in the run folder, so
    `mlx_lm.server --adapter-path run_dir` (and `punie eval --adapter`) serve it unchanged."""
    config = _read_config(peft_dir)
    weights, mlx_config = peft_to_mlx(_load(peft_dir / PEFT_WEIGHTS), config, num_hidden_layers)
    _save(run_dir, MLX_WEIGHTS, weights)
    write_json(run_dir / CONFIG, mlx_config)


def start_kind(config: Any) -> str:
    """The fine-tune type of `from_adapter` (mlx-lm's format), refused unless it is the config's."""
    folder = Path(config.from_adapter or "")
    meta = folder / "adapter_config.json"
    if not meta.is_file():
        raise BackendError(f"from_adapter: {meta}: missing (an adapter folder in mlx-lm's format)")
    kind = json.loads(meta.read_text(encoding="utf-8")).get("fine_tune_type", "lora")
    if kind not in ("lora", "full"):
        raise BackendError(f"from_adapter: {folder}: {kind} adapters cannot start a peft GRPO run")
    if kind != config.fine_tune_type:
        raise BackendError(
            f"from_adapter: {folder} is a {kind} adapter but fine_tune_type is "
            f"{config.fine_tune_type!r}; set fine_tune_type = {kind!r}"
        )
    return kind
