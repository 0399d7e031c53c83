"""The layout holds its rules: no import circles, nothing imports ``main.py``, and strategies
and the risk manager depend on plain data only (docs/architecture.md explains the rules).

The import graph is read from the source with :mod:`ast`, not by importing anything, so a
circle that Python happens to tolerate (a name looked up late, an import under
``if TYPE_CHECKING:``) is caught as well. Every import statement counts, wherever it sits:
module level, ``if TYPE_CHECKING:`` blocks, and imports inside functions. A function-level
import is a fine way to defer a heavy dependency (``main.py`` imports the backtester only for
``main.py backtest``), but not to hide a circle: a circle through a function is still two
modules that each need the other.

Only the product counts (every module but ``tests/`` and ``bench/``, which drive it from
outside). An import of ``a.b`` is an edge to the deepest project module it names (``from
pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``'s
``__init__``); the parent packages Python runs on the way are docstrings (checked below) and
are not counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = {"tests", "bench", ".venv", ".git", "data", "models", "docs"}

#: What strategies and the risk manager may import: the time seam and exception tree (core),
#: bars, calendar and indicators (market), the portfolio snapshot (engine.portfolio), and
#: each other within strategies/.
PLAIN_DATA = ("core", "market", "engine.portfolio", "strategies")


#: The rows of docs/architecture.md's picture, top first: a module imports only modules of its
#: own row or of rows below it. A module belongs to the row of its longest listed prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("main",),
    ("backtest",),
    ("engine", "ops"),  # the loop (engine.portfolio is listed lower) and the operator's tools
    ("config", "api_gateway", "ai_analyzer", "risk_manager", "order_executor", "pdt_manager",
     "alerter", "gap_risk_manager", "market_status_manager", "strategies"),  # the seed's components
    ("execution",),  # the order executor's parts: submission, tracking, legs, cancels, protection, emergency stop
    ("alerts",),  # the alerter's parts: channel interface and channels, scrubbing, throttle, sender
    ("settings",),  # config's parts (sections, rules, problems, sources) behind the config face
    ("journal",),
    ("ai",),
    ("analytics",),
    ("broker",),
    ("simulator",),
    ("engine.portfolio",),
    ("market",),
    ("core",),
)


def module_name(path: Path) -> str:
    """``engine/trading_system.py`` -> ``engine.trading_system``; a package's ``__init__`` -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    """Every module of the product, by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        if OUTSIDE.intersection(path.relative_to(ROOT).parts[:1]):
            continue
        found[module_name(path)] = path
    return found


def _named(node: ast.Import | ast.ImportFrom, own: str, is_package: bool) -> Iterator[tuple[str, ...]]:
    """Per imported name, the dotted names it may refer to, in the order to try them."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield (alias.name,)
        return
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        package = own.split(".") if is_package else own.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    for alias in node.names:
        yield (f"{base}.{alias.name}", base)  # `from pkg import module`, else a name of pkg


def _deepest(name: str, modules: dict[str, Path]) -> str | None:
    parts = name.split(".")
    for depth in range(len(parts), 0, -1):
        if ".".join(parts[:depth]) in modules:
            return ".".join(parts[:depth])
    return None


def imports_of(path: Path, own: str, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``path`` (module ``own``) imports, wherever the statement sits."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for choices in _named(node, own, is_package):
            exact = [name for name in choices[:-1] if name in modules]
            target = exact[0] if exact else _deepest(choices[-1], modules)
            if target is not None:
                found.add(target)
    found.discard(own)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _plain(name: str) -> bool:
    return any(name == allowed or name.startswith(allowed + ".") for allowed in PLAIN_DATA)


# --- the checker itself sees what it must ------------------------------------------------


def test_the_checker_finds_a_circle_hidden_in_a_function_and_under_type_checking(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    # the two disguises a circle takes in Python, read from source
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text('"""doc"""\n')
    (tmp_path / "pkg" / "one.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.two import Thing\n")
    (tmp_path / "pkg" / "two.py").write_text("def f():\n    from pkg import one\n    return one\n")
    modules = {"pkg": tmp_path / "pkg" / "__init__.py", "pkg.one": tmp_path / "pkg" / "one.py",
               "pkg.two": tmp_path / "pkg" / "two.py"}
    graph = {name: imports_of(path, name, modules) for name, path in modules.items()}
    assert graph == {"pkg": set(), "pkg.one": {"pkg.two"}, "pkg.two": {"pkg.one"}}
    assert find_cycles(graph) == [["pkg.one", "pkg.two"]]


def test_the_graph_covers_the_product() -> None:
    graph = import_graph()
    for module in ("main", "risk_manager", "engine.trading_system", "engine.portfolio", "broker.models",
                   "journal.journal", "simulator.market", "simulator.bars", "strategies.base"):
        assert module in graph, module
    assert "engine.trading_system" in reachable(graph, "main")
    assert {"risk_manager", "order_executor", "journal.journal"} <= graph["engine.trading_system"]


# --- the rules --------------------------------------------------------------------------------


def test_no_import_circles_among_the_products_modules() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "modules that import each other (directly or in a ring): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_nothing_imports_main() -> None:
    graph = import_graph()
    importers = sorted(name for name, targets in graph.items() if "main" in targets)
    assert importers == [], f"main.py is the entry point, nothing below imports it: {importers}"


def test_strategies_and_the_risk_manager_depend_on_plain_data_only() -> None:
    graph = import_graph()
    readers = ["risk_manager", *sorted(name for name in graph if name.startswith("strategies"))]
    assert len(readers) > 5
    for reader in readers:
        beyond = sorted(name for name in reachable(graph, reader) if not _plain(name))
        assert beyond == [], f"{reader} reaches beyond plain data types: {beyond}"
        assert "engine.trading_system" not in reachable(graph, reader)


def layer_of(module: str) -> int:
    """The row of ``module`` in :data:`LAYERS` (its longest matching prefix decides)."""
    best: tuple[int, int] | None = None  # (prefix length, row)
    for row, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), row)
    assert best is not None, f"{module} is in no row of LAYERS: add it where it belongs"
    return best[1]


def test_each_row_of_the_picture_imports_only_its_own_row_and_rows_below() -> None:
    graph = import_graph()
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) < layer_of(a))
    assert upward == [], f"imports that climb the layers of docs/architecture.md: {upward}"
    assert layer_of("engine.portfolio") > layer_of("risk_manager") > layer_of("engine.trading_system")


def test_core_imports_nothing_of_the_project_and_market_only_core() -> None:
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("core."):
            assert {t for t in targets if not t.startswith("core.")} == set(), name
        if name.startswith("market."):
            assert {t for t in targets if not t.startswith(("core.", "market."))} == set(), name


def test_package_init_files_are_docstrings() -> None:
    for name, path in product_modules().items():
        if path.name != "__init__.py" or name in {"strategies", "simulator"}:
            continue
        body = ast.parse(path.read_text(encoding="utf-8")).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), (
            f"{path.relative_to(ROOT)}: a package's __init__ is its docstring (import the module itself)")
