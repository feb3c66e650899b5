"""The peft plugin from the core's side: no torch in the core, discovery, pure mappings.

None of these need torch: they run on a Mac without the `cuda` extra too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from punie.errors import PunieError
from punie.train.config import TrainConfig
from punie_peft import mapping
from punie_peft.convert import mlx_to_peft, peft_to_mlx
from punie_peft.launcher import Launch, accelerate_command


def _config(**changes) -> TrainConfig:
    return TrainConfig(model="m", data="d", **changes)


def test_core_cli_and_modules_never_import_torch():
    code = (
        "import sys\n"
        "import punie.cli, punie.train.launch, punie.train.config, punie.backends.listing\n"
        "import punie_peft.backend, punie_peft.mapping, punie_peft.convert\n"
        "from punie.backends.listing import describe_backends\n"
        "describe_backends()\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_backends_command_lists_peft_with_what_it_supports():
    out = subprocess.run(
        [sys.executable, "-m", "punie", "backends", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["peft"]["methods"] == ["sft", "dpo", "grpo"]
    assert rows["peft"]["multi_process"] is True
    assert set(rows["peft"]["fine_tune_types"]) == {"lora", "dora", "full"}
    assert "mlx" in rows


def test_lora_alpha_is_scale_times_rank_so_both_backends_apply_the_same_update():
    kwargs = mapping.lora_config_kwargs(_config(rank=8, scale=20.0, num_layers=2), 4)
    assert kwargs["lora_alpha"] / kwargs["r"] == 20.0
    assert mapping.lora_scale(kwargs["lora_alpha"], kwargs["r"]) == 20.0


def test_lora_targets_the_last_num_layers_blocks_like_mlx():
    assert mapping.lora_config_kwargs(_config(num_layers=2), 4)["layers_to_transform"] == [2, 3]
    assert mapping.lora_config_kwargs(_config(num_layers=-1), 4)["layers_to_transform"] == [
        0, 1, 2, 3,
    ]  # fmt: skip


def test_lora_targets_named_modules_or_every_linear_projection():
    default = mapping.lora_config_kwargs(_config(), 4)["target_modules"]
    assert default == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    named = _config(target_modules=("self_attn.q_proj", "self_attn.v_proj"))
    assert mapping.lora_config_kwargs(named, 4)["target_modules"] == ["q_proj", "v_proj"]


def test_dora_sets_use_dora():
    assert mapping.lora_config_kwargs(_config(fine_tune_type="dora"), 4)["use_dora"] is True


def test_cosine_schedule_with_warmup_maps_to_the_trainer_schedule(tmp_path):
    cfg = _config(lr_schedule="cosine", warmup_steps=5, iters=50, grad_accumulation_steps=4)
    kwargs = mapping.trainer_kwargs(cfg, tmp_path, use_cpu=True, has_valid=True)
    assert kwargs["lr_scheduler_type"] == "cosine"
    assert kwargs["warmup_steps"] == 5
    assert kwargs["max_steps"] == 50
    assert kwargs["gradient_accumulation_steps"] == 4


def test_dpo_beta_comes_from_the_config_extra():
    assert mapping.dpo_kwargs(_config(method="dpo", extra={"beta": 0.3})) == {"beta": 0.3}


def test_dpo_beta_is_the_flat_key_shared_with_mlx():
    assert mapping.dpo_kwargs(_config(method="dpo", beta=0.25)) == {"beta": 0.25}


def test_unknown_method_is_refused_in_one_line():
    with pytest.raises(PunieError, match="method: 'ppo' is not one of sft, dpo"):
        mapping.method(_config(method="ppo"))


def test_accelerate_command_runs_the_worker_in_n_processes(tmp_path):
    argv = accelerate_command(Launch(num_processes=4), tmp_path)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert argv[argv.index("--num_processes") + 1] == "4"
    assert argv[-3:] == ["-m", "punie_peft.worker", str(tmp_path)]


def test_two_node_accelerate_command_names_the_main_machine(tmp_path):
    plan = Launch(num_processes=16, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1")
    argv = accelerate_command(plan, tmp_path)
    assert argv[argv.index("--machine_rank") + 1] == "1"
    assert argv[argv.index("--main_process_ip") + 1] == "10.0.0.1"
    with pytest.raises(PunieError, match="main_process_ip"):
        accelerate_command(Launch(num_processes=16, num_machines=2), tmp_path)


def test_accelerate_config_file_replaces_the_ddp_flag(tmp_path):
    argv = accelerate_command(Launch(num_processes=8, config_file="fsdp.yaml"), tmp_path)
    assert argv[argv.index("--config_file") + 1] == "fsdp.yaml"
    assert "--multi_gpu" not in argv


def test_mlx_adapter_converts_to_peft_layout_and_back_exactly():
    rng = np.random.default_rng(0)
    mlx = {
        "model.layers.3.self_attn.q_proj.lora_a": rng.normal(size=(128, 8)).astype(np.float32),
        "model.layers.3.self_attn.q_proj.lora_b": rng.normal(size=(8, 64)).astype(np.float32),
    }
    config = {"fine_tune_type": "lora", "num_layers": 1,
              "lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0}}  # fmt: skip
    peft, peft_config = mlx_to_peft(mlx, config)
    a = peft["base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"]
    b = peft["base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight"]
    assert a.shape == (8, 128) and b.shape == (64, 8)
    assert peft_config["lora_alpha"] == 160.0
    assert peft_config["layers_to_transform"] == [3]
    back, back_config = peft_to_mlx(peft, peft_config, num_hidden_layers=4)
    assert back_config["num_layers"] == 1
    assert back_config["lora_parameters"]["scale"] == 20.0
    assert back_config["lora_parameters"]["keys"] == ["self_attn.q_proj"]
    for key, value in mlx.items():
        np.testing.assert_array_equal(back[key], value)


def test_dora_adapter_conversion_is_refused_in_one_line():
    with pytest.raises(PunieError, match="only LoRA adapters convert"):
        mlx_to_peft({}, {"fine_tune_type": "dora", "lora_parameters": {"rank": 8, "scale": 1}})


def test_device_auto_is_cuda_where_visible_else_cpu_and_mps_only_on_request():
    assert mapping.pick_device("auto", cuda=True, mps=False) == "cuda"
    assert mapping.pick_device("auto", cuda=False, mps=True) == "cpu"
    assert mapping.pick_device("mps", cuda=False, mps=True) == "mps"
    assert mapping.pick_device("cpu", cuda=True, mps=False) == "cpu"


def test_a_device_torch_cannot_see_is_refused_in_one_line():
    with pytest.raises(PunieError, match="'mps' asked for") as e:
        mapping.pick_device("mps", cuda=False, mps=False)
    assert "\n" not in str(e.value)
    with pytest.raises(PunieError, match="no CUDA GPU"):
        mapping.pick_device("cuda", cuda=False, mps=True)


def test_an_unknown_device_is_refused_by_check_before_torch_loads():
    assert mapping.device_request(_config()) == "auto"
    assert mapping.device_request(_config(extra={"device": "MPS"})) == "mps"
    with pytest.raises(PunieError, match="device: 'tpu' is not one of auto, cpu, cuda, mps"):
        mapping.device_request(_config(extra={"device": "tpu"}))


def test_backend_options_are_typed_and_an_unknown_key_is_one_line():
    from punie_peft.backend import PeftBackend

    options = PeftBackend().options(_config(extra={"launcher": "accelerate", "dpo_beta": 0.2}))
    assert (options.launcher, options.beta, options.num_processes) == ("accelerate", 0.2, 1)
    with pytest.raises(PunieError) as e:
        PeftBackend().check(_config(extra={"lanucher": "accelerate"}))
    message = str(e.value)
    assert message.startswith("extra.lanucher: not an option of backend peft (its options: ")
    assert "launcher" in message and "num_processes" in message and "\n" not in message


def test_max_grad_norm_key_sets_the_trainers_clipping_and_the_old_extra_still_works():
    assert mapping.grad_norm_limit(_config()) == 0.0
    assert mapping.grad_norm_limit(_config(max_grad_norm=0.5)) == 0.5
    assert mapping.grad_norm_limit(_config(extra={"max_grad_norm": 2.0})) == 2.0


def test_trainer_logs_map_grad_norm_and_token_accuracy_into_the_shared_records():
    from punie_peft.metrics import record_from_log

    logs = {"loss": 1.5, "learning_rate": 1e-4, "grad_norm": 0.8, "mean_token_accuracy": 0.25}
    train = record_from_log(logs, 10, 100, 50.0, 2.0)
    assert (train.grad_norm, train.token_accuracy) == (0.8, 0.25)
    val = record_from_log({"eval_loss": 1.2, "eval_mean_token_accuracy": 0.5}, 10, 100, 0, 0)
    assert val.val_token_accuracy == 0.5 and val.val_loss == 1.2
