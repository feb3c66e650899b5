"""GRPO's algorithm against hand-computed numbers: advantages, the per-token loss, the clip, the
k3 KL, and the rule that a group whose rewards are all equal gives no gradient."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from punie.train.config import TrainConfig
from punie.train.grpo import STD_EPS, Batch, group_advantages, grpo_loss, loss_and_grad


def test_grpo_advantage_is_centred_and_scaled_by_the_group_std():
    # group 1: mean 0.5, population std 0.5; group 2: mean 0.5, std sqrt(0.125)
    adv = group_advantages([1, 0, 0, 1, 1, 0.5, 0, 0.5], group_size=4, variant="grpo")
    s1, s2 = 0.5 + STD_EPS, math.sqrt(0.125) + STD_EPS
    want = [0.5 / s1, -0.5 / s1, -0.5 / s1, 0.5 / s1, 0.5 / s2, 0, -0.5 / s2, 0]
    np.testing.assert_allclose(adv.values, want, rtol=1e-12)
    assert adv.zero_variance_groups == 0 and adv.groups == 2
    assert adv.live.all()


def test_dr_grpo_advantage_is_only_centred():
    adv = group_advantages([1, 0, 0, 0, 0.2, 0.4], group_size=3, variant="dr_grpo")
    np.testing.assert_allclose(adv.values, [2 / 3, -1 / 3, -1 / 3, -0.2, 0.0, 0.2], atol=1e-12)


@pytest.mark.parametrize("variant", ["grpo", "dr_grpo"])
def test_a_zero_variance_group_gets_zero_advantage_and_is_counted(variant):
    adv = group_advantages([1, 1, 1, 0, 1, 0, 0, 0, 0], group_size=3, variant=variant)
    assert adv.zero_variance_groups == 2 and adv.groups == 3
    np.testing.assert_array_equal(adv.live, [False] * 3 + [True] * 3 + [False] * 3)
    np.testing.assert_array_equal(adv.values[:3], 0.0)
    np.testing.assert_array_equal(adv.values[6:], 0.0)


def test_batch_masks_exactly_the_completion_targets():
    batch = Batch.of([[5, 6, 7], [5]], [[8, 9], [4, 3, 2]])
    assert batch.tokens.tolist() == [[5, 6, 7, 8, 9], [5, 4, 3, 2, 0]]
    # target j is token j + 1: row 0 trains 8 and 9, row 1 trains 4, 3 and 2 (not the padding)
    assert batch.mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]
    assert batch.completion_tokens == 5


def _terms(variant, old_shift=0.0, ref=None, beta=0.0):
    logp = mx.zeros((2, 4))
    mask = mx.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=mx.float32)
    return grpo_loss(
        logp,
        logp - old_shift,
        ref,
        mask,
        mx.array([1.0, -1.0]),
        clip_epsilon=0.2,
        kl_beta=beta,
        variant=variant,
        max_completion_tokens=4,
    )


def test_loss_is_aggregated_per_token_for_grpo_and_over_a_constant_for_dr_grpo():
    # ratio 1: each token's loss is −A; row 0 has 3 tokens of A=1, row 1 one token of A=−1
    assert _terms("grpo").loss.item() == pytest.approx((-3 + 1) / 4)
    assert _terms("dr_grpo").loss.item() == pytest.approx((-3 + 1) / (2 * 4))
    assert _terms("grpo").clip_fraction.item() == 0.0


def test_the_ratio_is_clipped_on_the_side_the_advantage_favours():
    # ratio e^0.5 ≈ 1.65: for A=1 the clipped 1.2 is smaller, for A=−1 the unclipped −1.65 is
    terms = _terms("grpo", old_shift=0.5)
    assert terms.loss.item() == pytest.approx((-3 * 1.2 + math.exp(0.5)) / 4, rel=1e-6)
    assert terms.clip_fraction.item() == 1.0


def test_k3_kl_is_zero_where_the_policy_is_the_reference_and_positive_elsewhere():
    assert _terms("grpo", ref=mx.zeros((2, 4)), beta=0.5).kl.item() == 0.0
    d = 0.3  # log π_ref − log π_θ on every token
    terms = _terms("grpo", ref=mx.full((2, 4), d), beta=0.5)
    assert terms.kl.item() == pytest.approx(math.exp(d) - d - 1, rel=1e-6)
    assert terms.loss.item() == pytest.approx((-3 + 1) / 4 + 0.5 * (math.exp(d) - d - 1), rel=1e-6)


class TinyLM(nn.Module):
    def __init__(self, vocab=11, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab)

    def __call__(self, tokens):
        return self.out(self.embed(tokens))


def _grads(model, rewards, group_size, kl_beta=0.5):
    mx.random.seed(0)
    config = TrainConfig(model="m", data="d", kl_beta=kl_beta, temperature=0.7)
    prompts = [[1, 2], [1, 2], [3], [3]][: len(rewards)]
    completions = [[4, 5, 6], [7, 8], [9], [10, 4]][: len(rewards)]
    batch = Batch.of(prompts, completions)
    adv = group_advantages(rewards, group_size)
    live = batch.mask * mx.array(adv.live.astype(np.float32))[:, None]
    ref = mx.full(batch.mask.shape, -1.0)  # a reference far from the policy: KL has a gradient
    terms, grads = loss_and_grad(
        model, batch, None, ref, live, mx.array(adv.values.astype(np.float32)), config
    )
    return terms, dict(tree_flatten(grads))


def test_a_zero_variance_group_contributes_no_gradient():
    model = TinyLM()
    mx.eval(model.parameters())
    terms, grads = _grads(model, [1.0, 1.0], group_size=2)
    assert terms.loss.item() == 0.0
    assert all(mx.all(g == 0).item() for g in grads.values())
    # next to a live group it changes nothing: the gradient is the live group's alone
    _, mixed = _grads(model, [0.0, 0.0, 1.0, 0.0], group_size=2)
    live_only = TrainConfig(model="m", data="d", kl_beta=0.5, temperature=0.7)
    batch = Batch.of([[3], [3]], [[9], [10, 4]])
    adv = group_advantages([1.0, 0.0], 2)
    _, alone = loss_and_grad(
        model,
        batch,
        None,
        mx.full(batch.mask.shape, -1.0),
        batch.mask,
        mx.array(adv.values.astype(np.float32)),
        live_only,
    )
    for name, g in dict(tree_flatten(alone)).items():
        np.testing.assert_allclose(np.array(mixed[name]), np.array(g), atol=1e-6)
    assert any(mx.any(g != 0).item() for g in mixed.values())
