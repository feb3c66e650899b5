"""The plain data every scorer shares: a model's response in, a verdict out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Response:
    """One answer a model gave to one case: what `punie eval score --responses` reads.

    `tool_calls` is OpenAI-shaped (`[{"function": {"name", "arguments"}}]`); `finish_reason`
    lets the scorer see a tool call the server dropped because it could not parse it.
    """

    id: str
    content: str = ""
    tool_calls: list[dict] | None = None
    finish_reason: str | None = None
    sample: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Response:
        return cls(
            id=str(data["id"]),
            content=data.get("content") or "",
            tool_calls=data.get("tool_calls") or None,
            finish_reason=data.get("finish_reason"),
            sample=int(data.get("sample", 0)),
        )


@dataclass(frozen=True)
class Verdict:
    passed: bool
    label: str | None = None  # a typed failure label when not passed
    reason: str = ""
    coverage: float | None = None  # code: the fraction of the case's tests passed
