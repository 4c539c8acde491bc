"""Storage: the `Store` protocol, `open_store(url)`, and the SQLite store."""

from __future__ import annotations

from .._config import Settings
from ._protocol import Store
from ._sqlite import SqliteStore, path_from_url

__all__ = ["SqliteStore", "Store", "open_store"]


async def open_store(settings: Settings) -> Store:
    """Open (and migrate) the store that `settings.database_url` names.

    Example:
        >>> store = await open_store(Settings(database_url="sqlite:///tmp/x.db"))  # doctest: +SKIP
    """
    url = settings.database_url
    if url.startswith("sqlite:"):
        store = SqliteStore(path_from_url(url), synchronous=settings.sqlite_synchronous)
        await store.migrate()
        return store
    from ..errors import ConfigError

    raise ConfigError(
        f"database URL {url!r}: the PostgreSQL store is not available in this version of "
        "flowz; use sqlite:///path/to/file.db"
    )
