"""Operating runs: the query API, fork, patched(), the replay check and prune, on both stores."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from typing import Any

import anyio
import pytest

import flowz
from flowz import Client, Registry, gather_durable, step, workflow
from flowz.testing import replay
from tests.test_store_contract import execute_sql

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    calls.clear()


UTC = dt.UTC
#: How many times each step body ran, by name: "no step runs" is checked here.
calls: Counter[str] = Counter()


def quiet(wf: Any, run_id: str) -> Any:
    return wf.options(id=run_id, progress=False)


# -- the query API ---------------------------------------------------------------
BULK = 10_000


async def insert_bulk_runs(client: Client) -> None:
    """10,000 ended runs, four per created_at instant (1000.0, 1001.0, ...), in one statement."""
    await execute_sql(
        client.store,
        f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {BULK - 1}) "
        "INSERT INTO flowz_executions (id, root_id, kind, name, input, status, attempt, "
        "max_attempts, run_at, queue, priority, wait_count, created_at, updated_at, "
        "finished_at) SELECT 'bulk-' || i, 'bulk-' || i, 'workflow', "
        "CASE WHEN i - i / 2 * 2 = 0 THEN 'even' ELSE 'odd' END, '[]', "  # no % in psycopg
        "CASE i - i / 3 * 3 WHEN 0 THEN 'succeeded' WHEN 1 THEN 'failed' ELSE 'cancelled' END, "
        "1, 1, 1000 + i / 4, 'default', 0, 0, 1000 + i / 4, 1000 + i / 4, 1001 + i / 4 FROM n",
    )


@step
async def noted(x: int) -> int:
    calls["noted"] += 1
    return x


@workflow
async def one_step(x: int) -> int:
    return await noted(x)


async def test_list_runs_pages_10000_runs_without_duplicates_or_gaps(database_url: str) -> None:
    async with Client(database_url, settings=None) as client:
        await insert_bulk_runs(client)
        seen: list[flowz.RunInfo] = []
        page = await client.list_runs(limit=700)
        while True:
            seen += page.runs
            # New runs arrive while we page: newer than every page, they shift nothing.
            await client.start(quiet(one_step, f"new-{len(seen)}"), 1)
            if page.next_cursor is None:
                break
            page = await client.list_runs(limit=700, cursor=page.next_cursor)
        bulk = [r for r in seen if r.id.startswith("bulk-")]
        assert len(bulk) == BULK and len({r.id for r in bulk}) == BULK
        assert all(a.created >= b.created for a, b in itertools.pairwise(seen))

        async def count(**filters: Any) -> int:
            total, cursor = 0, None
            while True:
                page = await client.list_runs(limit=1000, cursor=cursor, **filters)
                total += len(page)
                if (cursor := page.next_cursor) is None:
                    return total

        assert await count(status="failed") == 3333
        assert await count(status=["failed", flowz.Status.CANCELLED]) == 6666
        assert await count(name="even") == 5000
        since = dt.datetime.fromtimestamp(1100, UTC)
        until = dt.datetime.fromtimestamp(1200, UTC)
        assert await count(since=since, until=until) == 400
        odd_succeeded = sum(1 for i in range(400, 800) if i % 2 and i % 3 == 0)
        assert (
            await count(name="odd", status="succeeded", since=since, until=until) == odd_succeeded
        )
        assert await count(name=one_step) == 1 + BULK // 700

        info = await client.get_run("bulk-7")
        assert (info.status, info.name, info.attempts) == (flowz.Status.FAILED, "odd", 1)
        assert info.created == dt.datetime.fromtimestamp(1001, UTC) and info.duration is None


async def test_list_runs_rejects_bad_filters_with_the_fix(tmp_path: Any) -> None:
    async with Client(f"sqlite:///{tmp_path / 'q.db'}") as client:
        with pytest.raises(flowz.UsageError, match="status 'done' is not a run status"):
            await client.list_runs(status="done")
        with pytest.raises(flowz.UsageError, match="has no time zone"):
            await client.list_runs(since=dt.datetime(2026, 1, 1))
        with pytest.raises(flowz.UsageError, match="a page holds 1 to 1000 runs"):
            await client.list_runs(limit=0)
        with pytest.raises(flowz.UsageError, match="is not one list_runs returned"):
            await client.list_runs(cursor="garbage!")
        with pytest.raises(flowz.RunNotFoundError, match="no run with id 'nope'"):
            await client.get_run("nope")
        with pytest.raises(flowz.RunNotFoundError):
            await client.journal("nope")


async def test_get_run_and_journal_describe_a_run(database_url: str) -> None:
    async with Client(database_url) as client:
        with pytest.raises(ReceiptBug):
            await client.run(quiet(checkout_v1, "j1"), 3)
        info = await client.get_run("j1")
        assert info.status == flowz.Status.FAILED and info.error_type == "ReceiptBug"
        assert info.error_message == "receipt for 6 is wrong" and info.parent is None
        entries = await client.journal("j1")
        assert [(e.position, e.kind, e.status) for e in entries] == [
            (0, "step", "succeeded"),
            (1, "gather", "scheduled"),
            (3, "step", "failed"),
        ]
        assert entries[0].result == 3 and entries[0].duration is not None
        assert entries[2].error["message"] == "receipt for 6 is wrong"
        children = await client.list_runs(parent="j1")
        assert sorted(c.id for c in children) == ["j1/1/0", "j1/1/1", "j1/1/2"]
        assert {c.kind for c in children} == {"step"}


# -- fork ------------------------------------------------------------------------
V1, V2 = Registry(), Registry()


class ReceiptBug(Exception):
    pass


@step(name="shop:price", registry=V1)
async def price_v1(x: int) -> int:
    calls["price"] += 1
    return x


@step(name="shop:item", registry=V1)
async def item_v1(i: int) -> int:
    calls["item"] += 1
    return i + 1


@step(name="shop:receipt", registry=V1)
async def receipt_v1(total: int) -> str:
    calls["receipt"] += 1
    raise ReceiptBug(f"receipt for {total} is wrong")


@workflow(name="shop:checkout", registry=V1)
async def checkout_v1(x: int) -> str:
    price = await price_v1(x)
    items = await gather_durable(*(item_v1(i) for i in range(3)))
    return await receipt_v1(price + sum(items) - 3)


# v2: the receipt is fixed, and the items are doubled (a change after a fork point).
@step(name="shop:price", registry=V2)
async def price_v2(x: int) -> int:
    calls["price"] += 1
    return x


@step(name="shop:item", registry=V2)
async def item_v2(i: int) -> int:
    calls["item"] += 1
    return 2 * (i + 1)


@step(name="shop:receipt", registry=V2)
async def receipt_v2(total: int) -> str:
    calls["receipt"] += 1
    return f"receipt: {total}"


@workflow(name="shop:checkout", registry=V2)
async def checkout_v2(x: int) -> str:
    price = await price_v2(x)
    items = await gather_durable(*(item_v2(i) for i in range(3)))
    return await receipt_v2(price + sum(items) - 3)


async def test_fork_after_the_gather_reruns_only_what_follows(database_url: str) -> None:
    async with Client(database_url) as client:
        with pytest.raises(ReceiptBug):
            await client.run(quiet(checkout_v1, "order"), 3)
        assert (calls["price"], calls["item"], calls["receipt"]) == (1, 3, 1)
        calls.clear()

        forked = await client.fork("order", at=3, id="order-fixed")
        assert await client.run(quiet(checkout_v2, forked.id), 3) == "receipt: 6"
        # The price and the items came from the copied journal and children.
        assert (calls["price"], calls["item"], calls["receipt"]) == (0, 0, 1)
        assert (await client.get_run("order")).status == flowz.Status.FAILED  # untouched
        assert [e.kind for e in await client.journal("order-fixed")] == ["step", "gather", "step"]


async def test_fork_before_the_gather_runs_the_new_code_for_it(database_url: str) -> None:
    async with Client(database_url) as client:
        with pytest.raises(ReceiptBug):
            await client.run(quiet(checkout_v1, "order"), 3)
        calls.clear()
        forked = await client.fork("order", at=1)
        # The new items (2, 4, 6) and the new receipt run; the price is replayed.
        assert await client.run(quiet(checkout_v2, forked.id), 3) == "receipt: 12"
        assert (calls["price"], calls["item"], calls["receipt"]) == (0, 3, 1)
        again = await client.fork("order", at=0)
        assert await client.run(quiet(checkout_v2, again.id), 3) == "receipt: 12"
        assert calls["price"] == 1


gate = {"open": False}


@step
async def gated(i: int) -> int:
    calls["gated"] += 1
    while not gate["open"]:
        await anyio.sleep(0.01)
    return i


@step
async def flaky(i: int) -> int:
    calls["flaky"] += 1
    if calls["flaky"] == 1:
        raise ReceiptBug("the first attempt fails")
    return i


@workflow
async def background(n: int) -> int:
    handle = flowz.schedule(gated(n))  # position 0
    other = flowz.schedule(gated(5))  # position 1
    await other.cancel()  # 2: cancelled by the run itself, so it stays cancelled in a fork
    value = await flaky(1)  # 3: fails the first time; the run's end cancels `handle`
    return value + await handle


async def test_fork_reruns_children_the_run_left_unfinished(database_url: str) -> None:
    gate["open"] = False
    async with Client(database_url) as client:
        with pytest.raises(ReceiptBug):
            await client.run(quiet(background, "bg"), 10)
        before = {r.id: r.status for r in await client.list_runs(parent="bg")}
        assert before == {"bg/0/0": "cancelled", "bg/1/0": "cancelled"}
        gate["open"] = True
        forked = await client.fork("bg", at=3, id="bg2")
        assert await client.run(quiet(background, forked.id), 10) == 11
        after = {r.id: r.status for r in await client.list_runs(parent="bg2")}
        assert after == {"bg2/0/0": "succeeded", "bg2/1/0": "cancelled"}


async def test_fork_errors_name_the_fix(database_url: str) -> None:
    async with Client(database_url) as client:
        with pytest.raises(ReceiptBug):
            await client.run(quiet(checkout_v1, "order"), 3)
        with pytest.raises(flowz.UsageError, match=r"at=9 is past the end .* fork at 0 to 4"):
            await client.fork("order", at=9)
        with pytest.raises(flowz.UsageError, match="a journal position, 0 or more"):
            await client.fork("order", at=-1)
        with pytest.raises(flowz.RunNotFoundError, match="no run with id 'nope'"):
            await client.fork("nope", at=0)
        with pytest.raises(flowz.UsageError, match="already names a run"):
            await client.fork("order", at=0, id="order")
        waiting = await client.start(quiet(waits_for_go, "waiting"))
        with pytest.raises(flowz.UsageError, match="only an ended run can be forked"):
            await client.fork(waiting.id, at=0)
        assert len(await client.list_runs()) == 2  # nothing was stored


# -- patched ---------------------------------------------------------------------
OLD, NEW = Registry(), Registry()


@step(name="mail:email", registry=OLD)
async def email_old(order: str) -> str:
    calls["email"] += 1
    return f"email {order}"


@workflow(name="mail:notify", registry=OLD)
async def notify_old(order: str) -> str:
    sent = await email_old(order)
    go = await flowz.recv("go")
    return f"{sent}, {go}"


@step(name="mail:email", registry=NEW)
async def email_new(order: str) -> str:
    calls["email"] += 1
    return f"email {order}"


@step(name="mail:receipt", registry=NEW)
async def receipt_new(order: str) -> str:
    calls["receipt"] += 1
    return f"receipt {order}"


@workflow(name="mail:notify", registry=NEW)
async def notify_new(order: str) -> str:
    if flowz.patched("receipt-first"):
        sent = await receipt_new(order)
    else:
        sent = await email_new(order)
    go = await flowz.recv("go")
    return f"{sent}, {go}"


@workflow
async def waits_for_go() -> str:
    return str(await flowz.recv("go"))


async def run_until_waiting(client: Client, wf: Any, run_id: str, *args: Any) -> None:
    """Work on a started run in this process until it waits for a message, then stop."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: client.run(quiet(wf, run_id), *args))
        while True:
            mark = client.store.change_mark()
            journal = await client.journal(run_id)
            if any(e.kind == "recv" and e.status == "waiting" for e in journal):
                break
            await client.store.wait_for_change(1.0, mark)
        tg.cancel_scope.cancel()


