"""The package's import graph has no cycle, hidden in a function body or not; shared constants sit in a leaf."""

import ast
from pathlib import Path

import pgharness

PACKAGE = Path(pgharness.__file__).resolve().parent


def is_type_checking_block(node):
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def harness_imports(path):
    """The harness modules `path` imports when it runs: at module level and inside functions alike,
    but not under ``if TYPE_CHECKING:`` (annotations only)."""
    tree = ast.parse(path.read_text())
    found = set()

    def visit(node):
        if is_type_checking_block(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pgharness":
            if node.module == "pgharness":  # from pgharness import registry, evidence
                found.update(f"pgharness.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "pgharness")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    modules = {f"pgharness.{p.stem}" for p in PACKAGE.glob("*.py")}
    return {name for name in found if name in modules}


def import_graph():
    return {
        f"pgharness.{path.stem}": harness_imports(path)
        for path in sorted(PACKAGE.glob("*.py"))
        if path.stem not in ("__init__", "__main__")
    }


def find_cycle(graph):
    """A cycle in `graph` as a list of modules, or None."""
    state = {}

    def walk(module, trail):
        state[module] = "visiting"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "visiting":
                return [*trail[trail.index(imported) :], imported] if imported in trail else [module, imported]
            if imported not in state:
                cycle = walk(imported, [*trail, imported])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = walk(module, [module])
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    # The check itself can fail: a cycle hidden in a function body is one.
    graph = {"pgharness.a": {"pgharness.b"}, "pgharness.b": {"pgharness.c"}, "pgharness.c": {"pgharness.a"}}
    assert find_cycle(graph) == ["pgharness.a", "pgharness.b", "pgharness.c", "pgharness.a"]
    assert find_cycle({"pgharness.a": {"pgharness.b"}, "pgharness.b": set()}) is None


def test_function_level_imports_count_and_type_checking_ones_do_not(tmp_path):
    path = tmp_path / "probe_module.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pgharness.node import Node\n"
        "def f():\n    from pgharness.cluster import Cluster\n"
    )
    assert harness_imports(path) == {"pgharness.cluster"}


def test_constants_is_a_leaf():
    assert import_graph()["pgharness.constants"] == set()


def test_the_package_api_is_what_it_re_exports_and_each_name_resolves():
    # The names imported `as` themselves under TYPE_CHECKING are what a type checker sees re-exported
    # (mypy --strict); _EXPORTS is what the lazy lookup finds when the code runs.
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    re_exported = {
        alias.name
        for node in ast.walk(tree)
        if is_type_checking_block(node)
        for statement in node.body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
        if alias.asname == alias.name
    }
    assert re_exported == set(pgharness.__all__)
    for name in pgharness.__all__:
        assert getattr(pgharness, name).__name__ == name
