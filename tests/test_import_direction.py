"""Dependencies point one way (docs/architecture.md, "Import direction"): every import of every
module under src/nasstudy is read with `ast`, the ones inside functions and TYPE_CHECKING blocks
too, since a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# layer -> what it must not import (a name covers the package or module and everything below it)
FORBIDDEN = {
    "nasstudy.methods": (
        "nasstudy.spaces", "nasstudy.training", "nasstudy.joint_training", "nasstudy.tracking",
        "nasstudy.mlflow_tracking", "nasstudy.stages", "nasstudy.evaluators", "nasstudy.benchmarks",
    ),
    "nasstudy.spaces": (
        "nasstudy.methods", "nasstudy.stages", "nasstudy.benchmarks", "nasstudy.tracking", "nasstudy.mlflow_tracking",
        "nasstudy.cli",
    ),
    "nasstudy.stages": ("nasstudy.benchmarks",),  # the study does not depend on the benchmarks
}  # fmt: skip
ENTRY_POINTS = {"nasstudy.__main__"}  # the only modules that may import nasstudy.cli (none exists yet)
KNOWN_CYCLES: list[set[str]] = []  # none: a new cycle fails the test


def module_names() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted((SRC / "nasstudy").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The nasstudy modules `name` imports (anywhere in the file) -> the first line importing each."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import nasstudy.spaces.mobile.x`: the module part
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def find_cycle(graph: dict[str, dict[str, int]], skip: list[set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None; cycles made only of the modules of one set of
    `skip` (a known exception) are not followed."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def known(a: str, b: str) -> bool:
        return any(a in s and b in s for s in skip)

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, {})):
            if known(node, dep):
                continue
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_lazy_imports(graph):
    """The parse finds imports inside functions and TYPE_CHECKING blocks (else the rules prove nothing)."""
    assert "nasstudy.project" in graph["nasstudy.cli"]
    assert "nasstudy.spaces.nb201_net" in graph["nasstudy.spaces.nb201"]  # in `build` and TYPE_CHECKING
    assert "nasstudy.joint_training" in graph["nasstudy.stages.search"]  # inside search_jointly


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(graph, layer):
    bad = [
        f"{name} line {line} imports {dep}"
        for name, deps in sorted(graph.items())
        if within(name, layer)
        for dep, line in sorted(deps.items())
        if any(within(dep, f) for f in FORBIDDEN[layer])
    ]
    assert not bad, f"{layer} must not import {', '.join(FORBIDDEN[layer])}:\n" + "\n".join(bad)


def test_only_entry_points_import_the_cli(graph):
    bad = [f"{name} line {deps['nasstudy.cli']}" for name, deps in sorted(graph.items()) if "nasstudy.cli" in deps]
    assert all(b.split()[0] in ENTRY_POINTS for b in bad), (
        "nasstudy.cli is the top: move what these need below it (e.g. nasstudy.project):\n" + "\n".join(bad)
    )


def test_no_import_cycle(graph):
    cycle = find_cycle(graph, KNOWN_CYCLES)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_reports_the_cycle():
    g = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert find_cycle(g, []) == ["a", "b", "c", "a"]
    assert find_cycle(g, [{"a", "b", "c"}]) is None
    assert find_cycle({"a": {"b": 1}, "b": {}}, []) is None
