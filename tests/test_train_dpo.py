"""`punie train --method dpo` on MLX: the losses at the reference, stages, drops and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from punie.chat.preference import pair_tokens
from punie.chat.template import load_tokenizer
from punie.errors import ConfigError, DataError
from punie.train.config import TrainConfig
from punie.train.runs import read_metrics
from punie.train.stages import plan
from train_support import config_toml, preference_row, write_pairs

PUNIE = [sys.executable, "-m", "punie"]
BETA = 0.1
CLOSED_FORM = {"dpo": math.log(2), "dr_dpo": math.log(2),
               "cal_dpo": math.log(2) + 2 * (1 / (2 * BETA)) ** 2}  # fmt: skip
STAGES = (
    '[{epochs = 1, beta = 0.05}, {epochs = 3, preference_loss = "cal_dpo", drop_noisy = 0.25}, '
    '{epochs = 1, preference_loss = "dr_dpo", drop_noisy = 0.5}]'
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("dpo") / "pairs")


def dpo_toml(model, data, **overrides) -> str:
    values = {"method": "dpo", "iters": 4, "steps_per_eval": 2, "learning_rate": 1e-3,
              "beta": BETA, "save_every": 2, **overrides}  # fmt: skip
    return config_toml(model, data, **values)


def train(root, name, text, *extra):
    (root / f"{name}.toml").write_text(text)
    cmd = [*PUNIE, "train", str(root / f"{name}.toml"), "--runs-dir", str(root), "--name", name,
           *extra]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / name


def checkpoint_iteration(state) -> int:
    """The checkpoint's iteration (0 while there is none, or while it is being replaced)."""
    try:
        return json.loads(state.read_text())["iteration"]
    except (OSError, ValueError, KeyError):
        return 0


# --- without training ----------------------------------------------------------------------------
def test_answer_tokens_follow_the_prompt_rendered_with_the_generation_prompt(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    row = preference_row("a.py", 1)
    pair = pair_tokens(tokenizer, row)
    before = tokenizer.apply_chat_template(
        row["prompt"], tools=row["tools"], add_generation_prompt=True, return_dict=False
    )
    for seq in (pair.chosen, pair.rejected):
        assert seq.tokens[: seq.start] == list(before) and len(seq.tokens) > seq.start
    assert "<tool_call>" in tokenizer.decode(pair.chosen.tokens[pair.chosen.start :])
    assert "I cannot open a.py." in tokenizer.decode(pair.rejected.tokens[pair.rejected.start :])


def test_a_string_prompt_is_plain_text_with_the_answer_after_it(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    pair = pair_tokens(tokenizer, {"prompt": "2+2=", "chosen": "4", "rejected": "5"})
    assert pair.chosen.tokens[: pair.chosen.start] == tokenizer.encode(
        "2+2=", add_special_tokens=False
    )
    assert pair.chosen.tokens[-1] == tokenizer.eos_token_id
    with pytest.raises(DataError, match="rejected: with a string prompt"):
        pair_tokens(tokenizer, {"prompt": "2+2=", "chosen": "4", "rejected": [{"role": "x"}]})


def test_stages_plan_their_iterations_from_the_pairs_left_after_each_drop():
    config = TrainConfig(model="m", data="d", method="dpo", batch_size=2,
                         stages=({"epochs": 1}, {"epochs": 2, "drop_noisy": 0.25,
                                                 "preference_loss": "cal_dpo"}))  # fmt: skip
    first, second = plan(config, 16)
    assert (first.start, first.end, first.kept, first.preference_loss) == (0, 8, 16, "dpo")
    assert (second.start, second.end, second.kept, second.preference_loss) == (8, 20, 12, "cal_dpo")


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{"epochs": 1, "bogus": 1}], r"stages\[0\]\.bogus: unknown key"),
        ([{"beta": 0.1}], r"stages\[0\]\.epochs: required"),
        ([{"epochs": 1, "drop_noisy": 1.0}], r"stages\[0\]\.drop_noisy: must be in \[0, 1\)"),
        ([{"epochs": 1, "preference_loss": "ipo"}], r"stages\[0\]\.preference_loss: 'ipo'"),
    ],
)
def test_a_bad_stage_is_one_line_naming_it(stages, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({"model": "m", "data": "d", "method": "dpo", "stages": stages})


def test_sft_rows_for_method_dpo_are_refused_before_training_naming_the_line(tmp_path, tiny_model):
    from punie.train.launch import check
    from train_support import write_data

    data = write_data(tmp_path / "data", n_train=4, n_valid=2)
    config = TrainConfig(
        model=str(tiny_model), data=str(data), method="dpo", batch_size=2, num_layers=-1
    )
    with pytest.raises(ConfigError, match=r"train.jsonl:1: prompt: missing; method dpo trains"):
        check(config)
    with pytest.raises(ConfigError, match="stages: only method dpo has stages, not sft"):
        check(config.with_(method="sft", stages=({"epochs": 1},)))


# --- real runs -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss", "variant"), [("dpo", "lora"), ("cal_dpo", "dora"), ("dr_dpo", "qlora")]
)
def test_iteration_zero_validation_is_the_closed_form_at_the_reference(
    tmp_path, tiny_model, quantized_model, pairs, loss, variant
):
    model = quantized_model if variant == "qlora" else tiny_model
    ftt = "dora" if variant == "dora" else "lora"
    run_dir = train(tmp_path, "run", dpo_toml(model, pairs, preference_loss=loss,
                                              fine_tune_type=ftt))  # fmt: skip
    rows = read_metrics(run_dir / "metrics.jsonl")
    first = rows[0]
    assert first["iteration"] == 0
    assert first["val_loss"] == pytest.approx(CLOSED_FORM[loss], abs=1e-3)
    assert first["val_reward_margin"] == pytest.approx(0, abs=1e-4)
    train_rows = [r for r in rows if "train_loss" in r]
    assert {"reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy"} <= set(
        train_rows[-1]
    )
    record = json.loads((run_dir / "run.json").read_text())
    assert record["method"] == "dpo" and record["status"] == "completed"
    assert record["final_val_loss"] == rows[-1]["val_loss"]
    assert record["final_val_reward_accuracy"] == rows[-1]["val_reward_accuracy"]
    assert (run_dir / "reference.safetensors").is_file()
    from mlx_lm.utils import load

    load(str(model), adapter_path=str(run_dir))  # the adapter loads as mlx_lm's


