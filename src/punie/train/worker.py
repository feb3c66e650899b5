"""The training child process: `python -m punie.train.worker RUN_DIR`.

Reads `RUN_DIR/config.json`, builds the model the way `mlx_lm lora` does (same seeds in the same
order, `linear_to_lora_layers`, mlx_lm's optimizers) and runs `mlx_lm.tuner.trainer.train`. What
mlx_lm does not do is added around that loop, not inside it:

- every assistant turn trains (`punie.train.masking`: per-token masks and their loss);
- validation on the global iteration count, the best adapter kept in `best/`, patience stop;
- checkpoints with optimizer state, batch order and RNG state, so a resumed run continues
  where the interrupted one stopped (same iteration count, schedule and batches);
- SIGTERM/SIGINT: finish the current step, write a checkpoint, exit 130;
- rows with no trained token within max_seq_length are set aside before training (a warning
  naming the first one), or refused (`cut_rows = "refuse"`, or when no row would be left);
- a NaN or infinite loss, validation loss or weight stops the run as failed, with one line:
  the last checkpoint (written only from finite weights) is kept, and no final adapter is
  written from non-finite weights.

These hooks run in the batch iterator that `train` pulls from, which is the point between two
optimizer steps. Progress goes to the parent as JSON lines on the original stdout; mlx_lm's own
output (and any traceback) goes to `RUN_DIR/train.log`. Records are appended to
`RUN_DIR/metrics.jsonl`, one line each, flushed as they come.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from punie.errors import PunieError

CHECKPOINT = "checkpoint"
BEST = "best"
INTERRUPTED_EXIT = 130


class _EarlyStop(Exception):
    pass


class _Interrupted(Exception):
    pass


class _NonFinite(Exception):
    pass


class Events:
    """JSON lines to the parent on the stdout this process started with."""

    def __init__(self, stream):
        self._stream = stream
        self._parent_gone = False

    def send(self, event: str, **data: Any) -> None:
        if self._parent_gone:
            return
        try:
            self._stream.write(json.dumps({"event": event, **data}) + "\n")
            self._stream.flush()
        except BrokenPipeError:
            # The parent died (kill -9) and its lifeline SIGTERM is on its way: the checkpoint
            # matters more than telling anyone.
            self._parent_gone = True


def _redirect_output(log: Path) -> Events:
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return Events(events)


def adapter_config(config) -> dict[str, Any]:
    """The adapter_config.json mlx_lm's `load_adapters` (server, generate, fuse) reads."""
    lora = {"rank": config.rank, "scale": config.scale, "dropout": config.dropout}
    if config.target_modules:
        lora["keys"] = list(config.target_modules)
    return {
        "model": config.model,
        "fine_tune_type": config.fine_tune_type,
        "num_layers": config.num_layers,
        "lora_parameters": lora,
        "trained_with": "punie",
    }


def learning_rate(config):
    """A float for a constant rate (as mlx_lm), else an mlx schedule with optional warmup."""
    import mlx.optimizers as optim

    lr = config.learning_rate
    if config.lr_schedule == "constant" and not config.warmup_steps:
        return lr
    if config.lr_schedule == "cosine":
        main = optim.cosine_decay(lr, config.iters - config.warmup_steps, 0.0)
    else:
        main = optim.linear_schedule(lr, lr, 1)
    if not config.warmup_steps:
        return main
    warmup = optim.linear_schedule(0.0, lr, config.warmup_steps)
    return optim.join_schedules([warmup, main], [config.warmup_steps + 1])


def build_optimizer(config):
    import mlx.optimizers as optim

    classes = {
        "adam": optim.Adam,
        "adamw": optim.AdamW,
        "sgd": optim.SGD,
        "adafactor": optim.Adafactor,
        "muon": optim.Muon,
    }
    kwargs = {}
    if config.weight_decay is not None and config.optimizer in ("adamw", "sgd", "muon"):
        kwargs["weight_decay"] = config.weight_decay
    return classes[config.optimizer](learning_rate=learning_rate(config), **kwargs)


