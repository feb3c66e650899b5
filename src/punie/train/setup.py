"""Everything the training worker builds before its first step, the way `mlx_lm lora` does:
the trainable layers (`linear_to_lora_layers`), the optimizer and schedule (wrapped in
`punie.train.guard.GuardedOptimizer`: clipping, `grad_norm`, non-finite updates skipped), saved
weights loaded back, and the tokenized splits without rows that train no token.

A request the model cannot meet (a module it lacks, more layers than it has, weights that do
not fit) raises `TrainingFailed` naming the config key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from punie.train.config import TrainConfig, effective_num_layers
from punie.train.events import EventChannel, TrainingFailed
from punie.train.guard import GuardedOptimizer
from punie.train.rundir import adapter_weights


def adapter_config(config: TrainConfig) -> dict[str, Any]:
    """The adapter_config.json mlx_lm's `load_adapters` (server, generate, fuse) reads."""
    lora = {"rank": config.rank, "scale": config.scale, "dropout": config.dropout}
    if config.target_modules:
        lora["keys"] = list(config.target_modules)
    return {
        "model": config.model,
        "fine_tune_type": config.fine_tune_type,
        "num_layers": config.num_layers,
        "lora_parameters": lora,
        "trained_with": "punie",
    }


def learning_rate(config: TrainConfig):
    """A float for a constant rate (as mlx_lm), else an mlx schedule with optional warmup."""
    import mlx.optimizers as optim

    lr = config.learning_rate
    if config.lr_schedule == "constant" and not config.warmup_steps:
        return lr
    if config.lr_schedule == "cosine":
        main = optim.cosine_decay(lr, config.iters - config.warmup_steps, 0.0)
    else:
        main = optim.linear_schedule(lr, lr, 1)
    if not config.warmup_steps:
        return main
    warmup = optim.linear_schedule(0.0, lr, config.warmup_steps)
    return optim.join_schedules([warmup, main], [config.warmup_steps + 1])


def build_optimizer(config: TrainConfig):
    import mlx.optimizers as optim

    classes = {
        "adam": optim.Adam,
        "adamw": optim.AdamW,
        "sgd": optim.SGD,
        "adafactor": optim.Adafactor,
        "muon": optim.Muon,
    }
    kwargs = {}
    if config.weight_decay is not None and config.optimizer in ("adamw", "sgd", "muon"):
        kwargs["weight_decay"] = config.weight_decay
    inner = classes[config.optimizer](learning_rate=learning_rate(config), **kwargs)
    return GuardedOptimizer(inner, config.max_grad_norm)


def resolve_num_layers(model, config: TrainConfig, events: EventChannel | None = None):
    """`config` with the blocks it will adapt spelled out (None: min(16, the model's))."""
    layers = len(model.layers)
    n = effective_num_layers(config.num_layers, layers)
    if events is not None and config.num_layers is not None and config.num_layers > layers:
        events.send(
            "warning",
            message=f"num_layers: {config.num_layers} is more than the model's {layers} layers; "
            f"adapting all {layers}",
        )
    return config.with_(num_layers=n)


def lora_targets(model) -> tuple[set[str], set[str]]:
    """What mlx_lm's `linear_to_lora_layers` can adapt: names inside a block, and whole-model
    names (its `keys` match either)."""
    import mlx.nn as nn
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear

    kinds = (nn.Linear, nn.QuantizedLinear, SwitchLinear, QuantizedSwitchLinear, nn.Embedding,
             nn.QuantizedEmbedding)  # fmt: skip

    def adaptable(module) -> bool:
        return hasattr(module, "to_lora") or isinstance(module, kinds)

    in_layers = {k for layer in model.layers for k, m in layer.named_modules() if adaptable(m)}
    whole = {k for k, m in model.named_modules() if adaptable(m)}
    return in_layers, whole


def check_target_modules(requested, in_layers: set[str], whole: set[str], model: str) -> None:
    """Every requested module must exist in the model; mlx_lm silently skips a name it lacks."""
    for name in requested or ():
        if name not in in_layers and name not in whole:
            known = ", ".join(sorted(in_layers)) or "none"
            raise TrainingFailed(
                f"{name!r} is not a module LoRA can adapt in {model} (in each layer: {known})",
                field="target_modules",
            )


def prepare_model(model, config: TrainConfig) -> None:
    """Freeze, then make trainable what the fine-tune type says (mlx_lm's `train_model` steps)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    config = config.with_(num_layers=effective_num_layers(config.num_layers, len(model.layers)))
    if config.fine_tune_type == "full":
        for layer in model.layers[-max(config.num_layers, 0) :]:
            layer.unfreeze()
    else:
        check_target_modules(config.target_modules, *lora_targets(model), config.model)
        lora = adapter_config(config)["lora_parameters"]
        linear_to_lora_layers(
            model, config.num_layers, lora, use_dora=config.fine_tune_type == "dora"
        )


def trainable(model) -> dict:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(model.trainable_parameters()))


def load_trainable(model, path: Path, what: str) -> None:
    """Load saved trainable weights, refusing any that do not fit this model's trainable set."""
    import mlx.core as mx

    file = adapter_weights(path)
    weights = mx.load(str(file))
    params = trainable(model)
    for name, value in weights.items():
        if name not in params or params[name].shape != value.shape:
            raise TrainingFailed(f"{file}: {name} does not fit this model's adapter layers", what)
    missing = sorted(set(params) - set(weights))
    if missing:
        raise TrainingFailed(f"{file}: has no weights for {missing[0]} (and maybe more)", what)
    model.load_weights(list(weights.items()), strict=False)


def training_data(config: TrainConfig, tokenizer, events: EventChannel):
    """(train rows, validation rows or None), each without rows that train no token."""
    from punie.train.masking import tokenized_split  # imports mlx: here, as mlx is above

    data = Path(config.data)
    args = (tokenizer, config.mask_prompt, config.max_seq_length)
    train = tokenized_split(data, "train", *args)
    if train is None or not (len(train.rows) or train.untrainable):
        raise TrainingFailed(f"{data}/train.jsonl is missing or empty", field="data")
    valid = tokenized_split(data, "valid", *args)
    for split in filter(None, (train, valid)):
        if not split.untrainable:
            continue
        message = split.describe_untrainable(config.max_seq_length)
        if not len(split.rows):
            raise TrainingFailed(f"{message}: none would be left; raise max_seq_length")
        if config.cut_rows == "refuse":
            raise TrainingFailed(f'{message}; raise max_seq_length, or set cut_rows = "skip"')
        events.send("warning", message=f"{message}; skipped them")
    for split in filter(None, (train, valid)):
        if 0 < len(split.rows) < config.batch_size:
            raise TrainingFailed(
                f"{config.batch_size} is more than the {len(split.rows)} trainable rows of "
                f"{split.path}",
                field="batch_size",
            )
    return train.rows, (valid.rows if valid and len(valid.rows) else None)
