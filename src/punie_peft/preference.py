"""The preference losses in torch, as `punie.train.preference` defines them on MLX.

With r = log π_θ(y|x) − log π_ref(y|x) summed over the completion's tokens and h = r_c − r_r:
DPO ℓ = −log σ(β·h) (TRL's own "sigmoid" loss computes the same); Cal-DPO
ℓ = −log σ(h) + (r_c − 1/(2β))² + (r_r + 1/(2β))²; Dr-DPO L = −β′·log((1/N) Σ_i exp(−ℓ_i/β′))
over the per-pair DPO losses ℓ_i, never over their mean (on the mean it collapses to DPO).
`batch_loss` returns the loss to back-propagate and the per-pair ones that went into it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from punie.errors import ConfigError

LOSSES = ("dpo", "cal_dpo", "dr_dpo")


def pair_losses(name: str, r_chosen: torch.Tensor, r_rejected: torch.Tensor, beta: float):
    """Per-pair losses: DPO's for dpo and dr_dpo (Dr-DPO aggregates them), Cal-DPO's."""
    if name in ("dpo", "dr_dpo"):
        return -F.logsigmoid(beta * (r_chosen - r_rejected))
    if name == "cal_dpo":
        target = 1.0 / (2.0 * beta)
        calibration = (r_chosen - target) ** 2 + (r_rejected + target) ** 2
        return -F.logsigmoid(r_chosen - r_rejected) + calibration
    raise ConfigError(f"preference_loss: {name!r} is not one of {', '.join(LOSSES)}")


def batch_loss(name: str, r_chosen, r_rejected, *, beta: float, dr_beta: float = 1.0):
    """(loss, per-pair losses) of a batch; the loss is their mean, or Dr-DPO's log-mean-exp."""
    ell = pair_losses(name, r_chosen, r_rejected, beta)
    if name != "dr_dpo":
        return ell.mean(), ell
    n = ell.shape[0]
    return -dr_beta * (torch.logsumexp(-ell / dr_beta, dim=0) - math.log(n)), ell
