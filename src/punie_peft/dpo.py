"""TRL's DPOTrainer with Punie's preference schedule: stages, β per stage, Cal-DPO and Dr-DPO.

The plan is `punie.train.stages.plan`, the one the MLX backend follows, so one config trains the
same schedule on both. Each step looks up its stage by the step number and sets TRL's β from it.
A DPO stage is TRL's own loss ("sigmoid"); Cal-DPO and Dr-DPO have none in TRL, so their steps
take the same summed log-probs TRL's forward gives (policy, and TRL's frozen reference) and apply
`punie_peft.preference`, which mirrors `punie.train.preference`. Dr-DPO is taken over the batch's
per-pair losses, never over their mean. Every log carries the stage index.

`drop_noisy`: the Trainer's loader reads one batch ahead, so a drop decided while it runs would
use weights one step old. When a stage drops pairs, the batches come from here instead: at the
first step of each stage (after the previous update), every kept pair is scored with the current
policy and TRL's reference under the stage's loss (no grad), the `drop_noisy` fraction with the
highest loss is dropped (MLX's rule: `punie.train.stages.dropped_count`, stable order by row) and
listed in `dropped.jsonl` as MLX writes it, and the stage runs its own shuffled epochs over the
pairs left. The Trainer's loader then only counts the steps.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from trl import DPOTrainer

from punie.errors import BackendError
from punie.fsio import write_jsonl
from punie.train.stages import Stage, dropped_count, stage_for_step
from punie_peft.preference import batch_loss, pair_losses

_NOT_MODEL_INPUTS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}


class StagedDPOTrainer(DPOTrainer):
    def __init__(
        self,
        *args,
        plan: tuple[Stage, ...],
        lines: list[int] | None = None,
        dropped: Path | None = None,
        **kwargs,
    ):
        self.plan = plan
        self.lines = lines  # train.jsonl's line of each row (for dropped.jsonl)
        self.dropped_file = dropped
        self.drops = any(stage.drop_noisy for stage in plan)
        self.dropped_rows: list[dict] = []
        self.entered: Stage | None = None
        self.batches = None
        super().__init__(*args, **kwargs)
        if self.drops:
            if self.accelerator.num_processes > 1:
                raise BackendError("stages: drop_noisy on backend peft runs in one process only")
            self.pairs = self._remove_unused_columns(self.train_dataset, description="training")
            self.keep = list(range(len(self.pairs)))
            if lines is None or len(lines) != len(self.keep) or dropped is None:
                raise BackendError("stages: drop_noisy needs each train row's line and the run")

    def current_stage(self) -> Stage:
        # the step about to run (training) or just run (validation at step k reads stage k+1's
        # loss, as the MLX loop does: the loss the next update will follow)
        return stage_for_step(self.plan, self.state.global_step + 1)

    # --- drop_noisy: the stage's own batches ----------------------------------------------------
    def training_step(self, model, inputs, *args, **kwargs):
        if self.drops:
            stage = stage_for_step(self.plan, self.state.global_step + 1)
            if self.entered is None or stage.index != self.entered.index:
                self._enter(model, stage)
            inputs = self.data_collator([self.pairs[i] for i in next(self.batches)])
        return super().training_step(model, inputs, *args, **kwargs)

    def _enter(self, model, stage: Stage) -> None:
        """Start `stage` on the weights as they stand: its drop, then its epochs."""
        if stage.drop_noisy:
            losses = self.pair_losses(model, stage, self.keep)
            n = dropped_count(len(self.keep), stage.drop_noisy)
            worst = np.argsort(-np.asarray(losses), kind="stable")[:n]
            gone = {self.keep[j] for j in worst}
            self.dropped_rows += [
                {
                    "stage": stage.index,
                    "iteration": stage.start,
                    "line": self.lines[self.keep[j]],
                    "loss": float(losses[j]),
                }
                for j in worst
            ]
            self.keep = [i for i in self.keep if i not in gone]
        if len(self.keep) != stage.kept:  # the plan fixed the counts before training
            kept = len(self.keep)
            raise BackendError(f"stage {stage.index}: {kept} pairs kept, the plan has {stage.kept}")
        if self.is_world_process_zero():
            write_jsonl(self.dropped_file, self.dropped_rows)
        self.entered = stage
        self.batches = self._epochs(stage)

    def _epochs(self, stage: Stage):
        """Shuffled passes over the kept pairs in whole batches (a short last one left out)."""
        rng = random.Random(self.args.seed + stage.index)
        size = self.args.per_device_train_batch_size
        while True:
            order = rng.sample(self.keep, len(self.keep))
            for i in range(0, len(order) - size + 1, size):
                yield order[i : i + size]

    @torch.no_grad()
    def pair_losses(self, model, stage: Stage, rows: list[int]) -> list[float]:
        """Each row's loss under `stage` (Dr-DPO: its per-pair DPO loss), policy in eval mode."""
        training = model.training
        model.eval()
        out: list[float] = []
        size = self.args.per_device_train_batch_size
        try:
            for i in range(0, len(rows), size):
                batch = self.data_collator([self.pairs[j] for j in rows[i : i + size]])
                inputs = self._prepare_inputs(batch)
                chosen, rejected = self._summed_logps(model, inputs).chunk(2, dim=0)
                ref_c, ref_r = self.compute_ref_log_probs(model, inputs)
                r_c, r_r = chosen - ref_c, rejected - ref_r
                out += pair_losses(stage.preference_loss, r_c, r_r, stage.beta).float().tolist()
        finally:
            model.train(training)
        return out

    def _compute_loss(self, model, inputs, return_outputs):
        stage = self.current_stage()
        self.beta = stage.beta
        if stage.preference_loss == "dpo":
            return super()._compute_loss(model, inputs, return_outputs)
        return self._custom_loss(model, inputs, stage)

    def _summed_logps(self, model, inputs) -> torch.Tensor:
        """Each sequence's summed completion log-prob, from the forward TRL itself runs."""
        kwargs = {k: v for k, v in inputs.items() if k not in _NOT_MODEL_INPUTS}
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        out = model(**kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        seq_len = inputs["completion_mask"].size(1) - 1
        return out.log_probs[:, -seq_len:].sum(dim=1)

    def _custom_loss(self, model, inputs, stage: Stage):
        mode = "train" if self.model.training else "eval"
        chosen, rejected = self._summed_logps(model, inputs).chunk(2, dim=0)
        if self.precompute_ref_logps:
            ref_c, ref_r = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_c, ref_r = self.compute_ref_log_probs(model, inputs)
        r_c, r_r = chosen - ref_c, rejected - ref_r
        loss, _ = batch_loss(
            stage.preference_loss, r_c, r_r, beta=stage.beta, dr_beta=stage.dr_beta
        )
        rc, rr = (self.beta * r_c.detach()), (self.beta * r_r.detach())
        gather = self.accelerator.gather
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(rc).mean().item())
        metrics["rewards/rejected"].append(gather(rr).mean().item())
        metrics["rewards/margins"].append(gather(rc - rr).mean().item())
        metrics["rewards/accuracies"].append(gather((rc > rr).float()).mean().item())
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum()
            self._total_train_tokens += tokens.item()
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        logs["stage"] = self.current_stage().index if "loss" not in logs else self._train_stage()
        super().log(logs, start_time)

    def _train_stage(self) -> int:
        # a train report at step k covers the steps up to k: the stage of step k
        return stage_for_step(self.plan, max(self.state.global_step, 1)).index
