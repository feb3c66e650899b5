"""One real multi-turn episode: the tiny model, fine-tuned on one two-turn row (call read_file,
read the result, answer), through Punie's managed mlx_lm.server, its call answered by a mock."""

from __future__ import annotations

import pytest

from punie.sampling import Sampling
from punie.session import EvalPlan, run_eval
from train_support import TOOLS, multi_turn_row, overfit_adapter

pytestmark = pytest.mark.slow

SUITE = """\
name: agent-real
kind: agent
max_turns: 3
tools:
  - type: function
    function:
      name: read_file
      description: Read a file.
      parameters: {type: object, properties: {path: {type: string}}, required: [path]}
cases:
  - id: read
    prompt: Open a.py
    mocks: [{call: {name: read_file, arguments: {path: a.py}}, result: ok}]
    expect: {calls: [{name: read_file, arguments: {path: [a.py]}}], answer: Read a.py}
"""


@pytest.fixture(scope="module")
def two_turn_adapter(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("two-turn")
    rows = [multi_turn_row("a.py", TOOLS)] * 4
    # both assistant turns are learnt, not only the last
    return overfit_adapter(tiny_model, root, rows, iters=60, mask_prompt=False, max_seq_length=256)


def test_tiny_model_runs_a_multi_turn_episode_through_the_managed_server(
    tiny_model, two_turn_adapter, tmp_path
):
    suite = tmp_path / "agent.yaml"
    suite.write_text(SUITE)
    plan = EvalPlan(
        suites=(str(suite),),
        model=str(tiny_model),
        adapters=(str(two_turn_adapter),),
        run_dir=tmp_path / "run",
        sampling=Sampling(max_tokens=48),
        use_cache=False,
    )
    case = run_eval(plan).results[0].cases[0]
    roles = [m["role"] for m in case.transcript]
    assert roles == ["user", "assistant", "tool", "assistant"]
    call = case.transcript[1]["tool_calls"][0]["function"]
    assert (call["name"], call["arguments"]) == ("read_file", '{"path": "a.py"}')
    assert case.transcript[2]["content"] == "ok" and not case.transcript[2]["error"]
    assert (case.passed, case.label) == (True, None), case.reason
