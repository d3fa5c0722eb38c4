"""lossbench's shape, measured from its source with `ast`: no import cycle between its top-level parts, no module
over 500 lines, no function over 60 lines.

A *part* is a module or a subpackage directly under lossbench/ (`grid`, `report`, `data`, ...). Every import of
one of lossbench's own modules is an edge from the importing part to the imported one: at the top level, inside a
function, under `if TYPE_CHECKING:`, relative or absolute, and `importlib.import_module` with a literal name. A
cycle among the parts means neither side can be understood, tested or changed without the other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lossbench"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Import:
    """One import statement of one part that reaches another part."""

    source: str  # importing part
    target: str  # imported part
    path: Path
    line: int  # 1-based
    text: str  # the statement as written (first line)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def _module_name(path: Path, root: Path) -> str:
    """Dotted module name of a file under `root` (the package directory): lossbench/report/__init__.py →
    lossbench.report."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str, root: Path) -> bool:
    """Whether `dotted` (under the package `root`) names a module or a package, not an attribute."""
    candidate = root.parent.joinpath(*dotted.split("."))
    return candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file()


def _part(dotted: str, package: str) -> str | None:
    """The top-level part a module belongs to (lossbench.report.stats → report); None for the package itself."""
    pieces = dotted.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == package else None


def _imported_modules(node: ast.AST, module: str, is_package: bool, root: Path) -> list[str]:
    """The modules of the package that one AST node imports (empty when it imports none)."""
    package = root.name
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            # `from . import x` in a package's __init__ is relative to the package itself, elsewhere to the parent.
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # `from lossbench import grid` imports the module lossbench.grid; `from lossbench.grid import Cell` imports
        # lossbench.grid, Cell being an attribute of it.
        return [base] + [f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}", root)]
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name == "import_module":
            literal = _literal_prefix(node.args[0])
            if literal and literal.startswith(f"{package}."):
                return [literal]
    return []


