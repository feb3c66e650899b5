"""`punie train --hosts`: MLX data-parallel training under `mlx.launch` (ring backend), here with
two processes on 127.0.0.1. mlx_lm's trainer averages the gradients over the ranks; rank 0 alone
writes the run folder."""

from __future__ import annotations

import pytest

from cli_support import one_line_error, punie
from punie.fsio import write_jsonl
from punie.train.runs import read_metrics
from train_support import config_toml, single_turn_row, write_data

pytestmark = pytest.mark.slow


def train(tmp_path, name, *args):
    result = punie(
        "train", tmp_path / "c.toml", "--runs-dir", tmp_path / "runs", "--name", name, *args,
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp_path / "runs" / name


def test_a_batch_that_does_not_split_over_the_hosts_is_refused(tiny_model, tmp_path):
    data = write_data(tmp_path / "data", n_train=16, n_valid=4)
    (tmp_path / "c.toml").write_text(config_toml(tiny_model, data, batch_size=3))
    result = punie(
        "train", tmp_path / "c.toml", "--runs-dir", tmp_path / "runs", "--name", "x",
        "--hosts", "127.0.0.1,127.0.0.1",
    )  # fmt: skip
    assert one_line_error(result) == (
        "error: batch_size: 3 does not split evenly over the 2 hosts of --hosts "
        "(each takes batch_size / hosts rows a step)"
    )
    assert not (tmp_path / "runs" / "x").exists()


def test_two_local_ranks_take_exactly_the_steps_of_one_process(tiny_model, tmp_path):
    """Rows of one length: each rank's token mean is then the batch's, so averaged gradients
    (mlx_lm's `average_gradients`) are one process's gradients; a sum would double every step.
    (Rows of mixed lengths differ a little: each rank's loss is a mean over its own tokens.)"""
    data = tmp_path / "data"
    for split, n in (("train", 8), ("valid", 2)):
        write_jsonl(data / f"{split}.jsonl", [single_turn_row("a.py")] * n)
    (tmp_path / "c.toml").write_text(
        config_toml(tiny_model, data, iters=4, steps_per_eval=4, save_every=4)
    )
    run = train(tmp_path, "two", "--hosts", "127.0.0.1,127.0.0.1")
    log = (run / "train.log").read_text()
    assert "punie worker: rank 0 of 2" in log and "punie worker: rank 1 of 2" in log
    assert (run / "adapters.safetensors").is_file() and (run / "best").is_dir()
    two = read_metrics(run / "metrics.jsonl")  # rank 0's alone: each iteration once
    assert [r["iteration"] for r in two if "train_loss" in r] == [1, 2, 3, 4]
    one = read_metrics(train(tmp_path, "one") / "metrics.jsonl")
    losses = [[r["train_loss"] for r in rows if "train_loss" in r] for rows in (two, one)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)  # float32 sums in another order
    assert losses[1][-1] < losses[1][0]
    vals = [[r["val_loss"] for r in rows if "val_loss" in r] for rows in (two, one)]
    assert vals[0] == pytest.approx(vals[1], rel=1e-3)