def lora_targets(model) -> tuple[set[str], set[str]]:
    """What mlx_lm's `linear_to_lora_layers` can adapt: names inside a block, and whole-model
    names (its `keys` match either)."""
    import mlx.nn as nn
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear

    kinds = (nn.Linear, nn.QuantizedLinear, SwitchLinear, QuantizedSwitchLinear, nn.Embedding,
             nn.QuantizedEmbedding)  # fmt: skip

    def adaptable(module) -> bool:
        return hasattr(module, "to_lora") or isinstance(module, kinds)

    in_layers = {k for layer in model.layers for k, m in layer.named_modules() if adaptable(m)}
    whole = {k for k, m in model.named_modules() if adaptable(m)}
    return in_layers, whole


def check_target_modules(requested, in_layers: set[str], whole: set[str], model: str) -> None:
    """Every requested module must exist in the model; mlx_lm silently skips a name it lacks."""
    for name in requested or ():
        if name not in in_layers and name not in whole:
            known = ", ".join(sorted(in_layers)) or "none"
            raise SystemExit(
                f"target_modules: {name!r} is not a module LoRA can adapt in {model} "
                f"(in each layer: {known})"
            )


def prepare_model(model, config) -> None:
    """Freeze, then make trainable what the fine-tune type says (mlx_lm's `train_model` steps)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    if config.num_layers > len(model.layers):
        raise SystemExit(
            f"num_layers: {config.num_layers} is more than the model's {len(model.layers)} layers"
        )
    if config.fine_tune_type == "full":
        for layer in model.layers[-max(config.num_layers, 0) :]:
            layer.unfreeze()
    else:
        check_target_modules(config.target_modules, *lora_targets(model), config.model)
        lora = adapter_config(config)["lora_parameters"]
        linear_to_lora_layers(
            model, config.num_layers, lora, use_dora=config.fine_tune_type == "dora"
        )


def load_trainable(model, path: Path, what: str) -> None:
    """Load saved trainable weights, refusing any that do not fit this model's trainable set."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    file = path / "adapters.safetensors" if path.is_dir() else path
    weights = mx.load(str(file))
    params = dict(tree_flatten(model.trainable_parameters()))
    for name, value in weights.items():
        if name not in params or params[name].shape != value.shape:
            raise SystemExit(f"{what}: {file}: {name} does not fit this model's adapter layers")
    missing = sorted(set(params) - set(weights))
    if missing:
        raise SystemExit(f"{what}: {file}: has no weights for {missing[0]} (and maybe more)")
    model.load_weights(list(weights.items()), strict=False)