async def test_patched_across_a_suspension(database_url: str) -> None:
    async with Client(database_url) as client:
        # Recorded by the old code: the email step, then a wait for "go".
        await client.start(quiet(notify_old, "recorded"), "o1")
        await run_until_waiting(client, notify_old, "recorded", "o1")
        assert [e.name for e in await client.journal("recorded")] == ["mail:email", "go"]

        # The new code is deployed; the old run resumes on its old branch.
        await client.send("recorded", "go", "now")
        assert await client.run(quiet(notify_new, "recorded"), "o1") == "email o1, now"
        assert "patch" not in [e.kind for e in await client.journal("recorded")]
        assert (calls["email"], calls["receipt"]) == (1, 0)  # the email was not sent again

        # A new run takes the new branch, and the choice is journaled.
        await client.start(quiet(notify_new, "fresh"), "n1")
        await client.send("fresh", "go", "at once")
        assert await client.run(quiet(notify_new, "fresh"), "n1") == "receipt n1, at once"
        journal = await client.journal("fresh")
        assert [(e.kind, e.name) for e in journal][:2] == [
            ("patch", "receipt-first"),
            ("step", "mail:receipt"),
        ]
        # Both replay with the new code; the old code no longer replays the new run.
        assert (await replay(client, runs=["recorded", "fresh"], registry=NEW)).ok
        old_code = await replay(client, runs=["fresh"], registry=OLD)
        assert not old_code.ok and "patch receipt-first" in str(old_code.failures[0].problem)


