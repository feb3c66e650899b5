"""mlx_lm.server, started and stopped by Punie, returns the tiny model's tool call in tool_calls."""

import os

import httpx
import pytest

from punie.serve.server import Server

pytestmark = pytest.mark.slow


def test_server_returns_the_tool_call_in_tool_calls(tiny_model, parrot_adapter, tmp_path):
    with Server(tiny_model, log=tmp_path / "server.log") as server:
        pid = server.pid
        assert server.base_url.startswith("http://127.0.0.1:")
        body = {
            "model": str(tiny_model),
            "adapters": str(parrot_adapter),
            "messages": [{"role": "user", "content": "Show me a.py"}],
            "max_tokens": 40,
            "temperature": 0.0,
        }
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        data = r.json()
    assert data["model"] == str(tiny_model)
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]["function"]
    assert call["name"] == "read_file"
    assert call["arguments"] == '{"path": "a.py"}'
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
