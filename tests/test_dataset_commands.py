"""Each `punie dataset` command on real files: what it keeps, where it writes, what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from punie.data.convert import convert_dataset
from punie.data.decontaminate import decontaminate
from punie.data.dedupe import dedupe_dataset
from punie.data.download import download_sample
from punie.data.filters import FilterSpec, filter_dataset
from punie.data.mix import Source, allocate, merge, mix
from punie.data.sample import eval_suite, splits
from punie.data.split import split_dataset
from punie.data.stats import dataset_stats
from punie.errors import PunieError
from punie.eval.prompts import load_prompts


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def chat(user, reply="ok", **extra):
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return {"messages": messages, **extra}


def test_download_sample_writes_the_demo_splits_and_a_manifest(tmp_path):
    download_sample(tmp_path / "data", max_rows=10)
    assert read_rows(tmp_path / "data" / "train.jsonl") == splits(10, 10, 10)["train"]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["outputs"]["valid.jsonl"]["rows"] == 10 and manifest["seed"] == 0


def download_offline(tmp_path, repo_id, **env):
    """`punie dataset download REPO_ID -o out` in a subprocess (huggingface-hub reads its
    environment at import), with the hub off."""
    return subprocess.run(
        [sys.executable, "-m", "punie", "dataset", "download", repo_id, "-o", "out"],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_download_hub_offline_fails_with_one_line(tmp_path):
    result = download_offline(tmp_path, "someone/some-data", HF_HOME=str(tmp_path / "hf"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "someone/some-data: not in the local Hugging Face cache" in result.stderr
    assert not (tmp_path / "out").exists()


def test_download_hub_id_reads_the_cached_snapshot_through_the_converters(tmp_path):
    """The real huggingface-hub path, served from a cache laid out as a download leaves it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--someone--agent-data"
    snapshot = repo / "snapshots" / commit
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "data").mkdir(parents=True)
    share = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    write_rows(snapshot / "data" / "train.jsonl", [share] * 3)
    alpaca = {"instruction": ["Add 1 and 2", "Say no"], "input": ["", ""], "output": ["3", "no"]}
    pq.write_table(pa.table(alpaca), snapshot / "data" / "validation-00000-of-00001.parquet")
    (snapshot / "README.md").write_text("# not data\n")
    result = download_offline(tmp_path, "someone/agent-data", HF_HUB_CACHE=str(tmp_path / "hub"))
    assert result.returncode == 0, result.stderr
    assert read_rows(tmp_path / "out" / "train.jsonl") == [chat("hi", "yo")] * 3
    assert read_rows(tmp_path / "out" / "valid.jsonl") == [
        chat("Add 1 and 2", "3"),
        chat("Say no", "no"),
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 3, "valid": 2, "source": "someone/agent-data"}
    assert sorted(Path(i["path"]).name for i in manifest["inputs"]) == [
        "train.jsonl",
        "validation-00000-of-00001.parquet",
    ]


def test_stats_counts_kinds_tools_tokens_and_duplicates(tmp_path, tiny_model):
    rows = splits(30, 0, 0)["train"]
    data = write_rows(tmp_path / "d.jsonl", rows + rows[:2])
    s = dataset_stats(data, model=str(tiny_model))
    called = Counter(
        m["tool_calls"][0]["function"]["name"]
        for r in rows + rows[:2]
        for m in r["messages"]
        if "tool_calls" in m
    )
    assert s.rows == {"d.jsonl": {"chat": 32}}
    assert s.tools == dict(called) and s.duplicates >= 2
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(tiny_model)
    lengths = Counter(
        len(tok.apply_chat_template(r["messages"], tools=r["tools"], return_dict=False))
        for r in rows + rows[:2]
    )
    assert s.tokens.counts == dict(lengths)
    assert sum(c for _, _, c in s.tokens.histogram()) == 32


