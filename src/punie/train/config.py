"""The training configuration: one frozen dataclass, shared by every backend.

Defaults follow `mlx_lm lora` where it has one. `scale` is MLX's LoRA multiplier; a PEFT backend
derives alpha = scale * rank so both backends apply the same update.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from punie.errors import PunieError

FINE_TUNE_TYPES = ("lora", "dora", "full")


@dataclass(frozen=True)
class TrainConfig:
    model: str
    data: str
    adapter_path: str = "adapters/run"
    fine_tune_type: str = "lora"
    rank: int = 8
    scale: float = 20.0
    dropout: float = 0.0
    num_layers: int = 16
    learning_rate: float = 1e-5
    batch_size: int = 4
    iters: int = 1000
    max_seq_length: int = 2048
    mask_prompt: bool = False
    grad_checkpoint: bool = False
    grad_accumulation_steps: int = 1
    seed: int = 0
    steps_per_report: int = 10
    steps_per_eval: int = 200
    val_batches: int = 25
    save_every: int = 100
    resume_adapter_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fine_tune_type not in FINE_TUNE_TYPES:
            raise PunieError(
                f"fine_tune_type: {self.fine_tune_type!r} is not one of {', '.join(FINE_TUNE_TYPES)}"
            )
        for name in ("rank", "batch_size", "iters", "grad_accumulation_steps", "max_seq_length"):
            if getattr(self, name) < 1:
                raise PunieError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise PunieError(f"learning_rate: must be positive, got {self.learning_rate}")
        if not 0 <= self.dropout < 1:
            raise PunieError(f"dropout: must be in [0, 1), got {self.dropout}")

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
