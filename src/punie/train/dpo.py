"""Preference training on MLX (`--method dpo`): DPO, Cal-DPO and Dr-DPO, staged, from an adapter.

The worker builds the model as for SFT (`punie.train.setup`: LoRA, DoRA, full, QLoRA on a
quantized base; `from_adapter` loaded), then hands over here. The reference is that starting
point, frozen: its log-probs are computed once before the first step (`punie.train.reference`),
so a step runs the policy only, one forward and backward pass over the batch's 2B answers.

`PreferenceLoop` is the SFT loop's hooks (`punie.train.loop`: checkpoints, SIGTERM, validation
cadence, best/, patience, NaN stop) with three things of its own: the pairs as batches, the
validation report (loss, reward margin and accuracy over the valid pairs, the whole set with
`val_batches = -1`), and the stages of the schedule (`punie.train.stages`). At a stage's start
its `drop_noisy` fraction of the kept pairs with the highest loss under the current policy is
dropped and listed in `dropped.jsonl`; a resume mid-stage reads the list back, and one at a
stage's first step recomputes it from the same weights.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map

from punie.fsio import read_jsonl_tolerant, write_json, write_jsonl
from punie.train import reference as ref
from punie.train import runs
from punie.train import stages as schedule
from punie.train.config import TrainConfig
from punie.train.events import TrainingFailed
from punie.train.loop import EarlyStop, Interrupted, Loop
from punie.train.masking import Cursor
from punie.train.pair_data import (
    PairSplit,
    iterate_pair_batches,
    sequence_logps,
    split_halves,
    tokenized_pairs,
)
from punie.train.preference import PreferenceLoss, preference_loss
from punie.train.records import MetricsRecord
from punie.train.rundir import RunDir, adapter_config_file
from punie.train.setup import adapter_config, build_optimizer, load_trainable, prepare_model
from punie.train.stages import Stage

INTERRUPTED_EXIT = 130


def stage_loss(stage: Stage, pol_c, pol_r, ref_c, ref_r) -> PreferenceLoss:
    return preference_loss(
        stage.preference_loss, pol_c, pol_r, ref_c, ref_r, beta=stage.beta, dr_beta=stage.dr_beta
    )


def policy_logps(model, split: PairSplit, keep, batch_size, max_seq_length, limit=-1):
    """The policy's summed log-probs (chosen, rejected) of pairs `keep`, in eval mode; and the
    pair indices they belong to. `limit` batches at most (-1: all)."""
    model.eval()
    chosen, rejected, idx = [], [], []
    batches = iterate_pair_batches(split.pairs, keep, batch_size, max_seq_length)
    for n, (tokens, mask, pairs) in enumerate(batches):
        if limit != -1 and n >= limit:
            break
        c, r = split_halves(sequence_logps(model, tokens, mask))
        mx.eval(c, r)
        chosen.append(c)
        rejected.append(r)
        idx.append(pairs)
    model.train()
    return mx.concatenate(chosen), mx.concatenate(rejected), np.concatenate(idx)


class PreferenceLoop(Loop):
    """The SFT loop's hooks over preference pairs, with stages."""

    def __init__(self, run, config, model, optimizer, train, valid, reference, plan, events):
        super().__init__(run, config, model, optimizer, valid, events)
        self.train_split: PairSplit = train
        self.reference: ref.ReferenceLogps = reference
        self.plan: tuple[Stage, ...] = plan
        self.stage: Stage | None = None
        self.keep: list[int] = list(range(len(train)))

    @property
    def current_stage(self) -> Stage:
        return self.stage or schedule.stage_for_step(self.plan, self.completed + 1)

    # --- validation --------------------------------------------------------------------------
    def measure(self) -> MetricsRecord:
        tic = time.perf_counter()
        c = self.config
        keep = range(len(self.valid))
        pol_c, pol_r, idx = policy_logps(
            self.model, self.valid, keep, c.batch_size, c.max_seq_length, c.val_batches
        )
        out = stage_loss(self.current_stage, pol_c, pol_r, *self.reference.of("valid", idx))
        loss, margin = out.loss.item(), out.reward_margin.mean().item()
        accuracy = out.reward_accuracy.item()
        record = MetricsRecord.validation(
            self.completed, val_loss=loss, val_time=time.perf_counter() - tic
        )
        return replace(
            record,
            stage=self.current_stage.index,
            val_reward_margin=margin,
            val_reward_accuracy=accuracy,
        )

    # --- stages ------------------------------------------------------------------------------
    def enter(self, stage: Stage) -> None:
        """Make `stage` current: the pairs it trains on, and (at its first step) its drop."""
        lines = {line: i for i, line in enumerate(self.train_split.lines)}
        earlier = read_jsonl_tolerant(self.run.dropped)
        gone = {lines[row["line"]] for row in earlier if row["stage"] < stage.index}
        self.keep = [i for i in range(len(self.train_split)) if i not in gone]
        if self.completed > stage.start:  # resumed mid-stage: its drop and its cursor stand
            gone = {lines[row["line"]] for row in earlier if row["stage"] == stage.index}
            self.keep = [i for i in self.keep if i not in gone]
        else:
            kept_rows = [row for row in earlier if row["stage"] < stage.index]
            dropped = self.drop_noisy(stage) if stage.drop_noisy else []
            write_jsonl(self.run.dropped, kept_rows + dropped)
            self.cursor = Cursor()  # the stage's own epochs over its own pairs
        self.stage = stage
        if len(self.keep) < self.config.batch_size:
            raise TrainingFailed(
                f"stage {stage.index}: {len(self.keep)} pairs are left, fewer than one batch",
                field="stages",
            )

    def drop_noisy(self, stage: Stage) -> list[dict]:
        """Drop the `stage.drop_noisy` fraction of kept pairs with the highest current loss."""
        c = self.config
        pol_c, pol_r, idx = policy_logps(
            self.model, self.train_split, self.keep, c.batch_size, c.max_seq_length
        )
        out = stage_loss(stage, pol_c, pol_r, *self.reference.of("train", idx))
        losses = np.array(out.pair_losses)
        n = schedule.dropped_count(len(self.keep), stage.drop_noisy)
        worst = np.argsort(-losses, kind="stable")[:n]
        gone = {int(idx[j]) for j in worst}
        self.keep = [i for i in self.keep if i not in gone]
        return [
            {
                "stage": stage.index,
                "iteration": stage.start,
                "line": self.train_split.lines[int(idx[j])],
                "loss": float(losses[j]),
            }
            for j in worst
        ]

    def inner_batches(self, dataset, batch_size, max_seq_length, comm_group=None):
        inner = None
        while True:
            stage = schedule.stage_for_step(self.plan, self.completed + 1)
            if inner is None or self.stage is None or stage.index != self.stage.index:
                self.enter(stage)
                inner = iterate_pair_batches(
                    self.train_split.pairs,
                    self.keep,
                    batch_size,
                    max_seq_length,
                    cursor=self.cursor,
                    loop=True,
                )
            yield next(inner)


