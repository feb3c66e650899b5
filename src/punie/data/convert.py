"""`punie dataset convert`: rows in the formats people have, into Punie's (docs/datasets.md).

A converter is a name, a test that recognises its rows, and a function from one row (and the
`Notes` it keeps) to a native row: chat, preference, or unchanged native rows. The format is
detected per file from its first row unless given; a LLaMA-Factory `dataset_info.json` names the
files and the layout itself.

Around every converter the same rules hold:
- keys the converter did not read are carried onto the row (`id`, `meta`, ...); one that would
  change what the row is (`text` on a chat row) is dropped and counted, never silently;
- a row with a boolean `label` (or a `kto_tag`) is KTO data and is refused;
- the converted row passes validate's row checks, and a chat row ends with the assistant's turn,
  or the row is refused (to the rejects file with `--skip-invalid`);
- `--skip-invalid` that converts nothing is an error, and nothing is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from punie.data import jsonfile
from punie.data.calltext import from_glaive
from punie.data.convert_base import ConvertError, Notes
from punie.data.files import DataFile, dataset_files, lines, parse
from punie.data.llamafactory import (
    KTO_REASON,
    Layout,
    from_alpaca,
    from_sharegpt,
    load_dataset_info,
)
from punie.data.messages import from_openai
from punie.data.output import Output, open_output
from punie.data.pipeline import output_splits, rejects_path
from punie.data.schema import Problem, RowError, detect_kind, role_order
from punie.data.validate import row_checks
from punie.data.xlam import from_xlam
from punie.errors import DataError

# Keys that decide what a row is (schema.detect_kind) or that converters write.
RESERVED = {"messages", "prompt", "completion", "text", "chosen", "rejected", "tools"}


@dataclass(frozen=True)
class Converter:
    name: str
    recognises: Callable[[dict], bool]
    convert: Callable[[dict, Notes], dict]


def _native(row: dict, notes: Notes) -> dict:
    notes.use(*row)
    return row


CONVERTERS: dict[str, Converter] = {
    "sharegpt": Converter("sharegpt", lambda r: "conversations" in r, from_sharegpt),
    "glaive": Converter(
        "glaive", lambda r: isinstance(r.get("chat"), str) and "system" in r, from_glaive
    ),
    "xlam": Converter("xlam", lambda r: "query" in r and "answers" in r, from_xlam),
    "alpaca": Converter(
        "alpaca", lambda r: "instruction" in r and ("output" in r or "chosen" in r), from_alpaca
    ),
    "openai": Converter("openai", lambda r: "messages" in r or "chosen_messages" in r, from_openai),
    "native": Converter("native", lambda r: detect_kind(r) is not None, _native),
}
FORMATS = (*CONVERTERS, "llama-factory")


def recognise(row: dict, where: str) -> Converter:
    for conv in CONVERTERS.values():
        if conv.recognises(row):
            return conv
    keys = ", ".join(sorted(row)[:5])
    raise DataError(f"{where}: row: no converter recognises a row with keys {keys}")


@dataclass
class Tally:
    """What a whole conversion dropped, changed and carried, summed over the rows written."""

    dropped: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)
    carried: Counter[str] = field(default_factory=Counter)

    def add(self, notes: Notes, carried: Iterable[str]) -> None:
        self.dropped.update(notes.dropped)
        self.changed.update(notes.changed)
        self.carried.update(carried)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            "dropped": dict(sorted(self.dropped.items())),
            "changed": dict(sorted(self.changed.items())),
            "extra_keys": dict(sorted(self.carried.items())),
        }


def convert_row(row: dict, conv: Converter) -> tuple[dict, Notes, list[str]]:
    """(native row, notes, carried keys), or ConvertError."""
    for key in ("label", "kto_tag"):  # TRL's unpaired rows and LLaMA-Factory's, in any layout
        if isinstance(row.get(key), bool):
            label = "desirable" if row[key] else "undesirable"
            raise ConvertError(key, KTO_REASON.format(label=label))
    notes = Notes()
    out = conv.convert(row, notes)
    carried = []
    for key, value in row.items():
        if key in notes.used:
            continue
        if key in RESERVED or key in out:
            notes.dropped[key] += 1
        else:
            out[key] = value
            carried.append(key)
    return out, notes, carried


def refusal(row: dict, kind: str) -> tuple[str, str] | None:
    """Why a converted row cannot be written: validate's row checks, plus for chat rows the
    final turn, the only one `--mask-prompt` trains."""
    bad = row_checks(row, kind)
    if bad:
        return bad[0]
    if kind == "chat":
        last = row["messages"][-1]["role"]
        if last != "assistant":
            return f"messages[{len(row['messages']) - 1}].role", (
                f"the last turn is {last}, not assistant; an SFT row ends with the answer to train"
            )
    if kind == "preference" and isinstance(row["prompt"], list):
        for key in ("chosen", "rejected"):  # TRL renders prompt + answer as one conversation
            order = role_order(row["prompt"] + row[key])
            if order:
                return key, f"prompt + {key}: {order[0]}: {order[1]}"
    return None


Numbered = Iterable[tuple[str, int, dict | Problem]]


def convert_rows(
    rows: Numbered,
    fmt: str | Converter = "auto",
    on_invalid: Callable[[Problem, Any], None] | None = None,
    tally: Tally | None = None,
) -> Iterator[tuple[dict, str]]:
    """(native row, kind) for each (path, line, row); the format is detected per file."""
    if isinstance(fmt, str) and fmt != "auto" and fmt not in CONVERTERS:
        raise DataError(f"--from {fmt!r}: not one of auto, {', '.join(FORMATS)}")
    conv: dict[str, Converter] = {}
    kinds: dict[str, str] = {}
    for path, n, row in rows:
        problem = row if isinstance(row, Problem) else None
        if problem is None:
            if path not in conv:
                conv[path] = (
                    fmt
                    if isinstance(fmt, Converter)
                    else CONVERTERS[fmt]
                    if fmt != "auto"
                    else recognise(row, f"{path}:{n}")
                )
            try:
                out, notes, carried = convert_row(row, conv[path])
            except ConvertError as e:
                problem = Problem(path, n, e.field, e.reason)
            except (KeyError, TypeError, AttributeError) as e:
                problem = Problem(path, n, "row", f"not a {conv[path].name} row ({e!r})")
        if problem is None:
            kind = detect_kind(out)
            bad = (
                ("row", "converted to no known kind")
                if kind is None
                else ("row", f"a {kind} row in a file of {kinds[path]} rows")
                if kinds.setdefault(path, kind) != kind
                else refusal(out, kind)
            )
            if bad:
                problem = Problem(path, n, *bad)
        if problem is not None:
            if on_invalid is None:
                raise RowError(problem)
            on_invalid(problem, None if isinstance(row, Problem) else row)
            continue
        if tally is not None:
            tally.add(notes, carried)
        yield out, kind


def jsonl_rows(path: Path) -> Iterator[tuple[str, int, dict | Problem]]:
    """Each row of a JSON-lines or JSON-array file, parsed, with its place."""
    for n, raw in lines(path):
        yield str(path), n, parse(str(path), n, raw)


def convert_dataset(
    path: Path | str,
    out: Path | str,
    *,
    fmt: str = "auto",
    name: str | None = None,
    skip_invalid: bool = False,
    rejects: Path | str | None = None,
) -> Output:
    path = Path(path)
    inputs, files, splits, conv = _inputs(path, fmt, name)
    if skip_invalid and rejects is None:
        rejects = rejects_path(out)
    tally = Tally()
    with open_output(out, splits, inputs=inputs, rejects=rejects) as o:
        kinds: dict[str, int] = {}
        first: list[Problem] = []
        for df in files:
            sink = o.sinks[df.split if splits else ""]

            def invalid(problem: Problem, row: Any) -> None:
                first.append(problem)
                o.rejects.write_row({"reason": str(problem), "row": row})

            for row, kind in convert_rows(
                jsonl_rows(df.path), conv, invalid if skip_invalid else None, tally
            ):
                sink.write_row(row)
                kinds[kind] = kinds.get(kind, 0) + 1
        if not kinds:
            why = f" (the first: {first[0]})" if first else ""
            raise DataError(f"{path}: no row converted; every row was invalid{why}")
        o.counts.update({"kinds": kinds, "invalid": o.rejects.rows if o.rejects else 0})
        o.counts.update(tally.counts())
    return o


def converter_for(layout: Layout):
    """The row function for a LLaMA-Factory dataset_info entry."""
    if layout.formatting == "alpaca":
        return lambda row, notes: from_alpaca(row, notes, layout)
    if layout.formatting == "openai":
        return lambda row, notes: from_openai(row, notes, layout)
    return lambda row, notes: from_sharegpt(row, notes, layout)


def _inputs(path: Path, fmt: str, name: str | None):
    """The manifest's inputs, the files of rows, the output's splits, and the converter."""
    if fmt == "llama-factory" and path.is_dir():
        path = path / "dataset_info.json"
    info = path.is_file() and jsonfile.sniff(path) == "dataset_info"
    if fmt == "llama-factory" and not info:
        raise DataError(f"{path}: --from llama-factory reads a dataset_info.json; this is not one")
    if info and fmt in ("auto", "llama-factory"):
        dataset = load_dataset_info(path, name)
        conv = Converter(f"llama-factory {name}", lambda r: True, converter_for(dataset.layout))
        files = [DataFile(f, "") for f in dataset.files]
        return [DataFile(path, ""), *files], files, None, conv
    if name is not None:
        raise DataError(f"{name}: a dataset NAME goes only with a LLaMA-Factory dataset_info.json")
    files = dataset_files(path)
    return files, files, output_splits(path), fmt
