"""Tool schemas, calls and results written as text inside turns, made structured.

- Hermes function calling (NousResearch): the system prompt holds `<tools>[...]</tools>`, an
  assistant turn `<tool_call>{"name", "arguments"}</tool_call>` (often a Python literal, single
  quotes), a tool turn `<tool_response>{"name", "content"}</tool_response>`; one tag per call.
- glaive (glaiveai/glaive-function-calling-v2): `system` is "SYSTEM: ..." followed by the JSON
  schemas, `chat` is one string of `USER:` / `ASSISTANT:` / `FUNCTION RESPONSE:` turns, and a call
  is `<functioncall> {"name": ..., "arguments": '{...}'}` with the arguments in single quotes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from punie.data.convert_base import ConvertError, Notes, arguments, call_text, lenient, tools

HERMES_TOOLS = re.compile(r"<tools>(.*?)</tools>", re.S)
HERMES_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
HERMES_RESULT = re.compile(r"<tool_response>(.*?)</tool_response>", re.S)
HERMES_TAG = re.compile(r"<(tools|tool_call|tool_response)>")
HERMES_SYSTEM = "Hermes <tools> block moved from the system prompt to the row's tools"


def is_hermes(messages: list[dict]) -> bool:
    return any(HERMES_TAG.search(m.get("content") or "") for m in messages)


def from_hermes(messages: list[dict], notes: Notes) -> tuple[list[dict], list[dict]]:
    """(messages, tools) with Hermes tags turned into tools, tool_calls and tool messages."""
    out: list[dict] = []
    found: list[dict] = []
    for i, m in enumerate(messages):
        at, content = f"messages[{i}]", m.get("content") or ""
        if m["role"] == "system" and HERMES_TOOLS.search(content):
            for block in HERMES_TOOLS.findall(content):
                found += tools(_schemas(block, f"{at}.<tools>"), f"{at}.<tools>")
            rest = HERMES_TOOLS.sub("", content).strip()
            notes.change(HERMES_SYSTEM)
            if rest:
                out.append({**m, "content": rest})
        elif m["role"] == "assistant" and HERMES_CALL.search(content):
            made = [
                _hermes_call(b, f"{at}.<tool_call>[{j}]", notes)
                for j, b in enumerate(HERMES_CALL.findall(content))
            ]
            out.append({**m, "content": HERMES_CALL.sub("", content).strip(), "tool_calls": made})
        elif m["role"] == "tool" and HERMES_RESULT.search(content):
            for j, block in enumerate(HERMES_RESULT.findall(content)):
                out.append({**m, **_hermes_result(block, f"{at}.<tool_response>[{j}]")})
        else:
            out.append(m)
    return out, found


def _schemas(block: str, field: str) -> list:
    """The inside of `<tools>`: a JSON list, or schemas one after another."""
    block = block.strip()
    try:
        return lenient(block, field) if block.startswith("[") else _objects(block, field)
    except ConvertError:
        return _objects(block, field)


def _objects(text: str, field: str) -> list[dict]:
    """JSON objects written one after another (glaive's schemas, Hermes' tools)."""
    decoder, found, i = json.JSONDecoder(), [], 0
    while (start := text.find("{", i)) >= 0:
        try:
            value, i = decoder.raw_decode(text, start)
        except json.JSONDecodeError as e:
            raise ConvertError(field, f"a tool schema that is not JSON ({e.msg})") from e
        found.append(value)
    return found


def _hermes_call(block: str, field: str, notes: Notes) -> dict:
    value = lenient(block.strip(), field)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConvertError(field, "a tool call needs a function name")
    args = arguments(value.get("arguments", {}), f"{field}.arguments", notes)
    return {"type": "function", "function": {"name": value["name"], "arguments": args}}


def _hermes_result(block: str, field: str) -> dict:
    block = block.strip()
    try:
        value = lenient(block, field)
    except ConvertError:
        return {"content": block}
    if isinstance(value, dict) and isinstance(value.get("name"), str) and "content" in value:
        content = value["content"]
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        return {"name": value["name"], "content": text}
    return {"content": block}


GLAIVE_TURN = re.compile(r"(?:^|\n)[ \t]*(USER|ASSISTANT|FUNCTION RESPONSE):[ \t]*")
GLAIVE_CALL = "<functioncall>"
GLAIVE_END = "<|endoftext|>"
_GLAIVE_ROLES = {"USER": "user", "ASSISTANT": "assistant", "FUNCTION RESPONSE": "tool"}


def from_glaive(row: dict, notes: Notes) -> dict:
    """Raw glaive: `system` (prompt + schemas) and `chat` (turns in one string)."""
    notes.use("system", "chat")
    system, chat = row.get("system"), row.get("chat")
    if not isinstance(system, str) or not isinstance(chat, str):
        raise ConvertError("chat", "glaive rows have `system` and `chat` strings")
    prompt = re.sub(r"^\s*SYSTEM:\s*", "", system)
    brace = prompt.find("{")
    schemas = _objects(prompt[brace:], "system") if brace >= 0 else []
    prompt = (prompt[:brace] if brace >= 0 else prompt).strip()
    messages = [{"role": "system", "content": prompt}] if prompt else []
    parts = GLAIVE_TURN.split(chat)
    if parts[0].strip():
        raise ConvertError("chat", f"text before the first USER: turn: {parts[0].strip()[:40]!r}")
    last_call = None
    for k in range(1, len(parts), 2):
        role, body = _GLAIVE_ROLES[parts[k]], parts[k + 1].replace(GLAIVE_END, "").strip()
        at = f"chat.turn[{k // 2}]"
        if role == "assistant" and GLAIVE_CALL in body:
            before, _, call_text = body.partition(GLAIVE_CALL)
            made = glaive_call(call_text, at, notes)
            last_call = made["function"]["name"]
            messages.append({"role": "assistant", "content": before.strip(), "tool_calls": [made]})
        elif role == "tool":
            msg = {"role": "tool", "content": body}
            if last_call:
                msg["name"] = last_call
            messages.append(msg)
        else:
            messages.append({"role": role, "content": body})
    out: dict[str, Any] = {"messages": messages}
    if schemas:
        out["tools"] = tools(schemas, "system")
    return out


def glaive_call(text: str, field: str, notes: Notes) -> dict:
    """`{"name": ..., "arguments": '{...}'}` (glaive's quoting) or plain JSON."""
    value = call_text(text, field, notes)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConvertError(field, "a tool call needs a function name")
    args = arguments(value.get("arguments", {}), f"{field}.arguments", notes)
    return {"type": "function", "function": {"name": value["name"], "arguments": args}}
