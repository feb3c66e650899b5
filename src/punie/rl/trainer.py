"""The GRPO loop on MLX: sample, score, update, with the SFT worker's hooks between steps.

One iteration: take `batch_size` prompts of the reward suite (a fresh seeded permutation each
pass, so a resumed run takes the same ones), sample `group_size` completions of each with the
current policy (`punie.train.rollout`), score them with the suite's scorer
(`punie.rl.reward`), turn the rewards into group advantages and make `updates_per_rollout`
optimizer updates on the batch (`punie.train.grpo`). Every completion goes to rollouts.jsonl,
every step's numbers to metrics.jsonl; checkpoints, best/, SIGTERM and the NaN stop are
`punie.train.loop.Loop`'s, as in SFT.

The reference is the starting point (base + `from_adapter`), frozen: its trainable weights are
kept aside (MLX arrays are immutable, so keeping them costs nothing until they diverge) and
swapped in for the reference's forward pass, which `kl_beta = 0` skips.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from punie.eval.suite import Case, Suite
from punie.fsio import read_jsonl_tolerant, write_json, write_jsonl
from punie.rl.reward import reward
from punie.train.config import TrainConfig
from punie.train.events import EventChannel, TrainingFailed
from punie.train.rundir import RunDir, adapter_config_file


@dataclass(frozen=True)
class Prompt:
    case: Case
    tokens: list[int]


def load_prompts(config: TrainConfig, tokenizer) -> tuple[Suite, list[Prompt]]:
    """The reward suite's cases, rendered with the chat template as the eval server does."""
    from punie.errors import PunieError

    try:
        suite = Suite.load(config.reward_suite)
    except PunieError as e:
        raise TrainingFailed(str(e), field="reward_suite") from None
    prompts = []
    for case in suite.cases:
        tools = list(suite.tools_for(case)) or None
        tokens = tokenizer.apply_chat_template(
            suite.messages_for(case), tools=tools, add_generation_prompt=True, tokenize=True
        )
        if len(tokens) + config.max_completion_tokens > config.max_seq_length:
            raise TrainingFailed(
                f"{suite.path}: case {case.id!r}: its prompt ({len(tokens)} tokens) plus "
                f"max_completion_tokens ({config.max_completion_tokens}) exceed max_seq_length",
                field="max_seq_length",
            )
        prompts.append(Prompt(case, list(tokens)))
    return suite, prompts


def prompt_indices(iteration: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Iteration `iteration`'s prompts: consecutive places in seeded permutations of all n."""
    import numpy as np

    out = []
    for place in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, within = divmod(place, n)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[within]))
    return out


