"""`python -m punie.serve.backend [mlx_lm.server args] [--constrain tools]`: mlx_lm.server, with
constrained decoding (`punie.serve.constrain`) for the requests that ask for it.

Without `--constrain` this is `mlx_lm.server` itself. With `--constrain tools`, a chat request
that carries `tools` (and a `tool_choice` other than "none") or a JSON `response_format` gets a
grammar logits processor beside mlx_lm's own; every other request is served exactly as
mlx_lm.server serves it. The hook is two seams of mlx_lm's server, not a fork:

- `ConstrainedHandler` (an `APIHandler` subclass) reads the body, refuses what cannot be
  constrained with a 400 in OpenAI's error shape, and marks the request's logits arguments;
- `_make_logits_processors`, the one function both of mlx_lm's generation paths (batched and
  single) call per request, gets the grammar processor appended for marked requests.

The server's default model and tokenizer are loaded before the first request, so a request is
checked against the tokenizer that will serve it (mlx_lm serves one model at a time).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any

from mlx_lm import server as mlx_server

from punie.serve.constrain import Constraint, ConstraintError, check, processor
from punie.serve.server import CONSTRAIN_CHOICES


@dataclass
class ConstrainedLogits(mlx_server.LogitsProcessorArguments):
    """mlx_lm's per-request logits arguments, plus the constraint and who holds the tokenizer."""

    constraint: Constraint | None = None
    provider: Any = None


class _Blocked:
    """The fallback when a processor cannot be built in the generation thread (which must not
    raise): the reply ends at once, and the log says why."""

    def __init__(self, eos: list[int]):
        self.eos = eos

    def __call__(self, tokens, logits):
        import mlx.core as mx

        keep = mx.zeros(logits.shape[-1], dtype=mx.bool_)
        keep[mx.array(self.eos)] = True
        return mx.where(keep, logits, -float("inf"))


_upstream_processors = mlx_server._make_logits_processors


def make_logits_processors(args):
    """mlx_lm's processors for `args`, and the grammar processor when the request is marked."""
    processors = _upstream_processors(args)
    marked = args.logits
    if isinstance(marked, ConstrainedLogits) and marked.constraint is not None:
        tokenizer = marked.provider.tokenizer
        try:
            processors.append(processor(marked.constraint, tokenizer))
        except Exception as e:
            logging.error("punie: no constrained decoding for this request: %s", e)
            processors.append(_Blocked(sorted(tokenizer.eos_token_ids)))
    return processors


class _Marking:
    """The response generator as the handler sees it, with each request's logits marked."""

    def __init__(self, inner, constraint: Constraint):
        self._inner = inner
        self._constraint = constraint

    def generate(self, request, args, progress_callback=None):
        logits = ConstrainedLogits(
            **asdict(args.logits),
            constraint=self._constraint,
            provider=self._inner.model_provider,
        )
        return self._inner.generate(request, replace(args, logits=logits), progress_callback)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class ConstrainedHandler(mlx_server.APIHandler):
    def handle_completion(self, request, stop_words):
        body = self.body if request.request_type == "chat" else _without_tools(self.body)
        try:
            constraint = Constraint.from_request(body)
            if constraint.active:
                check(constraint)
                tokenizer = self.response_generator.model_provider.tokenizer
                if tokenizer is not None:
                    processor(constraint, tokenizer)  # the model's tool-call format, now
        except ConstraintError as e:
            return self._refuse(str(e))
        if not constraint.active:
            return super().handle_completion(request, stop_words)
        generator = self.response_generator
        self.response_generator = _Marking(generator, constraint)
        try:
            return super().handle_completion(request, stop_words)
        finally:
            self.response_generator = generator

    def _refuse(self, message: str) -> None:
        field = message.split(":", 1)[0]
        self._set_completion_headers(400)
        self.end_headers()
        error = {"message": message, "type": "invalid_request_error", "param": field, "code": None}
        self.wfile.write(json.dumps({"error": error}).encode())


def _without_tools(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}


def split_args(argv: list[str]) -> tuple[list[str], str | None]:
    """(mlx_lm.server's arguments, the --constrain value or None)."""
    rest, constrain = [], None
    it = iter(argv)
    for arg in it:
        if arg == "--constrain":
            constrain = next(it, "")
        elif arg.startswith("--constrain="):
            constrain = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if constrain is not None and constrain not in CONSTRAIN_CHOICES:
        raise SystemExit(f"--constrain: {constrain!r} is not one of {', '.join(CONSTRAIN_CHOICES)}")
    return rest, constrain


def main(argv: list[str] | None = None) -> None:
    args, constrain = split_args(list(sys.argv[1:] if argv is None else argv))
    if constrain:
        mlx_server._make_logits_processors = make_logits_processors
        # `run` takes a handler_class but does not pass it on; the function it calls does.
        mlx_server._run_http_server = functools.partial(
            mlx_server._run_http_server, handler_class=ConstrainedHandler
        )
    sys.argv = ["mlx_lm.server", *args]
    mlx_server.main()


if __name__ == "__main__":
    main()
