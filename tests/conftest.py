from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flowz.store import SqliteStore, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite database that flowz.run / wf.start / workers use through the env."""
    url = f"sqlite:///{tmp_path / 'flowz.db'}"
    monkeypatch.setenv("FLOWZ_DATABASE_URL", url)
    monkeypatch.setenv("FLOWZ_POLL_SECONDS", "0.2")
    yield url


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every store implementation, freshly migrated: the contract suite runs against each."""
    created = SqliteStore(tmp_path / "contract.db")
    await created.migrate()
    try:
        yield created
    finally:
        await created.aclose()
