"""The sample tool-calling task: a synthetic, offline dataset and its held-out eval suite.

It is what `punie demo` trains on and what `punie dataset download sample` writes. A coding agent
has four tools; each user request maps to exactly one call (or, for small talk, to no call), and
the arguments are copied from the request, so a model has to read the request to get them right.
Splits and the eval suite are drawn with separate seeds, and the suite drops any request that a
training row already has, so the eval measures generalisation, not memorised strings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SYSTEM_PROMPT = "You are Punie, a coding agent. Use a tool when one fits the request."


def _tool(name: str, description: str, param: str) -> dict:
    """An OpenAI function tool with one required string parameter."""
    parameters = {"type": "object", "properties": {param: {"type": "string"}}, "required": [param]}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


TOOLS: list[dict] = [
    _tool("read_file", "Read a text file.", "path"),
    _tool("list_dir", "List a folder.", "path"),
    _tool("search_code", "Search the code for a word.", "query"),
    _tool("run_command", "Run a shell command.", "command"),
]

_PHRASES = {
    "read_file": ["Show me {}", "Open {}", "Read the file {}", "What is in {}?", "Print {}"],
    "list_dir": ["List {}", "What files are in {}?", "Show the folder {}", "ls {}"],
    "search_code": ["Search the code for {}", "Find {} in the code", "Where is {} used?"],
    "run_command": ["Run {}", "Execute {}", "Please run the command {}"],
}
_ARG = {t["function"]["name"]: t["function"]["parameters"]["required"][0] for t in TOOLS}
_SMALL_TALK = [
    ("Hello", "Hello! What should I work on?"),
    ("Thanks!", "You are welcome."),
    ("Who are you?", "I am Punie, a coding agent."),
    ("Good morning", "Good morning! What should I work on?"),
]

# A small project, as an agent meets it: a known set of files, folders, words and commands. The
# model must pick the right tool and copy the right value; held-out cases combine values and
# phrasings in ways no training row did.
_FILES = ["src/app.py", "src/main.py", "src/utils.py", "src/server.py", "tests/test_app.py"]
_FILES += ["tests/test_utils.py", "docs/index.md", "docs/api.md", "README.md", "pyproject.toml"]
_FILES += ["config.yaml", "lib/client.js", "lib/router.js", "web/index.html", "api/auth.py"]
_DIRS = ["src", "tests", "docs", "lib", "web", "api", "cli", "tools"]
_WORDS = ["TODO", "FIXME", "parse", "load", "token", "retry", "timeout", "user", "cache", "lock"]
_WORDS += ["render", "score"]
_COMMANDS = ["pytest -q", "make test", "git status", "ls -la", "npm test", "cargo build"]
_COMMANDS += ["ruff check .", "git log --oneline", "uv sync", "make lint", "go test ./...", "df -h"]
_POLITE = ["", "Please ", "Can you ", "Now ", "Quick: "]


@dataclass(frozen=True)
class Example:
    """One request and the call that answers it (`tool` is None for small talk)."""

    request: str
    tool: str | None
    argument: str | None
    reply: str | None = None


_VALUES = {"read_file": _FILES, "list_dir": _DIRS, "search_code": _WORDS, "run_command": _COMMANDS}


def _polite(rng: random.Random, phrase: str) -> str:
    prefix = rng.choice(_POLITE)
    return prefix + (phrase[0].lower() + phrase[1:] if prefix else phrase)


def examples(n: int, seed: int) -> list[Example]:
    """`n` examples, about one in eight small talk, deterministic in `seed`."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.125:
            request, reply = rng.choice(_SMALL_TALK)
            out.append(Example(request, None, None, reply))
            continue
        tool = rng.choice(sorted(_PHRASES))
        value = rng.choice(_VALUES[tool])
        out.append(Example(_polite(rng, rng.choice(_PHRASES[tool]).format(value)), tool, value))
    return out


def chat_row(example: Example) -> dict:
    """A training row in the chat format `mlx_lm lora` reads, with the tools it may call."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": example.request},
    ]
    if example.tool is None:
        messages.append({"role": "assistant", "content": example.reply})
    else:
        call = {"name": example.tool, "arguments": {_ARG[example.tool]: example.argument}}
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": call}],
            }
        )
    return {"messages": messages, "tools": TOOLS}


def eval_case(example: Example, index: int) -> dict:
    """A case of the `tool_calling` suite kind (see docs/eval-suites.md)."""
    calls = []
    if example.tool is not None:
        calls = [{"name": example.tool, "arguments": {_ARG[example.tool]: [example.argument]}}]
    return {
        "id": f"{example.tool or 'no-call'}-{index}",
        "category": example.tool or "no_call",
        "messages": [{"role": "user", "content": example.request}],
        "expect": {"calls": calls},
    }


def splits(n_train: int = 400, n_valid: int = 40, n_test: int = 40, seed: int = 0) -> dict:
    """train/valid/test chat rows; each split draws from its own seed."""
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    return {
        name: [chat_row(e) for e in examples(size, seed * 1000 + i)]
        for i, (name, size) in enumerate(sizes.items())
    }


def eval_suite(n_cases: int = 40, seed: int = 0, exclude: frozenset[str] = frozenset()) -> dict:
    """The held-out tool-calling suite: a seed no split uses, and no request listed in `exclude`.

    Small talk has only a few phrasings, so it is exempt from `exclude` (it would otherwise vanish)
    and kept to the one case in eight it has in training (a random model "passes" it by calling
    nothing, so more of it would flatter the base model).
    """
    pool = examples(n_cases * 20, seed * 1000 + 999)
    small_talk = [e for e in pool if e.tool is None][: max(1, n_cases // 8)]
    calls = [e for e in pool if e.tool is not None and e.request not in exclude]
    held_out = calls[: n_cases - len(small_talk)] + small_talk
    cases = [eval_case(e, i) for i, e in enumerate(held_out)]
    return {
        "name": "sample-tools",
        "kind": "tool_calling",
        "system": SYSTEM_PROMPT,
        "tools": TOOLS,
        "cases": cases,
    }
