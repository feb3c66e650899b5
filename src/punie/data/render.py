"""What would go wrong training on a row, found by rendering it through the model's template.

The template is `punie.chat.template.ChatTemplate` (the calls training makes), the loss mask is
`punie.chat.masking.trained_spans` (the spans training trains) and tool calls are read back with
`punie.chat.toolcalls.parse_calls` (eval's parser), so what these checks report is what training
and evaluation would do.
"""

from __future__ import annotations

import json
from typing import Any

from punie.chat.masking import Span, assistant_turns, trained_spans
from punie.chat.template import ChatTemplate
from punie.chat.toolcalls import Malformed, parse_calls
from punie.data.rows import tool_calls
from punie.errors import PunieError

# Tokenizing a row costs time and memory in proportion to its length (a 50 MB row took 96 s and
# 9.7 GB), so a row that is surely too long is reported without it. English runs at 4-5
# characters a token and code at 3-4; only long runs of one character (spaces, `=`) merge into
# longer tokens, and no vocabulary averages 32 over a whole row. So a row whose text holds more
# than 32 characters for each token of the limit is cut in training, whatever the tokenizer.
MAX_CHARS_PER_TOKEN = 32
_RENDERED = ("messages", "tools", "prompt", "completion", "text", "chosen", "rejected")


def rendered_chars(row: dict) -> int:
    """Characters of the strings a template renders from `row`: at most its rendered length."""
    total, stack = 0, [row.get(key) for key in _RENDERED]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return total


def surely_too_long(row: dict, max_tokens: int) -> str | None:
    """Why `row` cannot fit in `max_tokens` tokens, judged from its characters alone; None when
    it may fit (then only the tokenizer can tell)."""
    chars = rendered_chars(row)
    if chars <= max_tokens * MAX_CHARS_PER_TOKEN:
        return None
    return (
        f"{chars} characters, more than {max_tokens} tokens even at {MAX_CHARS_PER_TOKEN} "
        "characters a token (not tokenized)"
    )


def chat_problems(
    template: ChatTemplate, row: dict, max_seq_length: int, mask_prompt: bool = True
) -> list[tuple[str, str]]:
    """What would go wrong training on a chat row: (field, reason) pairs.

    A tool call is reported as out of the loss only when the spans training trains
    (`trained_spans` under `mask_prompt`, cut at `max_seq_length`) leave it out: with
    `mask_prompt` every assistant turn trains, so a multi-turn agent row is fine as it is.
    """
    messages, tools = row["messages"], row.get("tools")
    try:
        tokens, spans = trained_spans(template.tokenizer, messages, tools, mask_prompt=mask_prompt)
    except PunieError as e:  # the template cannot be masked per turn: training refuses the row
        field, _, reason = str(e).partition(": ")
        return [(field, reason)]
    except Exception as e:  # jinja raises anything the template author wrote
        return [("messages", f"the chat template fails on this row: {e}")]
    n = len(tokens)
    out: list[tuple[str, str]] = []
    if n > max_seq_length:
        out.append(("messages", _too_long("", n, max_seq_length)))
    calls = sorted({i for i, _ in tool_calls(row)})
    turns = _turn_spans(template, messages, tools) if calls else {}
    for i in calls:
        out += _check_calls(template, messages, tools, i)
        if i in turns and (why := _out_of_loss(turns[i], spans, n, max_seq_length, mask_prompt)):
            out.append((f"messages[{i}].tool_calls", why))
    return out


def _turn_spans(template: ChatTemplate, messages: list[dict], tools: Any) -> dict[int, Span]:
    """Each assistant turn's tokens, by message index ({} if the template cannot say)."""
    try:
        return dict(assistant_turns(template.tokenizer, messages, tools))
    except PunieError:
        return {}


