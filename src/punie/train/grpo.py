"""GRPO's algorithm as plain functions: group advantages, per-token log-probs and the loss.

A rollout batch holds B prompts × G completions, laid out group by group (rows g·G … g·G+G−1
answer prompt g). With rewards r, the advantage of a completion is

- `grpo`:    A_i = (r_i − mean r) / (std r + ε), the loss averaged over the batch's completion
             tokens (per token, so a long answer counts as many tokens, not as one sequence);
- `dr_grpo`: A_i = r_i − mean r, the loss summed over tokens and divided by the constant
             rows × max_completion_tokens (Dr. GRPO: no std, no length normalisation).

Per token, with ρ = π_θ / π_old: ℓ = −min(ρ·A, clip(ρ, 1−ε, 1+ε)·A) + β·KL, where KL is the k3
estimator π_ref/π_θ − log(π_ref/π_θ) − 1 (≥ 0, and 0 where the policy is the reference).

A group whose rewards are all equal carries no signal: its advantages are 0 and its tokens are
left out of the loss altogether (the KL term too), so it contributes no gradient; it is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

STD_EPS = 1e-4


@dataclass(frozen=True)
class Advantages:
    values: np.ndarray  # (B·G,) one per completion
    live: np.ndarray  # (B·G,) bool: its group has some spread, so it trains
    zero_variance_groups: int
    groups: int


def group_advantages(rewards, group_size: int, variant: str = "grpo") -> Advantages:
    """Advantages of `rewards` (B·G values, group by group) under `variant`."""
    r = np.asarray(rewards, dtype=np.float64).reshape(-1, group_size)
    mean = r.mean(axis=1, keepdims=True)
    centred = r - mean
    flat = np.ptp(r, axis=1) == 0
    if variant == "grpo":
        # numpy's default std is the population one (ddof=0), as in the GRPO paper's formula.
        adv = centred / (r.std(axis=1, keepdims=True) + STD_EPS)
    elif variant == "dr_grpo":
        adv = centred
    else:
        raise ValueError(f"advantage: {variant!r} is not one of grpo, dr_grpo")
    adv[flat] = 0.0
    return Advantages(
        values=adv.reshape(-1),
        live=np.repeat(~flat, group_size),
        zero_variance_groups=int(flat.sum()),
        groups=int(r.shape[0]),
    )


@dataclass(frozen=True)
class Batch:
    """Prompt + completion tokens, right-padded; `mask` marks the completion's tokens among the
    targets (`tokens[:, 1:]`)."""

    tokens: mx.array  # (N, L) int
    mask: mx.array  # (N, L−1) float: 1 on completion targets
    completion_tokens: int  # sum of the mask

    @classmethod
    def of(cls, prompts: list[list[int]], completions: list[list[int]]) -> Batch:
        rows = [p + c for p, c in zip(prompts, completions, strict=True)]
        width = max(len(r) for r in rows)
        tokens = np.zeros((len(rows), width), dtype=np.int32)
        mask = np.zeros((len(rows), width - 1), dtype=np.float32)
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            tokens[i, : len(p) + len(c)] = p + c
            # target j is tokens[j + 1]: the completion's first token is target len(p) − 1
            mask[i, len(p) - 1 : len(p) - 1 + len(c)] = 1.0
        return cls(mx.array(tokens), mx.array(mask), int(mask.sum()))


def token_logprobs(model, tokens: mx.array, temperature: float = 1.0) -> mx.array:
    """log π(tokens[:, j+1] | tokens[:, :j+1]) for every position: shape (N, L−1). Logits are
    divided by the sampling temperature, the distribution the rollouts were drawn from."""
    logits = model(tokens[:, :-1]).astype(mx.float32) / temperature
    targets = tokens[:, 1:]
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)
    return picked - mx.logsumexp(logits, axis=-1)


@dataclass(frozen=True)
class LossTerms:
    loss: mx.array
    kl: mx.array  # mean k3 KL over the live tokens
    clip_fraction: mx.array  # share of live tokens whose ratio was clipped


def grpo_loss(
    logp: mx.array,
    old_logp: mx.array,
    ref_logp: mx.array | None,
    mask: mx.array,
    advantages: mx.array,
    *,
    clip_epsilon: float,
    kl_beta: float,
    variant: str = "grpo",
    max_completion_tokens: int = 1,
) -> LossTerms:
    """The clipped surrogate plus β·KL, per token, over `mask` (which has the zero-variance
    groups' rows already zeroed). All arrays are (N, L−1) but `advantages`, (N,)."""
    adv = advantages[:, None]
    ratio = mx.exp(logp - old_logp)
    clipped = mx.clip(ratio, 1 - clip_epsilon, 1 + clip_epsilon)
    per_token = -mx.minimum(ratio * adv, clipped * adv)
    if ref_logp is not None and kl_beta > 0:
        d = ref_logp - logp
        kl = mx.exp(d) - d - 1
        per_token = per_token + kl_beta * kl
    else:
        kl = mx.zeros_like(logp)
    tokens = mx.maximum(mask.sum(), 1)
    # Dr. GRPO divides by a constant, so a long completion's tokens weigh no less each.
    denominator = mask.shape[0] * max_completion_tokens if variant == "dr_grpo" else tokens
    loss = (per_token * mask).sum() / denominator
    was_clipped = (mx.abs(ratio - clipped) > 0).astype(mx.float32)
    return LossTerms(
        loss=loss,
        kl=mx.stop_gradient((kl * mask).sum() / tokens),
        clip_fraction=mx.stop_gradient((was_clipped * mask).sum() / tokens),
    )


def loss_and_grad(model, batch: Batch, old_logp, ref_logp, live_mask, advantages, config):
    """The loss terms and the trainable parameters' gradients for one update."""

    def objective():
        logp = token_logprobs(model, batch.tokens, config.temperature)
        old = mx.stop_gradient(logp) if old_logp is None else old_logp
        terms = grpo_loss(
            logp,
            old,
            ref_logp,
            live_mask,
            advantages,
            clip_epsilon=config.clip_epsilon,
            kl_beta=config.kl_beta,
            variant=config.advantage,
            max_completion_tokens=config.max_completion_tokens,
        )
        return terms.loss, (terms.kl, terms.clip_fraction)

    (loss, (kl, clip)), grads = nn.value_and_grad(model, objective)()
    return LossTerms(loss, kl, clip), grads
