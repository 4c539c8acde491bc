"""The `flowz` command line (typer). Thin: each command calls the public API or a worker."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer

from . import __version__
from ._config import Settings
from ._registry import default_registry
from ._worker import serve
from .errors import FlowzError, UsageError
from .store import open_store

__all__ = ["app", "main"]

app = typer.Typer(
    name="flowz",
    help="Durable workflows that feel like plain async Python.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def load_module(spec: str) -> None:
    """Import a dotted module or a .py file so that its decorated functions register."""
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec).resolve()
        if not path.is_file():
            raise UsageError(f"no such file: {spec}")
        # Imported under its file name, the journal name a script run as __main__ uses.
        sys.path.insert(0, str(path.parent))
        spec = path.stem
    elif str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise UsageError(
                f"cannot import {spec!r}: no such module (run from the folder that holds it, "
                "or give the path to its .py file)"
            ) from exc
        raise UsageError(f"cannot import {spec!r}: {exc}") from exc
    except Exception as exc:
        raise UsageError(f"importing {spec!r} failed: {type(exc).__name__}: {exc}") from exc


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowz {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Durable workflows that feel like plain async Python."""


@app.command()
def worker(
    modules: Annotated[
        list[str], typer.Argument(help="Modules (dotted, or .py paths) whose functions to run.")
    ],
    db: Annotated[
        str | None,
        typer.Option(
            envvar="FLOWZ_DATABASE_URL", help="Database URL (sqlite:/// or postgresql://)."
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(envvar="FLOWZ_CONCURRENCY", help="Executions run at once [default: 64]."),
    ] = None,
    queue: Annotated[
        str | None, typer.Option(envvar="FLOWZ_QUEUE", help="Queue to take work from.")
    ] = None,
) -> None:
    """Run workflows and steps from MODULES until SIGINT or SIGTERM.

    Example: FLOWZ_DATABASE_URL=postgresql://host/db flowz worker pipeline
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for module in modules:
        load_module(module)
    settings = Settings.from_env(database_url=db, concurrency=concurrency, queue=queue)

    async def main() -> None:
        store = await open_store(settings)
        try:
            await serve(store, default_registry(), settings)
        finally:
            with anyio.CancelScope(shield=True):
                await store.aclose()

    anyio.run(main)


def main() -> None:
    """Entry point of the `flowz` command: flowz errors become one line and exit code 1."""
    try:
        app()  # usage errors: typer prints them and exits 2
    except FlowzError as exc:
        typer.echo(f"flowz: {exc}", err=True)
        sys.exit(1)
