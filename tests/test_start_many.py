"""Batch starts: wf.start_many / client.start_many enqueue many runs in a few transactions."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

import flowz
from flowz import Client, Settings, workflow

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@workflow
async def add(a: int, b: int = 0) -> int:
    return a + b


@workflow
async def echo(value: object) -> object:
    return value


def client_for(tmp_path: Path) -> Client:
    return Client(settings=Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", progress=False))


async def test_each_item_is_one_runs_arguments(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        handles = await client.start_many(add, [(1, 2), {"a": 5}, (7,)])
        assert len({h.id for h in handles}) == 3
        rows = [await client.store.get_execution(h.id) for h in handles]
        assert [r.input for r in rows if r] == [
            {"a": 1, "b": 2},
            {"a": 5},
            {"a": 7},
        ]
        assert all(r is not None and r.status == "pending" for r in rows)
        # A worker takes them like any run: resume one by id here.
        assert await client.run(add.options(id=handles[0].id), 1, 2) == 3
        singles = await client.start_many(echo, ["x", (["a", "list"],), ({"k": 1},)])
        inputs = [(await client.get_run(h.id)).name for h in singles]
        assert inputs == [echo.name] * 3
        assert [
            r.input for r in [await client.store.get_execution(h.id) for h in singles] if r
        ] == [{"value": "x"}, {"value": ["a", "list"]}, {"value": {"k": 1}}]


async def test_new_ids_are_uuid7_in_the_order_the_runs_were_made(tmp_path: Path) -> None:
    # Time-ordered ids put new rows at the end of the id indexes (start_many ~2x on SQLite).
    async with client_for(tmp_path) as client:
        first = await client.start(add, 1)
        await anyio.sleep(0.002)  # the next millisecond at least
        many = await client.start_many(add, [(i,) for i in range(3)])
        ids = [first.id, *(h.id for h in many)]
    assert {uuid.UUID(i).version for i in ids} == {7}
    assert ids[0] < min(ids[1:])


async def test_ids_name_the_runs_and_a_second_start_is_a_no_op(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        days = [f"day-{i}" for i in range(250)]
        handles = await client.start_many(add, [(i,) for i in range(250)], ids=days, batch=100)
        assert [h.id for h in handles] == days
        again = await client.start_many(add, [(i,) for i in range(250)], ids=days)
        assert [h.id for h in again] == days
        assert await client.count_runs() == {flowz.Status.PENDING: 250}


async def test_bad_input_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    async with client_for(tmp_path) as client:
        with pytest.raises(flowz.FlowzError, match="b"):
            await client.start_many(add, [(1,), (2, "not a number")])
        with pytest.raises(flowz.UsageError, match="2 ids for 3 calls"):
            await client.start_many(add, [(1,), (2,), (3,)], ids=["x", "y"])
        with pytest.raises(flowz.UsageError, match="'x' is given twice"):
            await client.start_many(add, [(1,), (2,)], ids=["x", "x"])
        with pytest.raises(flowz.UsageError, match=r"ids=\[\.\.\.\]"):
            await client.start_many(add.options(id="one"), [(1,)])
        assert await client.count_runs() == {}
        # A taken id refuses its batch whole; the batches before it stay started.
        await client.start(add.options(id="taken"), 99)
        with pytest.raises(flowz.UsageError, match="the 2 runs before this batch were started"):
            await client.start_many(
                add, [(1,), (2,), (3,), (4,)], ids=["n1", "n2", "n3", "taken"], batch=2
            )
        assert await client.store.get_execution("n2") is not None
        assert await client.store.get_execution("n3") is None


async def test_the_decorator_starts_many_with_the_default_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWZ_DATABASE_URL", f"sqlite:///{tmp_path / 'd.db'}")
    handles = await add.start_many([(i, i) for i in range(10)])
    assert len(handles) == 10
    async with Client() as client:
        assert await client.count_runs() == {flowz.Status.PENDING: 10}
