"""The training configuration: one frozen dataclass, shared by every backend.

Defaults follow `mlx_lm lora` where it has one. `scale` is MLX's LoRA multiplier; a PEFT backend
derives alpha = scale * rank so both backends apply the same update.

A config is read from a flat TOML (or YAML) file, then `key=value` overrides from the command
line are applied, then the whole is validated: an unknown key, a wrong type or a value out of
range is a one-line error naming the source and the key, before anything starts.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from punie.errors import ConfigError, PunieError

FINE_TUNE_TYPES = ("lora", "dora", "full")
OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor", "muon")
LR_SCHEDULES = ("constant", "cosine")
CUT_ROWS = ("skip", "refuse")
REWARDS = ("pass", "partial")
ADVANTAGES = ("grpo", "dr_grpo")
PREFERENCE_LOSSES = ("dpo", "cal_dpo", "dr_dpo")
STAGE_KEYS = ("epochs", "beta", "preference_loss", "dr_beta", "drop_noisy")
REPORT_TO = ("tensorboard", "wandb")
SEED_MAX = 2**32 - 1  # numpy's seed range; MLX takes any uint64


def _help(text: str, shown: str | None = None) -> dict[str, str]:
    """A field's help (docs and CLI) and, where the default is not the plain value, how the
    docs show it."""
    return {"help": text, "shown": shown} if shown else {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings; each field's help is its `metadata["help"]`."""

    model: str = field(
        metadata=_help(
            "model folder or hub id; a quantized model (`mlx_lm convert -q`) means QLoRA"
        )
    )
    data: str = field(
        metadata=_help(
            "folder with `train.jsonl`, `valid.jsonl` (chat, completions or text rows); "
            "grpo takes none (its prompts are `reward_suite`'s)"
        )
    )
    adapter_path: str = field(
        default="adapters/run",
        metadata=_help(
            "the run folder; `--name N` sets it to `<runs-dir>/N` (`--runs-dir` defaults to "
            "`adapters`)",
            shown="`<runs-dir>/<model>-<time>`",
        ),
    )
    backend: str = field(
        default="mlx",
        metadata=_help("training backend (entry point in `punie.backends`; `peft` if installed)"),
    )
    method: str = field(
        default="sft", metadata=_help("training method; the backend lists what it supports")
    )
    fine_tune_type: str = field(default="lora", metadata=_help("`lora`, `dora` or `full`"))
    rank: int = field(default=8, metadata=_help("LoRA rank"))
    scale: float = field(
        default=20.0, metadata=_help("mlx_lm's LoRA multiplier (PEFT's alpha = scale × rank)")
    )
    dropout: float = field(default=0.0, metadata=_help("LoRA dropout"))
    num_layers: int | None = field(
        default=None,
        metadata=_help(
            "last N blocks adapted; -1 for all; more than the model has means all (with a warning)",
            shown="min(16, the model's layers)",
        ),
    )
    target_modules: tuple[str, ...] | None = field(
        default=None,
        metadata=_help(
            'e.g. `["self_attn.q_proj", "self_attn.v_proj"]` (mlx_lm `keys`); a name the model '
            "lacks is refused (mlx_lm would skip it silently)",
            shown="all linear layers",
        ),
    )
    optimizer: str = field(
        default="adam", metadata=_help("`adam`, `adamw`, `sgd`, `adafactor`, `muon`")
    )
    weight_decay: float | None = field(
        default=None, metadata=_help("for adamw, sgd, muon", shown="optimizer default")
    )
    learning_rate: float = field(default=1e-5, metadata=_help("peak rate"))
    lr_schedule: str = field(
        default="constant", metadata=_help("`constant` or `cosine` (decays to 0 at `iters`)")
    )
    warmup_steps: int = field(default=0, metadata=_help("linear warmup from 0, then the schedule"))
    batch_size: int = field(default=4, metadata=_help("rows per step"))
    grad_accumulation_steps: int = field(default=1, metadata=_help("steps per optimizer update"))
    iters: int = field(default=1000, metadata=_help("iterations (optimizer steps)"))
    epochs: float | None = field(
        default=None,
        metadata=_help("passes over train.jsonl; sets `iters` = ceil(epochs × rows // batch_size)"),
    )
    max_seq_length: int = field(
        default=2048,
        metadata=_help(
            "longer rows are truncated; see "
            "[Rows cut by max_seq_length](#rows-cut-by-max_seq_length)"
        ),
    )
    mask_prompt: bool = field(
        default=False, metadata=_help("train only on assistant turns, **all of them** (see below)")
    )
    grad_checkpoint: bool = field(default=False, metadata=_help("trade compute for memory"))
    max_grad_norm: float | None = field(
        default=None,
        metadata=_help(
            "clip gradients to this global L2 norm (both backends); the norm before clipping is "
            "logged as `grad_norm`",
            shown="no clipping",
        ),
    )
    nan_patience: int = field(
        default=1,
        metadata=_help(
            "a NaN or infinite gradient skips its update (a warning); this many such steps in "
            "a row stop the run (status failed)"
        ),
    )
    seed: int = field(
        default=0,
        metadata=_help("seeds numpy and MLX in mlx_lm's order; 0 to 2³²−1 (numpy's range)"),
    )
    steps_per_report: int = field(default=10, metadata=_help("train-loss records in metrics.jsonl"))
    steps_per_eval: int = field(
        default=200, metadata=_help("validation cadence (also before step 1 and after the last)")
    )
    val_batches: int = field(default=25, metadata=_help("validation batches; -1 for the whole set"))
    save_every: int = field(
        default=100, metadata=_help("checkpoint cadence (weights + optimizer + batch order + RNG)")
    )
    patience: int | None = field(
        default=None, metadata=_help("stop after this many validations without a new best")
    )
    from_adapter: str | None = field(
        default=None,
        metadata=_help("start from an earlier adapter (same type, rank, layers, modules)"),
    )
    cut_rows: str = field(
        default="skip",
        metadata=_help(
            "a row with no trained token within `max_seq_length`: `skip` it (one warning) "
            "or `refuse` the run"
        ),
    )
    select_by: str | None = field(
        default=None,
        metadata=_help(
            "a held-out eval suite (YAML or built-in name): each checkpoint is scored on it "
            "through the managed server and `best/` is the highest-scoring one (any method)",
            shown="lowest `val_loss`",
        ),
    )
    reward_suite: str | None = field(
        default=None,
        metadata=_help(
            "grpo: the suite (same YAML as `punie eval`) whose cases are the prompts and whose "
            "scorer gives the reward; keep it apart from the eval suites"
        ),
    )
    reward: str = field(
        default="pass",
        metadata=_help(
            "grpo: `pass` (1 or 0, the scorer's verdict) or `partial` (the fraction of expected "
            "calls matched; other kinds stay 1 or 0)"
        ),
    )
    format_reward: float = field(
        default=0.0,
        metadata=_help(
            "grpo: added for a well-formed answer (a parsable tool-call block, a code fence, a "
            "found answer), reported apart; e.g. 0.1"
        ),
    )
    group_size: int = field(default=4, metadata=_help("grpo: completions per prompt (G)"))
    temperature: float = field(default=1.0, metadata=_help("grpo: rollout sampling temperature"))
    max_completion_tokens: int = field(
        default=128, metadata=_help("grpo: the longest completion a rollout samples")
    )
    clip_epsilon: float = field(
        default=0.2,
        metadata=_help("grpo: the ratio π/π_old is clipped to [1−ε, 1+ε]"),
    )
    kl_beta: float = field(
        default=0.04,
        metadata=_help(
            "grpo: weight of the k3 KL to the frozen start (base + `from_adapter`); 0 skips the "
            "reference forward pass"
        ),
    )
    advantage: str = field(
        default="grpo",
        metadata=_help(
            "grpo: `grpo` ((r − mean)/(std + ε), loss over the batch's tokens) or `dr_grpo` "
            "(r − mean, loss over a fixed G × max_completion_tokens)"
        ),
    )
    updates_per_rollout: int = field(
        default=1,
        metadata=_help(
            "grpo: optimizer updates on each rollout batch (μ); the clip acts only when > 1"
        ),
    )
    preference_loss: str = field(
        default="dpo",
        metadata=_help("method `dpo`: the loss, `dpo`, `cal_dpo` or `dr_dpo` (see below)"),
    )
    beta: float = field(
        default=0.1, metadata=_help("method `dpo`: β, the strength of the pull to the reference")
    )
    dr_beta: float = field(
        default=1.0, metadata=_help("method `dpo`: Dr-DPO's β′ (large: plain DPO)")
    )
    stages: tuple[dict[str, Any], ...] | None = field(
        default=None,
        metadata=_help(
            "method `dpo`: a staged schedule, e.g. `[{epochs = 1, beta = 0.05}, {epochs = 1, "
            'preference_loss = "dr_dpo", drop_noisy = 0.15}]`; sets `iters` (see below)',
            shown="one stage",
        ),
    )
    report_to: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            'also write the metrics to `["tensorboard"]` (`<run>/tensorboard`) and/or `["wandb"]` '
            "(offline, `<run>/wandb`); extras `punie[tensorboard]`, `punie[wandb]`",
            shown="`[]`",
        ),
    )
    extra: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "backend-specific options, checked by the backend (see below)", shown="`{}`"
        ),
    )

    def __post_init__(self) -> None:
        for name in ("target_modules", "stages", "report_to"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        for name, kind in _kinds().items():
            _check_type(name, getattr(self, name), kind)
        _check_values(self)

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("target_modules", "stages"):
            if data[key] is not None:
                data[key] = list(data[key])
        data["report_to"] = list(data["report_to"])
        return data

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from plain data; unknown keys and missing required keys name `source`."""
        known = set(cls.keys())
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"{source}: {key}: unknown key{hint}")
        if data.get("method") == "grpo":  # its prompts come from reward_suite, not a data folder
            if data.get("data") not in (None, ""):
                raise ConfigError(
                    f"{source}: data: not used by method grpo (its prompts are reward_suite's "
                    "cases); leave it out"
                )
            data = {**data, "data": ""}
        for key in ("model", "data") if data.get("method") != "grpo" else ("model",):
            if data.get(key) in (None, ""):
                raise ConfigError(f"{source}: {key}: required (set it in the file or with --{key})")
        try:
            return cls(**data)
        except PunieError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: Path | str) -> TrainConfig:
        return cls.from_dict(read_config_file(path), source=str(path))


def _kinds() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig).items()
    return {k: v for k, v in hints if k not in ("extra", "stages")}  # checked on their own


def _type_name(kind: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if typing.get_origin(kind) is tuple:
        return "a list of strings"
    return names.get(kind, str(kind))


def _check_type(name: str, value: Any, kind: Any) -> None:
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return
    for option in options:
        if option is bool and isinstance(value, bool):
            return
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return
        if option is str and isinstance(value, str):
            return
        is_tuple = typing.get_origin(option) is tuple and isinstance(value, tuple)
        if is_tuple and all(isinstance(v, str) for v in value):
            return
    expected = " or ".join(_type_name(o) for o in options if o is not type(None))
    raise ConfigError(f"{name}: expected {expected}, got {value!r}")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


def _non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """The place and value of the first NaN or infinity in `value` (nested in `extra`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    if isinstance(value, dict):
        inner = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        inner = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next(filter(None, (_non_finite(v, p) for p, v in inner)), None)


def _check_values(c: TrainConfig) -> None:
    # NaN passes every `<` check below (all comparisons with NaN are false): refuse it first.
    for f in fields(c):
        bad = _non_finite(getattr(c, f.name), f.name)
        if bad:
            raise ConfigError(f"{bad[0]}: must be a finite number, got {bad[1]}")
    _one_of("fine_tune_type", c.fine_tune_type, FINE_TUNE_TYPES)
    _one_of("cut_rows", c.cut_rows, CUT_ROWS)
    if not c.method:
        raise ConfigError("method: must name a training method, e.g. sft")
    _one_of("optimizer", c.optimizer, OPTIMIZERS)
    _one_of("lr_schedule", c.lr_schedule, LR_SCHEDULES)
    for name in (
        "rank",
        "batch_size",
        "iters",
        "grad_accumulation_steps",
        "max_seq_length",
        "steps_per_report",
        "steps_per_eval",
        "save_every",
        "nan_patience",
    ):
        if getattr(c, name) < 1:
            raise ConfigError(f"{name}: must be at least 1, got {getattr(c, name)}")
    if c.learning_rate <= 0:
        raise ConfigError(f"learning_rate: must be positive, got {c.learning_rate}")
    if not 0 <= c.dropout < 1:
        raise ConfigError(f"dropout: must be in [0, 1), got {c.dropout}")
    if c.scale <= 0:
        raise ConfigError(f"scale: must be positive, got {c.scale}")
    if c.weight_decay is not None and c.weight_decay < 0:
        raise ConfigError(f"weight_decay: must be at least 0, got {c.weight_decay}")
    if c.max_grad_norm is not None and c.max_grad_norm <= 0:
        raise ConfigError(f"max_grad_norm: must be positive, got {c.max_grad_norm}")
    if c.num_layers is not None and (c.num_layers == 0 or c.num_layers < -1):
        raise ConfigError(f"num_layers: must be -1 (all) or at least 1, got {c.num_layers}")
    if c.val_batches == 0 or c.val_batches < -1:
        raise ConfigError(f"val_batches: must be -1 (all) or at least 1, got {c.val_batches}")
    if c.epochs is not None and c.epochs <= 0:
        raise ConfigError(f"epochs: must be positive, got {c.epochs}")
    if c.patience is not None and c.patience < 1:
        raise ConfigError(f"patience: must be at least 1 evaluation, got {c.patience}")
    if not 0 <= c.warmup_steps < c.iters:
        raise ConfigError(f"warmup_steps: must be in [0, iters={c.iters}), got {c.warmup_steps}")
    if not 0 <= c.seed <= SEED_MAX:
        raise ConfigError(f"seed: must be in [0, {SEED_MAX}], got {c.seed}")
    if c.target_modules is not None and not c.target_modules:
        raise ConfigError("target_modules: must name at least one module, or be left out")
    for name in c.report_to:
        _one_of("report_to", name, REPORT_TO)
    if len(set(c.report_to)) < len(c.report_to):
        raise ConfigError(f"report_to: names a tracker twice: {list(c.report_to)}")
    if c.fine_tune_type == "full" and c.target_modules:
        raise ConfigError("target_modules: only applies to lora and dora, not full fine-tuning")
    _check_grpo(c)
    _check_preference("", c.preference_loss, c.beta, c.dr_beta)
    if c.stages is not None:
        _check_stages(c)


def _check_grpo(c: TrainConfig) -> None:
    _one_of("reward", c.reward, REWARDS)
    _one_of("advantage", c.advantage, ADVANTAGES)
    for name in ("group_size", "max_completion_tokens", "updates_per_rollout"):
        if getattr(c, name) < 1:
            raise ConfigError(f"{name}: must be at least 1, got {getattr(c, name)}")
    if c.method == "grpo" and c.group_size < 2:
        raise ConfigError(
            f"group_size: must be at least 2 (a group of one has no spread), got {c.group_size}"
        )
    if c.temperature <= 0:
        raise ConfigError(f"temperature: must be positive (rollouts sample), got {c.temperature}")
    if not 0 < c.clip_epsilon < 1:
        raise ConfigError(f"clip_epsilon: must be in (0, 1), got {c.clip_epsilon}")
    for name in ("kl_beta", "format_reward"):
        if getattr(c, name) < 0:
            raise ConfigError(f"{name}: must be at least 0, got {getattr(c, name)}")
    if c.method == "grpo" and not c.reward_suite:
        raise ConfigError("reward_suite: method grpo needs a suite of prompts to reward")
    if c.method != "grpo" and c.reward_suite:
        raise ConfigError(f"reward_suite: only used by method grpo, not {c.method}")
    if c.method == "grpo" and c.grad_accumulation_steps != 1:
        raise ConfigError(
            "grad_accumulation_steps: grpo takes one rollout batch a step; leave it 1"
        )


DEFAULT_NUM_LAYERS = 16  # mlx_lm's


def effective_num_layers(requested: int | None, model_layers: int | None) -> int:
    """The blocks a run adapts: `requested` (None: mlx_lm's 16), at most the model's count; -1
    (all) stays -1, as mlx_lm's adapter_config.json writes it."""
    n = DEFAULT_NUM_LAYERS if requested is None else requested
    if n < 0 or not model_layers:
        return n
    return min(n, model_layers)


def _check_preference(where: str, loss: Any, beta: Any, dr_beta: Any) -> None:
    _check_type(f"{where}preference_loss", loss, str)
    _one_of(f"{where}preference_loss", loss, PREFERENCE_LOSSES)
    for name, value in (("beta", beta), ("dr_beta", dr_beta)):
        _check_type(f"{where}{name}", value, float)
        if value <= 0:
            raise ConfigError(f"{where}{name}: must be positive, got {value}")


def _check_stages(c: TrainConfig) -> None:
    if not c.stages:
        raise ConfigError("stages: must list at least one stage, or be left out")
    if c.epochs is not None:
        raise ConfigError("epochs: with stages, each stage sets its own epochs; leave it out")
    for i, stage in enumerate(c.stages):
        where = f"stages[{i}]."
        if not isinstance(stage, dict):
            raise ConfigError(f"stages[{i}]: expected a table like {{epochs = 1}}, got {stage!r}")
        for key in stage:
            if key not in STAGE_KEYS:
                allowed = ", ".join(STAGE_KEYS)
                raise ConfigError(f"{where}{key}: unknown key (a stage has {allowed})")
        if "epochs" not in stage:
            raise ConfigError(f"{where}epochs: required")
        _check_type(f"{where}epochs", stage["epochs"], float)
        if stage["epochs"] <= 0:
            raise ConfigError(f"{where}epochs: must be positive, got {stage['epochs']}")
        _check_preference(
            where,
            stage.get("preference_loss", c.preference_loss),
            stage.get("beta", c.beta),
            stage.get("dr_beta", c.dr_beta),
        )
        drop = stage.get("drop_noisy", 0.0)
        _check_type(f"{where}drop_noisy", drop, float)
        if not 0 <= drop < 1:
            raise ConfigError(f"{where}drop_noisy: must be in [0, 1), got {drop}")


def read_config_file(path: Path | str) -> dict[str, Any]:
    """A flat table of keys from a .toml, .yaml/.yml or .json file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: config files are .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as e:
        reason = " ".join(str(e).split())
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of keys at the top level")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` from the command line; the value is read as TOML (`3`, `1e-4`, `true`, `[..]`)
    and falls back to a plain string, so `model=path/to/model` needs no quotes."""
    key, sep, raw = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"--set {item}: expected key=value")
    if raw.strip().lower() in ("none", "null"):
        return key, None
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


def resolve_config(
    path: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    default_adapter_path: Callable[[dict[str, Any]], str] | None = None,
) -> TrainConfig:
    """File, then `--set key=value` items, then explicit CLI flags (None means not given).
    `default_adapter_path(data)` names the run folder when none of them did."""
    data: dict[str, Any] = read_config_file(path) if path else {}
    for item in sets or []:
        key, value = parse_override(item)
        data[key] = value
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if default_adapter_path and not data.get("adapter_path"):
        data["adapter_path"] = default_adapter_path(data)
    return TrainConfig.from_dict(data, source=str(path) if path else "config")


def to_toml(config: TrainConfig) -> str:
    """The resolved config as a TOML file that `punie train --config` reads back."""
    lines = []
    for key, value in config.to_dict().items():
        if value is None:
            lines.append(f"# {key} =  (not set)")
        elif key == "extra":
            if value:
                lines.append(f"extra = {_toml_value(value)}")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }"
    raise ConfigError(f"cannot write {value!r} as TOML")


