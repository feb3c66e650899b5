"""Preference training on the peft backend: the same keys, losses and stages as on MLX.

The parity test feeds the same pairs and the same starting adapter (an MLX LoRA SFT adapter,
converted to PEFT by the backend) to both backends, with one identical update (plain SGD, the
whole set as one batch, no dropout), and compares their iteration-0 validation loss and the
per-pair rewards β·r after the update.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from punie.data.sample import splits  # noqa: E402
from punie.errors import ConfigError  # noqa: E402
from punie.fsio import write_jsonl  # noqa: E402
from punie.train.config import TrainConfig  # noqa: E402
from punie.train.launch import start  # noqa: E402
from punie.train.rundir import RunDir  # noqa: E402
from punie_peft import mapping  # noqa: E402

# Fixed log-probs with unequal per-pair losses (policy chosen, rejected; reference chosen, rejected)
LOGPS = (
    [-10.0, -4.0, -20.0, -7.5],
    [-12.0, -3.0, -19.0, -9.0],
    [-11.0, -4.5, -18.0, -8.0],
    [-11.5, -3.5, -20.5, -8.5],
)


@pytest.mark.parametrize("name", ["dpo", "cal_dpo", "dr_dpo"])
def test_torch_losses_equal_the_mlx_definitions_on_fixed_logps(name):
    import torch

    from punie.train.preference import preference_loss
    from punie_peft.preference import batch_loss

    mlx = preference_loss(name, *LOGPS, beta=0.2, dr_beta=0.5)
    pc, pr, rc, rr = (torch.tensor(v, dtype=torch.float64) for v in LOGPS)
    loss, pairs = batch_loss(name, pc - rc, pr - rr, beta=0.2, dr_beta=0.5)
    assert loss.item() == pytest.approx(mlx.loss.item(), rel=1e-6)
    assert pairs.numpy() == pytest.approx(np.array(mlx.pair_losses), rel=1e-6)


def test_dr_dpo_in_torch_is_taken_over_pair_losses_not_their_mean():
    import torch

    from punie_peft.preference import batch_loss

    r_c, r_r = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    dpo, ell = batch_loss("dpo", r_c, r_r, beta=1.0)
    dr, _ = batch_loss("dr_dpo", r_c, r_r, beta=1.0, dr_beta=1.0)
    hand = -math.log(sum(math.exp(-x) for x in ell.tolist()) / 3)
    assert dr.item() == pytest.approx(hand, rel=1e-6)
    assert dr.item() < dpo.item() - 0.05  # log-mean-exp weighs the low losses up


def test_peft_accepts_the_mlx_preference_keys_and_stages_with_drop_noisy():
    stages = [{"epochs": 1, "beta": 0.05}, {"epochs": 1, "preference_loss": "dr_dpo"}]
    for loss in ("dpo", "cal_dpo", "dr_dpo"):
        assert mapping.method(TrainConfig(model="m", data="d", method="dpo", preference_loss=loss))
    assert mapping.method(TrainConfig(model="m", data="d", method="dpo", stages=stages))
    noisy = [{"epochs": 1}, {"epochs": 1, "drop_noisy": 0.2}]
    assert mapping.method(TrainConfig(model="m", data="d", method="dpo", stages=noisy)) == "dpo"
    with pytest.raises(ConfigError, match=r"^method: 'ppo' is not one of"):
        mapping.method(TrainConfig(model="m", data="d", method="ppo"))


# --- real runs --------------------------------------------------------------------------------

LORA = dict(num_layers=2, rank=4, scale=10.0, dropout=0.0, max_seq_length=256, mask_prompt=True)


def _call(name: str, args: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """8 pairs: chosen the right tool call, rejected the same call to the wrong tool; the same
    file is the valid split, so validation reads the pairs the update was taken on."""
    rows = []
    for row in splits(n_train=24, n_valid=0, n_test=0, seed=1)["train"]:
        turn = row["messages"][-1]
        if not turn.get("tool_calls") or len(rows) == 8:
            continue
        call = turn["tool_calls"][0]["function"]
        wrong = "list_dir" if call["name"] != "list_dir" else "read_file"
        args = json.dumps(call["arguments"])
        rows.append({
            "prompt": row["messages"][:-1],
            "chosen": [{"role": "assistant", "content": _call(call["name"], args)}],
            "rejected": [{"role": "assistant", "content": _call(wrong, args)}],
        })  # fmt: skip
    folder = tmp_path_factory.mktemp("pairs")
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "valid.jsonl", rows)
    return folder


@pytest.fixture(scope="module")
def sft_adapter(tiny_model, tmp_path_factory) -> Path:
    """A LoRA SFT adapter from a short MLX run: non-zero B, so the start is not the base."""
    data = tmp_path_factory.mktemp("sft")
    for name, rows in splits(n_train=16, n_valid=4, n_test=0, seed=0).items():
        if rows:
            write_jsonl(data / f"{name}.jsonl", rows)
    run = tmp_path_factory.mktemp("runs") / "sft"
    config = TrainConfig(
        model=str(tiny_model), data=str(data), adapter_path=str(run), iters=6, batch_size=4,
        learning_rate=1e-2, steps_per_eval=1000, val_batches=1, save_every=1000, **LORA,
    )  # fmt: skip
    return start(config).adapter_path


def _dpo_run(backend, tiny_model, pairs, sft_adapter, run_dir, **changes):
    base = dict(
        model=str(tiny_model), data=str(pairs), adapter_path=str(run_dir), backend=backend,
        method="dpo", from_adapter=str(sft_adapter), iters=1, batch_size=8, optimizer="sgd",
        beta=0.1, steps_per_report=1, steps_per_eval=1, val_batches=-1, save_every=1000, seed=0,
        **LORA,
    )  # fmt: skip
    return start(TrainConfig(**{**base, **changes}), overwrite=True)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _pair_rewards(tiny_model, pairs, adapter: Path, reference: Path, beta: float) -> np.ndarray:
    """β·r of each pair's [chosen, rejected] under `adapter`, both runs scored by the same MLX
    code, so a difference is a difference in the update, not in the scoring."""
    import mlx.core as mx

    policy = _pair_logps(tiny_model, pairs, adapter)
    ref = np.array(mx.load(str(reference))["train"])
    return beta * (policy - ref)


def _pair_logps(tiny_model, pairs, adapter: Path) -> np.ndarray:
    """Each train pair's summed log-probs [chosen, rejected] under `adapter`, scored by MLX."""
    from mlx_lm.utils import load

    from punie.train.pair_data import iterate_pair_batches, sequence_logps, tokenized_pairs

    model, tokenizer = load(str(tiny_model), adapter_path=str(adapter))
    split = tokenized_pairs(pairs, "train", tokenizer, 256)
    out = []
    for tokens, mask, _ in iterate_pair_batches(split.pairs, range(len(split)), 8, 256):
        out.append(np.array(sequence_logps(model, tokens, mask)))
    logps = np.concatenate(out)
    return np.stack([logps[: len(split)], logps[len(split) :]], axis=1)


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "lr"), [("dpo", 0.5), ("cal_dpo", 5e-4)])
def test_peft_and_mlx_agree_on_initial_loss_and_rewards_after_one_update(
    loss, lr, tiny_model, pairs, sft_adapter, tmp_path
):
    """Tolerance: float32 on both sides, different kernels (MLX's and torch's matmul, softmax,
    summation order). A summed log-prob of ~30 tokens of ~-5 each carries ~1e-5 of rounding, β·r
    a tenth of it; the update's step moves that error by lr·|Δgrad|. Seen: 3e-6 on both losses
    (and 4e-5 on rewards of ~16 with a larger step). Allowed: 1e-4 + 1e-5·max|reward| per pair,
    30x the seen; a real difference (a token more or less, β or the LoRA scale wrong) is >1e-2."""
    runs = {
        b: _dpo_run(
            b, tiny_model, pairs, sft_adapter, tmp_path / b, preference_loss=loss, learning_rate=lr
        )
        for b in ("mlx", "peft")
    }
    metrics = {b: _metrics(r.run_dir) for b, r in runs.items()}
    train = {b: [m for m in ms if "train_loss" in m] for b, ms in metrics.items()}
    val = {b: {m["iteration"]: m for m in ms if "val_loss" in m} for b, ms in metrics.items()}
    # The initial loss: step 1's train loss is taken on the starting weights over all the pairs
    # (one batch). With iters = 1 the MLX loop moves its pre-step validation to after the step,
    # so only peft has the iteration-0 validation report here; it covers the same pairs.
    closed = math.log(2) + (2 * (1 / (2 * 0.1)) ** 2 if loss == "cal_dpo" else 0.0)
    initial = {b: train[b][0]["train_loss"] for b in runs}
    assert initial["mlx"] == pytest.approx(closed, abs=1e-3)
    assert initial["peft"] == pytest.approx(initial["mlx"], abs=1e-4)
    assert val["peft"][0]["val_loss"] == pytest.approx(initial["mlx"], abs=1e-4)
    after = {b: val[b][1]["val_loss"] for b in runs}
    print(f"PARITY {loss}: initial mlx={initial['mlx']:.7f} peft={initial['peft']:.7f}")
    print(f"PARITY {loss}: val after mlx={after['mlx']:.7f} peft={after['peft']:.7f}")
    reference = RunDir(runs["mlx"].run_dir).reference
    rewards = {
        b: _pair_rewards(tiny_model, pairs, r.adapter_path, reference, 0.1) for b, r in runs.items()
    }
    print(f"PARITY {loss}: rewards mlx={rewards['mlx'].round(5).tolist()}")
    print(f"PARITY {loss}: rewards peft={rewards['peft'].round(5).tolist()}")
    diff = np.abs(rewards["mlx"] - rewards["peft"])
    top = np.abs(rewards["mlx"]).max()
    print(f"PARITY {loss}: max |diff|={diff.max():.2e} max |reward|={top:.3e}")
    assert np.abs(rewards["mlx"]).max() > 1e-3  # the update moved the rewards
    assert diff.max() <= 1e-4 + 1e-5 * np.abs(rewards["mlx"]).max()
    assert after["peft"] == pytest.approx(after["mlx"], rel=1e-5)
    for b in ("mlx", "peft"):
        assert {"reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy"} <= set(
            train[b][0]
        ), b
        assert train[b][0]["stage"] == 0


