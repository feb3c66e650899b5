"""The training config: file + overrides + validation, all before anything starts."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import fields

import pytest

from punie.errors import PunieError
from punie.train.backend import check_adapter_fits
from punie.train.config import TrainConfig, parse_override, resolve_config, to_toml
from punie.train.launch import resolve_iters

PUNIE = [sys.executable, "-m", "punie"]


def punie(*args, cwd=None):
    return subprocess.run([*PUNIE, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_flags_override_set_items_which_override_the_file(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('model = "m"\ndata = "d"\nrank = 4\niters = 10\nbatch_size = 2\n')
    config = resolve_config(path, {"iters": 30, "rank": None}, ["rank=16", "lr_schedule=cosine"])
    assert (config.rank, config.iters, config.batch_size) == (16, 30, 2)
    assert config.lr_schedule == "cosine"


def test_yaml_and_toml_files_give_the_same_config(tmp_path):
    (tmp_path / "a.toml").write_text(
        'model = "m"\ndata = "d"\ntarget_modules = ["self_attn.q_proj"]\n'
    )
    (tmp_path / "a.yaml").write_text("model: m\ndata: d\ntarget_modules: [self_attn.q_proj]\n")
    assert TrainConfig.load(tmp_path / "a.toml") == TrainConfig.load(tmp_path / "a.yaml")


def test_unknown_key_names_the_file_and_the_closest_key(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('model = "m"\ndata = "d"\nlearning_rat = 0.1\n')
    with pytest.raises(
        PunieError, match=r"train.toml: learning_rat: unknown key \(did you mean learning_rate\?\)"
    ):
        TrainConfig.load(path)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("rank=eight", "rank: expected an integer, got 'eight'"),
        ("fine_tune_type=qlora", "fine_tune_type: 'qlora' is not one of lora, dora, full"),
        ("lr_schedule=linear", "lr_schedule: 'linear' is not one of constant, cosine"),
        ("warmup_steps=50", r"warmup_steps: must be in \[0, iters=10\)"),
        ("dropout=1.5", r"dropout: must be in \[0, 1\)"),
        ("num_layers=0", "num_layers: must be -1"),
    ],
)
def test_invalid_values_are_one_line_errors(item, message):
    with pytest.raises(PunieError, match=message):
        resolve_config(None, {"model": "m", "data": "d", "iters": 10}, [item])


def test_set_values_are_read_as_toml_with_a_string_fallback():
    assert parse_override("learning_rate=1e-4") == ("learning_rate", 1e-4)
    assert parse_override("mask-prompt=true") == ("mask_prompt", True)
    assert parse_override("model=path/to/model") == ("model", "path/to/model")
    assert parse_override("patience=none") == ("patience", None)


def test_printed_config_reads_back_as_the_same_config():
    config = TrainConfig(model="m", data="d", target_modules=("mlp.up_proj",), patience=3)
    assert TrainConfig.from_dict(tomllib.loads(to_toml(config))) == config


def test_epochs_set_iters_from_the_number_of_full_batches(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "x"}\n' * 10)
    config = resolve_iters(TrainConfig(model="m", data=str(tmp_path), batch_size=4, epochs=2.5))
    assert config.iters == 5  # 10 rows // 4 = 2 batches per epoch, 2.5 epochs


def test_bad_config_exits_2_with_one_line_before_any_run_folder_exists(tmp_path):
    result = punie("train", "--model", "m", "--data", "d", "--set", "batch_size=0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: config: batch_size: must be at least 1, got 0"
    assert not (tmp_path / "adapters").exists()


def test_missing_data_folder_is_refused_before_training(tmp_path, tiny_model):
    result = punie("train", "--model", str(tiny_model), "--data", "nowhere", cwd=tmp_path)
    assert result.returncode == 2
    assert "data: nowhere: no such folder" in result.stderr
    assert not (tmp_path / "adapters").exists()


def test_print_config_shows_the_resolved_config(tmp_path):
    result = punie(
        "train", "--model", "m", "--data", "d", "--name", "x", "--rank", "4", "--print-config",
        cwd=tmp_path,
    )  # fmt: skip
    config = TrainConfig.from_dict(tomllib.loads(result.stdout))
    assert (config.rank, config.adapter_path) == (4, "adapters/x")


def test_staged_run_must_match_the_earlier_adapter_shape(tmp_path):
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"fine_tune_type": "lora", "num_layers": -1, "lora_parameters": {"rank": 8}})
    )
    config = TrainConfig(model="m", data="d", rank=4, num_layers=-1, from_adapter=str(tmp_path))
    with pytest.raises(PunieError, match="was trained with rank=8, this run has rank=4"):
        check_adapter_fits(config)


def test_the_docs_table_of_config_keys_is_generated_from_the_fields():
    from pathlib import Path

    from punie.train.config import docs_table, replace_docs_table

    docs = Path(__file__).parents[1] / "docs" / "training.md"
    text = docs.read_text(encoding="utf-8")
    assert replace_docs_table(text) == text, (
        "docs/training.md's config table is stale: "
        "python -m punie.train.config --docs-table docs/training.md"
    )
    keys = [f.name for f in fields(TrainConfig)]
    assert all(f"| `{key}` |" in docs_table() for key in keys)


def test_train_options_help_is_the_fields_help():
    from punie.train.config import field_help

    result = punie("train", "--help")
    flat = " ".join(result.stdout.replace("│", " ").split())
    assert " ".join(field_help("batch_size").split()) in flat  # "rows per step"
    assert "LoRA rank" in flat and field_help("rank") == "LoRA rank"
