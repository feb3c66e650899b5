"""Stable training: clipping, grad_norm, token accuracy, NaN steps skipped, defaults that fit.

The optimizer tests drive `GuardedOptimizer` with gradients chosen by hand; the NaN-batch test
runs mlx_lm's own compiled trainer on the tiny model with the run's hooks, and one batch whose
mask is empty (0/0, the classic NaN); the no-flags test runs the `punie train` CLI.
"""

from __future__ import annotations

import io
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import pytest
from mlx.utils import tree_flatten

from punie.train.config import TrainConfig
from punie.train.events import EventChannel
from punie.train.guard import GuardedOptimizer
from punie.train.masking import counting_loss
from train_support import write_data


def _params(model) -> dict[str, mx.array]:
    return {k: mx.array(v) for k, v in tree_flatten(model.trainable_parameters())}


def _grads_like(model, value: float) -> dict:
    from mlx.utils import tree_map

    return tree_map(lambda p: mx.full(p.shape, value), model.trainable_parameters())


def test_clipping_bounds_the_update_to_max_grad_norm():
    model = nn.Linear(4, 4)
    optimizer = GuardedOptimizer(optim.SGD(learning_rate=1.0), max_grad_norm=0.5)
    before = _params(model)
    grads = _grads_like(model, 3.0)  # 20 entries of 3: norm 3 * sqrt(20) ~ 13.4
    optimizer.update(model, grads)
    mx.eval(model.parameters(), optimizer.state)
    after = _params(model)
    step = math.sqrt(sum(float(((after[k] - before[k]) ** 2).sum()) for k in before))
    assert step == pytest.approx(0.5, rel=1e-4)
    window = optimizer.take_window()
    assert window.grad_norm == pytest.approx(3.0 * math.sqrt(20), rel=1e-5)  # before clipping
    assert window.skipped == 0 and window.streak == 0


def test_gradients_under_the_limit_are_not_clipped():
    model = nn.Linear(2, 2)
    optimizer = GuardedOptimizer(optim.SGD(learning_rate=1.0), max_grad_norm=10.0)
    before = _params(model)
    optimizer.update(model, _grads_like(model, 0.1))
    after = _params(model)
    assert all(mx.allclose(before[k] - after[k], mx.full(before[k].shape, 0.1)) for k in before)


def test_a_non_finite_gradient_skips_the_update_and_keeps_the_optimizer_state():
    model = nn.Linear(3, 2)
    optimizer = GuardedOptimizer(optim.Adam(learning_rate=0.1))
    optimizer.update(model, _grads_like(model, 0.5))
    mx.eval(model.parameters(), optimizer.state)
    params = _params(model)
    moments = {k: mx.array(v) for k, v in tree_flatten(optimizer.state) if "punie" not in k}
    grads = _grads_like(model, 0.5)
    grads["weight"] = grads["weight"].at[0, 0].add(mx.array(math.nan))
    optimizer.update(model, grads)
    mx.eval(model.parameters(), optimizer.state)
    assert all(mx.array_equal(params[k], v) for k, v in _params(model).items())
    state = {k: v for k, v in tree_flatten(optimizer.state) if "punie" not in k}
    assert all(mx.array_equal(moments[k], v) for k, v in state.items())  # step count too
    assert optimizer.streak() == 1
    optimizer.update(model, _grads_like(model, 0.5))  # a finite one resets the streak
    window = optimizer.take_window()
    assert (window.skipped, window.streak) == (1, 0)
    assert int(optimizer.state["step"]) == 2


OPTIMIZERS = {
    "adam": lambda: optim.Adam(learning_rate=1e-2),
    "adam-bias-corrected": lambda: optim.Adam(learning_rate=1e-2, bias_correction=True),
    "adamw": lambda: optim.AdamW(learning_rate=1e-2, weight_decay=0.1),
    "adam-scheduled": lambda: optim.Adam(learning_rate=optim.cosine_decay(1e-2, 100)),
    "sgd-momentum": lambda: optim.SGD(learning_rate=1e-2, momentum=0.9),
}


