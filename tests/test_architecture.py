"""The package's shape: an acyclic import graph, no private names across modules, small files.

Imports are read with ``ast`` from every module of ``beckmann/``, those inside functions
included, so a cycle hidden in a function body fails here too. The graph is acyclic twice over:
between modules, and between *rooms* (a sub-package such as ``beckmann.store`` counts as one
room, a top-level module as another), so the rooms stack in floors and no import runs from a
lower floor back up to a higher one, not even between different modules of two rooms
(``store/run.py`` importing ``mixed_run`` while ``mixed_run`` imports ``store/checkpoint.py``
was such an arrow).
"""

from __future__ import annotations

import ast
from itertools import permutations
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial

PACKAGE = Path(__file__).resolve().parents[1] / "beckmann"
MAX_LINES = 550  # "about 500"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The beckmann module an import of ``name`` loads (itself, or its nearest package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(mod: str) -> list[tuple[str, str | None, int]]:
    """``(target module, imported name or None, line)`` for every beckmann import in ``mod``."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "beckmann":
                    target = resolve(alias.name)
                    if target:
                        found.append((target, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "beckmann":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:  # a submodule imported by name
                    found.append((full, None, node.lineno))
                else:
                    target = resolve(base)
                    if target:
                        found.append((target, alias.name, node.lineno))
    return found


GRAPH = {m: sorted({t for t, _, _ in imports(m) if t != m}) for m in MODULES}


def room(mod: str) -> str:
    """The room of a module: its sub-package (``beckmann.store``) or itself (``beckmann.mesh``)."""
    return ".".join(mod.split(".")[:2])


def rooms(graph: dict[str, list[str]]) -> dict[str, list[str]]:
    """``graph`` with each module replaced by its room (arrows inside one room dropped)."""
    out: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        out.setdefault(room(mod), set()).update(room(t) for t in targets if room(t) != room(mod))
    return {r: sorted(ts) for r, ts in out.items()}


def arrows(graph: dict[str, list[str]], a: str, b: str) -> list[str]:
    """The module imports that make the room arrow ``a -> b``."""
    return [f"{m} -> {t}" for m, ts in graph.items() for t in ts if room(m) == a and room(t) == b]


def find_cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components; any of two or more modules is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_import_graph_is_acyclic():
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_rooms_stack_in_floors():
    """No import runs back up: the graph of rooms (sub-packages, top-level modules) is acyclic."""
    cycles = find_cycles(rooms(GRAPH))
    why = []
    for c in cycles:
        made_of = (x for a, b in permutations(c, 2) for x in arrows(GRAPH, a, b))
        why.append(" <-> ".join(c) + ": " + "; ".join(made_of))
    assert not cycles, "import cycles between rooms:\n" + "\n".join(why)
    # the mixed run's checkpoint is storage: store reads it without importing the solve above it
    assert "beckmann.mixed_run" not in rooms(GRAPH)["beckmann.store"]


def test_no_private_names_across_modules():
    bad = []
    for mod in MODULES:
        for target, name, line in imports(mod):
            if name and name.startswith("_") and target != mod and name != "__version__":
                bad.append(f"{MODULES[mod].relative_to(PACKAGE.parent)}:{line} imports "
                           f"{name} from {target}")
    assert not bad, "\n".join(bad)


def test_modules_are_small():
    big = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in MODULES.values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_checks_can_fail():
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": ["b"], "b": []}) == []
    assert resolve("beckmann.cli.solve") == "beckmann.cli.solve"
    assert resolve("beckmann.cli.nonexistent") == "beckmann.cli"
    # modules in two rooms importing each other's rooms: no module cycle, yet a room cycle
    graph = {"beckmann.s.run": ["beckmann.m"], "beckmann.m": ["beckmann.s.ck"], "beckmann.s.ck": []}
    assert find_cycles(graph) == []
    assert find_cycles(rooms(graph)) == [["beckmann.m", "beckmann.s"]]
    assert arrows(graph, "beckmann.s", "beckmann.m") == ["beckmann.s.run -> beckmann.m"]
