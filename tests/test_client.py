"""flowz.Client, run options, registries, the default client's lifetime, flowz.testing."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import flowz
from flowz import gather_durable, step, workflow
from flowz.testing import temp_client

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.anyio


@step
async def double(x: int) -> int:
    return 2 * x


started: list[int] = []
stopped: list[int] = []
all_in: dict[str, anyio.Event] = {}  # "started", "stopped": set when the 4th arrives


@step
async def long_call(i: int) -> int:
    started.append(i)
    if len(started) == 4:
        all_in["started"].set()
    try:
        await anyio.sleep(3600)
    finally:
        stopped.append(i)
        if len(stopped) == 4:
            all_in["stopped"].set()
    return i


@workflow
async def long_fan(n: int) -> int:
    return sum(await gather_durable(*(long_call(i) for i in range(n))))


async def test_cancel_stops_running_children_within_about_a_second(database_url: str) -> None:
    """Not at the next heartbeat (a third of the 30 s lease)."""
    started.clear()
    stopped.clear()
    all_in.update(started=anyio.Event(), stopped=anyio.Event())
    async with flowz.Client() as client, anyio.create_task_group() as tg:

        async def run() -> None:
            with pytest.raises(flowz.RunCancelledError):
                await client.run(long_fan.options(id="long", progress=False), 4)

        tg.start_soon(run)
        with anyio.fail_after(20):
            await all_in["started"].wait()
        assert await client.handle("long").cancel() == 5
        with anyio.fail_after(5):  # the check runs every second; the heartbeat every 10 s
            await all_in["stopped"].wait()
        assert sorted(stopped) == [0, 1, 2, 3]


@workflow
async def fan(n: int) -> int:
    return sum(await gather_durable(*(double(i) for i in range(n))))


async def test_a_client_talks_to_the_database_it_is_given_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWZ_DATABASE_URL", "nosuchdb://never")  # not even a valid URL
    settings = flowz.Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", progress=False)
    async with (
        flowz.Client(settings=settings) as a,
        flowz.Client(f"sqlite:///{tmp_path / 'b.db'}", settings=settings) as b,
    ):
        assert await a.run(fan.options(id="same"), 3) == 6
        assert await b.run(fan.options(id="same"), 4) == 12  # another database: another run
        handle = a.handle("same", fan)
        assert await handle.status() == flowz.Status.SUCCEEDED
        assert await handle.result() == 6
        assert await b.handle("same").result() == 12  # untyped: the stored JSON
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()
    async with flowz.Client(f"sqlite:///{tmp_path / 'c.db'}") as c:  # no settings: url wins
        assert await c.run(fan.options(progress=False), 2) == 2


async def test_a_client_starts_runs_and_gives_handles(tmp_path: Path) -> None:
    async with temp_client() as client:
        handle = await client.start(fan.options(id="later"), 5)
        assert await handle.status() == flowz.Status.PENDING  # no worker ran it
        assert await client.run(fan.options(id="later"), 5) == 20  # this one works on it
        assert await handle.result() == 20
    with pytest.raises(flowz.UsageError, match=r"not open: use `async with flowz\.Client"):
        _ = client.store


def test_id_as_a_keyword_gets_a_migration_message(database_url: str) -> None:
    with pytest.raises(flowz.UsageError, match=r"id= is an option of the run.*fan.options\(id="):
        flowz.run(fan, 3, id="old-style")  # type: ignore[call-arg]


custom = flowz.Registry()


@step(registry=custom)
async def triple(x: int) -> int:
    return 3 * x


@workflow(registry=custom)
async def custom_fan(n: int) -> int:
    return sum(await gather_durable(*(triple(i) for i in range(n)))) + await triple(1)


async def test_a_workflow_of_another_registry_runs_end_to_end() -> None:
    assert custom.names() == ["tests.test_client:custom_fan", "tests.test_client:triple"]
    assert "tests.test_client:custom_fan" not in flowz._registry.default_registry().names()
    async with temp_client() as client:
        with anyio.fail_after(20):  # it used to wait forever: no worker knew the names
            assert await client.run(custom_fan, 4) == 3 * 6 + 3


def test_wf_run_uses_the_workflows_registry(database_url: str) -> None:
    async def main() -> int:
        with anyio.fail_after(20):
            return await custom_fan.options(progress=False).run(3)

    assert anyio.run(main) == 3 * 3 + 3


def test_the_worker_command_refuses_what_is_not_a_registry() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowz",
            "worker",
            "tests.cli_app",
            "--registry",
            "tests.cli_app:squares",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("flowz: --registry tests.cli_app:squares: <flowz workflow")
    assert "is not a flowz.Registry" in done.stderr


def test_wf_run_and_start_close_the_client_they_open(database_url: str) -> None:
    async def main() -> int:
        handle = await fan.start(2)  # its client is closed when start returns
        assert await fan.options(progress=False).run(3) == 6
        async with flowz.Client() as client:
            assert await client.store.list_workers() == []  # wf.run's worker deregistered
        # The handle opens a client of its own. (wf.run's worker may have run it too.)
        assert await handle.status() in (flowz.Status.PENDING, flowz.Status.SUCCEEDED)
        await handle.cancel()
        return await fan.options(progress=False).run(1)

    assert asyncio.run(main()) == 0


@workflow
async def onboarding(email: str) -> tuple[str, float]:
    started = await flowz.now()
    await flowz.sleep(7 * 86400)  # a week
    await flaky_reminder(email)
    ended = await flowz.now()
    return email, (ended - started).total_seconds()


failures: dict[str, int] = {}


@step(retries=1, retry_delay=3600)  # an hour before the retry
async def flaky_reminder(email: str) -> str:
    failures[email] = failures.get(email, 0) + 1
    if failures[email] == 1:
        raise ConnectionError("mail server down")
    return "sent"


async def test_skipping_time_makes_a_week_of_sleep_and_an_hour_of_retry_instant() -> None:
    started = anyio.current_time()
    async with temp_client(skip_time=True) as client:
        email, waited = await client.run(onboarding, "ada@example.com")
    assert email == "ada@example.com" and failures[email] == 2
    assert waited >= 7 * 86400 + 0.8 * 3600  # flowz.now() moved by the skipped time
    assert anyio.current_time() - started < 10  # wall time: seconds, not a week
    assert dt.timedelta(seconds=waited) < dt.timedelta(days=7, hours=2)


async def test_a_test_database_on_postgresql(postgres_template: str) -> None:
    from tests.conftest import POSTGRES_URL

    async with temp_client(postgres=POSTGRES_URL) as client:
        assert client.settings.database_url != POSTGRES_URL
        assert await client.run(fan, 4) == 12
    with pytest.raises(flowz.UsageError, match="skip_time works with the SQLite test store only"):
        async with temp_client(postgres=POSTGRES_URL, skip_time=True):
            pass


test_a_test_database_on_postgresql = pytest.mark.postgres(test_a_test_database_on_postgresql)


def test_wrong_argument_types_are_mypy_errors() -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "tests/typing_calls.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = sorted(
        {line.split(":")[1] for line in checked.stdout.splitlines() if ": error:" in line}
    )
    expected = sorted(
        str(number)
        for number, line in enumerate(
            (ROOT / "tests" / "typing_calls.py").read_text().splitlines(), start=1
        )
        if line.rstrip().endswith("# mypy: error")
    )
    assert errors == expected, checked.stdout
