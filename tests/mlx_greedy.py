"""Greedy token ids from mlx_lm, for tests.

    python tests/mlx_greedy.py PROMPT N MODEL[:ADAPTER] [MODEL[:ADAPTER] ...]

Prints one JSON list of token-id lists, one per model. Run as a child process (through
punie.proc) so MLX never shares a process with torch; several models share one start-up.
"""

import json
import sys

import mlx.core as mx
from mlx_lm import load

prompt, n = sys.argv[1], int(sys.argv[2])
results = []
for spec in sys.argv[3:]:
    model_dir, _, adapter = spec.partition(":")
    model, tokenizer = load(model_dir, adapter_path=adapter or None)
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    out: list[int] = []
    for _ in range(n):
        logits = model(mx.array([ids + out]))[0, -1]
        out.append(int(mx.argmax(logits).item()))
    results.append(out)
print(json.dumps(results))
