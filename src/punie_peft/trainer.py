"""Training in this process with TRL: SFT (LoRA, DoRA, QLoRA, full), DPO and GRPO, into a run
folder.

This is the edge where torch, transformers, peft and trl meet; everything it decides comes from the
pure mapping in `punie_peft.mapping`. Under `accelerate launch` every process runs `train_here`;
the Trainer shards the data across them (DDP) and only the main process writes files.

The run folder (`punie.train.rundir.RunDir`), as the MLX backend leaves it: metrics.jsonl (through
`punie_peft.metrics`), the LoRA in mlx-lm's format (mlx_lm.server, punie eval), and this backend's
own `peft/` (the adapter in PEFT's format: transformers, vLLM), `model/` (full fine-tunes: the
whole model instead of an adapter) and `backend.json` (what ran where: device, processes,
library versions). The run record and `config.json` belong to `punie.train.launch`.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from punie.errors import BackendError
from punie.fsio import atomic_dir, read_jsonl, write_json
from punie.model.resolve import resolve_model
from punie.train.callbacks import TrainingEvents
from punie.train.rundir import RunDir
from punie.train.stages import plan as stage_plan
from punie_peft import mapping
from punie_peft.convert import (
    MLX_WEIGHTS,
    convert_mlx_to_peft,
    start_kind,
    write_mlx_adapter,
)
from punie_peft.libraries import library_versions
from punie_peft.merge import keep_base_config
from punie_peft.metrics import MetricsWriter
from punie_peft.rows import preference_rows, tokenize_file


def _check_qlora() -> None:
    import torch

    if not torch.cuda.is_available():
        raise BackendError("quantize: 4-bit QLoRA needs a CUDA GPU (bitsandbytes); none is visible")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BackendError("quantize: QLoRA needs bitsandbytes: pip install bitsandbytes") from None


def load_model(model_dir: Path, *, bits: int | None):
    """The base model in float32 (bfloat16 compute under QLoRA), ready for PEFT."""
    import torch
    from transformers import AutoModelForCausalLM

    if bits is None:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    _check_qlora()
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, quantization_config=quant, dtype=torch.bfloat16
    )
    return prepare_model_for_kbit_training(model)


def _blocks(model) -> Any:
    return model.get_decoder().layers


def _freeze_for_full(model, num_layers: int) -> None:
    """mlx-lm's full fine-tune trains the last `num_layers` blocks only; so does this one."""
    blocks = _blocks(model)
    keep = set(mapping.lora_layers(num_layers, len(blocks)))
    for p in model.parameters():
        p.requires_grad = False
    for i in keep:
        for p in blocks[i].parameters():
            p.requires_grad = True


def start_from_adapter(model, config: Any, model_dir: Path, scratch: Path, bits: int | None):
    """The policy at the start of a GRPO or DPO run: the base plus `from_adapter`, an adapter
    folder in mlx-lm's format (an MLX run's or a peft LoRA run's folder), also the reference.

    A LoRA is converted to PEFT and trained on; TRL keeps a frozen copy of it as the reference.
    A full fine-tune's weights are loaded into the base and saved to `scratch`, then loaded from
    there, because TRL builds the reference by loading the policy's own path again.
    """
    folder, kind = Path(config.from_adapter), start_kind(config)
    weights = folder / MLX_WEIGHTS
    if kind == "lora":
        from peft import PeftModel

        peft_dir = convert_mlx_to_peft(folder, scratch / "from_adapter", str(model_dir))
        return PeftModel.from_pretrained(model, peft_dir, is_trainable=True)
    from safetensors.torch import load_file

    state = model.state_dict()
    loaded = load_file(weights)
    for name, value in loaded.items():
        if name not in state or tuple(state[name].shape) != tuple(value.shape):
            raise BackendError(f"from_adapter: {weights}: {name} does not fit {model_dir}")
    model.load_state_dict({k: v.to(state[k].dtype) for k, v in loaded.items()}, strict=False)
    start = scratch / "start"
    model.save_pretrained(start, safe_serialization=True)
    return load_model(start, bits=bits)


def _split(data: Path, name: str) -> Path | None:
    path = data / f"{name}.jsonl"
    return path if path.exists() else None


def _val_rows(rows: list, config: Any) -> list:
    n = config.val_batches * config.batch_size
    return rows if config.val_batches < 0 else rows[:n]


