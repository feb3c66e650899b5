"""DoRA, full fine-tuning and QLoRA (a quantized tiny model) train and load."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from punie.train.runs import read_metrics
from train_support import config_toml, write_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("variants") / "data", n_train=16, n_valid=4)


def train(tmp_path, model, data, **overrides):
    config = tmp_path / "c.toml"
    values = {"iters": 8, "steps_per_eval": 8, "steps_per_report": 4, **overrides}
    config.write_text(config_toml(model, data, **values))
    cmd = [sys.executable, "-m", "punie", "train", str(config), "--runs-dir", str(tmp_path),
           "--name", "run"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp_path / "run"


def assert_learned_and_loads(run_dir, model):
    from mlx_lm.utils import load

    rows = read_metrics(run_dir / "metrics.jsonl")
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert vals[-1] < vals[0]
    load(str(model), adapter_path=str(run_dir))  # raises if the adapter does not fit


@pytest.mark.parametrize("fine_tune_type", ["dora", "full"])
def test_dora_and_full_fine_tuning_train_and_load(tmp_path, tiny_model, data, fine_tune_type):
    run_dir = train(tmp_path, tiny_model, data, fine_tune_type=fine_tune_type,
                    learning_rate=2e-3 if fine_tune_type == "dora" else 5e-4)  # fmt: skip
    config = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == fine_tune_type
    assert_learned_and_loads(run_dir, tiny_model)


def test_qlora_trains_on_a_quantized_model(tmp_path, quantized_model, data):
    assert json.loads((quantized_model / "config.json").read_text())["quantization"]["bits"] == 4
    run_dir = train(tmp_path, quantized_model, data)
    assert_learned_and_loads(run_dir, quantized_model)


def test_full_fine_tuning_of_a_quantized_model_is_refused(tmp_path, quantized_model, data):
    config = tmp_path / "c.toml"
    config.write_text(config_toml(quantized_model, data, fine_tune_type="full"))
    cmd = [sys.executable, "-m", "punie", "train", str(config), "--runs-dir", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "full fine-tuning needs an unquantized model" in result.stderr