async def test_a_new_run_stopped_after_the_patch_keeps_the_new_branch(database_url: str) -> None:
    async with Client(database_url) as client:
        await client.start(quiet(notify_new, "fresh"), "n2")
        await run_until_waiting(client, notify_new, "fresh", "n2")  # the marker is stored
        await client.send("fresh", "go", "later")
        assert await client.run(quiet(notify_new, "fresh"), "n2") == "receipt n2, later"
        assert calls["receipt"] == 1


def test_patch_ids_must_be_named() -> None:
    with pytest.raises(flowz.UsageError, match="non-empty string"):
        flowz.patched("")
    assert flowz.patched("outside-a-workflow") is True


# -- the replay check ------------------------------------------------------------
REORDERED = Registry()


@step(name="shop:price", registry=REORDERED)
async def price_r(x: int) -> int:
    calls["price"] += 1
    return x


@step(name="shop:item", registry=REORDERED)
async def item_r(i: int) -> int:
    calls["item"] += 1
    return i + 1


@step(name="shop:receipt", registry=REORDERED)
async def receipt_r(total: int) -> str:
    calls["receipt"] += 1
    return f"receipt: {total}"


@workflow(name="shop:checkout", registry=REORDERED)
async def checkout_reordered(x: int) -> str:
    items = await gather_durable(*(item_r(i) for i in range(3)))  # now before the price
    price = await price_r(x)
    return await receipt_r(price + sum(items) - 3)