def make_step(model, optimizer, stage: Stage, gas: int):
    """One compiled optimizer step under `stage`'s loss: (loss, rewards, tokens, grad)."""

    def loss_fn(model, tokens, mask, ref_c, ref_r):
        pol_c, pol_r = split_halves(sequence_logps(model, tokens, mask))
        out = stage_loss(stage, pol_c, pol_r, ref_c, ref_r)
        return (
            out.loss,
            out.reward_chosen.mean(),
            out.reward_rejected.mean(),
            out.reward_accuracy,
        )

    value_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, mask, ref_c, ref_r, prev_grad, do_update):
        values, grad = value_and_grad(model, tokens, mask, ref_c, ref_r)
        if prev_grad is not None:
            grad = tree_map(lambda x, y: x + y, grad, prev_grad)
        if do_update:
            if gas > 1:
                grad = tree_map(lambda x: x / gas, grad)
            optimizer.update(model, grad)
            grad = None
        return values, grad

    return step


class Window:
    """Sums over the steps since the last train report."""

    def __init__(self) -> None:
        self.steps = 0
        self.sums = np.zeros(4)  # loss, reward_chosen, reward_rejected, reward_accuracy
        self.tokens = 0
        self.seconds = 0.0

    def add(self, values, tokens: int, seconds: float) -> None:
        self.steps += 1
        self.sums += np.array([v.item() for v in values])
        self.tokens += tokens
        self.seconds += seconds


