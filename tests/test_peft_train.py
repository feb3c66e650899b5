"""The peft backend on the tiny model, on CPU: SFT, DPO, merge, MLX <-> PEFT, accelerate.

Real runs, a few iterations each; MLX always runs in a child process (punie.proc), never in the
process that holds torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("trl")

from punie.data.sample import splits  # noqa: E402
from punie.errors import PunieError  # noqa: E402
from punie.fsio import write_jsonl  # noqa: E402
from punie.proc import child_env, python_module  # noqa: E402
from punie.train.callbacks import TrainingCallback  # noqa: E402
from punie.train.config import TrainConfig  # noqa: E402
from punie.train.launch import start  # noqa: E402
from punie.train.records import (  # noqa: E402
    METRICS_SCHEMA_VERSION,
    RUN_SCHEMA_VERSION,
    TRAIN_FIELDS,
    VALIDATION_FIELDS,
    MetricsRecord,
)
from punie.train.rundir import RunDir  # noqa: E402
from punie_peft.backend import PeftBackend  # noqa: E402

pytestmark = pytest.mark.slow

PROMPT = (
    "<|im_start|>system\nYou are Punie, a coding agent.<|im_end|>\n"
    "<|im_start|>user\nShow me src/main.py<|im_end|>\n<|im_start|>assistant\n"
)
MLX_GREEDY = Path(__file__).with_name("mlx_greedy.py")


@pytest.fixture(scope="module")
def sample_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    for name, rows in splits(n_train=48, n_valid=8, n_test=0, seed=0).items():
        if rows:
            write_jsonl(folder / f"{name}.jsonl", rows)
    return folder


def _config(tiny_model, data, run_dir, **changes) -> TrainConfig:
    base = dict(
        model=str(tiny_model), data=str(data), adapter_path=str(run_dir), backend="peft",
        iters=16, batch_size=4, learning_rate=3e-3, num_layers=2, rank=4, scale=10.0,
        steps_per_report=4, steps_per_eval=16, val_batches=1, max_seq_length=256,
        mask_prompt=True,
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def lora_run(tiny_model, sample_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "lora"
    return start(_config(tiny_model, sample_data, run_dir))


def transformers_greedy(model_dir: Path, n: int = 12, peft_dir: Path | None = None) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if peft_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, peft_dir)
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    out: list[int] = []
    with torch.no_grad():  # the same loop as tests/mlx_greedy.py: no stop at EOS
        for _ in range(n):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
    return out


def mlx_greedy(*specs: tuple[Path, Path | None], n: int = 12) -> list[list[int]]:
    """Greedy ids for each (model, adapter) pair, from one mlx_lm child process."""
    args = [f"{model}:{adapter}" if adapter else str(model) for model, adapter in specs]
    cmd = [sys.executable, str(MLX_GREEDY), PROMPT, str(n), *args]
    out = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def merged(lora_run, tmp_path_factory):
    return PeftBackend().fuse(lora_run.run_dir, tmp_path_factory.mktemp("merged") / "model").out


@pytest.fixture(scope="module")
def mlx_outputs(lora_run, merged, tiny_model):
    """MLX's greedy ids for the run folder's adapter and for the merged model."""
    adapter, merged_ids = mlx_greedy((tiny_model, lora_run.run_dir), (merged, None))
    return {"adapter": adapter, "merged": merged_ids}


def _metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train_loss" in r], [r for r in rows if "val_loss" in r]


def test_lora_sft_run_loss_falls_and_metrics_follow_the_shared_schema(lora_run):
    assert lora_run.record["status"] == "completed"
    train, val = _metrics(lora_run.run_dir)
    assert set(train[0]) == {"iteration", "schema_version", *TRAIN_FIELDS}
    assert set(val[0]) == {"iteration", "schema_version", *VALIDATION_FIELDS}
    assert train[-1]["trained_tokens"] > train[0]["trained_tokens"] > 0  # cumulative
    assert train[-1]["iteration"] == 16
    assert train[-1]["train_loss"] < 0.7 * train[0]["train_loss"]
    assert lora_run.record["final_train_loss"] == train[-1]["train_loss"]


def test_both_backends_write_metrics_with_the_same_fields(
    lora_run, tiny_model, sample_data, tmp_path
):
    mlx = start(_config(tiny_model, sample_data, tmp_path / "mlx", backend="mlx", iters=4,
                        steps_per_report=2, steps_per_eval=4))  # fmt: skip
    assert mlx.record["status"] == "completed"
    peft_train, peft_val = _metrics(lora_run.run_dir)
    mlx_train, mlx_val = _metrics(mlx.run_dir)
    assert set(mlx_train[0]) == set(peft_train[0]) and set(mlx_val[0]) == set(peft_val[0])
    for row in (*mlx_train, *mlx_val, *peft_train, *peft_val):
        assert MetricsRecord.from_dict(row).to_dict() == row  # each line is one typed record
        assert row["schema_version"] == METRICS_SCHEMA_VERSION
    for run in (mlx, lora_run):
        assert run.run.schema_version == RUN_SCHEMA_VERSION
        assert set(run.record) == set(mlx.record)  # one run record for every backend


def test_lora_run_folder_holds_an_mlx_adapter_that_generates_as_peft_does(
    lora_run, tiny_model, mlx_outputs
):
    run_dir = lora_run.run_dir
    assert json.loads((run_dir / "adapter_config.json").read_text())["num_layers"] == 2
    peft_ids = transformers_greedy(tiny_model, peft_dir=run_dir / "peft")
    assert peft_ids != transformers_greedy(tiny_model)  # the adapter changed something
    assert mlx_outputs["adapter"] == peft_ids


def test_merged_model_loads_and_generates_in_transformers_and_mlx(
    lora_run, tiny_model, merged, mlx_outputs
):
    assert (merged / "model.safetensors").is_file()
    ids = transformers_greedy(merged)
    assert ids == transformers_greedy(tiny_model, peft_dir=lora_run.run_dir / "peft")
    assert mlx_outputs["merged"] == ids


def test_mlx_trained_adapter_converted_to_peft_generates_as_in_mlx(
    tiny_model, sample_data, tmp_path
):
    from punie.proc import child_process
    from punie_peft.convert import convert_mlx_to_peft

    adapter = tmp_path / "mlx-adapter"
    cmd = python_module(
        "mlx_lm", "lora", "--train", "--model", str(tiny_model), "--data", str(sample_data),
        "--adapter-path", str(adapter), "--iters", "6", "--batch-size", "2",
        "--num-layers", "2", "--learning-rate", "1e-2", "--steps-per-eval", "100",
        "--val-batches", "1", "--max-seq-length", "256",
    )  # fmt: skip
    with child_process(cmd, log=tmp_path / "mlx.log") as proc:
        assert proc.wait(timeout=300) == 0, (tmp_path / "mlx.log").read_text()[-2000:]
    peft_dir = convert_mlx_to_peft(adapter, tmp_path / "peft", str(tiny_model))
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert config["lora_alpha"] == 20.0 * 8  # mlx_lm's default scale and rank
    from safetensors.numpy import load_file

    assert any(
        abs(w).max() > 0
        for k, w in load_file(adapter / "adapters.safetensors").items()
        if k.endswith("lora_b")
    )  # trained: a zero lora_b would make any match trivial
    [mlx_ids] = mlx_greedy((tiny_model, adapter))
    assert transformers_greedy(tiny_model, peft_dir=peft_dir) == mlx_ids


def _call(name: str, args: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


def _preferences(folder: Path) -> Path:
    """Chosen: the right tool call; rejected: the same call to the wrong tool."""
    rows = []
    for row in splits(n_train=24, n_valid=0, n_test=0, seed=1)["train"]:
        turn = row["messages"][-1]
        if not turn.get("tool_calls"):
            continue
        call = turn["tool_calls"][0]["function"]
        wrong = "list_dir" if call["name"] != "list_dir" else "read_file"
        args = json.dumps(call["arguments"])
        rows.append({
            "prompt": [m for m in row["messages"][:-1]],
            "chosen": [{"role": "assistant", "content": _call(call["name"], args)}],
            "rejected": [{"role": "assistant", "content": _call(wrong, args)}],
        })  # fmt: skip
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", rows)
    return folder


def test_dpo_run_on_preference_rows_lowers_the_preference_loss(tiny_model, tmp_path):
    data = _preferences(tmp_path / "prefs")
    config = _config(
        tiny_model, data, tmp_path / "dpo", method="dpo", iters=8, batch_size=4,
        steps_per_report=2, learning_rate=5e-3, extra={"beta": 0.5},
    )  # fmt: skip
    result = start(config)
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if "train_loss" in r]
    assert abs(losses[0] - 0.6931) < 0.05  # policy == reference at the start: -log(1/2)
    assert losses[-1] < losses[0]
    assert (result.run_dir / "peft" / "adapter_model.safetensors").is_file()


def test_qlora_without_cuda_is_a_one_line_error_before_training(tiny_model, sample_data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the error on a machine without CUDA")
    config = _config(tiny_model, sample_data, tmp_path / "q", extra={"quantize": 4})
    with pytest.raises(PunieError, match="QLoRA needs a CUDA GPU"):
        PeftBackend().train(config, RunDir(tmp_path / "q"), TrainingCallback())
    assert not (tmp_path / "q" / "metrics.jsonl").exists()


def test_mps_without_an_apple_gpu_is_a_one_line_error_before_training(
    tiny_model, sample_data, tmp_path
):
    import torch

    if torch.backends.mps.is_available():
        pytest.skip("checks the error on a machine without MPS")
    config = _config(tiny_model, sample_data, tmp_path / "m", extra={"device": "mps"})
    with pytest.raises(PunieError, match=r"device: 'mps' asked for, but torch.backends.mps") as e:
        PeftBackend().train(config, RunDir(tmp_path / "m"), TrainingCallback())
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m" / "metrics.jsonl").exists()


def test_accelerate_launch_with_two_cpu_processes_completes_a_short_run(
    tiny_model, sample_data, tmp_path
):
    extra = {"launcher": "accelerate", "num_processes": 2, "cpu": True,
             "main_process_port": 29617}  # fmt: skip
    config = _config(
        tiny_model, sample_data, tmp_path / "ddp", iters=2, steps_per_report=1,
        steps_per_eval=100, extra=extra,
    )  # fmt: skip

    class Reports(TrainingCallback):
        def __init__(self):
            self.train, self.stages = [], []

        def on_train_report(self, record):
            self.train.append(record.iteration)

        def on_stage_end(self, stage, iteration, status):
            self.stages.append((stage, status))

    seen = Reports()
    result = start(config, events=seen)
    record = json.loads((result.run_dir / "backend.json").read_text())
    assert record["num_processes"] == 2
    assert seen.train == [1, 2]
    assert seen.stages == [("sft", "completed")]
    assert (result.run_dir / "adapters.safetensors").is_file()


def punie_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "punie", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_punie_fuse_on_a_peft_run_merges_with_peft_not_mlx(lora_run, merged, tmp_path):
    """`punie fuse` dispatches to the backend that trained the run (it always ran mlx_lm fuse)."""
    from punie.fsio import file_sha256

    out = tmp_path / "fused"
    result = punie_cli("fuse", str(lora_run.run_dir), "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    fused = json.loads(result.stdout)
    assert fused["adapter"] == str(lora_run.run_dir / "peft")
    assert file_sha256(out / "model.safetensors") == file_sha256(merged / "model.safetensors")
    assert not (out / "Modelfile").exists()  # mlx_lm's fuser writes one; PEFT's merge does not


def test_punie_fuse_refuses_gguf_for_a_peft_run_in_one_line(lora_run, tmp_path):
    out = tmp_path / "fused"
    result = punie_cli("fuse", str(lora_run.run_dir), "-o", str(out), "--gguf", "f16")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --gguf: not supported by backend peft (fuse without it)"
    ]
    assert not out.exists()