@pytest.mark.slow
def test_peft_runs_a_staged_schedule_as_one_run_with_the_stage_in_every_report(
    tiny_model, pairs, sft_adapter, tmp_path
):
    stages = [
        {"epochs": 1, "beta": 0.05, "preference_loss": "dpo"},
        {"epochs": 1, "beta": 0.1, "preference_loss": "dr_dpo"},
    ]
    result = _dpo_run(
        "peft", tiny_model, pairs, sft_adapter, tmp_path / "staged", batch_size=4,
        learning_rate=0.2, stages=stages, steps_per_eval=2,
    )  # fmt: skip
    rows = _metrics(result.run_dir)
    train = {m["iteration"]: m for m in rows if "train_loss" in m}
    val = {m["iteration"]: m for m in rows if "val_loss" in m}
    assert sorted(train) == [1, 2, 3, 4]  # 8 pairs / batch 4 = 2 steps a stage
    assert [train[i]["stage"] for i in (1, 2, 3, 4)] == [0, 0, 1, 1]
    assert val[0]["stage"] == 0 and val[0]["val_loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert val[4]["stage"] == 1
    # β·r doubles with β at the boundary: the reward scale follows the stage's β
    assert train[1]["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert abs(train[3]["reward_margin"]) > abs(train[2]["reward_margin"])


@pytest.mark.slow
def test_peft_drop_noisy_drops_the_highest_loss_pairs_under_the_current_weights(
    tiny_model, pairs, sft_adapter, tmp_path
):
    """Stage 0 trains 2 steps (its drop_noisy rounds to no pair of 8, but makes its batches this
    backend's own, as in `head` below); stage 1 drops 25% of 8 = 2 pairs under Cal-DPO. `head`
    runs stage 0 alone, so it ends on the weights stage 1 starts from; MLX scores every pair
    there, with the starting adapter as the reference, as TRL's is. At the start weights every
    Cal-DPO loss is ln 2 + 2 (r = 0): a drop taken there could not tell the pairs apart."""
    first = {"epochs": 1, "beta": 0.1, "preference_loss": "dpo", "drop_noisy": 0.1}
    second = {"epochs": 1, "beta": 0.5, "preference_loss": "cal_dpo", "drop_noisy": 0.25}
    common = dict(batch_size=4, learning_rate=0.1, steps_per_eval=1000)
    args = (tiny_model, pairs, sft_adapter)
    run = _dpo_run("peft", *args, tmp_path / "drop", stages=[first, second], **common)
    head = _dpo_run("peft", *args, tmp_path / "head", stages=[first], **common)
    train = {m["iteration"]: m["stage"] for m in _metrics(run.run_dir) if "train_loss" in m}
    assert train == {1: 0, 2: 0, 3: 1}  # then 6 pairs left: one batch of 4
    dropped = [json.loads(x) for x in (run.run_dir / "dropped.jsonl").read_text().splitlines()]
    assert [(d["stage"], d["iteration"]) for d in dropped] == [(1, 2), (1, 2)]

    from punie.train.preference import preference_loss

    policy = _pair_logps(tiny_model, pairs, head.adapter_path)
    ref = _pair_logps(tiny_model, pairs, sft_adapter)
    out = preference_loss("cal_dpo", policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta=0.5)
    direct = np.array(out.pair_losses)
    order = np.argsort(-direct, kind="stable")
    print(f"DROP direct={direct.round(5).tolist()} dropped={dropped}")
    assert direct[order[1]] - direct[order[2]] > 1e-3  # no near-tie at the cut
    assert [d["line"] for d in dropped] == [int(j) + 1 for j in order[:2]]
    # torch and MLX float32 differ by ~1e-5 on a summed log-prob (the parity test above); the
    # Cal-DPO terms square r, so ~1e-4 here (seen: 9e-5); a wrong weight or β is off by > 0.1
    assert [d["loss"] for d in dropped] == pytest.approx(direct[order[:2]].tolist(), abs=1e-3)
    assert min(d["loss"] for d in dropped) > math.log(2) + 2 + 1e-3


def test_trl_reward_logs_become_the_shared_preference_fields():
    from punie_peft.metrics import record_from_log

    train = record_from_log(
        {"loss": 0.6, "rewards/chosen": 0.2, "rewards/rejected": -0.1, "rewards/margins": 0.3,
         "rewards/accuracies": 0.75, "stage": 1},
        step=3, tokens=100, tokens_per_s=1.0, steps_per_s=1.0,
    )  # fmt: skip
    assert (train.reward_chosen, train.reward_rejected) == (0.2, -0.1)
    assert (train.reward_margin, train.reward_accuracy, train.stage) == (0.3, 0.75, 1)
    val = record_from_log(
        {"eval_loss": 0.5, "eval_rewards/margins": 0.4, "eval_rewards/accuracies": 1.0, "stage": 0},
        step=0, tokens=0, tokens_per_s=0.0, steps_per_s=0.0,
    )  # fmt: skip
    assert (val.val_loss, val.val_reward_margin, val.val_reward_accuracy) == (0.5, 0.4, 1.0)
    assert val.stage == 0 and val.reward_margin is None
