"""The package's layout keeps its one-way rule (docs/architecture.md, "The map").

The rule is written as import-linter contracts in pyproject.toml: the parts import only the
parts below them, the three services do not import each other, and only the store and the life
after the grant touch Redis keys or scripts. On top of that, no module may reach itself through
its imports (a cycle inside one part is as hard to read as one between parts).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(root: Path, src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_the_contracts_hold() -> None:
    done = lint(ROOT, ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    """The check can fail: the store importing the node is refused."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "src" / "claimcore", tmp_path / "src" / "claimcore",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    keyspace = tmp_path / "src" / "claimcore" / "store" / "keyspace.py"
    keyspace.write_text(keyspace.read_text() + "\nfrom claimcore.node import errors  # noqa\n")
    done = lint(tmp_path, tmp_path / "src")
    assert done.returncode != 0
    assert "claimcore.store.keyspace -> claimcore.node.errors" in done.stdout


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_reaches_itself_through_its_imports() -> None:
    graph = grimp.build_graph("claimcore")
    # A package's __init__ is where its modules' names start, not an import of them: leave the
    # package -> child edge out, as Python does not run a child on importing its package.
    assert cycles(graph) == []


def test_the_cycle_check_can_fail() -> None:
    graph = grimp.build_graph("claimcore")
    graph.add_import(importer="claimcore.store.scripts", imported="claimcore.store.inventory")
    assert ["claimcore.store.inventory", "claimcore.store.scripts"] in cycles(graph)
