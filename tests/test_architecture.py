"""The package's import structure, read from the source with ``ast``: no module imports another
module's private (underscore) names, and the modules import each other without cycles.

Function-level imports count as much as module-level ones: they only delay a cycle to the first
call. A package's ``__init__`` counts as the module ``salightning.x``; importing
``salightning.x.y`` is an edge to ``salightning.x.y`` only (Python runs the parent's
``__init__`` first, but that is how packages work, not a dependency of the importer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "salightning"

# Offenders outside salightning/data that other work in progress removes (issue 14); each entry
# is (importer, imported module, name). The lead empties these lists once that work is merged.
ALLOWED_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()
# Each entry: the sorted modules of one import cycle (a strongly connected component).
ALLOWED_CYCLES: set[tuple[str, ...]] = set()


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def package_modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file under ``root``."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _source_module(importer: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module of a ``from ... import`` (relative imports resolved)."""
    if not node.level:
        return node.module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, str, int]]]:
    """The edges importer -> imported between package modules, and every private-name import
    as (importer, imported module, name, line)."""
    top = next(iter(modules)).split(".")[0]
    edges: dict[str, set[str]] = {name: set() for name in modules}
    private: list[tuple[str, str, str, int]] = []
    for importer, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges[importer].update(a.name for a in node.names if a.name.split(".")[0] == top and a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                source = _source_module(importer, path.name == "__init__.py", node)
                if source is None or source.split(".")[0] != top:
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:
                        edges[importer].add(submodule)
                        continue
                    if source in modules:
                        edges[importer].add(source)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append((importer, source, alias.name, node.lineno))
    for importer in edges:
        edges[importer].discard(importer)
    return edges, private


def import_cycles(edges: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(tuple(sorted(component)))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(cycles)


@pytest.fixture(scope="module")
def graph():
    return import_graph(package_modules(PACKAGE))


def test_the_checker_sees_a_cycle_and_a_private_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import thing\n")
    (pkg / "sub" / "a.py").write_text("thing = 1\n\ndef later():\n    from pkg.b import _hidden\n")
    (pkg / "b.py").write_text("from pkg.sub import a\n_hidden = 2\n")
    (pkg / "c.py").write_text("import pkg.b\n")
    edges, private = import_graph(package_modules(pkg))
    assert import_cycles(edges) == [("pkg.b", "pkg.sub.a")]
    assert [(i, s, n) for i, s, n, _ in private] == [("pkg.sub.a", "pkg.b", "_hidden")]
    assert edges["pkg.c"] == {"pkg.b"} and edges["pkg.sub"] == {"pkg.sub.a"}


def test_no_private_names_are_imported_across_modules(graph):
    _, private = graph
    found = {(i, s, n) for i, s, n, _ in private}
    new = sorted(f"{i} line {line}: from {s} import {n}" for i, s, n, line in private if (i, s, n) not in ALLOWED_PRIVATE_IMPORTS)
    assert not new, "private names imported from another module:\n  " + "\n  ".join(new)
    stale = sorted(ALLOWED_PRIVATE_IMPORTS - found)
    assert not stale, f"allow-listed private imports that are gone (remove them from the list): {stale}"


def test_modules_import_each_other_without_cycles(graph):
    edges, _ = graph
    cycles = import_cycles(edges)
    new = [c for c in cycles if c not in ALLOWED_CYCLES]
    assert not new, "import cycles (module- or function-level imports):\n  " + "\n  ".join(" <-> ".join(c) for c in new)
    stale = sorted(ALLOWED_CYCLES - set(cycles))
    assert not stale, f"allow-listed cycles that are gone (remove them from the list): {stale}"


def test_data_layers_point_one_way(graph):
    edges, _ = graph

    def data_deps(module: str) -> set[str]:
        return {m for m in edges[f"salightning.data.{module}"] if m.startswith("salightning.data")}

    assert data_deps("samples") == {"salightning.data.io"}
    assert data_deps("io") == data_deps("transforms") == data_deps("sampling") == set()
    assert data_deps("base") == {"salightning.data.sampling"}
    assert not {"salightning.data.image", "salightning.data.video"} & (data_deps("image") | data_deps("video"))
