"""Graded suites against scripted OpenAI-compatible servers on 127.0.0.1: grades and rationales
parsed from the grader's fixed line, pairwise preference asked in both orders (position bias
cancelled and measured), win rate with its Wilson interval, grader calls cached, and a grader on
its own server (`--grader-base-url`)."""

from __future__ import annotations

import re

import pytest

from openai_stub import completion, scripted_server
from punie.errors import EvalError
from punie.eval.cache import ResponseCache
from punie.eval.client import Target
from punie.eval.runner import run_suite
from punie.eval.stats import wilson
from punie.eval.suite import Suite
from punie.report.html import render
from punie.session import EvalPlan, run_eval

RUBRIC = """\
name: explain
kind: graded
grader: judge
rubric: "Correct, and clear to a child."
cases:
  - {id: good, prompt: "Why is the sky blue?", reference: "Rayleigh scattering"}
  - {id: partial, prompt: "What is 2+2?"}
  - {id: mute, prompt: "Name a prime."}
  - {id: own, prompt: "Say hi.", rubric: "Says hi <politely>."}
"""

GRADES = {"Why is the sky blue?": "C", "What is 2+2?": "P", "Name a prime.": None, "Say hi.": "I"}


class Stub:
    """A scripted server that records each request body; `reply(body)` gives the message."""

    def __init__(self, reply):
        self.bodies: list[dict] = []

        def answer(body):
            self.bodies.append(body)
            return completion(body["model"], {"role": "assistant", "content": reply(body)})

        self.httpd = scripted_server(answer)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stub():
    made: list[Stub] = []

    def start(reply) -> Stub:
        made.append(Stub(reply))
        return made[-1]

    yield start
    for s in made:
        s.close()


def answer_then_grade(body) -> str:
    text = body["messages"][-1]["content"]
    if body["model"] != "judge":
        return f"my answer to: {text}"
    question = re.search(r"## Question\n(.*?)\n\n", text, re.S).group(1)
    grade = GRADES[question]
    tail = f"\n**GRADE: {grade}**" if grade else "\nI cannot decide."
    return f"The answer is mostly right.\nGRADE: X is not a grade{tail}"


def test_rubric_grades_and_rationales_are_kept(tmp_path, stub):
    server = stub(answer_then_grade)
    suite = tmp_path / "explain.yaml"
    suite.write_text(RUBRIC)
    cache = ResponseCache(tmp_path / "cache")
    result = run_suite(Suite.load(suite), Target(server.url, "m"), label="m", cache=cache)
    got = {c.id: (c.passed, c.label, c.grading["grade"]) for c in result.cases}
    assert got == {
        "good": (True, None, "C"),
        "partial": (False, "low_grade", "P"),
        "mute": (False, "no_grade", None),
        "own": (False, "low_grade", "I"),
    }
    good = result.cases[0]
    assert good.content == "my answer to: Why is the sky blue?"
    assert good.grading["rationale"] == "The answer is mostly right.\nGRADE: X is not a grade"
    assert result.summary == {
        "mode": "rubric", "scale": "cpi", "grades": {"C": 1, "P": 1, "I": 1}, "mean": 0.5
    }  # fmt: skip
    # every answer is asked before any grade: a one-model server loads the grader once
    models = [b["model"] for b in server.bodies]
    assert models == ["m"] * 4 + ["judge"] * 4
    grading = [b["messages"][0]["content"] for b in server.bodies[4:]]
    assert any("Says hi <politely>." in g for g in grading)  # the case's own rubric
    assert any("## Reference answer\nRayleigh scattering" in g for g in grading)
    # grader calls go through the cache like any answer: a rerun asks nothing
    again = run_suite(Suite.load(suite), Target(server.url, "m"), label="m", cache=cache)
    assert result.requests == 8  # four answers and four grades
    assert len(server.bodies) == 8 and again.requests == 0
    html = render([result], title="graded")
    assert 'grade <span class="grade">P</span>' in html and "The answer is mostly right." in html


PAIRWISE = """\
name: pair
kind: graded
grader: {model: judge}
rubric: "Helpful."
compare: [base, {model: other}]
cases:
  - {id: q1, prompt: "one"}
  - {id: q2, prompt: "two"}
  - {id: q3, prompt: "three"}
"""


def pairwise_server(stub, judge):
    def reply(body):
        text = body["messages"][-1]["content"]
        if body["model"] == "judge":
            first = re.search(r"## Answer 1\n(.*?)\n\n## Answer 2", text, re.S).group(1)
            second = re.search(r"## Answer 2\n(.*?)\n\nGive", text, re.S).group(1)
            return judge(first, second)
        return f"{body['model']} says {text}" + (" well" if body["model"] == "other" else "")

    return stub(reply)