@pytest.fixture(scope="module")
def staged(tmp_path_factory, tiny_model, parrot_adapter, pairs):
    """A staged run from the parrot adapter (a full fine-tune), uninterrupted."""
    root = tmp_path_factory.mktemp("staged")
    text = dpo_toml(tiny_model, pairs, fine_tune_type="full", learning_rate=1e-5,
                    from_adapter=str(parrot_adapter), save_every=1, steps_per_eval=4,
                    max_seq_length=128) + f"stages = {STAGES}\n"  # fmt: skip
    (root / "c.toml").write_text(text)
    return root, train(root, "ref", text)


@pytest.mark.slow
def test_stages_run_as_one_run_with_their_boundaries_and_drops_listed(staged):
    _, run_dir = staged
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "train_loss" in r]
    # 16 pairs: 8 steps; 12 left: 3 epochs of 6; 6 left: 3 steps.
    assert [r["iteration"] for r in train_rows] == list(range(1, 30))
    assert [r["stage"] for r in train_rows] == [0] * 8 + [1] * 18 + [2] * 3
    dropped = read_metrics(run_dir / "dropped.jsonl")
    assert [(r["stage"], r["iteration"]) for r in dropped] == [(1, 8)] * 4 + [(2, 26)] * 6
    assert len({r["line"] for r in dropped}) == 10  # a pair is dropped once
    first_of_stage = [r["loss"] for r in dropped if r["stage"] == 1]
    assert first_of_stage == sorted(first_of_stage, reverse=True)
    assert json.loads((run_dir / "run.json").read_text())["iters"] == 29


@pytest.mark.slow
def test_resume_mid_stage_takes_the_same_path_and_reuses_the_reference(staged):
    root, reference = staged
    run_dir = root / "int"
    cmd = [*PUNIE, "train", str(root / "c.toml"), "--runs-dir", str(root), "--name", "int"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    state = run_dir / "checkpoint" / "state.json"
    deadline = time.monotonic() + 120
    while checkpoint_iteration(state) < 10:
        assert proc.poll() is None and time.monotonic() < deadline, "no mid-stage checkpoint"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    stopped = json.loads(state.read_text())["iteration"]
    assert proc.returncode == 130 and stopped < 29
    made = (run_dir / "reference.safetensors").stat().st_mtime_ns
    result = subprocess.run([*PUNIE, "train", "--resume", str(run_dir)], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run_dir / "reference.safetensors").stat().st_mtime_ns == made
    got = [(r["iteration"], r["train_loss"]) for r in read_metrics(run_dir / "metrics.jsonl")
           if "train_loss" in r]  # fmt: skip
    want = [(r["iteration"], r["train_loss"]) for r in read_metrics(reference / "metrics.jsonl")
            if "train_loss" in r]  # fmt: skip
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4, abs=1e-6)
    assert read_metrics(run_dir / "dropped.jsonl") == read_metrics(reference / "dropped.jsonl")
