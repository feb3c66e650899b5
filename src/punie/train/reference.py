"""The frozen reference's log-probs: computed once, before the first step, kept in the run folder.

The reference is the model as training starts (the base plus `from_adapter`), so its summed
log-prob of every pair's chosen and rejected answer is taken in one pass over the train and
valid pairs before any update, in eval mode (no dropout), and saved to `reference.safetensors`:
per split, an array (pairs, 2) of [chosen, rejected]. Every epoch, stage and resume reads them
back; a training step runs only the policy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from punie.errors import DataError
from punie.train.pair_data import PairSplit, iterate_pair_batches, sequence_logps, split_halves


@dataclass(frozen=True)
class ReferenceLogps:
    """Per split, an array (pairs, 2): the reference's summed log-prob of [chosen, rejected]."""

    splits: dict[str, np.ndarray]

    def of(self, split: str, idx: np.ndarray) -> tuple[mx.array, mx.array]:
        values = self.splits[split][idx]
        return mx.array(values[:, 0]), mx.array(values[:, 1])

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp.safetensors")
        mx.save_safetensors(str(tmp), {k: mx.array(v) for k, v in self.splits.items()})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, sizes: dict[str, int]) -> ReferenceLogps:
        splits = {k: np.array(v) for k, v in mx.load(str(path)).items()}
        for name, size in sizes.items():
            if name not in splits or splits[name].shape != (size, 2):
                raise DataError(
                    f"{path}: holds no reference log-probs for the {size} {name} pairs; "
                    "the data changed since the run started"
                )
        return cls(splits)


def compute(model, splits: dict[str, PairSplit], batch_size: int, max_seq_length: int):
    """The reference log-probs of every pair of each split, in one pass, in eval mode."""
    model.eval()
    out = {}
    for name, split in splits.items():
        rows = []
        keep = range(len(split))
        for tokens, mask, _ in iterate_pair_batches(split.pairs, keep, batch_size, max_seq_length):
            chosen, rejected = split_halves(sequence_logps(model, tokens, mask))
            mx.eval(chosen, rejected)
            rows.append(np.stack([np.array(chosen), np.array(rejected)], axis=1))
        out[name] = np.concatenate(rows) if rows else np.zeros((0, 2), np.float32)
    model.train()
    return ReferenceLogps(out)


def load_or_compute(path: Path, model, splits: dict[str, PairSplit], batch_size, max_seq_length):
    """The saved reference log-probs if the run folder has them, else computed now and saved."""
    sizes = {name: len(split) for name, split in splits.items()}
    if path.is_file():
        return ReferenceLogps.load(path, sizes)
    reference = compute(model, splits, batch_size, max_seq_length)
    reference.save(path)
    return reference
