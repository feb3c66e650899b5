"""`select_by`: score a checkpoint's adapter on a held-out suite through the managed server.

One mlx_lm.server is started on the first checkpoint and kept for the run (a child of the
training worker, so it dies with it); each checkpoint is a new adapter folder, which the server
loads per request. The score is the suite's own (`EvalResult.score`), with the eval defaults
for sampling, so a checkpoint is picked on the number `punie eval` would report for it.
"""

from __future__ import annotations

from pathlib import Path

from punie.eval.client import Target
from punie.eval.runner import run_suite
from punie.eval.suite import Suite
from punie.sampling import DEFAULT_SAMPLING
from punie.serve.server import Server


class SuiteSelector:
    def __init__(self, suite: Suite, model: str, log: Path):
        self.suite = suite
        self.model = model
        self.log = log
        self.server: Server | None = None

    def __call__(self, adapter: Path) -> float:
        if self.server is None:
            self.server = Server(self.model, log=self.log).start()
        target = Target(self.server.base_url, model=self.model, adapter=str(adapter))
        result = run_suite(
            self.suite,
            target,
            label=adapter.name,
            sampling=DEFAULT_SAMPLING,
            server_status=self.server.status,
        )
        return result.score

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
