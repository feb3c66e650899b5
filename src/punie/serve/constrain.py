"""Constrained decoding: a tool call that always parses and always matches a tool's schema.

From an OpenAI request's `tools`, `tool_choice`, `parallel_tool_calls` and `response_format`,
`Constraint.from_request` says what a reply may be; `grammar(constraint, fmt)` writes that as an
llguidance grammar in the model's own tool-call format (`ToolFormat`: the markers mlx_lm's tool
parser looks for, `<tool_call>{json}</tool_call>` for the JSON family); `GrammarProcessor` is an
mlx_lm logits processor that masks every token the grammar does not allow.

- `tool_choice` "auto" (the default with tools): free text, or tool-call blocks (after optional
  text); "required": at least one call and nothing else; a named function: exactly that one;
  "none" (or no tools): no tool constraint.
- Each call is `{"name": <one of the tools>, "arguments": <that tool's parameters schema>}`,
  written as the chat template writes it (`", "` and `": "`, no other whitespace), so the model
  stays on the text it was trained on.
- `response_format` {"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema":
  ...}} makes the reply's text that JSON (tool calls, when the request allows them, stay open).

The grammar engine is llguidance (a maintained Rust library, JSON Schema draft 2020-12 less what
its docs list). Its own MLX helper needs Metal, so the mask goes through numpy, which runs
wherever MLX does. Bad input (an unknown function, a schema llguidance cannot compile) raises
`ConstraintError` with one line naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from punie.errors import ConstraintError

# The chat template writes arguments with `tojson` (json.dumps' default separators).
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class Constraint:
    """What a reply may be: `calls` is "none", "auto", "required" or "one" (exactly one call)."""

    tools: tuple[tuple[str, str], ...] = ()  # (name, parameters schema as JSON), request order
    calls: str = "none"
    text_schema: str | None = None  # the reply text's JSON schema, from response_format
    parallel: bool = True

    @property
    def active(self) -> bool:
        return self.calls != "none" or self.text_schema is not None

    @classmethod
    def from_request(cls, body: dict) -> Constraint:
        tools = _tools(body.get("tools"))
        calls, tools = _choice(body.get("tool_choice"), tools)
        parallel = body.get("parallel_tool_calls", True)
        if not isinstance(parallel, bool):
            raise ConstraintError(f"parallel_tool_calls: {parallel!r} is not true or false")
        return cls(tools, calls, _text_schema(body.get("response_format")), parallel)


def _tools(tools: Any) -> tuple[tuple[str, str], ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise ConstraintError("tools: must be a list of {type: function, function: {...}}")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise ConstraintError(f"tools[{i}].function.name: missing or not a string")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object"}
        if not isinstance(params, dict):
            raise ConstraintError(f"tools[{i}].function.parameters: not a JSON schema object")
        out.append((name, json.dumps(params)))
    return tuple(out)


def _choice(choice: Any, tools: tuple) -> tuple[str, tuple]:
    if choice is None:
        return ("auto" if tools else "none"), tools
    if choice in ("none", "auto", "required"):
        if choice == "required" and not tools:
            raise ConstraintError("tool_choice: 'required' needs at least one tool in tools")
        return (choice if tools else "none"), tools
    name = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise ConstraintError(
            f"tool_choice: {json.dumps(choice)[:80]} is not 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}'
        )
    named = tuple(t for t in tools if t[0] == name)
    if not named:
        known = ", ".join(t[0] for t in tools) or "none"
        raise ConstraintError(f"tool_choice: no tool named {name!r} in tools (tools: {known})")
    return "one", named


def _text_schema(fmt: Any) -> str | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return json.dumps({"type": "object"})
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ConstraintError("response_format.json_schema.schema: missing or not an object")
        return json.dumps(schema)
    raise ConstraintError(
        f"response_format.type: {kind!r} is not one of text, json_object, json_schema"
    )


@dataclass(frozen=True)
class ToolFormat:
    """How a model writes a tool call: `start` JSON `end`, each a special token or plain text.

    `start_token`/`end_token` are token ids when the marker is one special (added) token, which
    a grammar must name as a token: no run of text bytes can produce it.
    """

    start: str = "<tool_call>"
    end: str = "</tool_call>"
    start_token: int | None = None
    end_token: int | None = None
    inner: str = "\n"  # between each marker and the JSON, as the template writes it
    between: str = "\n"  # between two calls


def call_schema(name: str, params: str) -> dict:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": json.loads(params)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _json(schema: dict) -> str:
    return "%json " + json.dumps({"x-guidance": _JSON_STYLE, **schema})


def grammar(c: Constraint, fmt: ToolFormat) -> str:
    """The llguidance (Lark) grammar of every reply that `c` allows."""
    lines = ["%llguidance {}"]
    text = "TEXT"
    if c.text_schema is not None:
        lines.append(f"json_text: {_json(json.loads(c.text_schema))}")
        text = "json_text"
    if c.calls == "none":
        lines.append(f"start: {text}")
    else:
        fns = [call_schema(name, params) for name, params in c.tools]
        lines.append(f"fn: {_json({'anyOf': fns} if len(fns) > 1 else fns[0])}")
        start = f"<[{fmt.start_token}]>" if fmt.start_token is not None else json.dumps(fmt.start)
        end = f"<[{fmt.end_token}]>" if fmt.end_token is not None else json.dumps(fmt.end)
        inner = json.dumps(fmt.inner) if fmt.inner else ""
        lines.append(f"body: {inner} fn {inner} {end}")
        lines.append(f"call: {start} body")
        more = f"({json.dumps(fmt.between)} call)*" if c.parallel and c.calls != "one" else ""
        lines.append(f"calls: call {more}")
        if c.calls != "auto":
            lines.append("start: calls")
        elif text != "TEXT":
            lines.append(f"start: {text} | calls")
        elif fmt.start_token is not None:
            # A special token is never part of TEXT, so the text ends where a call starts.
            lines.append("start: TEXT | TEXT? calls")
        else:
            # A text marker: the lazy lead ends at its first occurrence, which opens a call.
            lines.append(f"lead[lazy]: /(?s:.*){_regex_literal(fmt.start)}/")
            lines.append(f"start: TEXT | lead body {more}")
    if text == "TEXT":
        if fmt.start_token is None:
            # Free text never holds a text start marker, or it would open an unchecked call.
            marker = _regex_literal(fmt.start)
            lines.append(f"TEXT: /(?s:.*)/ & ~/(?s:.*){marker}(?s:.*)/")
        else:
            lines.append("TEXT: /(?s:.*)/")
    return "\n".join(lines) + "\n"


def _regex_literal(s: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else f"\\x{ord(c):02x}" for c in s)


def check(c: Constraint) -> None:
    """Compile each schema once, without a tokenizer, so bad input is refused before any work."""
    import llguidance

    schemas = [("response_format.json_schema.schema", c.text_schema)] if c.text_schema else []
    schemas += [(f"tools[{name}].parameters", params) for name, params in c.tools]
    for field, schema in schemas:
        try:
            msg = llguidance.LLMatcher.validate_grammar(
                llguidance.LLMatcher.grammar_from_json_schema(schema)
            )
        except Exception as e:  # a schema it cannot even read
            msg = str(e) or "cannot be compiled"
        if msg and not msg.startswith("WARNING"):
            raise ConstraintError(f"{field}: {msg.strip().splitlines()[0]}")


# --- the tokenizer side: llguidance's view of an mlx_lm tokenizer --------------------------


@lru_cache(maxsize=4)
def ll_tokenizer(tokenizer: Any):
    """llguidance's tokenizer for an mlx_lm `TokenizerWrapper` (built once: about a second for
    a large vocabulary). Read from the fast tokenizer's JSON, as `llguidance.hf` does, without
    importing transformers."""
    import copy

    import llguidance

    backend = copy.copy(tokenizer._tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    eos = sorted(tokenizer.eos_token_ids) or [tokenizer.eos_token_id]
    return llguidance.LLTokenizer(backend.to_str(), eos_token=eos)


def tool_format(tokenizer: Any) -> ToolFormat:
    """The tool-call format of a model, from the markers mlx_lm found in its chat template."""
    if not getattr(tokenizer, "has_tool_calling", False):
        raise ConstraintError(
            "tools: this model's chat template has no tool-call format that mlx_lm recognises"
        )
    parser = getattr(tokenizer.tool_parser, "__module__", "")
    if not parser.endswith("json_tools"):
        raise ConstraintError(
            f"tools: constrained decoding supports the JSON tool-call format "
            f"(<tool_call>{{json}}</tool_call>), not {parser.rsplit('.', 1)[-1]}"
        )
    ll = ll_tokenizer(tokenizer)

    def special(marker: str) -> int | None:
        ids = ll.tokenize_str(marker)
        return ids[0] if len(ids) == 1 and ll.is_special_token(ids[0]) else None

    start, end = tokenizer.tool_call_start, tokenizer.tool_call_end
    return ToolFormat(start, end, special(start), special(end))


class GrammarProcessor:
    """An mlx_lm logits processor: `(tokens, logits) -> logits` with every token the grammar
    forbids at -inf.

    mlx_lm calls it once per generated token, the first time after the prompt; from the second
    call on, the last of `tokens` is the token sampled after the previous call. (Only that one is
    read: the batch generator may pass a window, not the whole history.)
    """

    def __init__(self, grammar_text: str, tokenizer: Any):
        import llguidance

        self._ll = ll_tokenizer(tokenizer)
        self._matcher = llguidance.LLMatcher(self._ll, grammar_text)
        if self._matcher.is_error():
            raise ConstraintError(f"grammar: {self._matcher.get_error()}")
        self._eos = sorted(tokenizer.eos_token_ids) or [tokenizer.eos_token_id]
        self._started = False

    def __call__(self, tokens, logits):
        import mlx.core as mx

        if self._started:
            token = int(tokens.reshape(-1)[-1].item())
            if not self._matcher.is_error():
                self._matcher.consume_token(token)  # a refused token leaves it in error: EOS
        self._started = True
        allowed = self.allowed(logits.shape[-1])
        return mx.where(mx.array(allowed), logits, mx.array(-np.inf, dtype=logits.dtype))

    def allowed(self, width: int) -> np.ndarray:
        """Which of `width` token ids the grammar allows next (only EOS once it is broken)."""
        out = np.zeros(width, dtype=bool)
        if self._matcher.is_error():
            out[[t for t in self._eos if t < width]] = True
            return out
        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        mask = np.unpackbits(bits, bitorder="little").astype(bool)
        n = min(width, mask.size, self._ll.vocab_size)
        out[:n] = mask[:n]
        return out

    def consume(self, token: int) -> bool:
        return self._matcher.consume_token(token)

    @property
    def accepting(self) -> bool:
        return self._matcher.is_accepting()


def processor(c: Constraint, tokenizer: Any) -> GrammarProcessor:
    """The logits processor that keeps a reply within `c`, for this model's tokenizer."""
    fmt = tool_format(tokenizer) if c.calls != "none" else ToolFormat()
    return GrammarProcessor(grammar(c, fmt), tokenizer)
