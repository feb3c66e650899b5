"""TrainConfig -> keyword arguments for PEFT's LoraConfig and TRL's SFTConfig / DPOConfig.

Pure functions over plain data: no torch here, so the mapping is tested without it.

The one number that differs between the engines is the LoRA scale. mlx-lm multiplies the low-rank
update by `scale` directly; PEFT multiplies it by `lora_alpha / r`. Setting
`lora_alpha = scale * rank` makes both apply exactly the same update to the same weights, which is
what lets an adapter move between the two (see `punie_peft.convert`).

Settings that only this backend has (the launcher, the device, QLoRA, DPO's beta) are its typed
options (`punie_peft.options.PeftOptions`, from the config's `extra` table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from punie.errors import ConfigError
from punie.train.config import effective_num_layers
from punie_peft.options import DEVICES, peft_options

# The projections mlx-lm turns into LoRA layers in a Qwen2/Llama block when the config names none.
DEFAULT_LORA_KEYS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
METHODS = ("sft", "dpo", "grpo")
# Punie's advantage -> TRL's (loss_type, scale_rewards): `grpo` averages the loss over the
# batch's completion tokens (TRL's "dapo"; the same as "bnpo" with one process and no gradient
# accumulation) and divides by the group's std; `dr_grpo` divides by a constant, no std.
ADVANTAGES = {"grpo": ("dapo", "group"), "dr_grpo": ("dr_grpo", "none")}
SCHEDULES = {"constant": "constant", "linear": "linear", "cosine": "cosine"}
OPTIMIZERS = {"adam": "adamw_torch", "adamw": "adamw_torch", "sgd": "sgd", "adafactor": "adafactor"}


def lora_alpha(scale: float, rank: int) -> float:
    """PEFT's alpha for mlx-lm's multiplier: alpha / rank == scale."""
    return float(scale) * int(rank)


def lora_scale(alpha: float, rank: int, use_rslora: bool = False) -> float:
    """mlx-lm's multiplier for a PEFT adapter (rsLoRA divides by sqrt(rank) instead of rank)."""
    return float(alpha) / (int(rank) ** 0.5 if use_rslora else int(rank))


def lora_layers(num_layers: int | None, num_hidden_layers: int) -> list[int]:
    """The block indices mlx-lm adapts: the last `num_layers` (None: 16; -1 or more than exist:
    all)."""
    n = effective_num_layers(num_layers, num_hidden_layers)
    n = num_hidden_layers if n < 0 else n
    return list(range(num_hidden_layers - n, num_hidden_layers))


