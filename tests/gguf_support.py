"""The GGUF parity check: greedy tokens of a model folder in mlx_lm against its GGUF export loaded
by an independent reader, transformers' GGUF loading on CPU torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_TOKENS = 24


def greedy_parity(
    model_dir: Path, gguf_file: Path, prompts: list[dict[str, Any]], max_tokens: int = MAX_TOKENS
) -> list[dict[str, Any]]:
    """For each prompt: the greedy tokens in both, and the largest logit difference on the prompt.

    The prompt is tokenized by each side's own tokenizer (transformers rebuilds it from the GGUF
    metadata), so a lost merge, special token or template shows up as different ids."""
    import mlx.core as mx
    import mlx_lm
    import numpy as np
    import torch
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_sampler
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mlx_model, mlx_tokenizer = mlx_lm.load(str(model_dir))
    hf_tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    hf_model = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    rows = []
    for prompt in prompts:
        args = {"tools": prompt.get("tools"), "add_generation_prompt": True}
        mlx_ids = list(mlx_tokenizer.apply_chat_template(prompt["messages"], **args))
        hf_ids = list(
            hf_tokenizer.apply_chat_template(prompt["messages"], **args, return_dict=False)
        )
        steps = generate_step(mx.array(mlx_ids), mlx_model, sampler=make_sampler(0.0))
        mlx_tokens = [int(token) for (token, _), _ in zip(steps, range(max_tokens), strict=False)]
        with torch.no_grad():
            out = hf_model.generate(
                torch.tensor([hf_ids]), max_new_tokens=max_tokens, do_sample=False
            )
            hf_logits = hf_model(torch.tensor([hf_ids])).logits[0].numpy()
        hf_tokens = out[0, len(hf_ids) :].tolist()
        mlx_logits = mlx_model(mx.array([mlx_ids]))[0].astype(mx.float32)
        diff = np.abs(hf_logits - np.array(mlx_logits)).max()
        # transformers stops at the end-of-turn token; mlx_lm's generate_step does not.
        stopped = len(hf_tokens) < max_tokens and hf_tokens[-1] in mlx_tokenizer.eos_token_ids
        rows.append(
            {
                "same_prompt_ids": mlx_ids == hf_ids,
                "same_tokens": hf_tokens == mlx_tokens[: len(hf_tokens)]
                and (len(hf_tokens) == max_tokens or stopped),
                "mlx": mlx_tokens,
                "gguf": hf_tokens,
                "max_logit_diff": float(diff),
            }
        )
    return rows
