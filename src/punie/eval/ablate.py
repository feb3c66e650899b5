"""`punie dataset ablate` on an eval suite: the same span rule as on rows (`punie.data.ablate`),
applied to each case's user turns, written as a new suite that loads and runs like the first.

The output is named `<name>-<mode>` unless `name` is given (results files are named by suite, so
the plain and ablated runs sit side by side); a manifest beside it records the input and counts.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

from punie import __version__
from punie.data.ablate import ablate_slots, check_mode, prompt_slots, span_pattern
from punie.errors import EvalError
from punie.eval.suite import Suite, builtin_suites
from punie.fsio import (
    SUITE_HEADER,
    atomic_file,
    check_file_replaceable,
    file_manifest,
    file_sha256,
    write_json,
)


def is_suite(path: Path | str) -> bool:
    p = Path(path)
    return p.suffix in (".yaml", ".yml") or (not p.exists() and str(path) in builtin_suites())


def ablate_suite(
    path: Path | str,
    out: Path | str,
    regex: str,
    *,
    mode: str,
    seed: int = 0,
    name: str | None = None,
) -> dict:
    """Write the suite at `path` (file or built-in name) with its cases' prompts ablated to
    `out`; returns the manifest (its counts say how many cases and spans were touched)."""
    pattern = span_pattern(regex)
    check_mode(mode)
    source = Path(Suite.load(path).path)  # checks the suite, and finds a built-in one
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    slots = []
    for case in data["cases"]:
        if "messages" not in case:  # the `prompt:` shorthand, spelled out so it can be edited
            case["messages"] = [{"role": "user", "content": case.pop("prompt")}]
        slots.append(prompt_slots(case))
    counts = ablate_slots(slots, pattern, mode, seed)
    if counts["spans"] == 0:
        raise EvalError(f"{source}: --span {regex!r} matches no case's prompt; nothing to ablate")
    data["name"] = name or f"{data['name']}-{mode}"
    Suite.from_dict(data, source=str(out))  # what is written loads again
    text = SUITE_HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    out = Path(out)
    check_file_replaceable(file_manifest(out), "manifest")
    with atomic_file(out, kind="suite") as f:
        f.write(text)
    manifest = {
        "punie": __version__,
        "command": shlex.join(["punie", *sys.argv[1:]]),
        "seed": seed,
        "inputs": [{"path": str(source), "sha256": file_sha256(source)}],
        "outputs": {out.name: {"cases": len(slots), "sha256": file_sha256(out)}},
        "counts": {"mode": mode, "span": regex, **counts},
    }
    write_json(file_manifest(out), manifest, kind="manifest")
    return manifest
