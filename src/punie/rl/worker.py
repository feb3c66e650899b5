"""The training child for runs that evaluate inside training: `python -m punie.rl.worker RUN`.

It runs GRPO (`punie.rl.trainer`), and any other method with `select_by` (the SFT worker's
`run`, given a selector), with the same events, exit codes and train.log as
`punie.train.worker`; the MLX backend starts this module instead of that one for such runs.
The selector's mlx_lm.server is this process's child and is stopped however the run ends.
"""

from __future__ import annotations

import json
import sys

from punie.errors import PunieError
from punie.eval.suite import Suite
from punie.rl.select import SuiteSelector
from punie.train.config import TrainConfig
from punie.train.events import EventChannel, TrainingFailed
from punie.train.rundir import RunDir
from punie.train.worker import main as worker_main
from punie.train.worker import run as run_sft


def selector_for(run: RunDir, config: TrainConfig) -> SuiteSelector | None:
    if not config.select_by:
        return None
    try:
        suite = Suite.load(config.select_by)
    except PunieError as e:
        raise TrainingFailed(str(e), field="select_by") from None
    return SuiteSelector(suite, config.model, log=run.select_log)


def run(run: RunDir, events: EventChannel) -> int:
    config = TrainConfig.from_dict(json.loads(run.config.read_text()), source=str(run.config))
    selector = selector_for(run, config)
    try:
        if config.method == "grpo":
            from punie.rl.trainer import train_grpo

            return train_grpo(run, events, selector)
        return run_sft(run, events, selector)
    finally:
        if selector is not None:
            selector.close()


def main(argv: list[str] | None = None) -> int:
    return worker_main(argv, train_run=run)


if __name__ == "__main__":
    sys.exit(main())
