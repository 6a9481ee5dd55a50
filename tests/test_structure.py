"""The grader's shape: no import cycle inside the package, no module too long to audit, and no private name
of the sandbox reached from outside it."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

GRADER = REPO / "grader"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.Module, package: str, annotations: bool = False) -> list[tuple[str, list[str]]]:
    """(module, names) of every import that runs (at any depth, inside functions too), but not those under
    `if TYPE_CHECKING:`, which never run, unless `annotations` (then those too)."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) and not annotations:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(annotations: bool = False) -> dict[str, set[str]]:
    """module -> the modules of grader/ it imports ("from grader import x" counts x when x is a module);
    with `annotations`, the imports made for type annotations only too."""
    files = {_module_name(p): p for p in GRADER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for module, names in _runtime_imports(ast.parse(path.read_text()), package, annotations):
            if module in files:
                edges.add(module)
            edges.update(f"{module}.{n}" for n in names if f"{module}.{n}" in files)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_inside_the_grader() -> None:
    graph = import_graph()
    assert "grader.sandbox.jail" in graph["grader.sandbox.layers"]  # the walk sees the package's own imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_no_import_cycle_even_through_annotations() -> None:
    """A collaborator gets what it needs (a Protocol defined beside it, plain values), not the object that made
    it: the jail and the closing of files never know layers.py, which uses both (#28)."""
    graph = import_graph(annotations=True)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    assert "grader.sandbox.layers" not in graph["grader.sandbox.jail"] | graph["grader.sandbox.closing"]


def test_no_module_of_the_grader_is_too_long_to_audit() -> None:
    long = {str(p.relative_to(REPO)): n for p in GRADER.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_nothing_outside_the_sandbox_imports_its_private_names() -> None:
    offenders = []
    for path in [*REPO.glob("grader/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("bench/*.py")]:
        if GRADER / "sandbox" in path.parents:
            continue
        for module, names in _runtime_imports(ast.parse(path.read_text()), _module_name(path)):
            if module.startswith("grader.sandbox"):
                offenders += [f"{path.relative_to(REPO)}: {module}.{n}" for n in names if n.startswith("_")]
    assert offenders == []


def test_every_package_of_the_grader_is_installed() -> None:
    """pyproject.toml lists packages by name: a new subpackage left out would be missing from `pip install .`."""
    from grader.config import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == {_module_name(p.parent / "__init__.py") for p in GRADER.rglob("__init__.py")}
