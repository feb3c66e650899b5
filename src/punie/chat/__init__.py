"""Chat: what a conversation looks like to a model, shared by data, train and eval.

- `template`: a model's chat template, loaded and applied as mlx_lm applies it;
- `masking`: the loss-masking rule (which tokens of a row carry loss);
- `toolcalls`: the tool-call parser (OpenAI `tool_calls` or `<tool_call>{json}</tool_call>`).

It sits just above errors/fsio/model in the layers (docs/architecture.md) and imports nothing
from data, train or eval.
"""