class Loop:
    """The hooks between optimizer steps, and the run's on-disk state."""

    def __init__(self, run_dir: Path, config, model, optimizer, valid, events: Events):
        from punie.train.masking import Cursor

        self.run_dir = run_dir
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.valid = valid
        self.events = events
        self.cursor = Cursor()
        self.start = 0
        self.completed = 0
        self.best: tuple[int, float] | None = None
        self.evals_since_best = 0
        self.stop_requested = False
        self.last_eval_at: int | None = None
        self.checkpoint_at: int | None = None
        self.metrics = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    # --- records -----------------------------------------------------------------------------
    def record(self, row: dict[str, Any]) -> None:
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        self.events.send("metrics", record=row)

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        iteration = self.start + int(info["iteration"])
        if not math.isfinite(float(info["train_loss"])):
            self.fail(iteration, f"the training loss is {info['train_loss']}")
        self.record(
            {
                "iteration": iteration,
                "train_loss": float(info["train_loss"]),
                "learning_rate": float(info["learning_rate"]),
                "tokens_per_second": float(info["tokens_per_second"]),
                "iterations_per_second": float(info["iterations_per_second"]),
                "trained_tokens": int(info["trained_tokens"]),
                "peak_memory": float(info["peak_memory"]),
            }
        )

    def on_val_loss_report(self, info: dict[str, Any]) -> None:  # validation runs in evaluate()
        pass

    def fail(self, iteration: int, what: str) -> None:
        """Stop: `what` went non-finite at `iteration`; nothing more is saved from these weights."""
        kept = (
            f"the last finite checkpoint (iteration {self.checkpoint_at}) is kept in "
            f"{self.run_dir / CHECKPOINT}"
            if self.checkpoint_at is not None
            else "no checkpoint was written"
        )
        raise _NonFinite(
            f"training stopped at iteration {iteration}: {what}; {kept}; try a lower learning_rate"
        )

    # --- weights -----------------------------------------------------------------------------
    def weights_finite(self) -> bool:
        import mlx.core as mx

        checks = [mx.isfinite(w).all() for w in self._trainable().values()]
        return bool(mx.all(mx.stack(checks)).item()) if checks else True

    def check_weights(self) -> None:
        if not self.weights_finite():
            self.fail(self.completed, "the weights became NaN or infinite")

    def _trainable(self) -> dict:
        from mlx.utils import tree_flatten

        return dict(tree_flatten(self.model.trainable_parameters()))

    def save_adapter(self, folder: Path) -> None:
        """An mlx_lm-loadable adapter folder: adapters.safetensors + adapter_config.json."""
        import mlx.core as mx

        from punie.fsio import write_json

        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".adapters.tmp.safetensors"
        mx.save_safetensors(str(tmp), self._trainable())
        os.replace(tmp, folder / "adapters.safetensors")
        write_json(folder / "adapter_config.json", adapter_config(self.config))

    def save_checkpoint(self) -> None:
        """Weights, optimizer state, batch order and RNG state at `completed` iterations."""
        import mlx.core as mx
        import numpy as np
        from mlx.utils import tree_flatten

        from punie.fsio import atomic_dir, write_json

        rng = np.random.get_state()
        state = {
            "iteration": self.completed,
            "cursor": {"order": self.cursor.order, "next": self.cursor.next},
            "numpy_rng": [rng[0], rng[1].tolist(), int(rng[2]), int(rng[3]), float(rng[4])],
            "best": list(self.best) if self.best else None,
            "evals_since_best": self.evals_since_best,
        }
        with atomic_dir(self.run_dir / CHECKPOINT, kind="checkpoint") as tmp:
            mx.save_safetensors(str(tmp / "adapters.safetensors"), self._trainable())
            opt_state = dict(tree_flatten(self.optimizer.state))
            mx.save_safetensors(str(tmp / "optimizer.safetensors"), opt_state)
            write_json(tmp / "state.json", state)
        self.checkpoint_at = self.completed
        self.events.send("checkpoint", iteration=self.completed)

    def restore_checkpoint(self) -> None:
        import mlx.core as mx
        import numpy as np
        from mlx.utils import tree_unflatten

        folder = self.run_dir / CHECKPOINT
        state = json.loads((folder / "state.json").read_text())
        load_trainable(self.model, folder, "resume")
        self.optimizer.state = tree_unflatten(
            list(mx.load(str(folder / "optimizer.safetensors")).items())
        )
        self.cursor.order = state["cursor"]["order"]
        self.cursor.next = state["cursor"]["next"]
        name, keys, pos, has_gauss, cached = state["numpy_rng"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        self.start = self.completed = self.checkpoint_at = int(state["iteration"])
        # MLX's key cannot be set from saved bits; only dropout draws from it, so a resumed run
        # reseeds it per iteration instead (identical to an uninterrupted run without dropout).
        mx.random.seed(self.config.seed + self.start)
        self.best = tuple(state["best"]) if state["best"] else None
        self.evals_since_best = int(state["evals_since_best"])
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop records past the checkpoint: the resumed run writes them again."""
        from punie.fsio import read_jsonl_tolerant, write_jsonl

        path = self.run_dir / "metrics.jsonl"
        self.metrics.close()
        kept = [
            row
            for row in read_jsonl_tolerant(path)
            if row["iteration"] < self.start
            or (row["iteration"] == self.start and "val_loss" not in row)
        ]
        write_jsonl(path, kept)
        self.metrics = open(path, "a", encoding="utf-8")  # noqa: SIM115

    # --- between steps -----------------------------------------------------------------------
    def validate(self) -> None:
        from mlx_lm.tuner.trainer import evaluate

        from punie.train.masking import iterate_batches, masked_loss

        tic = time.perf_counter()
        val_loss = evaluate(
            model=self.model,
            dataset=self.valid,
            batch_size=self.config.batch_size,
            num_batches=self.config.val_batches,
            max_seq_length=self.config.max_seq_length,
            loss=masked_loss,
            iterate_batches=iterate_batches,
        )
        self.model.train()
        if not math.isfinite(val_loss):
            self.fail(self.completed, f"the validation loss is {val_loss}")
        self.last_eval_at = self.completed
        self.record(
            {
                "iteration": self.completed,
                "val_loss": float(val_loss),
                "val_time": time.perf_counter() - tic,
            }
        )
        if self.best is None or val_loss < self.best[1]:
            self.best = (self.completed, float(val_loss))
            self.evals_since_best = 0
            self.save_adapter(self.run_dir / BEST)
            self.events.send("best", iteration=self.completed, val_loss=float(val_loss))
        else:
            self.evals_since_best += 1
            if self.config.patience and self.evals_since_best >= self.config.patience:
                raise _EarlyStop()

    def batches(self, dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        """What `train` iterates: mlx_lm's batches, with the run's hooks before each step."""
        from punie.train.masking import iterate_batches

        if not loop:  # evaluation
            yield from iterate_batches(dataset, batch_size, max_seq_length, comm_group=comm_group)
            return
        gas = self.config.grad_accumulation_steps
        inner = iterate_batches(dataset, batch_size, max_seq_length, loop=True, cursor=self.cursor)
        while True:
            if self.completed > self.start:
                self.check_weights()  # before anything is saved from them
                self.events.send("step", iteration=self.completed)
            if self.completed % gas == 0:
                if self.stop_requested:
                    self.save_checkpoint()
                    raise _Interrupted()
                if self.completed > self.start and self.completed % self.config.save_every == 0:
                    self.save_checkpoint()
            batch = next(inner)
            it = self.completed + 1
            # mlx_lm's cadence (before steps 1, k * steps_per_eval), so both draw the same batches;
            # the evaluation before the last step moves to after it, in `finish`.
            cadence = it == 1 or it % self.config.steps_per_eval == 0
            if self.valid and cadence and it < self.config.iters:
                self.validate()
            yield batch
            self.completed = it

    def finish(self) -> None:
        self.check_weights()  # the last step: `train` returned without asking for a batch
        if self.valid and self.last_eval_at != self.completed:
            self.validate_quietly()
        self.save_adapter(self.run_dir)
        self.save_checkpoint()

    def validate_quietly(self) -> None:
        with contextlib.suppress(_EarlyStop):
            self.validate()


def training_data(config, tokenizer, events: Events):
    """(train rows, validation rows or None), each without rows that train no token."""
    from punie.train.masking import tokenized_split

    data = Path(config.data)
    args = (tokenizer, config.mask_prompt, config.max_seq_length)
    train = tokenized_split(data, "train", *args)
    if train is None or not (len(train.rows) or train.untrainable):
        raise SystemExit(f"data: {data}/train.jsonl is missing or empty")
    valid = tokenized_split(data, "valid", *args)
    for split in filter(None, (train, valid)):
        if not split.untrainable:
            continue
        message = split.describe_untrainable(config.max_seq_length)
        if not len(split.rows):
            raise SystemExit(f"{message}: none would be left; raise max_seq_length")
        if config.cut_rows == "refuse":
            raise SystemExit(f'{message}; raise max_seq_length, or set cut_rows = "skip"')
        events.send("warning", message=f"{message}; skipped them")
    for split in filter(None, (train, valid)):
        if 0 < len(split.rows) < config.batch_size:
            raise SystemExit(
                f"batch_size: {config.batch_size} is more than the {len(split.rows)} trainable "
                f"rows of {split.path}"
            )
    return train.rows, (valid.rows if valid and len(valid.rows) else None)


def run(run_dir: Path, events: Events) -> int:
    import mlx.core as mx
    import numpy as np
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.utils import load

    from punie.train.config import TrainConfig
    from punie.train.masking import masked_loss

    stop = {"requested": False}

    def on_signal(signum, frame):
        stop["requested"] = True
        if loop is not None:
            loop.stop_requested = True

    loop = None
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    resuming = (run_dir / CHECKPOINT / "state.json").is_file()

    # The same seeding, in the same order, as `mlx_lm lora`.
    np.random.seed(config.seed)
    model, tokenizer = load(config.model)
    train_set, valid = training_data(config, tokenizer, events)
    mx.random.seed(config.seed)
    prepare_model(model, config)
    if config.from_adapter and not resuming:
        load_trainable(model, Path(config.from_adapter), "from_adapter")

    optimizer = build_optimizer(config)
    loop = Loop(run_dir, config, model, optimizer, valid, events)
    loop.stop_requested = stop["requested"]
    if resuming:
        loop.restore_checkpoint()
    else:
        for stale in (run_dir / BEST, run_dir / CHECKPOINT):
            shutil.rmtree(stale, ignore_errors=True)
    if loop.completed >= config.iters:
        events.send("done", iteration=loop.completed)
        return 0

    from punie.fsio import write_json

    write_json(run_dir / "adapter_config.json", adapter_config(config))
    events.send("started", iteration=loop.completed, iters=config.iters)
    scratch = run_dir / ".mlx_lm-final.safetensors"
    args = TrainingArgs(
        batch_size=config.batch_size,
        iters=config.iters - loop.completed,
        val_batches=config.val_batches,
        steps_per_report=config.steps_per_report,
        steps_per_eval=config.iters + 1,  # validation is the loop's, on the global count
        steps_per_save=config.iters + 1,  # checkpoints are the loop's, with optimizer state
        # mlx_lm saves its final weights here unchecked; the run's adapter is `finish`'s.
        adapter_file=str(scratch),
        max_seq_length=config.max_seq_length,
        grad_checkpoint=config.grad_checkpoint,
        grad_accumulation_steps=config.grad_accumulation_steps,
    )
    try:
        train(
            model=model,
            optimizer=optimizer,
            train_dataset=train_set,
            val_dataset=None,
            args=args,
            loss=masked_loss,
            iterate_batches=loop.batches,
            training_callback=loop,
        )
    except _EarlyStop:
        events.send("early_stop", iteration=loop.completed)
    except _Interrupted:
        events.send("interrupted", iteration=loop.completed)
        return INTERRUPTED_EXIT
    except _NonFinite as e:
        events.send("error", message=str(e))
        return 2
    else:
        loop.completed = config.iters  # `train` returns after the last step, with no next fetch
        events.send("step", iteration=loop.completed)
    finally:
        scratch.unlink(missing_ok=True)
    try:
        loop.finish()
    except _NonFinite as e:
        events.send("error", message=str(e))
        return 2
    events.send("done", iteration=loop.completed, peak_memory=mx.get_peak_memory() / 1e9)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0])
    events = _redirect_output(run_dir / "train.log")
    try:
        return run(run_dir, events)
    except SystemExit as e:
        if isinstance(e.code, str):
            events.send("error", message=e.code)
            return 2
        raise
    except PunieError as e:  # bad training data (file:line: reason): one line, not a traceback
        events.send("error", message=str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
