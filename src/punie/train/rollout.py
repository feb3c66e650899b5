"""Rollouts: sample G completions of each prompt from the policy as it is now, batched.

It drives mlx_lm's `BatchGenerator` (the engine behind `batch_generate` and mlx_lm.server's
continuous batching) in the training process, on the very model object being trained, so no
weights are copied and no server restarts between steps. Unlike `batch_generate` it keeps the
stop token that ended a completion: the policy must learn to stop, so that token is trained too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    prompt_index: int  # which prompt of the batch it answers
    tokens: list[int]  # sampled tokens, the stop token included when it stopped
    text: str  # decoded, without the stop token
    stopped: bool  # ended on a stop token (else it hit max_completion_tokens)


@dataclass(frozen=True)
class Rollout:
    completions: list[Completion]  # prompt by prompt, G each
    seconds: float

    @property
    def tokens(self) -> int:
        return sum(len(c.tokens) for c in self.completions)


def sample(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    group_size: int,
    temperature: float,
    max_tokens: int,
    completion_batch_size: int = 32,
) -> Rollout:
    """`group_size` completions of each prompt, in prompt order."""
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    tic = time.perf_counter()
    repeated = [p for p in prompts for _ in range(group_size)]
    gen = BatchGenerator(
        model,
        max_tokens=max_tokens,
        stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        sampler=make_sampler(temp=temperature),
        completion_batch_size=max(completion_batch_size, 1),
        prefill_batch_size=min(8, len(repeated)),
    )
    try:
        uids = gen.insert(repeated, [max_tokens] * len(repeated))
        tokens: dict[int, list[int]] = {uid: [] for uid in uids}
        stopped: dict[int, bool] = dict.fromkeys(uids, False)
        while responses := gen.next_generated():
            for r in responses:
                tokens[r.uid].append(int(r.token))
                if r.finish_reason == "stop":
                    stopped[r.uid] = True
    finally:
        gen.close()
    completions = []
    for i, uid in enumerate(uids):
        body = tokens[uid][:-1] if stopped[uid] else tokens[uid]
        completions.append(
            Completion(i // group_size, tokens[uid], tokenizer.decode(body), stopped[uid])
        )
    return Rollout(completions, time.perf_counter() - tic)
