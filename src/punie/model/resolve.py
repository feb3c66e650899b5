"""Turn a model name into a local folder: a path as it is, a hub id through huggingface-hub.

Hub ids download into the normal Hugging Face cache and honour `HF_HUB_OFFLINE`. With no network
(or offline mode and nothing cached) the failure is one line that says so, not a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

from punie.errors import ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a model folder needs for mlx_lm and transformers; the rest of a hub repo is skipped.
_MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.tiktoken", "*.py"]


def is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not Path(name).exists()


def resolve_model(name: str | Path) -> Path:
    """Return a local folder holding the model `name` (a folder path or a hub id)."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path}: not a model folder (no config.json)")
        return path
    name = str(name)
    if not is_hub_id(name):
        raise ConfigError(f"{name}: no such folder, and not a hub id of the form owner/name")
    return _download(name)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_MODEL_FILES))
    except LocalEntryNotFoundError as e:
        raise ConfigError(
            f"{repo_id}: not in the local Hugging Face cache and the hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1); download it once with network, or pass a folder"
        ) from e
    except HfHubHTTPError as e:
        raise ConfigError(f"{repo_id}: the hub refused the download: {e}") from e
    except OSError as e:  # DNS failure, refused connection and the like
        raise ConfigError(f"{repo_id}: cannot reach the Hugging Face hub ({e})") from e
