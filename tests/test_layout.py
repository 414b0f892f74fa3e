"""The layout of cl_plugin/: every module belongs to a layer, and imports point down the layers only.

The layers, lowest first, are the ones ARCHITECTURE.md draws: the leaf modules, privacy, the store, then
the stages of the loop in its order, then what wires them together. A module may import its own package
and any layer below it, never one above: the privacy layer cannot reach into the store, the store into
capture, analysis into learning. Every import counts, also those inside functions and under
``TYPE_CHECKING``, since a type named in a signature is a dependency a reader has to follow as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first. A module imports only from its own layer's package(s) and the layers before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("config", "records", "outcomes"),
    ("privacy",),
    ("store",),
    ("capture",),
    ("analysis",),
    ("drift",),
    ("learning",),
    ("abtest",),
    ("serving",),
    ("report",),
    ("graphs", "maintenance", "cli", "web", "__init__"),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str:
    """The top-level part of cl_plugin a module belongs to: ``cl_plugin.store.rows`` -> ``store``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "cl_plugin").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (ROOT / "graphs").rglob("*.py"):
        parts = ("cl_plugin", *path.relative_to(ROOT).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_only(tree: ast.Module) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.stmt)}
    return lines


def _imports(module: str, path: Path, *, runtime: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` of each import of a cl_plugin module; ``runtime``: leave out type-only ones."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    tree = ast.parse(path.read_text())
    skip = _type_only(tree) if runtime else set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == "cl_plugin":  # from cl_plugin import outcomes -> the module it names
                out += [(node.lineno, f"cl_plugin.{a.name}") for a in node.names if a.name in RANK]
            else:
                out.append((node.lineno, target))
    return [(line, target) for line, target in out if target.startswith("cl_plugin.")]


def test_every_module_belongs_to_a_layer() -> None:
    assert {_part(m) for m in _modules()} <= set(RANK), "add the new package to LAYERS and ARCHITECTURE.md"


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for module, path in sorted(_modules().items()):
        rank = RANK[_part(module)]
        for line, target in _imports(module, path):
            if RANK.get(_part(target), -1) > rank:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({_part(module)}) imports {target}")
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", ["privacy", "store", "capture", "analysis", "learning", "report"])
def test_a_stage_package_has_no_import_cycle_inside_it(package: str) -> None:
    modules = {m: p for m, p in _modules().items() if _part(m) == package}
    # At run time: a module may name its package's facade in a type annotation (the store's concern
    # modules name Store) while the facade imports it.
    graph = {
        m: {t for _, t in _imports(m, p, runtime=True) if t in modules and t != m} for m, p in modules.items()
    }
    # A package's __init__ re-exports its modules: edges into it are from its own modules' docs at most.
    graph = {m: deps - {f"cl_plugin.{package}"} for m, deps in graph.items() if m != f"cl_plugin.{package}"}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return [*path, m, d]
            if d not in state and (cycle := visit(d, [*path, m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            assert (cycle := visit(m, [])) is None, " -> ".join(cycle)


def test_the_layers_are_the_ones_the_architecture_map_names() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    missing = [part for parts in LAYERS for part in parts if part != "__init__" and f"`{part}" not in text]
    assert not missing, f"ARCHITECTURE.md does not name {missing}"
