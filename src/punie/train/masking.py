"""Batches whose loss covers the trained spans: every assistant turn, not only the last one.

Each row becomes its tokens plus the spans that carry loss, by `punie.chat.masking` (the one
masking rule, shared with the peft backend and `punie dataset validate`). Batches carry a
per-token mask and `masked_loss` averages the cross-entropy over exactly those tokens.

Everything else is mlx_lm's batching, reproduced on purpose: the same sort key, the same numpy
permutation draws, the same padding to a multiple of 32 plus one, and the same treatment of a row
whose trained span reaches its end (the first padding position after it is scored too, as
mlx_lm's `default_loss` does). With one span per row the loss is therefore bit-for-bit mlx_lm's,
which is what lets `benchmarks/train.py` compare the two loss curves. The batch order can also be
saved and restored (`Cursor`), so a resumed run sees the same batches an uninterrupted one would.

A row none of whose trained tokens lies within `max_seq_length` (all cut off, or none to begin
with) would add nothing but, in a batch of such rows, make the loss 0/0 = NaN and poison the
weights. `tokenized_split` tokenizes every row up front and sets those rows aside, by line, so the
batches mlx_lm's trainer draws never hold one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.tuner.datasets import CacheDataset, create_dataset

from punie.chat.masking import Span, trained_count, trained_spans
from punie.errors import DataError, PunieError
from punie.fsio import read_jsonl


class ChatTurns:
    """Chat rows -> (tokens, spans); with mask_prompt every assistant turn trains."""

    def __init__(self, rows: list[dict], tokenizer: Any, mask_prompt: bool, source: str = ""):
        self._rows = rows
        self.tokenizer = tokenizer
        self.mask_prompt = mask_prompt
        self.source = source

    def process(self, row: dict) -> tuple[list[int], list[Span]]:
        try:
            return trained_spans(
                self.tokenizer, row["messages"], row.get("tools"), mask_prompt=self.mask_prompt
            )
        except PunieError as e:
            where = f"{self.source}:{self._rows.index(row) + 1}: " if self.source else ""
            raise DataError(f"{where}{e}") from None

    def __getitem__(self, idx: int) -> dict:
        return self._rows[idx]

    def __len__(self) -> int:
        return len(self._rows)


class OneSpan:
    """mlx_lm's own dataset for completions and text rows, its (tokens, offset) as one span."""

    def __init__(self, inner: Any):
        self._inner = inner

    def process(self, row: dict) -> tuple[list[int], list[Span]]:
        tokens, offset = self._inner.process(row)
        return tokens, [(offset, len(tokens))]

    def __getitem__(self, idx: int) -> dict:
        return self._inner[idx]

    def __len__(self) -> int:
        return len(self._inner)


@dataclass(frozen=True)
class _Options:
    mask_prompt: bool


def make_dataset(rows: list[dict], tokenizer: Any, mask_prompt: bool, source: str = ""):
    """The dataset for rows of any mlx_lm format, detected from the first row as mlx_lm does."""
    if not rows:
        return rows
    first = rows[0]
    if "messages" in first and not ("prompt" in first and "completion" in first):
        return ChatTurns(rows, tokenizer, mask_prompt, source)
    try:
        return OneSpan(create_dataset(rows, tokenizer, _Options(mask_prompt)))
    except ValueError as e:
        raise DataError(f"{source}: {e}".splitlines()[0]) from None


def load_split(data: Path, name: str, tokenizer: Any, mask_prompt: bool):
    path = Path(data) / f"{name}.jsonl"
    if not path.is_file():
        return []
    rows = [row for _, row in read_jsonl(path)]
    return make_dataset(rows, tokenizer, mask_prompt, source=str(path))


class Processed(CacheDataset):
    """Rows already turned into (tokens, spans). A CacheDataset, so that batches sort by the same
    key mlx_lm's `iterate_batches` uses, and with the same tokens, without tokenizing twice."""

    def __init__(self, raw: list[dict], processed: list[tuple[list[int], list[Span]]]):
        self._raw = raw
        self._processed = processed

    def itemlen(self, idx: int) -> int:
        return len(self._raw[idx])

    def __getitem__(self, idx: int) -> tuple[list[int], list[Span]]:
        return self._processed[idx]

    def __len__(self) -> int:
        return len(self._raw)


@dataclass(frozen=True)
class Split:
    """One data file, tokenized: the rows that train, and the lines of those that cannot."""

    path: Path
    rows: Processed
    untrainable: tuple[int, ...]  # line numbers of rows with no trained token in max_seq_length

    def describe_untrainable(self, max_seq_length: int) -> str:
        total = len(self.rows) + len(self.untrainable)
        return (
            f"{self.path}: {len(self.untrainable)} of {total} rows have no trained token within "
            f"max_seq_length={max_seq_length} (first: {self.path}:{self.untrainable[0]})"
        )


def tokenized_split(data: Path, name: str, tokenizer: Any, mask_prompt: bool, max_seq_length: int):
    """`data/name.jsonl` tokenized, its untrainable rows set aside; None if the file is absent."""
    path = Path(data) / f"{name}.jsonl"
    if not path.is_file():
        return None
    numbered = list(read_jsonl(path))
    dataset = make_dataset([row for _, row in numbered], tokenizer, mask_prompt, source=str(path))
    raw, processed, untrainable = [], [], []
    for i, (line, row) in enumerate(numbered):
        tokens, spans = dataset.process(dataset[i])
        if trained_count(spans, len(tokens), max_seq_length):
            raw.append(row)
            processed.append((tokens, spans))
        else:
            untrainable.append(line)
    return Split(path, Processed(raw, processed), tuple(untrainable))


