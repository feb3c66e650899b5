"""A preference row's two sequences as a trainer sees them: tokens, and where the answer starts.

The rendering is the one `punie dataset validate --model` checks for preference rows (and TRL's):

- a `prompt` given as messages (with the row's `tools`) is rendered through the chat template with
  the generation prompt; each answer (assistant messages with tool calls, or a string, taken as
  one assistant message) is rendered after it as one conversation, and its tokens are those that
  follow the prompt's. A template that renders the prompt differently once an answer follows is
  refused: the answer's tokens would not be where the loss looks for them.
- a `prompt` given as a string is plain text: prompt, then answer, then the end-of-sequence
  token, tokenized apart and joined, as TRL does for non-conversational rows.

Pure functions of a tokenizer (anything with `apply_chat_template` and `encode`): no MLX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from punie.chat.masking import render_tokens
from punie.errors import DataError

ANSWERS = ("chosen", "rejected")


@dataclass(frozen=True)
class Sequence:
    tokens: list[int]
    start: int  # the first answer token; tokens[start:] are scored


@dataclass(frozen=True)
class PairTokens:
    chosen: Sequence
    rejected: Sequence

    @property
    def length(self) -> int:
        return max(len(self.chosen.tokens), len(self.rejected.tokens))


def _as_messages(answer: Any, key: str) -> list[dict]:
    if isinstance(answer, str):
        return [{"role": "assistant", "content": answer}]
    if isinstance(answer, list) and all(isinstance(m, dict) for m in answer):
        return answer
    raise DataError(f"{key}: must be a string or a list of messages")


def _text_answer(tokenizer: Any, prompt: list[int], answer: Any, key: str) -> Sequence:
    if not isinstance(answer, str):
        raise DataError(f"{key}: with a string prompt the answer must be a string too")
    tokens = list(tokenizer.encode(answer, add_special_tokens=False))
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        tokens.append(eos)
    return Sequence(prompt + tokens, len(prompt))


def pair_tokens(tokenizer: Any, row: dict) -> PairTokens:
    """The row's chosen and rejected sequences; a DataError names the field at fault."""
    for key in ("prompt", *ANSWERS):
        if key not in row:
            raise DataError(f"{key}: missing (preference rows need prompt, chosen, rejected)")
    prompt = row["prompt"]
    if isinstance(prompt, str):
        ids = list(tokenizer.encode(prompt, add_special_tokens=False))
        return PairTokens(*(_text_answer(tokenizer, ids, row[k], k) for k in ANSWERS))
    if not isinstance(prompt, list) or not all(isinstance(m, dict) for m in prompt):
        raise DataError("prompt: must be a string or a list of messages")
    tools = row.get("tools")
    try:
        before = render_tokens(tokenizer, prompt, tools, gen=True)
    except DataError:
        raise
    except Exception as e:  # jinja raises anything the template author wrote
        raise DataError(f"prompt: the chat template fails on it: {e}") from None
    out = []
    for key in ANSWERS:
        try:
            full = render_tokens(tokenizer, prompt + _as_messages(row[key], key), tools)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{key}: the chat template fails on prompt + {key}: {e}") from None
        if full[: len(before)] != before:
            raise DataError(
                f"{key}: the chat template renders the prompt differently once {key} follows it, "
                "so the answer's tokens cannot be told apart"
            )
        if len(full) == len(before):
            raise DataError(f"{key}: renders to no tokens after the prompt")
        out.append(Sequence(full, len(before)))
    return PairTokens(*out)
