"""The preference losses against numbers computed here by hand, with plain Python math."""

from __future__ import annotations

import math

import mlx.core as mx
import pytest

from punie.errors import ConfigError
from punie.train.preference import cal_dpo, dpo, dr_dpo, preference_loss

# policy chosen, policy rejected, reference chosen, reference rejected: summed log-probs
PC = [-10.0, -12.0, -30.0]
PR = [-14.0, -11.0, -29.0]
RC = [-11.0, -12.5, -30.0]
RR = [-13.0, -11.5, -28.0]
BETA = 0.1


def _sigmoid_loss(x: float) -> float:
    return math.log(1 + math.exp(-x))  # −log σ(x), fine for these small x


def _h(i: int) -> tuple[float, float, float]:
    r_c = PC[i] - RC[i]
    r_r = PR[i] - RR[i]
    return r_c, r_r, r_c - r_r


def _values(x) -> list[float]:
    return [float(v) for v in x.tolist()]


def test_dpo_matches_the_hand_computed_losses_and_rewards():
    out = dpo(PC, PR, RC, RR, beta=BETA)
    expected = [_sigmoid_loss(BETA * _h(i)[2]) for i in range(3)]
    assert _values(out.losses) == pytest.approx(expected, abs=1e-6)
    assert _values(out.reward_chosen) == pytest.approx([BETA * _h(i)[0] for i in range(3)])
    assert _values(out.reward_rejected) == pytest.approx([BETA * _h(i)[1] for i in range(3)])
    assert _values(out.reward_margin) == pytest.approx([BETA * _h(i)[2] for i in range(3)])
    # h = 2, 0.5, -2: two of the three pairs are preferred the right way round
    assert float(out.reward_accuracy) == pytest.approx(2 / 3)
    assert float(out.loss) == pytest.approx(sum(expected) / 3, abs=1e-6)


def test_cal_dpo_matches_the_hand_computed_losses():
    out = cal_dpo(PC, PR, RC, RR, beta=BETA)
    t = 1 / (2 * BETA)
    expected = []
    for i in range(3):
        r_c, r_r, h = _h(i)
        expected.append(_sigmoid_loss(h) + (r_c - t) ** 2 + (r_r + t) ** 2)
    assert _values(out.losses) == pytest.approx(expected, abs=1e-4)


def test_dr_dpo_is_the_log_mean_exp_of_the_per_pair_dpo_losses():
    dr_beta = 0.5
    out = dr_dpo(PC, PR, RC, RR, beta=BETA, dr_beta=dr_beta)
    ell = [_sigmoid_loss(BETA * _h(i)[2]) for i in range(3)]
    expected = -dr_beta * math.log(sum(math.exp(-x / dr_beta) for x in ell) / 3)
    assert float(out.loss) == pytest.approx(expected, abs=1e-6)
    assert _values(out.pair_losses) == pytest.approx(ell, abs=1e-6)


def test_dr_dpo_differs_from_dpo_on_unequal_losses():
    plain = float(dpo(PC, PR, RC, RR, beta=BETA).loss)
    robust = float(dr_dpo(PC, PR, RC, RR, beta=BETA, dr_beta=1.0).loss)
    # log-mean-exp of −ℓ is above the mean of −ℓ (Jensen), so Dr-DPO's loss is below DPO's
    assert robust < plain - 1e-4


def test_dr_dpo_equals_the_common_loss_when_every_pair_has_the_same():
    same = dr_dpo([-1.0] * 4, [-3.0] * 4, [-2.0] * 4, [-2.0] * 4, beta=BETA)
    ell = _sigmoid_loss(BETA * 2.0)
    assert float(same.loss) == pytest.approx(ell, abs=1e-6)
    assert float(dpo([-1.0] * 4, [-3.0] * 4, [-2.0] * 4, [-2.0] * 4, beta=BETA).loss) == (
        pytest.approx(float(same.loss), abs=1e-6)
    )


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5])
def test_at_the_reference_the_losses_take_their_closed_forms(beta):
    """Policy = reference (iteration 0 of a run): h = 0 for every pair."""
    logps = [-5.0, -17.0, -2.5]
    args = (logps, logps[::-1], logps, logps[::-1])
    assert float(dpo(*args, beta=beta).loss) == pytest.approx(math.log(2), abs=1e-6)
    assert float(dr_dpo(*args, beta=beta).loss) == pytest.approx(math.log(2), abs=1e-6)
    closed = math.log(2) + 2 * (1 / (2 * beta)) ** 2
    assert float(cal_dpo(*args, beta=beta).loss) == pytest.approx(closed, rel=1e-6)
    assert float(dpo(*args, beta=beta).reward_accuracy) == 0.0  # h > 0 counts, h = 0 does not


def test_large_log_prob_gaps_do_not_overflow():
    args = ([0.0, -5000.0], [-5000.0, 0.0], [-2500.0, -2500.0], [-2500.0, -2500.0])
    for name in ("dpo", "cal_dpo", "dr_dpo"):
        out = preference_loss(name, *args, beta=1.0, dr_beta=0.01)
        assert all(math.isfinite(v) for v in _values(out.losses)), name
    d = dpo(*args, beta=1.0)
    # h = +5000: loss ~ 0; h = −5000: loss ~ 5000 (−log σ(x) → −x)
    assert _values(d.losses) == pytest.approx([0.0, 5000.0], abs=1e-3)
    dr = dr_dpo(*args, beta=1.0, dr_beta=0.01)
    assert float(dr.loss) == pytest.approx(-0.01 * math.log(0.5), abs=1e-3)


def test_an_unknown_loss_name_is_a_one_line_error():
    with pytest.raises(ConfigError, match="not one of dpo, cal_dpo, dr_dpo"):
        preference_loss("ipo", [0.0], [0.0], [0.0], [0.0])


def test_the_dpo_gradient_is_the_closed_form():
    """The trainer differentiates these: d ℓ / d logπ(chosen) = −β·σ(−β·h), per pair, / N."""

    def mean_loss(pc):
        return dpo(pc, mx.array(PR), mx.array(RC), mx.array(RR), beta=BETA).loss

    grad = _values(mx.grad(mean_loss)(mx.array(PC)))
    expected = [-BETA / (1 + math.exp(BETA * _h(i)[2])) / 3 for i in range(3)]
    assert grad == pytest.approx(expected, abs=1e-6)
