"""`punie dataset convert` on each format people have, through the real CLI: every sample is built
here, converted, checked field by field, and then passes `punie dataset validate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_support import run_main
from punie.errors import PunieError

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def cli(capsys, *args) -> tuple[int, str, str]:
    """`punie dataset ARGS` in-process, as the console script runs it: (exit code, out, err)."""
    return run_main(["dataset", *args], capsys)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def convert(tmp_path, capsys, rows, *extra, name="in.jsonl") -> tuple[list[dict], dict, str]:
    """Convert `rows` with the CLI, check the output validates clean; (rows, counts, stdout)."""
    src = tmp_path / name
    if name.endswith(".json"):
        src.write_text(json.dumps(rows, indent=2))
    else:
        write_jsonl(src, rows)
    out = tmp_path / "out.jsonl"
    code, stdout, err = cli(capsys, "convert", src, "-o", out, *extra)
    assert code == 0, err
    converted = read_rows(out)
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    assert_validates(capsys, out)
    return converted, manifest["counts"], stdout


def assert_validates(capsys, path) -> None:
    code, out, err = cli(capsys, "validate", path)
    assert code == 0, out + err


def call(name, arguments, **extra):
    return {**extra, "type": "function", "function": {"name": name, "arguments": arguments}}


# Item 1: preference and KTO rows, keys not consumed, rows that end without an answer


def test_sharegpt_preference_rows_become_preference_rows(tmp_path, capsys):
    row = {
        "conversations": [
            {"from": "human", "value": "Name a prime"},
            {"from": "gpt", "value": "2"},
            {"from": "human", "value": "Another?"},
        ],
        "chosen": {"from": "gpt", "value": "3"},
        "rejected": {"from": "gpt", "value": "4"},
        "system": "Be brief.",
    }
    [out], counts, _ = convert(tmp_path, capsys, [row])
    assert out == {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a prime"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": "Another?"},
        ],
        "chosen": [{"role": "assistant", "content": "3"}],
        "rejected": [{"role": "assistant", "content": "4"}],
    }
    assert counts["kinds"] == {"preference": 1}


@pytest.mark.parametrize("key", ["kto_tag", "label"])
def test_kto_rows_are_refused_so_no_undesirable_answer_is_trained(tmp_path, capsys, key):
    rows = [
        {
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": a}],
            key: ok,
        }
        for a, ok in [("hello", True), ("go away", False)]
    ]
    src = write_jsonl(tmp_path / "kto.jsonl", rows)
    code, _, err = cli(capsys, "convert", src, "-o", tmp_path / "out.jsonl")
    assert code == 2 and err.count("\n") == 0
    assert f"kto.jsonl:1: {key}: a KTO row" in err
    code, _, err = cli(capsys, "convert", src, "-o", tmp_path / "out.jsonl", "--skip-invalid")
    assert code != 0 and "no row converted" in err and "undesirable" not in err.split("first:")[0]
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.rejects.jsonl").exists()


def test_keys_convert_does_not_consume_are_counted_and_reported(tmp_path, capsys):
    row = {
        "conversations": [
            {"from": "human", "value": "hi", "loss": False},
            {"from": "gpt", "value": "hello", "loss": True},
        ],
        "text": "a stray text key would make this a text row",
    }
    [out], counts, stdout = convert(tmp_path, capsys, [row, row][:1])
    assert "text" not in out and all("loss" not in m for m in out["messages"])
    assert counts["dropped"] == {"conversations[].loss": 2, "text": 1}
    assert "dropped (no place in Punie's rows): conversations[].loss → 2, text → 1" in stdout


def test_a_preference_row_whose_answer_does_not_follow_its_prompt_is_refused(tmp_path, capsys):
    row = {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
        "chosen": {"from": "gpt", "value": "a"},
        "rejected": {"from": "gpt", "value": "b"},
    }
    src = write_jsonl(tmp_path / "d.jsonl", [row])
    code, _, err = cli(capsys, "convert", src, "-o", tmp_path / "out.jsonl")
    assert code == 2
    assert "d.jsonl:1: chosen: prompt + chosen: messages[2].role: two assistant turns" in err


def test_a_converted_sft_row_that_ends_without_an_answer_is_refused(tmp_path, capsys):
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    row["conversations"].append({"from": "human", "value": "and?"})
    src = write_jsonl(tmp_path / "d.jsonl", [row])
    code, _, err = cli(capsys, "convert", src, "-o", tmp_path / "out.jsonl")
    assert code == 2
    assert "d.jsonl:1: messages[2].role: the last turn is user, not assistant" in err


# Item 2: extra keys are kept


def test_extra_keys_are_kept_so_split_can_group_by_them(tmp_path, capsys):
    rows = [
        {
            "instruction": f"Question {i}",
            "output": f"Answer {i}",
            "id": f"q{i}",
            "source": "faq",
            "category": "docs",
            "meta": {"doc": f"d{i % 3}"},
        }
        for i in range(12)
    ]
    out, counts, stdout = convert(tmp_path, capsys, rows)
    assert [r["id"] for r in out] == [f"q{i}" for i in range(12)]
    assert out[4]["meta"] == {"doc": "d1"} and out[4]["category"] == "docs"
    assert out[4]["source"] == "faq"
    assert counts["extra_keys"] == {"category": 12, "id": 12, "meta": 12, "source": 12}
    assert "kept extra keys: category → 12" in stdout
    code, _, err = cli(
        capsys, "split", tmp_path / "out.jsonl", "-o", tmp_path / "split", "--group-by", "meta.doc"
    )
    assert code == 0, err
    docs = {
        s: {r["meta"]["doc"] for r in read_rows(tmp_path / "split" / f"{s}.jsonl")}
        for s in ("train", "valid", "test")
        if (tmp_path / "split" / f"{s}.jsonl").exists()
    }
    assert sum(len(d) for d in docs.values()) == 3  # each document in one split only


# Item 3: converted rows pass validate's checks; --skip-invalid that writes nothing fails


def test_convert_refuses_rows_validate_would_reject(tmp_path, capsys):
    bad = {"conversations": [{"from": "system", "value": "S"}, {"from": "gpt", "value": "hi"}]}
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    src = write_jsonl(tmp_path / "d.jsonl", [good, bad])
    code, _, err = cli(capsys, "convert", src, "-o", tmp_path / "out.jsonl")
    assert code == 2 and "d.jsonl:2: messages[1].role: the first turn after the system" in err
    code, _, err = cli(capsys, "convert", src, "-o", tmp_path / "out.jsonl", "--skip-invalid")
    assert code == 0, err
    assert len(read_rows(tmp_path / "out.jsonl")) == 1
    [rejected] = read_rows(tmp_path / "out.rejects.jsonl")
    assert rejected["reason"].startswith(f"{src}:2: messages[1].role")


def test_skip_invalid_that_converts_no_row_exits_non_zero_and_writes_nothing(tmp_path, capsys):
    bad = {"conversations": [{"from": "system", "value": "S"}, {"from": "gpt", "value": "hi"}]}
    src = write_jsonl(tmp_path / "d.jsonl", [bad, bad])
    code, _, err = cli(capsys, "convert", src, "-o", tmp_path / "out.jsonl", "--skip-invalid")
    assert code != 0 and "no row converted; every row was invalid" in err
    assert err.count("\n") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


# Item 4: validate catches a tool result that answers no call


@pytest.mark.parametrize(
    "before",
    [
        [{"role": "assistant", "content": "Let me look."}],
        [
            {"role": "assistant", "content": "", "tool_calls": [call("ls", {})]},
            {"role": "tool", "content": "a.py"},
            {"role": "assistant", "content": "One file."},
        ],
    ],
    ids=["no-call-at-all", "after-an-answer"],
)
def test_validate_reports_a_tool_result_that_follows_no_call(tmp_path, capsys, before):
    messages = [{"role": "user", "content": "List"}, *before, {"role": "tool", "content": "x"}]
    messages.append({"role": "assistant", "content": "done"})
    src = write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}])
    code, out, _ = cli(capsys, "validate", src)
    i = len(before) + 1
    assert code == 1
    assert f"d.jsonl:1: messages[{i}].role: a tool result must follow a tool call" in out
    assert f"messages[{i - 1}], the assistant turn before it, calls no tool" in out


# Item 5: smaller losses


def test_openai_rows_keep_call_ids_result_names_and_weights(tmp_path, capsys):
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        # double encoded: a JSON string holding a JSON string
                        "function": {
                            "name": "get_weather",
                            "arguments": json.dumps('{"city": "Rome"}'),
                        },
                    },
                ],
                "weight": 0,
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "rain"},
            {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": "sun"},
            {"role": "assistant", "content": "Rain in Oslo, sun in Rome.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": TOOLS[0]}],
    }
    [out], counts, stdout = convert(tmp_path, capsys, [row])
    m = out["messages"]
    assert m[1]["tool_calls"] == [
        call("get_weather", {"city": "Oslo"}, id="call_1"),
        call("get_weather", {"city": "Rome"}, id="call_2"),
    ]
    assert m[1]["weight"] == 0 and m[4]["weight"] == 1
    assert [(x["tool_call_id"], x["name"], x["content"]) for x in m[2:4]] == [
        ("call_1", "get_weather", "rain"),
        ("call_2", "get_weather", "sun"),
    ]
    assert out["tools"] == row["tools"]
    double = "tool-call arguments were a JSON string inside JSON; decoded to an object"
    assert counts["changed"] == {double: 1} and f"changed: {double} → 1" in stdout


def test_alpaca_history_becomes_earlier_turns(tmp_path, capsys):
    row = {
        "instruction": "And times 3?",
        "input": "",
        "output": "9",
        "system": "Math tutor.",
        "history": [["What is 1 + 2?", "3"], ["Squared?", "9"]],
    }
    [out], _, _ = convert(tmp_path, capsys, [row])
    assert out == {
        "messages": [
            {"role": "system", "content": "Math tutor."},
            {"role": "user", "content": "What is 1 + 2?"},
            {"role": "assistant", "content": "3"},
            {"role": "user", "content": "Squared?"},
            {"role": "assistant", "content": "9"},
            {"role": "user", "content": "And times 3?"},
            {"role": "assistant", "content": "9"},
        ]
    }


def test_a_function_call_turn_with_a_list_becomes_parallel_calls(tmp_path, capsys):
    calls = [
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
        {"name": "get_weather", "arguments": {"city": "Rome"}},
    ]
    row = {
        "conversations": [
            {"from": "human", "value": "Oslo and Rome?"},
            {"from": "function_call", "value": json.dumps(calls)},
            {"from": "observation", "value": '[{"temp": 4}, {"temp": 20}]'},
            {"from": "gpt", "value": "4 and 20 degrees."},
        ],
        "tools": json.dumps(TOOLS),
    }
    [out], _, _ = convert(tmp_path, capsys, [row])
    assert out["messages"][1]["tool_calls"] == [
        call("get_weather", {"city": "Oslo"}),
        call("get_weather", {"city": "Rome"}),
    ]
    assert out["messages"][2] == {"role": "tool", "content": '[{"temp": 4}, {"temp": 20}]'}
    assert out["tools"] == [{"type": "function", "function": TOOLS[0]}]


# Formats to read


def test_json_array_files_are_read_by_every_dataset_command(tmp_path, capsys):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(6)
    ]
    src = tmp_path / "rows.json"
    src.write_text(json.dumps(rows, indent=2))
    assert_validates(capsys, src)
    for args in [
        ("stats", src),
        ("filter", src, "-o", tmp_path / "f.jsonl", "--min-messages", "2"),
        ("dedupe", src, "-o", tmp_path / "d.jsonl", "--no-near"),
        ("split", src, "-o", tmp_path / "s", "--valid", "0.5", "--test", "0"),
        ("mix", f"{src}=1", "-o", tmp_path / "m.jsonl"),
        ("merge", src, "-o", tmp_path / "g.jsonl"),
        ("convert", src, "-o", tmp_path / "c.jsonl"),
    ]:
        code, _, err = cli(capsys, *args)
        assert code == 0, (args, err)
    assert read_rows(tmp_path / "f.jsonl") == rows
    assert read_rows(tmp_path / "c.jsonl") == rows
    assert len(read_rows(tmp_path / "s" / "train.jsonl")) == 3


def test_a_bad_element_of_a_json_array_is_named_by_its_index(tmp_path, capsys):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    src = tmp_path / "rows.json"
    src.write_text(json.dumps([good, good, {"messages": [{"role": "wizard", "content": "x"}]}]))
    code, out, _ = cli(capsys, "validate", src)
    assert code == 1 and "rows.json:[2]: messages[0].role: 'wizard' is not one of" in out
    src.write_text(json.dumps([good, good])[:-5])  # cut short: the array never closes
    code, _, err = cli(capsys, "filter", src, "-o", tmp_path / "out.jsonl", "--min-messages", "1")
    assert code == 2 and err.count("\n") == 0 and "rows.json:[1]: not valid JSON" in err


def test_dedupe_names_the_first_copy_in_an_array_by_its_index(tmp_path, capsys):
    rows = [{"text": "alpha"}, {"text": "beta"}, {"text": "alpha"}]
    src = tmp_path / "rows.json"
    src.write_text(json.dumps(rows))
    rejects = tmp_path / "rej.jsonl"
    code, _, err = cli(capsys, "dedupe", src, "-o", tmp_path / "d.jsonl", "--rejects", rejects)
    assert code == 0, err
    [rejected] = read_rows(rejects)
    assert rejected["reason"] == f"{src}:[2]: exact duplicate: of {src}:[0]"


def test_a_json_array_where_mlx_lm_reads_json_lines_is_named_in_one_line(tmp_path, capsys):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps([good] * 200, indent=2))
    code, out, err = cli(capsys, "validate", data)
    assert code == 2 and (out + err).count("\n") == 0
    assert "train.jsonl: a JSON array, not JSON lines" in err
    (data / "train.jsonl").unlink()
    (data / "train.json").write_text(json.dumps([good]))
    code, _, err = cli(capsys, "validate", data)
    assert code == 2 and "train.json is there" in err
    from punie.fsio import read_jsonl

    with pytest.raises(PunieError, match="a JSON array, not JSON lines"):
        list(read_jsonl(data / "train.json"))


def test_a_dataset_info_json_given_as_rows_is_named(tmp_path, capsys):
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"demo": {"file_name": "demo.json"}}, indent=2))
    for args in [("validate", info), ("stats", info), ("convert", info, "-o", tmp_path / "o")]:
        code, out, err = cli(capsys, *args)
        assert code == 2 and (out + err).count("\n") == 0, err
        assert "LLaMA-Factory dataset_info.json" in err or "name the dataset" in err


def test_llama_factory_dataset_info_applies_columns_tags_and_ranking(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    sharegpt = [
        {
            "dialog": [
                {"speaker": "sys", "text": "You help."},
                {"speaker": "me", "text": "Weather in Oslo?"},
                {"speaker": "fn", "text": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
                {"speaker": "result", "text": '{"temp": 4}'},
                {"speaker": "bot", "text": "4 degrees."},
            ],
            "functions": json.dumps(TOOLS),
            "id": 7,
        }
    ]
    ranking = [{"q": "Name a prime", "ctx": "", "good": "3", "bad": "4", "id": 1}]
    (tmp_path / "data" / "chat.json").write_text(json.dumps(sharegpt))
    (tmp_path / "data" / "pairs.jsonl").write_text(json.dumps(ranking[0]) + "\n")
    info = {
        "chat": {
            "file_name": "data/chat.json",
            "formatting": "sharegpt",
            "columns": {"messages": "dialog", "tools": "functions"},
            "tags": {
                "role_tag": "speaker",
                "content_tag": "text",
                "user_tag": "me",
                "assistant_tag": "bot",
                "observation_tag": "result",
                "function_tag": "fn",
                "system_tag": "sys",
            },
        },
        "pairs": {
            "file_name": "data/pairs.jsonl",
            "ranking": True,
            "columns": {"prompt": "q", "query": "ctx", "chosen": "good", "rejected": "bad"},
        },
        "remote": {"hf_hub_url": "someone/data"},
        "pt": {"file_name": "data/pt.jsonl", "columns": {"prompt": "text"}},
    }
    (tmp_path / "data" / "pt.jsonl").write_text(json.dumps({"text": "A document."}) + "\n")
    (tmp_path / "dataset_info.json").write_text(json.dumps(info, indent=2))
    out = tmp_path / "chat.jsonl"
    code, _, err = cli(capsys, "convert", "--from", "llama-factory", tmp_path / "dataset_info.json",
                       "chat", "-o", out)  # fmt: skip
    assert code == 0, err
    assert read_rows(out) == [
        {
            "messages": [
                {"role": "system", "content": "You help."},
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [call("get_weather", {"city": "Oslo"})],
                },  # noqa: E501
                {"role": "tool", "content": '{"temp": 4}'},
                {"role": "assistant", "content": "4 degrees."},
            ],
            "tools": [{"type": "function", "function": TOOLS[0]}],
            "id": 7,
        }
    ]
    assert_validates(capsys, out)
    code, _, err = cli(capsys, "convert", tmp_path / "dataset_info.json", "pairs", "-o", out)
    assert code == 0, err
    assert read_rows(out) == [
        {
            "prompt": [{"role": "user", "content": "Name a prime"}],
            "chosen": [{"role": "assistant", "content": "3"}],
            "rejected": [{"role": "assistant", "content": "4"}],
            "id": 1,
        }
    ]
    assert_validates(capsys, out)
    manifest = json.loads((tmp_path / "chat.manifest.json").read_text())
    assert [Path(i["path"]).name for i in manifest["inputs"]] == [
        "dataset_info.json",
        "pairs.jsonl",
    ]
    code, _, err = cli(capsys, "convert", tmp_path / "dataset_info.json", "pt", "-o", out)
    assert code == 0 and read_rows(out) == [{"text": "A document."}], err
    code, _, err = cli(capsys, "convert", tmp_path / "dataset_info.json", "remote", "-o", out)
    assert code == 2 and "only local files" in err
    code, _, err = cli(capsys, "convert", tmp_path / "dataset_info.json", "-o", out)
    assert code == 2 and "name the dataset to convert" in err and "chat, pairs, pt, remote" in err


def test_hermes_tags_become_tools_calls_and_results(tmp_path, capsys):
    schema = {"type": "function", "function": TOOLS[0]}
    row = {
        "id": "h1",
        "conversations": [
            {
                "from": "system",
                "value": f"You are a function calling AI model. <tools> {json.dumps([schema])} "
                "</tools> Call tools inside <tool_call></tool_call> tags.",
            },
            {"from": "human", "value": "Weather in Oslo and Rome?"},
            {
                "from": "gpt",
                "value": "<tool_call>\n{'arguments': {'city': 'Oslo'}, 'name': 'get_weather'}\n"
                '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}'
                "\n</tool_call>",
            },
            {
                "from": "tool",
                "value": '<tool_response>\n{"name": "get_weather", "content": {"temp": 4}}\n'
                '</tool_response>\n<tool_response>\n{"name": "get_weather", "content": "20C"}\n'
                "</tool_response>",
            },
            {"from": "gpt", "value": "4 and 20 degrees."},
        ],
    }
    [out], counts, _ = convert(tmp_path, capsys, [row])
    m = out["messages"]
    assert m[0] == {"role": "system", "content": "You are a function calling AI model.  "
                    "Call tools inside <tool_call></tool_call> tags."}  # fmt: skip
    assert out["tools"] == [schema] and out["id"] == "h1"
    assert m[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            call("get_weather", {"city": "Oslo"}),
            call("get_weather", {"city": "Rome"}),
        ],
    }
    assert m[3:5] == [
        {"role": "tool", "name": "get_weather", "content": '{"temp": 4}'},
        {"role": "tool", "name": "get_weather", "content": "20C"},
    ]
    assert m[5] == {"role": "assistant", "content": "4 and 20 degrees."}


def test_raw_glaive_rows_become_chat_rows_with_tools(tmp_path, capsys):
    schema = TOOLS[0]
    row = {
        "system": "SYSTEM: You are a helpful assistant with access to the following functions. "
        f"Use them if required -\n{json.dumps(schema, indent=4)}\n",
        "chat": "USER: Weather in Oslo?\n\n\nASSISTANT: <functioncall> "
        '{"name": "get_weather", "arguments": \'{"city": "Oslo"}\'} <|endoftext|>\n\n\n'
        'FUNCTION RESPONSE: {"temp": 4}\n\n\nASSISTANT: It is 4 degrees. <|endoftext|>\n\n\n'
        "USER: Thanks!\n\n\nASSISTANT: You're welcome. <|endoftext|>\n",
        "id": 3,
    }
    [out], counts, _ = convert(tmp_path, capsys, [row])
    assert out == {
        "messages": [
            {
                "role": "system",
                "content": "You are a helpful assistant with access to the following functions. "
                "Use them if required -",
            },
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [call("get_weather", {"city": "Oslo"})],
            },  # noqa: E501
            {"role": "tool", "content": '{"temp": 4}', "name": "get_weather"},
            {"role": "assistant", "content": "It is 4 degrees."},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You're welcome."},
        ],
        "tools": [{"type": "function", "function": schema}],
        "id": 3,
    }


def test_xlam_rows_become_a_call_turn_with_json_schema_tools(tmp_path, capsys):
    tools = [
        {
            "name": "search",
            "description": "Search products",
            "parameters": {
                "query": {"description": "Words", "type": "str"},
                "limit": {"description": "How many", "type": "int, optional", "default": 10},
                "tags": {"description": "Tags", "type": "List[str]"},
            },
        }
    ]
    answers = [
        {"name": "search", "arguments": {"query": "socks", "tags": ["wool"]}},
        {"name": "search", "arguments": {"query": "hats", "limit": 2, "tags": []}},
    ]
    row = {"id": 9, "query": "Find socks and hats", "tools": json.dumps(tools),
           "answers": json.dumps(answers)}  # fmt: skip
    [out], counts, _ = convert(tmp_path, capsys, [row])
    assert out["id"] == 9
    assert out["messages"] == [
        {"role": "user", "content": "Find socks and hats"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call(a["name"], a["arguments"]) for a in answers],
        },
    ]
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search products",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "Words"},
                        "limit": {"type": "integer", "description": "How many", "default": 10},
                        "tags": {"type": "array", "description": "Tags"},
                    },
                    "required": ["query", "tags"],
                },
            },
        }
    ]


def test_function_call_and_function_response_roles(tmp_path, capsys):
    row = {
        "conversations": [
            {"from": "system", "value": "You can call get_weather."},
            {"from": "human", "value": "Weather in Oslo?"},
            {
                "from": "function-call",
                "value": '{"name": "get_weather", "arguments": \'{"city": "Oslo"}\'}',
            },  # fmt: skip
            {"from": "function-response", "value": '{"temp": 4}'},
            {"from": "gpt", "value": "4 degrees."},
        ],
        "category": "weather",
    }
    [out], counts, _ = convert(tmp_path, capsys, [row])
    assert [m["role"] for m in out["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]  # noqa: E501
    assert out["messages"][2]["tool_calls"] == [call("get_weather", {"city": "Oslo"})]
    assert out["messages"][3]["content"] == '{"temp": 4}' and out["category"] == "weather"


def test_llama_factory_content_part_rows(tmp_path, capsys):
    def parts(*items):
        return [{"type": t, "value": v} for t, v in items]

    row = {
        "messages": [
            {
                "role": "system",
                "content": parts(("text", "You help."), ("tools", json.dumps(TOOLS))),
                "loss_weight": 0.0,
            },  # fmt: skip
            {"role": "user", "content": parts(("text", "Weather in Oslo?")), "loss_weight": 0.0},
            {
                "role": "assistant",
                "content": parts(
                    ("reasoning", "I should look it up."),
                    (
                        "tool_call",
                        json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}}),
                    ),
                ),
                "loss_weight": 1.0,
            },
            {"role": "tool", "content": parts(("text", '{"temp": 4}')), "loss_weight": 0.0},
            {"role": "assistant", "content": parts(("text", "4 degrees.")), "loss_weight": 1.0},
        ],
        "extra_info": "demo",
    }
    [out], counts, _ = convert(tmp_path, capsys, [row], name="rows.json")
    assert out == {
        "messages": [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": "<think>\nI should look it up.\n</think>\n\n",
                "tool_calls": [call("get_weather", {"city": "Oslo"})],
            },
            {"role": "tool", "content": '{"temp": 4}'},
            {"role": "assistant", "content": "4 degrees."},
        ],
        "tools": [{"type": "function", "function": TOOLS[0]}],
        "extra_info": "demo",
    }
    pair = {
        "chosen_messages": [row["messages"][1], row["messages"][4]],
        "rejected_messages": [
            row["messages"][1],
            {**row["messages"][4], "content": parts(("text", "No idea."))},
        ],  # fmt: skip
    }
    [out], counts, _ = convert(tmp_path, capsys, [pair])
    assert out == {
        "prompt": [{"role": "user", "content": "Weather in Oslo?"}],
        "chosen": [{"role": "assistant", "content": "4 degrees."}],
        "rejected": [{"role": "assistant", "content": "No idea."}],
    }


def test_transformers_sequence_length_notice_does_not_leak(tmp_path, tiny_model):
    row = {"text": "word " * 5000}  # past the tokenizer's model_max_length of 2048
    src = write_jsonl(tmp_path / "long.jsonl", [row])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "punie",
            "dataset",
            "validate",
            src,
            "--model",
            str(tiny_model),
            "--max-seq-length",
            "100000",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Token indices sequence length" not in result.stdout + result.stderr
