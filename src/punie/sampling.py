"""Sampling settings, and their defaults: one place for every entry point.

`punie eval`, `punie serve`, `punie demo`, `Server` (the `mlx_lm.server` it starts gets them as
its own defaults, for requests that name none) and the eval client all take `DEFAULT_SAMPLING`
unless told otherwise, so a model answers the same way whichever door a prompt comes in by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # greedy: an eval score that does not move between runs
    max_tokens: int = 256  # room for a tool call with its arguments, or a short answer
    top_p: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        """The fields of an OpenAI chat-completions request."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p}

    def server_args(self) -> list[str]:
        """The same settings as `mlx_lm.server`'s defaults for requests that name none."""
        return [
            "--temp",
            str(self.temperature),
            "--top-p",
            str(self.top_p),
            "--max-tokens",
            str(self.max_tokens),
        ]


DEFAULT_SAMPLING = Sampling()
