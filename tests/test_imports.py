"""The package's import structure, read from the source (ast): no import circles between groupact
modules, and no groupact import inside a function (the usual way to hide a circle).

A circle makes the import order matter and hides which module owns an idea; a function-level
import postpones the error to whichever call runs first. Both tests name the modules to fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

import groupact.cli

ROOT = Path(groupact.cli.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_modules(node: ast.AST, here: str) -> set[str]:
    """The groupact modules one import statement loads (``from a.b import c`` loads a.b, and
    a.b.c too when c is a module)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        found = {node.module} if node.module in MODULES else set()
        found |= {f"{node.module}.{a.name}" for a in node.names
                  if f"{node.module}.{a.name}" in MODULES}
        return found - {here}
    return set()


def module_level_imports(tree: ast.Module, here: str) -> set[str]:
    """Imports that run when the module is imported (top level, or under a top-level if/try)."""
    found: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        found |= imported_modules(node, here)
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            stack.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = module_level_imports(ast.parse(path.read_text(encoding="utf-8")), name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_circle_and_a_hidden_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("from groupact.train import train_run\nimport groupact.io\n")
    assert module_level_imports(tree, "groupact.cli") == {"groupact.train", "groupact.io"}
    inner = ast.parse("def f():\n    from groupact.train import train_run\n")
    assert module_level_imports(inner, "groupact.cli") == set()
    assert imported_modules(inner.body[0].body[0], "groupact.cli") == {"groupact.train"}


def test_no_import_circles_between_groupact_modules():
    assert len(MODULES) > 40
    assert cycles(import_graph()) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every groupact module that importing ``start`` loads through its own imports."""
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_law_checks_depend_only_on_groups_and_latent():
    """Laws are declared by groups and actions, so groupact.laws needs nothing else (the nets
    least of all): a new part is checked by what it declares, not by a table here."""
    loaded = reachable(import_graph(), "groupact.laws")
    assert "groupact.latent.actions" in loaded and "groupact.groups.base" in loaded
    allowed = ("groupact.groups", "groupact.latent", "groupact.errors", "groupact.registry")
    assert sorted(m for m in loaded if not m.startswith(allowed)) == []


def test_no_groupact_import_inside_a_function():
    hidden = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    relative = isinstance(sub, ast.ImportFrom) and sub.level > 0
                    if imported_modules(sub, name) or relative:
                        hidden.append(f"{name}:{sub.lineno} in {node.name}()")
    assert hidden == []


def test_importing_groupact_leaves_the_users_session_alone():
    """No backend switch for a notebook's matplotlib, no reseeded global RNG."""
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import torch; torch.manual_seed(7); "
            "a = torch.rand(3); torch.manual_seed(7); import groupact, groupact.cli, "
            "groupact.evaluate.figures; assert matplotlib.get_backend() == 'svg', "
            "matplotlib.get_backend(); assert torch.equal(torch.rand(3), a); "
            "print(groupact.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from importlib.metadata import version
    assert out.stdout.strip() == version("groupact")
