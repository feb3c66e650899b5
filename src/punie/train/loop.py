"""The training loop's hooks, between two of mlx_lm's optimizer steps.

`mlx_lm.tuner.trainer.train` runs the steps; `Loop.batches` is the batch iterator it pulls from,
so the point where it asks for the next batch is the point between two steps. There the loop:

- validates on the global iteration count (mlx_lm's cadence), keeps the best adapter in `best/`
  and stops after `patience` evaluations without improvement;
- writes checkpoints every `save_every` steps, and on SIGTERM/SIGINT before stopping;
- with `select_by`, scores each saved checkpoint with a selector (a held-out suite, run by the
  caller) and keeps the highest-scoring one in `best/` instead;
- warns about an update the optimizer skipped for a NaN or infinite gradient
  (`punie.train.guard`), and stops after `nan_patience` of them in a row;
- stops a run whose loss, validation loss or weights went NaN or infinite: the last checkpoint
  (written only from finite weights) is kept, and nothing is saved from non-finite weights.

Reports go to metrics.jsonl (`MetricsLog`, and the trackers of `report_to`) and to the parent on
the event channel.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from punie.train.checkpoint import (
    LoopState,
    restore_checkpoint,
    save_adapter,
    save_checkpoint,
    truncate_metrics,
)
from punie.train.config import TrainConfig
from punie.train.events import EventChannel, TrainingFailed
from punie.train.records import MetricsLog, MetricsRecord
from punie.train.rundir import RunDir
from punie.train.setup import trainable
from punie.train.tracking import open_trackers

Selector = Callable[[Path], float]


class EarlyStop(Exception):
    pass


class Interrupted(Exception):
    pass


class NonFinite(TrainingFailed):
    pass


class Loop:
    """The hooks between optimizer steps, and the run's on-disk state."""

    def __init__(
        self,
        run: RunDir,
        config: TrainConfig,
        model,
        optimizer,
        valid,
        events,
        selector=None,
        primary=True,
    ):
        """`primary`: this process writes the run folder. In a data-parallel run (`--hosts`)
        every rank runs the same hooks, in step, and only rank 0 writes."""
        from punie.train.masking import Cursor

        self.run = run
        self.config = config
        self.model = model
        self.optimizer = optimizer
        self.valid = valid
        self.events: EventChannel = events
        self.cursor = Cursor()
        self.start = 0
        self.completed = 0
        self.best: tuple[int, float] | None = None
        self.evals_since_best = 0
        self.stop_requested = False
        self.last_eval_at: int | None = None
        self.checkpoint_at: int | None = None
        self.primary = primary
        self.metrics = (
            MetricsLog(run.metrics, sinks=open_trackers(run.path, config)) if primary else None
        )
        # `select_by`: scores an adapter folder on a held-out suite (higher is better); then
        # best/ follows that score, and validation only records its loss.
        self.selector: Selector | None = selector
        self.selected_at: int | None = None

    # --- records (mlx_lm's TrainingCallback) -----------------------------------------------
    def record(self, record: MetricsRecord) -> None:
        if self.metrics is not None:
            self.metrics.append(record)
        self.events.send("metrics", record=record.to_dict())

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        iteration = self.start + int(info["iteration"])
        if not self.weights_finite():
            self.fail(iteration, "the weights became NaN or infinite")
        window = self.optimizer.take_window() if hasattr(self.optimizer, "take_window") else None
        loss = float(info["train_loss"])
        if not math.isfinite(loss):
            # A skipped step's NaN is in mlx_lm's mean; the window's mean leaves it out.
            streak = window.streak if window else 0
            if window is None or streak >= self.config.nan_patience:
                note = self.streak_note()
                self.fail(iteration, f"the training loss is {info['train_loss']}{note}")
            if window.train_loss is None:
                return  # every step of this report was skipped, each with its warning
            loss = window.train_loss
        self.record(
            MetricsRecord.train(
                iteration,
                train_loss=loss,
                learning_rate=info["learning_rate"],
                tokens_per_second=info["tokens_per_second"],
                iterations_per_second=info["iterations_per_second"],
                trained_tokens=info["trained_tokens"],
                peak_memory=info["peak_memory"],
                grad_norm=window.grad_norm if window else None,
                token_accuracy=window.token_accuracy if window else None,
                skipped_steps=window.skipped if window else None,
            )
        )

    def streak_note(self) -> str:
        streak = self.optimizer.streak() if hasattr(self.optimizer, "streak") else 0
        if not streak:
            return ""
        steps = "step" if streak == 1 else "steps"
        return f" ({streak} non-finite {steps} in a row; nan_patience = {self.config.nan_patience})"

    def check_gradients(self) -> None:
        """After each step: a skipped (non-finite) update warns; `nan_patience` in a row stop."""
        if not hasattr(self.optimizer, "streak"):
            return
        if self.completed % self.config.grad_accumulation_steps:
            return  # no update since the last check: the same skip would be counted twice
        streak = self.optimizer.streak()
        if not streak:
            return
        norm = self.optimizer.aux["last_norm"].item()
        if streak >= self.config.nan_patience:
            self.fail(self.completed, f"the gradient norm is {norm}{self.streak_note()}")
        self.events.send(
            "warning",
            message=f"iteration {self.completed}: the gradient norm is {norm}; the update was "
            f"skipped{self.streak_note()}",
        )

    def on_val_loss_report(self, info: dict[str, Any]) -> None:  # validation runs in validate()
        pass

    def fail(self, iteration: int, what: str) -> None:
        """Stop: `what` went non-finite at `iteration`; nothing more is saved from these weights."""
        kept = (
            f"the last finite checkpoint (iteration {self.checkpoint_at}) is kept in "
            f"{self.run.checkpoint}"
            if self.checkpoint_at is not None
            else "no checkpoint was written"
        )
        raise NonFinite(
            f"training stopped at iteration {iteration}: {what}; {kept}; try a lower learning_rate"
        )

    # --- weights -----------------------------------------------------------------------------
    # Checked at each report, before each save and at the end, not after every step: the guard
    # already skips every non-finite update, so only an overflowing finite one can get here, and
    # a check costs a pass over the trainable weights (about 1% of a small model's step).
    def weights_finite(self) -> bool:
        import mlx.core as mx

        checks = [mx.isfinite(w).all() for w in trainable(self.model).values()]
        return bool(mx.all(mx.stack(checks)).item()) if checks else True

    def check_weights(self) -> None:
        if not self.weights_finite():
            self.fail(self.completed, "the weights became NaN or infinite")

    def save_checkpoint(self) -> None:
        self.check_weights()  # nothing is saved from non-finite weights
        state = LoopState(
            iteration=self.completed,
            cursor_order=self.cursor.order,
            cursor_next=self.cursor.next,
            best=self.best,
            evals_since_best=self.evals_since_best,
        )
        if self.primary:
            save_checkpoint(self.run, self.model, self.optimizer, state)
        self.checkpoint_at = self.completed
        self.events.send("checkpoint", iteration=self.completed)

    def restore_checkpoint(self) -> None:
        state = restore_checkpoint(self.run, self.model, self.optimizer, self.config)
        self.cursor.order = state.cursor_order
        self.cursor.next = state.cursor_next
        self.start = self.completed = self.checkpoint_at = state.iteration
        self.best = state.best
        self.evals_since_best = state.evals_since_best
        if self.metrics is not None:
            self.metrics.close(keep_sinks=True)
            truncate_metrics(self.run.metrics, self.start)
            self.metrics = MetricsLog(self.run.metrics, sinks=self.metrics.sinks)

    # --- between steps -----------------------------------------------------------------------
    def measure(self) -> MetricsRecord:
        """The validation report at the current iteration (a training method's own measure)."""
        from mlx_lm.tuner.trainer import evaluate

        from punie.train.masking import counting_loss, iterate_batches, masked_loss

        counting = hasattr(self.optimizer, "take_validation_accuracy")
        tic = time.perf_counter()
        val_loss = evaluate(
            model=self.model,
            dataset=self.valid,
            batch_size=self.config.batch_size,
            num_batches=self.config.val_batches,
            max_seq_length=self.config.max_seq_length,
            loss=counting_loss(self.optimizer) if counting else masked_loss,
            iterate_batches=iterate_batches,
        )
        val_time = time.perf_counter() - tic
        accuracy = self.optimizer.take_validation_accuracy() if counting else None
        return MetricsRecord.validation(
            self.completed, val_loss=val_loss, val_time=val_time, token_accuracy=accuracy
        )

    def validate(self) -> None:
        record = self.measure()
        val_loss = record.val_loss
        self.model.train()
        if not math.isfinite(val_loss):
            self.fail(self.completed, f"the validation loss is {val_loss}")
        self.last_eval_at = self.completed
        self.record(record)
        if self.selector is not None:
            return
        if self.best is None or val_loss < self.best[1]:
            self.best = (self.completed, float(val_loss))
            self.evals_since_best = 0
            if self.primary:
                save_adapter(self.run.best, self.model, self.config)
            self.events.send("best", iteration=self.completed, val_loss=float(val_loss))
        else:
            self.evals_since_best += 1
            if self.config.patience and self.evals_since_best >= self.config.patience:
                raise EarlyStop()

    def select(self) -> None:
        """Score the weights as they are now on the `select_by` suite; keep them in best/ when
        they beat every earlier checkpoint (patience counts these evaluations then)."""
        if self.selector is None or self.selected_at == self.completed:
            return
        import shutil

        self.selected_at = self.completed
        candidate = self.run.trainer_scratch / f"select-{self.completed}"
        save_adapter(candidate, self.model, self.config)
        tic = time.perf_counter()
        try:
            score = float(self.selector(candidate))
            better = self.best is None or score > self.best[1]
            if better:
                shutil.rmtree(self.run.best, ignore_errors=True)
                shutil.copytree(candidate, self.run.best)
        finally:
            shutil.rmtree(candidate, ignore_errors=True)
            with contextlib.suppress(OSError):  # only when empty: a trainer's own files stay
                self.run.trainer_scratch.rmdir()
        self.record(
            MetricsRecord.evaluation(
                self.completed, eval_score=score, eval_time=time.perf_counter() - tic
            )
        )
        if better:
            self.best = (self.completed, score)
            self.evals_since_best = 0
            self.events.send("best", iteration=self.completed, eval_score=score)
        else:
            self.evals_since_best += 1
            if self.config.patience and self.evals_since_best >= self.config.patience:
                raise EarlyStop()

    def inner_batches(self, dataset, batch_size, max_seq_length, comm_group=None):
        """The endless training batches, from `self.cursor` (a training method's own data)."""
        from punie.train.masking import iterate_batches

        return iterate_batches(
            dataset, batch_size, max_seq_length, loop=True, cursor=self.cursor,
            comm_group=comm_group,
        )  # fmt: skip

    def batches(self, dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        """What `train` iterates: mlx_lm's batches, with the run's hooks before each step."""
        if not loop:  # evaluation
            from punie.train.masking import iterate_batches

            yield from iterate_batches(dataset, batch_size, max_seq_length, comm_group=comm_group)
            return
        gas = self.config.grad_accumulation_steps
        # a data-parallel rank (`--hosts`) takes its share of each batch
        inner = self.inner_batches(dataset, batch_size, max_seq_length, comm_group)
        while True:
            if self.completed > self.start:
                self.check_gradients()
                self.events.send("step", iteration=self.completed)
            if self.completed % gas == 0:
                if self.stop_requested:
                    self.save_checkpoint()
                    raise Interrupted()
                if self.completed > self.start and self.completed % self.config.save_every == 0:
                    # selected first, so the checkpoint holds the best-so-far it produced
                    self.select()
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
        self.check_gradients()
        self.check_weights()  # the last step: `train` returned without asking for a batch
        if self.valid and self.last_eval_at != self.completed:
            with contextlib.suppress(EarlyStop):
                self.validate()
        if self.primary:
            save_adapter(self.run.adapter, self.model, self.config)
        with contextlib.suppress(EarlyStop):
            self.select()
        self.save_checkpoint()
