"""A model's chat template, loaded and applied exactly as `mlx_lm` does for training and serving.

Training tokenizes `apply_chat_template(messages, tools=tools)` with the tokenizer mlx_lm loads;
`ChatTemplate` makes the same calls, so what the data checks find is what training would see.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from punie.errors import DataError
from punie.model.resolve import resolve_model


class ChatTemplate:
    """A model's tokenizer and chat template, loaded the way mlx_lm loads them."""

    def __init__(self, model: str | Path):
        self.tokenizer = load_tokenizer(str(resolve_model(model)))
        self.model = str(model)

    def tokens(self, messages: list[dict], tools: Any = None, **kw: Any) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, tools=tools, return_dict=False, **kw)

    def text(self, messages: list[dict], tools: Any = None, **kw: Any) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **kw)

    def length(self, row: dict) -> int:
        """Tokens training sees for a row of any kind (chat template for chat and completions)."""
        if "messages" in row:
            return len(self.tokens(row["messages"], row.get("tools")))
        if "completion" in row and isinstance(row.get("prompt"), str):
            msgs = [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"]},
            ]
            return len(self.tokens(msgs, row.get("tools")))
        text = row.get("text") or json.dumps(row, ensure_ascii=False)
        return len(self.tokenizer.encode(text))


@cache
def load_tokenizer(path: str):
    """One load per model folder and process (loading costs seconds; rows share it)."""
    import logging

    # mlx_lm pulls in mlx and transformers (seconds): only when a template is really needed.
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    # transformers warns "Token indices sequence length is longer than..." on long rows; Punie
    # measures rows against --max-seq-length itself and says so in its own words.
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    try:
        return mlx_load_tokenizer(Path(path))
    except Exception as e:  # a broken tokenizer folder raises anything
        raise DataError(f"{path}: cannot load the tokenizer ({e})") from e
