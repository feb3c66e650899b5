"""Preference losses on per-pair summed log-probs: DPO, Cal-DPO and Dr-DPO (docs/training.md).

Plain functions of four arrays of shape (N,): the policy's and the frozen reference's log-prob of
each pair's chosen and rejected completion, summed over the completion's tokens. With
r = log π_θ(y|x) − log π_ref(y|x) and h = r_chosen − r_rejected:

- DPO:     ℓ = −log σ(β·h)
- Cal-DPO: ℓ = −log σ(h) + (r_chosen − 1/(2β))² + (r_rejected + 1/(2β))²
- Dr-DPO:  L = −β′·log((1/N) Σ_i exp(−ℓ_i/β′)) over the per-pair DPO losses ℓ_i of the batch;
  applied to an already averaged loss it collapses to plain DPO, so it takes the pairs.

Every log-sigmoid is −softplus(−x) through `logaddexp`, and the log-mean-exp a `logsumexp`, so
no |h| overflows. The MLX trainer takes the mean of `losses` (Dr-DPO's is the batch value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx

from punie.errors import ConfigError

LOSSES = ("dpo", "cal_dpo", "dr_dpo")


@dataclass(frozen=True)
class PreferenceLoss:
    """A batch's loss and rewards. `losses` is per pair for DPO and Cal-DPO; for Dr-DPO, whose
    value belongs to the batch, it is that value once (shape (1,)), and `pair_losses` holds the
    per-pair DPO losses it was taken over. Rewards are β·r, as TRL reports them."""

    losses: mx.array
    pair_losses: mx.array
    reward_chosen: mx.array
    reward_rejected: mx.array

    @property
    def loss(self) -> mx.array:
        return mx.mean(self.losses)

    @property
    def reward_margin(self) -> mx.array:
        return self.reward_chosen - self.reward_rejected

    @property
    def reward_accuracy(self) -> mx.array:
        """The fraction of pairs the policy prefers the right way round (h > 0)."""
        return mx.mean((self.reward_margin > 0).astype(mx.float32))


def log_sigmoid(x: mx.array) -> mx.array:
    """log σ(x) = −log(1 + e^(−x)), finite for any finite x."""
    return -mx.logaddexp(mx.zeros_like(x), -x)


def _rewards(policy_chosen, policy_rejected, ref_chosen, ref_rejected):
    r_c = mx.array(policy_chosen) - mx.array(ref_chosen)
    r_r = mx.array(policy_rejected) - mx.array(ref_rejected)
    return r_c, r_r


def dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float = 0.1):
    r_c, r_r = _rewards(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    losses = -log_sigmoid(beta * (r_c - r_r))
    return PreferenceLoss(losses, losses, beta * r_c, beta * r_r)


def cal_dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float = 0.1):
    r_c, r_r = _rewards(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    target = 1.0 / (2.0 * beta)  # calibration pulls r_chosen to +1/(2β), r_rejected to −1/(2β)
    losses = -log_sigmoid(r_c - r_r) + (r_c - target) ** 2 + (r_r + target) ** 2
    return PreferenceLoss(losses, losses, beta * r_c, beta * r_r)


def dr_dpo(
    policy_chosen,
    policy_rejected,
    ref_chosen,
    ref_rejected,
    *,
    beta: float = 0.1,
    dr_beta: float = 1.0,
):
    pairs = dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta)
    ell = pairs.losses
    n = ell.shape[0]
    batch = -dr_beta * (mx.logsumexp(-ell / dr_beta) - math.log(n))
    return PreferenceLoss(mx.reshape(batch, (1,)), ell, pairs.reward_chosen, pairs.reward_rejected)


def preference_loss(
    name: str,
    policy_chosen,
    policy_rejected,
    ref_chosen,
    ref_rejected,
    *,
    beta: float = 0.1,
    dr_beta: float = 1.0,
) -> PreferenceLoss:
    """The loss `name` (one of LOSSES), as `TrainConfig.preference_loss` names it."""
    args = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    if name == "dpo":
        return dpo(*args, beta=beta)
    if name == "cal_dpo":
        return cal_dpo(*args, beta=beta)
    if name == "dr_dpo":
        return dr_dpo(*args, beta=beta, dr_beta=dr_beta)
    raise ConfigError(f"preference_loss: {name!r} is not one of {', '.join(LOSSES)}")
