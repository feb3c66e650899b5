"""An optimizer wrapper that clips, measures and guards every update, whatever step calls it.

`GuardedOptimizer(inner, max_grad_norm)` behaves as `inner` (an mlx.optimizers optimizer) except
that `update(model, gradients)`:

- measures the global gradient norm (before clipping, as PyTorch and the HF Trainer report it);
- scales the gradients down to `max_grad_norm` when they exceed it (when one is set);
- skips the update when the norm is NaN or infinite: weights and optimizer state (moments, step
  count, schedule) stay exactly as they were, and the skip is counted.

SFT (mlx_lm's trainer), DPO and GRPO steps all end in `optimizer.update`, so each gets these by
building its optimizer with `punie.train.setup.build_optimizer`.

mlx_lm compiles its step (`mx.compile`) with the model's and the optimizer's state as the only
state a step may change, so nothing here branches on a value: the skip is an `mx.where` between
the new and the old arrays, and the counters live in the optimizer's state, under `AUX_KEY`, where
the compiled step writes them back. The token tallies of `punie.train.masking.counting_loss` live
there for the same reason. Between steps, `take_window()` reads the counters (one sync, as mlx_lm
already makes for its own report) and starts a new window.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

AUX_KEY = "punie"


# Gradients up to this many values in all are joined into one vector for the norm.
JOIN_LIMIT = 1 << 24


def global_norm(gradients) -> Any:
    """The L2 norm of every gradient together, summed in float32.

    LoRA has many small gradients (two a layer and projection), and on MLX's CPU stream each op
    costs a few microseconds however small: one reduction over a joined vector instead of one
    per gradient took a fifth off the guard's cost (JOURNAL). A full fine-tune's gradients are
    summed one by one instead, so as not to copy them all."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    grads = [g for _, g in tree_flatten(gradients)]
    if not grads:
        return mx.array(0.0)
    if sum(g.size for g in grads) <= JOIN_LIMIT:
        joined = mx.concatenate([g.astype(mx.float32).reshape(-1) for g in grads])
        return mx.sqrt(mx.sum(joined * joined))
    squares = [g.astype(mx.float32).square().sum() for g in grads]
    return mx.sqrt(mx.sum(mx.stack(squares)))


def clip(gradients, norm, max_norm: float):
    """`gradients` scaled so that their global norm (`norm`) is at most `max_norm`."""
    import mlx.core as mx
    from mlx.utils import tree_map

    factor = mx.minimum(mx.array(1.0), max_norm / (norm + 1e-6))
    return tree_map(lambda g: (g * factor).astype(g.dtype), gradients)


def fresh_aux() -> dict[str, Any]:
    """The counters a window starts from (see `take_window`)."""
    import mlx.core as mx

    zero, zero_f = mx.array(0, mx.int32), mx.array(0.0, mx.float32)
    return {
        "norm_sum": zero_f,  # over the finite steps of the window
        "finite_steps": zero,
        "skipped": zero,  # in the window
        "streak": zero,  # non-finite updates in a row, across windows
        "last_norm": zero_f,
        # written by `counting_loss`: argmax hits and trained tokens, and the finite losses
        "train_correct": zero,
        "train_tokens": zero,
        "train_loss_sum": zero_f,
        "train_loss_steps": zero,
        "valid_correct": zero,
        "valid_tokens": zero,
    }


@dataclass(frozen=True)
class Window:
    """What the updates since the last `take_window` did."""

    grad_norm: float | None  # mean over the finite updates; None if there were none
    skipped: int  # non-finite updates skipped in this window
    streak: int  # non-finite updates in a row, up to now
    last_norm: float
    token_accuracy: float | None  # argmax hits / trained tokens in the window's training steps
    train_loss: float | None  # mean of the finite step losses (mlx_lm's mean, without NaNs)


