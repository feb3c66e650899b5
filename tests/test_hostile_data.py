"""Hostile data input: rows and options that once gave tracebacks, silent empty outputs, a check
that disagreed with training, or minutes of tokenizing. Each gets one line naming the place and
the reason, a non-zero exit and no output; or, where the input is fine, the same answer from
`validate` as from training."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import punie
from train_support import FILES, config_toml, single_turn_row

BOM = b"\xef\xbb\xbf"
ROW = {
    "messages": [
        {"role": "user", "content": "Show me a.py"},
        {"role": "assistant", "content": "Here it is."},
    ]
}


def rows(*items: dict | bytes) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in items)


def numbered(n: int) -> list[dict]:
    """n distinct chat rows (distinct, so dedupe-based commands keep them all)."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"Show me file number {i} of the project"},
                {"role": "assistant", "content": f"Here is file {i}."},
            ]
        }
        for i in range(n)
    ]


def assert_refused(result: subprocess.CompletedProcess, *words: str, where: Path) -> None:
    """Exit 2, one `error:` line holding `words`, no traceback, nothing new in `where`."""
    message = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], message[-2000:])
    assert message.startswith("error: ") and "\n" not in message, message
    for word in words:
        assert word in message, message
    assert not [p for p in where.iterdir() if p.name.startswith(("out", ".out"))]


# --- 9: rows the json module cannot read are one line, not a traceback -----------------------

