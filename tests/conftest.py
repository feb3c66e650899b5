"""Shared fixtures: the tiny model is built once per test session, in a temp folder."""

from __future__ import annotations

import pytest

from punie.model.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", seed=0)
