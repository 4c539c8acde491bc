"""Imports point one way, each module on its own rank (style.md); heavy libraries load late.

Every import counts: module level, function level and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "flowz"

# Bottom to top: a module may import only modules listed before it. `flowz/__init__.py`
# re-exports the API and is exempt.
ORDER = [
    # vocabulary
    "errors", "_types", "_ids", "_clock", "_config", "_logging", "_serde", "_events", "_queues",
    # storage: protocol, shared policy, adapters (loaded when their URL is opened)
    "store._protocol", "store._sql", "store._batch", "store._models", "store._migrate",
    "store._sqlite", "store._pg_connection", "store._postgres", "store",
    # what the query API returns
    "_runs",
    # views
    "_progress_model", "progress",
    # the call protocol, then the engine
    "_registry", "_context", "_tracing", "_gather", "_engine", "_replay",
    # runtime
    "_waiting", "_worker", "_client", "_messages", "_runner",
    # face
    "_decorators", "testing",
    # the dashboard (the ui extra), then the command line that serves it
    "_ui._pages", "_ui._live", "_ui._app", "_ui._serve", "_ui",
    "cli", "__main__",
]  # fmt: skip
RANK = {name: rank for rank, name in enumerate(ORDER)}
# Third-party packages and the flowz modules that alone may import them.
OWNERS = {
    "sqlmodel": {"store._models"},
    "sqlalchemy": {"store._models", "store._migrate"},
    "sqlite3": {"store._sqlite"},
    "cronsim": {"_queues"},
    "psycopg": {"store._pg_connection", "store._postgres"},
    "psycopg_pool": {"store._pg_connection"},
    "rich": {"progress"},
    "typer": {"cli"},
    "starlette": {"_ui._app"},
    "uvicorn": {"_ui._serve"},
    "jinja2": {"_ui._pages"},
    "opentelemetry": {"_tracing"},
}
# What `import flowz` must not load (style.md: heavy libraries load when first used).
HEAVY = ("sqlalchemy", "sqlmodel", "psycopg", "rich", "typer", "pydantic.main", "asyncio")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    return ".".join(path.relative_to(package).with_suffix("").parts).removesuffix(".__init__")


def imports_of(path: Path, root: Path = PACKAGE) -> list[str]:
    """Every module the file imports, at any depth: flowz modules by name, others with '!'."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)]
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            # `from . import _client` names a module; `from ._x import y` names _x.
            submodules = [f"{module}.{a.name}".lstrip(".") for a in node.names]
            named = [m for m in submodules if (root / f"{m.replace('.', '/')}.py").exists()]
            found.extend(named or [module])
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(f"!{node.module}")
        elif isinstance(node, ast.Import):
            found.extend(f"!{a.name}" for a in node.names)
    return found


def modules() -> list[tuple[str, Path]]:
    found = [(module_name(p), p) for p in sorted(PACKAGE.rglob("*.py"))]
    return [(name, path) for name, path in found if name != "__init__"]


def test_every_module_has_a_rank() -> None:
    assert sorted(name for name, _ in modules()) == sorted(ORDER)


def test_imports_point_down_only_so_there_is_no_cycle() -> None:
    violations = [
        f"{name} (rank {RANK[name]}) imports {target} (rank {RANK[target]})"
        for name, path in modules()
        for target in imports_of(path)
        if target in RANK and RANK[target] >= RANK[name]
    ]
    assert violations == []


def test_the_engine_sees_only_the_store_protocol_and_no_view() -> None:
    for name in ("_registry", "_context", "_gather", "_engine"):
        for target in imports_of(PACKAGE / f"{name}.py"):
            if target.startswith("store") or target in ("progress", "_progress_model"):
                assert target == "store._protocol", (name, target)


def test_third_party_packages_have_owners() -> None:
    for name, path in modules():
        for target in imports_of(path):
            package = target.removeprefix("!").split(".")[0]
            if target.startswith("!") and package in OWNERS:
                assert name in OWNERS[package], f"{name} imports {package}"


def test_pickle_is_never_imported() -> None:
    for _, path in modules():
        assert not any(
            t.removeprefix("!").split(".")[0] in ("pickle", "marshal", "shelve")
            for t in imports_of(path)
        ), path


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {m for m in out if m.split(".")[0] in {h.split(".")[0] for h in HEAVY}}


def test_import_flowz_loads_no_heavy_library() -> None:
    loaded = loaded_after("import flowz")
    assert [h for h in HEAVY if h in loaded] == []


def test_the_command_line_loads_only_what_a_command_needs() -> None:
    loaded = loaded_after("import flowz.cli")
    assert [h for h in ("sqlalchemy", "sqlmodel", "psycopg", "rich") if h in loaded] == []


def import_graph(package: Path) -> dict[str, set[str]]:
    """flowz module -> the flowz modules it imports (every kind of import), for any checkout."""
    names = {module_name(p, package) for p in package.rglob("*.py")} - {"__init__"}
    return {
        name: {t for t in imports_of(p, package) if t in names} - {name}
        for p in sorted(package.rglob("*.py"))
        if (name := module_name(p, package)) != "__init__"
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_has_no_cycle() -> None:
    assert cycles(import_graph(PACKAGE)) == []


if __name__ == "__main__":  # python -m tests.test_architecture [path/to/flowz]
    graph = import_graph(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PACKAGE)
    for module, targets in sorted(graph.items()):
        print(f"{module} -> {', '.join(sorted(targets)) or '-'}")
    print("cycles:", cycles(graph) or "none")