def lora_config_kwargs(config: Any, num_hidden_layers: int) -> dict[str, Any]:
    """LoraConfig(**kwargs) for a lora/dora config; targets the same modules mlx-lm would."""
    keys = peft_options(config).lora_keys or config.target_modules or DEFAULT_LORA_KEYS
    return {
        "r": config.rank,
        "lora_alpha": lora_alpha(config.scale, config.rank),
        "lora_dropout": config.dropout,
        "target_modules": sorted({k.rsplit(".", 1)[-1] for k in keys}),
        "layers_to_transform": lora_layers(config.num_layers, num_hidden_layers),
        "layers_pattern": "layers",
        "use_dora": config.fine_tune_type == "dora",
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def grad_norm_limit(config: Any) -> float:
    """The Trainer's max_grad_norm: the config's key, else the older `extra.max_grad_norm`; 0 (no
    clipping, as mlx-lm) when neither is set."""
    if getattr(config, "max_grad_norm", None):
        return float(config.max_grad_norm)
    return float(peft_options(config).max_grad_norm)


def method(config: Any) -> str:
    name = config.method
    if name not in METHODS:
        raise ConfigError(f"method: {name!r} is not one of {', '.join(METHODS)} (backend peft)")
    # Stages, all three losses and drop_noisy run here (punie_peft.dpo).
    return name


def quantize_bits(config: Any) -> int | None:
    """4 for QLoRA (the only quantized training this backend offers), else None."""
    bits = peft_options(config).quantize
    if bits in (None, False, 0, "none", ""):
        return None
    if bits in (True, 4, "4", "4bit", "nf4", "qlora"):
        return 4
    raise ConfigError(f"quantize: {bits!r} is not supported by backend peft (only 4-bit QLoRA)")


def device_request(config: Any) -> str:
    """`extra.device`: auto (the default), cpu, cuda or mps; checked before torch is imported."""
    device = peft_options(config).device
    assert device in DEVICES  # PeftOptions checks it
    return device


def pick_device(requested: str, *, cuda: bool, mps: bool) -> str:
    """The device to train on. `auto` is CUDA where torch sees a GPU, else the CPU: the Mac's GPU
    (MPS) only on request, because that path has not been run against the CPU/CUDA parity tests
    (PyTorch's MPS backend still lacks some ops) and MLX is the faster way to train on a Mac."""
    if requested == "auto":
        return "cuda" if cuda else "cpu"
    if requested == "cuda" and not cuda:
        raise ConfigError("device: 'cuda' asked for, but torch sees no CUDA GPU")
    if requested == "mps" and not mps:
        raise ConfigError(
            "device: 'mps' asked for, but torch.backends.mps.is_available() is false "
            "(it needs an Apple-silicon Mac and a torch built with MPS)"
        )
    return requested


def _schedule(config: Any) -> dict[str, Any]:
    schedule = str(config.lr_schedule).removesuffix("_decay")
    warmup = int(config.warmup_steps)
    if schedule not in SCHEDULES:
        raise ConfigError(f"lr_schedule: {schedule!r} is not one of {', '.join(SCHEDULES)}")
    name = SCHEDULES[schedule]
    if warmup and name == "constant":
        name = "constant_with_warmup"
    return {"lr_scheduler_type": name, "warmup_steps": warmup}


def _optimizer(config: Any) -> str:
    name = str(config.optimizer).lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer: {name!r} is not one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def trainer_kwargs(config: Any, out: Path, *, use_cpu: bool, has_valid: bool) -> dict[str, Any]:
    """SFTConfig/DPOConfig(**kwargs): the same steps, batch, schedule and reporting as mlx-lm.

    Evaluation runs every `steps_per_eval` steps when a valid split exists; checkpoints are not
    written mid-run (the run folder holds the final adapter, as with the MLX backend).
    """
    epochs = config.epochs
    steps = {"max_steps": -1, "num_train_epochs": float(epochs)} if epochs else {}
    kwargs: dict[str, Any] = {
        "output_dir": str(out),
        "max_steps": config.iters,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accumulation_steps,
        "gradient_checkpointing": config.grad_checkpoint,
        "learning_rate": config.learning_rate,
        "optim": _optimizer(config),
        "weight_decay": float(config.weight_decay or 0.0),
        "max_grad_norm": grad_norm_limit(config),
        "seed": config.seed,
        "data_seed": config.seed,
        "max_length": config.max_seq_length,
        "logging_steps": config.steps_per_report,
        "logging_first_step": True,
        "eval_strategy": "steps" if has_valid else "no",
        "eval_steps": config.steps_per_eval,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "bf16": False,
        "fp16": False,
        "use_cpu": use_cpu,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
        **_schedule(config),
        **steps,
    }
    return kwargs


def grpo_kwargs(config: Any) -> dict[str, Any]:
    """GRPOConfig(**trainer_kwargs(...), **grpo_kwargs(config)): Punie's GRPO keys in TRL's terms.

    One Punie iteration is one rollout batch (`batch_size` prompts × `group_size` completions)
    and `updates_per_rollout` optimizer updates on it; a TRL step is one update. So the step
    counts are multiplied by μ, and a TRL batch counts completions, not prompts.
    """
    if config.advantage not in ADVANTAGES:
        raise ConfigError(f"advantage: {config.advantage!r} is not one of grpo, dr_grpo")
    loss_type, scale_rewards = ADVANTAGES[config.advantage]
    mu = int(config.updates_per_rollout)
    return {
        "max_steps": config.iters * mu,
        "logging_steps": mu,  # a report every iteration, as the MLX trainer
        "logging_first_step": mu == 1,  # logs fall on whole iterations
        "per_device_train_batch_size": config.batch_size * config.group_size,
        "num_generations": config.group_size,
        "max_completion_length": config.max_completion_tokens,
        "temperature": float(config.temperature),
        "top_p": 1.0,
        "top_k": 0,  # plain temperature sampling, as mlx_lm's make_sampler(temp)
        "beta": float(config.kl_beta),
        "epsilon": float(config.clip_epsilon),
        "num_iterations": mu,
        "loss_type": loss_type,
        "scale_rewards": scale_rewards,
        "mask_truncated_completions": False,  # a cut completion still trains, as on MLX
        "log_completions": False,  # rollouts.jsonl has them
    }


def dpo_kwargs(config: Any) -> dict[str, Any]:
    """β: `extra.beta` (this backend's older spelling) when given, else the flat `beta` key."""
    extra = getattr(config, "extra", None) or {}
    given = any(k in extra for k in ("beta", "dpo_beta"))
    beta = peft_options(config).beta if given else getattr(config, "beta", 0.1)
    return {"beta": float(beta)}
