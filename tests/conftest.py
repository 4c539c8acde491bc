from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from flowz import Settings
from flowz.store import SqliteStore, Store, open_store

POSTGRES_URL = os.environ.get("FLOWZ_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")


# `pytest --hypothesis-profile long`: the hand-run depth of the model-based store tests.
hypothesis_settings.register_profile(
    "long",
    max_examples=3000,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-runs",
        type=int,
        default=30,
        help="seeded kill -9 iterations per store in tests/test_faults.py (default 30)",
    )
    parser.addoption(
        "--soak-minutes",
        type=float,
        default=2.0,
        help="how long `pytest -m soak` runs workflows and kills workers (default 2)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The soak runs only when asked for by name (`-m soak`): it is for hand runs."""
    if "soak" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="a hand-run soak: pytest -m soak --soak-minutes 30")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated database built once per session; each test clones it (CREATE ... TEMPLATE)."""
    import psycopg

    name = f"flowz_tpl_{uuid.uuid4().hex[:12]}"
    try:
        admin_execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc}). Start it, set "
            "FLOWZ_TEST_POSTGRES_URL, or deselect these tests with -m 'not postgres'."
        )

    async def migrate() -> None:
        store = await open_store(Settings(database_url=with_database(POSTGRES_URL, name)))
        await store.aclose()

    # In a thread of its own: the first test to ask may already run in an event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, migrate).result()
    try:
        yield name
    finally:
        admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A fresh database of this test's own, with the schema already in place."""
    name = f"flowz_t_{uuid.uuid4().hex[:12]}"
    admin_execute(f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
    try:
        yield with_database(POSTGRES_URL, name)
    finally:
        admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=ENGINES)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh database, on each engine, that flowz.run / wf.start / workers use via the env."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'flowz.db'}"
    monkeypatch.setenv("FLOWZ_DATABASE_URL", url)
    monkeypatch.setenv("FLOWZ_POLL_SECONDS", "0.2")
    yield url


@pytest.fixture(params=ENGINES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every store implementation, freshly migrated: the contract suite runs against each."""
    created: Store
    if request.param == "postgres":
        created = await open_store(Settings(database_url=request.getfixturevalue("postgres_url")))
    else:
        created = SqliteStore(tmp_path / "contract.db")
        await created.migrate()
    try:
        yield created
    finally:
        await created.aclose()
