"""Merge a LoRA adapter into its base model and save a plain safetensors model folder.

The folder is an ordinary Hugging Face model (config.json, model.safetensors, tokenizer, chat
template), so transformers, vLLM (`punie eval --base-url`) and `mlx_lm.load` all read it. An
mlx-lm adapter folder is accepted too: it is converted to PEFT's form first, which is how a LoRA
trained on a Mac reaches a vLLM server.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from punie.backends.base import FuseResult
from punie.errors import BackendError
from punie.fsio import atomic_dir
from punie.model.resolve import resolve_model
from punie.train.rundir import RunDir
from punie_peft.convert import CONFIG, convert_mlx_to_peft, is_mlx_adapter


def merge_adapter(base: str | Path, adapter: Path, out: Path) -> Path:
    """Write base + adapter, merged, to `out` (replaced atomically); return `out`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(adapter)
    if not (adapter / CONFIG).exists():
        raise BackendError(f"merge: {adapter / CONFIG}: missing (is {adapter} an adapter folder?)")
    base_dir = resolve_model(base)
    with tempfile.TemporaryDirectory() as scratch:
        if is_mlx_adapter(adapter):
            adapter = convert_mlx_to_peft(adapter, Path(scratch) / "peft", str(base_dir))
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        dtype = base_dtype(base_dir)
        model = model.to(getattr(torch, dtype))  # merged in float32, saved as the base was
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        with atomic_dir(out, kind="model") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            keep_base_config(base_dir, tmp)
    return Path(out)


def base_dtype(model_dir: Path) -> str:
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    return dtype if dtype in ("float32", "float16", "bfloat16") else "float32"


def keep_base_config(base_dir: Path, out: Path) -> None:
    """Put the base model's own config.json in the saved folder.

    transformers 5 rewrites config.json in its new layout (`rope_parameters` instead of
    `rope_theta`, ...); mlx_lm 0.32 reads the old keys and silently falls back to its defaults
    (rope_theta 1e6 for qwen2), so a merged model loaded in mlx_lm generated different tokens.
    A merge changes weights, never the architecture, so the base's config is the right one.
    """
    shutil.copyfile(Path(base_dir) / "config.json", Path(out) / "config.json")


def fuse_run(run_dir: Path, out: Path) -> FuseResult:
    """Merge a peft-backend run's adapter into the base model named in its config.json."""
    run = RunDir(Path(run_dir))
    config_path = run.config
    if not config_path.exists():
        raise BackendError(f"fuse: {config_path}: missing (is {run_dir} a run folder?)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("fine_tune_type") == "full":  # a full fine-tune already is a whole model
        with atomic_dir(out, kind="model") as tmp:
            shutil.copytree(run.model, tmp, dirs_exist_ok=True)
        return FuseResult(out=Path(out), run=run.path.name, adapter=run.model)
    merge_adapter(config["model"], run.peft, out)
    return FuseResult(out=Path(out), run=run.path.name, adapter=run.peft)