def _compiled_updates(make, guarded: bool, steps: int, nan_at: int | None = None):
    """`steps` updates with seeded gradients, compiled as mlx_lm compiles its step; the
    parameters and the optimizer state (counters left out) after them."""
    from mlx.utils import tree_map

    mx.random.seed(0)
    holder = {"p": {"w": mx.random.normal((8, 16)), "b": [mx.random.normal((16,))]}}
    optimizer = GuardedOptimizer(make()) if guarded else make()
    optimizer.init(holder["p"])
    state = [holder, optimizer.state]

    def update(grads):
        holder["p"] = optimizer.apply_gradients(grads, holder["p"])

    update = mx.compile(update, inputs=state, outputs=state)
    mx.random.seed(1)
    for i in range(steps):
        grads = tree_map(lambda x: mx.random.normal(x.shape), holder["p"])
        if i == nan_at:
            grads["w"] = grads["w"] * math.nan
        update(grads)
        mx.eval(state)
    kept = {k: v for k, v in optimizer.state.items() if k != "punie"}
    return tree_flatten(holder["p"]) + tree_flatten(kept)


def _bit_equal(a: list, b: list) -> bool:
    return [k for k, _ in a] == [k for k, _ in b] and all(
        mx.array_equal(x, y).item() for (_, x), (_, y) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_the_guard_changes_no_bit_of_a_finite_update_and_undoes_a_skipped_one(name):
    # Adam and AdamW take the guard's fused path (the skip inside each moment's expression),
    # the others the generic one: both must be the optimizer itself on finite steps.
    make = OPTIMIZERS[name]
    assert _bit_equal(_compiled_updates(make, True, 12), _compiled_updates(make, False, 12))
    # A NaN gradient at the 6th update leaves everything as 5 updates left it.
    assert _bit_equal(_compiled_updates(make, True, 6, nan_at=5), _compiled_updates(make, False, 5))


class FixedLogits(nn.Module):
    """A 'model' whose prediction at each position is set by hand: argmax ids `predict`."""

    def __init__(self, predict: list[list[int]], vocab: int = 10):
        super().__init__()
        self.logits = mx.stack([mx.eye(vocab)[mx.array(row)] for row in predict])

    def __call__(self, inputs):
        return self.logits[:, : inputs.shape[1]]


def test_token_accuracy_is_the_argmax_hits_over_the_trained_tokens():
    # targets (batch[:, 1:]): [2, 3, 4, 5] and [6, 7, 8, 9]; predictions below.
    batch = mx.array([[1, 2, 3, 4, 5], [1, 6, 7, 8, 9]])
    predict = [[2, 0, 4, 5], [6, 7, 0, 0]]
    # trained positions (mask[:, 1:]): row 0: targets 3, 4, 5; row 1: targets 6, 7, 8.
    mask = mx.array([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]]).astype(mx.bool_)
    # Hand count: row 0 predicts 3? no (0), 4 yes, 5 yes -> 2; row 1: 6 yes, 7 yes, 8 no -> 2.
    tallies = GuardedOptimizer(optim.SGD(learning_rate=0.1))
    loss_fn = counting_loss(tallies)
    model = FixedLogits(predict)
    model.train()
    loss, ntoks = loss_fn(model, batch, mask)
    assert int(ntoks) == 6
    assert tallies.take_window().token_accuracy == pytest.approx(4 / 6)
    model.eval()
    loss_fn(model, batch, mask)
    assert tallies.take_validation_accuracy() == pytest.approx(4 / 6)