def _out_of_loss(
    turn: Span, spans: list[Span], n: int, max_seq_length: int, mask_prompt: bool
) -> str | None:
    """Why training leaves (part of) this turn out of the loss, or None when it trains all of it."""
    start, end = turn
    length = min(n, max_seq_length)
    trained = sum(max(0, min(e, end, length) - max(s, start)) for s, e in spans)
    if trained == end - start:
        return None
    how = "--mask-prompt" if mask_prompt else "--no-mask-prompt"
    if end > length:
        where = f"tokens {start}-{end}, cut at --max-seq-length {max_seq_length}"
    else:
        where = f"tokens {start}-{end}, not in the spans {how} trains"
    part = "partly " if trained else ""
    return f"{part}masked out of the loss ({where})"


def preference_problems(
    template: ChatTemplate, row: dict, max_seq_length: int
) -> list[tuple[str, str]]:
    """What would go wrong training DPO on a preference row, rendered the way TRL renders it:
    message lists through the chat template (the prompt with the generation prompt, then
    prompt + answer for each answer), strings as plain text."""
    if isinstance(row["prompt"], str):
        out = []
        for key in ("chosen", "rejected"):
            n = len(template.tokenizer.encode(row["prompt"] + row[key]))
            if n > max_seq_length:
                out.append((key, _too_long(f"prompt + {key}", n, max_seq_length)))
        return out
    prompt, tools = row["prompt"], row.get("tools")
    try:
        before = template.text(prompt, tools, add_generation_prompt=True)
    except Exception as e:
        return [("prompt", f"the chat template fails on the prompt: {e}")]
    out = []
    for key in ("chosen", "rejected"):
        full = prompt + row[key]
        try:
            n, text = len(template.tokens(full, tools)), template.text(full, tools)
        except Exception as e:
            out.append((key, f"the chat template fails on prompt + {key}: {e}"))
            continue
        if n > max_seq_length:
            out.append((key, _too_long(f"prompt + {key}", n, max_seq_length)))
        if not text.startswith(before):
            out.append(
                (
                    key,
                    f"the template renders the prompt differently once {key} follows it; "
                    "TRL cuts the prompt at the first difference and trains on the rest",
                )
            )
        answer_calls = {i for i, _ in tool_calls({"messages": full}) if i >= len(prompt)}
        for i in sorted(answer_calls):
            out += [
                (f"{key}[{i - len(prompt)}].tool_calls", reason)
                for _, reason in _check_calls(template, full, tools, i)
            ]
    return out


def _check_calls(
    template: ChatTemplate, messages: list[dict], tools: Any, i: int
) -> list[tuple[str, str]]:
    """Render up to turn i and back: the turn's text must parse into the same calls."""
    where = f"messages[{i}].tool_calls"
    try:
        before = template.text(messages[:i], tools, add_generation_prompt=True)
        upto = template.text(messages[: i + 1], tools)
    except Exception as e:
        return [(where, f"the chat template fails on this turn: {e}")]
    if not upto.startswith(before):
        return [(where, "the template renders earlier turns differently once this one is added")]
    try:
        parsed = parse_calls(upto[len(before) :])
    except Malformed as e:
        return [(where, f"renders to a call that does not parse back: {e}")]
    wanted = [_call(fn) for fn in (tc.get("function", tc) for tc in messages[i]["tool_calls"])]
    got = [(c.name, c.arguments) for c in parsed]
    if not got:
        return [(where, "the chat template renders no <tool_call> for this turn")]
    if got != wanted:
        return [(where, f"renders as {got!r}, which is not the row's calls {wanted!r}")]
    return []


def _too_long(what: str, n: int, max_seq_length: int) -> str:
    prefix = f"{what}: " if what else ""
    return f"{prefix}{n} tokens > --max-seq-length {max_seq_length}; it would be cut"


def _call(fn: dict) -> tuple[str, dict]:
    args = fn.get("arguments", {})
    if isinstance(args, str):
        args = json.loads(args) if args.strip() else {}
    return fn["name"], args
