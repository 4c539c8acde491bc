"""Odd run ids, large values, and steps that outlive their lease (kept alive by heartbeats)."""

from __future__ import annotations

import anyio
import pytest

import flowz
import flowz.errors
from flowz import Settings, gather_durable, step, workflow
from flowz.store import open_store

calls: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


@step
async def echo(text: str) -> str:
    return text


@workflow
async def with_children(text: str) -> list[str]:
    return await gather_durable(echo(text), echo(text[::-1]))


@pytest.mark.parametrize(
    "run_id",
    ["a b c", "ünïcödé-✓", "quote'\"; DROP TABLE flowz_executions; --", "x/1/0", "%s ? :name"],
)
def test_odd_run_ids_work_end_to_end(database_url: str, run_id: str) -> None:
    assert flowz.run(with_children.options(id=run_id, progress=False), "ab") == ["ab", "ba"]
    assert flowz.run(with_children.options(id=run_id, progress=False), "ab") == ["ab", "ba"]

    async def rows() -> list[str]:
        store = await open_store(Settings.from_env())
        try:
            return [r.status for r in await store.list_executions(run_id)]
        finally:
            await store.aclose()

    assert anyio.run(rows) == ["succeeded"] * 3


@step
async def big(size: int) -> str:
    return "x" * size


@workflow
async def large(size: int) -> int:
    inline = await big(size)
    [child] = await gather_durable(big(size))
    return len(inline) + len(child)


def test_large_values_round_trip(database_url: str) -> None:
    """Each value is one JSON text: up to 1 GB on both engines (documented in How it works)."""
    size = 8 * 1024 * 1024
    assert flowz.run(large.options(progress=False), size) == 2 * size


@step
async def outlives_its_lease(tag: str) -> str:
    calls[tag] = calls.get(tag, 0) + 1
    await anyio.sleep(2.0)  # more than three leases
    return tag


@workflow
async def slow(tag: str) -> list[str]:
    inline = await outlives_its_lease(f"{tag}-inline")
    children = await gather_durable(outlives_its_lease(f"{tag}-child"))
    return [inline, *children]


@pytest.mark.timeout(60)
def test_heartbeats_keep_a_slow_step_owned_past_its_lease(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWZ_LEASE_SECONDS", "0.6")
    assert flowz.run(slow.options(progress=False), "s") == ["s-inline", "s-child"]
    assert calls == {"s-inline": 1, "s-child": 1}, "no second worker, no second run"


class NeedsTwoArguments(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")  # args no longer match __init__


@step
async def raises_odd_error() -> None:
    raise NeedsTwoArguments(7, "odd")


@workflow
async def odd_failure() -> list[str]:
    results = await gather_durable(raises_odd_error(), return_exceptions=True)
    try:
        await raises_odd_error()
    except Exception as inline:
        return [type(results[0]).__name__, type(inline).__name__]
    return []


def test_an_error_that_cannot_be_rebuilt_comes_back_as_step_failed(database_url: str) -> None:
    # The child's error crossed the database: it comes back as StepFailed. The inline one
    # is the original object in this attempt.
    assert flowz.run(odd_failure.options(id="odd", progress=False)) == [
        "StepFailed",
        "NeedsTwoArguments",
    ]

    async def stored() -> dict[str, str]:
        store = await open_store(Settings.from_env())
        try:
            [child] = await store.child_results("odd", [0])
            return child.error  # type: ignore[no-any-return]
        finally:
            await store.aclose()

    error = flowz.errors.StepFailed  # the class users catch
    record = anyio.run(stored)
    from flowz._serde import load_error

    rebuilt = load_error(record)
    assert isinstance(rebuilt, error)
    assert (
        rebuilt.type_name.endswith("NeedsTwoArguments") and rebuilt.remote_message == "code 7: odd"
    )
    assert 'raise NeedsTwoArguments(7, "odd")' in rebuilt.remote_traceback
    assert any("Remote traceback" in note for note in rebuilt.__notes__)
