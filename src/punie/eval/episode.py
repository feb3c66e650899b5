"""One agent episode: the model replies, its calls are executed and their results appended as
`tool` messages, and it replies again, until it answers without a call or has replied
`max_turns` times.

Every request goes through the runner's `ask` (so through the response cache: an unchanged rerun
replays the episode from the cache, the environment included, as it is deterministic). The
transcript keeps every message in order, each tool result marked when it was an error.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from punie.chat.toolcalls import Call, Malformed, parse_calls
from punie.eval.agent import score_episode
from punie.eval.client import Reply
from punie.eval.environment import Executed, ToolResult, mock_results, run_environment
from punie.eval.suite import Case, Suite
from punie.eval.verdict import Verdict

Ask = Callable[[list[dict]], Awaitable[tuple[Reply, bool]]]

_BLOCK = re.compile(r"<tool_call>.*?(?:</tool_call>|$)", re.S)


@dataclass(frozen=True)
class Episode:
    transcript: tuple[dict, ...]  # every message, the suite's system prompt first
    calls: tuple[Call, ...]  # every call the model made, in order
    tool_errors: tuple[str, ...]  # the error results the model was given
    ended: bool  # it answered without a call (False: it ran out of turns)
    state: dict | None  # the environment's final state (None: mocks, or unknown)
    state_failure: str | None  # why the state is unknown, when the environment failed
    replies: tuple[Reply, ...]
    cached: bool  # every reply came from the cache

    @property
    def final(self) -> Reply:
        return self.replies[-1]

    def verdict(self, suite: Suite, case: Case) -> Verdict:
        return score_episode(
            ended=self.ended,
            replies=len(self.replies),
            calls=list(self.calls),
            tool_errors=list(self.tool_errors),
            state=self.state,
            state_failure=self.state_failure,
            final_text=self.final.content,
            expect=case.expect,
            tools=suite.tools_for(case),
            scorer=suite.scorer,
            tolerance=suite.tolerance,
            strings=suite.strings,
        )


def _assistant(reply: Reply, calls: list[Call], turn: int) -> dict:
    """The reply as the next request's assistant message, its calls in OpenAI's shape."""
    if not calls:
        return {"role": "assistant", "content": reply.content}
    # Calls read from the text go into tool_calls; the blocks would show twice otherwise.
    content = reply.content if reply.tool_calls else _BLOCK.sub("", reply.content).strip()
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {
                "id": f"call_{turn}_{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for i, c in enumerate(calls)
        ],
    }


async def run_episode(suite: Suite, case: Case, ask: Ask) -> Episode:
    messages = suite.messages_for(case)
    transcript = [dict(m) for m in messages]
    made: list[Call] = []
    results: list[ToolResult] = []  # one per call in `made`, for the environment's replay
    errors: list[str] = []
    replies: list[Reply] = []
    cached_all, ended, state, failure = True, False, None, None
    tool_names = [t.get("function", t)["name"] for t in suite.tools_for(case)]
    for turn in range(suite.max_turns):
        reply, cached = await ask(messages)
        replies.append(reply)
        cached_all = cached_all and cached
        try:
            calls = parse_calls(reply.content, reply.tool_calls)
            problem = None
            if not calls and reply.finish_reason == "tool_calls":
                problem = "the server saw a tool call it could not parse"
        except Malformed as e:
            calls, problem = [], str(e)
        message = _assistant(reply, calls, turn)
        messages.append(message)
        transcript.append({**message, "cached": cached})
        if problem:  # the model meant to call: tell it, as a tool would
            note = {"role": "tool", "content": f"error: {problem}"}
            messages.append(note)
            transcript.append({**note, "error": True})
            errors.append(note["content"])
            continue
        if not calls:
            ended = True
            break
        executed = await _execute(suite, case, tool_names, made, results, calls)
        state, failure = executed.state, executed.failure
        for i, (call, result) in enumerate(zip(calls, executed.results, strict=True)):
            note = {
                "role": "tool",
                "tool_call_id": f"call_{turn}_{i}",
                "name": call.name,
                "content": result.content,
            }
            messages.append(note)
            transcript.append({**note, "error": result.error})
        made += calls
        results += executed.results
        errors += [r.content for r in executed.results if r.error]
    if suite.environment and not made:
        executed = await _execute(suite, case, tool_names, [], [], [])
        state, failure = executed.state, executed.failure
    return Episode(
        transcript=tuple(transcript),
        calls=tuple(made),
        tool_errors=tuple(errors),
        ended=ended,
        state=state,
        state_failure=failure,
        replies=tuple(replies),
        cached=cached_all,
    )


async def _execute(
    suite: Suite,
    case: Case,
    tool_names: list[str],
    done: list[Call],
    earlier: list[ToolResult],
    new: list[Call],
) -> Executed:
    if suite.environment is None:
        return mock_results(new, case.mocks)
    return await asyncio.to_thread(
        run_environment,
        suite.environment,
        case.state or {},
        tool_names,
        done,
        earlier,
        new,
        suite.limits,
    )
