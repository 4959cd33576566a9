"""The layers show in the folder tree, and no import runs back up a layer or in a cycle.

Every ``import`` in ``flowengine/`` is read with ``ast`` (lazy imports inside functions
too), so a shortcut taken anywhere fails here with the file and line to fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

from .conftest import ROOT

PACKAGE = ROOT / "flowengine"

# What each layer may import, besides itself. Read from the bottom up: an agent file is
# loaded (agentfile), compiled and checked (graph), run (runtime) through the kernel, which
# keeps everything in storage. The command line, the language server and the web page sit
# on top of everything.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "plugins": set(),  # entry-point loading, shared by the tool catalog and the backends
    "agentfile": {"errors"},
    "tools": {"errors", "plugins"},
    "storage": {"errors"},
    # A step kind holds all its kind means (schema piece, checks, drawing, how it runs
    # against a Protocol the runtime implements): above the agent file it describes, below
    # everything that asks it.
    "steps": {"errors", "agentfile", "tools"},
    "graph": {"errors", "agentfile", "tools", "steps"},
    "viz": {"errors", "agentfile", "graph", "steps"},
    "importers": {"errors", "agentfile", "tools"},
    "kernel": {"errors", "plugins", "storage", "tools"},
    "runtime": {"errors", "plugins", "agentfile", "graph", "steps", "tools", "kernel", "storage"},
    # Agents' tests: runs through a kernel that answers mocked steps itself, above the
    # runtime; the command line calls it.
    "testing": {
        "errors",
        "plugins",
        "agentfile",
        "graph",
        "steps",
        "tools",
        "kernel",
        "storage",
        "runtime",
    },
}
TOP = {"cli", "lsp", "ui", "__main__", "__init__"}
"""Layers that may import any other; nothing imports them but themselves."""


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every flowengine module ``path`` imports, with the line, lazy imports included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _module_name(path if path.name == "__init__.py" else path.parent)
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            # ``from flowengine.cli import running`` imports a submodule
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name.startswith("flowengine")]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _known_modules() -> set[str]:
    return {_module_name(path) for path in _sources()}


def test_every_layer_of_the_package_is_listed() -> None:
    layers = {_layer(_module_name(path)) for path in _sources()}
    assert layers <= set(ALLOWED) | TOP, layers - set(ALLOWED) - TOP


def test_no_import_runs_back_up_a_layer() -> None:
    known = _known_modules()
    wrong = []
    for path in _sources():
        here = _layer(_module_name(path))
        if here in TOP:
            continue
        for name, line in _imports(path):
            if name not in known:
                continue  # ``from flowengine.x import SomeClass``: the module is listed too
            there = _layer(name)
            if there != here and there not in ALLOWED[here] and name != "flowengine":
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_nothing_below_the_top_imports_the_top() -> None:
    known = _known_modules()
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for path in _sources()
        if _layer(_module_name(path)) not in TOP
        for name, line in _imports(path)
        if name in known and _layer(name) in TOP - {"__init__"}
    ]
    assert not wrong, "\n".join(wrong)


def test_there_are_no_import_cycles() -> None:
    known = _known_modules()
    graph = nx.DiGraph()
    for path in _sources():
        here = _module_name(path)
        graph.add_node(here)
        for name, _ in _imports(path):
            # a package's __init__ re-exporting its own modules is not a cycle
            if name in known and name != here and not here.startswith(name + "."):
                graph.add_edge(here, name)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, cycles


def test_the_checker_sees_a_real_upward_import(tmp_path: Path) -> None:
    """The parser above must catch what it is for (it would pass vacuously otherwise)."""
    sample = PACKAGE / "kernel" / "scheduler.py"
    names = [name for name, _ in _imports(sample)]
    assert "flowengine.kernel.llm_request" in names
    assert all(_layer(name) in ALLOWED["kernel"] | {"kernel"} for name in names)
    rogue = tmp_path / "rogue.py"
    rogue.write_text("def f():\n    from flowengine.runtime.interpreter import AgentRun\n")
    assert ("flowengine.runtime.interpreter", 2) in _imports(rogue)


KERNEL_INSIDES = {"storage", "backend"}
"""What the kernel keeps to itself: runs ask it (``Kernel.fit_prompt``, ``record_step``...)."""


def _names_a_kernel(node: ast.expr) -> bool:
    """``kernel``, ``self.kernel``, ``session.kernel``: an expression naming a kernel."""
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return "kernel" in name.lower()


def test_runtime_never_reaches_into_the_kernel() -> None:
    """The runtime asks the kernel, never its backend or storage: ``kernel.backend.encode``
    or ``self.kernel.storage`` anywhere in runtime/ fails here (getattr too)."""
    reached = []
    for path in sorted((PACKAGE / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in KERNEL_INSIDES:
                target = node.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in KERNEL_INSIDES
            ):
                target = node.args[0]
            else:
                continue
            if _names_a_kernel(target):
                reached.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not reached, f"the runtime reaches into the kernel at {', '.join(reached)}"
