"""A rerun whose every answer is in the response cache starts no server.

The cache is filled through a scripted OpenAI-compatible server (`--base-url`) for the tiny model's
folder; the rerun then names the same model folder with no `--base-url`, the managed-server path,
and must answer from the cache alone: no mlx_lm.server, no server.log, no request.
"""

from __future__ import annotations

import json

from cli_support import punie as run_punie
from openai_stub import completion, scripted_server

SUITE = (
    "name: cached\nkind: reasoning\nscorer: numeric\n"
    "cases:\n"
    "  - {id: a, prompt: q1, expect: {answer: 42}}\n"
    "  - {id: b, prompt: q2, expect: {answer: 7}}\n"
)


def _eval(tmp_path, model, run: str, *extra: str):
    return run_punie(
        "eval", "run", str(tmp_path / "cached.yaml"), "--model", str(model),
        "--run-dir", tmp_path / run, "--cache-dir", tmp_path / "cache", "--json", *extra,
    )  # fmt: skip


def test_a_fully_cached_eval_starts_no_server(tmp_path, tiny_model):
    (tmp_path / "cached.yaml").write_text(SUITE)
    httpd = scripted_server(lambda body: completion(body["model"], {"content": "Answer: 42"}))
    try:
        url = f"http://127.0.0.1:{httpd.server_port}"
        filled = _eval(tmp_path, tiny_model, "first", "--base-url", url)
        assert filled.returncode == 0, filled.stderr
        asked = len(httpd.paths)
        rerun = _eval(tmp_path, tiny_model, "second")
        assert rerun.returncode == 0, rerun.stderr
        assert len(httpd.paths) == asked == 2  # nothing more was asked
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not (tmp_path / "second" / "server.log").exists()  # no mlx_lm.server started
    [result] = json.loads(rerun.stdout)["results"]
    assert result["passed"] == 1
    saved = json.loads((tmp_path / "second" / "cached.base.json").read_text())
    assert saved["base_url"] is None and all(c["cached"] for c in saved["cases"])
    assert (tmp_path / "second" / "report.html").is_file()
