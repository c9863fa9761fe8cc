"""The layout rules of docs/architecture.md hold in the code: every import of one part of `mcnet_rt` by another is
allowed by the page's table, no module imports itself back through others, and no function grows past the size
a reader takes in at once. The table is read from the page, so the page and the code cannot drift apart."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from support.imports import Import, imports, modules

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "architecture.md"
MAX_FUNCTION_LINES = 70
NATIVE = {"mcnet_rt._C": "ops", "mcnet_rt._ops": "ops"}  # built libraries, the ops layer's own


def rules() -> dict[str, set[str]]:
    """`part` -> the parts (or `part.module`s) it may import, from the rows of the page's table."""
    table = {}
    for line in PAGE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[\w.]+/?`", cells[0]):
            allowed = set(re.findall(r"`([\w.]+)/?`", cells[2]))
            table[cells[0].strip("`/")] = allowed
    return table


def part(module: str) -> str:
    """The row of the table a module belongs to: the package's own `__init__` is `mcnet_rt`."""
    if module in NATIVE:
        return NATIVE[module]
    return module.split(".")[1] if "." in module else "mcnet_rt"


def allowed(edge: Import, table: dict[str, set[str]]) -> bool:
    source, target = part(edge.source), part(edge.target)
    if source == target or edge.names == frozenset({"__version__"}):
        return True
    inner = edge.target.removeprefix("mcnet_rt.")
    return any(inner == rule or inner.startswith(rule + ".") for rule in table[source])


def test_the_page_has_a_row_for_every_part():
    table = rules()
    parts = {part(m) for m in modules()}
    assert parts - set(table) == set(), "parts of mcnet_rt missing from docs/architecture.md's table"
    assert set(table) - parts == set(), "rows of docs/architecture.md's table that name no part of mcnet_rt"
    named = {rule.split(".")[0] for rules_ in table.values() for rule in rules_}
    assert named <= set(table), "the table allows imports of parts it does not list"


def test_every_import_is_allowed_by_the_page():
    table = rules()
    wrong = [f"{e.source} imports {e.target} (line {e.line})" for e in imports() if not allowed(e, table)]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_back():
    """Imports inside functions count: a lazy import only hides a circle until the day it runs first."""
    graph: dict[str, set[str]] = {}
    for edge in imports():
        if edge.names != frozenset({"__version__"}):
            graph.setdefault(edge.source, set()).add(edge.target)
    circles = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_no_function_is_longer_than_a_screen():
    long = []
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines >= MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)
