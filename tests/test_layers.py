"""The import-layer contract (docs/architecture.md): imports only point down, and never in a circle.

The import graph of src/punie and src/punie_peft is read with `ast`, imports inside functions
included (a function-local import is still a dependency, and hiding a cycle in one is how cycles
survived before). Each module belongs to one layer; a module may import its own layer and the
layers below it, never one above.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Lowest first. A module belongs to the layer of the longest prefix listed; `*.cli` modules, the
# typer shells beside each package, belong to `cli` wherever they live.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "punie.errors",
            "punie.platform",
            "punie.lifeline",
            "punie.proc",
            "punie.jsonl",
            "punie.fsio",
            "punie.logecho",
            "punie.sampling",
        ),
    ),
    ("model", ("punie.model",)),
    ("chat", ("punie.chat",)),
    ("data", ("punie.data",)),
    # The contract between `punie train` and every backend: the config, the run folder, the
    # records written there and the training events. Plain data, below the backend protocol
    # that speaks in these types; the rest of punie.train (launch, the MLX backend) sits above.
    (
        "contract",
        (
            "punie.train.config",
            "punie.train.rundir",
            "punie.train.records",
            "punie.train.callbacks",
        ),
    ),
    ("backends", ("punie.backends",)),
    ("train", ("punie.train",)),
    ("serve", ("punie.serve",)),
    ("eval", ("punie.eval",)),
    ("report", ("punie.report",)),
    # Training that evaluates inside itself (GRPO rewards, select_by): above eval and serve.
    ("rl", ("punie.rl",)),
    # The peft backend: found through entry points only, and its GRPO rewards with the eval
    # scorers (punie.rl.reward), so it sits above them.
    ("plugins", ("punie_peft",)),
    ("orchestration", ("punie.session", "punie.demo", "punie.bootstrap")),
    ("api", ("punie.api", "punie.sweep")),  # and the package's own __init__, which re-exports it
    ("cli", ("punie.cli", "punie.__main__")),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
# Third-party libraries the core must never import, not even inside a function: they belong to
# the optional `punie[cuda]` plugin, which the core finds through entry points only.
PLUGIN_ONLY = {"torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "punie_peft"}


def module_files() -> dict[str, Path]:
    files = {}
    for root in ("punie", "punie_peft"):
        for path in sorted((SRC / root).rglob("*.py")):
            parts = list(path.relative_to(SRC).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def layer_of(module: str) -> str:
    if module.endswith(".cli") or module.split(".")[-1] == "__main__":
        return "cli"
    if module == "punie":
        return "api"  # only the root itself: a new top-level module must be given its layer
    best = None
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (name, prefix)
    assert best is not None, f"{module}: in no layer; add it to LAYERS and docs/architecture.md"
    return best[0]


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, at any depth, third-party too."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:  # `from punie import jsonl` imports the module punie.jsonl
                    found.append((sub, node.lineno))
                elif base == "punie" and alias.name == "__version__":
                    continue  # a constant the root defines before it imports anything
                else:
                    found.append((base, node.lineno))
    return found


def internal_graph() -> dict[str, list[tuple[str, int]]]:
    files = module_files()
    known = set(files)
    graph = {}
    for module, path in files.items():
        edges = []
        for target, line in imports(module, path, known):
            while target and target not in known and "." in target:
                target = target.rpartition(".")[0]  # `punie.x.name` -> the module punie.x
            if target in known and target != module:
                edges.append((target, line))
        graph[module] = edges
    return graph


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for module in module_files():
        layer_of(module)


def test_no_import_points_up_a_layer():
    upward = []
    for module, edges in internal_graph().items():
        for target, line in edges:
            if RANK[layer_of(target)] > RANK[layer_of(module)]:
                upward.append(
                    f"{module}:{line} imports {target} "
                    f"({layer_of(module)} may not import {layer_of(target)})"
                )
    assert upward == []


def test_no_import_cycles_between_modules():
    assert cycles(internal_graph()) == []


def test_no_import_cycles_between_packages():
    def package(module: str) -> str:
        if layer_of(module) in ("cli", "contract"):
            # the typer shells beside each package sit above all of them; the run contract in
            # punie.train sits below punie.backends, which the rest of punie.train uses
            return layer_of(module)
        return ".".join(module.split(".")[:2]) if module.startswith("punie.") else "punie_peft"

    graph: dict[str, list[tuple[str, int]]] = {}
    for module, edges in internal_graph().items():
        graph.setdefault(package(module), [])
        for target, line in edges:
            if package(target) != package(module):
                graph[package(module)].append((package(target), line))
    for target in {t for edges in graph.values() for t, _ in edges}:
        graph.setdefault(target, [])
    assert cycles(graph) == []


def test_the_core_never_imports_the_plugin_libraries():
    files = module_files()
    found = [
        f"{module}:{line} imports {target}"
        for module, path in files.items()
        if not module.startswith("punie_peft")
        for target, line in imports(module, path, set(files))
        if target.split(".")[0] in PLUGIN_ONLY
    ]
    assert found == []


def test_the_checker_sees_function_local_imports_and_cycles(tmp_path):
    """The contract would pass vacuously if the walker missed imports inside functions."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from punie.eval.toolcalls import parse_calls\n")
    assert imports("punie.data.m", path, {"punie.eval.toolcalls"}) == [("punie.eval.toolcalls", 2)]
    assert cycles({"a": [("b", 1)], "b": [("a", 1)], "c": []}) == [["a", "b"]]


def test_the_run_contract_is_its_own_layer_below_the_backends():
    """punie.backends speaks in TrainConfig, RunDir, records and events; the rest of punie.train
    (launch, the MLX backend, the worker) uses punie.backends, so it sits above."""
    for module in ("config", "rundir", "records", "callbacks"):
        assert layer_of(f"punie.train.{module}") == "contract"
    for module in ("launch", "backend", "worker", "mlx", "runs", "fuse"):
        assert layer_of(f"punie.train.{module}") == "train"
    assert RANK["data"] < RANK["contract"] < RANK["backends"] < RANK["train"]
