"""gather_durable, schedule and wait_all: children as independent durable executions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import anyio
import pydantic
import pytest

import flowz
from flowz import Settings, gather_durable, step, workflow
from flowz.store import Store, open_store
from flowz.store._protocol import ExecutionRow

calls: Counter[str] = Counter()
failures_left: dict[int, int] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    failures_left.clear()


async def tree(run_id: str) -> list[ExecutionRow]:
    store = await open_store(Settings.from_env())
    try:
        return await store.list_executions(run_id)
    finally:
        await store.aclose()


@step
async def double(x: int) -> int:
    calls[f"double:{x}"] += 1
    return 2 * x


@step
async def slow_double(x: int, n: int) -> int:
    await anyio.sleep((n - x) * 0.05)  # the last call finishes first
    return 2 * x


@workflow
async def reverse_finish(n: int) -> list[int]:
    return await gather_durable(*(slow_double(i, n) for i in range(n)))


def test_results_come_back_in_call_order_when_children_finish_in_reverse(
    database_url: str,
) -> None:
    assert flowz.run(reverse_finish.options(id="rev"), 6) == [0, 2, 4, 6, 8, 10]
    children = [r for r in anyio.run(tree, "rev") if r.parent_id == "rev"]
    by_finish = sorted(children, key=lambda r: r.finished_at or 0)
    assert [r.child_index for r in by_finish] == [5, 4, 3, 2, 1, 0]


class ChildError(Exception):
    pass


holding = {"on": True}


@step
async def maybe_fail(i: int, hold_until_failed: str = "") -> int:
    calls[f"maybe_fail:{i}"] += 1
    if failures_left.get(i, 0) > 0:
        failures_left[i] -= 1
        raise ChildError(f"child {i} failed")
    if hold_until_failed and holding["on"]:  # still running when the parent fails
        store = await open_store(Settings.from_env())
        try:
            while (row := await store.get_execution(hold_until_failed)) is None or (
                row.status != "failed"
            ):
                await store.wait_for_change(0.05)
        finally:
            await store.aclose()
    return i * 10


@workflow
async def fan_with_failure(n: int, hold: str) -> list[int]:
    return await gather_durable(*(maybe_fail(i, "" if i == 2 else hold) for i in range(n)))


def test_a_failed_child_fails_the_run_which_cancels_the_siblings_still_running(
    database_url: str,
) -> None:
    failures_left[2] = 1
    holding["on"] = True
    with pytest.raises(ChildError, match="child 2 failed"):
        flowz.run(fan_with_failure.options(id="ff"), 5, "ff")
    # The siblings were running when the run failed: its end cancelled them in the same
    # transaction (parent-close policy), and what they returned afterwards was dropped.
    rows = {r.id: r for r in anyio.run(tree, "ff")}
    assert rows["ff"].status == "failed"
    assert [rows[f"ff/0/{i}"].status for i in range(5)] == [
        "cancelled",
        "cancelled",
        "failed",
        "cancelled",
        "cancelled",
    ]

    async def retry() -> list[int]:
        handle = await fan_with_failure.options(id="ff").start(5, "ff")
        await handle.retry()
        return await fan_with_failure.options(id="ff").run(5, "ff")

    holding["on"] = False
    assert anyio.run(retry) == [0, 10, 20, 30, 40]  # the retry ran them all again
    assert [calls[f"maybe_fail:{i}"] for i in range(5)] == [2, 2, 2, 2, 2]


@workflow
async def fan_return_exceptions(n: int) -> list[str]:
    results = await gather_durable(*(maybe_fail(i) for i in range(n)), return_exceptions=True)
    return [type(r).__name__ if isinstance(r, BaseException) else str(r) for r in results]


def test_return_exceptions_returns_errors_in_place_after_all_children_end(
    database_url: str,
) -> None:
    failures_left[1] = 1
    assert flowz.run(fan_return_exceptions, 3) == ["0", "ChildError", "20"]


def test_results_of_a_gather_wider_than_a_page_come_back_in_call_order(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowz._engine

    # A parent reads its children a page at a time: pages of 4 over 11 children,
    # two of them failed on pages of their own, in place, in call order.
    monkeypatch.setattr(flowz._engine, "_OUTCOMES_PAGE", 4)
    failures_left[5] = failures_left[9] = 1
    expected = [str(10 * i) for i in range(11)]
    expected[5] = expected[9] = "ChildError"
    assert flowz.run(fan_return_exceptions, 11) == expected


@workflow
async def leaf(x: int) -> int:
    a, b = await gather_durable(double(x), double(x + 1))
    return a + b


@workflow
async def middle(x: int) -> int:
    return sum(await gather_durable(leaf(x), leaf(x + 10)))


@workflow
async def nested(x: int) -> int:
    first = await middle(x)  # a child workflow awaited alone
    return first + sum(await gather_durable(middle(x + 100), middle(x + 200)))


def test_workflow_children_fan_out_again_as_a_durable_tree(database_url: str) -> None:
    def expected_middle(x: int) -> int:
        return sum(2 * v + 2 * (v + 1) for v in (x, x + 10))

    assert flowz.run(nested.options(id="tree"), 1) == sum(expected_middle(x) for x in (1, 101, 201))
    rows = anyio.run(tree, "tree")
    assert len(rows) == 1 + 3 + 6 + 12
    assert all(r.status == "succeeded" and r.root_id == "tree" for r in rows)
    depth = max(r.id.count("/") for r in rows) // 2
    assert depth == 3


@workflow
async def dynamic(n: int) -> list[int]:
    width = await double(n)  # decided at run time
    return await gather_durable(*(double(i) for i in range(width)))


@workflow
async def empty() -> list[int]:
    return await gather_durable()


def test_empty_and_dynamic_gathers(database_url: str) -> None:
    assert flowz.run(empty) == []
    assert flowz.run(dynamic, 3) == [0, 2, 4, 6, 8, 10]
    assert flowz.run(dynamic, 0) == []


@workflow
async def schedules(n: int) -> tuple[int, list[int], int]:
    h1 = flowz.schedule(double(n))
    h2 = flowz.schedule(double(n + 1))
    inline = await double(100)  # the workflow goes on while the children run
    both = await flowz.wait_all([h2, h1])
    alone = await flowz.schedule(double(7))
    return inline, both, alone


def test_schedule_wait_all_and_awaiting_a_handle(database_url: str) -> None:
    assert flowz.run(schedules.options(id="sch"), 1) == (200, [4, 2], 14)
    rows = {r.id: r for r in anyio.run(tree, "sch")}
    assert {"sch/0/0", "sch/1/0", "sch/4/0"} <= set(rows)


@workflow
async def wide(n: int) -> int:
    return sum(await gather_durable(*(double(i) for i in range(n))))


@pytest.mark.timeout(120)
def test_ten_thousand_children_in_one_gather(database_url: str) -> None:
    assert flowz.run(wide.options(id="wide"), 10_000) == 2 * sum(range(10_000))
    rows = anyio.run(tree, "wide")
    assert len(rows) == 10_001
    assert all(calls[f"double:{i}"] == 1 for i in range(10_000))


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Order(pydantic.BaseModel):
    id: uuid.UUID
    placed: dt.datetime
    color: Color
    points: list[Point]
    tags: tuple[str, ...]
    extra: dict[str, int]


@step
async def echo_order(order: Order, when: dt.date, pair: tuple[int, str]) -> Order:
    assert isinstance(order, Order) and isinstance(when, dt.date) and isinstance(pair, tuple)
    return order.model_copy(update={"tags": (*order.tags, when.isoformat(), pair[1])})


@workflow
async def typed(order: Order) -> tuple[Order, Order, dict[str, Point]]:
    inline = await echo_order(order, dt.date(2026, 1, 2), (1, "x"))
    [child] = await gather_durable(echo_order(order, dt.date(2026, 1, 3), (2, "y")))
    return inline, child, {"p": order.points[0]}


def test_typed_values_round_trip_as_the_same_types(database_url: str) -> None:
    order = Order(
        id=uuid.uuid4(),
        placed=dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC),
        color=Color.BLUE,
        points=[Point(1, 2.5)],
        tags=("a",),
        extra={"k": 1},
    )
    inline, child, mapping = flowz.run(typed.options(id="typed"), order)
    assert isinstance(inline, Order) and isinstance(child, Order)
    assert inline.tags == ("a", "2026-01-02", "x") and child.tags == ("a", "2026-01-03", "y")
    assert child.id == order.id and child.placed == order.placed and child.color is Color.BLUE
    assert isinstance(child.points[0], Point) and mapping == {"p": Point(1, 2.5)}
    # And the same, typed, when the stored result is read back.
    again = flowz.run(typed.options(id="typed"), order)
    assert again == (inline, child, mapping)
    assert isinstance(again[2]["p"], Point)


released: dict[str, anyio.Event] = {}


@step
async def quick(tag: str) -> str:
    return tag


@step
async def held(tag: str) -> str:
    await released["held"].wait()  # until the test lets it go (or it is cancelled)
    return tag


@step
async def broken(tag: str) -> str:
    raise ValueError(f"{tag} broke")


@workflow
async def race(first_fails: bool) -> str:
    slow = flowz.schedule(held("slow"))
    fast = flowz.schedule(broken("fast") if first_fails else quick("fast"))
    index, value = await flowz.wait_first([slow, fast], return_exceptions=True)
    await flowz.sleep(0.01)  # suspend and replay: the choice must come from the journal
    return f"{index}:{value!r}"


def test_wait_first_takes_the_first_child_to_end_and_the_run_cancels_the_rest(
    database_url: str,
) -> None:
    async def main() -> tuple[str, str, list[ExecutionRow]]:
        released["held"] = anyio.Event()
        async with flowz.Client() as client:
            won = await client.run(race.options(id="race-ok", progress=False), False)
            failed = await client.run(race.options(id="race-bad", progress=False), True)
            return won, failed, await client.store.list_executions("race-ok")

    won, failed, rows = anyio.run(main)
    assert won == "1:'fast'"
    assert failed == "1:ValueError('fast broke')"  # returned, with return_exceptions
    statuses = {r.id: r.status for r in rows}
    assert statuses == {
        "race-ok": "succeeded",
        "race-ok/0/0": "cancelled",  # the slow one, cancelled when the run ended
        "race-ok/1/0": "succeeded",
    }


@workflow
async def race_then_wait() -> str:
    slow, fast = flowz.schedule(held("slow")), flowz.schedule(quick("fast"))
    index, value = await flowz.wait_first([slow, fast])
    await flowz.recv("go")  # suspended here: the next attempt replays wait_first
    return f"{index}:{value!r}"


async def until(store: Store, check: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(20):
        while True:
            mark = store.change_mark()
            if await check():
                return
            await store.wait_for_change(1.0, mark)


def test_a_replay_of_wait_first_takes_the_journaled_child(database_url: str) -> None:
    """Both children have ended when the run replays: the journal, not the clock, decides."""
    from tests.test_store_contract import execute_sql

    async def main() -> str:
        released["held"] = anyio.Event()
        async with flowz.Client() as client, anyio.create_task_group() as tg:
            store = client.store
            run = race_then_wait.options(id="race-replay", progress=False)
            outcome: list[str] = []

            async def run_it() -> None:
                outcome.append(await client.run(run))

            async def waiting_for_go() -> bool:
                recv = (await store.read_journal("race-replay")).get(3)
                return recv is not None and recv.status == "waiting"

            async def slow_ended() -> bool:
                row = await store.get_execution("race-replay/0/0")
                return row is not None and row.status == "succeeded"

            tg.start_soon(run_it)
            await until(store, waiting_for_go)
            assert (await store.read_journal("race-replay"))[2].output == {"index": 1}
            # Rewrite the journaled choice as if the slow child had won; let it end.
            await execute_sql(
                store,
                "UPDATE flowz_journal SET output = '{\"index\": 0}' "
                "WHERE execution_id = 'race-replay' AND position = 2",
            )
            released["held"].set()
            await until(store, slow_ended)
            await client.send("race-replay", "go", None)
        return outcome[0]

    assert anyio.run(main) == "0:'slow'"


@workflow
async def race_and_cancel() -> str:
    slow, fast = flowz.schedule(held("slow")), flowz.schedule(quick("fast"))
    index, value = await flowz.wait_first([slow, fast])
    await (slow if index == 1 else fast).cancel()
    try:
        await slow
    except flowz.RunCancelledError:
        return f"{value}, and the slow one was cancelled"
    return "the slow one ended first"


def test_a_workflow_cancels_the_child_it_no_longer_needs(database_url: str) -> None:
    async def main() -> tuple[str, list[ExecutionRow]]:
        released["held"] = anyio.Event()
        async with flowz.Client() as client:
            result = await client.run(race_and_cancel.options(id="rc", progress=False))
            return result, await client.store.list_executions("rc")

    result, rows = anyio.run(main)
    assert result == "fast, and the slow one was cancelled"
    assert {r.id: r.status for r in rows}["rc/0/0"] == "cancelled"
