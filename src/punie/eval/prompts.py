"""The prompts an eval must not find in training data: a suite's user turns, or a dataset's.

`punie dataset decontaminate --against SUITE` indexes these; the suite is read here, in eval, so
that the data layer below never reads a suite.
"""

from __future__ import annotations

from pathlib import Path

from punie.data.decontaminate import Prompt, dataset_prompts, is_dataset
from punie.eval.suite import Suite


def load_prompts(path: Path | str) -> list[Prompt]:
    """Eval prompts from a suite (YAML file or built-in name) or from a dataset's user turns."""
    if is_dataset(path):
        return dataset_prompts(path)
    suite = Suite.load(path)
    return [
        Prompt(f"{suite.name}/{case.id}", m.get("content") or "")
        for case in suite.cases
        for m in case.messages
        if m.get("role") == "user"
    ]
