"""The backend protocol: what `punie train` needs from a training engine.

A backend turns a TrainConfig into a run folder (adapter, metrics.jsonl; the run record is
`punie.train.launch`'s) and can fuse an adapter into its base model. `capabilities` says what it
supports, so the CLI can refuse an unsupported request before anything starts. Its own options
are a frozen dataclass (`options_type`) read from the config's `extra` table by `parse_options`:
an unknown key is refused with one line naming it and the allowed ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from punie.errors import ConfigError
from punie.train.callbacks import TrainingEvents
from punie.train.config import TrainConfig
from punie.train.rundir import RunDir


@dataclass(frozen=True)
class Capabilities:
    fine_tune_types: tuple[str, ...]
    methods: tuple[str, ...] = ("sft",)  # sft, dpo, ...
    quantized_base: bool = False  # QLoRA
    multi_process: bool = False
    select_by: bool = False  # scores checkpoints on a suite (`select_by`)
    notes: str = ""


@dataclass(frozen=True)
class FuseResult:
    """What `Backend.fuse` wrote: the model folder, which adapter went in, and the checks made."""

    out: Path
    run: str
    adapter: Path
    gguf: Path | None = None
    modelfile: Path | None = None  # an Ollama Modelfile, where the backend writes one
    parity: list[dict[str, Any]] = field(default_factory=list)  # prompts checked, if any

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}

    def summary(self) -> str:
        checked = f"parity ok on {len(self.parity)} prompts" if self.parity else "parity skipped"
        gguf = f", gguf {self.gguf}" if self.gguf else ""
        return f"fused {self.run} ({self.adapter.name}) into {self.out}{gguf}; {checked}"


@runtime_checkable
class Backend(Protocol):
    name: str
    options_type: type  # a frozen dataclass of the backend's own options (config `extra.*`)

    def capabilities(self) -> Capabilities: ...

    def check(self, config: TrainConfig) -> None:
        """Raise a ConfigError or BackendError (one line) if `config` cannot run here; start
        nothing."""

    def train(self, config: TrainConfig, run: RunDir, events: TrainingEvents) -> Path:
        """Train; write the adapter and metrics.jsonl into `run`; return the adapter path."""

    def fuse(
        self,
        run_dir: Path,
        out: Path,
        *,
        checkpoint: str = "best",
        dequantize: bool = False,
        gguf: str | None = None,
        parity: bool = True,
    ) -> FuseResult:
        """Merge the run's adapter (`best`, or `final`) into its base model and write a loadable
        model folder to `out`; refuse (BackendError) an option this backend cannot honour."""


Options = TypeVar("Options")


def parse_options(
    kind: type[Options],
    extra: Mapping[str, Any],
    backend: str,
    aliases: Mapping[str, str] | None = None,
) -> Options:
    """`kind(**extra)`, with `aliases` (old spellings) renamed; an unknown key is one line."""
    allowed = [f.name for f in dataclasses.fields(kind)]
    values: dict[str, Any] = {}
    for key, value in extra.items():
        name = (aliases or {}).get(key, key)
        if name not in allowed:
            choices = ", ".join(allowed) if allowed else "none"
            raise ConfigError(
                f"extra.{key}: not an option of backend {backend} (its options: {choices})"
            )
        if value is not None:
            values[name] = value
    return kind(**values)
