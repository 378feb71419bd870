"""Imports run one way (docs/design.md, "Layers"): a module imports only from its own layer or
the layers below it, so that the IR never depends on a frontend, analyses never on passes, and
nothing in the library on the API or the CLI above it.

The rule is read from the source (``ast``), never by importing: a violation is named with the
importing module, the line and the imported module.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# lowest first; a module may import from its own layer and every layer before it
LAYERS = [
    ("ir", ["ir", "_version"]),
    ("frontend, analysis, numerics", ["frontend", "analysis", "numerics"]),
    ("passes", ["passes"]),
    ("backends", ["backends"]),
    ("api", ["api", "equivalence", "compare", "surgery", "surgery_check", "__init__"]),
    ("cli", ["cli"]),
]
RANK = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}


def _modules(root: pathlib.Path):
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("tests", "benchmarks", "examples", "docs") or rel.parts[0].startswith("."):
            continue
        if rel.parts[0] not in RANK and rel.stem not in RANK:
            continue
        yield rel


def _top(rel: pathlib.PurePath) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported(rel: pathlib.PurePath, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Top-level kgraft names an import statement reaches (``kgraft.passes.split`` -> ``passes``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level:
        package = list(rel.parts[:-1])
        base = package[:len(package) - node.level + 1]
        names = [".".join(["kgraft", *base, *([node.module] if node.module else [])])]
        if not base and not node.module:  # ``from .. import analysis``
            names = ["kgraft." + a.name for a in node.names]
        elif not node.module:
            names = [".".join(["kgraft", *base, a.name]) for a in node.names]
    else:
        names = [node.module or ""]
    tops = []
    for name in names:
        parts = name.split(".")
        if parts[0] == "kgraft":
            tops.append(parts[1] if len(parts) > 1 else "__init__")
    return tops


def _violations(root: pathlib.Path = ROOT) -> list[str]:
    found = []
    for rel in _modules(root):
        own = RANK[_top(rel)]
        for node in ast.walk(ast.parse((root / rel).read_text())):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for top in _imported(rel, node):
                if RANK.get(top, -1) > own:
                    found.append(f"{rel}:{node.lineno} imports kgraft.{top} "
                                 f"({LAYERS[RANK[top]][0]} layer, above {LAYERS[own][0]})")
    return found


def test_no_module_imports_above_its_layer():
    assert _violations() == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The test above could pass by reading nothing: plant a violation and see it named."""
    fake = tmp_path / "ir"
    fake.mkdir()
    (fake / "bad.py").write_text("from ..passes import split\n")
    assert _violations(tmp_path) == ["ir/bad.py:1 imports kgraft.passes (passes layer, above ir)"]


@pytest.mark.parametrize("layer", [tops for _, tops in LAYERS])
def test_every_layer_exists(layer):
    assert any((ROOT / top).exists() or (ROOT / f"{top}.py").exists() for top in layer)


CLI_SHARED = {"app", "ui", "options", "models", "outputs"}


def test_cli_commands_do_not_borrow_from_each_other():
    """A subcommand module uses the CLI's shared modules, never another subcommand's internals."""
    borrowed = []
    for path in sorted((ROOT / "cli").glob("*.py")):
        if path.stem in CLI_SHARED | {"__init__"}:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module not in CLI_SHARED:
                borrowed.append(f"cli/{path.name}:{node.lineno} imports cli.{node.module}")
    assert borrowed == []
