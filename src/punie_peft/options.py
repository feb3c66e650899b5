"""The peft backend's own options: the config's `extra` table, typed.

    extra = { launcher = "accelerate", num_processes = 2, device = "cpu", beta = 0.2 }

An unknown key is refused with one line naming it and the allowed ones. Older spellings are
accepted as aliases (`q_bits`, `load_in_4bit` for `quantize`; `dpo_beta` for `beta`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from punie.backends.base import parse_options
from punie.errors import ConfigError

LAUNCHERS = ("local", "accelerate")
DEVICES = ("auto", "cpu", "cuda", "mps")
ALIASES = {"q_bits": "quantize", "load_in_4bit": "quantize", "dpo_beta": "beta"}


@dataclass(frozen=True)
class PeftOptions:
    launcher: str = "local"  # local: this process; accelerate: `accelerate launch`
    num_processes: int = 1  # under accelerate: one GPU (or CPU process) each
    cpu: bool = False  # accelerate's CPU processes, talking over gloo
    accelerate_config: str | None = None  # accelerate's YAML: FSDP, DeepSpeed ZeRO
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int = 29500
    device: str = "auto"  # auto, cpu, cuda or mps
    quantize: Any = None  # 4 (or true, "nf4", "qlora"): QLoRA
    lora_keys: tuple[str, ...] | None = None  # modules to adapt when target_modules is unset
    max_grad_norm: float = 0.0  # 0: no clipping, as mlx-lm
    beta: float = 0.1  # DPO's beta

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"launcher: {self.launcher!r} is not one of {', '.join(LAUNCHERS)}")
        device = str(self.device).lower()
        if device not in DEVICES:
            raise ConfigError(f"device: {self.device!r} is not one of {', '.join(DEVICES)}")
        object.__setattr__(self, "device", device)
        if isinstance(self.lora_keys, list):
            object.__setattr__(self, "lora_keys", tuple(self.lora_keys))
        for name in ("num_processes", "num_machines", "machine_rank", "main_process_port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"extra.{name}: expected an integer, got {value!r}")
        for name in ("max_grad_norm", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"extra.{name}: expected a number, got {value!r}")


def peft_options(config: Any) -> PeftOptions:
    return parse_options(PeftOptions, getattr(config, "extra", None) or {}, "peft", ALIASES)