def field_help(name: str) -> str:
    """A config key's help, as written beside its field (for the CLI's options)."""
    for f in fields(TrainConfig):
        if f.name == name:
            return f.metadata["help"]
    raise KeyError(name)


def _shown_default(f: Any) -> str:
    if "shown" in f.metadata:
        return f.metadata["shown"]
    if f.default is MISSING and f.default_factory is MISSING:
        return "required"
    value = f.default
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"`{value}`"
    return repr(value)


DOCS_TABLE_START = "<!-- config-table: generated by `python -m punie.train.config --docs-table` -->"
DOCS_TABLE_END = "<!-- config-table: end -->"


def docs_table() -> str:
    """The Markdown table of config keys in docs/training.md, from the fields' help."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for f in fields(TrainConfig):
        lines.append(f"| `{f.name}` | {_shown_default(f)} | {f.metadata['help']} |")
    return "\n".join(lines) + "\n"


def replace_docs_table(text: str) -> str:
    """`text` (docs/training.md) with the table between its markers rendered afresh."""
    head, start, rest = text.partition(DOCS_TABLE_START)
    _, end, tail = rest.partition(DOCS_TABLE_END)
    if not start or not end:
        raise ConfigError(f"docs: the config table markers are missing ({DOCS_TABLE_START})")
    return f"{head}{start}\n{docs_table()}{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    """`python -m punie.train.config --docs-table [FILE]`: print the table, or rewrite FILE's."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "--docs-table":
        print("usage: python -m punie.train.config --docs-table [docs/training.md]")
        return 2
    if len(args) == 1:
        print(docs_table(), end="")
        return 0
    path = Path(args[1])
    path.write_text(replace_docs_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
