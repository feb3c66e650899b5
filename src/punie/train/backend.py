"""The MLX backend: registered as entry point `mlx` in the `punie.backends` group.

It trains through `punie.train.worker` (mlx_lm's trainer in a child process) and fuses through
`python -m mlx_lm fuse`. `check` reads only small files (config.json, adapter_config.json), so a
bad request fails in milliseconds, before any model is loaded.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from punie.backends.base import Capabilities, FuseResult, parse_options
from punie.errors import ConfigError
from punie.fsio import read_jsonl
from punie.train.callbacks import TrainingEvents
from punie.train.config import TrainConfig, effective_num_layers
from punie.train.fuse import fuse_run
from punie.train.mlx import run_worker, worker_module
from punie.train.rundir import RunDir, adapter_config_file


def model_config(model: str) -> dict[str, Any] | None:
    """A local model folder's config.json; None for a hub id (checked when it is loaded)."""
    path = Path(model).expanduser()
    if not path.exists():
        return None
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model: {path}: not a model folder (no config.json)") from None


def is_quantized(model_cfg: dict[str, Any] | None) -> bool:
    return bool(
        model_cfg and (model_cfg.get("quantization") or model_cfg.get("quantization_config"))
    )


@dataclass(frozen=True)
class MLXOptions:
    """The MLX backend's own options (config `extra.*`); the rest are TrainConfig fields.

    `hosts`: data-parallel training under `mlx.launch` (ring backend), one process a host:
    comma-separated IPs, or a hostfile. The model, data and run folder must be at the same paths
    on every host (a shared folder); `batch_size` is the global batch, split over the hosts."""

    hosts: str | None = None


class MLXBackend:
    name = "mlx"
    options_type = MLXOptions

    def options(self, config: TrainConfig) -> MLXOptions:
        return parse_options(MLXOptions, config.extra, self.name)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            fine_tune_types=("lora", "dora", "full"),
            methods=("sft", "grpo", "dpo"),
            select_by=True,
            quantized_base=True,
            notes="mlx_lm's trainer; a quantized base model (mlx_lm convert -q) means QLoRA",
        )

    def versions(self) -> dict[str, str]:
        found = {}
        for package in ("mlx", "mlx-lm"):
            with contextlib.suppress(PackageNotFoundError):
                found[package] = version(package)
        return found

    def check(self, config: TrainConfig) -> None:
        hosts = self.options(config).hosts
        if hosts and (config.method != "sft" or config.select_by):
            raise ConfigError(
                "extra.hosts: --hosts runs sft without select_by (grpo and select_by score "
                "checkpoints inside the worker, on one process)"
            )
        if hosts and not Path(hosts).is_file():
            count = len([h for h in hosts.split(",") if h.strip()])
            if config.batch_size % count:
                raise ConfigError(
                    f"batch_size: {config.batch_size} does not split evenly over the {count} "
                    "hosts of --hosts (each takes batch_size / hosts rows a step)"
                )
        cfg = model_config(config.model)
        if cfg is not None:
            if config.fine_tune_type == "full" and is_quantized(cfg):
                raise ConfigError(
                    "fine_tune_type: full fine-tuning needs an unquantized model; "
                    f"{config.model} is quantized (use lora or dora: QLoRA)"
                )
            if config.target_modules and config.fine_tune_type != "full":
                check_target_modules(config, weight_modules(Path(config.model).expanduser()))
        if config.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"lr_schedule: {config.lr_schedule!r} is not one of constant, cosine")
        if config.from_adapter:
            check_adapter_fits(config)
        if config.method != "dpo" and config.stages:
            raise ConfigError(f"stages: only method dpo has stages, not {config.method}")
        if config.method == "dpo" and config.select_by:
            raise ConfigError("select_by: not supported with method dpo yet (best/ is by val_loss)")
        if config.method == "dpo":
            check_preference_rows(Path(config.data) / "train.jsonl")

    def train(self, config: TrainConfig, run: RunDir, events: TrainingEvents) -> Path:
        run_worker(
            run.path, events, stage=config.method, module=worker_module(config),
            hosts=self.options(config).hosts,
        )  # fmt: skip
        return run.adapter

    def fuse(
        self,
        run_dir: Path,
        out: Path,
        *,
        checkpoint: str = "best",
        dequantize: bool = False,
        gguf: str | None = None,
        parity: bool = True,
    ) -> FuseResult:
        return fuse_run(
            Path(run_dir),
            Path(out),
            checkpoint=checkpoint,
            dequantize=dequantize,
            gguf=gguf,
            parity=parity,
        )


