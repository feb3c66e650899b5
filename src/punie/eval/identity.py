"""Which model answered, by content: the hashes a response cache and a report can trust.

A folder name says little: `adapters/` is overwritten by the next training run, and a model folder
can be re-quantised in place. So a model is identified by a hash of the files mlx_lm loads from
it (weights, config, tokenizer, chat template), and an adapter by its weights and config.
Training checkpoints and logs beside the adapter are not part of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from punie.fsio import file_sha256
from punie.train.rundir import ADAPTER_CONFIG, ADAPTER_WEIGHTS

MODEL_FILES = ("*.safetensors", "*.json", "*.jinja", "tokenizer.model", "*.tiktoken")
ADAPTER_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG)


@dataclass(frozen=True)
class Identity:
    model: str  # the name every request carries
    model_hash: str | None  # None when the model is not a local folder (a remote server's name)
    adapter: str | None = None
    adapter_hash: str | None = None
    template_hash: str | None = None

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "model_hash": self.model_hash,
            "adapter": self.adapter,
            "adapter_hash": self.adapter_hash,
            "template_hash": self.template_hash,
        }


def identify(model: str, adapter: str | None = None) -> Identity:
    folder = Path(model).expanduser()
    model_hash = template_hash = None
    if folder.is_dir():
        model_hash = folder_hash(folder, MODEL_FILES)
        template_hash = _template_hash(folder)
    adapter_hash = None
    if adapter:
        adapter_hash = folder_hash(Path(adapter).expanduser(), ADAPTER_FILES)
    return Identity(model, model_hash, adapter, adapter_hash, template_hash)


def folder_hash(folder: Path, patterns: tuple[str, ...]) -> str | None:
    """sha256 over the names and bytes of the files in `folder` matching `patterns`."""
    files = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f.name.encode() + b"\0" + _file_hash(str(f), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    # Memoised on (path, size, mtime) so a process that evaluates often hashes the weights once.
    return file_sha256(path)


def _template_hash(folder: Path) -> str | None:
    """The chat template's hash: the one thing that must match between training and eval."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return hashlib.sha256(jinja.read_bytes()).hexdigest()
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        template = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        if template is not None:
            text = json.dumps(template, sort_keys=True)
            return hashlib.sha256(text.encode()).hexdigest()
    return None
