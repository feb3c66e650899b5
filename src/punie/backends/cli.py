"""`punie backends`: which training backends are installed, and what each can do."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def backends_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the installed training backends (entry points in the `punie.backends` group) and
    what each supports: fine-tune types, methods (sft, dpo), quantized bases (QLoRA) and
    multi-process training. Pick one with `punie train --backend NAME`. The `peft` backend
    (PyTorch + PEFT + TRL) comes with `pip install 'punie[cuda]'`."""
    from punie.backends.listing import describe_backends

    rows = describe_backends()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="training backends")
    for column in ("name", "ready", "fine-tune", "methods", "QLoRA", "multi-process", "notes"):
        table.add_column(column)
    for r in rows:
        yes = {True: "yes", False: "no"}
        notes = r.get("error") or (
            f"missing: {', '.join(r['missing'])}" if r.get("missing") else r.get("notes", "")
        )
        table.add_row(
            r["name"],
            yes[r["ready"]],
            ", ".join(r.get("fine_tune_types", ())),
            ", ".join(r.get("methods", ())),
            yes.get(r.get("quantized_base"), "-"),
            yes.get(r.get("multi_process"), "-"),
            notes,
        )
    Console().print(table)