async def test_the_replay_check_catches_a_reordered_step_and_runs_nothing(
    database_url: str,
) -> None:
    async with Client(database_url) as client:
        with pytest.raises(ReceiptBug):
            await client.run(quiet(checkout_v1, "failed-order"), 3)
        forked = await client.fork("failed-order", at=3, id="good-order")
        await client.run(quiet(checkout_v2, forked.id), 3)
        calls.clear()

        unchanged = await replay(client, registry=V1)
        assert unchanged.ok, unchanged.describe()
        assert {r.run_id for r in unchanged.results} == {"failed-order", "good-order"}
        assert (await replay(client, registry=V2)).ok  # other step bodies, same calls

        reordered = await replay(client, registry=REORDERED)
        assert not reordered.ok and len(reordered.failures) == 2
        problem = reordered.failures[0].error
        assert problem is not None and problem.position == 0
        assert (problem.expected, problem.recorded) == ("gather shop:item", "step shop:price")
        assert "would not replay" not in reordered.describe()
        assert "at position 0 the workflow now calls 'gather shop:item'" in reordered.describe()
        assert sum(calls.values()) == 0  # no step ran
        assert [r.id for r in await client.list_runs()] == ["good-order", "failed-order"]

        only = await replay(client, runs=["good-order"], registry=REORDERED)
        assert [r.run_id for r in only.results] == ["good-order"]
        assert (await replay(client, name="nothing-by-this-name", registry=V1)).results == []
        lost = await replay(client, registry=Registry())
        assert "no workflow 'shop:checkout' in this code" in str(lost.failures[0].problem)


@workflow(name="shop:checkout", registry=Registry())
async def checkout_shorter(x: int) -> str:
    return "no calls at all"


async def test_the_replay_check_reports_calls_the_code_no_longer_makes(database_url: str) -> None:
    async with Client(database_url) as client:
        with pytest.raises(ReceiptBug):
            await client.run(quiet(checkout_v1, "o"), 3)
        report = await replay(client, registry=checkout_shorter.registry)
        error = report.failures[0].error
        assert error is not None
        assert (error.expected, error.recorded) == ("the end of the workflow", "step shop:price")
