"""GRPO on the peft backend: TRL's GRPOTrainer, rewarded by the same Punie scorers as on MLX.

The prompts are the reward suite's cases, rendered to text with the model's chat template (each
case with its own tools, as the eval server renders it), the case id a column beside them. Two
reward functions score every completion with `punie.rl.reward.reward`, the function the MLX
trainer calls: `task_reward` (the scorer's verdict, or its partial credit) and `format_reward`
(the separate format term), so TRL logs them apart and adds them up. The scorer runs once per
completion: the format function reuses the task function's verdicts for the same completions.

rollouts.jsonl gets one line per completion with the advantage TRL computed from those rewards
(`PunieGRPOTrainer` reads it from the scored batch). Under accelerate each process scores its own
share; the main process writes its share.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from punie.errors import BackendError
from punie.eval.suite import Suite
from punie.rl.reward import Reward, reward

PROMPT, CASE_ID = "prompt", "case_id"


def load_suite(config: Any) -> Suite:
    from punie.errors import PunieError

    try:
        return Suite.load(config.reward_suite)
    except PunieError as e:
        raise BackendError(f"reward_suite: {e}") from None


def prompt_rows(suite: Suite, tokenizer, config: Any) -> list[dict[str, str]]:
    """One dataset row per case: the prompt as the chat template renders it, and the case id."""
    rows = []
    for case in suite.cases:
        text = tokenizer.apply_chat_template(
            suite.messages_for(case),
            tools=list(suite.tools_for(case)) or None,
            add_generation_prompt=True,
            tokenize=False,
        )
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n + config.max_completion_tokens > config.max_seq_length:
            raise BackendError(
                f"max_seq_length: {suite.path}: case {case.id!r}: its prompt ({n} tokens) plus "
                f"max_completion_tokens ({config.max_completion_tokens}) exceed max_seq_length "
                f"({config.max_seq_length})"
            )
        rows.append({PROMPT: text, CASE_ID: case.id})
    return rows


def _text(completion: Any) -> str:
    """TRL hands plain-text completions for text prompts, messages for conversational ones."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


class ScorerRewards:
    """The two reward functions TRL calls, `(prompts, completions, case_id, **kw) -> [float]`."""

    def __init__(self, suite: Suite, *, mode: str, format_weight: float):
        self.suite = suite
        self.cases = {case.id: case for case in suite.cases}
        self.mode = mode
        self.format_weight = format_weight
        self.last: list[Reward] = []  # the verdicts of the latest batch, for rollouts.jsonl
        self.last_texts: list[str] = []

    def score(self, completions: list, case_ids: list[str]) -> list[Reward]:
        texts = [_text(c) for c in completions]
        if texts != self.last_texts or len(self.last) != len(texts):
            self.last = [
                reward(
                    self.suite,
                    self.cases[cid],
                    text,
                    mode=self.mode,
                    format_weight=self.format_weight,
                )
                for cid, text in zip(case_ids, texts, strict=True)
            ]
            self.last_texts = texts
        return self.last

    def task_reward(self, prompts, completions, case_id, **_) -> list[float]:
        return [r.task for r in self.score(completions, case_id)]

    def format_reward(self, prompts, completions, case_id, **_) -> list[float]:
        return [r.format for r in self.score(completions, case_id)]

    def functions(self) -> list:
        """The reward functions to hand TRL: the format term only when it has a weight."""
        return [self.task_reward, self.format_reward] if self.format_weight else [self.task_reward]


def rollout_rows(
    iteration: int, case_ids: list[str], rewards: list[Reward], texts: list[str],
    tokens: list[int], advantages: list[float], group_size: int,
) -> list[dict]:  # fmt: skip
    """rollouts.jsonl lines, the same fields as the MLX trainer writes."""
    return [
        {
            "iteration": iteration,
            "prompt_id": cid,
            "sample": i % group_size,
            "completion": text,
            "tokens": n,
            "reward": r.total,
            "format_reward": r.format,
            "label": r.label,
            "advantage": float(a),
        }
        for i, (cid, r, text, n, a) in enumerate(
            zip(case_ids, rewards, texts, tokens, advantages, strict=True)
        )
    ]


def grpo_trainer_class():
    """GRPOTrainer, plus a look at each scored batch to write rollouts.jsonl."""
    from trl import GRPOTrainer

    class PunieGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, rewards: ScorerRewards, rollouts: Path, mu: int, **kwargs):
            super().__init__(*args, **kwargs)
            self.punie_rewards = rewards
            self.punie_mu = mu
            self.punie_rollouts = rollouts
            if self.is_world_process_zero():
                rollouts.write_text("", encoding="utf-8")

        # TRL's own (private) step that samples and scores a batch; its output has the advantages.
        def _generate_and_score_completions(self, inputs):
            tic = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            seconds = time.perf_counter() - tic
            if self.model.training:
                sampled = float(out["completion_mask"].sum())
                self._metrics["train"]["rollout_time"].append(seconds)
                self._metrics["train"]["rollout_tokens_per_second"].append(sampled / seconds)
                if self.is_world_process_zero():
                    self._write_rollouts(inputs, out)
            return out

        def _write_rollouts(self, inputs, out) -> None:
            lengths = out["completion_mask"].sum(dim=1).tolist()
            rows = rollout_rows(
                self.state.global_step // self.punie_mu + 1,
                [x[CASE_ID] for x in inputs],
                self.punie_rewards.last,
                self.punie_rewards.last_texts,
                [int(n) for n in lengths],
                out["advantages"].tolist(),
                self.num_generations,
            )
            with open(self.punie_rollouts, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    return PunieGRPOTrainer
