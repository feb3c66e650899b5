"""xLAM rows (Salesforce/xlam-function-calling-60k): `query`, `tools` and `answers`, the last two
JSON strings. A row becomes a user turn and one assistant turn making every call in `answers`.

xLAM's parameter schemas are `{name: {"type": "str, optional", "description", "default"}}`, not
JSON schema; they become `{"type": "object", "properties", "required"}` with Python type names
mapped to JSON types (an unknown name is kept as written). A parameter is required unless its type
says `optional` or it has a default.
"""

from __future__ import annotations

import re
from typing import Any

from punie.data.convert_base import ConvertError, Notes, call, loads

_TYPES = {
    "str": "string",
    "string": "string",
    "int": "integer",
    "integer": "integer",
    "float": "number",
    "number": "number",
    "bool": "boolean",
    "boolean": "boolean",
    "list": "array",
    "tuple": "array",
    "set": "array",
    "array": "array",
    "dict": "object",
    "object": "object",
}
SCHEMAS = "xLAM parameter lists written as JSON schema"


def from_xlam(row: dict, notes: Notes) -> dict:
    notes.use("query", "tools", "answers")
    query = row.get("query")
    if not isinstance(query, str):
        raise ConvertError("query", "must be a string")
    answers = loads(row.get("answers"), "answers")
    if not isinstance(answers, list) or not answers:
        raise ConvertError("answers", "must be a non-empty list of calls")
    made = [call(a, f"answers[{j}]", notes) for j, a in enumerate(answers)]
    schemas = loads(row.get("tools") or [], "tools")
    if not isinstance(schemas, list):
        raise ConvertError("tools", "must be a list of tool schemas")
    out: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": query},
            {"role": "assistant", "content": "", "tool_calls": made},
        ]
    }
    if schemas:
        out["tools"] = [_tool(t, f"tools[{i}]", notes) for i, t in enumerate(schemas)]
    return out


def _tool(tool: Any, field: str, notes: Notes) -> dict:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise ConvertError(field, "a tool schema needs a name")
    params = tool.get("parameters") or {}
    if not isinstance(params, dict):
        raise ConvertError(f"{field}.parameters", "must be an object")
    if params.get("type") != "object":  # not JSON schema yet: xLAM's own layout
        notes.change(SCHEMAS)
        params = _schema(params, f"{field}.parameters")
    fn = {k: v for k, v in tool.items() if k != "parameters"}
    return {"type": "function", "function": {**fn, "parameters": params}}


def _schema(params: dict, field: str) -> dict:
    properties, required = {}, []
    for name, spec in params.items():
        if not isinstance(spec, dict):
            raise ConvertError(f"{field}.{name}", "must be an object with a type")
        written = str(spec.get("type", ""))
        optional = "optional" in written.lower()
        base = re.split(r"[\[,\s]", written.strip(), maxsplit=1)[0].lower()
        prop = {k: v for k, v in spec.items() if k != "type"}
        if written:
            prop = {"type": _TYPES.get(base, written), **prop}
        properties[name] = prop
        if not optional and "default" not in spec:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}
