"""Constrained samples from mlx_lm's batch generator, for tests.

    python tests/constrained_samples.py MODEL N REQUEST_JSON [MAX_TOKENS]

Samples N replies at temperature 1.0 to the request's messages, each through its own
`punie.serve.constrain` processor (the one the backend adds per request), all in one batch.
Prints one JSON list of {"text", "finish_reason"}. Run as a child process so MLX never shares a
process with torch.
"""

import json
import sys

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import make_sampler

from punie.serve.constrain import Constraint, processor

model_dir, n, request = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 256
mx.random.seed(0)
model, tokenizer = load(model_dir)
prompt = tokenizer.apply_chat_template(
    request["messages"], tools=request.get("tools"), add_generation_prompt=True
)
constraint = Constraint.from_request(request)
gen = BatchGenerator(
    model,
    stop_tokens=[[t] for t in tokenizer.eos_token_ids],
    sampler=make_sampler(1.0),
    completion_batch_size=n,
    prefill_batch_size=n,
)
uids = gen.insert(
    [prompt] * n,
    [max_tokens] * n,
    logits_processors=[[processor(constraint, tokenizer)] for _ in range(n)],
)
tokens = {uid: [] for uid in uids}
finish = {}
while responses := gen.next_generated():
    for r in responses:
        if r.finish_reason != "stop":
            tokens[r.uid].append(r.token)
        if r.finish_reason is not None:
            finish[r.uid] = r.finish_reason
gen.close()
print(json.dumps([{"text": tokenizer.decode(tokens[u]), "finish_reason": finish[u]} for u in uids]))
