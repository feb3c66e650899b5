"""The parity check's child process: `python -m punie.train.parity SPEC.json OUT.json`.

Generates greedy answers to the same prompts from base+adapter and from the fused model and
writes both. Fusing into a quantized base has silently destroyed adapters in practice; greedy
decoding makes any real change in the weights show up as a different answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def greedy_answers(model_path: str, prompts: list[list[int]], max_tokens: int, adapter=None):
    from mlx_lm import generate
    from mlx_lm.utils import load

    model, tokenizer = load(model_path, adapter_path=adapter)
    return [generate(model, tokenizer, prompt, max_tokens=max_tokens) for prompt in prompts]


def main(argv: list[str]) -> int:
    from mlx_lm.utils import load

    spec = json.loads(Path(argv[0]).read_text())
    _, tokenizer = load(spec["fused"])
    prompts = [
        list(
            tokenizer.apply_chat_template(
                p["messages"], tools=p.get("tools"), add_generation_prompt=True, return_dict=False
            )
        )
        for p in spec["prompts"]
    ]
    adapted = greedy_answers(spec["base"], prompts, spec["max_tokens"], spec["adapter"])
    fused = greedy_answers(spec["fused"], prompts, spec["max_tokens"])
    Path(argv[1]).write_text(json.dumps({"adapted": adapted, "fused": fused}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