class RolloutLog:
    """rollouts.jsonl: one line per completion, appended and flushed each step."""

    def __init__(self, path: Path, start: int):
        if start:  # a resumed run writes its steps after the checkpoint again
            write_jsonl(path, [r for r in read_jsonl_tolerant(path) if r["iteration"] <= start])
        self._file = open(path, "a" if start else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, rows: list[dict]) -> None:
        self._file.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def train_grpo(run: RunDir, events: EventChannel, selector=None) -> int:
    """The GRPO worker's body; returns the exit code (0, or 130 when interrupted)."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.utils import load

    from punie.train.loop import EarlyStop, Loop
    from punie.train.setup import (
        adapter_config,
        build_optimizer,
        load_trainable,
        prepare_model,
        resolve_num_layers,
        trainable,
    )
    from punie.train.worker import INTERRUPTED_EXIT, install_stop_handler

    config = TrainConfig.from_dict(json.loads(run.config.read_text()), source=str(run.config))
    resuming = run.checkpoint_state.is_file()
    stop = install_stop_handler()

    np.random.seed(config.seed)
    model, tokenizer = load(config.model)
    config = resolve_num_layers(model, config, events)  # adapter_config.json needs the number
    suite, prompts = load_prompts(config, tokenizer)
    mx.random.seed(config.seed)
    prepare_model(model, config)
    if config.from_adapter:  # also when resuming: it is the reference
        load_trainable(model, Path(config.from_adapter), "from_adapter")
    reference = dict(trainable(model)) if config.kl_beta > 0 else None

    optimizer = build_optimizer(config)
    loop = Loop(run, config, model, optimizer, None, events, selector)
    stop.attach(loop)
    if resuming:
        loop.restore_checkpoint()
    else:
        for stale in (run.best, run.checkpoint):
            shutil.rmtree(stale, ignore_errors=True)
    if loop.completed >= config.iters:
        events.send("done", iteration=loop.completed)
        return 0
    write_json(adapter_config_file(run.adapter), adapter_config(config))
    events.send("started", iteration=loop.completed, iters=config.iters)
    log = RolloutLog(run.rollouts, loop.completed)
    step = GRPOStep(config, model, tokenizer, optimizer, suite, prompts, reference)
    trained_tokens = 0
    try:
        for it in range(loop.completed, config.iters):
            if loop.stop_requested:
                loop.save_checkpoint()
                events.send("interrupted", iteration=loop.completed)
                return INTERRUPTED_EXIT
            if it > loop.start and it % config.save_every == 0:
                loop.select()  # first, so the checkpoint holds the best-so-far it produced
                loop.save_checkpoint()
            record, rows = step.run(it)
            loop.completed = it + 1
            trained_tokens += step.last_completion_tokens
            record = replace(record, trained_tokens=trained_tokens)
            log.write(rows)
            if not np.isfinite(record.train_loss):
                loop.fail(loop.completed, f"the GRPO loss is {record.train_loss}")
            loop.check_weights()
            loop.record(record)
            events.send("step", iteration=loop.completed)
    except EarlyStop:
        events.send("early_stop", iteration=loop.completed)
    finally:
        log.close()
    loop.finish()
    events.send("done", iteration=loop.completed, peak_memory=mx.get_peak_memory() / 1e9)
    return 0


class GRPOStep:
    """One iteration's rollout, rewards and updates; `run(it)` returns (record, rollout rows)."""

    def __init__(self, config, model, tokenizer, optimizer, suite, prompts, reference):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.optimizer = optimizer
        self.suite = suite
        self.prompts = prompts
        self.reference = reference
        self.last_completion_tokens = 0

    def reference_logprobs(self, tokens):
        import mlx.core as mx

        from punie.train.grpo import token_logprobs
        from punie.train.setup import trainable

        current = list(trainable(self.model).items())
        self.model.load_weights(list(self.reference.items()), strict=False)
        try:
            ref = mx.stop_gradient(token_logprobs(self.model, tokens, self.config.temperature))
            mx.eval(ref)
        finally:
            self.model.load_weights(current, strict=False)
        return ref

    def run(self, it: int):
        import mlx.core as mx
        import numpy as np

        from punie.train.grpo import Batch, group_advantages, loss_and_grad, token_logprobs
        from punie.train.records import MetricsRecord
        from punie.train.rollout import sample

        c = self.config
        picked = [
            self.prompts[i] for i in prompt_indices(it, c.batch_size, len(self.prompts), c.seed)
        ]
        tic = time.perf_counter()
        mx.random.seed(c.seed + it)  # the rollout's draws depend on the iteration only
        rollout = sample(
            self.model,
            self.tokenizer,
            [p.tokens for p in picked],
            group_size=c.group_size,
            temperature=c.temperature,
            max_tokens=c.max_completion_tokens,
        )
        rewards = [
            reward(
                self.suite,
                picked[comp.prompt_index].case,
                comp.text,
                mode=c.reward,
                format_weight=c.format_reward,
            )
            for comp in rollout.completions
        ]
        totals = np.array([r.total for r in rewards])
        adv = group_advantages(totals, c.group_size, c.advantage)

        update_tic = time.perf_counter()
        batch = Batch.of(
            [picked[comp.prompt_index].tokens for comp in rollout.completions],
            [comp.tokens for comp in rollout.completions],
        )
        live = mx.array(adv.live.astype(np.float32))[:, None]
        live_mask = batch.mask * live
        loss = kl = clip = None
        forwarded = 0
        if adv.live.any():
            ref_logp = self.reference_logprobs(batch.tokens) if self.reference else None
            old_logp = None
            if c.updates_per_rollout > 1:
                old_logp = mx.stop_gradient(token_logprobs(self.model, batch.tokens, c.temperature))
                mx.eval(old_logp)
            advantages = mx.array(adv.values.astype(np.float32))
            for _ in range(c.updates_per_rollout):
                terms, grads = loss_and_grad(
                    self.model, batch, old_logp, ref_logp, live_mask, advantages, c
                )
                self.optimizer.update(self.model, grads)
                mx.eval(self.model.parameters(), self.optimizer.state, terms.loss, terms.kl)
                loss = float(terms.loss.item()) if loss is None else loss
                kl = float(terms.kl.item()) if kl is None else kl
                clip = float(terms.clip_fraction.item())
                forwarded += int(batch.mask.shape[0] * batch.tokens.shape[1])
        update_s = time.perf_counter() - update_tic
        step_s = time.perf_counter() - tic
        self.last_completion_tokens = int(live_mask.sum().item())  # the tokens that trained
        lengths = [len(comp.tokens) for comp in rollout.completions]
        lr = self.optimizer.learning_rate
        record = MetricsRecord(
            iteration=it + 1,
            # the loss and KL before this step's first update: the policy that sampled
            train_loss=loss if loss is not None else 0.0,
            learning_rate=float(lr.item() if hasattr(lr, "item") else lr),
            tokens_per_second=forwarded / update_s if forwarded else 0.0,
            iterations_per_second=1.0 / step_s,
            peak_memory=mx.get_peak_memory() / 1e9,
            reward_mean=float(totals.mean()),
            reward_std=float(totals.std()),
            format_reward_mean=float(np.mean([r.format for r in rewards])),
            zero_variance_fraction=adv.zero_variance_groups / adv.groups,
            kl=kl if c.kl_beta > 0 else None,
            clip_fraction=clip if clip is not None else 0.0,
            completion_length=float(np.mean(lengths)),
            rollout_tokens_per_second=rollout.tokens / rollout.seconds,
            update_tokens_per_second=forwarded / update_s if forwarded else 0.0,
            rollout_time=update_tic - tic,
            update_time=update_s,
        )
        rows = [
            {
                "iteration": it + 1,
                "prompt_id": picked[comp.prompt_index].case.id,
                "sample": i % c.group_size,
                "completion": comp.text,
                "tokens": len(comp.tokens),
                "reward": r.total,
                "format_reward": r.format,
                "label": r.label,
                "advantage": float(adv.values[i]),
            }
            for i, (comp, r) in enumerate(zip(rollout.completions, rewards, strict=True))
        ]
        return record, rows