def _literal_prefix(arg: ast.expr) -> str | None:
    """The dotted name a string argument spells, or its literal head up to the last complete dot of an f-string
    (f"lossbench.report.{name}" → lossbench.report)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        head = str(arg.values[0].value)
        return head.rsplit(".", 1)[0] if "." in head else None
    return None


def import_edges(root: Path) -> list[Import]:
    """Every import between two different top-level parts of the package at `root`."""
    package = root.name
    edges = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        source = _part(module, package)
        if source is None:
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text, filename=str(path))):
            modules = _imported_modules(node, module, path.name == "__init__.py", root)
            # One edge per statement and part: `from lossbench.report import stats` names lossbench.report twice.
            targets = {_part(name, package) for name in modules if _is_module(name, root)} - {None, source}
            edges.extend(Import(source, target, path.relative_to(root.parent), node.lineno,
                                lines[node.lineno - 1].strip()) for target in sorted(targets))
    return sorted(edges, key=lambda edge: (edge.path, edge.line))


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of `graph` with more than one node (each is at least one cycle),
    iteratively so that a deep graph cannot overflow the stack."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One shortest cycle inside a strongly connected component, as [a, b, ..., a] (breadth-first from its
    alphabetically first node, so the message is the same on every run)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & component):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def import_cycles(root: Path) -> list[tuple[set[str], str]]:
    """Each cycle of parts at `root` with a message naming one cycle through it and the import lines making it."""
    edges = import_edges(root)
    graph: dict[str, set[str]] = defaultdict(set)
    lines: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for edge in edges:
        graph[edge.source].add(edge.target)
        lines[edge.source, edge.target].append(edge)
    found = []
    for component in strongly_connected(graph):
        cycle = shortest_cycle(graph, component)
        message = [f"import cycle between {', '.join(sorted(component))}; one cycle: {' -> '.join(cycle)}"]
        for source, target in zip(cycle, cycle[1:]):
            message.append(f"  {source} -> {target}:")
            message.extend(f"    {edge}" for edge in lines[source, target])
        others = sorted(pair for pair in lines if set(pair) <= component and pair not in zip(cycle, cycle[1:]))
        if others:
            message.append("  the other imports inside it: " + ", ".join(f"{a} -> {b}" for a, b in others))
        found.append((component, "\n".join(message)))
    return found


def long_modules(root: Path, limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    """Modules over `limit` lines: path under the repository → lines."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > limit:
            found[path.relative_to(root.parent).as_posix()] = count
    return found


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """Functions and methods (nested ones too) over `limit` lines, from `def` to their last line:
    "path::Class.method" → lines."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root.parent).as_posix()

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    qualified = f"{prefix}{child.name}"
                    count = child.end_lineno - child.lineno + 1
                    if count > limit:
                        found[f"{name}::{qualified}"] = count
                    visit(child, f"{qualified}.")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")
                else:
                    visit(child, prefix)

        visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), "")
    return found


# --- lossbench itself -------------------------------------------------------------------------------------------


def test_no_import_cycle_between_parts_of_lossbench() -> None:
    cycles = import_cycles(PACKAGE)
    assert not cycles, "\n\n".join(message for _, message in cycles)


def test_no_module_over_500_lines() -> None:
    found = long_modules(PACKAGE)
    assert not found, f"modules over {MAX_MODULE_LINES} lines (split them by job): {found}"


def test_no_function_over_60_lines() -> None:
    found = long_functions(PACKAGE)
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines: {found}"


# --- the measurement, on a tiny fake package --------------------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_cycle_through_a_lazy_import_and_a_type_checking_import_is_found(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "a.py": "from pkg.b import thing\n",
        "b.py": "def f():\n    from pkg import c\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n",
        "d.py": "import pkg.a\n",  # reaches the cycle but is not in it
    })
    [(component, message)] = import_cycles(root)
    assert component == {"a", "b", "c"}
    assert "one cycle: a -> b -> c -> a" in message
    assert "pkg/a.py:1: from pkg.b import thing" in message
    assert "pkg/b.py:2: from pkg import c" in message
    assert "pkg/c.py:3: from pkg.a import x" in message


def test_relative_imports_are_resolved_from_modules_and_package_inits(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "sub/__init__.py": "from . import inner\nfrom .. import top\n",
        "sub/inner.py": "from ..other import y\nfrom . import sibling\n",
        "sub/sibling.py": "",
        "top.py": "",
        "other.py": "from .sub.inner import z\n",
    })
    edges = {(edge.source, edge.target, edge.path.as_posix(), edge.line) for edge in import_edges(root)}
    assert edges == {
        ("sub", "top", "pkg/sub/__init__.py", 2),
        ("sub", "other", "pkg/sub/inner.py", 1),
        ("other", "sub", "pkg/other.py", 1),
    }
    [(component, _)] = import_cycles(root)
    assert component == {"other", "sub"}


def test_names_imported_from_the_package_root_and_literal_dynamic_imports(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "VERSION = 1\n",
        "a.py": ("from pkg import VERSION\nimport importlib\nimportlib.import_module(f'pkg.b.{name}')\n"
                 "from pkg.b import c, d\n"),
        "b/c.py": "",
        "b/d.py": "",
        "b/__init__.py": "from importlib import import_module\nimport_module('pkg.a')\n",
    })
    edges = [(edge.source, edge.target, edge.line) for edge in import_edges(root)]
    assert edges == [("a", "b", 3), ("a", "b", 4), ("b", "a", 2)]


def test_no_cycle_in_a_layered_package(tmp_path: Path) -> None:
    root = _package(tmp_path, {"low.py": "", "mid.py": "import pkg.low\n", "high.py": "from pkg import mid, low\n"})
    assert import_cycles(root) == []


def _function(name: str, statements: int, indent: str = "") -> str:
    """A function of `statements` one-line statements: `statements` + 1 lines with its `def`."""
    return f"{indent}def {name}():\n" + "".join(f"{indent}    x{i} = {i}\n" for i in range(statements))


def test_long_modules_and_functions_are_counted_with_their_qualified_names(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "long.py": "\n" * 501,
        "short.py": "\n" * 500,
        "funcs.py": (_function("top", 60) + "class K:\n" + _function("method", 60, "    ")
                     + "def outer():\n" + _function("inner", 60, "    ") + _function("fine", 59)),
    })
    assert long_modules(root) == {"pkg/long.py": 501}
    assert long_functions(root) == {"pkg/funcs.py::top": 61, "pkg/funcs.py::K.method": 61,
                                    "pkg/funcs.py::outer": 62, "pkg/funcs.py::outer.inner": 61}


@pytest.mark.parametrize("graph", [{"a": {"b"}, "b": {"a"}}, {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}])
def test_shortest_cycle_returns_to_its_start(graph: dict[str, set[str]]) -> None:
    [component] = strongly_connected(graph)
    cycle = shortest_cycle(graph, component)
    assert cycle[0] == cycle[-1] == "a" and set(cycle) == component
