"""A preference run's schedule: its stages, each a span of iterations with its own loss and β.

Without `stages` a run is one stage over all its `iters` with the config's `preference_loss`,
`beta` and `dr_beta`. With `stages`, each stage runs `epochs` passes over the pairs still kept
when it starts; `drop_noisy` first drops that fraction of them (those with the highest loss under
the policy as it stands then). How many pairs are dropped depends only on the counts, so the whole
plan, and the run's `iters`, is known before training starts; which pairs go is decided then.

Pure functions of the config and the row count: `punie.train.launch` uses them to set `iters`,
the worker to know where each stage starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from punie.errors import ConfigError
from punie.train.config import TrainConfig


@dataclass(frozen=True)
class Stage:
    index: int
    start: int  # optimizer steps done when the stage starts
    end: int  # ... and when it ends
    preference_loss: str
    beta: float
    dr_beta: float
    drop_noisy: float = 0.0
    kept: int = 0  # pairs trained on in this stage (after its drop)

    def holds(self, step: int) -> bool:
        """Whether optimizer step `step` (1-based) belongs to this stage."""
        return self.start < step <= self.end


def dropped_count(pairs: int, fraction: float) -> int:
    return math.floor(fraction * pairs)


def plan(config: TrainConfig, pairs: int) -> tuple[Stage, ...]:
    """The stages of a run over `pairs` training pairs."""
    if not config.stages:
        c = config
        return (Stage(0, 0, c.iters, c.preference_loss, c.beta, c.dr_beta, kept=pairs),)
    out, start, kept = [], 0, pairs
    for i, raw in enumerate(config.stages):
        drop = float(raw.get("drop_noisy", 0.0))
        kept -= dropped_count(kept, drop)
        per_epoch = kept // config.batch_size
        if per_epoch < 1:
            raise ConfigError(
                f"stages[{i}]: {kept} pairs are left, fewer than one batch of {config.batch_size}"
            )
        iters = max(1, math.ceil(float(raw["epochs"]) * per_epoch))
        out.append(
            Stage(
                index=i,
                start=start,
                end=start + iters,
                preference_loss=raw.get("preference_loss", config.preference_loss),
                beta=float(raw.get("beta", config.beta)),
                dr_beta=float(raw.get("dr_beta", config.dr_beta)),
                drop_noisy=drop,
                kept=kept,
            )
        )
        start += iters
    return tuple(out)


def stage_for_step(stages: tuple[Stage, ...], step: int) -> Stage:
    """The stage optimizer step `step` (1-based) belongs to; step 0 (before any) is stage 0's."""
    for stage in stages:
        if stage.holds(step):
            return stage
    return stages[0] if step <= stages[0].start + 1 else stages[-1]
