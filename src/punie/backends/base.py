"""The backend protocol: what `punie train` needs from a training engine.

A backend turns a TrainConfig into a run folder (adapter, metrics.jsonl, run record) and can fuse
an adapter into its base model. `capabilities` says what it supports, so the CLI can refuse an
unsupported request before anything starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Capabilities:
    fine_tune_types: tuple[str, ...]
    methods: tuple[str, ...] = ("sft",)  # sft, dpo, ...
    quantized_base: bool = False  # QLoRA
    multi_process: bool = False
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


# Called with one metrics record (the dict written to metrics.jsonl) as training goes, or with
# `{"iteration", "warning"}`: a one-line warning (rows skipped from the data, say).
MetricsCallback = Callable[[dict[str, Any]], None]


@runtime_checkable
class Backend(Protocol):
    name: str

    def capabilities(self) -> Capabilities: ...

    def check(self, config: Any) -> None:
        """Raise PunieError (one line) if `config` cannot run here; start nothing."""

    def train(self, config: Any, run_dir: Path, on_metrics: MetricsCallback | None = None) -> Path:
        """Train; write the adapter and metrics.jsonl into `run_dir`; return the adapter path."""

    def fuse(
        self,
        run_dir: Path,
        out: Path,
        *,
        checkpoint: str = "best",
        dequantize: bool = False,
        gguf: bool = False,
        parity: bool = True,
    ) -> FuseResult:
        """Merge the run's adapter (`best`, or `final`) into its base model and write a loadable
        model folder to `out`; refuse (BackendError) an option this backend cannot honour."""
