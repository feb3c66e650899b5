import subprocess
import sys

import pytest

from punie.errors import PunieError
from punie.model.resolve import resolve_model


def test_a_local_model_folder_resolves_to_itself(tiny_model):
    assert resolve_model(str(tiny_model)) == tiny_model


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(PunieError, match="not a model folder"):
        resolve_model(tmp_path)


def test_a_hub_id_offline_fails_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cmd = [sys.executable, "-m", "punie", "model", "resolve", "someone/not-cached-model"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "someone/not-cached-model" in lines[0] and "offline" in lines[0]
