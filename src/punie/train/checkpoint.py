"""What the training worker saves and restores: adapters, and checkpoints a resume continues from.

A checkpoint holds the trainable weights, the optimizer state, the batch order (the masking
cursor), numpy's RNG state and the best-so-far bookkeeping, so a resumed run takes the same
batches, schedule and iteration count as one never interrupted. It is written whole or not at all
(`atomic_dir`). MLX's own key cannot be set from saved bits; only dropout draws from it, so a
resumed run reseeds it from the config seed and the iteration instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from punie.fsio import atomic_dir, read_jsonl_tolerant, write_json, write_jsonl
from punie.train.config import TrainConfig
from punie.train.rundir import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RunDir
from punie.train.setup import adapter_config, load_trainable, trainable


@dataclass(frozen=True)
class LoopState:
    """Where the loop stands, as a checkpoint keeps it."""

    iteration: int
    cursor_order: list[int]
    cursor_next: int
    best: tuple[int, float] | None
    evals_since_best: int


def save_adapter(folder: Path, model, config: TrainConfig) -> None:
    """An mlx_lm-loadable adapter folder: adapters.safetensors + adapter_config.json."""
    import mlx.core as mx

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{ADAPTER_WEIGHTS}.tmp.safetensors"
    mx.save_safetensors(str(tmp), trainable(model))
    os.replace(tmp, folder / ADAPTER_WEIGHTS)
    write_json(folder / ADAPTER_CONFIG, adapter_config(config))


def save_checkpoint(run: RunDir, model, optimizer, state: LoopState) -> None:
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    rng = np.random.get_state()
    data = {
        "iteration": state.iteration,
        "cursor": {"order": state.cursor_order, "next": state.cursor_next},
        "numpy_rng": [rng[0], rng[1].tolist(), int(rng[2]), int(rng[3]), float(rng[4])],
        "best": list(state.best) if state.best else None,
        "evals_since_best": state.evals_since_best,
    }
    with atomic_dir(run.checkpoint, kind="checkpoint") as tmp:
        mx.save_safetensors(str(tmp / ADAPTER_WEIGHTS), trainable(model))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
        write_json(tmp / "state.json", data)


def restore_checkpoint(run: RunDir, model, optimizer, config: TrainConfig) -> LoopState:
    """Load the checkpoint into `model` and `optimizer`, set the RNGs; return the loop's state."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_unflatten

    data = json.loads(run.checkpoint_state.read_text())
    load_trainable(model, run.checkpoint, "resume")
    optimizer.state = tree_unflatten(list(mx.load(str(run.checkpoint_optimizer)).items()))
    name, keys, pos, has_gauss, cached = data["numpy_rng"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    iteration = int(data["iteration"])
    mx.random.seed(config.seed + iteration)
    return LoopState(
        iteration=iteration,
        cursor_order=data["cursor"]["order"],
        cursor_next=data["cursor"]["next"],
        best=tuple(data["best"]) if data["best"] else None,
        evals_since_best=int(data["evals_since_best"]),
    )


def truncate_metrics(path: Path, start: int) -> None:
    """Drop records past the checkpoint at `start`: the resumed run writes them again."""
    kept = [
        row
        for row in read_jsonl_tolerant(path)
        if row["iteration"] < start or (row["iteration"] == start and row.get("val_loss") is None)
    ]
    write_jsonl(path, kept)
