"""The architecture as DESIGN.md draws it: import directions between packages, no import cycle
between modules, and modules small enough to hold in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("protocol", "models", "parties", "attacks", "sim")
# Which project packages each package may import (DESIGN.md, "Direction of imports").
ALLOWED = {
    "protocol": set(),
    "models": set(),
    "attacks": {"protocol"},
    "parties": {"models", "protocol"},
    "sim": {"protocol", "models", "parties", "attacks"},
}
MAX_LINES = 450  # "modules under ~400 lines": a little slack, never a 900-line file again


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(name: str, path: Path, known: set[str], *, top_level_only: bool) -> set[str]:
    """Project modules `name` imports (absolute or relative; every `from x import y` also
    imports y when y is a module), at module level only or anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if top_level_only:  # statements of the module body (ifs and try blocks included), not of functions
        skip = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        nodes = [n for stmt in tree.body if not isinstance(stmt, skip) for n in ast.walk(stmt)]
    else:
        nodes = list(ast.walk(tree))
    nodes = [n for n in nodes if not _under_type_checking(tree, n)]  # annotations only, never run
    found = set()
    for node in nodes:
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _under_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and ast.unparse(stmt.test) == "TYPE_CHECKING":
            if any(n is target for n in ast.walk(stmt)):
                return True
    return False


def test_packages_import_only_in_the_design_direction():
    mods = modules()
    wrong = []
    for name, path in mods.items():
        mine = name.split(".")[0]
        for target in imports(name, path, set(mods), top_level_only=False):
            other = target.split(".")[0]
            if other != mine and other not in ALLOWED[mine]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports against DESIGN.md's direction:\n" + "\n".join(sorted(wrong))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("top_level_only", [True, False], ids=["module-level", "anywhere"])
def test_no_import_cycle(top_level_only):
    """No cycle between modules, counting module-level imports and, stricter, every import in
    a file (a lazy import inside a function is there for start-up time, not to hide a cycle).
    A package's __init__ importing its own submodules is the package's interface, not a cycle."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        deps = imports(name, path, set(mods), top_level_only=top_level_only)
        if path.name == "__init__.py":
            deps = {d for d in deps if not d.startswith(name + ".")}
        else:
            deps = {d for d in deps if not name.startswith(d + ".")}  # a module's own package __init__
        graph[name] = deps
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_modules_stay_small():
    big = {name: n for name, path in modules().items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by responsibility): {big}"
