"""Parallel tool-call matching: Punie's bipartite matcher vs the alternatives a user would have.

One response of n parallel calls, given in reverse order, scored against n expected calls, with
the last call wrong (the worst case for a search: no pairing exists) and all right. Three
matchers, each on exactly the same input:

- `punie`: `punie.eval.toolcalls.score_tool_calls` (maximum bipartite matching);
- `greedy`: BFCL's rule (each expected call takes the first unused call that fits), which is
  fast but can miss a valid pairing;
- `permutations`: Punie's matcher before issue 15, which tried every order (n!; skipped past
  `--max-permute` calls, where it takes seconds to hours).

Rounds alternate the order in which the matchers run. Each cell is the median over rounds of one
scoring's wall time, with the spread (min-max) and the CPU time per scoring (the process's own;
a steady state, after one warm-up scoring, since nothing is cached between scorings).

    .venv/bin/python benchmarks/matcher.py [--sizes 2 5 8 10 20] [--rounds 5] [--max-permute 8]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

from rich.console import Console
from rich.table import Table

from punie.chat.toolcalls import parse_calls
from punie.eval.toolcalls import match_call, score_tool_calls

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["path"],
            },
        },
    }
]


def case(n: int, last_wrong: bool) -> tuple[str, dict]:
    expected = [
        {"name": "read_file", "arguments": {"path": [f"f{i}.py"], "limit": [i]}} for i in range(n)
    ]
    calls = [{"path": f"f{i}.py", "limit": i} for i in reversed(range(n))]
    if last_wrong:
        calls[-1]["limit"] = -1
    text = "".join(
        f"<tool_call>{json.dumps({'name': 'read_file', 'arguments': c})}</tool_call>" for c in calls
    )
    return text, {"calls": expected}


def punie(text: str, expect: dict) -> bool:
    return score_tool_calls(text, None, expect, TOOLS).passed


def greedy(text: str, expect: dict) -> bool:
    calls, used = parse_calls(text), set()
    for want in expect["calls"]:
        j = next(
            (j for j, c in enumerate(calls) if j not in used and match_call(c, want).passed), None
        )
        if j is None:
            return False
        used.add(j)
    return len(used) == len(calls)


def permutations(text: str, expect: dict) -> bool:
    calls, expected = parse_calls(text), expect["calls"]
    return any(
        all(match_call(calls[j], expected[i]).passed for i, j in enumerate(perm))
        for perm in itertools.permutations(range(len(calls)))
    )


MATCHERS = {"punie": punie, "greedy": greedy, "permutations": permutations}


def timed(fn, text: str, expect: dict) -> tuple[float, float, bool]:
    wall, cpu = time.perf_counter(), time.process_time()
    verdict = fn(text, expect)
    return time.perf_counter() - wall, time.process_time() - cpu, verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 8, 10, 20])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-permute", type=int, default=8)
    args = ap.parse_args()
    table = Table("calls", "last call", "matcher", "verdict", "wall ms (median)", "min-max ms")
    table.add_column("CPU ms (median)")
    for n in args.sizes:
        for last_wrong in (True, False):
            text, expect = case(n, last_wrong)
            names = [m for m in MATCHERS if m != "permutations" or n <= args.max_permute]
            for m in names:
                MATCHERS[m](text, expect)  # warm-up
            runs: dict[str, list[tuple[float, float, bool]]] = {m: [] for m in names}
            for r in range(args.rounds):
                for m in names if r % 2 == 0 else reversed(names):
                    runs[m].append(timed(MATCHERS[m], text, expect))
            for m in MATCHERS:
                if m not in runs:
                    last = "wrong" if last_wrong else "right"
                    table.add_row(str(n), last, m, f"skipped (> {args.max_permute} calls)")
                    continue
                walls = [1000 * w for w, _, _ in runs[m]]
                cpus = [1000 * c for _, c, _ in runs[m]]
                table.add_row(
                    str(n),
                    "wrong" if last_wrong else "right",
                    m,
                    "pass" if runs[m][0][2] else "fail",
                    f"{statistics.median(walls):.2f}",
                    f"{min(walls):.2f}-{max(walls):.2f}",
                    f"{statistics.median(cpus):.2f}",
                )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
