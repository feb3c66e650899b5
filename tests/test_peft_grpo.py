"""GRPO on the peft backend: TRL's GRPOTrainer with rewards from the Punie scorers.

The reward and mapping tests need no torch; the real run (slow) is `punie train --backend peft
--method grpo` on the tiny model from the parrot adapter, as tests/test_grpo_run.py runs MLX.
"""

from __future__ import annotations

import json

import pytest
import yaml

from cli_support import one_line_error, punie
from punie.eval.suite import Suite
from punie.rl.reward import reward
from punie.train.config import TrainConfig
from punie.train.records import MetricsRecord
from punie.train.runs import read_metrics
from punie_peft.grpo import ScorerRewards
from punie_peft.mapping import grpo_kwargs

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
]
SUITE = Suite.from_dict(
    {
        "name": "t",
        "kind": "tool_calling",
        "tools": TOOLS,
        "cases": [
            {
                "id": "read-a",
                "prompt": "Open a.py",
                "expect": {"calls": [{"name": "read_file", "arguments": {"path": ["a.py"]}}]},
            },
            {"id": "hello", "prompt": "Hello", "expect": {"calls": []}},
        ],
    }
)


def call(path: str) -> str:
    return f'<tool_call>{{"name": "read_file", "arguments": {{"path": "{path}"}}}}</tool_call>'


COMPLETIONS = [call("a.py"), call("b.py"), "no call", '<tool_call>{"name": </tool_call>', "Hi!"]
CASE_IDS = ["read-a", "read-a", "read-a", "read-a", "hello"]


def test_reward_functions_return_the_scorer_verdicts_task_and_format_apart():
    rewards = ScorerRewards(SUITE, mode="pass", format_weight=0.1)
    task = rewards.task_reward(["p"] * 5, COMPLETIONS, case_id=CASE_IDS, trainer_state=None)
    fmt = rewards.format_reward(["p"] * 5, COMPLETIONS, case_id=CASE_IDS)
    assert task == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert fmt == [0.1, 0.1, 0.0, 0.0, 0.1]  # a well-formed call pays, whatever its value
    cases = {c.id: c for c in SUITE.cases}
    expected = [
        reward(SUITE, cases[cid], text, mode="pass", format_weight=0.1)
        for cid, text in zip(CASE_IDS, COMPLETIONS, strict=True)
    ]
    assert rewards.last == expected  # the very scorer `punie eval` uses, label included
    assert [r.label for r in rewards.last][:3] == [None, expected[1].label, expected[2].label]
    assert expected[1].label is not None
    # TRL names each reward function's metrics after it: the two terms are logged apart
    assert [f.__name__ for f in rewards.functions()] == ["task_reward", "format_reward"]
    assert len(ScorerRewards(SUITE, mode="pass", format_weight=0).functions()) == 1


def test_partial_reward_and_conversational_completions_score_the_same_text():
    rewards = ScorerRewards(SUITE, mode="partial", format_weight=0)
    two = call("a.py") + call("a.py")  # one of two made calls matches: half credit
    as_messages = [[{"role": "assistant", "content": two}]]
    assert rewards.task_reward(["p"], [two], case_id=["read-a"]) == [0.5]
    assert rewards.task_reward(["p"], as_messages, case_id=["read-a"]) == [0.5]


def test_grpo_keys_map_to_trl_with_batches_of_completions_and_steps_of_updates():
    config = TrainConfig(
        model="m", data="", method="grpo", reward_suite="s.yaml", iters=5, batch_size=2,
        group_size=4, updates_per_rollout=2, kl_beta=0.0, clip_epsilon=0.3, temperature=0.7,
        max_completion_tokens=64, steps_per_report=1,
    )  # fmt: skip
    kw = grpo_kwargs(config)
    assert kw["per_device_train_batch_size"] == 8 and kw["num_generations"] == 4
    assert (kw["max_steps"], kw["num_iterations"], kw["logging_steps"]) == (10, 2, 2)
    assert (kw["beta"], kw["epsilon"], kw["temperature"]) == (0.0, 0.3, 0.7)
    assert kw["max_completion_length"] == 64
    assert (kw["loss_type"], kw["scale_rewards"]) == ("dapo", "group")
    dr = grpo_kwargs(config.with_(advantage="dr_grpo"))
    assert (dr["loss_type"], dr["scale_rewards"]) == ("dr_grpo", "none")


def _suite(name: str, paths: list[str]) -> dict:
    # As tests/test_grpo_run.py: the parrot's read_file path read as a reasoning answer.
    return {
        "name": name,
        "kind": "reasoning",
        "answer_pattern": r'"path": "([^"]*)"',
        "cases": [
            {"id": f"read-{i}", "prompt": f"Show me {p}", "expect": {"answer": p}}
            for i, p in enumerate(paths)
        ],
    }


