"""Rows that already hold messages: OpenAI fine-tuning rows, LLaMA-Factory's content-part rows.

- OpenAI: content parts (`{"type": "text", "text"}`), arguments as JSON strings, the legacy
  `functions` / `function_call` / `function` role, per-message `weight`, call `id`s and the
  `tool_call_id` and `name` of results; all kept.
- LLaMA-Factory (v1) content parts: `{"type": "text" | "reasoning" | "tool_call" | "tools",
  "value": str}` and `loss_weight` per message. Reasoning goes into the content as
  `<think>...</think>` (what reasoning chat templates render and parse back), tool_call parts
  become tool_calls, a tools part becomes the row's tools, an answer's loss_weight its `weight`.
  Pairs (`chosen_messages` / `rejected_messages`) become preference rows.
- `function-call` / `function-response` (and `function_call`, `observation`) roles become an
  assistant call and a tool result.
"""

from __future__ import annotations

from typing import Any

from punie.data.convert_base import ConvertError, Notes, call, calls, text, tools
from punie.data.llamafactory import Layout, refuse_kto

ROLES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
    "function-response": "tool",
    "function_response": "tool",
    "observation": "tool",
    "ipython": "tool",
    "function-call": "call",
    "function_call": "call",
}
KNOWN = {"role", "content", "tool_calls", "function_call", "tool_call_id", "name", "weight"}
REASONING = "reasoning parts written into the answer's content as <think>...</think>"


def from_openai(row: dict, notes: Notes, lay: Layout | None = None) -> dict:
    column = lay.messages if lay else "messages"
    if lay:
        refuse_kto(row, lay.kto_tag)
    if lay is None and "chosen_messages" in row:
        return _pair(row, notes)
    notes.use(column, "tools", "functions")
    raw = row.get(column)
    if not isinstance(raw, list):
        raise ConvertError(str(column), "must be a list of messages")
    found: list[dict] = []
    messages = []
    if lay and lay.system and row.get(lay.system):
        notes.use(lay.system)
        messages.append({"role": "system", "content": text(row[lay.system], lay.system)})
    messages += [message(m, f"{column}[{i}]", notes, found) for i, m in enumerate(raw)]
    schemas = row.get(lay.tools if lay and lay.tools else "tools") or row.get("functions")
    if schemas:
        notes.use(lay.tools if lay else None)
        found = tools(schemas, "tools") + found
    out: dict[str, Any] = {"messages": messages}
    if lay and lay.chosen and lay.rejected and lay.chosen in row and lay.rejected in row:
        notes.use(lay.chosen, lay.rejected)
        out = {
            "prompt": messages,
            "chosen": [message(row[lay.chosen], lay.chosen, notes, found)],
            "rejected": [message(row[lay.rejected], lay.rejected, notes, found)],
        }
    if found:
        out["tools"] = found
    return out


def message(m: Any, at: str, notes: Notes, found_tools: list[dict]) -> dict:
    """One message in Punie's shape; tool schemas found in its parts go to `found_tools`."""
    if not isinstance(m, dict):
        raise ConvertError(at, "a message is an object")
    where = at.split("[")[0] + "[]"
    notes.unused(m, KNOWN | {"loss_weight"}, where)
    role = ROLES.get(m.get("role"), m.get("role"))
    content, made = _content(m.get("content"), at, notes, found_tools)
    if role == "call":  # the call is the content, as in ShareGPT's function_call turns
        role, made, content = "assistant", calls(m.get("content"), f"{at}.content", notes), ""
    msg: dict[str, Any] = {"role": role, "content": content}
    legacy = [m["function_call"]] if m.get("function_call") else []
    for j, c in enumerate(m.get("tool_calls") or legacy):
        made.append(call(c, f"{at}.tool_calls[{j}]", notes, string_expected=True))
    if made:
        msg["tool_calls"] = made
    for key in ("tool_call_id", "name"):
        if m.get(key):
            msg[key] = m[key]
    weight = m.get("weight", m.get("loss_weight"))
    if weight is not None and role == "assistant":
        if "weight" in m or weight != 1:
            msg["weight"] = int(weight) if weight in (0, 1) else weight
    elif m.get("loss_weight") and role != "assistant":
        notes.dropped[f"{where}.loss_weight"] += 1  # Punie trains answers only
    return msg


def _content(value: Any, at: str, notes: Notes, found_tools: list[dict]) -> tuple[str, list]:
    """(text, tool calls) of a message's content: a string, OpenAI text parts, or LLaMA-Factory
    parts with `value`."""
    if not (isinstance(value, list) and any(isinstance(p, dict) and "value" in p for p in value)):
        return text(value, f"{at}.content"), []
    texts, thoughts, made = [], [], []
    for j, part in enumerate(value):
        field = f"{at}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        body = part.get("value", part.get("text")) if isinstance(part, dict) else None
        if kind == "text":
            texts.append(text(body, field))
        elif kind == "reasoning":
            thoughts.append(text(body, field))
        elif kind in ("tool_call", "tool_calls"):
            made += calls(body, field, notes)
        elif kind == "tools":
            found_tools += tools(body, field)
        else:
            raise ConvertError(
                f"{field}.type", f"{kind!r} is not text, reasoning, tool_call or tools"
            )
    content = "".join(texts)
    if thoughts:
        notes.change(REASONING)
        content = "<think>\n" + "\n".join(thoughts) + "\n</think>\n\n" + content
    return content, made


def _pair(row: dict, notes: Notes) -> dict:
    """LLaMA-Factory's pairs: two whole conversations; the prompt is what they share."""
    notes.use("chosen_messages", "rejected_messages", "tools")
    found: list[dict] = tools(row["tools"], "tools") if row.get("tools") else []
    sides = []
    for key in ("chosen_messages", "rejected_messages"):
        raw = row.get(key)
        if not isinstance(raw, list):
            raise ConvertError(key, "must be a list of messages")
        sides.append([message(m, f"{key}[{i}]", notes, found) for i, m in enumerate(raw)])
    chosen, rejected = sides
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n and chosen[n - 1]["role"] == "assistant":  # an answer is not part of the prompt
        n -= 1
    out: dict[str, Any] = {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}
    if found:
        out["tools"] = found
    return out
