"""Chat rows through a model's chat template, exactly as `mlx_lm lora` will render them.

Training tokenizes `apply_chat_template(messages, tools=tools)` with the tokenizer mlx_lm loads;
with `--mask-prompt` only the tokens after `apply_chat_template(messages[:-1], ...,
add_generation_prompt=True)` count in the loss, i.e. the final message. `ChatTemplate` makes the
same calls, so what it finds is what training would do.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from punie.data.rows import tool_calls
from punie.errors import DataError

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


class ChatTemplate:
    """A model's tokenizer and chat template, loaded the way mlx_lm loads them."""

    def __init__(self, model: str | Path):
        from punie.model.resolve import resolve_model

        self.tokenizer = _load_tokenizer(str(resolve_model(model)))
        self.model = str(model)

    def tokens(self, messages: list[dict], tools: Any = None, **kw: Any) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, tools=tools, return_dict=False, **kw)

    def text(self, messages: list[dict], tools: Any = None, **kw: Any) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **kw)

    def length(self, row: dict) -> int:
        """Tokens training sees for a row of any kind (chat template for chat and completions)."""
        if "messages" in row:
            return len(self.tokens(row["messages"], row.get("tools")))
        if "completion" in row and isinstance(row.get("prompt"), str):
            msgs = [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"]},
            ]
            return len(self.tokens(msgs, row.get("tools")))
        text = row.get("text") or json.dumps(row, ensure_ascii=False)
        return len(self.tokenizer.encode(text))

    def problems(
        self, row: dict, max_seq_length: int, mask_prompt: bool = True
    ) -> list[tuple[str, str]]:
        """What would go wrong training on a chat row: (field, reason) pairs."""
        messages, tools = row["messages"], row.get("tools")
        out: list[tuple[str, str]] = []
        try:
            n = len(self.tokens(messages, tools))
        except Exception as e:  # jinja raises anything the template author wrote
            return [*out, ("messages", f"the chat template fails on this row: {e}")]
        if n > max_seq_length:
            out.append(("messages", _too_long("", n, max_seq_length)))
        for i in sorted({i for i, _ in tool_calls(row)}):
            out += self._check_calls(messages, tools, i)
            if mask_prompt and i != len(messages) - 1:
                out.append(
                    (
                        f"messages[{i}].tool_calls",
                        "not the final message; with --mask-prompt only the final message is "
                        "trained, so this call is masked out of the loss",
                    )
                )
        return out

    def preference_problems(self, row: dict, max_seq_length: int) -> list[tuple[str, str]]:
        """What would go wrong training DPO on a preference row, rendered the way TRL renders it:
        message lists through the chat template (the prompt with the generation prompt, then
        prompt + answer for each answer), strings as plain text."""
        if isinstance(row["prompt"], str):
            out = []
            for key in ("chosen", "rejected"):
                n = len(self.tokenizer.encode(row["prompt"] + row[key]))
                if n > max_seq_length:
                    out.append((key, _too_long(f"prompt + {key}", n, max_seq_length)))
            return out
        prompt, tools = row["prompt"], row.get("tools")
        try:
            before = self.text(prompt, tools, add_generation_prompt=True)
        except Exception as e:
            return [("prompt", f"the chat template fails on the prompt: {e}")]
        out = []
        for key in ("chosen", "rejected"):
            full = prompt + row[key]
            try:
                n, text = len(self.tokens(full, tools)), self.text(full, tools)
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
                    for _, reason in self._check_calls(full, tools, i)
                ]
        return out

    def _check_calls(self, messages: list[dict], tools: Any, i: int) -> list[tuple[str, str]]:
        """Render up to turn i and back: the turn's text must parse into the same calls."""
        from punie.eval.toolcalls import Malformed, parse_calls

        where = f"messages[{i}].tool_calls"
        try:
            before = self.text(messages[:i], tools, add_generation_prompt=True)
            upto = self.text(messages[: i + 1], tools)
        except Exception as e:
            return [(where, f"the chat template fails on this turn: {e}")]
        if not upto.startswith(before):
            return [
                (where, "the template renders earlier turns differently once this one is added")
            ]
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


@cache
def _load_tokenizer(path: str):
    """One load per model folder and process (loading costs seconds; rows share it)."""
    import logging

    from mlx_lm.utils import load_tokenizer

    # transformers warns "Token indices sequence length is longer than..." on long rows; Punie
    # measures rows against --max-seq-length itself and says so in its own words.
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    try:
        return load_tokenizer(Path(path))
    except Exception as e:  # a broken tokenizer folder raises anything
        raise DataError(f"{path}: cannot load the tokenizer ({e})") from e


def _call(fn: dict) -> tuple[str, dict]:
    args = fn.get("arguments", {})
    if isinstance(args, str):
        args = json.loads(args) if args.strip() else {}
    return fn["name"], args
