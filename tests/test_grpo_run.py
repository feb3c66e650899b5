"""A real GRPO run through `punie train --method grpo` on the tiny model, from the parrot adapter
(a full fine-tune that answers everything with read_file a.py), and `select_by` on it."""

from __future__ import annotations

import json

import pytest
import yaml

from cli_support import punie
from punie.train.runs import read_metrics

pytestmark = pytest.mark.slow

# The parrot was trained on prompts without tools, so the rewards read its call's path as a
# reasoning answer: the scorer is the reasoning kind's, and sampling makes the paths differ.
PATH_ANSWER = r'"path": "([^"]*)"'


def suite(name: str, paths: list[str]) -> dict:
    return {
        "name": name,
        "kind": "reasoning",
        "answer_pattern": PATH_ANSWER,
        "cases": [
            {"id": f"read-{i}", "prompt": f"Show me {p}", "expect": {"answer": p}}
            for i, p in enumerate(paths)
        ],
    }


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, tiny_model, parrot_adapter):
    root = tmp_path_factory.mktemp("grpo")
    (root / "prompts.yaml").write_text(yaml.safe_dump(suite("prompts", ["a.py", "b.py"])))
    (root / "heldout.yaml").write_text(yaml.safe_dump(suite("heldout", ["a.py", "c.md"])))
    config = {
        "model": str(tiny_model),
        "method": "grpo",
        "reward_suite": str(root / "prompts.yaml"),
        "select_by": str(root / "heldout.yaml"),
        "from_adapter": str(parrot_adapter),
        "fine_tune_type": "full",
        "num_layers": -1,
        "batch_size": 2,
        "group_size": 4,
        "temperature": 1.0,
        "max_completion_tokens": 32,
        "kl_beta": 0.1,
        "format_reward": 0.1,
        "updates_per_rollout": 2,
        "learning_rate": 1e-4,
        "iters": 3,
        "save_every": 2,
        "max_seq_length": 512,
        "seed": 3,
    }
    (root / "grpo.json").write_text(json.dumps(config))
    result = punie(
        "train", root / "grpo.json", "--runs-dir", root / "runs", "--name", "g", "--json",
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "runs" / "g", json.loads(result.stdout)


def test_every_completion_is_logged_with_its_reward_and_advantage(grpo_run):
    run_dir, _ = grpo_run
    rows = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 4  # iters × prompts × group
    assert {r["iteration"] for r in rows} == {1, 2, 3}
    assert {r["prompt_id"] for r in rows} == {"read-0", "read-1"}
    for step in range(3):
        for g in range(2):
            group = rows[step * 8 + g * 4 : step * 8 + g * 4 + 4]
            assert len({r["prompt_id"] for r in group}) == 1
            # advantages of a group are centred: they sum to zero
            assert sum(r["advantage"] for r in group) == pytest.approx(0, abs=1e-6)
    assert all(r["reward"] in (0.0, 0.1, 1.0, 1.1) for r in rows)


def test_grpo_metrics_are_reported_and_kl_is_zero_at_the_first_step(grpo_run):
    run_dir, _ = grpo_run
    train = [r for r in read_metrics(run_dir / "metrics.jsonl") if "train_loss" in r]
    assert [r["iteration"] for r in train] == [1, 2, 3]
    for r in train:
        for key in ("reward_mean", "reward_std", "format_reward_mean", "zero_variance_fraction",
                    "clip_fraction", "completion_length", "rollout_tokens_per_second",
                    "update_tokens_per_second"):  # fmt: skip
            assert key in r, key
        assert 0 <= r["zero_variance_fraction"] <= 1
        assert 0 < r["completion_length"] <= 32
    live = [r for r in train if r["zero_variance_fraction"] < 1]
    assert live, "every group of every step had equal rewards: nothing trained"
    assert train[0]["zero_variance_fraction"] < 1
    assert train[0]["kl"] == 0.0  # the policy starts as the reference


def test_select_by_scores_each_saved_checkpoint_and_keeps_the_best(grpo_run):
    run_dir, record = grpo_run
    scored = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval_score" in r]
    assert [r["iteration"] for r in scored] == [2, 3]  # save_every 2, then the final adapter
    top = max(scored, key=lambda r: (r["eval_score"], -r["iteration"]))
    assert record["best_iteration"] == top["iteration"]
    assert record["best_eval_score"] == top["eval_score"]
    assert (run_dir / "best" / "adapters.safetensors").is_file()
    assert not (run_dir / ".trainer").exists()  # the scored candidates are gone


def test_runs_show_gives_samples_of_the_first_and_last_steps(grpo_run):
    run_dir, _ = grpo_run
    shown = json.loads(punie("runs", "show", run_dir, "--json").stdout)
    assert shown["method"] == "grpo"
    assert shown["rollout_samples"]["first"]["iteration"] == 1
    assert shown["rollout_samples"]["last"]["iteration"] == 3
    assert shown["data"]["reward_suite"]["sha256"]


def test_a_bad_reward_suite_fails_in_one_line_before_any_run_folder(tmp_path, tiny_model):
    (tmp_path / "bad.yaml").write_text("name: x\nkind: tool_calling\ncases: []\n")
    result = punie(
        "train", "--model", tiny_model, "--method", "grpo", "--set",
        f"reward_suite={tmp_path / 'bad.yaml'}", "--runs-dir", tmp_path / "runs", "--name", "b",
    )  # fmt: skip
    assert result.returncode != 0
    assert "reward_suite:" in result.stderr and "cases: must be a non-empty list" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "b").exists()


def test_select_by_picks_the_best_checkpoint_of_an_sft_run_too(tmp_path, tiny_model):
    from train_support import TOOLS, write_data

    heldout = {
        "name": "heldout",
        "kind": "tool_calling",
        "tools": TOOLS,
        "cases": [
            {
                "id": f"read-{p}",
                "prompt": f"Show {p}",
                "expect": {"calls": [{"name": "read_file", "arguments": {"path": [p]}}]},
            }
            for p in ("a.py", "doc.md")
        ],
    }
    (tmp_path / "heldout.yaml").write_text(yaml.safe_dump(heldout))
    config = {
        "model": str(tiny_model),
        "data": str(write_data(tmp_path / "data", n_train=8, n_valid=4)),
        "select_by": str(tmp_path / "heldout.yaml"),
        "rank": 4,
        "scale": 5.0,
        "num_layers": -1,
        "batch_size": 2,
        "iters": 2,
        "save_every": 1,
        "steps_per_eval": 1000,
        "val_batches": 1,
        "mask_prompt": True,
        "max_seq_length": 256,
    }
    (tmp_path / "sft.json").write_text(json.dumps(config))
    result = punie(
        "train", tmp_path / "sft.json", "--runs-dir", tmp_path / "runs", "--name", "s", "--json",
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout)
    metrics = read_metrics(tmp_path / "runs" / "s" / "metrics.jsonl")
    scored = [r for r in metrics if "eval_score" in r]
    assert [r["iteration"] for r in scored] == [1, 2]
    top = max(scored, key=lambda r: (r["eval_score"], -r["iteration"]))  # the earliest on a tie
    assert (record["best_iteration"], record["best_eval_score"]) == (
        top["iteration"],
        top["eval_score"],
    )
    assert record["best_adapter"] == "best"
    assert any("val_loss" in r for r in metrics)  # validation still records its loss
