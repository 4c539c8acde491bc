"""Every misuse gets an error that names the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import flowz
from flowz import Settings, step, workflow
from flowz.errors import ConfigError, StoreError, StoreUnavailableError, UsageError
from flowz.store import open_store


@step
async def plain(x: int) -> int:
    return x


@workflow
async def misuses(kind: str) -> str:
    if kind == "sleep":
        await flowz.sleep(-1)
    elif kind == "wait_all":
        await flowz.wait_all([plain(1)])  # type: ignore[list-item]
    elif kind == "schedule":
        flowz.schedule(42)  # type: ignore[arg-type]
    return kind


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("sleep", "non-negative number of seconds, got -1"),
        ("wait_all", "takes handles from flowz.schedule()"),
        ("schedule", "takes calls of @step or @workflow functions, not yet awaited"),
    ],
)
def test_misusing_the_durable_api_in_a_workflow(database_url: str, kind: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        flowz.run(misuses.options(progress=False), kind)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FLOWZ_DATABASE_URL", "mysql://x/y", "is not supported: use sqlite:///"),
        ("FLOWZ_CONCURRENCY", "lots", "FLOWZ_CONCURRENCY='lots' is not a valid int"),
        ("FLOWZ_CONCURRENCY", "0", "concurrency must be at least 1"),
        ("FLOWZ_POOL_SIZE", "0", "pool_size must be at least 1"),
        ("FLOWZ_LEASE_SECONDS", "-3", "positive numbers of seconds"),
        ("FLOWZ_PROGRESS", "maybe", "FLOWZ_PROGRESS='maybe': use 1 or 0"),
        ("FLOWZ_SQLITE_SYNCHRONOUS", "OFF", "use FULL (default) or NORMAL"),
    ],
)
def test_bad_settings_say_which_variable_and_what_to_use(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env()


def test_a_bad_sqlite_url_and_an_unopenable_file_are_clear(tmp_path: Path) -> None:
    async def open_url(url: str) -> None:
        await open_store(Settings(database_url=url))

    with pytest.raises(StoreUnavailableError, match=r"write sqlite:///relative/path\.db"):
        anyio.run(open_url, "sqlite:/nope.db")
    (tmp_path / "a-folder.db").mkdir()
    with pytest.raises(StoreError, match=r"a-folder\.db"):
        anyio.run(open_url, f"sqlite:///{tmp_path / 'a-folder.db'}")


def test_handles_are_not_built_directly() -> None:
    with pytest.raises(TypeError, match=r"come from wf\.start\(\)"):
        flowz.RunHandle()
