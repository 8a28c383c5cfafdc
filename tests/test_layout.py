"""The package's shape, as README's "Layout" draws it: layers, each importing only below.

Stages (mapping, delivery, dead letters, the KCL glue, ...) sit below ``config`` and take
plain values or small value objects built by :mod:`consumer.wiring`; a stage that
imported ``consumer.config`` would again depend on every setting, and an import cycle
would make the order of imports matter. The drawing is read from the README, so the
rule is written once. Every import counts, including those inside functions and under
``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "consumer"
CONFIG = "consumer.config"


def module_name(path: Path) -> str:
    """``consumer/mapping.py`` -> ``consumer.mapping``; a package's ``__init__`` is the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether ``name`` (``consumer.x.y``) is a module or package of ours."""
    relative = Path(*name.split("."))
    root = PACKAGE.parent
    return (root / relative).with_suffix(".py").is_file() or (root / relative).is_dir()


def imports_of(path: Path) -> set[str]:
    """The modules of the consumer package that ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "consumer"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "consumer":
                continue
            for alias in node.names:
                # `from consumer import wiring` names a module; `from consumer.x import Y` a name.
                child = f"{node.module}.{alias.name}"
                found.add(child if is_module(child) else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every module of the package, with the package modules it imports (itself left out)."""
    graph = {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}
    return {name: targets - {name} for name, targets in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for target in sorted(graph.get(name, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        cycle = visit(name)
        if cycle:
            return cycle
    return None


def test_the_graph_sees_the_imports_it_should() -> None:
    """The walk finds known imports (top-level, inside functions, `from consumer import x`)."""
    graph = import_graph()
    assert CONFIG in graph["consumer.wiring"]
    assert "consumer.wiring" in graph["consumer.__main__"]  # imported inside a function
    assert "consumer.settings_parsers" in graph[CONFIG]  # `from consumer import ... as p`
    assert "consumer.record" in graph["consumer.mapping"]


def test_no_import_cycles() -> None:
    """The package's imports form no cycle, lazy imports included."""
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_cycles() -> None:
    """A cycle is reported as a path, so the test above is not vacuous."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


README = PACKAGE.parent / "README.md"


def drawn_layers() -> dict[str, int]:
    """README's layer block: ``layer N  <title>  mod, mod`` -> {consumer.mod: N}."""
    text = README.read_text(encoding="utf-8")
    block = text.split("Who may import whom", 1)[1].split("```", 2)[1]
    layers: dict[str, int] = {}
    for line in block.strip().splitlines():
        words = line.split()
        level = int(words[1])
        names = line.split("  ")[-1].split(",")
        for name in (n.strip() for n in names):
            assert f"consumer.{name}" not in layers, f"{name} is drawn twice"
            layers[f"consumer.{name}"] = level
    return layers


def test_the_readme_draws_every_module_once() -> None:
    """Each module of the package is in exactly one layer of README's drawing."""
    modules = set(import_graph()) - {"consumer"}
    assert set(drawn_layers()) == modules


def test_modules_import_only_from_lower_layers() -> None:
    """The drawing is the rule: every import goes to a lower layer."""
    layers = drawn_layers()
    wrong = [
        f"{module} (layer {layers[module]}) imports {target} (layer {layers[target]})"
        for module, targets in import_graph().items()
        if module in layers
        for target in targets
        if target in layers and layers[target] >= layers[module]
    ]
    assert not wrong, "\n".join(wrong)
