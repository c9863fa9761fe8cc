"""The static import graph of the package, read from the source (no module is imported)."""
from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import NamedTuple

PACKAGE = Path(__file__).resolve().parents[2] / "mcnet_rt"


class Import(NamedTuple):
    source: str  # dotted module name
    target: str  # the module it names (a submodule when `from package import submodule`)
    names: frozenset[str]
    line: int


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _targets(source: str, path: Path, node: ast.ImportFrom | ast.Import) -> list[tuple[str, frozenset[str]]]:
    if isinstance(node, ast.Import):
        return [(a.name, frozenset()) for a in node.names if a.name.split(".")[0] == "mcnet_rt"]
    if node.level:
        package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "mcnet_rt":
        return []
    known = modules()
    submodules = [a.name for a in node.names if f"{base}.{a.name}" in known or a.name in ("_C", "_ops")]
    rest = frozenset(a.name for a in node.names if a.name not in submodules)
    return [(f"{base}.{name}", frozenset()) for name in submodules] + ([(base, rest)] if rest else [])


@functools.cache
def imports() -> tuple[Import, ...]:
    """Every import of a `mcnet_rt` module by another, at module level or inside functions alike."""
    found = []
    for source, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found += [Import(source, target, names, node.lineno) for target, names in _targets(source, path, node)]
    return tuple(found)
