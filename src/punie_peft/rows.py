"""Training rows -> token ids and loss labels, rendered by the model's own chat template.

The row formats are mlx-lm's (`messages` + optional `tools`, `prompt` + `completion`, `text`), read
from the same `train.jsonl` / `valid.jsonl`, so one dataset feeds both backends.

Which tokens carry loss (label != -100):
- `messages` rows with `mask_prompt`: every assistant turn, and only those. mlx-lm's
  `--mask-prompt` keeps only the *final* message; a row with a tool call, a tool result and a
  closing answer would lose its tool-call turn (field notes). The spans come from
  `punie.chat.masking.trained_spans`, the one masking rule the MLX backend and `punie dataset
  validate` use too, which renders the conversation up
  to each turn with and without it: any template works, `{% generation %}` markers or not (TRL's
  `assistant_only_loss` needs them, and the tiny model's template has none).
- `prompt`/`completion` rows with `mask_prompt`: the completion.
- otherwise: every token, as mlx-lm does.

Needs a Hugging Face tokenizer, not torch. Rows are tokenized as mlx-lm tokenizes them (the
template's own token ids; `text` rows get the EOS appended).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from punie.chat.masking import render_tokens, trained_spans
from punie.errors import DataError, PunieError
from punie.fsio import read_jsonl

IGNORE = -100


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    def as_dict(self) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids, "labels": self.labels}


def read_rows(path: Path) -> list[dict]:
    """JSONL rows; a bad line is a one-line error naming the file and line."""
    rows = [row for _, row in read_jsonl(path)]
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _labelled(ids: list[int], spans: list[tuple[int, int]]) -> Tokenized:
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        labels[start:end] = ids[start:end]
    return Tokenized(ids, labels)


def tokenize_row(tokenizer, row: dict, *, mask_prompt: bool, where: str = "row") -> Tokenized:
    """One row -> ids and labels, tokenized as mlx-lm tokenizes it; `where`
    ("data/train.jsonl:41") prefixes any error."""
    try:
        if "messages" in row:
            messages, tools = row["messages"], row.get("tools")
            ids, spans = trained_spans(tokenizer, messages, tools, mask_prompt=mask_prompt)
            if not spans:
                raise DataError("messages: no assistant turn to train on")
        elif "prompt" in row and "completion" in row:
            prompt = [{"role": "user", "content": row["prompt"]}]
            full = prompt + [{"role": "assistant", "content": row["completion"]}]
            ids = render_tokens(tokenizer, full, row.get("tools"), False)
            start = (
                len(render_tokens(tokenizer, prompt, row.get("tools"), True)) if mask_prompt else 0
            )
            spans = [(start, len(ids))]
        elif "text" in row:
            ids = list(tokenizer.encode(row["text"], add_special_tokens=False))
            if tokenizer.eos_token_id is not None and ids[-1:] != [tokenizer.eos_token_id]:
                ids.append(tokenizer.eos_token_id)
            spans = [(0, len(ids))]
        else:
            raise DataError(f"keys {sorted(row)}: expected messages, prompt+completion, or text")
    except PunieError as e:
        raise DataError(f"{where}: {e}") from None
    return _labelled(ids, spans)


def tokenize_file(tokenizer, path: Path, *, mask_prompt: bool, max_length: int) -> list[dict]:
    """A JSONL split as trainer-ready {"input_ids", "labels"} rows, truncated to `max_length`."""
    out = []
    for n, row in enumerate(read_rows(path), 1):
        t = tokenize_row(tokenizer, row, mask_prompt=mask_prompt, where=f"{path}:{n}")
        out.append({"input_ids": t.input_ids[:max_length], "labels": t.labels[:max_length]})
    return out


def preference_rows(path: Path) -> list[dict]:
    """DPO rows {"prompt", "chosen", "rejected"} (strings, or message lists), checked."""
    rows = read_rows(path)
    for n, row in enumerate(rows, 1):
        for key in ("prompt", "chosen", "rejected"):
            if key not in row:
                raise DataError(
                    f"{path}:{n}: {key}: missing (preference rows need prompt, chosen, rejected)"
                )
            if not isinstance(row[key], str | list):
                raise DataError(f"{path}:{n}: {key}: must be a string or a list of messages")
    return [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows]
