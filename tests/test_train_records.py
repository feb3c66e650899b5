"""The run contract: one folder layout, typed and versioned records, one metrics writer."""

from __future__ import annotations

import json
import subprocess
import sys

from punie.train.records import (
    METRICS_SCHEMA_VERSION,
    MetricsLog,
    MetricsRecord,
    MetricsSummary,
    RunRecord,
)
from punie.train.rundir import RunDir

PUNIE = [sys.executable, "-m", "punie"]


def test_a_metrics_line_written_is_the_record_read_back(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    train = MetricsRecord.train(
        3, train_loss=1.5, learning_rate=1e-4, tokens_per_second=10.0,
        iterations_per_second=2.0, trained_tokens=120, peak_memory=0.1,
    )  # fmt: skip
    val = MetricsRecord.validation(3, val_loss=1.25, val_time=0.5)
    log.append(train)
    log.append(val)
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [MetricsRecord.from_dict(r) for r in rows] == [train, val]
    assert "val_loss" not in rows[0] and "train_loss" not in rows[1]
    assert rows[0]["schema_version"] == rows[1]["schema_version"] == METRICS_SCHEMA_VERSION


def test_a_line_from_before_the_schema_was_versioned_reads_as_version_0():
    old = {"iteration": 4, "train_loss": 2.0, "learning_rate": 1e-5, "tokens_per_second": 1.0,
           "peak_memory": 0.2}  # fmt: skip
    record = MetricsRecord.from_dict(old)
    assert record.schema_version == 0 and record.trained_tokens is None and record.is_train


def test_the_summary_takes_the_lowest_validation_loss_and_the_last_train_loss():
    records = [
        MetricsRecord.validation(0, val_loss=3.0, val_time=0.1),
        MetricsRecord.train(1, train_loss=2.5, learning_rate=1.0, tokens_per_second=1.0,
                            iterations_per_second=1.0, trained_tokens=1, peak_memory=0.3),
        MetricsRecord.validation(1, val_loss=2.0, val_time=0.1),
        MetricsRecord.train(2, train_loss=2.2, learning_rate=1.0, tokens_per_second=1.0,
                            iterations_per_second=1.0, trained_tokens=2, peak_memory=0.2),
    ]  # fmt: skip
    summary = MetricsSummary.of(records)
    assert (summary.last_iteration, summary.final_train_loss) == (2, 2.2)
    assert (summary.best_iteration, summary.best_val_loss, summary.peak_memory_gb) == (1, 2.0, 0.3)


def test_a_run_record_round_trips_and_keeps_old_records_readable():
    record = RunRecord(name="r", status="completed", backend="mlx", method="sft",
                       fine_tune_type="lora", model="m", iters=4)  # fmt: skip
    assert RunRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    old = {k: v for k, v in record.to_dict().items() if k != "schema_version"}
    assert RunRecord.from_dict({**old, "path": "/x"}).schema_version == 0


def test_the_run_folder_names_every_file_in_one_place(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.record.name == "run.json" and run.metrics.name == "metrics.jsonl"
    assert run.checkpoint_state == tmp_path / "r" / "checkpoint" / "state.json"
    assert run.best_adapter() is None and not run.is_run()


def test_an_unknown_mlx_backend_option_is_one_line_naming_it(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('model = "m"\ndata = "d"\nextra = { launcher = "accelerate" }\n')
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text('{"text": "a"}\n' * 8)
    result = subprocess.run([*PUNIE, "train", str(path), "--runs-dir", str(tmp_path / "runs")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: extra.launcher: not an option of backend mlx (its options: hosts)"
    )
