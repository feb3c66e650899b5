"""GRPO's rewards come from the eval scorers: pass/fail, partial credit, and a separate format
term; and the config keys that steer it refuse bad values in one line."""

from __future__ import annotations

import re

import pytest

from punie.errors import ConfigError
from punie.eval.suite import Suite
from punie.rl.reward import reward
from punie.train.config import TrainConfig

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
    for name in ("read_file", "list_dir")
]
SUITE = Suite.from_dict(
    {
        "name": "t",
        "kind": "tool_calling",
        "tools": TOOLS,
        "cases": [
            {
                "id": "two",
                "prompt": "Open a.py and list src",
                "expect": {
                    "calls": [
                        {"name": "read_file", "arguments": {"path": ["a.py"]}},
                        {"name": "list_dir", "arguments": {"path": ["src"]}},
                    ]
                },
            },
            {"id": "none", "prompt": "Hello", "expect": {"calls": []}},
        ],
    }
)
TWO, NONE = SUITE.cases


def call(name: str, path: str) -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {{"path": "{path}"}}}}</tool_call>'


def test_the_scorer_verdict_is_the_reward():
    both = call("read_file", "a.py") + call("list_dir", "src")
    assert reward(SUITE, TWO, both, mode="pass", format_weight=0).total == 1.0
    one = call("read_file", "a.py")
    r = reward(SUITE, TWO, one, mode="pass", format_weight=0)
    assert (r.total, r.label) == (0.0, "wrong_count")
    assert reward(SUITE, NONE, "Hi!", mode="pass", format_weight=0).total == 1.0


def test_partial_reward_is_the_fraction_of_expected_calls_matched():
    one = call("read_file", "a.py")
    assert reward(SUITE, TWO, one, mode="partial", format_weight=0).task == 0.5
    wrong_value = call("read_file", "b.py") + call("list_dir", "src")
    assert reward(SUITE, TWO, wrong_value, mode="partial", format_weight=0).task == 0.5
    # an extra call counts against it: 2 matched out of 3 made
    extra = call("read_file", "a.py") + call("list_dir", "src") + call("list_dir", "x")
    assert reward(SUITE, TWO, extra, mode="partial", format_weight=0).task == pytest.approx(2 / 3)
    assert reward(SUITE, NONE, one, mode="partial", format_weight=0).task == 0.0


def test_format_reward_is_separate_and_pays_for_a_well_formed_block_only():
    wrong_but_formed = call("read_file", "zzz")
    r = reward(SUITE, TWO, wrong_but_formed, mode="pass", format_weight=0.1)
    assert (r.task, r.format, r.total) == (0.0, 0.1, 0.1)
    broken = '<tool_call>{"name": "read_file", </tool_call>'
    r = reward(SUITE, TWO, broken, mode="pass", format_weight=0.1)
    assert (r.task, r.format, r.label) == (0.0, 0.0, "malformed")
    unknown_tool = call("delete_all", "a.py")
    assert reward(SUITE, TWO, unknown_tool, mode="pass", format_weight=0.1).format == 0.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "grpo"}, "reward_suite: method grpo needs a suite"),
        ({"method": "grpo", "reward_suite": "s.yaml", "group_size": 1}, "group_size: must be"),
        ({"reward": "half"}, "reward: 'half' is not one of pass, partial"),
        ({"advantage": "ppo"}, "advantage: 'ppo' is not one of grpo, dr_grpo"),
        ({"kl_beta": -0.1}, "kl_beta: must be at least 0"),
        ({"clip_epsilon": 1.5}, "clip_epsilon: must be in (0, 1)"),
        ({"temperature": 0}, "temperature: must be positive"),
        ({"reward_suite": "s.yaml"}, "reward_suite: only used by method grpo, not sft"),
    ],
)
def test_grpo_keys_refuse_bad_values_in_one_line(changes, message):
    base = {"model": "m"} if changes.get("method") == "grpo" else {"model": "m", "data": "d"}
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig.from_dict({**base, **changes})


def test_grpo_takes_no_data_folder():
    config = TrainConfig.from_dict({"model": "m", "method": "grpo", "reward_suite": "s.yaml"})
    assert config.data == ""
    with pytest.raises(ConfigError, match="data: not used by method grpo"):
        TrainConfig.from_dict({"model": "m", "data": "d", "method": "grpo", "reward_suite": "s"})


def test_partial_reward_for_code_is_the_fraction_of_tests_passed():
    code = Suite.from_dict(
        {
            "name": "c",
            "kind": "code",
            "cases": [
                {
                    "id": "double",
                    "prompt": "Read a number and print twice it.",
                    "expect": {
                        "tests": [
                            {"stdin": "2\n", "stdout": "4"},
                            {"stdin": "0\n", "stdout": "0"},
                            {"stdin": "5\n", "stdout": "10"},
                        ]
                    },
                }
            ],
        }
    )
    (case,) = code.cases
    squares = "```python\nn = int(input())\nprint(n * n)\n```"  # right for 2 and 0 only
    r = reward(code, case, squares, mode="partial", format_weight=0.1)
    assert r.task == pytest.approx(2 / 3) and r.format == 0.1
    assert reward(code, case, squares, mode="pass", format_weight=0).task == 0.0
    assert reward(code, case, "no code at all", mode="partial", format_weight=0.1).total == 0.0


def test_select_by_is_refused_by_a_backend_that_cannot_score_checkpoints():
    pytest.importorskip("punie_peft")
    from punie.train.launch import check

    config = TrainConfig(model="m", data="d", backend="peft", select_by="heldout.yaml")
    with pytest.raises(ConfigError, match="select_by: backend peft does not pick checkpoints"):
        check(config)