@dataclass
class Cursor:
    """Where the training batches stand: the current epoch's batch order and the next index."""

    order: list[int] | None = None
    next: int = 0


def _batch_indices(dataset: Any, batch_size: int, offset: int, step: int) -> list[list[int]]:
    # The sort key is mlx_lm's, whatever it measures, so that batches are the same as upstream.
    if isinstance(dataset, CacheDataset):
        idx = sorted(range(len(dataset)), key=dataset.itemlen)
    else:
        idx = sorted(range(len(dataset)), key=lambda i: len(dataset[i][0]))
    if len(dataset) < batch_size:
        raise ValueError(
            f"Dataset must have at least batch_size={batch_size} examples but only has "
            f"{len(dataset)}."
        )
    if batch_size % step != 0:
        raise ValueError("The batch size must be divisible by the number of workers")
    return [
        idx[i + offset : i + offset + batch_size : step]
        for i in range(0, len(idx) - batch_size + 1, batch_size)
    ]


def token_mask(spans: list[Span], full_length: int, length: int, width: int) -> np.ndarray:
    """Per-position loss mask for one row truncated to `length` in a batch `width` wide."""
    mask = np.zeros(width, dtype=bool)
    for start, end in spans:
        mask[start : min(end, length)] = True
        if end >= full_length and length < width:
            mask[length] = True  # mlx_lm scores the first padding position after the row
    return mask


def iterate_batches(
    dataset: Any,
    batch_size: int,
    max_seq_length: int,
    loop: bool = False,
    seed: int | None = None,
    comm_group: Any = None,
    cursor: Cursor | None = None,
) -> Iterator[tuple[mx.array, mx.array]]:
    """mlx_lm's `iterate_batches`, yielding (tokens, per-token mask) and keeping a Cursor."""
    offset, step = (comm_group.rank(), comm_group.size()) if comm_group is not None else (0, 1)
    batches = _batch_indices(dataset, batch_size, offset, step)
    if seed is not None:
        np.random.seed(seed)
    cursor = cursor if cursor is not None else Cursor()
    while True:
        if cursor.order is None or cursor.next >= len(cursor.order):
            cursor.order = np.random.permutation(len(batches)).tolist()
            cursor.next = 0
        while cursor.next < len(cursor.order):
            rows = [dataset[j] for j in batches[cursor.order[cursor.next]]]
            cursor.next += 1
            lengths = [len(tokens) for tokens, _ in rows]
            pad_to = 32
            width = min(1 + pad_to * ((max(lengths) + pad_to - 1) // pad_to), max_seq_length)
            tokens_arr = np.zeros((batch_size // step, width), np.int32)
            mask_arr = np.zeros((batch_size // step, width), bool)
            for j, (tokens, spans) in enumerate(rows[: batch_size // step]):
                length = min(lengths[j], max_seq_length)
                tokens_arr[j, :length] = tokens[:length]
                mask_arr[j] = token_mask(spans, lengths[j], length, width)
            yield mx.array(tokens_arr), mx.array(mask_arr)
        if not loop:
            break


def _masked(model: nn.Module, batch: mx.array, mask: mx.array):
    inputs = batch[:, :-1]
    targets = batch[:, 1:]
    logits = model(inputs)
    trained = mask[:, 1:]
    ce = nn.losses.cross_entropy(logits, targets) * trained
    ntoks = trained.sum()
    return ce.astype(mx.float32).sum() / ntoks, ntoks, logits, targets, trained


def masked_loss(model: nn.Module, batch: mx.array, mask: mx.array):
    """Mean cross-entropy over the positions `mask` marks; returns (loss, token count)."""
    loss, ntoks, *_ = _masked(model, batch, mask)
    return loss, ntoks


def token_hits(logits: mx.array, targets: mx.array, trained: mx.array) -> mx.array:
    """How many trained positions the model's argmax predicts right."""
    return ((mx.argmax(logits, axis=-1) == targets) & trained).sum()


def counting_loss(tallies: Any):
    """`masked_loss` that also adds its argmax hits and trained tokens to `tallies.aux` (a
    `punie.train.guard.GuardedOptimizer`): under `train_*` in training mode, `valid_*` in eval
    mode; in training also the finite losses, so a report over a skipped NaN step has a mean.

    The tallies are written into the optimizer's state because that is what mlx_lm's compiled
    step carries out of `mx.compile`; the values are `stop_gradient`ed, outside the loss."""

    def loss_fn(model: nn.Module, batch: mx.array, mask: mx.array):
        loss, ntoks, logits, targets, trained = _masked(model, batch, mask)
        aux = tallies.aux
        hits = mx.stop_gradient(token_hits(logits, targets, trained)).astype(mx.int32)
        prefix = "train" if model.training else "valid"
        aux[f"{prefix}_correct"] = aux[f"{prefix}_correct"] + hits
        aux[f"{prefix}_tokens"] = aux[f"{prefix}_tokens"] + ntoks.astype(mx.int32)
        if model.training:
            value = mx.stop_gradient(loss)
            finite = mx.isfinite(value)
            aux["train_loss_sum"] = aux["train_loss_sum"] + mx.where(finite, value, 0.0)
            aux["train_loss_steps"] = aux["train_loss_steps"] + finite.astype(mx.int32)
        return loss, ntoks

    return loss_fn