def _events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.slow
def test_a_nan_batch_is_skipped_with_a_warning_and_the_run_goes_on(tmp_path, tiny_model):
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.utils import load

    from punie.train.loop import Loop
    from punie.train.rundir import RunDir
    from punie.train.setup import build_optimizer, prepare_model, training_data

    config = TrainConfig(
        model=str(tiny_model),
        data=str(write_data(tmp_path / "data", n_train=8, n_valid=2)),
        adapter_path=str(tmp_path / "run"),
        rank=4,
        learning_rate=1e-3,
        batch_size=2,
        iters=6,
        max_seq_length=256,
        mask_prompt=True,
        steps_per_report=1,
        steps_per_eval=100,
        save_every=100,
        nan_patience=2,
        max_grad_norm=1.0,
    )
    stream = io.StringIO()
    events = EventChannel(stream)
    run = RunDir(Path(config.adapter_path))
    run.path.mkdir()
    model, tokenizer = load(config.model)
    train_set, valid = training_data(config, tokenizer, events)
    prepare_model(model, config)
    optimizer = build_optimizer(config)
    loop = Loop(run, config, model, optimizer, valid, events)

    def one_empty_batch(*args, **kwargs):
        for i, (tokens, mask) in enumerate(loop.batches(*args, **kwargs), start=1):
            yield tokens, (mx.zeros_like(mask) if i == 3 else mask)  # 0/0: a NaN loss

    args = TrainingArgs(batch_size=2, iters=6, steps_per_report=1, steps_per_eval=100,
                        steps_per_save=100, adapter_file=str(tmp_path / "scratch.safetensors"),
                        max_seq_length=256)  # fmt: skip
    train(model=model, optimizer=optimizer, train_dataset=train_set, args=args,
          loss=counting_loss(optimizer), iterate_batches=one_empty_batch,
          training_callback=loop)  # fmt: skip
    loop.completed = config.iters
    loop.finish()
    warnings = [e["message"] for e in _events(stream) if e["event"] == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("iteration 3: the gradient norm is nan")
    assert "the update was skipped (1 non-finite step in a row; nan_patience = 2)" in warnings[0]
    rows = [json.loads(x) for x in run.metrics.read_text().splitlines()]
    train_rows = {r["iteration"]: r for r in rows if "train_loss" in r}
    assert sorted(train_rows) == [1, 2, 4, 5, 6]  # step 3 trained nothing, so no loss to report
    assert all(r["grad_norm"] > 0 and 0 <= r["token_accuracy"] <= 1 for r in train_rows.values())
    assert "NaN" not in run.metrics.read_text()
    assert int(optimizer.state["step"]) == 5  # five updates, one skipped
    assert loop.weights_finite()


def test_two_nan_steps_in_a_row_stop_a_run_with_nan_patience_two():
    from punie.train.loop import Loop, NonFinite

    class Events:
        def send(self, event, **data):
            self.last = (event, data)

    optimizer = GuardedOptimizer(optim.SGD(learning_rate=0.1))
    model = nn.Linear(2, 2)
    config = TrainConfig(model="m", data="d", nan_patience=2)
    loop = Loop.__new__(Loop)  # the hooks only: no run folder is touched before the stop
    loop.config, loop.optimizer, loop.events, loop.checkpoint_at = config, optimizer, Events(), 4
    loop.run = type("R", (), {"checkpoint": Path("run/checkpoint")})()
    loop.completed = 5
    optimizer.update(model, _grads_like(model, math.inf))
    loop.check_gradients()
    assert loop.events.last[0] == "warning"
    optimizer.update(model, _grads_like(model, math.nan))
    loop.completed = 6
    with pytest.raises(NonFinite, match=r"iteration 6: the gradient norm is nan \(2 non-finite"):
        loop.check_gradients()


def test_num_layers_default_fits_a_model_with_fewer_than_16_layers(tiny_model):
    from punie.train.config import effective_num_layers

    assert effective_num_layers(None, 4) == 4
    assert effective_num_layers(None, 32) == 16
    assert effective_num_layers(2, 4) == 2 and effective_num_layers(-1, 4) == -1


@pytest.mark.slow
def test_train_with_only_model_and_data_starts_on_the_tiny_model(tmp_path, tiny_model):
    """`punie train --model m --data data`: no other flag. Stopped (SIGINT) once it trains."""
    write_data(tmp_path / "data", n_train=16, n_valid=4)
    proc = subprocess.Popen(
        [sys.executable, "-m", "punie", "train", "--model", str(tiny_model), "--data", "data",
         "--name", "plain"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run = tmp_path / "adapters" / "plain"
    deadline = time.monotonic() + 120
    while (
        not (run / "metrics.jsonl").is_file()
        or '"train_loss"' not in (run / "metrics.jsonl").read_text()
    ):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no training report within 120 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    adapter_config = json.loads((run / "adapter_config.json").read_text())
    assert adapter_config["num_layers"] == 4  # min(16, the tiny model's 4 layers)