# Nested past orjson's reading limit (1024), and under it but past what json can write back out
# (~1000): the second used to pass validate and crash dedupe, stats and merge.
DEEP = b'{"messages": [{"role": "user", "content": "hi"}], "meta": ' + b"[" * 5000 + b"]" * 5000
HALF_DEEP = (
    b'{"messages": [{"role": "user", "content": "hi"}], "meta": ' + b"[" * 1010 + b"]" * 1010
)
HUGE_INT = b'{"messages": [{"role": "user", "content": "hi"}], "n": ' + b"7" * 5000
UNREADABLE = {
    "deep": (DEEP + b"}", "nested more than 254 levels"),
    "half-deep": (HALF_DEEP + b"}", "nested more than 254 levels"),
    "huge-int": (HUGE_INT + b"}", "4300 digits"),
}
COMMANDS = {
    "validate": ["validate", "d.jsonl"],
    "stats": ["stats", "d.jsonl"],
    "dedupe": ["dedupe", "d.jsonl", "-o", "out.jsonl"],
    "merge": ["merge", "d.jsonl", "-o", "out.jsonl"],
    "split": ["split", "d.jsonl", "-o", "out"],
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unreadable_json_is_one_line_naming_file_and_line(tmp_path, case, command):
    line, reason = UNREADABLE[case]
    (tmp_path / "d.jsonl").write_bytes(rows(ROW, line, ROW))
    result = punie("dataset", *COMMANDS[command], cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    if command == "validate":  # validate lists problems and goes on: exit 1, one line each
        assert result.returncode == 1, result.stderr[-2000:]
        found = [x for x in result.stdout.splitlines() if x.startswith("d.jsonl:")]
        assert len(found) == 1 and found[0].startswith("d.jsonl:2: json: ") and reason in found[0]
        return
    assert_refused(result, "d.jsonl:2: json:", reason, where=tmp_path)


@pytest.mark.slow
def test_unreadable_training_data_stops_train_with_one_line(tmp_path, tiny_model):
    """The training reader (`fsio.read_jsonl`, used by both trainers) says what validate says."""
    data = write_training_data(tmp_path / "data")
    (data / "train.jsonl").write_bytes((data / "train.jsonl").read_bytes() + HALF_DEEP + b"}\n")
    (tmp_path / "c.toml").write_text(config_toml(tiny_model, data, iters=2))
    result = punie("train", "c.toml", "--runs-dir", "runs", "--name", "deep", cwd=tmp_path)
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "train.jsonl:9: nested more than 254 levels" in errors[0]


@pytest.mark.parametrize("depth", [300, 5000])
def test_deep_element_of_a_json_array_is_one_line(tmp_path, depth):
    deep = b'{"messages": [{"role": "user", "content": "hi"}], "m": ' + b"[" * depth + b"]" * depth
    (tmp_path / "d.json").write_bytes(b"[" + json.dumps(ROW).encode() + b"," + deep + b"}]")
    result = punie("dataset", "dedupe", "d.json", "-o", "out.jsonl", cwd=tmp_path)
    assert_refused(result, "d.json:[1]: json: nested more than 254 levels", where=tmp_path)


def test_skip_invalid_rejects_an_unreadable_row_with_its_reason(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(rows(ROW, DEEP + b"}"))
    result = punie(
        "dataset", "dedupe", "d.jsonl", "-o", "out.jsonl", "--skip-invalid", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rejects = [json.loads(x) for x in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert ["d.jsonl:2: json: nested" in r["reason"] for r in rejects] == [True]
    assert (tmp_path / "out.jsonl").read_bytes() == rows(ROW)


# --- 10: a byte-order mark: validate and training agree, and outputs carry none --------------


def write_training_data(data: Path, bom: bytes = b"") -> Path:
    """8 train and 4 valid rows that validate clean on the tiny model, each file after `bom`."""
    data.mkdir()
    for split, n in (("train", 8), ("valid", 4)):
        lines = rows(*(single_turn_row(name) for name in FILES[:n]))
        (data / f"{split}.jsonl").write_bytes(bom + lines)
    return data


@pytest.mark.slow
def test_bom_file_passes_validate_and_trains(tmp_path, tiny_model):
    data = write_training_data(tmp_path / "data", bom=BOM)
    checked = punie("dataset", "validate", str(data), "--model", str(tiny_model), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    (tmp_path / "c.toml").write_text(
        config_toml(tiny_model, data, iters=2, steps_per_eval=2, save_every=2)
    )
    trained = punie(
        "train", "c.toml", "--runs-dir", "runs", "--name", "bom", cwd=tmp_path, timeout=300
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    record = json.loads((tmp_path / "runs" / "bom" / "run.json").read_text())
    assert record["status"] == "completed"


def test_bom_at_the_start_of_any_part_is_dropped_from_outputs(tmp_path):
    # `cat a.jsonl b.jsonl` of two files saved on Windows: a BOM on line 1 and mid-file.
    (tmp_path / "d.jsonl").write_bytes(BOM + rows(*numbered(2)) + BOM + rows(*numbered(4)[2:]))
    assert punie("dataset", "validate", "d.jsonl", cwd=tmp_path).returncode == 0
    result = punie("dataset", "dedupe", "d.jsonl", "-o", "out.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.jsonl").read_bytes() == rows(*numbered(4))


def test_utf16_file_is_named_as_such(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(json.dumps(ROW).encode("utf-16"))
    assert_refused(punie("dataset", "stats", "d.jsonl", cwd=tmp_path), "UTF-16", where=tmp_path)


# --- 11: numbers checked before a row is read ------------------------------------------------

OPTIONS = {
    "decontaminate-n-0": (
        ["decontaminate", "a.jsonl", "--against", "b.jsonl", "--n", "0", "-o", "out.jsonl"],
        "--n 0",
    ),
    "decontaminate-n-negative": (
        ["decontaminate", "a.jsonl", "--against", "b.jsonl", "--n", "-3", "-o", "out.jsonl"],
        "--n -3",
    ),
    "decontaminate-threshold-negative": (
        [
            "decontaminate",
            "a.jsonl",
            "--against",
            "b.jsonl",
            "--threshold",
            "-1",
            "-o",
            "out.jsonl",
        ],
        "--threshold -1",
    ),
    "decontaminate-threshold-nan": (
        [
            "decontaminate",
            "a.jsonl",
            "--against",
            "b.jsonl",
            "--threshold",
            "nan",
            "-o",
            "out.jsonl",
        ],
        "--threshold nan",
    ),
    "mix-same-file-twice": (["mix", "a.jsonl=1", "a.jsonl=1", "-o", "out.jsonl"], "a.jsonl"),
    "mix-same-file-two-spellings": (
        ["mix", "a.jsonl=1", "./a.jsonl=1", "-o", "out.jsonl"],
        "named by two sources",
    ),
    "mix-ratio-1e308": (["mix", "a.jsonl=1e308", "b.jsonl=1", "-o", "out.jsonl"], "b.jsonl=1"),
    "mix-ratio-inf": (["mix", "a.jsonl=inf", "b.jsonl=1", "-o", "out.jsonl"], "a.jsonl=inf"),
    "mix-ratio-nan": (["mix", "a.jsonl=nan", "b.jsonl=1", "-o", "out.jsonl"], "a.jsonl=nan"),
    "mix-ratio-negative": (["mix", "a.jsonl=-1", "b.jsonl=1", "-o", "out.jsonl"], "a.jsonl=-1"),
    "mix-total-negative": (
        ["mix", "a.jsonl=1", "b.jsonl=1", "--total", "-5", "-o", "out.jsonl"],
        "--total -5",
    ),
    "filter-unknown-language": (
        ["filter", "a.jsonl", "--language", "klingon", "-o", "out.jsonl"],
        "--language 'klingon'",
    ),
    "filter-negative-count": (
        ["filter", "a.jsonl", "--min-messages", "-1", "-o", "out.jsonl"],
        "--min-messages -1",
    ),
    "download-max-negative": (["download", "sample", "--max", "-1", "-o", "out"], "--max -1"),
    "download-hub-max-negative": (
        ["download", "owner/name", "--max", "-1", "-o", "out"],
        "--max -1",
    ),
}


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_bad_option_value_is_refused_up_front(tmp_path, case):
    args, words = OPTIONS[case]
    (tmp_path / "a.jsonl").write_bytes(rows(*numbered(6)))
    (tmp_path / "b.jsonl").write_bytes(rows(*numbered(9)[6:]))
    assert_refused(punie("dataset", *args, cwd=tmp_path), words, where=tmp_path)


def test_library_callers_get_the_same_checks(tmp_path):
    """`import punie` users are checked too: the checks live in the library, not the CLI."""
    from punie.data.decontaminate import dataset_prompts, decontaminate
    from punie.data.download import download_sample
    from punie.data.mix import Source, mix
    from punie.errors import PunieError

    (tmp_path / "a.jsonl").write_bytes(rows(*numbered(4)))
    a = str(tmp_path / "a.jsonl")
    with pytest.raises(PunieError, match="--n 0"):
        decontaminate(a, tmp_path / "out.jsonl", dataset_prompts(a), n=0)
    with pytest.raises(PunieError, match="a ratio must be a positive, finite number"):
        Source(a, float("nan"))
    with pytest.raises(PunieError, match="named by two sources"):
        mix([Source(a, 1), Source(a, 1)], tmp_path / "out.jsonl")
    with pytest.raises(PunieError, match="--max -1"):
        download_sample(tmp_path / "out", max_rows=-1)
    assert not [p for p in tmp_path.iterdir() if p.name != "a.jsonl"]


def test_huge_but_balanced_ratios_still_mix(tmp_path):
    """Ratios are relative: 1e308 next to 1e308 is an even mix, not an overflow."""
    (tmp_path / "a.jsonl").write_bytes(rows(*numbered(6)))
    (tmp_path / "b.jsonl").write_bytes(rows(*numbered(12)[6:]))
    result = punie(
        "dataset", "mix", "a.jsonl=1e308", "b.jsonl=1e308", "-o", "out.jsonl", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["rows"] == {"out.jsonl": 12}


def test_stratify_on_a_field_unique_to_each_row_warns(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(rows(*numbered(40)))
    result = punie(
        "dataset", "split", "a.jsonl", "--stratify", "messages.0.content", "-o", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert (
        len(warnings) == 1
        and "--stratify messages.0.content: 40 values for 40 rows" in (warnings[0])
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["warnings"] == [warnings[0].removeprefix("warning: ")]


def test_stratify_on_a_field_with_few_values_does_not_warn(tmp_path):
    data = numbered(40)
    for i, row in enumerate(data):
        row["category"] = "ab"[i % 2]
    (tmp_path / "a.jsonl").write_bytes(rows(*data))
    result = punie(
        "dataset", "split", "a.jsonl", "--stratify", "category", "-o", "out", cwd=tmp_path
    )
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr


# --- 12: a row far too long is reported from its characters, not tokenized -------------------


def peak_memory_mb(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run `punie` under a fresh parent whose only child it is, so the parent's view of its
    children's peak resident memory is that of this one command."""
    probe = (
        "import resource, subprocess, sys; "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "punie", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    peak = int(result.stdout.splitlines()[-1])  # KB on Linux, bytes on macOS
    return result, peak / (1 << 20 if sys.platform == "darwin" else 1 << 10)


def test_validate_reports_a_huge_row_without_tokenizing_it(tmp_path, tiny_model):
    huge = {"messages": [{"role": "user", "content": "word " * 2_000_000}, ROW["messages"][1]]}
    (tmp_path / "d.jsonl").write_bytes(rows(ROW, huge))
    result, peak_mb = peak_memory_mb(
        "dataset", "validate", "d.jsonl", "--model", str(tiny_model), "--max-seq-length", "256",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    found = [x for x in result.stdout.splitlines() if x.startswith("d.jsonl:")]
    assert len(found) == 1, found
    assert re.match(r"d\.jsonl:2: row: 100000\d\d characters, more than 256 tokens", found[0])
    assert "not tokenized" in found[0] and "--max-seq-length 256" in found[0]
    # Measured on the Linux test box: tokenizing these 10 MB peaked at 1.66 GB (8 s); reading
    # them peaks at 330 MB, nearly all of it MLX and the tokenizer, as for a 1 kB file.
    assert peak_mb < 1000, peak_mb


def test_filter_max_tokens_drops_a_huge_row_without_tokenizing_it(tmp_path, tiny_model):
    huge = {"messages": [{"role": "user", "content": "word " * 200_000}, ROW["messages"][1]]}
    (tmp_path / "d.jsonl").write_bytes(rows(ROW, huge))
    result = punie(
        "dataset", "filter", "d.jsonl", "--model", str(tiny_model), "--max-tokens", "256",
        "-o", "out.jsonl", "--rejects", "rejected.jsonl", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out.jsonl").read_bytes() == rows(ROW)
    [rejected] = [json.loads(x) for x in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert re.search(r"max-tokens: 10000\d\d characters, more than 256 tokens", rejected["reason"])
