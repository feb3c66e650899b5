"""Real training runs on the tiny model through `punie train`, and what the run folder holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from punie.fsio import file_sha256
from punie.train.runs import read_metrics
from train_support import workspace

pytestmark = pytest.mark.slow
PUNIE = [sys.executable, "-m", "punie"]


def punie(*args, check=True):
    result = subprocess.run([*PUNIE, *args], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"punie {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model):
    return workspace(tmp_path_factory.mktemp("train"), tiny_model, "lora.toml")


@pytest.fixture(scope="module")
def lora_run(workdir):
    """32 LoRA iterations, every train loss reported, validation every 8."""
    punie(
        "train", str(workdir / "lora.toml"), "--runs-dir", str(workdir / "runs"), "--name", "lora"
    )
    return workdir / "runs" / "lora"


def train_losses(run_dir):
    return {r["iteration"]: r["train_loss"] for r in read_metrics(run_dir / "metrics.jsonl")
            if "train_loss" in r}  # fmt: skip


def val_losses(run_dir):
    return {r["iteration"]: r["val_loss"] for r in read_metrics(run_dir / "metrics.jsonl")
            if "val_loss" in r}  # fmt: skip


def test_lora_loss_falls_and_every_iteration_is_recorded(lora_run):
    losses = train_losses(lora_run)
    assert sorted(losses) == list(range(1, 33))
    first, last = sum(losses[i] for i in range(1, 5)), sum(losses[i] for i in range(29, 33))
    assert last < first / 2
    record = read_metrics(lora_run / "metrics.jsonl")[1]
    assert {"learning_rate", "tokens_per_second", "peak_memory"} <= set(record)


def test_run_record_has_data_hashes_versions_and_status(lora_run, workdir):
    record = json.loads((lora_run / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["data"]["train"]["sha256"] == file_sha256(workdir / "data" / "train.jsonl")
    assert record["data"]["train"]["rows"] == 48
    assert set(record["versions"]) >= {"mlx", "mlx-lm"}
    assert record["wall_s"] > 0 and record["peak_memory_gb"] > 0
    assert "git_commit" in record and record["last_iteration"] == 32
    assert json.loads((lora_run / "config.json").read_text())["iters"] == 32


def test_best_adapter_is_the_lowest_validation_loss(lora_run, tiny_model):
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import evaluate
    from mlx_lm.utils import load

    from punie.train.masking import iterate_batches, load_split, masked_loss

    vals = val_losses(lora_run)
    record = json.loads((lora_run / "run.json").read_text())
    best_iteration = min(vals, key=vals.get)
    assert record["best_iteration"] == best_iteration
    assert record["best_val_loss"] == vals[best_iteration]
    # The adapter kept in best/ really scores that loss on the validation set.
    model, tokenizer = load(str(tiny_model), adapter_path=str(lora_run / "best"))
    valid = CacheDataset(load_split(lora_run.parent.parent / "data", "valid", tokenizer, True))
    config = json.loads((lora_run / "config.json").read_text())
    loss = evaluate(
        model, valid, config["batch_size"], config["val_batches"], config["max_seq_length"],
        loss=masked_loss, iterate_batches=iterate_batches,
    )  # fmt: skip
    assert loss == pytest.approx(vals[best_iteration], rel=1e-4)


def test_final_adapter_loads_and_differs_from_the_base(lora_run, tiny_model):
    from mlx_lm import generate
    from mlx_lm.utils import load

    prompt = "<|im_start|>user\nShow a.py<|im_end|>\n<|im_start|>assistant\n"
    base_model, tokenizer = load(str(tiny_model))
    adapted_model, _ = load(str(tiny_model), adapter_path=str(lora_run))
    base = generate(base_model, tokenizer, prompt, max_tokens=24)
    adapted = generate(adapted_model, tokenizer, prompt, max_tokens=24)
    assert adapted.startswith("<tool_call>") and adapted != base


def test_runs_list_and_show_read_the_run_folder(lora_run):
    listed = json.loads(punie("runs", "list", "--runs-dir", str(lora_run.parent), "--json").stdout)
    assert [r["name"] for r in listed] == ["lora"]
    shown = json.loads(punie("runs", "show", str(lora_run), "--json").stdout)
    assert shown["status"] == "completed" and shown["best_iteration"] is not None
    table = punie("runs", "list", "--runs-dir", str(lora_run.parent)).stdout
    assert "lora" in table and "completed" in table


def test_from_adapter_starts_where_stage_one_ended(lora_run, workdir):
    runs = str(workdir / "runs")
    punie(
        "train", str(workdir / "lora.toml"), "--runs-dir", runs, "--name", "stage2",
        "--from-adapter", str(lora_run / "best"), "--iters", "8",
    )  # fmt: skip
    stage2 = workdir / "runs" / "stage2"
    # Same adapter, same validation batches: the first validation repeats stage one's best.
    stage1_best = json.loads((lora_run / "run.json").read_text())["best_val_loss"]
    assert val_losses(stage2)[0] == pytest.approx(stage1_best, rel=1e-4)
    lineage = json.loads((stage2 / "run.json").read_text())["lineage"]
    assert lineage[-1]["run"] == "lora"
    assert lineage[-1]["adapter_sha256"] == file_sha256(lora_run / "best" / "adapters.safetensors")


def test_patience_stops_a_run_whose_validation_stops_improving(workdir):
    punie(
        "train", str(workdir / "lora.toml"), "--runs-dir", str(workdir / "runs"), "--name", "es",
        "--learning-rate", "3.0", "--set", "patience=1", "--set", "steps_per_eval=2",
    )  # fmt: skip
    record = json.loads((workdir / "runs" / "es" / "run.json").read_text())
    assert record["status"] == "completed" and record["stopped_early"]
    assert record["last_iteration"] < 32


def test_fuse_passes_the_parity_check_and_writes_a_modelfile(lora_run, tmp_path):
    out = tmp_path / "fused"
    result = json.loads(punie("fuse", str(lora_run), "-o", str(out), "--json").stdout)
    assert result["parity"] and all(row["same"] for row in result["parity"])
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("# Ollama Modelfile") and "FROM ." in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert (out / "model.safetensors").is_file()


def test_fuse_gguf_of_a_qwen2_run_gives_transformers_the_same_greedy_tokens(
    lora_run, workdir, tmp_path
):
    """The GGUF, read back by transformers' GGUF loader on CPU torch (an independent reader),
    answers the run's parity prompts token for token as the fused model does in mlx_lm."""
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    from gguf_support import greedy_parity
    from punie.train.fuse import parity_prompts

    out = tmp_path / "g"
    result = json.loads(
        punie("fuse", str(lora_run), "-o", str(out), "--gguf", "f16", "--json").stdout
    )
    assert result["gguf"] == str(out / "model.gguf")
    assert "FROM ./model.gguf" in (out / "Modelfile").read_text()
    rows = greedy_parity(out, out / "model.gguf", parity_prompts(workdir / "data"))
    assert all(r["same_prompt_ids"] and r["same_tokens"] for r in rows), rows
    assert max(r["max_logit_diff"] for r in rows) < 0.05


def test_gguf_of_an_unknown_quant_is_refused_before_anything_runs(lora_run, tmp_path):
    result = punie("fuse", str(lora_run), "-o", str(tmp_path / "g"), "--gguf", "q4", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --gguf: 'q4' is not one of f16, q8_0"]
    assert not (tmp_path / "g").exists()
