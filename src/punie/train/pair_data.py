"""Preference rows -> batches of token sequences, and the summed log-prob of each answer.

Each row of `train.jsonl` / `valid.jsonl` becomes a `PairTokens` (`punie.chat.preference`: the
rendering `punie dataset validate --model` checks). A batch of B pairs is 2B rows, the chosen
answers first and then the rejected ones, padded to the longest and cut at `max_seq_length`, with
a mask over the answer's targets. `sequence_logps` sums log π(token) over those targets: one
forward pass gives all 2B summed log-probs, for the policy as for the reference.

A pair whose answers both start beyond `max_seq_length` has nothing to score; like SFT rows with
no trained token (`punie.train.masking`), such pairs are set aside by line before training.
The batch order is mlx_lm's scheme (rows sorted by length, cut into batches, the batches shuffled
each epoch with numpy), kept in a `Cursor` so a resumed run draws the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from punie.chat.preference import PairTokens, pair_tokens
from punie.errors import DataError, PunieError
from punie.fsio import read_jsonl
from punie.train.masking import Cursor

PAD_TO = 32


@dataclass(frozen=True)
class PairSplit:
    """One preference file, tokenized: its scorable pairs (with their line numbers), and the
    lines of the pairs that have nothing to score within `max_seq_length`."""

    path: Path
    pairs: tuple[PairTokens, ...]
    lines: tuple[int, ...]  # the line of each pair in `pairs`
    untrainable: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.pairs)

    def describe_untrainable(self, max_seq_length: int) -> str:
        total = len(self.pairs) + len(self.untrainable)
        return (
            f"{self.path}: {len(self.untrainable)} of {total} pairs have no answer token within "
            f"max_seq_length={max_seq_length} (first: {self.path}:{self.untrainable[0]})"
        )


def tokenized_pairs(data: Path, name: str, tokenizer: Any, max_seq_length: int):
    """`data/name.jsonl` as pairs; None if the file is absent. Bad rows name file and line."""
    path = Path(data) / f"{name}.jsonl"
    if not path.is_file():
        return None
    pairs, lines, untrainable = [], [], []
    for line, row in read_jsonl(path):
        if not isinstance(row, dict) or "prompt" not in row:
            raise DataError(
                f"{path}:{line}: prompt: missing; method dpo trains on preference rows "
                "(prompt, chosen, rejected), e.g. from `punie dataset pairs`"
            )
        try:
            pair = pair_tokens(tokenizer, row)
        except PunieError as e:
            raise DataError(f"{path}:{line}: {e}") from None
        if max(pair.chosen.start, pair.rejected.start) >= max_seq_length:
            untrainable.append(line)
        else:
            pairs.append(pair)
            lines.append(line)
    return PairSplit(path, tuple(pairs), tuple(lines), tuple(untrainable))


def batch_indices(pairs: Sequence[PairTokens], keep: Sequence[int], batch_size: int):
    """The kept pairs sorted by length and cut into whole batches (a short last one is dropped,
    as mlx_lm drops it)."""
    ordered = sorted(keep, key=lambda i: pairs[i].length)
    starts = range(0, len(ordered) - batch_size + 1, batch_size)
    return [ordered[i : i + batch_size] for i in starts]


def pair_batch(pairs: Sequence[PairTokens], idx: Sequence[int], max_seq_length: int):
    """(tokens (2B, W), answer-target mask (2B, W−1)) for pairs `idx`: chosen, then rejected."""
    seqs = [pairs[i].chosen for i in idx] + [pairs[i].rejected for i in idx]
    # mlx_lm's padding (a multiple of 32, plus one): few distinct shapes, few recompilations
    longest = max(len(s.tokens) for s in seqs)
    width = min(1 + PAD_TO * ((longest + PAD_TO - 1) // PAD_TO), max_seq_length)
    tokens = np.zeros((len(seqs), width), np.int32)
    mask = np.zeros((len(seqs), max(width - 1, 1)), bool)
    for j, seq in enumerate(seqs):
        length = min(len(seq.tokens), width)
        tokens[j, :length] = seq.tokens[:length]
        mask[j, max(seq.start - 1, 0) : length - 1] = True  # target k is token k + 1
    return mx.array(tokens), mx.array(mask)


def iterate_pair_batches(
    pairs: Sequence[PairTokens],
    keep: Sequence[int],
    batch_size: int,
    max_seq_length: int,
    *,
    cursor: Cursor | None = None,
    loop: bool = False,
) -> Iterator[tuple[mx.array, mx.array, np.ndarray]]:
    """Training batches (`loop`: shuffled, epoch after epoch, from `cursor`) or, without `loop`,
    every kept pair once in order, the last batch possibly short. Yields (tokens, mask, pair
    indices)."""
    if not loop:
        for i in range(0, len(keep), batch_size):
            idx = list(keep[i : i + batch_size])
            yield (*pair_batch(pairs, idx, max_seq_length), np.array(idx))
        return
    batches = batch_indices(pairs, keep, batch_size)
    if not batches:
        raise DataError(f"{len(keep)} pairs are fewer than one batch of {batch_size}")
    cursor = cursor if cursor is not None else Cursor()
    while True:
        if cursor.order is None or cursor.next >= len(cursor.order):
            cursor.order = np.random.permutation(len(batches)).tolist()
            cursor.next = 0
        idx = batches[cursor.order[cursor.next]]
        cursor.next += 1
        yield (*pair_batch(pairs, idx, max_seq_length), np.array(idx))


def sequence_logps(model: nn.Module, tokens: mx.array, mask: mx.array) -> mx.array:
    """Σ log π(token) over each row's answer targets: shape (rows,), float32."""
    logits = model(tokens[:, :-1]).astype(mx.float32)
    targets = tokens[:, 1:]
    logp = -nn.losses.cross_entropy(logits, targets)
    return (logp * mask[:, : targets.shape[1]]).sum(axis=-1)


def split_halves(values: mx.array) -> tuple[mx.array, mx.array]:
    """(chosen, rejected) from a batch's 2B values."""
    half = values.shape[0] // 2
    return values[:half], values[half:]
