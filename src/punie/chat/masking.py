"""The loss-masking rule: which tokens of a row carry loss. One rule, for every user of it.

With `mask_prompt` every assistant turn of a chat row trains, and nothing else; without it the
whole row trains. (`mlx_lm lora --mask-prompt` trains only the final message, so a multi-turn
tool-use row would lose the tool call of every earlier assistant turn; Punie does not.) The MLX
worker and the peft backend build their loss masks from `trained_spans`, and `punie dataset
validate` reports a tool call as masked only when these spans, cut at `max_seq_length`, leave it
out, so validation and training cannot disagree.

Pure functions of a tokenizer (anything with `apply_chat_template`): no MLX, no torch.
"""

from __future__ import annotations

from typing import Any

from punie.errors import DataError

Span = tuple[int, int]  # [start, end) token positions that carry loss


def render_tokens(tokenizer: Any, messages: list[dict], tools: Any = None, gen: bool = False):
    """The conversation's tokens through the chat template, as training tokenizes it."""
    return list(
        tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=gen, return_dict=False
        )
    )


def assistant_spans(tokenizer: Any, messages: list[dict], tools: Any = None) -> list[Span]:
    """The token span of every assistant turn in the rendered conversation.

    A turn starts after the generation prompt that precedes it and ends after its end-of-turn
    marker. The spans are only right if each rendered prefix is a token prefix of the whole; a
    template for which that fails is refused rather than silently mis-masked.
    """
    return [span for _, span in assistant_turns(tokenizer, messages, tools)]


def assistant_turns(
    tokenizer: Any, messages: list[dict], tools: Any = None
) -> list[tuple[int, Span]]:
    """(message index, token span) of every assistant turn; see `assistant_spans`."""
    full = render_tokens(tokenizer, messages, tools)
    turns = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = render_tokens(tokenizer, messages[:i], tools, gen=True)
        through = (
            full if i == len(messages) - 1 else render_tokens(tokenizer, messages[: i + 1], tools)
        )
        if full[: len(before)] != before or full[: len(through)] != through:
            raise DataError(
                f"messages[{i}]: the chat template does not render this assistant turn as a "
                "continuation of the conversation before it, so its tokens cannot be masked "
                "per turn; train without mask_prompt"
            )
        turns.append((i, (len(before), len(through))))
    return turns


def trained_spans(
    tokenizer: Any, messages: list[dict], tools: Any = None, *, mask_prompt: bool
) -> tuple[list[int], list[Span]]:
    """A chat row's tokens and the spans that carry loss under `mask_prompt`."""
    tokens = render_tokens(tokenizer, messages, tools)
    if not mask_prompt:
        return tokens, [(0, len(tokens))]
    return tokens, assistant_spans(tokenizer, messages, tools)


def trained_count(spans: list[Span], full_length: int, max_seq_length: int) -> int:
    """How many targets of a row carry loss once it is cut to `max_seq_length`, exactly as the
    MLX worker's `token_mask` and `masked_loss` count them (position 0 is never a target)."""
    length = min(full_length, max_seq_length)
    count = sum(max(0, min(end, length) - max(start, 1)) for start, end in spans)
    if length < max_seq_length and any(end >= full_length for _, end in spans):
        count += 1  # the first padding position after the row, as in `token_mask`
    return count
