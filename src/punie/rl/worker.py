"""The training child for runs that evaluate inside training: `python -m punie.rl.worker RUN`.

It runs GRPO (`punie.rl.trainer`), and any other method with `select_by` (the SFT worker's
`run`, given a selector), with the same events, exit codes and train.log as
`punie.train.worker`; the MLX backend starts this module instead of that one for such runs.
The selector's mlx_lm.server is this process's child and is stopped however the run ends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from punie.errors import PunieError
from punie.eval.suite import Suite
from punie.rl.select import SuiteSelector
from punie.train.config import TrainConfig
from punie.train.events import EventChannel, TrainingFailed
from punie.train.rundir import RunDir
from punie.train.tracking import close_all
from punie.train.worker import FAILED_EXIT, redirect_output
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
    argv = sys.argv[1:] if argv is None else argv
    rundir = RunDir(Path(argv[0]))
    events = redirect_output(rundir.log)
    try:
        return run(rundir, events)
    except PunieError as e:
        events.failed(e)
        return FAILED_EXIT
    finally:
        close_all()  # the trackers of `report_to`, however the run ended


if __name__ == "__main__":
    sys.exit(main())
