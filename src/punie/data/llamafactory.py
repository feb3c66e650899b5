"""LLaMA-Factory's two row formats, ShareGPT and Alpaca, and its `dataset_info.json`.

A `Layout` is a dataset_info entry's `columns` and `tags`: which key of a row holds the turns, the
system prompt, the tools, the answers, and which role names its turns use. Without a
dataset_info.json the defaults apply, widened with the role names other ShareGPT exports use
(`user`, `assistant`, `tool`, `function-call`, `function-response`, ...).

- SFT rows become chat rows. Alpaca `history` ([prompt, answer] pairs) becomes earlier turns.
- Ranking rows (`chosen` and `rejected`: one turn each in ShareGPT, strings in Alpaca) become
  Punie's preference rows: `prompt` (the conversation), `chosen` and `rejected` message lists.
- KTO rows (a `kto_tag` saying whether the one answer is desirable) are refused: as SFT an
  undesirable answer would become a target.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie.data.calltext import from_hermes, is_hermes
from punie.data.convert_base import ConvertError, Notes, calls, text, tools
from punie.errors import DataError


@dataclass(frozen=True)
class Layout:
    formatting: str = "sharegpt"
    ranking: bool = False
    # columns
    messages: str | None = "conversations"
    system: str | None = "system"
    tools: str | None = "tools"
    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = "history"
    chosen: str | None = "chosen"
    rejected: str | None = "rejected"
    kto_tag: str | None = "kto_tag"
    # tags (ShareGPT)
    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str | None = "system"

    def roles(self) -> dict[str, str]:
        """Role name in the data -> Punie role ("call" for a function-call turn)."""
        tags = {
            self.user_tag: "user",
            self.assistant_tag: "assistant",
            self.observation_tag: "tool",
            self.function_tag: "call",
        }
        if self.system_tag:
            tags[self.system_tag] = "system"
        return {**ALIASES, **tags}


ALIASES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function_response": "tool",
    "function-response": "tool",
    "ipython": "tool",
    "function_call": "call",
    "function-call": "call",
}
DEFAULT = Layout()
PRETRAINING = "Alpaca rows with no response column read as text rows (pretraining)"
KTO_REASON = (
    "a KTO row (one answer labelled {label}); Punie trains SFT and DPO, and as SFT an undesirable "
    "answer would become a training target, so KTO rows are not converted"
)


def refuse_kto(row: dict, key: str | None) -> None:
    if key and key in row:
        label = "desirable" if row[key] is True else "undesirable" if row[key] is False else "?"
        raise ConvertError(key, KTO_REASON.format(label=label))


def from_sharegpt(row: dict, notes: Notes, lay: Layout = DEFAULT) -> dict:
    refuse_kto(row, lay.kto_tag)
    notes.use(lay.messages, lay.system, lay.tools)
    turns = row.get(lay.messages)
    if not isinstance(turns, list):
        raise ConvertError(str(lay.messages), f"must be a list of {{{lay.role_tag}, ...}} turns")
    roles = lay.roles()
    system = row.get(lay.system) if lay.system else None
    messages = [{"role": "system", "content": text(system, str(lay.system))}] if system else []
    messages += [_turn(t, f"{lay.messages}[{i}]", lay, roles, notes) for i, t in enumerate(turns)]
    out: dict[str, Any] = {}
    found = tools(row[lay.tools], str(lay.tools)) if lay.tools and row.get(lay.tools) else []
    pair = _pair(row, lay)
    if pair:
        notes.use(lay.chosen, lay.rejected)
        chosen, rejected = (_answer(row[k], k, lay, roles, notes) for k in pair)
        messages, chosen, rejected, found = _hermes_pair(messages, chosen, rejected, found, notes)
        out = {"prompt": messages, "chosen": chosen, "rejected": rejected}
    else:
        if is_hermes(messages):
            messages, more = from_hermes(messages, notes)
            found += more
        out = {"messages": messages}
    if found:
        out["tools"] = found
    return out


def _pair(row: dict, lay: Layout) -> tuple[str, str] | None:
    if lay.chosen and lay.rejected and lay.chosen in row and lay.rejected in row:
        return lay.chosen, lay.rejected
    if lay.ranking:
        raise ConvertError("row", f"a ranking dataset's row needs {lay.chosen} and {lay.rejected}")
    return None


def _turn(t: Any, at: str, lay: Layout, roles: dict[str, str], notes: Notes) -> dict:
    if not isinstance(t, dict):
        raise ConvertError(at, f"a turn is an object with {lay.role_tag} and {lay.content_tag}")
    who = t.get(lay.role_tag)
    role = roles.get(who) if isinstance(who, str) else None
    if role is None:
        raise ConvertError(
            f"{at}.{lay.role_tag}", f"{who!r} is not one of {', '.join(sorted(roles))}"
        )
    where = at.split("[")[0] + "[]"
    notes.unused(t, {lay.role_tag, lay.content_tag, "weight", "name", "tool_call_id"}, where)
    value = t.get(lay.content_tag)
    if role == "call":
        msg = {"role": "assistant", "content": "", "tool_calls": calls(value, at, notes)}
    else:
        msg = {"role": role, "content": text(value, f"{at}.{lay.content_tag}")}
    for key in ("weight", "name", "tool_call_id"):
        if key in t and (key != "weight" or role in ("assistant", "call")):
            msg[key] = t[key]
        elif key in t:
            notes.dropped[f"{where}.{key}"] += 1
    return msg


def _answer(value: Any, key: str, lay: Layout, roles: dict[str, str], notes: Notes) -> list[dict]:
    """A ShareGPT ranking answer: one turn, or a list of turns."""
    turns = value if isinstance(value, list) else [value]
    out = [_turn(t, f"{key}[{i}]", lay, roles, notes) for i, t in enumerate(turns)]
    if not out or out[0]["role"] != "assistant":
        raise ConvertError(key, "an answer starts with an assistant turn")
    return out


def _hermes_pair(prompt, chosen, rejected, found, notes):
    """Hermes tags in a ranking row: the prompt holds the tools; each answer's calls and
    results stand alone."""
    if not is_hermes(prompt + chosen + rejected):
        return prompt, chosen, rejected, found
    prompt, more = from_hermes(prompt, notes)
    chosen, rejected = from_hermes(chosen, notes)[0], from_hermes(rejected, notes)[0]
    return prompt, chosen, rejected, found + more


def from_alpaca(row: dict, notes: Notes, lay: Layout = DEFAULT) -> dict:
    refuse_kto(row, lay.kto_tag)
    notes.use(lay.prompt, lay.query, lay.system, lay.history, lay.tools)
    prompt = row.get(lay.prompt) if lay.prompt else None
    if not isinstance(prompt, str):
        raise ConvertError(str(lay.prompt), "must be a string")
    extra = (row.get(lay.query) if lay.query else None) or ""
    if not isinstance(extra, str):
        raise ConvertError(str(lay.query), "must be a string")
    system = row.get(lay.system) if lay.system else None
    messages = [{"role": "system", "content": text(system, str(lay.system))}] if system else []
    messages += _history(row.get(lay.history) if lay.history else None, str(lay.history))
    messages.append({"role": "user", "content": prompt + (f"\n\n{extra}" if extra.strip() else "")})
    pair = _alpaca_pair(row, lay, notes)
    if pair:
        chosen, rejected = pair
        out: dict[str, Any] = {
            "prompt": messages,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
    elif not (lay.response and lay.response in row) and len(messages) == 1:
        # No answer column at all: LLaMA-Factory's pretraining layout (`columns: {prompt: text}`).
        notes.change(PRETRAINING)
        return {"text": prompt}
    else:
        notes.use(lay.response)
        answer = row.get(lay.response) if lay.response else None
        if not isinstance(answer, str):
            raise ConvertError(str(lay.response), "must be a string")
        out = {"messages": [*messages, {"role": "assistant", "content": answer}]}
    if lay.tools and row.get(lay.tools):
        out["tools"] = tools(row[lay.tools], lay.tools)
    return out


def _alpaca_pair(row: dict, lay: Layout, notes: Notes) -> tuple[str, str] | None:
    if lay.chosen and lay.rejected and lay.chosen in row and lay.rejected in row:
        notes.use(lay.chosen, lay.rejected)
        pair = row[lay.chosen], row[lay.rejected]
    elif lay.ranking and lay.response and isinstance(row.get(lay.response), list):
        notes.use(lay.response)  # the older layout: output = [chosen, rejected]
        pair = tuple(row[lay.response])
        if len(pair) != 2:
            raise ConvertError(lay.response, "a ranking output is [chosen, rejected]")
    elif lay.ranking:
        raise ConvertError("row", f"a ranking dataset's row needs {lay.chosen} and {lay.rejected}")
    else:
        return None
    if not all(isinstance(a, str) for a in pair):
        raise ConvertError(str(lay.chosen), "chosen and rejected must be strings")
    return pair


def _history(value: Any, field: str) -> list[dict]:
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise ConvertError(field, "must be a list of [prompt, answer] pairs")
    out = []
    for i, pair in enumerate(value):
        ok = isinstance(pair, list | tuple) and len(pair) == 2
        if not ok or not all(isinstance(x, str) for x in pair):
            raise ConvertError(f"{field}[{i}]", "must be a [prompt, answer] pair of strings")
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return out


# dataset_info.json


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset of a dataset_info.json: its files and how to read their rows."""

    name: str
    files: tuple[Path, ...]
    layout: Layout