def check_preference_rows(path: Path) -> None:
    """Method dpo trains on preference rows: refuse SFT rows in milliseconds, from the first row
    (the worker checks every row as it tokenizes them)."""
    for line, row in read_jsonl(path):
        missing = [key for key in ("prompt", "chosen", "rejected") if key not in row]
        if missing:
            raise ConfigError(
                f"{path}:{line}: {missing[0]}: missing; method dpo trains on preference rows "
                "(prompt, chosen, rejected), e.g. from `punie dataset pairs`"
            )
        return


def weight_modules(folder: Path) -> set[str]:
    """Module paths of a model folder's matrices (weights of two or more dimensions, or quantized
    ones): what LoRA can adapt. Read from the safetensors headers only, in milliseconds."""
    modules: set[str] = set()
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with open(file, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(min(size, 100_000_000)))
        except (OSError, ValueError, struct.error):
            return set()  # unreadable: the worker checks against the loaded model instead
        for key, info in header.items():
            module, _, leaf = key.rpartition(".")
            if isinstance(info, dict) and (leaf == "scales" or len(info.get("shape", ())) >= 2):
                modules.add(module)
    return modules


def check_target_modules(config: Any, modules: set[str]) -> None:
    """mlx_lm skips a `keys` name that the model lacks without a word; refuse it up front. A name
    counts as present if some weight's module path is it or ends with it (`self_attn.q_proj`
    in `model.layers.3.self_attn.q_proj`), so only a name found nowhere is refused."""
    if not modules:
        return
    for name in config.target_modules:
        if not any(m == name or m.endswith(f".{name}") for m in modules):
            in_layers = sorted({m.group(1) for m in map(_IN_LAYER.search, modules) if m})
            raise ConfigError(
                f"target_modules: {name!r} is not a module LoRA can adapt in {config.model} "
                f"(in each layer: {', '.join(in_layers) or 'none'})"
            )


def _num_layers(config: Any) -> int:
    """The blocks this run will adapt, as its adapter_config.json will say."""
    cfg = model_config(config.model) or {}
    return effective_num_layers(config.num_layers, cfg.get("num_hidden_layers"))


_IN_LAYER = re.compile(r"layers\.\d+\.(.+)$")


def check_adapter_fits(config: Any) -> None:
    """A staged run continues the same adapter layers: type, rank, layers and keys must match."""
    path = Path(config.from_adapter)
    folder = path if path.is_dir() else path.parent
    try:
        earlier = json.loads(adapter_config_file(folder).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"from_adapter: {folder}: no adapter_config.json beside the adapter"
        ) from None
    lora = earlier.get("lora_parameters") or {}
    pairs = [
        ("fine_tune_type", earlier.get("fine_tune_type", "lora"), config.fine_tune_type),
        ("num_layers", earlier.get("num_layers"), _num_layers(config)),
    ]
    if config.fine_tune_type != "full":
        pairs.append(("rank", lora.get("rank"), config.rank))
        keys = lora.get("keys")
        pairs.append(
            ("target_modules", sorted(keys) if keys else None,
             sorted(config.target_modules) if config.target_modules else None)
        )  # fmt: skip
    for name, theirs, ours in pairs:
        if theirs != ours:
            raise ConfigError(
                f"from_adapter: {folder} was trained with {name}={theirs!r}, this run has "
                f"{name}={ours!r}; they must match to continue the same adapter"
            )
