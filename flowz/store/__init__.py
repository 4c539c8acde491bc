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


async def open_store(settings: Settings) -> Store:
    """Open (and migrate) the store that `settings.database_url` names.

    Example:
        >>> store = await open_store(Settings(database_url="sqlite:///tmp/x.db"))  # doctest: +SKIP
    """
    url = settings.database_url
    if url.startswith("sqlite:"):
        store: Store = SqliteStore(path_from_url(url), synchronous=settings.sqlite_synchronous)
        await store.migrate()
        return store
    from ._postgres import PostgresStore

    postgres = PostgresStore(url.replace("postgres://", "postgresql://", 1))
    await postgres.open()
    try:
        await postgres.migrate()
    except BaseException:
        await postgres.aclose()
        raise
    return postgres