def test_pairwise_asks_both_orders_and_a_position_bias_is_a_tie(tmp_path, stub):
    suite = tmp_path / "pair.yaml"
    suite.write_text(PAIRWISE)
    # a fair judge: it prefers the answer that says "well", wherever it stands (but ties q3)
    fair = pairwise_server(
        stub,
        lambda a, b: "PREFERENCE: tie" if "three" in a else
        "Reasons.\nPREFERENCE: " + ("1" if "well" in a else "2"),
    )  # fmt: skip
    result = run_suite(Suite.load(suite), Target(fair.url, "m"), label="m")
    assert [(c.id, c.passed, c.label) for c in result.cases] == [
        ("q1", True, None), ("q2", True, None), ("q3", False, "tie")
    ]  # fmt: skip
    s = result.summary
    assert (s["wins"], s["losses"], s["ties"], s["win_rate"]) == (2, 0, 1, 2.5 / 3)
    assert s["interval"] == pytest.approx(list(wilson(2.5, 3)))
    # each case was judged twice, the answers swapped between the two calls
    judged = [b["messages"][0]["content"] for b in fair.bodies if b["model"] == "judge"]
    q1 = [j for j in judged if "## Question\none" in j]
    assert len(q1) == 2
    a_first = {j.index("m says one") < j.index("other says one well") for j in q1}
    assert a_first == {True, False}  # (the two calls go out together: either may come first)
    calls = result.cases[0].grading["calls"]
    assert [(c["first"], c["preference"]) for c in calls] == [("A", "2"), ("B", "1")]
    assert calls[0]["rationale"] == "Reasons."

    # a judge that always prefers the first position wins nothing for either side
    biased = pairwise_server(stub, lambda a, b: "PREFERENCE: 1")
    result = run_suite(Suite.load(suite), Target(biased.url, "m"), label="m")
    assert {c.label for c in result.cases} == {"tie"}
    assert "position bias" in result.cases[0].reason
    assert result.summary["win_rate"] == 0.5 and result.summary["first_position_rate"] == 1.0
    html = render([result], title="pairwise")
    assert "win rate 50.0%" in html and "grader chose position 1 in 100%" in html


def test_grader_base_url_sends_grading_to_its_own_server(tmp_path, stub):
    model = stub(lambda body: "an answer")
    judge = stub(lambda body: "Fine.\nGRADE: C")
    suite = tmp_path / "explain.yaml"
    suite.write_text(RUBRIC)
    plan = EvalPlan(
        suites=(str(suite),), model="m", base_url=model.url, grader_base_url=judge.url,
        run_dir=tmp_path / "run", use_cache=False,
    )  # fmt: skip
    run = run_eval(plan)
    assert {b["model"] for b in model.bodies} == {"m"} and len(model.bodies) == 4
    assert {b["model"] for b in judge.bodies} == {"judge"} and len(judge.bodies) == 4
    assert run.results[0].score == 1.0


HEAD, CASES = "name: g\nkind: graded\ngrader: j\nrubric: r\n", "cases: [{id: a, prompt: p}]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: g\nkind: graded\ncases: [{id: a, prompt: p}]\n", "grader: missing"),
        ("name: g\nkind: graded\ngrader: j\ncases: [{id: a, prompt: p}]\n", "rubric: missing"),
        (HEAD + "scale: 1-10\n" + CASES, "scale: '1-10' is not one of cpi, 1-5"),
        (HEAD + "compare: [base]\n" + CASES, "compare: must be two variants"),
        (HEAD + "samples: 2\n" + CASES, "samples: graded suites run one episode per case"),
    ],
)  # fmt: skip
def test_bad_graded_suites_fail_on_load(tmp_path, text, message):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(EvalError, match=re.escape(message)):
        Suite.load(path)


def test_a_one_to_five_scale_passes_at_its_pass_grade(tmp_path, stub):
    server = stub(lambda b: "ok" if b["model"] != "judge" else "Good.\nGrade: 4\n\nGrade = 3")
    suite = tmp_path / "five.yaml"
    suite.write_text(
        "name: five\nkind: graded\ngrader: judge\nrubric: r\nscale: 1-5\npass_grade: 3\n"
        "cases: [{id: a, prompt: p}]\n"
    )
    result = run_suite(Suite.load(suite), Target(server.url, "m"), label="m")
    case = result.cases[0]
    assert (case.passed, case.grading["grade"], case.grading["rationale"]) == (
        True,
        "3",
        "Good.\nGrade: 4",
    )  # fmt: skip  (the last grade line counts)
    assert result.summary["grades"] == {"5": 0, "4": 0, "3": 1, "2": 0, "1": 0}


def test_graded_suites_are_not_scored_from_recorded_responses(tmp_path):
    from punie.eval.scoring import score_file

    suite = tmp_path / "explain.yaml"
    suite.write_text(RUBRIC)
    responses = tmp_path / "r.jsonl"
    responses.write_text('{"id": "good", "content": "blue"}\n')
    with pytest.raises(EvalError, match="a graded suite is scored by running it"):
        score_file(Suite.load(suite), responses)
