"""TRL's DPOTrainer with Punie's preference schedule: stages, β per stage, Cal-DPO and Dr-DPO.

The plan is `punie.train.stages.plan`, the one the MLX backend follows, so one config trains the
same schedule on both. Each step looks up its stage by the step number and sets TRL's β from it.
A DPO stage is TRL's own loss ("sigmoid"); Cal-DPO and Dr-DPO have none in TRL, so their steps
take the same summed log-probs TRL's forward gives (policy, and TRL's frozen reference) and apply
`punie_peft.preference`, which mirrors `punie.train.preference`. Dr-DPO is taken over the batch's
per-pair losses, never over their mean. Every log carries the stage index.
"""

from __future__ import annotations

import torch
from trl import DPOTrainer

from punie.train.stages import Stage, stage_for_step
from punie_peft.preference import batch_loss

_NOT_MODEL_INPUTS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}


class StagedDPOTrainer(DPOTrainer):
    def __init__(self, *args, plan: tuple[Stage, ...], **kwargs):
        self.plan = plan
        super().__init__(*args, **kwargs)

    def current_stage(self) -> Stage:
        # the step about to run (training) or just run (validation at step k reads stage k+1's
        # loss, as the MLX loop does: the loss the next update will follow)
        return stage_for_step(self.plan, self.state.global_step + 1)

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
