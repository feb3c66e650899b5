"""`punie eval import bfcl`: BFCL sample files in, a suite out, and `punie eval score` verdicts
that match the table below, category by category."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import punie, run_main

TRIANGLE = {
    "name": "calculate_triangle_area",
    "description": "Area of a triangle.",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer"},
            "height": {"type": "integer"},
            "unit": {"type": "string"},
        },
        "required": ["base", "height"],
    },
}
FACTORIAL = {
    "name": "math.factorial",
    "parameters": {"type": "dict", "properties": {"number": {"type": "integer"}}},
}
WEATHER = {
    "name": "get_weather",
    "parameters": {
        "type": "dict",
        "properties": {"city": {"type": "string"}, "date": {"type": "string"}},
        "required": ["city"],
    },
}
PLAY = {
    "name": "spotify.play",
    "parameters": {
        "type": "dict",
        "properties": {"artist": {"type": "string"}, "duration": {"type": "float"}},
        "required": ["artist", "duration"],
    },
}
FORECAST = {
    "name": "forecast",
    "parameters": {
        "type": "dict",
        "properties": {
            "city": {"type": "string"},
            "options": {
                "type": "dict",
                "properties": {"units": {"type": "string"}, "lang": {"type": "string"}},
            },
        },
        "required": ["city"],
    },
}
TRIANGLE_TRUTH = {"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}
PLAY_TRUTH = [
    {"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
    {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}},
]
FORECAST_TRUTH = [
    {"forecast": {"city": ["Paris"], "options": [{"units": ["metric", ""], "lang": ["en"]}]}}
]

# category -> entries: (id, functions, ground truth or None)
FILES = {
    "simple": [
        ("simple_0", [TRIANGLE], [TRIANGLE_TRUTH]),
        ("simple_1", [FACTORIAL], [{"math.factorial": {"number": [5]}}]),
        (
            "simple_2",
            [WEATHER],
            [{"get_weather": {"city": ["New York, NY", "NYC"], "date": ["", "2024-04-01"]}}],
        ),
        ("simple_3", [TRIANGLE], [TRIANGLE_TRUTH]),
        ("simple_4", [TRIANGLE], [TRIANGLE_TRUTH]),
        ("simple_5", [FACTORIAL], [{"math.factorial": {"number": [5]}}]),
        ("simple_python_6", [FACTORIAL], [{"math.factorial": {"number": [5]}}]),  # a v4 id
    ],
    "multiple": [
        ("multiple_0", [TRIANGLE, FACTORIAL], [{"math.factorial": {"number": [5]}}]),
        ("multiple_1", [TRIANGLE, FACTORIAL], [{"math.factorial": {"number": [5]}}]),
    ],
    "parallel": [("parallel_0", [PLAY], PLAY_TRUTH), ("parallel_1", [PLAY], PLAY_TRUTH)],
    "parallel_multiple": [
        (
            "parallel_multiple_0",
            [FACTORIAL, WEATHER],
            [{"math.factorial": {"number": [3]}}, {"get_weather": {"city": ["Oslo"]}}],
        )
    ],
    "irrelevance": [("irrelevance_0", [TRIANGLE], None), ("irrelevance_1", [TRIANGLE], None)],
    "live_simple": [
        ("live_simple_0-0-0", [FORECAST], FORECAST_TRUTH),
        ("live_simple_1-1-0", [FORECAST], FORECAST_TRUTH),
    ],
    "live_irrelevance": [("live_irrelevance_0-0-0", [WEATHER], None)],
    "live_relevance": [("live_relevance_0-0-0", [WEATHER], None)],
}


def call(name: str, **args) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


# case id -> (the model's tool calls or text, Punie's label, None for a pass). Where BFCL's own
# checker would say otherwise, the comment says so (docs/eval-suites.md, "BFCL suites").
TABLE = {
    "simple_0": ([call("calculate_triangle_area", base=10, height=5)], None),  # optional left out
    "simple_1": ([call("math_factorial", number=5)], None),  # the dotted name, underscored
    "simple_2": ([call("get_weather", city="new york ny")], None),  # normalized strings
    "simple_3": ([call("calculate_triangle_area", base="10", height=5)], "type_error"),
    "simple_4": (
        [call("calculate_triangle_area", base=10, height=5, unit="meters")],
        "value_error",
    ),
    "simple_5": ([call("math.factorial", number=5)], "wrong_name"),  # not the name it was given
    "simple_python_6": ([call("math_factorial", number=6)], "value_error"),
    "multiple_0": ([call("calculate_triangle_area", base=1, height=2)], "wrong_name"),
    "multiple_1": ('<tool_call>{"name": "math_factorial", "arguments": {"number": 5}}', None),
    "parallel_0": (  # any order; an integer is a valid float
        [
            call("spotify_play", artist="maroon 5", duration=15),
            call("spotify_play", artist="Taylor Swift", duration=20.0),
        ],
        None,
    ),
    "parallel_1": ([call("spotify_play", artist="Taylor Swift", duration=20)], "wrong_count"),
    "parallel_multiple_0": (
        [call("get_weather", city="oslo"), call("math_factorial", number=3)],
        None,
    ),
    "irrelevance_0": ("I have no tool that can answer that.", None),
    "irrelevance_1": ([call("calculate_triangle_area", base=1, height=1)], "unexpected_call"),
    "live_simple_0-0-0": ([call("forecast", city="paris", options={"lang": "EN"})], None),
    "live_simple_1-1-0": (
        [call("forecast", city="Paris", options={"lang": "en", "units": "imperial"})],
        "value_error",
    ),
    "live_irrelevance_0-0-0": ("I cannot help with that.", None),
    "live_relevance_0-0-0": ([call("get_weather", city="Rome")], None),
}


def write_bfcl(folder: Path, category: str) -> tuple[Path, Path]:
    """A BFCL v3 question file and its possible-answer file, one JSON object a line."""
    questions = folder / f"BFCL_v3_{category}.json"
    answers = folder / "possible_answer" / f"BFCL_v3_{category}.json"
    answers.parent.mkdir(parents=True, exist_ok=True)
    q_lines, a_lines = [], []
    for entry_id, functions, truth in FILES[category]:
        question = [[{"role": "user", "content": f"Question {entry_id}?"}]]
        q_lines.append(json.dumps({"id": entry_id, "question": question, "function": functions}))
        if truth is not None:
            a_lines.append(json.dumps({"id": entry_id, "ground_truth": truth}))
    questions.write_text("\n".join(q_lines) + "\n")
    answers.write_text("\n".join(a_lines) + "\n")
    return questions, answers


def responses_for(suite_cases: list[str], path: Path) -> Path:
    with path.open("w") as f:
        for case_id in suite_cases:
            reply = TABLE[case_id][0]
            if isinstance(reply, str):
                row = {"id": case_id, "content": reply}
            else:
                row = {"id": case_id, "content": "", "tool_calls": reply}
            f.write(json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize("category", list(FILES))
def test_imported_suites_score_as_the_table_says(category, tmp_path, capsys):
    questions, answers = write_bfcl(tmp_path, category)
    suite = tmp_path / f"{category}.yaml"
    code, out, err = run_main(
        ["eval", "import", "bfcl", questions, "--answers", answers, "-o", suite, "--json"], capsys
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["categories"] == {category: len(FILES[category])}
    ids = [entry[0] for entry in FILES[category]]
    responses = responses_for(ids, tmp_path / "responses.jsonl")
    code, out, err = run_main(["eval", "score", suite, "--responses", responses, "--json"], capsys)
    assert code == 0, err
    got = {c["id"]: c["label"] if not c["passed"] else None for c in json.loads(out)["cases"]}
    assert got == {i: TABLE[i][1] for i in ids}


def test_the_table_covers_every_category_and_both_verdicts():
    from punie.eval.bfcl import CATEGORIES, category_of

    covered = {category_of(e[0]) for entries in FILES.values() for e in entries}
    assert {"simple", "multiple", "parallel", "parallel_multiple", "irrelevance"} <= covered
    assert any(c.startswith("live_") for c in covered) and covered <= set(CATEGORIES)
    labels = [label for _, label in TABLE.values()]
    assert None in labels and len(set(labels)) >= 5


def test_the_suite_file_names_dotted_functions_as_bfcl_does_and_compares_strings_normalized(
    tmp_path,
):
    import yaml

    questions, answers = write_bfcl(tmp_path, "parallel")
    suite = tmp_path / "parallel.yaml"
    result = punie("eval", "import", "bfcl", questions, "--answers", answers, "-o", suite)
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(suite.read_text())
    assert data["strings"] == "normalized" and data["name"] == "bfcl-BFCL_v3_parallel"
    case = data["cases"][0]
    assert case["tools"][0]["function"]["name"] == "spotify_play"
    duration = case["tools"][0]["function"]["parameters"]["properties"]["duration"]
    assert duration["type"] == "number"  # BFCL's float
    assert [c["name"] for c in case["expect"]["calls"]] == ["spotify_play", "spotify_play"]
    assert case["category"] == "parallel"


def test_a_dictionary_answer_is_spelt_out_whole():
    from punie.eval.bfcl import spell_out

    got = spell_out({"units": ["metric", ""], "lang": ["en", "fr"]}, "where")
    assert sorted(map(json.dumps, got)) == sorted(
        map(
            json.dumps,
            [
                {"units": "metric", "lang": "en"},
                {"units": "metric", "lang": "fr"},
                {"lang": "en"},
                {"lang": "fr"},
            ],
        )
    )


def refused(args, capsys) -> str:
    """`punie ARGS` in-process: refused with exit 2 and one `error:` line."""
    code, _, message = run_main(args, capsys)
    assert code == 2, message
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_bad_bfcl_input_is_one_line_naming_file_line_and_field(tmp_path, capsys):
    questions, answers = write_bfcl(tmp_path, "simple")
    out = tmp_path / "suite.yaml"
    import_args = ["eval", "import", "bfcl", questions, "--answers", answers, "-o", out]

    lines = questions.read_text().splitlines()
    lines[2] = lines[2].replace('"simple_2"', '"multi_turn_base_2"')
    questions.write_text("\n".join(lines) + "\n")
    error = refused(import_args, capsys)
    assert f"{questions}:3: id: 'multi_turn_base_2' is in category 'multi_turn_base'" in error
    assert not out.exists()

    questions, answers = write_bfcl(tmp_path, "simple")
    error = refused(["eval", "import", "bfcl", questions, "-o", out], capsys)
    assert f"{questions}:1: id: 'simple_0' has no possible answer (give --answers" in error

    rows = answers.read_text().splitlines()
    rows[1] = json.dumps({"id": "simple_1", "ground_truth": [{"math.sqrt": {"number": [5]}}]})
    answers.write_text("\n".join(rows) + "\n")
    error = refused(import_args, capsys)
    assert f"{answers}:2: ground_truth[0]: 'math.sqrt' is not one of the entry's functions" in error
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_import_never_overwrites_a_file_punie_did_not_write(tmp_path, capsys):
    questions, _ = write_bfcl(tmp_path, "irrelevance")
    mine = tmp_path / "notes.yaml"
    mine.write_text("my own notes\n")
    error = refused(["eval", "import", "bfcl", questions, "-o", mine], capsys)
    assert "not a Punie suite output" in error
    assert mine.read_text() == "my own notes\n"
    ours = tmp_path / "ours.yaml"
    for _ in range(2):  # a suite it wrote itself is replaced
        code, _, err = run_main(["eval", "import", "bfcl", questions, "-o", ours], capsys)
        assert code == 0, err
