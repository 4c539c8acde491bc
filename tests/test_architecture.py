"""Imports point one way: vocabulary <- store <- engine <- runner/worker (style.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "flowz"

# Each module may import only flowz modules of its own layer or below.
LAYERS = {
    "errors": 0, "_types": 0, "_config": 0, "_serde": 0, "_events": 0,
    "store": 1, "store._protocol": 1, "store._models": 1, "store._sqlite": 1,
    "store._postgres": 1, "store._rows": 1, "store._batch": 1,
    "_progress_model": 1, "progress": 1,
    "_registry": 2, "_context": 2, "_decorators": 2, "_gather": 2, "_engine": 2,
    "_worker": 3, "_runner": 3, "cli": 4, "__main__": 4,
}  # fmt: skip
# Third-party packages that only one place may import.
OWNERS = {"sqlmodel": "store", "sqlalchemy": "store", "sqlite3": "store", "psycopg": "store"}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def flowz_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported flowz module, imported at module level?) for every import in the file."""
    name = module_name(path)
    package = name.rsplit(".", 1)[0] if "." in name or path.name == "__init__.py" else ""
    if path.name == "__init__.py":
        package = name
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.append((target, id(node) in top_level))
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = (
                [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
            found.extend((f"!{n}", id(node) in top_level) for n in names if n)
    return found


def test_flowz_modules_import_only_their_layer_or_below() -> None:
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name not in LAYERS:
            continue
        for target, top_level in flowz_imports(path):
            if target.startswith("!") or target not in LAYERS:
                continue
            # A function-level import upward is the one allowed back-reference (wf.run -> runner).
            if top_level:
                assert LAYERS[target] <= LAYERS[name], f"{name} imports {target} (a layer above)"


def test_third_party_packages_have_one_owner() -> None:
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        for target, _ in flowz_imports(path):
            package = target.removeprefix("!").split(".")[0]
            if target.startswith("!") and package in OWNERS:
                assert name.startswith(OWNERS[package]), f"{name} imports {package}"


def test_pickle_is_never_imported() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert all(
            target.removeprefix("!").split(".")[0] not in ("pickle", "marshal", "shelve")
            for target, _ in flowz_imports(path)
        ), path
