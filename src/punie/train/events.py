"""The training worker's event channel: JSON lines from the child to the parent.

The worker writes one object a line on the stdout it started with (its own output goes to
train.log): `started`, `step`, `metrics`, `checkpoint`, `best`, `warning`, `early_stop`,
`interrupted`, `done`, and, when it cannot go on, `failed`:

    {"event": "failed", "reason": "'qproj' is not a module ...", "field": "target_modules"}

`field` names the config key or data file at fault (null when none is). The parent
(`punie.train.mlx`) turns `failed` into one PunieError line, `field: reason`.
"""

from __future__ import annotations

import json
from typing import Any

from punie.errors import BackendError, PunieError


class TrainingFailed(BackendError):
    """The trainer cannot go on: `reason`, about config key or file `field` where there is one."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field

    def to_event(self) -> dict[str, Any]:
        return {"event": "failed", "reason": self.reason, "field": self.field}

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> TrainingFailed:
        return cls(str(event.get("reason") or "training failed"), event.get("field") or None)


class EventChannel:
    """JSON lines to the parent on the stream this process started with."""

    def __init__(self, stream):
        self._stream = stream
        self._parent_gone = False

    def send(self, event: str, **data: Any) -> None:
        self._write({"event": event, **data})

    def failed(self, error: PunieError) -> None:
        if isinstance(error, TrainingFailed):
            self._write(error.to_event())
        else:  # bad training data from the shared readers: its message already names the place
            self._write({"event": "failed", "reason": str(error), "field": None})

    def _write(self, payload: dict[str, Any]) -> None:
        if self._parent_gone:
            return
        try:
            self._stream.write(json.dumps(payload) + "\n")
            self._stream.flush()
        except BrokenPipeError:
            # The parent died (kill -9) and its lifeline SIGTERM is on its way: the checkpoint
            # matters more than telling anyone.
            self._parent_gone = True
