"""Eval suites: YAML files of cases, loaded into plain data (schema in docs/eval-suites.md).

A suite is checked completely when it loads, so a typo fails in a second with its place
(`suite.yaml:14: cases[2].expect.calls[0].name: 'raed_file' is not one of the suite's tools`)
instead of scoring every case as a failure after an hour of generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from punie.errors import EvalError, PunieError
from punie.eval.agent import check_agent_case, load_environment
from punie.eval.environment import Environment
from punie.eval.graded import Grading, check_graded_case, load_grading
from punie.eval.reasoning import DEFAULT_PATTERN, SCORERS
from punie.eval.sandbox import Limits
from punie.eval.toolcalls import STRINGS
from punie.fsio import is_safe_name

KINDS = ("tool_calling", "reasoning", "code", "agent", "graded")
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Case:
    id: str
    messages: tuple[dict, ...]
    expect: dict[str, Any]
    category: str = "default"
    tools: tuple[dict, ...] | None = (
        None  # tool_calling: the case's own tools, replacing the suite's
    )
    mocks: tuple[dict, ...] = ()  # agent: {call: {name, arguments}, result} per tool result
    state: dict[str, Any] | None = None  # agent: the environment's starting state
    rubric: str | None = None  # graded: replaces the suite's rubric for this case
    reference: str | None = None  # graded: a reference answer shown to the grader


@dataclass(frozen=True)
class Suite:
    name: str
    kind: str
    cases: tuple[Case, ...]
    system: str | None = None
    tools: tuple[dict, ...] = ()
    samples: int = 1  # responses asked per case; pass@k needs samples >= k
    k: tuple[int, ...] = (1,)
    scorer: str = "normalized"  # reasoning: how answers compare
    answer_pattern: str = DEFAULT_PATTERN  # reasoning: where the final answer is
    tolerance: float = 1e-6  # reasoning, numeric scorer
    limits: Limits = Limits()  # code: the sandbox's limits
    strings: str = "exact"  # tool_calling: exact | normalized (BFCL's string rule)
    language: str = "python"  # code: the code block's fence and the file's extension
    runner: tuple[str, ...] = ()  # code: a command template with {file}; () runs Python's harness
    max_turns: int = 8  # agent: the model's replies per case, at most
    environment: Environment | None = None  # agent: the class whose methods are the tools
    grading: Grading | None = None  # graded: grader, rubric, scale, pairwise variants
    extra: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def messages_for(self, case: Case) -> list[dict]:
        """The request's messages: the suite's system prompt, then the case's turns."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in case.messages]

    def tools_for(self, case: Case) -> tuple[dict, ...]:
        """The tools offered with `case`: its own when it has them, else the suite's."""
        return self.tools if case.tools is None else case.tools

    @classmethod
    def load(cls, path: Path | str) -> Suite:
        """Load a suite file, or a built-in suite by name (see `builtin_suites()`)."""
        p = Path(path)
        if not p.exists() and str(path) in builtin_suites():
            p = builtin_suites()[str(path)]
        if not p.is_file():
            names = ", ".join(sorted(builtin_suites()))
            raise EvalError(f"{path}: no such suite file or built-in suite ({names})")
        text = p.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise EvalError(f"{p}{line}: not valid YAML ({getattr(e, 'problem', e)})") from e
        return cls.from_dict(data, source=str(p), lines=_case_lines(text))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<suite>", lines: dict | None = None) -> Suite:
        lines = lines or {}

        def bad(where: str, msg: str, case: int | None = None) -> PunieError:
            line = f":{lines[case]}" if case in lines else ""
            return EvalError(f"{source}{line}: {where}: {msg}")

        if not isinstance(data, dict):
            raise EvalError(f"{source}: a suite is a mapping with name, kind and cases")
        for key in ("name", "kind", "cases"):
            if key not in data:
                raise bad(key, "missing")
        name = data["name"]
        if not isinstance(name, str | int) or not is_safe_name(str(name)):
            raise bad(
                "name",
                f"{name!r} is not a safe file name (letters, digits, '.', '_' and '-', not "
                "starting with '.' or '-', at most 100 characters): it names results files",
            )
        kind = data["kind"]
        if kind not in KINDS:
            raise bad("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(data["cases"], list) or not data["cases"]:
            raise bad("cases", "must be a non-empty list")
        tools = data.get("tools") or []
        tool_names = _check_tools(tools, bad)
        strings = data.get("strings", "exact")
        if strings not in STRINGS:
            raise bad("strings", f"{strings!r} is not one of {', '.join(STRINGS)}")
        language, runner = _check_code_settings(data, bad)
        # an agent's final text is free prose: does it contain the answer?
        scorer = data.get("scorer", "contains" if kind == "agent" else "normalized")
        if scorer not in SCORERS:
            raise bad("scorer", f"{scorer!r} is not one of {', '.join(SCORERS)}")
        pattern = data.get("answer_pattern", DEFAULT_PATTERN)
        try:
            re.compile(pattern)
        except re.error as e:
            raise bad("answer_pattern", f"not a valid regex ({e})") from e
        samples = data.get("samples", 1)
        k = data.get("k", [1])
        k = [k] if isinstance(k, int) else k
        if not isinstance(samples, int) or samples < 1:
            raise bad("samples", f"{samples!r} is not a positive integer")
        if not all(isinstance(x, int) and 1 <= x <= samples for x in k):
            raise bad("k", f"{k!r}: each k must be an integer from 1 to samples ({samples})")
        limits = data.get("limits") or {}
        unknown = set(limits) - set(Limits.__dataclass_fields__)
        if unknown:
            allowed = ", ".join(Limits.__dataclass_fields__)
            raise bad(f"limits.{sorted(unknown)[0]}", f"unknown (allowed: {allowed})")
        for name, value in limits.items():
            # A zero tmpfs size means no cap at all, and a negative rlimit means none either.
            kind_ok = isinstance(value, int | float) if name == "wall_s" else isinstance(value, int)
            if isinstance(value, bool) or not kind_ok or not 0 < value < 1e9:
                what = "number" if name == "wall_s" else "integer"
                raise bad(f"limits.{name}", f"{value!r} is not a positive {what}")
        max_turns = data.get("max_turns", 8)
        if kind == "agent" and (
            isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1
        ):
            raise bad("max_turns", f"{max_turns!r} is not a positive integer")
        if kind in ("agent", "graded") and samples != 1:
            raise bad("samples", f"{kind} suites run one episode per case (samples: 1)")
        environment = None
        if kind == "agent" and data.get("environment") is not None:
            environment = load_environment(data["environment"], source, tool_names, bad)
        grading = load_grading(data, source, bad) if kind == "graded" else None

        cases, seen = [], set()
        for i, c in enumerate(data["cases"]):
            where = f"cases[{i}]"
            if not isinstance(c, dict) or "id" not in c:
                raise bad(f"{where}.id", "missing", i)
            if str(c["id"]) in seen:
                raise bad(f"{where}.id", f"{c['id']!r} is used twice", i)
            seen.add(str(c["id"]))
            messages = c.get("messages")
            if messages is None and "prompt" in c:
                messages = [{"role": "user", "content": c["prompt"]}]
            if not isinstance(messages, list) or not messages:
                raise bad(f"{where}.messages", "missing (or give a prompt)", i)
            for j, m in enumerate(messages):
                if not isinstance(m, dict) or m.get("role") not in ROLES:
                    role = m.get("role") if isinstance(m, dict) else m
                    raise bad(
                        f"{where}.messages[{j}].role",
                        f"{role!r} is not one of {', '.join(ROLES)}",
                        i,
                    )
            expect = c.get("expect", {} if kind == "graded" else None)
            if not isinstance(expect, dict):
                raise bad(f"{where}.expect", "missing or not a mapping", i)
            case_bad = lambda f, m, i=i, w=where: bad(f"{w}.{f}", m, i)  # noqa: E731
            case_tools = c.get("tools")
            names = tool_names if case_tools is None else _check_tools(case_tools, case_bad)
            _check_expect(kind, expect, names, case_bad)
            if kind == "code" and (runner or isinstance(expect.get("tests"), list)):
                _check_program_tests(expect, case_bad)
            if kind == "agent":
                check_agent_case(c, names, environment is not None, case_bad)
            elif kind == "graded":
                check_graded_case(c, grading, case_bad)
            cases.append(
                Case(
                    id=str(c["id"]),
                    messages=tuple(messages),
                    expect=expect,
                    category=str(c.get("category", "default")),
                    tools=None if case_tools is None else tuple(case_tools),
                    mocks=tuple(c.get("mocks") or ()),
                    state=c.get("state") if kind == "agent" else None,
                    rubric=c.get("rubric"),
                    reference=c.get("reference"),
                )
            )
        known = {"name", "kind", "cases", "system", "tools", "samples", "k", "scorer"}
        known |= {"answer_pattern", "tolerance", "limits", "strings", "language", "runner"}
        known |= {"max_turns", "environment", "grader", "rubric", "scale", "pass_grade", "compare"}
        return cls(
            name=str(data["name"]),
            kind=kind,
            cases=tuple(cases),
            system=data.get("system"),
            tools=tuple(tools),
            samples=samples,
            k=tuple(k),
            scorer=scorer,
            answer_pattern=pattern,
            tolerance=float(data.get("tolerance", 1e-6)),
            limits=Limits(**limits),
            strings=strings,
            language=language,
            runner=runner,
            max_turns=max_turns if kind == "agent" else 8,
            environment=environment,
            grading=grading,
            extra={k: v for k, v in data.items() if k not in known},
            path=source,
        )


def _check_tools(tools: Any, bad) -> set[str]:
    if not isinstance(tools, list):
        raise bad("tools", "must be a list of OpenAI function tools")
    names = set()
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad(f"tools[{i}].function.name", "missing")
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            raise bad(f"tools[{i}].function.parameters", "must be a JSON schema of type object")
        for r in params.get("required", []):
            if r not in params.get("properties", {}):
                raise bad(f"tools[{i}].function.parameters.required", f"{r!r} has no property")
        names.add(fn["name"])
    return names


def _check_code_settings(data: dict, bad) -> tuple[str, tuple[str, ...]]:
    language = data.get("language", "python")
    if not isinstance(language, str) or not re.fullmatch(r"[A-Za-z0-9_+#-]{1,32}", language):
        raise bad("language", f"{language!r} is not a language name (a code fence's word)")
    runner = data.get("runner", [])
    if isinstance(runner, str):
        runner = runner.split()
    if not isinstance(runner, list) or not all(isinstance(a, str) and a for a in runner):
        raise bad("runner", 'must be a command as a list of words, e.g. ["q", "{file}"]')
    if runner and "{file}" in runner[0]:
        raise bad("runner", "the first word is the program that runs the code, not {file}")
    if runner and not any("{file}" in a for a in runner):
        raise bad("runner", f"{runner!r} never names the program: put {{file}} where it goes")
    if language != "python" and not runner:
        raise bad("runner", f'missing: how to run {language} code, e.g. ["{language}", "{{file}}"]')
    return language, tuple(runner)


def _check_program_tests(expect: dict, bad) -> None:
    """Tests for a runner: a script run after the code, or a list of {stdin, stdout, script}."""
    tests = expect.get("tests")
    if isinstance(tests, str):
        return
    if not isinstance(tests, list) or not tests:
        raise bad("expect.tests", "missing: a script, or a list of {stdin, stdout} / {script}")
    for j, t in enumerate(tests):
        if not isinstance(t, dict):
            raise bad(f"expect.tests[{j}]", "must be a mapping of stdin, stdout and script")
        unknown = set(t) - {"stdin", "stdout", "script"}
        if unknown:
            raise bad(f"expect.tests[{j}].{sorted(unknown)[0]}", "unknown (stdin, stdout, script)")
        if "stdout" not in t and "script" not in t:
            raise bad(f"expect.tests[{j}]", "needs stdout (expected output) or script, or both")
        for key in ("stdin", "stdout", "script"):
            if key in t and not isinstance(t[key], str | int | float):
                raise bad(f"expect.tests[{j}].{key}", "must be text")


def _check_expect(kind: str, expect: dict, tool_names: set[str], bad) -> None:
    if kind == "tool_calling":
        calls = expect.get("calls")
        if calls == "any":  # BFCL's relevance: any valid call of the tools
            calls = []
        if not isinstance(calls, list):
            raise bad(
                "expect.calls",
                "missing: a list of calls ([] means: call no tool; any: any valid call)",
            )
        for j, call in enumerate(calls):
            if not isinstance(call, dict) or "name" not in call:
                raise bad(f"expect.calls[{j}].name", "missing")
            if call["name"] not in tool_names:
                raise bad(f"expect.calls[{j}].name", f"{call['name']!r} is not one of the tools")
            if not isinstance(call.get("arguments", {}), dict):
                raise bad(f"expect.calls[{j}].arguments", "must map names to accepted values")
            per_argument = call.get("strings", {})
            if not isinstance(per_argument, dict):
                raise bad(f"expect.calls[{j}].strings", "must map argument names to a rule")
            for arg, rule in per_argument.items():
                if rule not in STRINGS:
                    raise bad(
                        f"expect.calls[{j}].strings.{arg}",
                        f"{rule!r} is not one of {', '.join(STRINGS)}",
                    )
        if expect.get("strings", "exact") not in STRINGS:
            raise bad("expect.strings", f"{expect['strings']!r} is not one of {', '.join(STRINGS)}")
        if expect.get("order", "any") not in ("any", "strict"):
            raise bad("expect.order", f"{expect['order']!r} is not one of any, strict")
    elif kind == "reasoning":
        if "answer" not in expect:
            raise bad("expect.answer", "missing")
    elif kind == "agent":
        pass  # eval/agent.py checks calls, state and answer with the case's mocks
    elif kind == "code" and not isinstance(expect.get("tests"), str | list):
        raise bad("expect.tests", "missing: Python code (asserts) run after the answer")


def _case_lines(text: str) -> dict[int, int]:
    """1-based line of each case in the YAML, for error messages; empty when it cannot tell."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(root, yaml.MappingNode):
        return {}
    for key, value in root.value:
        if key.value == "cases" and isinstance(value, yaml.SequenceNode):
            return {i: node.start_mark.line + 1 for i, node in enumerate(value.value)}
    return {}


def builtin_suites() -> dict[str, Path]:
    folder = resources.files("punie.eval").joinpath("suites")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}
