"""Near-dedupe removes near duplicates and nothing else: each removal is checked here against an
exact Jaccard similarity computed independently of Punie's MinHash."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from cli_support import punie
from punie.data import minhash
from punie.data.dedupe import dedupe_dataset
from punie.errors import PunieError

VOCAB = [f"w{i}" for i in range(20000)]
REASON = re.compile(r"^(.+):(\d+): near duplicate: of (.+):(\d+), Jaccard (\d\.\d{3})$")


def chat(user, reply="ok", system=None, tools=None):
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages} | ({"tools": tools} if tools else {})


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def grams(row, include_system=False):
    """Word 3-grams of the row's turns, written out here rather than taken from Punie."""
    turns = [m["content"] for m in row["messages"] if include_system or m["role"] != "system"]
    w = " ".join(turns).lower().split()
    return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}


def jaccard(a, b):
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def words(rng, n):
    return [rng.choice(VOCAB) for _ in range(n)]


def removals(rejects_file):
    """(removed row's line, kept row's line, Jaccard written) for each near-duplicate reject."""
    out = []
    for r in read_rows(rejects_file):
        m = REASON.match(r["reason"])
        assert m, r["reason"]
        out.append((int(m[2]), int(m[4]), float(m[5])))
    return out


def test_rows_sharing_only_a_common_phrase_are_all_kept(tmp_path):
    rng = random.Random(0)
    rows = [chat("I would like to know the " + " ".join(words(rng, 40))) for _ in range(200)]
    write_rows(tmp_path / "d.jsonl", rows)
    result = punie("dataset", "dedupe", "d.jsonl", "-o", "out.jsonl", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["counts"]
    assert counts["kept"] == 200 and counts["removed"] == {}
    assert read_rows(tmp_path / "out.jsonl") == rows


def test_one_word_edits_of_40_word_rows_are_removed(tmp_path):
    rng = random.Random(1)
    originals = [words(rng, 40) for _ in range(100)]
    edits = []
    for w in originals:
        e = list(w)
        e[rng.randrange(40)] = "edited"
        edits.append(e)
    rows = [chat(" ".join(w)) for w in originals + edits]
    write_rows(tmp_path / "d.jsonl", rows)
    o = dedupe_dataset(tmp_path / "d.jsonl", tmp_path / "out.jsonl", rejects=tmp_path / "r.jsonl")
    assert o.counts["removed"] == {"near duplicate": 100}
    assert read_rows(tmp_path / "out.jsonl") == rows[:100]
    for line, of, j in removals(tmp_path / "r.jsonl"):
        assert of == line - 100  # each edit is matched to its own original
        assert j == round(jaccard(rows[line - 1], rows[of - 1]), 3) >= 0.8


def planted(rng, n_bases, per_base):
    """Bases of 40 to 80 random words, each followed by variants with 1 to 12 words replaced:
    Jaccard with the base from about 0.4 to 0.95, many of them near 0.8."""
    rows = []
    for _ in range(n_bases):
        base = words(rng, rng.randrange(40, 81))
        rows.append(chat(" ".join(base)))
        for _ in range(per_base):
            v = list(base)
            for i in rng.sample(range(len(v)), rng.randrange(1, 13)):
                v[i] = rng.choice(VOCAB)
            rows.append(chat(" ".join(v)))
    rng.shuffle(rows)
    return rows


@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.9])
def test_no_pair_below_the_threshold_is_ever_removed(tmp_path, threshold):
    rows = planted(random.Random(2), n_bases=60, per_base=5)
    write_rows(tmp_path / "d.jsonl", rows)
    o = dedupe_dataset(
        tmp_path / "d.jsonl",
        tmp_path / "out.jsonl",
        threshold=threshold,
        rejects=tmp_path / "r.jsonl",
    )
    found = removals(tmp_path / "r.jsonl")
    assert len(found) == o.counts["removed"]["near duplicate"] > 10
    kept_lines = set(range(1, len(rows) + 1)) - {line for line, _, _ in found}
    for line, of, j in found:
        assert of in kept_lines and of < line
        true = jaccard(rows[line - 1], rows[of - 1])
        assert true >= threshold and j == round(true, 3)
    # And the other way: no kept row is 0.05 above the threshold with an earlier kept row.
    kept = sorted(kept_lines)
    for i, a in enumerate(kept):
        for b in kept[:i]:
            assert jaccard(rows[a - 1], rows[b - 1]) < threshold + 0.05, (a, b)


