"""What the user sees is true: clean errors, clear messages (issue: the surface)."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

import flowz
from flowz import step, workflow
from tests.test_cli import flowz as run_flowz

ROOT = Path(__file__).parents[1]


class Declined(Exception):
    pass


@step
async def charge(amount: int) -> int:
    raise Declined(f"card declined for {amount}")


@workflow
async def checkout(amount: int) -> int:
    return await charge(amount)


def test_a_failed_run_shows_the_users_error_without_flowz_internal_chains(
    database_url: str,
) -> None:
    with pytest.raises(Declined, match="card declined for 5") as info:
        flowz.run(checkout.options(progress=False), 5)
    shown = "".join(traceback.format_exception(info.value))
    assert "no running event loop" not in shown
    assert "During handling of the above exception" not in shown


def test_a_postgresql_url_without_psycopg_is_one_line() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "from flowz.cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "status", "x", "--db", "postgresql://u@127.0.0.1/db"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLOWZ_PROGRESS": "0"},
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        'flowz: postgresql URLs need psycopg, which is not installed: pip install "flowz[postgres]"'
    ]


@step
async def square(x: int) -> int:
    return x * x


@workflow
async def squares(n: int) -> list[int]:
    return [await square(i) for i in range(n)]


def test_the_run_id_is_printed_first_without_a_terminal(database_url: str) -> None:
    import io

    from rich.console import Console

    from flowz.progress import ProgressView

    out = io.StringIO()
    view = ProgressView(console=Console(file=out, force_terminal=False), mode="lines")
    flowz.run(squares.options(id="found-again", progress=view), 2)
    assert out.getvalue().splitlines()[0] == "flowz run found-again"


def test_read_commands_never_create_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "flowz.db"
    for args in (["status", "x"], ["list"], ["show", "x"], ["watch", "x"], ["cancel", "x"]):
        done = run_flowz({**os.environ}, *args, "--db", f"sqlite:///{missing}")
        assert done.returncode == 1, args
        assert done.stderr.startswith(f"flowz: no flowz database at '{missing}'"), done.stderr
    assert not missing.parent.exists()


def test_reusing_a_run_id_with_other_arguments_is_refused(database_url: str) -> None:
    quiet = squares.options(id="sq", progress=False)
    assert flowz.run(quiet, 3) == [0, 1, 4]
    assert flowz.run(quiet, 3) == [0, 1, 4]  # the same arguments: the stored result
    with pytest.raises(flowz.UsageError, match=r"run 'sq' already exists with other arguments"):
        flowz.run(quiet, 4)


def test_rerunning_a_failed_id_says_how_to_resume_it(database_url: str) -> None:
    failing = checkout.options(id="co", progress=False)
    with pytest.raises(Declined):
        flowz.run(failing, 1)
    with pytest.raises(Declined) as again:
        flowz.run(failing, 1)
    assert any("flowz retry co" in note for note in again.value.__notes__)


FIXED: dict[str, bool] = {"flaky": False}


@step
async def maybe(i: int) -> int:
    if i == 3 and not FIXED["flaky"]:
        raise ValueError("child 3 is broken until fixed")
    return i


@workflow
async def six(n: int) -> int:
    return sum(await flowz.gather_durable(*(maybe(i) for i in range(n))))


async def test_a_resumed_run_is_drawn_from_its_stored_state() -> None:
    import io

    from rich.console import Console

    from flowz.progress import ProgressView
    from flowz.testing import temp_client

    FIXED["flaky"] = False
    async with temp_client() as client:
        with pytest.raises(ValueError, match="broken until fixed"):
            await client.run(six.options(id="six"), 6)
        FIXED["flaky"] = True
        await client.handle("six").retry()
        out = io.StringIO()
        view = ProgressView(console=Console(file=out, width=120), mode="final")
        assert await client.run(six.options(id="six", progress=view), 6) == 15
    # Before, the retried run's tree counted only what ran after the retry: 1/6.
    assert "6/6" in out.getvalue(), out.getvalue()


test_a_resumed_run_is_drawn_from_its_stored_state = pytest.mark.anyio(
    test_a_resumed_run_is_drawn_from_its_stored_state
)


@step
async def fails_now(i: int) -> int:
    raise ValueError(f"child {i} failed for good")


@step(retries=1, retry_delay=30)  # fails once, then waits 30 s: still pending when the run fails
async def fails_then_waits(i: int) -> int:
    raise ConnectionError(f"child {i}: try again later")


@workflow
async def doomed(n: int) -> int:
    children = [fails_now(0), *(fails_then_waits(i) for i in range(1, n))]
    return sum(await flowz.gather_durable(*children))


def test_a_failed_run_cancels_its_unfinished_children(database_url: str) -> None:
    import anyio

    with pytest.raises(ValueError, match="child 0 failed for good"):
        flowz.run(doomed.options(id="doomed", progress=False), 6)

    async def statuses() -> dict[str, str]:
        async with flowz.Client() as client:
            rows = await client.store.list_executions("doomed")
        return {row.id: row.status for row in rows}

    found = anyio.run(statuses)
    # Before, the waiting siblings stayed pending and a worker ran them 30 s after the
    # run had failed. Now the failure cancels them in the transaction that ends the run.
    assert found["doomed"] == "failed" and found["doomed/0/0"] == "failed"
    assert sorted(found[f"doomed/0/{i}"] for i in range(1, 6)) == ["cancelled"] * 5

    async def retry() -> None:
        async with flowz.Client() as client:
            await client.handle("doomed").retry()

    anyio.run(retry)
    # A retry of the run schedules what its failure cancelled again.
    assert set(anyio.run(statuses).values()) == {"pending"}


def test_flowz_run_prints_the_result_once(tmp_path: Path) -> None:
    env = {**os.environ, "FLOWZ_DATABASE_URL": f"sqlite:///{tmp_path / 'once.db'}"}
    env.pop("FLOWZ_PROGRESS", None)  # the view on (plain lines: no terminal here)
    done = run_flowz(env, "run", "tests.cli_app:squares", "--input", "[4]")
    assert done.returncode == 0 and done.stdout == "[0, 1, 4, 9]\n"
    assert "succeeded" in done.stderr and "[0, 1, 4, 9]" not in done.stderr  # once, not twice
