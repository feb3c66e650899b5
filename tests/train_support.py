"""Small, fast training data and configs shared by the tests/test_train_*.py files."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
]
FILES = ["a.py", "b.md", "c.txt", "main.py", "util.py", "x.json", "setup.cfg", "doc.md"]


def tool_call(path: str) -> dict:
    return {"type": "function", "function": {"name": "read_file", "arguments": {"path": path}}}


def multi_turn_row(path: str, tools: list | None = None) -> dict:
    """A tool call in an earlier assistant turn, then the tool's answer, then a final answer."""
    row = {
        "messages": [
            {"role": "user", "content": f"Open {path}"},
            {"role": "assistant", "content": "", "tool_calls": [tool_call(path)]},
            {"role": "tool", "content": "ok"},
            {"role": "assistant", "content": f"Read {path}."},
        ]
    }
    if tools:
        row["tools"] = tools
    return row


def single_turn_row(path: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Show {path}"},
            {"role": "assistant", "content": "", "tool_calls": [tool_call(path)]},
        ]
    }


def write_data(folder: Path, n_train: int = 48, n_valid: int = 8, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid)):
        rows = []
        for _ in range(n):
            path = rng.choice(FILES)
            rows.append(multi_turn_row(path) if rng.random() < 0.5 else single_turn_row(path))
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return folder


def workspace(root: Path, model: Path, config: str) -> Path:
    """`root` with the default data in `root/data` and a config for it in `root/config`."""
    (root / config).write_text(config_toml(model, write_data(root / "data")))
    return root


def config_toml(model: Path, data: Path, **overrides) -> str:
    """A small, fast training config as TOML text."""
    values = {
        "model": str(model),
        "data": str(data),
        "rank": 4,
        "scale": 5.0,
        "num_layers": -1,
        "learning_rate": 2e-3,
        "batch_size": 2,
        "iters": 32,
        "max_seq_length": 256,
        "mask_prompt": True,
        "steps_per_report": 1,
        "steps_per_eval": 8,
        "val_batches": -1,
        "save_every": 8,
        "seed": 0,
    }
    values.update(overrides)
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


def preference_row(path: str, i: int) -> dict:
    """A pair: the read_file call over a refusal (as a string, or as an assistant message)."""
    refusal = f"I cannot open {path}."
    return {
        "prompt": [{"role": "user", "content": f"Show {path}"}],
        "chosen": [{"role": "assistant", "content": "", "tool_calls": [tool_call(path)]}],
        "rejected": refusal if i % 2 else [{"role": "assistant", "content": refusal}],
        "tools": TOOLS,
    }


def write_pairs(folder: Path, n_train: int = 16, n_valid: int = 6, seed: int = 0) -> Path:
    """Preference rows in `folder`/train.jsonl and valid.jsonl."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid)):
        rows = [preference_row(rng.choice(FILES), i) for i in range(n)]
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return folder


def overfit_adapter(
    model: Path, root: Path, rows: list[dict], *, iters: int = 40, **overrides
) -> Path:
    """A full fine-tune of `model` that overfits `rows` (written to ROOT/data as train and
    valid): a random model never emits a tool call, so tests of the tool-call paths need one
    that repeats a known answer, and overfitting a few short rows takes seconds."""
    from punie.fsio import write_jsonl
    from punie.train.config import TrainConfig
    from punie.train.launch import start

    for split in ("train", "valid"):
        write_jsonl(root / "data" / f"{split}.jsonl", rows)
    settings = dict(
        fine_tune_type="full", num_layers=-1, learning_rate=3e-3, batch_size=2, iters=iters,
        mask_prompt=True, max_seq_length=512, steps_per_eval=1000, val_batches=1, save_every=1000,
    )  # fmt: skip
    config = TrainConfig(
        model=str(model),
        data=str(root / "data"),
        adapter_path=str(root / "adapter"),
        **{**settings, **overrides},
    )
    return start(config, overwrite=True).adapter_path
