"""`punie dataset ...`: make data right before a minute of training is spent.

Each command parses its arguments, calls one function of `punie.data`, and renders the result as
a table (or JSON with `--json`). Errors in the input stop a command with one line naming file,
line and field, exit code 2, and no output written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

out_console = Console(highlight=False, soft_wrap=True)

dataset_app = typer.Typer(
    help=(
        "Check, inspect and shape training data (JSONL: chat, completions, text, preference).\n\n"
        "A dataset is a folder with train.jsonl / valid.jsonl / test.jsonl, or one .jsonl file. "
        "Start with `punie dataset validate DATA --model MODEL`, which renders every row through "
        "the model's chat template as training will. Every command that writes leaves a "
        "manifest.json beside its output (inputs and their sha256, command, seed, counts)."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

Out = Annotated[Path, typer.Option("-o", "--out", help="Output file (.jsonl) or folder.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Seed = Annotated[int, typer.Option(help="Seed: same inputs and seed give identical bytes.")]
# The options of the commands that build training rows from eval results (pairs, from-results).
ResultSuites = Annotated[
    list[Path] | None,
    typer.Option(
        "--suite", help="Suite file a results file names (built-in suites are found by name)."
    ),
]
Against = Annotated[
    list[str] | None,
    typer.Option(help="Eval suite or dataset whose prompts must not leak; repeatable."),
]
NGram = Annotated[int, typer.Option(help="Words per n-gram (shorter prompts count whole).")]
Threshold = Annotated[
    float, typer.Option(help="Refuse a row holding at least this share of a prompt's n-grams.")
]
Rejects = Annotated[
    Path | None,
    typer.Option(help="Write removed rows here, each with the reason it was removed."),
]
SkipInvalid = Annotated[
    bool,
    typer.Option(
        "--skip-invalid",
        help="Put invalid rows in the rejects file (default OUT.rejects.jsonl) instead of "
        "stopping at the first.",
    ),
]
Model = Annotated[
    str | None,
    typer.Option(help="Model folder or hub id whose tokenizer and chat template to use."),
]


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _table(title: str, columns: list[str], rows: list[list]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c in ("rows", "kept", "removed", "count") else "left")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def _written(o, as_json: bool) -> None:
    """Render what a writing command produced: its outputs and counts."""
    from punie.data.output import manifest_path

    summary = {
        "out": str(o.path),
        "manifest": str(manifest_path(o.path, o.folder)),
        "rows": {s.name: s.rows for s in o.sinks.values()},
        "counts": o.counts,
    }
    if o.rejects is not None:
        summary["rejects"] = {"path": o.rejects.name, "rows": o.rejects.rows}
    if as_json:
        _print_json(summary)
        return
    rows = [[name, n] for name, n in summary["rows"].items()]
    if o.rejects is not None:
        rows.append([f"{o.rejects.name} (rejects)", o.rejects.rows])
    out_console.print(_table(f"wrote {o.path}", ["file", "rows"], rows))
    removed = o.counts.get("removed")
    if removed:
        out_console.print(
            _table("removed", ["reason", "removed"], [[k, v] for k, v in removed.items()])
        )
    out_console.print(f"manifest: {summary['manifest']}")


@dataset_app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="Dataset folder or .jsonl file.")],
    model: Model = None,
    max_seq_length: Annotated[
        int, typer.Option(help="Rows longer than this (in tokens) would be cut in training.")
    ] = 2048,
    mask_prompt: Annotated[
        bool,
        typer.Option(
            help="Training will use --mask-prompt (trains every assistant turn, only those)."
        ),
    ] = True,
    as_json: Json = False,
) -> None:
    """Check every row; with `--model`, render each chat row through the model's chat template
    exactly as training will, and report tool calls that do not render or parse back, rows over
    `--max-seq-length`, and tool-call turns that training's loss mask would leave out (cut at
    `--max-seq-length`; with `--mask-prompt` every assistant turn trains).

    Prints one `file:line: field: reason` per problem and a summary. Exit 0 clean, 1 problems
    found, 2 unusable input (missing, binary or empty file; folder without splits)."""
    from punie.data.validate import validate as run

    problems: list[str] = []

    def found(p) -> None:
        if as_json:
            problems.append(str(p))
        else:
            print(p, flush=False)

    summary = run(
        path, model=model, max_seq_length=max_seq_length, mask_prompt=mask_prompt, on_problem=found
    )
    if as_json:
        _print_json(
            {
                "files": [f.__dict__ for f in summary.files],
                "problems": problems,
                "by_field": summary.by_field,
            }
        )
    else:
        rows = [[f.path, f.split or "-", f.kind or "-", f.rows, f.bad_rows] for f in summary.files]
        out_console.print(
            _table("validate", ["file", "split", "kind", "rows", "rows with problems"], rows)
        )
        verdict = "clean" if summary.clean else f"{summary.problems} problems"
        out_console.print(f"{verdict}" + (f" (model {model})" if model else ""))
    raise typer.Exit(0 if summary.clean else 1)


@dataset_app.command()
def stats(
    path: Annotated[Path, typer.Argument(help="Dataset folder or .jsonl file.")],
    model: Model = None,
    max_seq_length: Annotated[
        int,
        typer.Option(
            help="With --model: a row over this many tokens by its characters alone (32 a "
            "token) is counted as too long, not tokenized."
        ),
    ] = 2048,
    as_json: Json = False,
) -> None:
    """Rows per split and kind, turns per row, tools called and how often, duplicates, and with
    `--model` the token-length distribution as training will count it (with a histogram)."""
    from punie.data.stats import dataset_stats

    s = dataset_stats(path, model=model, max_seq_length=max_seq_length)
    if as_json:
        _print_json(s.to_dict())
        return
    rows = [[split, kind, n] for split, kinds in s.rows.items() for kind, n in kinds.items()]
    out_console.print(_table("rows", ["split", "kind", "rows"], rows))
    d = s.to_dict()
    if d["turns"]:
        out_console.print("turns per row: " + ", ".join(f"{k} {v}" for k, v in d["turns"].items()))
    if s.tools:
        out_console.print(
            _table(
                f"tool calls ({s.rows_with_calls} rows call a tool)",
                ["tool", "count"],
                [[k, v] for k, v in s.tools.items()],
            )
        )
    if s.tokens is not None and s.tokens.n:
        out_console.print(
            "tokens per row: " + ", ".join(f"{k} {v}" for k, v in d["tokens"].items())
        )
        _histogram(s.tokens.histogram())
    if s.too_long:
        out_console.print(
            f"rows surely over {max_seq_length} tokens by their characters (not tokenized): "
            f"{s.too_long}"
        )
    out_console.print(f"exact duplicates: {s.duplicates}")


def _histogram(bins: list[tuple[int, int, int]]) -> None:
    top = max((c for _, _, c in bins), default=0) or 1
    for lo, hi, c in bins:
        bar = "█" * round(40 * c / top)
        out_console.print(f"{lo:>7}-{hi:<7} {bar} {c}")


@dataset_app.command()
def convert(
    path: Annotated[
        Path,
        typer.Argument(
            help="JSONL or JSON-array file, dataset folder, or a LLaMA-Factory dataset_info.json."
        ),
    ],
    name: Annotated[
        str | None,
        typer.Argument(help="With a dataset_info.json: the dataset in it to convert."),
    ] = None,
    out: Out = ...,
    fmt: Annotated[
        str,
        typer.Option(
            "--from",
            help="auto, sharegpt, glaive, xlam, alpaca, openai, native or llama-factory.",
        ),
    ] = "auto",
    rejects: Rejects = None,
    skip_invalid: SkipInvalid = False,
    as_json: Json = False,
) -> None:
    """Bring in ShareGPT (with Hermes tags and function-call turns), LLaMA-Factory (its
    dataset_info.json, ranking and content-part rows), raw glaive, xLAM, Alpaca and OpenAI rows
    as chat or preference rows (docs/datasets.md lists what each becomes).

    Keys a converter does not read are kept on the row; what has no place in Punie's rows is
    counted and listed, never dropped in silence. KTO rows are refused.

    Example: `punie dataset convert --from llama-factory data/dataset_info.json glaive_toolcall_en
    -o glaive.jsonl`"""
    from punie.data.convert import convert_dataset

    o = convert_dataset(path, out, fmt=fmt, name=name, rejects=rejects, skip_invalid=skip_invalid)
    if not as_json:
        for title, key in [
            ("dropped (no place in Punie's rows)", "dropped"),
            ("changed", "changed"),
            ("kept extra keys", "extra_keys"),
        ]:
            if o.counts.get(key):
                items = ", ".join(f"{k} → {v}" for k, v in o.counts[key].items())
                out_console.print(f"{title}: {items}")
    _written(o, as_json)


@dataset_app.command("filter")
def filter_cmd(
    path: Annotated[Path, typer.Argument(help="Dataset folder or .jsonl file.")],
    out: Out,
    min_messages: Annotated[
        int | None, typer.Option(help="Keep rows with at least N messages.")
    ] = None,
    max_messages: Annotated[
        int | None, typer.Option(help="Keep rows with at most N messages.")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Keep rows of at most N tokens (needs --model).")
    ] = None,
    model: Model = None,
    language: Annotated[
        list[str] | None, typer.Option(help="Keep rows in this language (ISO code; repeatable).")
    ] = None,
    require_tool_calls: Annotated[
        bool, typer.Option(help="Keep only rows that call a tool.")
    ] = False,
    forbid_tool_calls: Annotated[
        bool, typer.Option(help="Keep only rows that call no tool.")
    ] = False,
    tool: Annotated[list[str] | None, typer.Option(help="Keep rows that call this tool.")] = None,
    no_tool: Annotated[
        list[str] | None, typer.Option(help="Drop rows that call this tool.")
    ] = None,
    match: Annotated[
        list[str] | None,
        typer.Option(
            help="FIELD=REGEX the row must match; FIELD is a path like messages.-1.content, "
            "or content for all text."
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="FIELD=REGEX the row must not match.")
    ] = None,
    min_turn_chars: Annotated[
        int | None,
        typer.Option(help="Drop rows with a user/assistant turn shorter than N characters."),
    ] = None,
    last_assistant: Annotated[
        bool, typer.Option(help="Drop rows whose last turn is not the assistant's.")
    ] = False,
    rejects: Rejects = None,
    skip_invalid: SkipInvalid = False,
    as_json: Json = False,
) -> None:
    """Keep the rows that pass every predicate given; prints what each predicate removed.

    Example: `punie dataset filter data -o clean --language en --require-tool-calls`"""
    from punie.data.filters import FilterSpec, filter_dataset

    spec = FilterSpec(
        min_messages=min_messages,
        max_messages=max_messages,
        max_tokens=max_tokens,
        model=model,
        languages=tuple(language or ()),
        require_tool_calls=require_tool_calls,
        forbid_tool_calls=forbid_tool_calls,
        require_tools=tuple(tool or ()),
        forbid_tools=tuple(no_tool or ()),
        match=tuple(match or ()),
        exclude=tuple(exclude or ()),
        min_turn_chars=min_turn_chars,
        last_assistant=last_assistant,
    )
    o = filter_dataset(path, out, spec, rejects=rejects, skip_invalid=skip_invalid)
    if not as_json:
        rows = [[name, n] for name, n in o.counts["predicates"].items()]
        out_console.print(_table("predicates (in order)", ["predicate", "removed"], rows))
    _written(o, as_json)


@dataset_app.command()
def dedupe(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Dataset folders, or .jsonl files; several are deduped as one."),
    ],
    out: Out,
    near: Annotated[
        bool, typer.Option(help="Also drop near duplicates (MinHash, then exact Jaccard).")
    ] = True,
    threshold: Annotated[
        float,
        typer.Option(help="Near duplicate: word 3-gram Jaccard with a kept row at least this."),
    ] = 0.8,
    include_system: Annotated[
        bool, typer.Option(help="Compare system prompts and tool schemas too.")
    ] = False,
    rejects: Rejects = None,
    skip_invalid: SkipInvalid = False,
    as_json: Json = False,
) -> None:
    """Drop exact duplicates (normalized content hash) and near duplicates, across all splits and
    all inputs (folders pool their splits into one output folder; files pool into one file).
    Splits are read test, valid, train and the first copy kept, so a training row that repeats an
    eval row is the one removed. Each near duplicate's reject names the kept row it matched and
    their Jaccard."""
    from punie.data.dedupe import dedupe_dataset
    from punie.data.seen import BUCKET

    o = dedupe_dataset(
        paths,
        out,
        near=near,
        threshold=threshold,
        include_system=include_system,
        rejects=rejects,
        skip_invalid=skip_invalid,
    )
    _written(o, as_json)
    crowded = o.counts.get("near", {}).get("crowded")
    if crowded and not as_json:
        out_console.print(
            f"{crowded} kept rows share bands with {BUCKET} or more others (templated data): "
            "their later near duplicates are found through their other bands only"
        )


@dataset_app.command()
def split(
    path: Annotated[Path, typer.Argument(help="Dataset folder or .jsonl file.")],
    out: Out,
    valid: Annotated[float, typer.Option(help="Share of rows for valid.jsonl.")] = 0.1,
    test: Annotated[float, typer.Option(help="Share of rows for test.jsonl.")] = 0.1,
    group_by: Annotated[
        str | None, typer.Option(help="Field path; rows sharing its value stay in one split.")
    ] = None,
    stratify: Annotated[
        str | None, typer.Option(help="Field path; each split gets the same mix of its values.")
    ] = None,
    seed: Seed = 0,
    as_json: Json = False,
) -> None:
    """Write OUT/train.jsonl, valid.jsonl and test.jsonl with exact shares; `--group-by` keeps
    every group (one question, one source document) in a single split, so nothing leaks."""
    from punie.data.split import split_dataset

    o = split_dataset(
        path, out, valid=valid, test=test, group_by=group_by, stratify=stratify, seed=seed
    )
    for warning in o.counts["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    _written(o, as_json)


@dataset_app.command()
def mix(
    sources: Annotated[
        list[str], typer.Argument(help="PATH=RATIO for each source, e.g. a.jsonl=0.4.")
    ],
    out: Out,
    total: Annotated[
        int | None, typer.Option(help="Rows to write (default: as many as the ratios allow).")
    ] = None,
    seed: Seed = 0,
    as_json: Json = False,
) -> None:
    """Sample sources to exact ratios, deduplicated across sources. A source that runs short
    gives all it has and its share is spread over the others; the manifest lists target vs
    actual per source."""
    from punie.data.mix import mix as run
    from punie.data.mix import parse_source

    o = run([parse_source(s) for s in sources], out, total=total, seed=seed)
    if not as_json:
        rows = [
            [s["path"], s["ratio"], s["target"], s["actual"], s["actual_ratio"], s["available"]]
            for s in o.counts["sources"]
        ]
        cols = ["source", "ratio", "target", "actual", "actual ratio", "unique rows"]
        out_console.print(_table("mix", cols, rows))
        for note in o.counts["notes"]:
            out_console.print(f"[yellow]note:[/yellow] {note}")
    _written(o, as_json)


@dataset_app.command()
def merge(
    paths: Annotated[list[Path], typer.Argument(help="Datasets to concatenate.")],
    out: Out,
    seed: Seed = 0,
    as_json: Json = False,
) -> None:
    """Concatenate datasets in a seeded shuffle, adding each row's `source`. Folders merge split
    by split into a folder; anything else into one file."""
    from punie.data.mix import merge as run

    _written(run(list(paths), out, seed=seed), as_json)


@dataset_app.command()
def decontaminate(
    path: Annotated[Path, typer.Argument(help="Dataset folder or .jsonl file.")],
    out: Out,
    against: Annotated[
        list[str],
        typer.Option(
            help="Eval suite (YAML file or built-in name) or dataset whose prompts must not "
            "leak; repeatable."
        ),
    ],
    n: Annotated[int, typer.Option(help="Words per n-gram (shorter prompts count whole).")] = 8,
    threshold: Annotated[
        float, typer.Option(help="Drop a row holding at least this share of a prompt's n-grams.")
    ] = 0.5,
    rejects: Rejects = None,
    skip_invalid: SkipInvalid = False,
    as_json: Json = False,
) -> None:
    """Drop rows that contain an eval prompt (by n-gram overlap) and list which rows hit which
    prompts."""
    from punie.api import decontaminate_dataset

    o = decontaminate_dataset(
        path,
        out,
        against,
        n=n,
        threshold=threshold,
        rejects=rejects,
        skip_invalid=skip_invalid,
    )
    if not as_json:
        hits = o.counts["hits"]
        for h in hits[:20]:
            out_console.print(f"{h['row']}: overlaps {h['prompt']} ({h['overlap']:.0%})")
        if len(hits) > 20:
            out_console.print(f"... and {len(hits) - 20} more (see the manifest)")
    _written(o, as_json)


@dataset_app.command()
def pairs(
    results: Annotated[
        list[Path],
        typer.Argument(help="Eval results files, or eval run folders (`punie eval run`)."),
    ],
    out: Out,
    suite: ResultSuites = None,
    chosen: Annotated[
        str,
        typer.Option(
            help="`passing`: a passing response over a failing one. `expected`: also, where "
            "nothing passed, the expected calls over a failing response."
        ),
    ] = "passing",
    against: Against = None,
    n: NGram = 8,
    threshold: Threshold = 0.5,
    as_json: Json = False,
) -> None:
    """Preference rows from eval results: per case, a passing response (chosen) over a failing
    one (rejected), the prompt being the case's request with the suite's tools. Give several
    results of one suite (base and adapted, or several seeds)."""
    from punie.api import pair_dataset

    o = pair_dataset(
        results,
        out,
        suites=suite or (),
        chosen=chosen,
        against=against or (),
        n=n,
        threshold=threshold,
    )
    if not as_json:
        _kept(f"pairs: {o.counts['pairs']} of {o.counts['cases']} cases", "skipped",
              o.counts["skipped_by_reason"])  # fmt: skip
    _written(o, as_json)


@dataset_app.command("from-results")
def from_results(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="Eval results files or run folders (the first sample of each case), or "
            "`punie generate` output (.jsonl: every sample, scored when it came from a suite)."
        ),
    ],
    out: Out,
    passed_only: Annotated[
        bool,
        typer.Option("--passed-only", help="Keep only responses that passed (rejection sampling)."),
    ] = False,
    keep_reasoning: Annotated[
        bool,
        typer.Option(
            "--keep-reasoning",
            help="Keep the whole answer text (a teacher's reasoning, <think> blocks); by "
            "default only the final answer or tool call is kept.",
        ),
    ] = False,
    dedupe_against: Annotated[
        list[Path] | None,
        typer.Option(help="Training file or dataset folder: rows already there are dropped."),
    ] = None,
    suite: ResultSuites = None,
    against: Against = None,
    n: NGram = 8,
    threshold: Threshold = 0.5,
    as_json: Json = False,
) -> None:
    """SFT rows from scored responses: each response becomes the assistant turn after the
    request it answered. With `--passed-only`, only verified ones (rejection sampling); rows
    already in `--dedupe-against` files are dropped, rows overlapping `--against` refused."""
    from punie.api import from_results as build

    o = build(
        results,
        out,
        suites=suite or (),
        passed_only=passed_only,
        keep_reasoning=keep_reasoning,
        dedupe_against=dedupe_against or (),
        against=against or (),
        n=n,
        threshold=threshold,
    )
    if not as_json:
        _kept(f"rows: {o.counts['rows']} of {o.counts['responses']} responses", "removed",
              o.counts["removed"])  # fmt: skip
    _written(o, as_json)


def _kept(summary: str, dropped: str, reasons: dict[str, int]) -> None:
    """What a command kept, then (if any) how many it `dropped` for each reason."""
    out_console.print(summary)
    if reasons:
        rows = [[reason, count] for reason, count in reasons.items()]
        out_console.print(_table(dropped, ["reason", "count"], rows))


@dataset_app.command()
def ablate(
    path: Annotated[
        Path, typer.Argument(help="Dataset (.jsonl or folder) or eval suite (.yaml or name).")
    ],
    out: Out,
    span: Annotated[
        str,
        typer.Option(help="Regex whose group named `span` marks the part: (?P<span>...)."),
    ],
    mode: Annotated[
        str, typer.Option(help="`drop` removes the span; `shuffle` swaps spans between rows.")
    ],
    seed: Seed = 0,
    as_json: Json = False,
) -> None:
    """Drop or shuffle one part of every prompt, to test whether a model reads it: run the same
    eval on the plain and the ablated suite and compare."""
    from punie.api import ablate_dataset

    result = ablate_dataset(path, out, span, mode=mode, seed=seed)
    if isinstance(result, dict):  # a suite: its manifest
        if as_json:
            _print_json(result)
            return
        c = result["counts"]
        out_console.print(
            f"wrote {out}: {c['spans']} spans in {c['rows_matched']} of {c['rows']} cases ({mode})"
        )
        return
    if not as_json:
        c = result.counts
        out_console.print(f"{c['spans']} spans in {c['rows_matched']} of {c['rows']} rows ({mode})")
    _written(result, as_json)


@dataset_app.command()
def download(
    name: Annotated[
        str, typer.Argument(help="`sample` (offline, the demo's set) or a hub dataset id.")
    ],
    out: Out,
    max_rows: Annotated[int | None, typer.Option("--max", help="At most N rows per split.")] = None,
    seed: Seed = 0,
    as_json: Json = False,
) -> None:
    """`sample` writes the synthetic tool-calling set the demo trains on. A hub id downloads the
    dataset's JSONL/Parquet files with huggingface-hub and converts them like `convert`."""
    from punie.data.download import download_hub, download_sample

    if name == "sample":
        o = download_sample(out, max_rows=max_rows, seed=seed)
    else:
        o = download_hub(name, out, max_rows=max_rows)
    _written(o, as_json)
