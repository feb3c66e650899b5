"""Eval suites: YAML files of cases, loaded into plain data (schema in docs/eval-suites.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from punie.errors import PunieError

KINDS = ("tool_calling", "reasoning", "code")


@dataclass(frozen=True)
class Case:
    id: str
    messages: tuple[dict, ...]
    expect: dict[str, Any]
    category: str = "default"


@dataclass(frozen=True)
class Suite:
    name: str
    kind: str
    cases: tuple[Case, ...]
    system: str | None = None
    tools: tuple[dict, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def messages_for(self, case: Case) -> list[dict]:
        """The request's messages: the suite's system prompt, then the case's turns."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in case.messages]

    @classmethod
    def load(cls, path: Path | str) -> Suite:
        """Load a suite file, or a built-in suite by name (see `builtin_suites()`)."""
        p = Path(path)
        if not p.exists() and str(path) in builtin_suites():
            p = builtin_suites()[str(path)]
        if not p.is_file():
            raise PunieError(f"{path}: no such suite file or built-in suite")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise PunieError(f"{p}{line}: not valid YAML ({getattr(e, 'problem', e)})") from e
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<suite>") -> Suite:
        if not isinstance(data, dict):
            raise PunieError(f"{source}: a suite is a mapping with name, kind and cases")
        for key in ("name", "kind", "cases"):
            if key not in data:
                raise PunieError(f"{source}: {key}: missing")
        if data["kind"] not in KINDS:
            raise PunieError(f"{source}: kind: {data['kind']!r} is not one of {', '.join(KINDS)}")
        if not isinstance(data["cases"], list) or not data["cases"]:
            raise PunieError(f"{source}: cases: must be a non-empty list")
        cases, seen = [], set()
        for i, c in enumerate(data["cases"]):
            where = f"{source}: cases[{i}]"
            if not isinstance(c, dict) or "id" not in c:
                raise PunieError(f"{where}: id: missing")
            if c["id"] in seen:
                raise PunieError(f"{where}: id: {c['id']!r} is used twice")
            seen.add(c["id"])
            messages = c.get("messages") or ([{"role": "user", "content": c["prompt"]}] if "prompt" in c else None)
            if not messages:
                raise PunieError(f"{where}: messages: missing (or give a prompt)")
            if not isinstance(c.get("expect"), dict):
                raise PunieError(f"{where}: expect: missing or not a mapping")
            cases.append(
                Case(
                    id=str(c["id"]),
                    messages=tuple(messages),
                    expect=c["expect"],
                    category=str(c.get("category", "default")),
                )
            )
        known = {"name", "kind", "cases", "system", "tools"}
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            cases=tuple(cases),
            system=data.get("system"),
            tools=tuple(data.get("tools") or ()),
            extra={k: v for k, v in data.items() if k not in known},
            path=source,
        )


def builtin_suites() -> dict[str, Path]:
    folder = resources.files("punie.eval").joinpath("suites")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}