def train_here(config: Any, run: RunDir, events: TrainingEvents | None = None) -> Path:
    """Train in this process (or one of several under accelerate); return the adapter path."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import torch
    import transformers
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    method = mapping.method(config)
    bits = mapping.quantize_bits(config)
    if bits and config.fine_tune_type == "full":
        raise BackendError(
            "quantize: 4-bit QLoRA trains an adapter; use fine_tune_type lora or dora"
        )
    if bits:
        _check_qlora()
    train_path = valid_path = None
    if method != "grpo":  # GRPO's prompts are reward_suite's cases
        data = Path(config.data)
        train_path = _split(data, "train")
        if train_path is None:
            raise BackendError(f"data: {data / 'train.jsonl'}: missing")
        valid_path = _split(data, "valid")
    model_dir = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    device = mapping.pick_device(
        mapping.device_request(config),
        cuda=torch.cuda.is_available(),
        mps=torch.backends.mps.is_available(),
    )
    use_cpu = device == "cpu"  # otherwise transformers takes the CUDA GPU or, failing that, MPS
    args = mapping.trainer_kwargs(
        config, run.trainer_scratch, use_cpu=use_cpu, has_valid=valid_path is not None
    )
    torch.manual_seed(config.seed)
    model = load_model(model_dir, bits=bits)
    if config.from_adapter:  # GRPO and DPO (check() refuses it for SFT)
        model = start_from_adapter(model, config, model_dir, run.trainer_scratch / "punie", bits)
    num_layers = model.config.num_hidden_layers
    peft_config = None
    if config.fine_tune_type == "full":
        _freeze_for_full(model, config.num_layers)
    elif config.from_adapter:
        pass  # already a PeftModel with its trainable adapter
    else:
        from peft import LoraConfig

        peft_config = LoraConfig(**mapping.lora_config_kwargs(config, num_layers))

    mu = config.updates_per_rollout if method == "grpo" else 1
    writer = MetricsWriter(run, events, stage=method, steps_per_iteration=mu)
    started = time.time()
    if method == "dpo":
        from trl import DPOConfig

        from punie_peft.dpo import StagedDPOTrainer

        train_rows = preference_rows(train_path)
        lines = [line for line, _ in read_jsonl(train_path)]
        valid_rows = _val_rows(preference_rows(valid_path), config) if valid_path else None
        trainer = StagedDPOTrainer(
            model=model,
            plan=stage_plan(replace(config, **mapping.dpo_kwargs(config)), len(train_rows)),
            lines=lines,
            dropped=run.dropped,
            # a validation report at iteration 0, before any update, as on MLX
            args=DPOConfig(**args, **mapping.dpo_kwargs(config), eval_on_start=bool(valid_rows)),
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(valid_rows) if valid_rows else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[writer],
        )
    elif method == "grpo":
        from trl import GRPOConfig

        from punie_peft.grpo import ScorerRewards, grpo_trainer_class, load_suite, prompt_rows

        suite = load_suite(config)
        rewards = ScorerRewards(suite, mode=config.reward, format_weight=config.format_reward)
        args.pop("max_length")  # GRPO bounds the prompt (checked) and max_completion_length
        trainer = grpo_trainer_class()(
            model=model,
            reward_funcs=rewards.functions(),
            args=GRPOConfig(**{**args, **mapping.grpo_kwargs(config)}),
            train_dataset=Dataset.from_list(prompt_rows(suite, tokenizer, config)),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[writer],
            rewards=rewards,
            rollouts=run.rollouts,
            mu=mu,
        )
    else:
        from trl import SFTConfig, SFTTrainer

        def tokens(path: Path) -> list[dict]:
            return tokenize_file(
                tokenizer, path, mask_prompt=config.mask_prompt, max_length=config.max_seq_length
            )

        valid_rows = _val_rows(tokens(valid_path), config) if valid_path else None
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**args),
            train_dataset=Dataset.from_list(tokens(train_path)),
            eval_dataset=Dataset.from_list(valid_rows) if valid_rows else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[writer],
        )
    trainer.remove_callback(PrinterCallback)  # metrics go to metrics.jsonl and `events`
    trainer.train()  # evaluates at the last step too, as mlx-lm does
    if not trainer.is_world_process_zero():
        return run.adapter
    adapter = _save(trainer, tokenizer, config, run, model_dir, num_layers)
    _write_backend_record(run, adapter, started, trainer, method)
    shutil.rmtree(run.trainer_scratch, ignore_errors=True)
    return adapter


def _save(trainer, tokenizer, config: Any, run: RunDir, model_dir: Path, num_layers: int) -> Path:
    if config.fine_tune_type == "full":
        with atomic_dir(run.model, kind="model") as tmp:
            trainer.model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            keep_base_config(model_dir, tmp)  # float32 weights; mlx_lm reads the old keys
        return run.model
    with atomic_dir(run.peft, kind="adapter") as tmp:
        # GRPO from an adapter adds TRL's frozen "ref" copy beside it: keep the trained one only
        trainer.model.save_pretrained(tmp, safe_serialization=True, selected_adapters=["default"])
    if config.fine_tune_type == "lora":
        write_mlx_adapter(run.peft, run.adapter, num_layers)
        return run.adapter
    return run.peft  # DoRA: PEFT format only


def _write_backend_record(run: RunDir, adapter, started, trainer, method) -> None:
    write_json(
        run.backend_record,
        {
            "backend": "peft",
            "method": method,
            "adapter": str(adapter),
            "peft_adapter": str(run.peft) if run.peft.is_dir() else None,
            "wall_s": round(time.time() - started, 2),
            # a GRPO iteration is one rollout batch and its `num_iterations` updates
            "iterations": trainer.state.global_step // getattr(trainer.args, "num_iterations", 1),
            "device": str(trainer.args.device),
            "num_processes": trainer.args.world_size,
            "versions": library_versions(),
        },
    )
