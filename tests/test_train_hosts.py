"""`punie train --hosts`: MLX data-parallel training under `mlx.launch` (ring backend), here with
two processes on 127.0.0.1. mlx_lm's trainer averages the gradients over the ranks; rank 0 alone
writes the run folder."""

from __future__ import annotations

import pytest

from cli_support import one_line_error, punie
from punie.train.runs import read_metrics
from train_support import config_toml, write_data

pytestmark = pytest.mark.slow


def train(tmp_path, name, *args):
    result = punie(
        "train", tmp_path / "c.toml", "--runs-dir", tmp_path / "runs", "--name", name, *args,
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp_path / "runs" / name


def test_two_local_ranks_train_one_run_as_one_process_would(tiny_model, tmp_path):
    data = write_data(tmp_path / "data", n_train=16, n_valid=4)
    (tmp_path / "c.toml").write_text(
        config_toml(tiny_model, data, iters=6, steps_per_eval=3, save_every=3)
    )
    two = train(tmp_path, "two", "--hosts", "127.0.0.1,127.0.0.1")
    log = (two / "train.log").read_text()
    assert "punie worker: rank 0 of 2" in log and "punie worker: rank 1 of 2" in log
    rows = read_metrics(two / "metrics.jsonl")
    assert [r["iteration"] for r in rows if "train_loss" in r] == [1, 2, 3, 4, 5, 6]  # once each
    assert (two / "adapters.safetensors").is_file() and (two / "best").is_dir()

    one = train(tmp_path, "one")
    single = read_metrics(one / "metrics.jsonl")
    # Before any step, the ranks' summed validation equals one process's, to float rounding.
    assert rows[0]["val_loss"] == pytest.approx(single[0]["val_loss"], rel=1e-5)
    # Same global batches; each rank's loss is its own token mean, so the averaged gradient
    # differs slightly from one process's token mean over the whole batch.
    final = [r["val_loss"] for r in (rows[-1], single[-1])]
    assert final[0] == pytest.approx(final[1], rel=0.05)
    assert final[0] < rows[0]["val_loss"] / 2


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
