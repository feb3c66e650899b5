"""One training process: `python -m punie_peft.worker <run_dir>` (reads run_dir/config.json).

What `accelerate launch` starts in every process (see punie_peft.launcher). A PunieError becomes
one line on stderr and exit code 2, so the launcher's log tail says what went wrong.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from punie.errors import PunieError
from punie.train.config import TrainConfig
from punie.train.rundir import RunDir
from punie_peft.trainer import train_here


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m punie_peft.worker RUN_DIR", file=sys.stderr)
        return 2
    try:
        run = RunDir(Path(argv[0]))
        data = json.loads(run.config.read_text(encoding="utf-8"))
        train_here(TrainConfig.from_dict(data, source=str(run.config)), run)
    except PunieError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
