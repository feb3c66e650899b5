"""The row formats Punie reads, and where each part of reading them lives.

Each file holds rows of one kind, detected from its first row the way mlx_lm does
(prompt+completion, then messages, then text), plus preference rows:

- chat: `{"messages": [{"role", "content", "tool_calls"?}, ...], "tools": [...]?}`
- completions: `{"prompt": str, "completion": str}`
- text: `{"text": str}`
- preference: `{"prompt", "chosen", "rejected"}`, each a string or a list of messages

`punie.data.files` reads files and yields valid rows (I/O), `punie.data.schema` checks one row
(schema), and `punie.data.rows` reads parts of a row (row access). This module names them
together for code that reads datasets.
"""

from __future__ import annotations

from punie.data.files import (
    SPLITS,
    DataFile,
    OnInvalid,
    Record,
    all_files,
    dataset_files,
    lines,
    parse,
    records,
)
from punie.data.rows import content_key, prompts, texts, tool_calls
from punie.data.schema import (
    FOREIGN,
    KINDS,
    ROLES,
    Problem,
    RowError,
    check_chat,
    check_messages,
    check_row,
    detect_kind,
    role_order,
    unknown_kind_reason,
)

__all__ = [
    "FOREIGN", "KINDS", "ROLES", "SPLITS", "DataFile", "OnInvalid", "Problem", "Record",
    "RowError", "all_files", "check_chat", "check_messages", "check_row", "content_key",
    "dataset_files", "detect_kind", "lines", "parse", "prompts", "records", "role_order",
    "texts", "tool_calls", "unknown_kind_reason",
]  # fmt: skip
