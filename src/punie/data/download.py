"""`punie dataset download`: the built-in sample set, or a hub dataset through the converters.

`sample` is the demo's synthetic tool-calling task (`punie.data.sample`), written offline. A hub
id is fetched with huggingface-hub (`snapshot_download`, repo_type dataset: JSONL, JSON and Parquet
files only), each file is assigned to a split by its name, and its rows go through the same
converters as `punie dataset convert`. Parquet needs pyarrow (the `parquet` extra). Without
network, or with HF_HUB_OFFLINE=1 and nothing cached, it fails with one line saying so.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

from punie.data import sample
from punie.data.checks import at_least
from punie.data.convert import convert_rows, jsonl_rows
from punie.data.files import DataFile
from punie.data.output import Output, open_output
from punie.data.schema import Problem
from punie.errors import DataError

_PATTERNS = ["*.jsonl", "*.json", "*.parquet", "**/*.jsonl", "**/*.json", "**/*.parquet"]
_SPLIT_NAMES = {"train": "train", "validation": "valid", "valid": "valid", "dev": "valid"}
_SPLIT_NAMES["test"] = "test"


def download_sample(out: Path | str, *, max_rows: int | None = None, seed: int = 0) -> Output:
    at_least("--max", max_rows, 1)
    cap = (lambda n: n) if max_rows is None else (lambda n: min(n, max_rows))
    data = sample.splits(cap(400), cap(40), cap(40), seed=seed)
    with open_output(out, tuple(data), inputs=[], seed=seed, command=None) as o:
        for split, rows in data.items():
            for row in rows:
                o.sinks[split].write_row(row)
        o.counts.update({s: len(r) for s, r in data.items()} | {"source": "sample"})
    return o


def download_hub(
    repo_id: str, out: Path | str, *, max_rows: int | None = None, fmt: str = "auto"
) -> Output:
    at_least("--max", max_rows, 1)
    folder = _snapshot(repo_id)
    files = _split_files(folder)
    if not files:
        raise DataError(f"{repo_id}: no .jsonl, .json or .parquet data files in the dataset")
    splits = tuple(dict.fromkeys(f.split for f in files))
    with open_output(out, splits, inputs=files) as o:
        for split in splits:
            rows = itertools.chain.from_iterable(_rows(f.path) for f in files if f.split == split)
            for row, _kind in itertools.islice(convert_rows(rows, fmt), max_rows):
                o.sinks[split].write_row(row)
        o.counts.update({s: o.sinks[s].rows for s in splits} | {"source": repo_id})
    return o


def _snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if not re.match(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$", repo_id):
        raise DataError(f"{repo_id}: not `sample` and not a hub dataset id of the form owner/name")
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=_PATTERNS))
    except LocalEntryNotFoundError as e:
        raise DataError(
            f"{repo_id}: not in the local Hugging Face cache and the hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1); download it once with network"
        ) from e
    except HfHubHTTPError as e:
        raise DataError(f"{repo_id}: the hub refused the download: {e}") from e
    except OSError as e:
        raise DataError(f"{repo_id}: cannot reach the Hugging Face hub ({e})") from e


def _split_files(folder: Path) -> list[DataFile]:
    """Data files by split: a file named for a split (train-0000.parquet, data/test.jsonl) goes
    there; if none is named for any split, every file is training data."""
    found = sorted(
        p for p in folder.rglob("*") if p.suffix in (".jsonl", ".json", ".parquet") and p.is_file()
    )
    named = []
    for p in found:
        words = re.split(r"[^a-z]+", str(p.relative_to(folder)).lower())
        split = next((_SPLIT_NAMES[w] for w in words if w in _SPLIT_NAMES), None)
        named.append(DataFile(p, split or ""))
    if all(f.split == "" for f in named):
        return [DataFile(f.path, "train") for f in named]
    return [f for f in named if f.split]


def _rows(path: Path) -> Iterator[tuple[str, int, dict | Problem]]:
    if path.suffix != ".parquet":
        return jsonl_rows(path)
    return _parquet_rows(path)


def _parquet_rows(path: Path) -> Iterator[tuple[str, int, dict | Problem]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError(
            f"{path}: Parquet needs pyarrow; install the extra (`pip install 'punie[parquet]'`)"
        ) from e
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            n += 1
            yield str(path), n, row
