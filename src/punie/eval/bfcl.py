"""Berkeley Function Calling Leaderboard files (v3/v4, JSON lines) made into a `tool_calling` suite.

A BFCL question file holds one entry a line: `id`, `question` (a list of turns, each a list of
messages) and `function` (the tools, in BFCL's own schema dialect). Its possible-answer file
holds, per id, `ground_truth`: a list of `{function name: {parameter: [accepted values]}}`.

Each entry becomes a case with its own `tools` (the entry's functions) and `category` (BFCL's:
`simple`, `live_multiple`, ...), scored with `strings: normalized`, as BFCL's checker compares
strings. Converted as BFCL does for function-calling models: a dotted name becomes underscored
(`math.factorial` -> `math_factorial`, in the tools and the answers alike); the types `dict`,
`float`, `tuple` and `any` become `object`, `number`, `array` and `string`. A dictionary's
accepted values, given by BFCL key by key, are spelt out as every whole dictionary they allow.
`irrelevance` cases expect no call; `live_relevance` ones any valid call.

Multi-turn, Java, JavaScript and the other categories are refused with the entry's place: their
checks (state, language-specific values) are not a single reply's tool calls.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import yaml

from punie.errors import EvalError
from punie.eval.suite import ROLES, Suite
from punie.fsio import SUITE_HEADER, atomic_file, read_jsonl, safe_file_name

SINGLE_CALL = ("simple", "multiple", "parallel", "parallel_multiple")
CATEGORIES = (
    *SINGLE_CALL,
    "irrelevance",
    *(f"live_{c}" for c in SINGLE_CALL),
    "live_irrelevance",
    "live_relevance",
)
NO_ANSWER = ("irrelevance", "live_irrelevance", "live_relevance")
# BFCL's own names for the same categories in v4 (`simple_python_3`).
_ALIASES = {"simple_python": "simple"}
_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string"}
_TYPES |= {"list": "array", "bool": "boolean", "double": "number", "long": "integer"}
_ID = re.compile(r"(.+?)_\d+(?:-\d+)*")
MAX_SPELT_OUT = 256  # whole dictionaries one accepted dictionary may stand for


def category_of(entry_id: str) -> str:
    """`simple_3` -> simple, `live_multiple_7-3-1` -> live_multiple, `simple_python_0` -> simple."""
    m = _ID.fullmatch(entry_id)
    name = m.group(1) if m else entry_id
    return _ALIASES.get(name, name)


def bfcl_name(name: str) -> str:
    """A function's name as BFCL gives it to function-calling models: dots become underscores."""
    return name.replace(".", "_")


