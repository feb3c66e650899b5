"""Tool calls in a model's reply: OpenAI `tool_calls`, or `<tool_call>{json}</tool_call>` blocks.

The one parser for tool calls. Eval reads a model's reply with it; `punie dataset validate` reads
what a chat template renders for a row's calls with it, so both agree on what a call looks like.

A final `<tool_call>` block with no closing tag is a call when its text is complete JSON: that is
how mlx_lm.server reads it (at the end of generation it parses the tool text still open), and a
server that stops on `</tool_call>` leaves the tag out of the reply. A block cut off inside its
JSON (`max_tokens`) is `Malformed`. A block never ends at another `<tool_call>`: an unclosed block
followed by another one is read as one block, which is not JSON, so it is `Malformed` too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any]


class Malformed(ValueError):
    pass


def parse_calls(content: str | None, tool_calls: list[dict] | None = None) -> list[Call]:
    """The calls a response makes; raises Malformed when a call cannot be read as JSON."""
    if tool_calls:
        return [_call_from_openai(tc) for tc in tool_calls]
    calls = []
    for block in _BLOCK.findall(content or ""):
        try:
            data = json.loads(block.strip())
        except json.JSONDecodeError as e:
            raise Malformed(f"tool_call block is not JSON: {block.strip()[:80]!r}") from e
        calls.append(_call_from_dict(data))
    return calls


def _call_from_openai(tc: dict) -> Call:
    fn = tc.get("function", tc) if isinstance(tc, dict) else None
    if not isinstance(fn, dict):
        raise Malformed(f"tool call is not an object: {tc!r}")
    return _call_from_dict(fn)


def _call_from_dict(data: Any) -> Call:
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise Malformed(f"tool call has no string name: {json.dumps(data)[:80]}")
    args = data.get("arguments")
    if args is None:
        args = {}
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise Malformed(f"{data['name']}: arguments are not JSON: {args[:80]!r}") from e
    if not isinstance(args, dict):
        raise Malformed(f"{data['name']}: arguments are not an object")
    return Call(data["name"], args)
