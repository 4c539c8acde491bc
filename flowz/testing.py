"""Test helpers: a client on a fresh temporary database, and a clock that skips waiting.

Examples:
    >>> from flowz.testing import temp_client
    >>> async def test_onboarding() -> None:
    ...     async with temp_client(skip_time=True) as client:
    ...         # flowz.sleep(7 * 86400) inside returns at once; flowz.now() moved a week
    ...         assert await client.run(onboarding, "ada@example.com") == "welcomed"
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ._client import Client
from ._clock import SkippingClock
from ._config import Settings
from .errors import UsageError

__all__ = ["SkippingClock", "temp_client"]


@asynccontextmanager
async def temp_client(
    *, postgres: str | None = None, skip_time: bool = False, **settings: Any
) -> AsyncIterator[Client]:
    """A `flowz.Client` on a new, empty database that is deleted afterwards.

    Args:
        postgres: a PostgreSQL server URL whose user may create databases: the test
            gets a database of its own there, dropped at the end. Default: a SQLite
            file in a temporary folder.
        skip_time: time jumps ahead whenever nothing is running, so durable sleeps
            and long retry delays end at once while `flowz.now()` advances by the
            skipped time (SQLite only).
        settings: other `flowz.Settings` fields (the live view is off unless
            `progress=True`).

    Nothing reads or changes `os.environ`; the client's runs use an in-process
    worker, as `client.run()` always does.
    """
    settings.setdefault("progress", False)
    settings.setdefault("poll_seconds", 0.2)
    clock = SkippingClock() if skip_time else None
    if postgres is not None:
        if skip_time:
            raise UsageError(
                "skip_time works with the SQLite test store only (PostgreSQL keeps the "
                "server's clock): drop postgres= or skip_time=True"
            )
        from .store._pg_connection import scratch_database  # psycopg: the [postgres] extra

        async with (
            scratch_database(postgres) as url,
            Client(settings=Settings(database_url=url, **settings)) as client,
        ):
            yield client
        return
    with tempfile.TemporaryDirectory(prefix="flowz-test-") as folder:
        url = f"sqlite:///{Path(folder) / 'flowz.db'}"
        async with Client(settings=Settings(database_url=url, **settings), clock=clock) as client:
            yield client