_LAYOUT_KEYS = {f.name for f in dataclasses.fields(Layout)}


def load_dataset_info(path: Path | str, name: str | None) -> DatasetInfo:
    path = Path(path)
    try:
        info = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as a dataset_info.json ({e})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: a dataset_info.json is a map of dataset names")
    names = ", ".join(sorted(info)[:8]) + (", ..." if len(info) > 8 else "")
    if name is None:
        raise DataError(f"{path}: name the dataset to convert after the file (one of {names})")
    entry = info.get(name)
    if not isinstance(entry, dict):
        raise DataError(f"{path}: no dataset {name!r} (it has {names})")
    where = f"{path}: {name}"
    if "file_name" not in entry:
        remote = next((k for k in ("hf_hub_url", "ms_hub_url", "script_url") if k in entry), None)
        why = f"its rows are at {remote} {entry[remote]!r}" if remote else "it has no file_name"
        raise DataError(f"{where}: {why}; only local files (file_name) are read")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt", "openai"):
        raise DataError(f"{where}.formatting: {formatting!r} is not alpaca, sharegpt or openai")
    settings: dict[str, Any] = {"formatting": formatting, "ranking": bool(entry.get("ranking"))}
    if formatting == "openai":  # LLaMA-Factory's OpenAI layout is ShareGPT with OpenAI's names
        settings |= dict(
            messages="messages", role_tag="role", content_tag="content", user_tag="user",
            assistant_tag="assistant", observation_tag="tool", function_tag="function_call",
        )  # fmt: skip
    if formatting == "alpaca":  # LLaMA-Factory reads no system or history column unless mapped
        settings |= {"system": None, "history": None, "tools": None}
    for group in ("columns", "tags"):
        for key, value in (entry.get(group) or {}).items():
            if key in _LAYOUT_KEYS and (value is None or isinstance(value, str)):
                settings[key] = value
    if formatting != "alpaca" and "system" not in (entry.get("columns") or {}):
        settings["system"] = None
    if "kto_tag" not in (entry.get("columns") or {}):
        settings["kto_tag"] = None
    if not settings["ranking"]:
        columns = entry.get("columns") or {}
        settings |= {k: columns.get(k) for k in ("chosen", "rejected")}
    return DatasetInfo(name, _files(path.parent / entry["file_name"], where), Layout(**settings))


def _files(target: Path, where: str) -> tuple[Path, ...]:
    if target.is_file() and target.suffix in (".json", ".jsonl"):
        return (target,)
    if target.is_file():
        raise DataError(f"{where}: {target.name}: only .json and .jsonl files are read")
    if target.is_dir():
        found = sorted(p for p in target.iterdir() if p.suffix in (".json", ".jsonl"))
        if found:
            return tuple(found)
        raise DataError(f"{where}: {target} holds no .json or .jsonl files")
    raise DataError(f"{where}: file_name {target} does not exist")
