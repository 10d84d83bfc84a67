"""The helper package's modules import each other without a cycle: no module imports one that
imports it back, directly or through others, counting the imports inside functions too (a
deferred import is still a dependency). The OMERO CLI plugin file only registers the command
class of the package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "omero_scripts" / "omero_iscc"
PLUGIN = PACKAGE.parent / "omero" / "plugins" / "iscc.py"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (``__init__`` for the package itself)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x: a module, or a name of __init__
                found.update(a.name if a.name in modules else "__init__" for a in node.names)
            elif node.level == 0 and node.module and node.module.split(".")[0] == "omero_iscc":
                parts = node.module.split(".")
                found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "omero_iscc":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found & modules


def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {p.stem: imports_of(p, modules) - {p.stem} for p in PACKAGE.glob("*.py")}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge a depth-first walk meets (empty: none)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_check_finds_a_cycle_when_there_is_one():
    edges = graph()
    assert "gateway" in edges["connection"]  # the graph is read (the package is where it is)
    back = cycles({**edges, "gateway": edges["gateway"] | {"connection"}})  # the cycle there once was
    assert [set(c) for c in back] == [{"connection", "gateway"}] and len(back[0]) == 3


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    assert cycles(graph()) == []


def test_the_plugin_file_only_registers_the_packages_command_class():
    tree = ast.parse(PLUGIN.read_text(encoding="utf-8"))
    imported = [
        (node.module, [a.name for a in node.names]) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    ]
    assert ("omero_iscc.cli", ["HELP", "IsccControl"]) in imported
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
    assert len(PLUGIN.read_text(encoding="utf-8").splitlines()) <= 20


def test_the_rows_of_docs_architecture_are_the_imports_rows():
    """docs/architecture.md draws the package in rows (each module on the row above the longest
    chain of imports beneath it); the table there is what the imports say."""
    edges = graph()
    rows: dict[str, int] = {}

    def row(module: str) -> int:
        if module not in rows:
            rows[module] = 1 + max((row(m) for m in edges[module]), default=-1)
        return rows[module]

    computed: dict[int, set[str]] = {}
    for module in edges:
        computed.setdefault(row(module), set()).add(module)
    text = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    documented = {
        int(m.group(1)): set(re.findall(r"`([\w]+)`", m.group(2)))
        for m in re.finditer(r"^\| (\d+) \| (.*) \|$", text, re.M)
    }
    assert documented == computed
