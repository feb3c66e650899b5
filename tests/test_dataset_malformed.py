"""Bad input: one line naming file, line and field, a non-zero exit, and no output written."""

from __future__ import annotations

import json

import pytest

from cli_support import punie, run_main

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _lines(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


# (case id, input file name, bytes or None for "missing", expected location, words in the reason)
CASES = [
    ("invalid-json", "d.jsonl", _lines(GOOD, b'{"messages": [}'), "d.jsonl:2: json:", "not valid"),
    (
        "wrong-type",
        "d.jsonl",
        _lines(GOOD, {"messages": "hello"}),
        "d.jsonl:2: messages:",
        "must be a list",
    ),
    (
        "unknown-role",
        "d.jsonl",
        _lines(GOOD, GOOD, {"messages": [{"role": "wizard", "content": "x"}]}),
        "d.jsonl:3: messages[0].role:",
        "'wizard' is not one of",
    ),
    (
        "content-not-string",
        "d.jsonl",
        _lines({"messages": [{"role": "user", "content": 3}]}),
        "d.jsonl:1: messages[0].content:",
        "must be a string",
    ),
    ("binary", "d.jsonl", _lines(GOOD) + b"\x00\x01\x02PK\x03\x04\n", "d.jsonl:2:", "NUL byte"),
    ("empty", "d.jsonl", b"", "d.jsonl:1:", "empty file"),
    ("blank-line", "d.jsonl", _lines(GOOD) + b"\n" + _lines(GOOD), "d.jsonl:2: line:", "blank"),
    ("not-an-object", "d.jsonl", _lines([1, 2]), "d.jsonl:1: row:", "JSON object"),
    (
        "unknown-kind",
        "d.jsonl",
        _lines({"conversations": []}),
        "d.jsonl:1: row:",
        "looks like ShareGPT",
    ),
    (
        "mixed-kinds",
        "d.jsonl",
        _lines(GOOD, {"text": "plain"}),
        "d.jsonl:2: row:",
        "a text row in a file of chat rows",
    ),
    (
        "bad-tool-call",
        "d.jsonl",
        _lines({"messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}]}),
        "d.jsonl:1: messages[0].tool_calls[0].function.name:",
        "missing",
    ),
    ("not-utf8", "d.jsonl", _lines(GOOD) + b'{"text": "\xff\xfe"}\n', "d.jsonl:2: line:", "UTF-8"),
    ("missing-file", "nope.jsonl", None, "nope.jsonl:", "no such file"),
    ("folder-without-splits", "folder", "dir", "folder:", "no train.jsonl"),
]


@pytest.mark.parametrize(
    ("case", "name", "content", "where", "reason"), CASES, ids=[c[0] for c in CASES]
)
def test_malformed_input_fails_with_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys, case, name, content, where, reason
):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / name
    if content == "dir":
        src.mkdir()
        (src / "notes.txt").write_text("no splits here")
    elif content is not None:
        src.write_bytes(content)
    code, _, message = run_main(
        ["dataset", "filter", name, "-o", "out", "--min-messages", "1"], capsys
    )
    assert code == 2, message
    assert message.count("\n") == 0, message
    assert message.startswith("error: "), message
    assert where in message and reason in message, message
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_validate_reports_each_bad_row_and_exits_one(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(
        _lines(GOOD, b"{oops", {"messages": [{"role": "wizard", "content": "x"}]}, GOOD)
    )
    result = punie("dataset", "validate", "d.jsonl", cwd=tmp_path)
    assert result.returncode == 1
    assert "d.jsonl:2: json: not valid JSON" in result.stdout
    assert "d.jsonl:3: messages[0].role: 'wizard' is not one of" in result.stdout


def test_validate_exits_two_on_unusable_input(tmp_path):
    result = punie("dataset", "validate", "missing.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert "missing.jsonl: no such file" in result.stderr


def test_skip_invalid_writes_bad_rows_to_rejects(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(_lines(GOOD, b"{oops", GOOD))
    result = punie(
        "dataset", "dedupe", "d.jsonl", "-o", "out.jsonl", "--skip-invalid", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    rejects = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    reasons = [r["reason"] for r in rejects]
    assert any(
        r.startswith(f"{tmp_path / 'd.jsonl'}:2: json:") or "d.jsonl:2: json:" in r for r in reasons
    )
    assert any("exact duplicate" in r for r in reasons)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1