def _grpo_config(tmp_path, tiny_model, parrot_adapter, **changes) -> dict:
    (tmp_path / "prompts.yaml").write_text(yaml.safe_dump(_suite("prompts", ["a.py", "b.py"])))
    return {
        "model": str(tiny_model),
        "backend": "peft",
        "method": "grpo",
        "reward_suite": str(tmp_path / "prompts.yaml"),
        "from_adapter": str(parrot_adapter),
        "fine_tune_type": "full",
        "num_layers": -1,
        "batch_size": 2,
        "group_size": 4,
        "temperature": 1.5,  # the parrot is sure of itself: at 1.0 every group agrees
        "max_completion_tokens": 24,
        "kl_beta": 0.1,
        "format_reward": 0.1,
        "learning_rate": 1e-4,
        "iters": 2,
        "steps_per_report": 1,
        "max_seq_length": 512,
        "seed": 3,
        "extra": {"device": "cpu"},
        **changes,
    }


def _full_adapter(folder):
    """An adapter folder as far as the checks before training read it."""
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"fine_tune_type": "full"}))
    return folder


def test_peft_refuses_select_by_in_one_line(tmp_path, tiny_model):
    config = _grpo_config(tmp_path, tiny_model, _full_adapter(tmp_path / "start"))
    config["select_by"] = config["reward_suite"]  # a real suite: refused for the backend
    (tmp_path / "g.json").write_text(json.dumps(config))
    result = punie("train", tmp_path / "g.json", "--runs-dir", tmp_path / "runs", "--name", "g")
    assert result.returncode != 0
    assert "select_by: backend peft" in one_line_error(result)
    assert not (tmp_path / "runs" / "g").exists()


def test_peft_refuses_a_from_adapter_of_another_type_in_one_line(tmp_path, tiny_model):
    start = _full_adapter(tmp_path / "start")
    config = _grpo_config(tmp_path, tiny_model, start, fine_tune_type="lora")
    (tmp_path / "g.json").write_text(json.dumps(config))
    result = punie("train", tmp_path / "g.json", "--runs-dir", tmp_path / "runs", "--name", "g")
    assert result.returncode != 0
    assert "is a full adapter but fine_tune_type is 'lora'" in one_line_error(result)
    assert not (tmp_path / "runs" / "g").exists()


@pytest.mark.slow
def test_peft_grpo_run_from_the_sft_adapter_writes_reward_metrics_and_rollouts(
    tmp_path, tiny_model, parrot_adapter
):
    pytest.importorskip("trl")
    (tmp_path / "g.json").write_text(json.dumps(_grpo_config(tmp_path, tiny_model, parrot_adapter)))
    result = punie(
        "train", tmp_path / "g.json", "--backend", "peft", "--method", "grpo",
        "--runs-dir", tmp_path / "runs", "--name", "g", "--json", timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout)
    run_dir = tmp_path / "runs" / "g"
    run = json.loads((run_dir / "run.json").read_text())
    assert (run["status"], run["backend"], run["method"]) == ("completed", "peft", "grpo")
    assert record["status"] == "completed"

    train = [r for r in read_metrics(run_dir / "metrics.jsonl") if "train_loss" in r]
    assert [r["iteration"] for r in train] == [1, 2]
    for r in train:
        assert MetricsRecord.from_dict(r).to_dict() == r  # the shared contract, typed
        for key in ("reward_mean", "reward_std", "format_reward_mean", "zero_variance_fraction",
                    "kl", "clip_fraction", "completion_length", "rollout_time",
                    "rollout_tokens_per_second"):  # fmt: skip
            assert key in r, key
        assert 0 <= r["zero_variance_fraction"] <= 1
        assert 0 < r["completion_length"] <= 24
        assert 0 <= r["format_reward_mean"] <= r["reward_mean"] <= 1.1
    assert train[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert train[0]["zero_variance_fraction"] < 1  # some group had a spread: it trained
    assert train[1]["kl"] > 0  # and moved the policy away from the reference

    rows = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 4  # iterations × prompts × group
    assert {r["iteration"] for r in rows} == {1, 2}
    assert {r["prompt_id"] for r in rows} <= {"read-0", "read-1"}
    for g in range(0, len(rows), 4):
        group = rows[g : g + 4]
        assert len({r["prompt_id"] for r in group}) == 1
        assert sum(r["advantage"] for r in group) == pytest.approx(0, abs=1e-5)
    assert all(r["reward"] in (0.0, 0.1, 1.0, 1.1) for r in rows)
    mean_1 = sum(r["reward"] for r in rows if r["iteration"] == 1) / 8
    assert train[0]["reward_mean"] == pytest.approx(mean_1, abs=1e-6)  # the same rewards
    assert (run_dir / "model" / "model.safetensors").is_file()  # full fine-tune: the model