def convert_schema(schema: Any) -> Any:
    """BFCL's parameter schema in JSON Schema's words, recursively."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("type"), str):
        out["type"] = _TYPES.get(out["type"], out["type"])
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: convert_schema(v) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = convert_schema(out["items"])
    return out


def convert_function(fn: Any, where: str) -> dict:
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise EvalError(f"{where}.name: missing (a BFCL function has a name)")
    params = convert_schema(fn.get("parameters") or {"type": "dict", "properties": {}})
    if not isinstance(params, dict) or params.get("type", "object") != "object":
        raise EvalError(f"{where}.parameters: not a BFCL `dict` schema")
    params.setdefault("type", "object")
    function = {"name": bfcl_name(fn["name"]), "parameters": params}
    if fn.get("description"):
        function["description"] = fn["description"]
    return {"type": "function", "function": function}


def spell_out(value: Any, where: str) -> list[Any]:
    """The concrete values one BFCL accepted value stands for.

    BFCL gives a dictionary's accepted values key by key (`{"unit": ["km", ""]}`; `""` lets the
    key be left out), and a list of such dictionaries element by element; Punie compares whole
    values, so each becomes every whole value it allows."""
    if isinstance(value, dict):
        keys = list(value)
        choices = []
        for k in keys:
            accepted = value[k] if isinstance(value[k], list) else [value[k]]
            choices.append([x for a in accepted for x in _optional(a, f"{where}.{k}")])
        out = [
            {k: v for k, v in zip(keys, combo, strict=True) if v is not _ABSENT}
            for combo in itertools.product(*choices)
        ]
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        out = [list(c) for c in itertools.product(*(spell_out(v, where) for v in value))]
    else:
        return [value]
    if len(out) > MAX_SPELT_OUT:
        raise EvalError(f"{where}: stands for over {MAX_SPELT_OUT} whole values; too many to list")
    return out


_ABSENT = object()


def _optional(accepted: Any, where: str) -> list[Any]:
    return [_ABSENT] if accepted == "" else spell_out(accepted, where)


def convert_answer(truth: Any, names: set[str], where: str) -> list[dict]:
    """BFCL's `ground_truth` as Punie's expected calls."""
    if not isinstance(truth, list) or not truth:
        raise EvalError(f"{where}: must be a non-empty list of {{function: {{param: [values]}}}}")
    calls = []
    for j, item in enumerate(truth):
        at = f"{where}[{j}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise EvalError(f"{at}: must be one {{function name: {{param: [values]}}}}")
        ((name, params),) = item.items()
        if not isinstance(params, dict):
            raise EvalError(f"{at}.{name}: must map parameters to their accepted values")
        if bfcl_name(name) not in names:
            raise EvalError(f"{at}: {name!r} is not one of the entry's functions")
        arguments = {}
        for p, accepted in params.items():
            accepted = accepted if isinstance(accepted, list) else [accepted]
            arguments[p] = [x for a in accepted for x in spell_out(a, f"{at}.{name}.{p}")]
        calls.append({"name": bfcl_name(name), "arguments": arguments})
    return calls


def _messages(question: Any, where: str) -> list[dict]:
    if isinstance(question, str):
        return [{"role": "user", "content": question}]
    if isinstance(question, list) and question and all(isinstance(t, list) for t in question):
        if len(question) != 1:
            raise EvalError(f"{where}: {len(question)} turns; only single-turn entries convert")
        question = question[0]
    if not isinstance(question, list) or not question:
        raise EvalError(f"{where}: must be a list of messages")
    for j, m in enumerate(question):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise EvalError(f"{where}[{j}].role: not one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise EvalError(f"{where}[{j}].content: must be text")
    return [{"role": m["role"], "content": m["content"]} for m in question]


def read_answers(path: Path) -> dict[str, tuple[int, Any]]:
    out = {}
    for n, row in read_jsonl(path):
        if not isinstance(row.get("id"), str):
            raise EvalError(f"{path}:{n}: id: missing")
        if "ground_truth" not in row:
            raise EvalError(f"{path}:{n}: ground_truth: missing")
        out[row["id"]] = (n, row["ground_truth"])
    return out


def convert(questions: Path, answers: Path | None = None, name: str | None = None) -> dict:
    """The suite (as data) for a BFCL question file and its possible answers."""
    truths = read_answers(answers) if answers else {}
    cases = []
    for n, entry in read_jsonl(questions):
        here = f"{questions}:{n}"
        entry_id = entry.get("id")
        if not isinstance(entry_id, str):
            raise EvalError(f"{here}: id: missing")
        category = category_of(entry_id)
        if category not in CATEGORIES:
            raise EvalError(
                f"{here}: id: {entry_id!r} is in category {category!r}; "
                f"only {', '.join(CATEGORIES)} convert"
            )
        functions = entry.get("function")
        functions = [functions] if isinstance(functions, dict) else functions
        if not isinstance(functions, list) or not functions:
            raise EvalError(f"{here}: function: must be a non-empty list of functions")
        tools = [convert_function(f, f"{here}: function[{i}]") for i, f in enumerate(functions)]
        names = {t["function"]["name"] for t in tools}
        messages = _messages(entry.get("question"), f"{here}: question")
        if category == "live_relevance":
            expect: dict = {"calls": "any"}
        elif category in NO_ANSWER:
            expect = {"calls": []}
        elif entry_id not in truths:
            source = f"in {answers}" if answers else "(give --answers POSSIBLE.json)"
            raise EvalError(f"{here}: id: {entry_id!r} has no possible answer {source}")
        else:
            line, truth = truths[entry_id]
            expect = {"calls": convert_answer(truth, names, f"{answers}:{line}: ground_truth")}
        cases.append(
            {
                "id": entry_id,
                "category": category,
                "messages": messages,
                "tools": tools,
                "expect": expect,
            }
        )
    if not cases:
        raise EvalError(f"{questions}: no entries")
    return {
        "name": name or safe_file_name(f"bfcl-{questions.stem}"),
        "kind": "tool_calling",
        "strings": "normalized",
        "cases": cases,
    }


def import_bfcl(
    questions: Path, output: Path, answers: Path | None = None, name: str | None = None
) -> Suite:
    """Write the suite converted from BFCL files to `output`; nothing is written on bad input."""
    data = convert(Path(questions), Path(answers) if answers else None, name)
    suite = Suite.from_dict(data, source=str(output))  # a suite that would not load is not written
    head = f"{SUITE_HEADER}# From BFCL: {Path(questions).name}"
    head += f" with {Path(answers).name}\n" if answers else "\n"
    with atomic_file(output, kind="suite") as f:
        f.write(head)
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True, width=100)
    return suite
