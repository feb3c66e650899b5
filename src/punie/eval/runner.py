"""Run a suite against a target and score every case: Suite + Target -> EvalResult.

Requests go out concurrently (bounded by `concurrency`, so a server's continuous batching is
used); each good reply is cached the moment it arrives. When requests fail (the server died, a
timeout), the run stops with one line that says how many answers were kept: the next run with the
same model, adapter, suite and sampling asks only for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from punie.errors import EvalError, PunieError, warn
from punie.eval.cache import ResponseCache, cache_key
from punie.eval.client import REQUEST_TIMEOUT_S, ChatClient, Reply, Target
from punie.eval.code import check_runner
from punie.eval.episode import run_episode
from punie.eval.graded import grade_pair, grade_rubric, grader_sampling, summarize, variant_target
from punie.eval.identity import Identity, identify
from punie.eval.sandbox import protections
from punie.eval.scoring import ScoredCase, mean_pass_at_k, score_case
from punie.eval.stats import wilson
from punie.eval.suite import Case, Suite
from punie.eval.verdict import Response, Verdict
from punie.fsio import write_json
from punie.sampling import DEFAULT_SAMPLING, Sampling


@dataclass(frozen=True)
class CaseResult:
    id: str
    category: str
    passed: bool
    label: str | None
    reason: str
    expected: dict
    content: str
    tool_calls: list[dict] | None
    latency_s: float | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    cached: bool = False  # the first sample came from the response cache
    n: int = 1  # samples asked
    c: int = 0  # samples that passed
    coverage: float | None = None  # code: the fraction of the first sample's tests passed
    transcript: list[dict] | None = None  # agent: every message of the episode, in order
    grading: dict | None = None  # graded: the grade or preferences, with the grader's rationale
    # With samples > 1, every sample in order (the first is the one above): content, tool_calls,
    # passed, label. `punie dataset pairs` needs them all; [] with one sample.
    samples: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class EvalResult:
    suite: str
    kind: str
    label: str  # what the report calls this model, e.g. "base" or "adapted"
    model: str
    adapter: str | None
    sampling: dict
    cases: tuple[CaseResult, ...]
    identity: dict = field(default_factory=dict)
    pass_at_k: dict = field(default_factory=dict)  # {"1": 0.4, "5": 0.7} when samples > 1
    base_url: str | None = None
    started: str | None = None
    wall_s: float | None = None
    metrics: str | None = None  # the adapter's training metrics.jsonl, for the loss curve
    sandbox: list[str] = field(default_factory=list)  # code suites: the protections that applied
    requested_model: str | None = None  # the id every request named (`model`, kept for clarity)
    answered_model: str | None = None  # the id the answers named (`a, b` if several); None: unsaid
    summary: dict = field(default_factory=dict)  # graded: grade counts, or a pairwise win rate
    sent: int | None = None  # requests sent (agent turns and grader calls included)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def score(self) -> float:
        return self.passed / len(self.cases) if self.cases else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.passed, len(self.cases))

    @property
    def requests(self) -> int:
        """Requests this run sent (the rest came from the cache)."""
        if self.sent is not None:
            return self.sent
        return sum(c.n for c in self.cases if not c.cached)

    def by_category(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for c in self.cases:
            p, n = out.get(c.category, (0, 0))
            out[c.category] = (p + c.passed, n + 1)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "score": self.score,
            "passed": self.passed,
            "total": len(self.cases),
        }

    def write(self, path: Path) -> Path:
        write_json(path, self.to_dict(), kind="results")
        return Path(path)

    @classmethod
    def read(cls, path: Path) -> EvalResult:
        """A results file; a case entry that is not a case result is skipped with a warning
        naming the file and the entry, so one damaged case does not hide the others."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EvalError(f"{path}: no such results file") from None
        except (OSError, ValueError, RecursionError) as e:
            raise EvalError(f"{path}: not a punie eval results file ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            raise EvalError(f"{path}: not a punie eval results file (no list of cases)")
        cases = []
        for i, c in enumerate(data["cases"]):
            problem = _case_problem(c)
            if problem:
                warn(f"{path}: cases[{i}]: skipped: {problem}")
                continue
            if c.get("latency_s") is not None and not _is_rate(c["latency_s"]):
                warn(f"{path}: cases[{i}]: latency_s: {c['latency_s']!r} is not a number; left out")
                c = {**c, "latency_s": None}
            cases.append(CaseResult(**{k: v for k, v in c.items() if k in _CASE_FIELDS}))
        if data["cases"] and not cases:
            raise EvalError(f"{path}: not one of its {len(data['cases'])} cases is readable")
        pass_at_k = data.get("pass_at_k") or {}
        if not isinstance(pass_at_k, dict) or not all(map(_is_rate, pass_at_k.values())):
            warn(f"{path}: pass_at_k: {pass_at_k!r} is not a map of rates; left out")
            pass_at_k = {}
        names = set(cls.__dataclass_fields__) - {"cases", "pass_at_k"}
        try:
            return cls(
                **{k: v for k, v in data.items() if k in names},
                cases=tuple(cases),
                pass_at_k=pass_at_k,
            )
        except TypeError as e:
            raise EvalError(f"{path}: not a punie eval results file ({e})") from None


_CASE_FIELDS = set(CaseResult.__dataclass_fields__)
_CASE_REQUIRED = {
    name
    for name, f in CaseResult.__dataclass_fields__.items()
    if f.default is MISSING and f.default_factory is MISSING
}


def _case_problem(c: Any) -> str | None:
    """What makes `c` unusable as a case result, or None."""
    if not isinstance(c, dict):
        return "not a JSON object"
    missing = sorted(_CASE_REQUIRED - set(c))
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(c["passed"], bool):
        return f"passed: {c['passed']!r} is not true or false"
    if not isinstance(c["id"], str | int) or not isinstance(c["category"], str):
        return "id and category must be text"
    if not isinstance(c["content"], str | None) or not isinstance(c["tool_calls"], list | None):
        return "content must be text and tool_calls a list"
    if not isinstance(c.get("transcript"), list | None):
        return "transcript must be a list of messages"
    if not isinstance(c.get("grading"), dict | None):
        return "grading must be a JSON object"
    for key in ("n", "c"):
        if key in c and (not isinstance(c[key], int) or isinstance(c[key], bool)):
            return f"{key}: {c[key]!r} is not a whole number"
    samples = c.get("samples", [])
    if not isinstance(samples, list) or not all(_is_sample(s) for s in samples):
        return "samples: not a list of {content, tool_calls, passed} objects"
    return None


def _is_sample(s: Any) -> bool:
    return (
        isinstance(s, dict)
        and isinstance(s.get("passed"), bool)
        and isinstance(s.get("content"), str | None)
        and isinstance(s.get("tool_calls"), list | None)
    )


def _is_rate(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def case_result(
    case: Case,
    scored: ScoredCase,
    first: Reply,
    cached: bool,
    replies: list[Reply] | None = None,
    **more: Any,
) -> CaseResult:
    samples = []
    if replies and len(replies) > 1:
        samples = [
            {"content": r.content, "tool_calls": r.tool_calls, "passed": v.passed, "label": v.label}
            for r, v in zip(replies, scored.verdicts, strict=True)
        ]
    return CaseResult(
        id=case.id,
        category=case.category,
        passed=scored.passed,
        label=scored.label,
        reason=scored.reason,
        expected=case.expect,
        content=first.content,
        tool_calls=first.tool_calls,
        latency_s=round(first.latency_s, 4),
        completion_tokens=first.completion_tokens,
        prompt_tokens=first.prompt_tokens,
        cached=cached,
        n=len(scored.verdicts),
        c=scored.correct,
        coverage=scored.coverage,
        samples=samples,
        **more,
    )


def _scored(case: Case, verdict: Verdict) -> ScoredCase:
    return ScoredCase(case.id, case.category, verdict.passed, verdict.label, verdict.reason,
                      (verdict,))  # fmt: skip


async def _agent_case(suite: Suite, case: Case, ask) -> CaseResult:
    episode = await run_episode(suite, case, ask)
    final = episode.final
    total = replace(
        final,
        latency_s=sum(r.latency_s for r in episode.replies),
        completion_tokens=_sum(r.completion_tokens for r in episode.replies),
        prompt_tokens=_sum(r.prompt_tokens for r in episode.replies),
    )
    verdict = episode.verdict(suite, case)
    return case_result(
        case, _scored(case, verdict), total, episode.cached, transcript=list(episode.transcript)
    )


async def _graded(suite: Suite, target: Target, grader: Target | None, asker, sampling, on_case):
    """Every answer first, then every grading call: a server that holds one model at a time
    (mlx_lm.server) then loads the grader once, not once per case."""
    spec = suite.grading
    grader = grader or replace(spec.grader, base_url=target.base_url, api_key=target.api_key)
    grade = asker(grader, grader_sampling(sampling), tools=(), track=False)
    local = Path(target.model).expanduser().is_dir()  # a managed server wants absolute paths
    if spec.compare:
        variants = [variant_target(v, target, spec.folder, local) for v in spec.compare]
    else:
        variants = [target]
    asks = [asker(v, track=v == target) for v in variants]
    cases = list(suite.cases)
    answers = await asyncio.gather(
        *(ask(suite.messages_for(c)) for c in cases for ask in asks), return_exceptions=True
    )
    failed = [a for a in answers if isinstance(a, BaseException)]
    if failed:
        return failed

    async def one(i: int, case: Case) -> CaseResult:
        messages = suite.messages_for(case)
        mine = answers[i * len(asks) : (i + 1) * len(asks)]
        if spec.compare:
            graded = await grade_pair(case, messages, mine[0], mine[1], spec, grade)
        else:
            graded = await grade_rubric(case, messages, mine[0], spec, grade)
        result = case_result(
            case, _scored(case, graded.verdict), graded.reply, graded.cached, grading=graded.grading
        )
        if on_case:
            on_case(result)
        return result

    return await asyncio.gather(*(one(i, c) for i, c in enumerate(cases)), return_exceptions=True)


def _sum(values) -> int | None:
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def _reply(data: dict) -> Reply:
    return Reply(**{k: data.get(k) for k in Reply.__dataclass_fields__ if k != "raw"})


def _key_sampling(who: Target, how: Sampling) -> dict:
    """The sampling part of a cache key: a constrained server answers differently, so its
    replies are cached apart (unconstrained keys are unchanged)."""
    return how.as_dict() | ({"constrain": who.constrain} if who.constrain else {})


async def _run(
    suite: Suite,
    target: Target,
    sampling: Sampling,
    concurrency: int,
    cache: ResponseCache,
    identity: Identity,
    on_case,
    request_timeout: float,
    grader: Target | None = None,
    sent: list[int] | None = None,
) -> tuple[list[CaseResult], list[BaseException], set[str]]:
    answered: set[str] = set()  # the `model` of every answer, cached ones included
    async with contextlib.AsyncExitStack() as stack:
        clients: dict[Target, ChatClient] = {}

        def asker(who: Target, how: Sampling = sampling, tools=suite.tools, track: bool = True):
            """`ask(messages, sample)` for one target: cached, and (`track`) its answering
            model recorded; the grader's and pairwise variants' answers go through here too."""
            ident = identity if who == target else identify(who.model, who.adapter)

            async def ask(messages: list[dict], s: int = 0, tools=tools) -> tuple[Reply, bool]:
                key = cache_key(ident, messages, tools, _key_sampling(who, how), s)
                hit = cache.get(key)
                if hit is not None:
                    reply = _reply(hit)
                    if reply.model and track:
                        answered.add(reply.model)
                    return reply, True
                if who not in clients:
                    client = ChatClient(who, concurrency=concurrency, timeout=request_timeout)
                    clients[who] = await stack.enter_async_context(client)
                reply = await clients[who].chat(messages, tools, how)
                if sent is not None:
                    sent[0] += 1
                if reply.model in (None, who.model):
                    # the key names the requested model: another model's answer is never kept
                    cache.put(key, reply.as_dict())
                if reply.model and track:
                    answered.add(reply.model)
                return reply, False

            return ask

        sample = asker(target)

        if suite.kind == "graded":
            outcomes = await _graded(suite, target, grader, asker, sampling, on_case)
            done = [o for o in outcomes if isinstance(o, CaseResult)]
            return done, [o for o in outcomes if not isinstance(o, CaseResult)], answered

        async def one(case: Case) -> CaseResult:
            if suite.kind == "agent":
                result = await _agent_case(suite, case, asker(target, tools=suite.tools_for(case)))
                if on_case:
                    on_case(result)
                return result
            messages = suite.messages_for(case)
            tools = suite.tools_for(case)
            got = await asyncio.gather(*(sample(messages, s, tools) for s in range(suite.samples)))
            responses = [
                Response(case.id, r.content, r.tool_calls, r.finish_reason, s)
                for s, (r, _) in enumerate(got)
            ]
            if suite.kind == "code":  # a sandboxed subprocess: off the loop, requests keep flowing
                scored = await asyncio.to_thread(score_case, suite, case, responses)
            else:
                scored = score_case(suite, case, responses)
            result = case_result(case, scored, got[0][0], got[0][1], [r for r, _ in got])
            if on_case:
                on_case(result)
            return result

        outcomes = await asyncio.gather(*(one(c) for c in suite.cases), return_exceptions=True)
    done = [o for o in outcomes if isinstance(o, CaseResult)]
    failed = [o for o in outcomes if not isinstance(o, CaseResult)]
    return done, failed, answered


def fully_cached(suite: Suite, target: Target, sampling: Sampling, cache: ResponseCache) -> bool:
    """Whether the cache holds every answer `run_suite` would ask `target` for: then no server
    needs to run at all. An agent suite's later turns and a graded suite's grader calls depend
    on answers not yet seen, so those suites always count as not cached."""
    if cache.folder is None or suite.kind in ("agent", "graded"):
        return False
    identity = identify(target.model, target.adapter)
    how = _key_sampling(target, sampling)
    return all(
        cache.get(cache_key(identity, suite.messages_for(case), suite.tools_for(case), how, s))
        is not None
        for case in suite.cases
        for s in range(suite.samples)
    )


def _explain(server_status: Callable[[], str | None] | None, grace: float = 2.0) -> str | None:
    """How the server ended, if it did, waiting up to `grace` seconds to find out.

    A killed process closes its sockets a moment before it can be reaped, so the failed
    request is often seen first; on a loaded machine that moment is long enough to miss.
    """
    if server_status is None:
        return None
    deadline = time.monotonic() + grace
    while (why := server_status()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return why


def run_suite(
    suite: Suite,
    target: Target,
    *,
    label: str,
    sampling: Sampling = DEFAULT_SAMPLING,
    concurrency: int = 4,
    on_case: Callable[[CaseResult], None] | None = None,
    cache: ResponseCache | None = None,
    metrics: Path | None = None,
    server_status: Callable[[], str | None] | None = None,
    request_timeout: float = REQUEST_TIMEOUT_S,
    grader: Target | None = None,
) -> EvalResult:
    """Ask `target` every case of `suite` (at most `concurrency` at once) and score the answers.

    `server_status` (e.g. `Server.status`) explains a failure: "mlx_lm.server exited with -9".
    A request with no full answer within `request_timeout` seconds fails the run. `grader`
    answers a graded suite's grading requests (default: the suite's grader on `target`'s server).
    """
    if suite.kind == "code" and suite.runner:
        check_runner(suite.runner, suite.limits)  # before any request: a runner it cannot start
    cache = cache if cache is not None else ResponseCache(None)
    identity = identify(target.model, target.adapter)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    sent = [0]
    done, failed, answered = asyncio.run(
        _run(
            suite,
            target,
            sampling,
            concurrency,
            cache,
            identity,
            on_case,
            request_timeout,
            grader,
            sent,
        )
    )
    if failed:
        first = failed[0]
        if not isinstance(first, PunieError):
            raise first
        why = _explain(server_status) or str(first)
        kept = f"{len(done)} answered cases kept in the cache" if cache.folder else "no cache"
        resume = "; run again to resume" if cache.folder else ""
        raise EvalError(
            f"{suite.name}: {len(failed)} of {len(suite.cases)} cases got no answer ({why}); "
            f"{kept}{resume}"
        )
    order = {c.id: i for i, c in enumerate(suite.cases)}
    done.sort(key=lambda r: order[r.id])
    pass_k = {}
    if suite.samples > 1:
        counts = [(r.n, r.c) for r in done]
        pass_k = {str(k): round(mean_pass_at_k(counts, k), 6) for k in suite.k}
    return EvalResult(
        suite=suite.name,
        kind=suite.kind,
        label=label,
        model=target.model,
        adapter=target.adapter,
        sampling=sampling.as_dict(),
        cases=tuple(done),
        identity=identity.as_dict(),
        pass_at_k=pass_k,
        base_url=target.base_url or None,  # "": answered from the cache, no server asked
        started=started,
        wall_s=round(time.perf_counter() - t0, 3),
        metrics=str(metrics) if metrics else None,
        sandbox=protections() if suite.kind == "code" else [],
        requested_model=target.model,
        answered_model=", ".join(sorted(answered)) or None,
        summary=summarize(suite.grading, [c.grading for c in done]) if suite.grading else {},
        sent=sent[0],
    )