def test_threshold_option_decides_what_is_near_and_bad_values_are_refused(tmp_path):
    rng = random.Random(3)
    base = words(rng, 20)
    edit = base[:10] + ["edited"] + base[11:]  # 3 of 19 shingles differ: Jaccard 16/22
    rows = [chat(" ".join(base)), chat(" ".join(edit))]
    assert jaccard(*rows) == pytest.approx(16 / 22)
    write_rows(tmp_path / "d.jsonl", rows)
    kept = {}
    for t in ("0.8", "0.7"):
        result = punie(
            "dataset", "dedupe", "d.jsonl", "-o", f"{t}.jsonl", "--threshold", t, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        kept[t] = len(read_rows(tmp_path / f"{t}.jsonl"))
    assert kept == {"0.8": 2, "0.7": 1}
    result = punie(
        "dataset", "dedupe", "d.jsonl", "-o", "bad.jsonl", "--threshold", "1.5", cwd=tmp_path
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: --threshold 1.5: a Jaccard similarity, from 0 to 1"
    ]
    assert not (tmp_path / "bad.jsonl").exists()
    for bad in (-0.1, float("nan")):
        with pytest.raises(PunieError, match=f"--threshold {bad}: a Jaccard similarity"):
            dedupe_dataset(tmp_path / "d.jsonl", tmp_path / "lib.jsonl", threshold=bad)
    assert not (tmp_path / "lib.jsonl").exists()


def test_system_prompt_and_tool_schemas_are_left_out_unless_asked(tmp_path):
    rng = random.Random(4)
    system = " ".join(words(rng, 200))
    tools = [{"type": "function", "function": {"name": "f", "description": system}}]
    # Same long system prompt and schemas, different short requests: not near duplicates.
    rows = [chat(" ".join(words(rng, 8)), system=system, tools=tools) for _ in range(5)]
    # Same conversation, different system prompts: near duplicates of each other.
    talk = " ".join(words(rng, 30))
    rows += [chat(talk, system=" ".join(words(rng, 50))) for _ in range(2)]
    write_rows(tmp_path / "d.jsonl", rows)

    result = punie(
        "dataset", "dedupe", "d.jsonl", "-o", "a.jsonl", "--rejects", "ra.jsonl", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert read_rows(tmp_path / "a.jsonl") == rows[:6]
    assert [r["reason"] for r in read_rows(tmp_path / "ra.jsonl")] == [
        "d.jsonl:7: near duplicate: of d.jsonl:6, Jaccard 1.000"
    ]

    args = (
        "dataset",
        "dedupe",
        "d.jsonl",
        "-o",
        "b.jsonl",
        "--include-system",
        "--rejects",
        "rb.jsonl",
    )
    result = punie(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_rows(tmp_path / "b.jsonl") == [rows[0], *rows[5:]]
    assert [(line, of) for line, of, _ in removals(tmp_path / "rb.jsonl")] == [
        (2, 1),
        (3, 1),
        (4, 1),
        (5, 1),
    ]


def test_signature_is_exact_modular_arithmetic_over_full_range_coefficients():
    h = np.random.default_rng(0).integers(0, 2**64 - 1, 50, dtype=np.uint64, endpoint=True)
    a, b = (int(x) for x in minhash._A), (int(x) for x in minhash._B)
    p = minhash.PRIME
    expected = [min((ai * (int(x) % p) + bi) % p for x in h) for ai, bi in zip(a, b, strict=True)]
    assert [int(v) for v in minhash.signature(h)] == expected
    # a and b reach across the prime's range, not its lowest 2^31.
    assert min(int(minhash._A.max()), int(minhash._B.max())) > 2**60


def test_band_choice_finds_pairs_at_the_threshold():
    for t in (0.5, 0.7, 0.8, 0.9, 0.95):
        bands = minhash.bands_for(t)
        assert bands.b * bands.r <= minhash.NUM_PERM
        assert bands.p_candidate(t) >= 0.99 and bands.p_candidate(0.05) < 0.01


def test_buckets_store_shares_band_keys_keeps_shingles_on_disk_and_caps_a_bucket():
    import os

    from punie.data.seen import BUCKET, Buckets

    with Buckets() as buckets:
        assert buckets.add(1, [2**64 - 1, 5], b"sig1", b"one") == 0
        assert buckets.add(2, [5, 6], b"sig2", b"two") == 0
        assert sorted(buckets.candidates([5])) == [(1, b"sig1"), (2, b"sig2")]
        assert buckets.candidates([2**64 - 1, 7]) == [(1, b"sig1")]
        assert buckets.candidates([7]) == []
        assert buckets.shingles(2) == b"two"
        for at in range(10, 10 + BUCKET):
            assert buckets.add(at, [9], b"s", b"h") == 0
        assert buckets.add(999, [9, 10], b"s", b"h") == 1  # key 9's bucket is full, 10's is not
        assert len(buckets.candidates([9])) == BUCKET
        assert buckets.candidates([10]) == [(999, b"s")]
        folder = buckets._dir.name
    assert not os.path.exists(folder)


def test_templated_rows_fill_buckets_are_reported_and_their_duplicates_still_found(tmp_path):
    # 300 rows of one 100-word template with 4 words changed each: about 0.6 Jaccard with each
    # other, so they share bands by the hundred but none is a near duplicate of another.
    rng = random.Random(5)
    template = words(rng, 100)
    variants = []
    for _ in range(300):
        v = list(template)
        for i in rng.sample(range(100), 4):
            v[i] = rng.choice(VOCAB)
        variants.append(v)
    last = list(variants[-1])
    last[50] = "edited"
    rows = [chat(" ".join(v)) for v in [*variants, last]]
    assert max(jaccard(a, b) for i, a in enumerate(rows[:300]) for b in rows[:i]) < 0.8
    write_rows(tmp_path / "d.jsonl", rows)
    result = punie(
        "dataset", "dedupe", "d.jsonl", "-o", "out.jsonl", "--rejects", "r.jsonl", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert read_rows(tmp_path / "out.jsonl") == rows[:300]
    assert [(line, of) for line, of, _ in removals(tmp_path / "r.jsonl")] == [(301, 300)]
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    crowded = manifest["counts"]["near"]["crowded"]
    assert crowded > 0
    assert f"{crowded} kept rows share bands with 100 or more others" in result.stdout