def test_convert_brings_in_sharegpt_alpaca_and_openai(tmp_path):
    share = {
        "conversations": [
            {"from": "human", "value": "List src"},
            {
                "from": "function_call",
                "value": '{"name": "list_dir", "arguments": {"path": "src"}}',
            },
            {"from": "observation", "value": "a.py"},
            {"from": "gpt", "value": "One file."},
        ],
        "tools": '[{"name": "list_dir", "parameters": {}}]',
    }
    alpaca = {"instruction": "Add", "input": "1 and 2", "output": "3"}
    openai = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Run ls"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "run", "arguments": '{"cmd": "ls"}'},
                    }
                ],
            },
        ]
    }
    out = {}
    for name, row in [("share", share), ("alpaca", alpaca), ("openai", openai)]:
        convert_dataset(
            write_rows(tmp_path / f"{name}.jsonl", [row]), tmp_path / f"{name}-out.jsonl"
        )
        out[name] = read_rows(tmp_path / f"{name}-out.jsonl")[0]
    assert [m["role"] for m in out["share"]["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    assert out["share"]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"path": "src"}
    assert out["share"]["tools"][0]["function"]["name"] == "list_dir"
    assert out["alpaca"]["messages"][0]["content"] == "Add\n\n1 and 2"
    assert out["openai"]["messages"][0]["content"] == "Run ls"
    assert out["openai"]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"cmd": "ls"}


def test_filter_counts_what_each_predicate_removed_and_keeps_rejects(tmp_path):
    rows = splits(40, 0, 0)["train"]
    data = write_rows(tmp_path / "d.jsonl", rows)
    spec = FilterSpec(require_tool_calls=True, forbid_tools=("run_command",))
    o = filter_dataset(data, tmp_path / "out.jsonl", spec, rejects=tmp_path / "rej.jsonl")
    kept, rejected = read_rows(tmp_path / "out.jsonl"), read_rows(tmp_path / "rej.jsonl")
    no_call = sum("tool_calls" not in r["messages"][-1] for r in rows)
    assert o.counts["predicates"] == {
        "tool-calls": no_call,
        "no-tool=run_command": len(rows) - no_call - len(kept),
    }
    assert len(kept) + len(rejected) == len(rows)
    assert all(
        r["messages"][-1]["tool_calls"][0]["function"]["name"] != "run_command" for r in kept
    )
    assert rejected[0]["reason"].startswith(f"{data}:")


def test_filter_by_language_uses_a_real_detector(tmp_path):
    en = chat("Please open the configuration file and tell me what it contains today")
    fr = chat("Ouvre le fichier de configuration et dis-moi ce qu'il contient aujourd'hui")
    data = write_rows(tmp_path / "d.jsonl", [en, fr])
    o = filter_dataset(data, tmp_path / "out.jsonl", FilterSpec(languages=("en",)))
    assert read_rows(tmp_path / "out.jsonl") == [en] and o.counts["removed"] == {"language": 1}


def test_filter_by_field_regex_and_quality(tmp_path):
    rows = [
        chat("fix the bug in parser.py", "done here"),
        chat("hi", "x"),
        {"messages": [{"role": "user", "content": "what?"}]},
    ]
    data = write_rows(tmp_path / "d.jsonl", rows)
    spec = FilterSpec(match=("messages.0.content=\\.py$",), min_turn_chars=2, last_assistant=True)
    o = filter_dataset(data, tmp_path / "out.jsonl", spec)
    assert read_rows(tmp_path / "out.jsonl") == rows[:1]
    assert o.counts["predicates"] == {
        "short-turn": 1,
        "last-turn": 1,
        "match messages.0.content=\\.py$": 0,
    }


def test_dedupe_drops_the_training_copy_of_an_eval_row_and_near_duplicates(tmp_path):
    base = "please read the file src/main.py and tell me what it does in detail, line by line"
    folder = tmp_path / "data"
    folder.mkdir()
    write_rows(
        folder / "train.jsonl",
        [chat(base.upper()), chat(base + " now"), chat("something else entirely")],
    )
    write_rows(folder / "test.jsonl", [chat(base)])
    o = dedupe_dataset(folder, tmp_path / "out", rejects=tmp_path / "rej.jsonl")
    assert read_rows(tmp_path / "out" / "test.jsonl") == [chat(base)]
    assert read_rows(tmp_path / "out" / "train.jsonl") == [chat("something else entirely")]
    reasons = [r["reason"] for r in read_rows(tmp_path / "rej.jsonl")]
    assert (
        reasons[0] == f"{folder / 'train.jsonl'}:1: exact duplicate: of {folder / 'test.jsonl'}:1"
    )
    assert reasons[1].endswith(f"near duplicate: of {folder / 'test.jsonl'}:1, Jaccard 0.824")
    assert o.counts["removed"] == {"exact duplicate": 1, "near duplicate": 1}


def test_dedupe_across_several_folders_pools_their_splits(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, rows in ((a, ["x", "y"]), (b, ["y", "z"])):
        folder.mkdir()
        write_rows(folder / "train.jsonl", [chat(f"row {r} " * 12) for r in rows])
    write_rows(b / "test.jsonl", [chat("row x " * 12)])
    o = dedupe_dataset([a, b], tmp_path / "out", rejects=tmp_path / "rej.jsonl")
    assert read_rows(tmp_path / "out" / "train.jsonl") == [chat("row y " * 12), chat("row z " * 12)]
    assert read_rows(tmp_path / "out" / "test.jsonl") == [chat("row x " * 12)]
    reasons = [r["reason"] for r in read_rows(tmp_path / "rej.jsonl")]
    assert reasons == [
        f"{a / 'train.jsonl'}:1: exact duplicate: of {b / 'test.jsonl'}:1",
        f"{b / 'train.jsonl'}:1: exact duplicate: of {a / 'train.jsonl'}:2",
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert o.counts["kept"] == 3 and [Path(i["path"]) for i in manifest["inputs"]] == [
        b / "test.jsonl",
        a / "train.jsonl",
        b / "train.jsonl",
    ]
    with pytest.raises(PunieError, match="only dataset folders or only .jsonl files"):
        dedupe_dataset([a, b / "train.jsonl"], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()


def test_split_hits_exact_counts_and_keeps_groups_together(tmp_path):
    rows = [chat(f"q{i} v{j}", doc=f"doc{i}") for i in range(50) for j in range(i % 4 + 1)]
    data = write_rows(tmp_path / "d.jsonl", rows)
    o = split_dataset(data, tmp_path / "grouped", valid=0.1, test=0.2, group_by="doc", seed=3)
    docs = {
        s: {r["doc"] for r in read_rows(tmp_path / "grouped" / f"{s}.jsonl")}
        for s in ("train", "valid", "test")
    }
    assert not (
        docs["train"] & docs["test"]
        or docs["train"] & docs["valid"]
        or docs["valid"] & docs["test"]
    )
    assert sum(o.counts[s] for s in ("train", "valid", "test")) == len(rows)
    assert abs(o.counts["test"] - 0.2 * len(rows)) <= 4
    plain = split_dataset(data, tmp_path / "plain", valid=0.1, test=0.2, seed=3)
    assert (plain.counts["train"], plain.counts["valid"], plain.counts["test"]) == (86, 12, 25)


def test_split_stratify_gives_each_split_the_same_mix(tmp_path):
    rows = [chat(f"q{i}", kind="a" if i % 4 else "b") for i in range(200)]
    split_dataset(
        write_rows(tmp_path / "d.jsonl", rows), tmp_path / "s", valid=0.1, test=0.1, stratify="kind"
    )
    test = Counter(r["kind"] for r in read_rows(tmp_path / "s" / "test.jsonl"))
    assert test == {"a": 15, "b": 5}


def test_mix_hits_ratios_exactly_and_dedupes_across_sources(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [chat(f"a{i}") for i in range(100)])
    b = write_rows(tmp_path / "b.jsonl", [chat(f"b{i}") for i in range(100)] + [chat("a0")])
    o = mix([Source(str(a), 0.75), Source(str(b), 0.25)], tmp_path / "m.jsonl", total=80, seed=1)
    got = Counter(r["messages"][0]["content"][0] for r in read_rows(tmp_path / "m.jsonl"))
    assert got == {"a": 60, "b": 20} and o.counts["duplicates_dropped"] == 1
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    assert [(s["target"], s["actual"]) for s in manifest["counts"]["sources"]] == [
        (60, 60),
        (20, 20),
    ]


def test_mix_refuses_a_file_that_two_sources_name(tmp_path):
    # A folder and one of its files: the second source would repeat rows of the first and give
    # none of its own, so its ratio could never be met (issue 10, item 11).
    (tmp_path / "d").mkdir()
    write_rows(tmp_path / "d" / "train.jsonl", [chat(f"a{i}") for i in range(5)])
    with pytest.raises(PunieError, match=r"train\.jsonl: named by two sources"):
        mix([Source(str(tmp_path / "d"), 1), Source(str(tmp_path / "d" / "train.jsonl"), 1)],
            tmp_path / "m.jsonl")  # fmt: skip
    assert not (tmp_path / "m.jsonl").exists()


def test_mix_redistributes_when_a_source_runs_short_and_says_so():
    take, notes = allocate([10, 1000, 1000], [0.5, 0.25, 0.25], total=100)
    assert take == [10, 45, 45] and "source 1 ran short" in notes[0]


def test_merge_keeps_each_rows_source_in_a_seeded_shuffle(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [chat(f"a{i}") for i in range(30)])
    b = write_rows(tmp_path / "b.jsonl", [chat(f"b{i}") for i in range(30)])
    merge([a, b], tmp_path / "m.jsonl", seed=0)
    rows = read_rows(tmp_path / "m.jsonl")
    assert Counter(r["source"] for r in rows) == {str(a): 30, str(b): 30}
    assert [r["messages"][0]["content"] for r in rows] != [f"a{i}" for i in range(30)] + [
        f"b{i}" for i in range(30)
    ]


def test_merge_shuffles_through_buckets_on_disk_and_loses_no_row(tmp_path, monkeypatch):
    import punie.data.mix

    rows = {s: [chat(f"{s}{i}") for i in range(200)] for s in ("train", "valid")}
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        for s, split_rows in rows.items():
            write_rows(tmp_path / name / f"{s}.jsonl", split_rows)
    monkeypatch.setattr(punie.data.mix, "BUCKET_BYTES", 4096)  # about 10 buckets, not 1
    o = merge([tmp_path / "x", tmp_path / "y"], tmp_path / "m", seed=5)
    assert o.counts["rows"] == {"train": 400, "valid": 400}
    train = read_rows(tmp_path / "m" / "train.jsonl")
    assert Counter(r["messages"][0]["content"] for r in train) == {
        f"train{i}": 2 for i in range(200)
    }
    assert Counter(r["source"] for r in train) == {
        str(tmp_path / n / "train.jsonl"): 200 for n in "xy"
    }
    # Shuffled across buckets: the first 40 rows come from all over the input, not one corner.
    first = [int(r["messages"][0]["content"][5:]) for r in train[:40]]
    assert max(first) - min(first) > 150


def test_seen_store_remembers_first_places_and_repeats_on_disk():
    from punie.data.seen import FirstSeen

    with FirstSeen() as seen:
        assert seen.first(2**64 - 1, 10) is None and seen.first(2**64 - 1, 11) == 10
        assert seen.get(5) is None and seen.first(5, 12) is None and seen.get(5) == 12
        for at in (30, 21, 40):
            seen.repeat(at)
        assert list(seen.repeats(20, 40)) == [21, 30]
        folder = seen._dir.name
    assert not os.path.exists(folder)


def test_rows_json_accepts_but_orjson_does_not_are_read_the_json_way(tmp_path):
    big = {"text": "x", "n": 2**70, "f": float("nan")}
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(big) + "\n" + json.dumps(big) + "\n")
    o = dedupe_dataset(data, tmp_path / "out.jsonl", near=False)
    assert o.counts["kept"] == 1 and o.counts["removed"] == {"exact duplicate": 1}


def test_decontaminate_drops_rows_holding_an_eval_prompt(tmp_path):
    suite = eval_suite(10, seed=0)
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    prompt = suite["cases"][0]["messages"][0]["content"]
    rows = [chat(f"Hey! {prompt}"), chat("write a poem about the sea and the sky at night")]
    data = write_rows(tmp_path / "d.jsonl", rows)
    o = decontaminate(data, tmp_path / "out.jsonl", load_prompts(tmp_path / "suite.yaml"))
    assert read_rows(tmp_path / "out.jsonl") == rows[1:]
    assert o.counts["hits"][0]["row"] == f"{data}:1"
    assert o.counts["hits"][0]["prompt"] == f"sample-tools/{suite['cases'][0]['id']}"


def test_same_inputs_and_seed_give_byte_identical_outputs(tmp_path):
    rows = splits(60, 0, 0)["train"]
    data = write_rows(tmp_path / "d.jsonl", rows)
    other = write_rows(tmp_path / "e.jsonl", [chat(f"e{i}") for i in range(40)])
    for run in ("one", "two"):
        out = tmp_path / run
        split_dataset(data, out / "split", seed=7)
        mix([Source(str(data), 0.5), Source(str(other), 0.5)], out / "mix.jsonl", seed=7)
        merge([data, other], out / "merge.jsonl", seed=7)
        dedupe_dataset(out / "split", out / "dedupe")
    files = sorted(
        p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file()
    )
    assert len(files) >= 10
    for rel in files:
        one, two = (tmp_path / "one" / rel).read_bytes(), (tmp_path / "two" / rel).read_bytes()
        if rel.name.endswith("manifest.json"):
            one, two = one.replace(b"/one/", b"/X/"), two.replace(b"/two/", b"/X/")
        assert one == two, rel
