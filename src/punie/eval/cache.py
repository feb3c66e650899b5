"""A response cache, so an interrupted run resumes and an unchanged rerun asks nothing.

The key is everything that decides a response: the model's and adapter's content hashes and chat
template (see identity.py), the full messages, the tools, the sampling parameters and the sample
index. Only good replies are stored, one small JSON file each, written atomically as it arrives:
a run killed halfway keeps every answer it got, and a failed request is never replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from punie.eval.identity import Identity
from punie.fsio import write_json


def default_cache_dir() -> Path:
    """$PUNIE_CACHE_DIR, else $XDG_CACHE_HOME/punie/responses, else ~/.cache/punie/responses."""
    if os.environ.get("PUNIE_CACHE_DIR"):
        return Path(os.environ["PUNIE_CACHE_DIR"])
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "punie" / "responses"


def cache_key(identity: Identity, messages: list[dict], tools, sampling: dict, sample: int) -> str:
    who = identity.as_dict()
    if identity.model_hash:  # content says it all; the folder's name may change
        who = {k: v for k, v in who.items() if k not in ("model", "adapter")}
    elif identity.adapter_hash:
        who = {k: v for k, v in who.items() if k != "adapter"}
    blob = json.dumps(
        {
            "v": 1,
            "who": who,
            "messages": messages,
            "tools": list(tools),
            "sampling": sampling,
            "sample": sample,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder else None  # None: caching off

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.folder is None:
            return None
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, reply: dict) -> None:
        if self.folder is not None:
            write_json(self._path(key), reply)

    def __len__(self) -> int:
        return 0 if self.folder is None else sum(1 for _ in self.folder.glob("*/*.json"))
