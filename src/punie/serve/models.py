"""The ids a front server answers to: each one names a model folder and, or not, an adapter.

A client names what should answer by id, and only by id: the base model under its own id, each
adapter under its run name (its folder's name) or a name given with `ID=PATH`. A folder path, a
hub id that is not served, or mlx_lm's internal `default_model` is an unknown id: the front answers
404 and nothing is loaded or downloaded. The ids are fixed when the server starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from punie.errors import ServerError


@dataclass(frozen=True)
class ServedModel:
    id: str
    model: str  # the folder mlx_lm.server loads
    adapter: str | None = None  # the adapter folder applied on top, if any

    def describe(self) -> str:
        return self.model + (f" + adapter {self.adapter}" if self.adapter else "")


def default_id(model: str) -> str:
    """A base model's id: the folder's name for a local folder (or a path), the hub id as given
    otherwise (`org/name`)."""
    path = Path(model).expanduser()
    if path.exists() or path.is_absolute() or model.startswith((".", "~")):
        return path.resolve().name
    return model.rstrip("/")


def adapter_spec(spec: str) -> tuple[str | None, str]:
    """`ID=PATH` or `PATH` (the id is then the folder's name, the run name)."""
    name, sep, path = spec.partition("=")
    if sep and name and not Path(spec).exists():
        return name, path
    return None, spec


def check_id(served_id: str, what: str) -> str:
    if not served_id or any(c.isspace() for c in served_id) or not served_id.isprintable():
        raise ServerError(f"{what}: {served_id!r} is not a usable model id (no spaces, not empty)")
    return served_id


@dataclass(frozen=True)
class Registry:
    """Every served id, the base model first."""

    models: tuple[ServedModel, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(m.id for m in self.models)

    def get(self, served_id: str) -> ServedModel | None:
        return next((m for m in self.models if m.id == served_id), None)


def build_registry(
    model: str, adapters: tuple[tuple[str | None, str], ...] = (), name: str | None = None
) -> Registry:
    """The base model under `name` (default `default_id(model)`), then each `(id, folder)`
    adapter under its id (default: the folder's name). Two things under one id are refused."""
    served = [ServedModel(check_id(name or default_id(model), "--name"), str(model))]
    for adapter_id, folder in adapters:
        folder_name = Path(folder).expanduser().resolve().name
        served_id = check_id(adapter_id or folder_name, f"adapter {folder}")
        served.append(ServedModel(served_id, str(model), str(folder)))
    seen: dict[str, ServedModel] = {}
    for m in served:
        if m.id in seen:
            raise ServerError(
                f"model id {m.id!r} names both {seen[m.id].describe()} and {m.describe()}; "
                "name them apart with --name for the base model or --adapter ID=PATH"
            )
        seen[m.id] = m
    return Registry(tuple(served))