class GuardedOptimizer:
    """`inner` with global-norm clipping, the norm recorded, and non-finite updates skipped."""

    def __init__(self, inner, max_grad_norm: float | None = None):
        self.inner = inner
        self.max_grad_norm = max_grad_norm
        self.inner.state[AUX_KEY] = fresh_aux()

    # --- what mlx_lm and the checkpoints use ---------------------------------------------------
    @property
    def state(self) -> dict:
        return self.inner.state

    @state.setter
    def state(self, state: dict) -> None:
        self.inner.state = state
        state.setdefault(AUX_KEY, fresh_aux())  # a checkpoint from before the counters existed

    @property
    def learning_rate(self):
        return self.inner.learning_rate

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        self.inner.learning_rate = value

    @property
    def step(self):
        return self.inner.step

    @property
    def aux(self) -> dict[str, Any]:
        """The counters, in the state a compiled step writes back."""
        return self.inner.state.setdefault(AUX_KEY, fresh_aux())

    def init(self, parameters: dict) -> None:
        self.inner.init(parameters)

    def update(self, model, gradients: dict) -> None:
        model.update(self.apply_gradients(gradients, model))

    def apply_gradients(self, gradients: dict, parameters):
        import mlx.core as mx
        import mlx.optimizers as optim
        from mlx.utils import tree_map

        norm = global_norm(gradients)
        finite = mx.isfinite(norm)
        if self.max_grad_norm:
            gradients = clip(gradients, norm, self.max_grad_norm)
        if not self.inner._initialized:  # so the state to fall back on has every moment in it
            self.inner.init(gradients)
        state = self.inner.state
        aux = self.aux

        def keep_if_finite(new, old):
            return mx.where(finite, new, old) if isinstance(new, mx.array) else new

        if type(self.inner) in (optim.Adam, optim.AdamW):
            # The step count and the schedule: the scalars beside the per-parameter states.
            before = {k: v for k, v in state.items() if k != AUX_KEY and isinstance(v, mx.array)}
            self.inner.apply_single = partial(_adam_single, self.inner, finite)
            try:
                params = self.inner.apply_gradients(gradients, parameters)
            finally:
                del self.inner.apply_single
        else:
            # A copy of the structure (updates mutate it in place); the aux key stays where it
            # is, as the compiled step matches its state by position.
            before = {k: tree_map(lambda x: x, v) for k, v in state.items() if k != AUX_KEY}
            updated = self.inner.apply_gradients(gradients, parameters)
            params = tree_map(keep_if_finite, updated, parameters)
        for key, old in before.items():
            state[key] = tree_map(keep_if_finite, state[key], old)
        bad = (~finite).astype(mx.int32)
        state[AUX_KEY] = {
            **aux,
            "norm_sum": aux["norm_sum"] + mx.where(finite, norm, 0.0),
            "finite_steps": aux["finite_steps"] + finite.astype(mx.int32),
            "skipped": aux["skipped"] + bad,
            "streak": (aux["streak"] + bad) * bad,
            "last_norm": norm,
        }
        return params

    # --- between steps ---------------------------------------------------------------------------
    def take_window(self) -> Window:
        """Read the counters since the last call, and reset them (the streak and the last norm
        carry on)."""
        aux = {k: v.item() for k, v in self.aux.items()}
        fresh = fresh_aux()
        fresh["streak"], fresh["last_norm"] = self.aux["streak"], self.aux["last_norm"]
        self.inner.state[AUX_KEY] = fresh
        finite = aux["finite_steps"]
        return Window(
            grad_norm=aux["norm_sum"] / finite if finite else None,
            skipped=int(aux["skipped"]),
            streak=int(aux["streak"]),
            last_norm=float(aux["last_norm"]),
            token_accuracy=_ratio(aux["train_correct"], aux["train_tokens"]),
            train_loss=_ratio(aux["train_loss_sum"], aux["train_loss_steps"]),
        )

    def streak(self) -> int:
        return int(self.aux["streak"].item())

    def take_validation_accuracy(self) -> float | None:
        aux = self.aux
        value = _ratio(aux["valid_correct"].item(), aux["valid_tokens"].item())
        fresh = fresh_aux()
        aux["valid_correct"], aux["valid_tokens"] = fresh["valid_correct"], fresh["valid_tokens"]
        return value


def _adam_single(adam, finite, gradient, parameter, state: dict):
    """`mlx.optimizers.Adam.apply_single` (and AdamW's, which decays the parameter first), with
    the skip inside each new array's expression.

    Kept after the fact, as for any other optimizer, each new moment would be read twice (by the
    parameter's update and by its `where`), so `mx.compile` could not fuse it into its update:
    two more kernels a parameter, about a third of a millisecond a step on the tiny model's 56
    LoRA arrays (benchmarks/guard.py). Here the parameter's update reads the kept moments. On a
    finite step every value is Adam's to the bit (tests/test_train_stable.py)."""
    import mlx.core as mx
    import mlx.optimizers as optim

    lr = adam.learning_rate.astype(gradient.dtype)
    b1, b2 = adam.betas
    start = parameter
    if isinstance(adam, optim.AdamW):
        start = parameter * (1 - lr * adam.weight_decay)
    m = mx.where(finite, b1 * state["m"] + (1 - b1) * gradient, state["m"])
    v = mx.where(finite, b2 * state["v"] + (1 - b2) * mx.square(gradient), state["v"])
    state["m"], state["v"] = m, v
    if adam.bias_correction:
        c1 = (lr / (1 - b1**adam.step)).astype(gradient.dtype)
        c2 = mx.rsqrt(1 - b2**adam.step).astype(gradient.dtype)
        new = start - c1 * m / (mx.sqrt(v) * c2 + adam.eps)
    else:
        new = start - lr * m / (mx.sqrt(v) + adam.eps)
    return mx.where(finite, new, parameter)


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None