def train_loop(loop: PreferenceLoop, model, optimizer, config: TrainConfig) -> None:
    """The optimizer steps from `loop.completed` to `config.iters`, through the loop's hooks."""
    batches = loop.batches(None, config.batch_size, config.max_seq_length, loop=True)
    step, step_stage, grad = None, None, None
    window, trained = Window(), 0
    gas = config.grad_accumulation_steps
    model.train()
    for it in range(loop.completed + 1, config.iters + 1):
        tokens, mask, idx = next(batches)  # the hooks run here, between two steps
        tic = time.perf_counter()
        if step is None or step_stage != loop.stage:
            step, step_stage = make_step(model, optimizer, loop.stage, gas), loop.stage
        ref_c, ref_r = loop.reference.of("train", idx)
        values, grad = step(tokens, mask, ref_c, ref_r, grad, it % gas == 0)
        mx.eval(model.state, optimizer.state, values, grad)
        n_tokens = int(mask.sum().item())
        window.add(values, n_tokens, time.perf_counter() - tic)
        if it % config.steps_per_report == 0 or it == config.iters:
            trained += window.tokens
            loss, chosen, rejected, accuracy = window.sums / window.steps
            if not math.isfinite(loss):
                loop.fail(it, f"the training loss is {loss}")
            record = MetricsRecord.train(
                it,
                train_loss=loss,
                learning_rate=optimizer.learning_rate.item(),
                tokens_per_second=window.tokens / window.seconds,
                iterations_per_second=window.steps / window.seconds,
                trained_tokens=trained,
                peak_memory=mx.get_peak_memory() / 1e9,
            )
            loop.record(
                replace(
                    record,
                    stage=loop.stage.index,
                    reward_chosen=float(chosen),
                    reward_rejected=float(rejected),
                    reward_margin=float(chosen - rejected),
                    reward_accuracy=float(accuracy),
                )
            )
            window = Window()
    loop.completed = config.iters  # as after `train`: no batch is asked for after the last step


def splits(config: TrainConfig, tokenizer, events) -> tuple[PairSplit, PairSplit | None]:
    """The train and valid pairs, untrainable pairs set aside or refused as for SFT rows."""
    args = (Path(config.data), tokenizer, config.max_seq_length)
    train = tokenized_pairs(args[0], "train", *args[1:])
    if train is None or not (len(train) or train.untrainable):
        raise TrainingFailed(f"{config.data}/train.jsonl is missing or empty", field="data")
    valid = tokenized_pairs(args[0], "valid", *args[1:])
    for split in filter(None, (train, valid)):
        if not split.untrainable:
            continue
        message = split.describe_untrainable(config.max_seq_length)
        if not len(split):
            raise TrainingFailed(f"{message}: none would be left; raise max_seq_length")
        if config.cut_rows == "refuse":
            raise TrainingFailed(f'{message}; raise max_seq_length, or set cut_rows = "skip"')
        events.send("warning", message=f"{message}; skipped them")
    if len(train) < config.batch_size:
        raise TrainingFailed(
            f"{config.batch_size} is more than the {len(train)} pairs of {train.path}",
            field="batch_size",
        )
    return train, (valid if valid is not None and len(valid) else None)


def run_dpo(run: RunDir, config: TrainConfig, model, tokenizer, events, resuming, stop) -> int:
    """The worker's body for method dpo, after the model is loaded; returns the exit code."""
    train, valid = splits(config, tokenizer, events)
    mx.random.seed(config.seed)
    prepare_model(model, config)
    if config.from_adapter:
        load_trainable(model, Path(config.from_adapter), "from_adapter")
    if not resuming:
        shutil.rmtree(run.best, ignore_errors=True)
        shutil.rmtree(run.checkpoint, ignore_errors=True)
        for stale in (run.reference, run.dropped):
            stale.unlink(missing_ok=True)
    named = {"train": train, **({"valid": valid} if valid else {})}
    reference = ref.load_or_compute(
        run.reference, model, named, config.batch_size, config.max_seq_length
    )
    rows = runs.data_manifest(config.data)["train"]["rows"]
    plan = schedule.plan(config, rows)
    optimizer = build_optimizer(config)
    loop = PreferenceLoop(run, config, model, optimizer, train, valid, reference, plan, events)
    stop.attach(loop)  # the worker's SIGTERM/SIGINT handler
    if resuming:
        loop.restore_checkpoint()
    if loop.completed >= config.iters:
        events.send("done", iteration=loop.completed)
        return 0
    write_json(adapter_config_file(run.adapter), adapter_config(config))
    events.send("started", iteration=loop.completed, iters=config.iters)
    try:
        train_loop(loop, model, optimizer, config)
    except EarlyStop:
        events.send("early_stop", iteration=loop.completed)
    except Interrupted:
        events.send("interrupted", iteration=loop.completed)
        return INTERRUPTED_EXIT
    else:
        events.send("step", iteration=loop.completed)
    loop.finish()
    events.send("done", iteration=loop.completed, peak_memory=mx.get_peak_memory() / 1e9)
    return 0
