"""The package layout is the architecture: layers import only downwards, and the exact core stays light."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dynatree_lib"
# Each layer may import itself and the layers listed before it.
LAYERS = ["models", "core", "planning", "methods", "bench", "book"]


def _module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved; imports inside functions too,
    unless `top_level_only`: then only what importing the module loads)."""
    package = _module_of(path) if path.name == "__init__.py" else _module_of(path).rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # `from . import kvcache`
    return found


def closure(start: list[Path]) -> set[str]:
    """The outside packages that importing the modules `start` loads, through dynatree_lib's own imports."""
    seen, todo, outside = set(), list(start), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imports(path, top_level_only=True):
            if not name.startswith("dynatree_lib"):
                outside.add(name.split(".")[0])
                continue
            rel = Path(*name.split(".")[1:])
            for candidate in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
                if candidate.is_file() and candidate != PACKAGE / "__init__.py":
                    todo.append(candidate)
    return outside


def test_core_needs_neither_pandas_nor_plotly():
    # Generation.trace_frame imports pandas when called: a convenience, not a dependency of decoding.
    outside = closure(sorted((PACKAGE / "core").glob("*.py")))
    assert "torch" in outside  # the walk did reach the core's imports
    assert not {"pandas", "plotly"} & outside, sorted(outside)


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_downwards(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    for path in sorted((PACKAGE / layer).glob("*.py")):
        for name in imports(path):
            parts = name.split(".")
            if parts[0] == "dynatree_lib" and len(parts) > 1 and parts[1] in LAYERS:
                assert parts[1] in allowed, f"{path.relative_to(PACKAGE)} imports {name} (a layer above {layer})"


def test_no_module_is_long():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert not long, long
