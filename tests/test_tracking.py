"""`report_to`: the records of metrics.jsonl written through TensorBoard (tensorboardX) and W&B
(offline), read back with TensorBoard's own event reader and from W&B's offline run file."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from cli_support import one_line_error, punie, run_main
from punie.train.records import MetricsLog, MetricsRecord
from punie.train.runs import read_metrics
from punie.train.tracking import TensorBoardSink, WandbSink
from train_support import config_toml, write_data

RECORDS = [
    MetricsRecord.validation(0, val_loss=3.5, val_time=0.25),
    MetricsRecord.train(
        1, train_loss=3.0, learning_rate=1e-3, tokens_per_second=100.0,
        iterations_per_second=2.0, trained_tokens=64, peak_memory=0.5,
    ),
    MetricsRecord.train(
        2, train_loss=2.5, learning_rate=1e-3, tokens_per_second=110.0,
        iterations_per_second=2.5, trained_tokens=128, peak_memory=0.5,
    ),
    MetricsRecord.validation(2, val_loss=2.75, val_time=0.25),
]  # fmt: skip


def flat(tags: dict[str, dict[int, float]]) -> dict[tuple[str, int], float]:
    return {(tag, step): value for tag, steps in tags.items() for step, value in steps.items()}


def expected(records: list[dict]) -> dict[str, dict[int, float]]:
    """tag -> {step: value}, from metrics.jsonl rows."""
    tags: dict[str, dict[int, float]] = {}
    for row in records:
        for key, value in row.items():
            if key not in ("iteration", "schema_version"):
                tags.setdefault(key, {})[row["iteration"]] = float(value)
    return tags


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """What TensorBoard itself reads from the event files in `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def wandb_history(run_dir: Path) -> dict[str, dict[int, float]]:
    """History rows from W&B's offline run file: a `:W&B` header, then LevelDB-log records
    (32 KiB blocks, 7-byte headers: crc, length, type) each holding one protobuf `Record`."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, block, chunk = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    tags: dict[str, dict[int, float]] = {}
    while pos + 7 <= len(data):
        if block - pos % block < 7 or data[pos : pos + 7] == bytes(7):  # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):  # FIRST and MIDDLE pieces wait for the LAST
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        chunk = b""
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):  # _step, _runtime, _timestamp: W&B's own
                    value = float(json.loads(item.value_json))
                    tags.setdefault(key, {})[record.history.step.num] = value
    return tags


def test_tensorboard_sink_writes_what_metrics_jsonl_gets(tmp_path):
    pytest.importorskip("tensorboardX")
    pytest.importorskip("tensorboard")
    log = MetricsLog(tmp_path / "metrics.jsonl", sinks=[TensorBoardSink(tmp_path / "tb")])
    for record in RECORDS:
        log.append(record)
    log.close()
    written = expected(read_metrics(tmp_path / "metrics.jsonl"))
    assert written["val_loss"] == {0: 3.5, 2: 2.75}
    assert flat(tensorboard_scalars(tmp_path / "tb")) == pytest.approx(flat(written))


def test_wandb_sink_writes_an_offline_run_with_the_same_history(tmp_path):
    pytest.importorskip("wandb")
    sink = WandbSink(tmp_path, "r1", {"learning_rate": 1e-3})
    log = MetricsLog(tmp_path / "metrics.jsonl", sinks=[sink])
    for record in RECORDS:
        log.append(record)
    log.close()
    written = expected(read_metrics(tmp_path / "metrics.jsonl"))
    assert flat(wandb_history(tmp_path)) == pytest.approx(flat(written))


@pytest.mark.slow
def test_a_run_reports_to_tensorboard_and_wandb_as_to_metrics_jsonl(tiny_model, tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    data = write_data(tmp_path / "data", n_train=8, n_valid=2)
    config = tmp_path / "t.toml"
    config.write_text(
        config_toml(
            tiny_model,
            data,
            iters=4,
            steps_per_eval=2,
            save_every=4,
            report_to=["tensorboard", "wandb"],
        )  # fmt: skip
    )
    result = punie("train", config, "--runs-dir", tmp_path / "runs", "--name", "t", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "runs" / "t"
    written = expected(read_metrics(run / "metrics.jsonl"))
    assert set(written["train_loss"]) == {1, 2, 3, 4} and len(written["val_loss"]) == 3
    assert flat(tensorboard_scalars(run / "tensorboard")) == pytest.approx(flat(written))
    assert flat(wandb_history(run)) == pytest.approx(flat(written))


@pytest.mark.parametrize(
    ("tracker", "module"), [("tensorboard", "tensorboardX"), ("wandb", "wandb")]
)
def test_a_missing_tracker_extra_is_one_line_before_the_run_starts(
    tiny_model, tmp_path, capsys, monkeypatch, tracker, module
):
    # The extras are installed here; None in sys.modules is how Python makes an import fail.
    monkeypatch.setitem(sys.modules, module, None)
    config = tmp_path / "t.toml"
    config.write_text(config_toml(tiny_model, write_data(tmp_path / "data"), report_to=[tracker]))
    code, _, err = run_main(
        ["train", config, "--runs-dir", tmp_path / "runs", "--name", "t"], capsys
    )
    assert code == 2
    assert err.splitlines()[-1] == (
        f"error: report_to: {tracker} needs the {module} package (pip install 'punie[{tracker}]')"
    )
    assert not (tmp_path / "runs" / "t").exists()


def test_an_unknown_tracker_is_refused_in_one_line(tiny_model, tmp_path):
    config = tmp_path / "t.toml"
    config.write_text(config_toml(tiny_model, write_data(tmp_path / "data"), report_to=["mlflow"]))
    result = punie("train", config, "--runs-dir", tmp_path / "runs", "--name", "t")
    assert "report_to: 'mlflow' is not one of tensorboard, wandb" in one_line_error(result)
