"""Storage: the `Store` protocol, `open_store(url)`, and the SQLite and PostgreSQL stores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._config import Settings
from ._protocol import Store
from ._sqlite import SqliteStore, path_from_url

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = ["PostgresStore", "SqliteStore", "Store", "open_store"]


def __getattr__(name: str) -> Any:
    # psycopg is imported only when PostgreSQL is used: `import flowz` never needs it.
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(name)


# Databases this process already brought to the current schema: opening one again
# (every wf.start(), wf.run(), handle call) skips the migration's statements.
_migrated: set[str] = set()


async def open_store(settings: Settings) -> Store:
    """Open (and migrate) the store that `settings.database_url` names.

    Example:
        >>> store = await open_store(Settings(database_url="sqlite:///tmp/x.db"))  # doctest: +SKIP
    """
    url = settings.database_url
    if url.startswith("sqlite:"):
        path = path_from_url(url)
        store: Store = SqliteStore(path, synchronous=settings.sqlite_synchronous)
        key = f"sqlite:{path.resolve()}"
        if key not in _migrated or not path.exists():
            await store.migrate()
            _migrated.add(key)
        return store
    from ._postgres import PostgresStore

    postgres = PostgresStore(
        url.replace("postgres://", "postgresql://", 1), max_connections=settings.pool_size
    )
    await postgres.open()
    if url not in _migrated:
        try:
            await postgres.migrate()
        except BaseException:
            await postgres.aclose()
            raise
        _migrated.add(url)
    return postgres
