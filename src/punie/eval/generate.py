"""`punie generate`: sample responses for suite cases or prompt rows, with provenance, resumably.

Each request is a prompt (messages and tools) with an id: a suite's cases (the request the eval
sends; each sample is scored by the suite's scorer as it arrives) or the rows of a JSONL file
(`messages`, whose trailing assistant turn is dropped, or a `prompt` string). Requests go out
concurrently through the eval's client and response cache, so a rerun asks only for what is
missing; every finished sample is appended at once to `OUT.partial`, which a rerun after an
interruption continues from, and the whole file is renamed onto `OUT` only when every sample is
in. Rows are in the responses format `punie eval score` reads (`id`, `sample`, `content`,
`tool_calls`, `finish_reason`), plus the request (`messages`, `tools`) and `provenance`: the
model that answered, by the server's word, the one asked for, its content hashes, the sampling
settings and the time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from punie.errors import EvalError, PunieError
from punie.eval.cache import ResponseCache, cache_key
from punie.eval.client import REQUEST_TIMEOUT_S, ChatClient, Reply, Target
from punie.eval.identity import identify
from punie.eval.scoring import SCORERS, score
from punie.eval.suite import Case, Suite
from punie.eval.verdict import Response
from punie.fsio import atomic_file, check_file_replaceable, read_jsonl, read_jsonl_tolerant
from punie.sampling import DEFAULT_SAMPLING, Sampling


@dataclass(frozen=True)
class Request:
    id: str
    messages: tuple[dict, ...]
    tools: tuple[dict, ...] = ()
    case: Case | None = None  # set when the request is a suite's case: its answers are scored


@dataclass(frozen=True)
class Prompts:
    """What to ask: the requests, and the suite they came from (None for prompt rows)."""

    requests: tuple[Request, ...]
    suite: Suite | None = None


@dataclass(frozen=True)
class Generated:
    out: Path
    rows: int
    requested: int  # samples asked of the model by this run (the rest: cache or partial file)
    resumed: int  # samples taken over from an interrupted run's partial file
    passed: int | None  # scored samples that passed (None: prompt rows, nothing to score)
    answered_model: str | None
    wall_s: float
    counts: dict = field(default_factory=dict)


def _with_system(messages: list[dict], system: str | None) -> list[dict]:
    if system is None:
        return messages
    rest = [m for m in messages if m.get("role") != "system"]
    return [{"role": "system", "content": system}, *rest]


def suite_prompts(suite: Suite, system: str | None = None) -> Prompts:
    if suite.kind not in SCORERS:
        raise EvalError(
            f"{suite.path}: a {suite.kind} suite is answered over several turns or graded "
            "(`punie eval run`), not by single sampled responses"
        )
    requests = tuple(
        Request(
            case.id,
            tuple(_with_system(suite.messages_for(case), system)),
            suite.tools_for(case),
            case,
        )
        for case in suite.cases
    )
    return Prompts(requests, suite)


def row_prompts(path: Path, system: str | None = None) -> Prompts:
    """Prompt rows: `messages` (a trailing assistant turn is the old answer, dropped) or a
    `prompt` string; `tools` rides along; `id` names the row, else `line-N`."""
    requests, seen = [], set()
    for n, row in read_jsonl(path):
        if isinstance(row.get("messages"), list):
            messages = [m for m in row["messages"] if isinstance(m, dict)]
            while messages and messages[-1].get("role") == "assistant":
                messages.pop()
        elif isinstance(row.get("prompt"), str):
            messages = [{"role": "user", "content": row["prompt"]}]
        else:
            raise EvalError(f"{path}:{n}: messages: missing (or a `prompt` string)")
        if not any(m.get("role") == "user" for m in messages):
            raise EvalError(f"{path}:{n}: messages: no user turn to answer")
        tools = row.get("tools") or ()
        if not isinstance(tools, list | tuple):
            raise EvalError(f"{path}:{n}: tools: must be a list of OpenAI tools")
        rid = str(row.get("id", f"line-{n}"))
        if rid in seen:
            raise EvalError(f"{path}:{n}: id: {rid!r} is used by an earlier row")
        seen.add(rid)
        requests.append(Request(rid, tuple(_with_system(messages, system)), tuple(tools)))
    if not requests:
        raise EvalError(f"{path}: no prompt rows")
    return Prompts(tuple(requests))


def load_prompts(source: Path | str, system: str | None = None) -> Prompts:
    """A suite (YAML file or built-in name) or a JSONL file of prompt rows."""
    if str(source).endswith(".jsonl"):
        return row_prompts(Path(source), system)
    return suite_prompts(Suite.load(source), system)


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _provenance(reply: Reply, target: Target, identity: dict, sampling: Sampling) -> dict:
    return {
        "model": reply.model,  # who answered, by the server's word
        "requested_model": target.model,
        "adapter": target.adapter,
        "base_url": target.base_url,
        "identity": identity,
        "sampling": sampling.as_dict(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def response_row(
    request: Request, sample: int, reply: Reply, provenance: dict, cached: bool
) -> dict:
    row = {
        "id": request.id,
        "sample": sample,
        "provenance": provenance,  # early in the line: it marks the file as Punie's
        "content": reply.content,
        "tool_calls": reply.tool_calls,
        "finish_reason": reply.finish_reason,
        "messages": list(request.messages),
    }
    if request.tools:
        row["tools"] = list(request.tools)
    row.update(
        latency_s=round(reply.latency_s, 4),
        completion_tokens=reply.completion_tokens,
        cached=cached,
    )
    return row


def _scored(row: dict, suite: Suite, case: Case) -> dict:
    verdict = score(suite, case, Response.from_dict(row))
    return {**row, "suite": suite.name, "passed": verdict.passed, "label": verdict.label}


def _same_settings(row: dict, key: dict) -> bool:
    p = row.get("provenance") or {}
    return all(p.get(k) == v for k, v in key.items())


def _resumable(partial: Path, key: dict, wanted: set[tuple[str, int]]) -> dict:
    """The rows of an interrupted run with the same model, adapter and sampling, by (id, sample);
    a line cut short by the kill is skipped."""
    if not partial.is_file():
        return {}
    check_file_replaceable(partial, "responses")
    out = {}
    for row in read_jsonl_tolerant(partial):
        k = (str(row.get("id")), row.get("sample"))
        if k in wanted and _same_settings(row, key):
            out[k] = row
    return out


async def _generate(
    prompts: Prompts,
    target: Target,
    *,
    numbers: range,
    sampling: Sampling,
    concurrency: int,
    cache: ResponseCache,
    request_timeout: float,
    done: dict,
    partial,
    on_row: Callable[[dict], None] | None,
) -> tuple[list[dict], list[BaseException], int]:
    identity = identify(target.model, target.adapter)
    asked = 0
    suite = prompts.suite

    async with ChatClient(target, concurrency=concurrency, timeout=request_timeout) as client:

        async def one(request: Request, s: int) -> dict:
            nonlocal asked
            messages = list(request.messages)
            key = cache_key(identity, messages, request.tools, sampling.as_dict(), s)
            hit = cache.get(key)
            if hit is not None:
                fields = Reply.__dataclass_fields__
                reply = Reply(**{k: hit.get(k) for k in fields if k != "raw"})
                cached = True
            else:
                asked += 1
                reply, cached = await client.chat(messages, request.tools, sampling), False
                if reply.model in (None, target.model):
                    cache.put(key, reply.as_dict())
            provenance = _provenance(reply, target, identity.as_dict(), sampling)
            row = response_row(request, s, reply, provenance, cached)
            if suite is not None and request.case is not None:
                if suite.kind == "code":  # a sandboxed subprocess: off the loop
                    row = await asyncio.to_thread(_scored, row, suite, request.case)
                else:
                    row = _scored(row, suite, request.case)
            partial.write(json.dumps(row, ensure_ascii=False) + "\n")
            partial.flush()  # a kill after this line keeps the sample
            if on_row:
                on_row(row)
            return row

        jobs = [one(r, s) for r in prompts.requests for s in numbers if (r.id, s) not in done]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    rows = [o for o in outcomes if isinstance(o, dict)]
    failed = [o for o in outcomes if not isinstance(o, dict)]
    return rows, failed, asked


def generate(
    prompts: Prompts,
    target: Target,
    out: Path | str,
    *,
    samples: int = 1,
    sampling: Sampling = DEFAULT_SAMPLING,
    concurrency: int = 4,
    cache: ResponseCache | None = None,
    request_timeout: float = REQUEST_TIMEOUT_S,
    on_row: Callable[[dict], None] | None = None,
    first_sample: int = 0,
) -> Generated:
    """Ask `target` for `samples` responses to every request of `prompts`; write them to `out`.

    Samples are numbered from `first_sample` (the cache keys on the number): a caller that asks
    the same model again for fresh samples (the loop, each iteration) starts past the last ones.

    An `out.partial` left by an interrupted run with the same model, adapter and sampling is
    continued; a request that fails stops the run with one line, keeping every sample so far."""
    if samples < 1:
        raise EvalError(f"--samples: must be 1 or more, got {samples}")
    if samples > 1 and sampling.temperature == 0:
        raise EvalError("--samples: several samples at temperature 0 are all the same answer")
    out = Path(out)
    check_file_replaceable(out, "responses")
    partial = partial_path(out)
    key = {
        "requested_model": target.model,
        "adapter": target.adapter,
        "sampling": sampling.as_dict(),
    }  # not the URL: a managed server gets a new port each run
    numbers = range(first_sample, first_sample + samples)
    wanted = {(r.id, s) for r in prompts.requests for s in numbers}
    done = _resumable(partial, key, wanted)
    cache = cache if cache is not None else ResponseCache(None)
    t0 = datetime.now(UTC)
    partial.parent.mkdir(parents=True, exist_ok=True)
    # Rewrite the partial file with only the rows it keeps, so its lines are all of this run.
    with atomic_file(partial) as f:
        for row in done.values():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(partial, "a", encoding="utf-8") as f:
        rows, failed, asked = asyncio.run(
            _generate(
                prompts,
                target,
                numbers=numbers,
                sampling=sampling,
                concurrency=concurrency,
                cache=cache,
                request_timeout=request_timeout,
                done=done,
                partial=f,
                on_row=on_row,
            )
        )
    if failed:
        first = failed[0]
        if not isinstance(first, PunieError):
            raise first
        kept = len(done) + len(rows)
        raise EvalError(
            f"{out}: {len(failed)} of {len(wanted)} samples got no answer ({first}); "
            f"{kept} kept in {partial}; run again to continue"
        )
    by_key = {**done, **{(r["id"], r["sample"]): r for r in rows}}
    ordered = [by_key[(r.id, s)] for r in prompts.requests for s in numbers]
    with atomic_file(out, kind="responses") as f:
        for row in ordered:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.unlink(missing_ok=True)
    scored = [r for r in ordered if "passed" in r]
    answered = sorted({r["provenance"]["model"] for r in ordered if r["provenance"]["model"]})
    return Generated(
        out=out,
        rows=len(ordered),
        requested=asked,
        resumed=len(done),
        passed=sum(r["passed"] for r in scored) if scored else None,
        answered_model=", ".join(answered) or None,
        wall_s=round((datetime.now(UTC) - t0).total_seconds(), 3),
        counts={"requests": len(prompts.requests), "samples": samples},
    )
