"""Storage: the `Store` protocol, `open_store(url)`, and the SQLite and PostgreSQL stores.

Nothing heavy loads here: psycopg when a PostgreSQL URL is opened, SQLAlchemy
and sqlmodel only when a schema is created or upgraded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._config import Settings
from ..errors import ConfigError, StoreUnavailableError
from ._protocol import Store
from ._sql import check_schema_version

if TYPE_CHECKING:
    from .._clock import Clock
    from ._postgres import PostgresStore
    from ._sqlite import SqliteStore

__all__ = ["PostgresStore", "SqliteStore", "Store", "open_store", "upgrade_schema"]


def __getattr__(name: str) -> Any:
    if name == "SqliteStore":
        from ._sqlite import SqliteStore

        return SqliteStore
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(name)


# Databases this process already found at the current schema: opening one again
# (every flowz.run(), every handle of another event loop) skips the look.
_current: set[str] = set()


async def open_store(
    settings: Settings, *, clock: Clock | None = None, create: bool = True
) -> Store:
    """Open the store that `settings.database_url` names.

    An empty database gets the schema. One at an older schema is refused with the
    command that upgrades it (`flowz db upgrade`, or `upgrade_schema`); a newer one
    is refused too. `clock` replaces the wall clock (SQLite only: the time-skipping
    clock of `flowz.testing`). With `create=False` (the CLI's read and operate
    commands) a SQLite file that does not exist is an error, not a new database.

    Examples:
        >>> store = await open_store(Settings(database_url="sqlite:///tmp/x.db"))  # doctest: +SKIP
    """
    store, key, where = await _connect(settings, clock, create)
    if key in _current:
        return store
    try:
        found = await store.schema_version()
        if found is None:
            await store.migrate()  # a new database
        else:
            check_schema_version(found, where)
    except BaseException:
        await store.aclose()
        raise
    _current.add(key)
    return store


async def upgrade_schema(settings: Settings) -> list[str]:
    """Bring the database to this flowz's schema; what was done, one line per step."""
    store, key, _ = await _connect(settings, None, create=True)
    try:
        done = await store.migrate()
    finally:
        await store.aclose()
    _current.add(key)
    return done


async def _connect(settings: Settings, clock: Clock | None, create: bool) -> tuple[Store, str, str]:
    """The store, a key naming its database, and where it is (for messages)."""
    url = settings.database_url
    if url.startswith("sqlite:"):
        from ._sqlite import SqliteStore, path_from_url

        path = path_from_url(url)
        key = f"sqlite:{path.resolve()}"
        if not path.exists():  # deleted since this process last looked: look again
            _current.discard(key)
            if not create:
                raise StoreUnavailableError(
                    f"no flowz database at {str(path)!r}: check FLOWZ_DATABASE_URL or --db "
                    "(the default is ./.flowz/flowz.db, relative to this folder)"
                )
        store = SqliteStore(path, synchronous=settings.sqlite_synchronous, clock=clock)
        return store, key, repr(str(path))
    if clock is not None:
        raise ConfigError(
            "a custom clock (time skipping) works with the SQLite store only: PostgreSQL "
            "keeps the database's own clock"
        )
    try:
        from ._postgres import PostgresStore
    except ImportError as exc:
        raise ConfigError(
            f"{url.partition(':')[0]} URLs need psycopg, which is not installed: "
            'pip install "flowz[postgres]"'
        ) from exc

    postgres = PostgresStore(
        url.replace("postgres://", "postgresql://", 1), max_connections=settings.pool_size
    )
    await postgres.open()
    checked: Store = postgres
    return checked, url, f"at {postgres.db.safe_url()}"
