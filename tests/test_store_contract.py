"""The Store contract: every store implementation must pass this suite."""

from __future__ import annotations

import time
from collections import Counter

import anyio
import pytest

import flowz
import flowz.store
from flowz.errors import RunEndedError, RunNotFoundError, SchemaVersionError
from flowz.store import Store, open_store, upgrade_schema
from flowz.store._protocol import (
    ExecutionRow,
    Fence,
    JournalEntry,
    LeaseLost,
    NewExecution,
    RunQuery,
)

pytestmark = pytest.mark.anyio

NAMES = ["wf", "child"]


def run_factory(run_id: str = "r1", **overrides: object) -> NewExecution:
    values: dict[str, object] = {
        "id": run_id,
        "root_id": run_id,
        "kind": "workflow",
        "name": "wf",
        "input": {"n": 1},
    }
    values.update(overrides)
    return NewExecution(**values)  # type: ignore[arg-type]


def child_factory(parent: str, position: int, index: int, **overrides: object) -> NewExecution:
    values: dict[str, object] = {
        "id": f"{parent}/{position}/{index}",
        "root_id": parent.split("/", maxsplit=1)[0],
        "parent_id": parent,
        "position": position,
        "child_index": index,
        "kind": "step",
        "name": "child",
        "input": {"i": index},
        "max_attempts": 2,
    }
    values.update(overrides)
    return NewExecution(**values)  # type: ignore[arg-type]


async def claim_one(store: Store, worker: str = "w1", names: list[str] = NAMES) -> Fence:
    claims = await store.claim(worker, names, "default", 1, 30)
    assert len(claims) == 1
    return claims[0].fence


async def suspended_parent(store: Store, width: int) -> Fence:
    """A claimed run that scheduled `width` children at position 0 and waits at position 1."""
    await store.create_run(run_factory())
    fence = await claim_one(store, names=["wf"])
    children = [child_factory("r1", 0, i) for i in range(width)]
    entry = JournalEntry(0, "gather", "child", "scheduled", output={"width": width})
    assert await store.wait_for_children(fence, 1, [0], [entry], children)
    return fence


async def test_create_run_is_idempotent_by_id(store: Store) -> None:
    row, created = await store.create_run(run_factory(input={"n": 1}))
    again, created_again = await store.create_run(run_factory(input={"n": 2}))
    assert created and not created_again
    assert again.input == {"n": 1} == row.input
    assert row.status == "pending" and row.attempt == 0


async def test_concurrent_creates_of_one_id_make_one_run_and_all_see_it(store: Store) -> None:
    for attempt in range(5):  # a race: a few rounds, each on an id of its own
        run_id = f"same-{attempt}"
        results: list[tuple[ExecutionRow, bool]] = []

        async def create(n: int, run_id: str = run_id, results: list = results) -> None:  # type: ignore[type-arg]
            results.append(await store.create_run(run_factory(run_id, input={"n": n})))

        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(create, n)
        assert sum(created for _, created in results) == 1
        assert len({(row.id, str(row.input)) for row, _ in results}) == 1


class Transactions:
    """How many transactions wrote a table's rows, from here on (group commit's tests).

    SQLite: the COMMITs its connection runs from now; PostgreSQL: the distinct xmin
    (writing transaction) of the table's rows.
    """

    def __init__(self, store: Store) -> None:
        from flowz.store import SqliteStore

        self.store = store
        self.commits = 0
        if isinstance(store, SqliteStore):
            store._db.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        self.commits += sql == "COMMIT"

    async def count(self, table: str) -> int:
        from flowz.store import PostgresStore, SqliteStore

        if isinstance(self.store, SqliteStore):
            self.store._db.set_trace_callback(None)
            return self.commits
        assert isinstance(self.store, PostgresStore)
        rows = await self.store.db.select(f"SELECT count(DISTINCT xmin::text) FROM {table}", ())
        return int(rows[0][0])


async def test_concurrent_creates_share_one_commit(store: Store) -> None:
    transactions = Transactions(store)
    results: list[tuple[ExecutionRow, bool]] = []

    async def create(run_id: str) -> None:
        results.append(await store.create_run(run_factory(run_id)))

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(create, f"r{n}")
        tg.start_soon(create, "r0")  # the same id twice in one batch: one creates it
    assert sorted((row.id, created) for row, created in results) == [
        ("r0", False),
        ("r0", True),
        *((f"r{n}", True) for n in range(1, 8)),
    ]
    assert await transactions.count("flowz_executions") == 1


async def test_concurrent_journal_writes_share_one_commit_and_a_stale_fence_loses_only_its_own(
    store: Store,
) -> None:
    for n in range(6):
        await store.create_run(run_factory(f"r{n}"))
    fences = [c.fence for c in await store.claim("w1", NAMES, "default", 6, 30)]
    stale = Fence(fences[0].execution_id, "an-old-token")
    transactions = Transactions(store)
    lost: list[str] = []

    async def write(fence: Fence, position: int) -> None:
        entry = JournalEntry(position, "step", "s", "succeeded", output=fence.token)
        try:
            await store.append_journal(fence, entry)
        except LeaseLost:
            lost.append(fence.token)

    async with anyio.create_task_group() as tg:
        for fence in fences:
            tg.start_soon(write, fence, 0)
        tg.start_soon(write, stale, 0)  # the same entry as a valid fence's, in one batch
    assert lost == ["an-old-token"]
    for fence in fences:
        journal = await store.read_journal(fence.execution_id)
        assert {p: e.output for p, e in journal.items()} == {0: fence.token}
    assert await transactions.count("flowz_journal") == 1


async def test_migrate_is_idempotent(store: Store) -> None:
    await store.create_run(run_factory())
    await store.migrate()
    assert await store.get_execution("r1") is not None


async def execute_sql(store: Store, sql: str) -> None:
    """Run one statement on the store's database, as another tool would."""
    from flowz.store import PostgresStore, SqliteStore

    if isinstance(store, SqliteStore):
        store._db.execute(sql)
    else:
        assert isinstance(store, PostgresStore)
        await store.db.execute(sql, ())


def settings_of(store: Store) -> flowz.Settings:
    from flowz.store import PostgresStore, SqliteStore

    if isinstance(store, SqliteStore):
        return flowz.Settings(database_url=f"sqlite:///{store.path}")
    assert isinstance(store, PostgresStore)
    return flowz.Settings(database_url=store.url)


async def test_a_newer_schema_is_refused_by_migrate_and_by_open(store: Store) -> None:
    await execute_sql(store, "INSERT INTO flowz_schema (version) VALUES (99)")
    with pytest.raises(SchemaVersionError, match=r"v99, newer than the v8 .* upgrade flowz"):
        await store.migrate()
    flowz.store._current.clear()  # as a new process would look
    with pytest.raises(SchemaVersionError, match="v99, newer"):
        await open_store(settings_of(store))


async def test_an_older_schema_is_refused_until_flowz_db_upgrade(store: Store) -> None:
    await store.create_run(run_factory())
    await execute_sql(store, "UPDATE flowz_schema SET version = 1")
    for index in ("runs", "runs_status", "runs_name"):
        await execute_sql(store, f"DROP INDEX ix_flowz_executions_{index}")
    for column in ("queue", "names"):
        await execute_sql(store, f"ALTER TABLE flowz_workers DROP COLUMN {column}")
    for table in ("flowz_messages", "flowz_events", "flowz_streams"):
        await execute_sql(store, f"DROP TABLE {table}")
    await execute_sql(store, "DROP INDEX ix_flowz_executions_deadline")
    await execute_sql(store, "ALTER TABLE flowz_executions DROP COLUMN deadline")
    await execute_sql(store, "DROP INDEX ix_flowz_executions_running")
    await execute_sql(store, "ALTER TABLE flowz_executions DROP COLUMN partition_key")
    await execute_sql(store, "ALTER TABLE flowz_executions DROP COLUMN trace_context")
    for table in ("flowz_queues", "flowz_queue_starts", "flowz_schedules"):
        await execute_sql(store, f"DROP TABLE {table}")
    flowz.store._current.clear()
    with pytest.raises(SchemaVersionError, match=r"v1 and this flowz needs v8: run `flowz db up"):
        await open_store(settings_of(store))
    assert await upgrade_schema(settings_of(store)) == [
        "v2: index ix_flowz_executions_runs: list top-level runs newest first without a scan",
        "v3: flowz_workers.queue and .names: say which worker could take a waiting run",
        "v4: flowz_messages, flowz_events and flowz_streams: talk to running workflows; "
        "flowz_executions.deadline",
        "v5: indexes for list_runs pages (newest first, by status, by name) and for prune",
        "v6: queues with fleet-wide limits (flowz_queues, flowz_queue_starts, "
        "flowz_executions.partition_key) and cron schedules (flowz_schedules)",
        "v7: flowz_executions.trace_context: one OpenTelemetry trace from the caller of start() "
        "to every child, across processes; ix_flowz_executions_parent without top-level runs",
        "v8: ix_flowz_executions_claim in the claim's order (priority descending): a claim no "
        "longer sorts every pending execution",
    ]
    assert await upgrade_schema(settings_of(store)) == []  # nothing left to do
    reopened = await open_store(settings_of(store))
    try:
        assert await reopened.schema_version() == 8
        assert await reopened.get_execution("r1") is not None  # nothing stored was lost
    finally:
        await reopened.aclose()


async def test_every_fenced_write_stamps_updated_at(store: Store) -> None:
    await store.create_run(run_factory())

    async def updated_at() -> float:
        row = await store.get_execution("r1")
        assert row is not None
        return row.updated_at

    writes = [
        lambda fence: store.append_journal(fence, JournalEntry(0, "step", "s", "succeeded")),
        lambda fence: store.schedule_children(fence, [], []),
        lambda fence: store.suspend_until(fence, time.time(), None),
        lambda fence: store.retry_later(fence, time.time(), {"message": "again"}),
        store.release,
        lambda fence: store.finish(fence, "succeeded", 1, None),
    ]
    fence: Fence | None = None
    for write in writes:
        if fence is None or (await store.get_execution("r1")).status != "running":  # type: ignore[union-attr]
            [claim] = await store.claim("w1", NAMES, "default", 1, 30)
            fence = claim.fence
        before = await updated_at()
        await anyio.sleep(0.01)
        await write(fence)
        assert await updated_at() > before, write


async def test_claim_takes_only_due_known_work_of_its_queue_by_priority(store: Store) -> None:
    await store.create_run(run_factory("low", priority=0))
    await store.create_run(run_factory("high", priority=5))
    await store.create_run(run_factory("later", run_at=time.time() + 3600))
    await store.create_run(run_factory("other-queue", queue="q2"))
    await store.create_run(run_factory("unknown", name="not-registered"))
    claims = await store.claim("w1", NAMES, "default", 10, 30)
    assert [c.execution.id for c in claims] == ["high", "low"]
    assert all(c.execution.status == "running" and c.execution.attempt == 1 for c in claims)
    assert all(not c.resumed for c in claims)
    assert await store.claim("w2", NAMES, "default", 10, 30) == []
    due_in = await store.next_due_in(NAMES, "default")
    assert due_in is not None and 3000 < due_in <= 3600


async def test_nothing_pending_means_nothing_is_due(store: Store) -> None:
    # A worker waits its poll interval then; 0 here would make its claim loop spin.
    assert await store.next_due_in(NAMES, "default") is None
    await store.create_run(run_factory())
    await store.claim("w1", NAMES, "default", 1, 30)  # running, not pending
    assert await store.next_due_in(NAMES, "default") is None
    await store.create_run(run_factory("soon"))
    assert await store.next_due_in(NAMES, "default") == 0.0  # due now


async def test_claim_respects_the_batch_limit(store: Store) -> None:
    for i in range(5):
        await store.create_run(run_factory(f"r{i}"))
    assert len(await store.claim("w1", NAMES, "default", 3, 30)) == 3
    assert len(await store.claim("w1", NAMES, "default", 3, 30)) == 2


async def test_a_stale_fence_cannot_write(store: Store) -> None:
    await store.create_run(run_factory())
    old = await claim_one(store)
    await store.release(old)
    new = await claim_one(store, "w2")
    assert new.token != old.token
    with pytest.raises(LeaseLost):
        await store.append_journal(old, JournalEntry(0, "step", "s", "succeeded", output=1))
    with pytest.raises(LeaseLost):
        await store.finish(old, "succeeded", 1, None)
    await store.finish(new, "succeeded", 2, None)
    row = await store.get_execution("r1")
    assert row is not None and row.status == "succeeded" and row.output == 2
    assert await store.read_journal("r1") == {}


async def test_a_finished_execution_never_changes(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store)
    await store.finish(fence, "failed", None, {"type": "x:E", "message": "boom"})
    with pytest.raises(LeaseLost):
        await store.finish(fence, "succeeded", 1, None)
    row = await store.get_execution("r1")
    assert row is not None and row.status == "failed"


async def test_journal_entries_are_read_back_and_replaced_by_position(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store)
    await store.append_journal(fence, JournalEntry(0, "step", "a", "retrying", attempt=1))
    await store.append_journal(
        fence, JournalEntry(0, "step", "a", "succeeded", {"x": [1]}, None, 2)
    )
    await store.append_journal(fence, JournalEntry(1, "now", "flowz.now", "succeeded", "t"))
    journal = await store.read_journal("r1")
    assert sorted(journal) == [0, 1]
    assert journal[0].status == "succeeded" and journal[0].output == {"x": [1]}
    assert journal[0].attempt == 2


async def test_a_resumed_claim_says_so(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store)
    await store.suspend_until(fence, time.time() - 1, None)
    [claim] = await store.claim("w1", NAMES, "default", 1, 30)
    assert claim.resumed


async def test_waiting_on_finished_children_does_not_suspend(store: Store) -> None:
    fence = await suspended_parent(store, 1)
    [child] = await store.claim("w1", ["child"], "default", 5, 30)
    await store.finish(child.fence, "succeeded", 10, None)
    parent = await claim_one(store, names=["wf"])
    assert parent.token != fence.token
    assert not await store.wait_for_children(parent, 2, [0])
    [row] = await store.child_results("r1", [0])
    assert row.output == 10


async def test_the_last_child_wakes_the_parent_exactly_once(store: Store) -> None:
    await suspended_parent(store, 3)
    parent = await store.get_execution("r1")
    assert parent is not None and parent.status == "waiting" and parent.lease_owner is None
    children = await store.claim("w1", ["child"], "default", 5, 30)
    assert len(children) == 3
    for i, child in enumerate(reversed(children)):
        await store.finish(child.fence, "succeeded", i, None)
        parent = await store.get_execution("r1")
        assert parent is not None
        assert parent.status == ("pending" if i == 2 else "waiting")
    assert len(await store.claim("w2", ["wf"], "default", 5, 30)) == 1
    assert await store.claim("w3", ["wf"], "default", 5, 30) == []
    rows = await store.child_results("r1", [0])
    assert [r.child_index for r in rows] == [0, 1, 2]
    assert [r.output for r in rows] == [2, 1, 0]


async def test_a_failed_child_wakes_the_parent_at_once(store: Store) -> None:
    await suspended_parent(store, 3)
    children = await store.claim("w1", ["child"], "default", 5, 30)
    await store.finish(children[1].fence, "failed", None, {"type": "x:E", "message": "no"})
    parent = await store.get_execution("r1")
    assert parent is not None and parent.status == "pending"
    await store.finish(children[0].fence, "succeeded", 1, None)
    parent = await store.get_execution("r1")
    assert parent is not None and parent.status == "pending"
    statuses = [r.status for r in await store.child_results("r1", [0])]
    assert statuses == ["succeeded", "failed", "running"]


async def test_a_woken_wait_is_not_woken_again_by_the_rest_of_its_children(store: Store) -> None:
    # Found by the model-based test: a failed child woke the parent, which then waited
    # on a message; a sibling of that gather failing later woke it again.
    await suspended_parent(store, 2)
    first, second = await store.claim("w1", ["child"], "default", 5, 30)
    await store.finish(first.fence, "failed", None, {"type": "x:E", "message": "no"})
    parent = await claim_one(store, names=["wf"])
    assert await store.receive(parent, 2, "t", None) == (False, None)
    await store.finish(second.fence, "failed", None, {"type": "x:E", "message": "no"})
    row = await store.get_execution("r1")
    assert row is not None and row.status == "waiting", "woken by the gather it left"


async def test_a_child_outside_the_current_wait_does_not_wake_the_parent(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store, names=["wf"])
    await store.schedule_children(
        fence,
        [
            JournalEntry(0, "schedule", "child", "scheduled", output={"width": 1}),
            JournalEntry(1, "schedule", "child", "scheduled", output={"width": 1}),
        ],
        [child_factory("r1", 0, 0), child_factory("r1", 1, 0)],
    )
    assert await store.wait_for_children(fence, 2, [1])
    claims = {c.execution.position: c for c in await store.claim("w1", ["child"], "default", 5, 30)}
    await store.finish(claims[0].fence, "succeeded", 0, None)
    parent = await store.get_execution("r1")
    assert parent is not None and parent.status == "waiting"
    await store.finish(claims[1].fence, "succeeded", 1, None)
    parent = await store.get_execution("r1")
    assert parent is not None and parent.status == "pending"


async def test_child_outcomes_are_read_in_pages_by_position_and_index(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store, names=["wf"])
    await store.schedule_children(
        fence,
        [JournalEntry(p, "gather", "child", "scheduled", output={"width": 3}) for p in (0, 1, 2)],
        [child_factory("r1", p, i) for p in (0, 1, 2) for i in range(3)],
    )
    for claim in await store.claim("w1", ["child"], "default", 20, 30):
        if claim.execution.position == 1:
            await store.finish(claim.fence, "succeeded", {"i": claim.execution.child_index}, None)
    pages, after = [], None
    while True:
        page = await store.child_outcomes("r1", [1, 2], after, 2)
        pages.append([(o.position, o.child_index) for o in page])
        if len(page) < 2:
            break
        after = (page[-1].position, page[-1].child_index)
    assert pages == [[(1, 0), (1, 1)], [(1, 2), (2, 0)], [(2, 1), (2, 2)], []]
    [first] = await store.child_outcomes("r1", [1], None, 1)
    assert (first.id, first.name, first.status, first.output) == (
        "r1/1/0",
        "child",
        "succeeded",
        {"i": 0},
    )
    assert first.error is None and first.finished_at is not None


async def test_retry_later_counts_the_attempt_and_delays_it(store: Store) -> None:
    await suspended_parent(store, 1)
    [child] = await store.claim("w1", ["child"], "default", 5, 30)
    await store.retry_later(child.fence, time.time() + 3600, {"type": "x:E", "message": "once"})
    row = await store.get_execution("r1/0/0")
    assert row is not None and row.status == "pending" and row.attempt == 2
    assert row.error == {"type": "x:E", "message": "once"}
    assert await store.claim("w1", ["child"], "default", 5, 30) == []


async def test_expired_leases_and_dead_workers_are_reaped(store: Store) -> None:
    await store.create_run(run_factory("expired"))
    await store.create_run(run_factory("dead-owner"))
    await store.create_run(run_factory("alive"))
    await store.register_worker("dead", "host", 1)
    await store.claim("short", NAMES, "default", 1, -1)
    await store.claim("dead", NAMES, "default", 1, 30)
    await store.claim("alive", NAMES, "default", 1, 30)
    assert await store.reap(["dead"]) == 2
    assert [w.id for w in await store.list_workers()] == []
    statuses = {
        r: (await store.get_execution(r)).status for r in ("expired", "dead-owner", "alive")
    }  # type: ignore[union-attr]
    assert statuses == {"expired": "pending", "dead-owner": "pending", "alive": "running"}


async def test_heartbeat_renews_leases(store: Store) -> None:
    await store.create_run(run_factory())
    await store.register_worker("w1", "host", 1)
    await store.claim("w1", NAMES, "default", 1, 0.01)
    assert await store.heartbeat("w1", 3600, ["r1"]) == {"r1"}
    assert await store.reap([]) == 0
    row = await store.get_execution("r1")
    assert row is not None and row.lease_expires_at is not None
    assert row.lease_expires_at > time.time() + 3000


async def test_heartbeat_leaves_held_work_the_worker_no_longer_runs_to_lapse(
    store: Store,
) -> None:
    for run_id in ("runs", "stopped"):
        await store.create_run(run_factory(run_id))
    await store.register_worker("w1", "host", 1)
    await store.claim("w1", NAMES, "default", 2, 0.01)
    # "stopped" could not be given back (the store failed then): it is not renewed.
    assert await store.heartbeat("w1", 3600, ["runs"]) == {"runs"}
    time.sleep(0.02)  # past the 10 ms lease of "stopped": the reaper compares clocks
    assert await store.reap([]) == 1
    assert (await store.get_execution("stopped")).status == "pending"  # type: ignore[union-attr]
    assert (await store.get_execution("runs")).status == "running"  # type: ignore[union-attr]


async def test_lost_names_the_running_work_a_worker_no_longer_holds(store: Store) -> None:
    for run_id in ("kept", "cancelled", "finished"):
        await store.create_run(run_factory(run_id))
    await store.register_worker("w1", "host", 1)
    claims = {c.execution.id: c for c in await store.claim("w1", NAMES, "default", 3, 30)}
    assert await store.lost("w1", list(claims)) == set()
    await store.cancel_run("cancelled")
    await store.finish(claims["finished"].fence, "succeeded", 1, None)
    assert await store.lost("w1", list(claims)) == {"cancelled", "finished"}
    assert await store.lost("w2", ["kept"]) == {"kept"}, "held by another worker"
    assert (await store.get_execution("kept")).status == "running"  # type: ignore[union-attr]


async def test_deregistering_a_worker_puts_its_work_back(store: Store) -> None:
    await store.create_run(run_factory())
    await store.register_worker("w1", "host", 1)
    await store.claim("w1", NAMES, "default", 1, 30)
    await store.deregister_worker("w1")
    row = await store.get_execution("r1")
    assert row is not None and row.status == "pending" and row.lease_owner is None
    assert await store.list_workers("host") == []


async def test_retry_run_resets_failed_executions_and_their_failed_entries(store: Store) -> None:
    fence = await suspended_parent(store, 2)
    del fence
    children = await store.claim("w1", ["child"], "default", 5, 30)
    await store.finish(children[0].fence, "succeeded", 1, None)
    await store.finish(children[1].fence, "failed", None, {"type": "x:E", "message": "no"})
    parent = await claim_one(store, names=["wf"])
    await store.append_journal(parent, JournalEntry(2, "step", "s", "failed", error={"m": 1}))
    await store.finish(parent, "failed", None, {"type": "x:E", "message": "no"})
    assert await store.retry_run("r1")
    assert not await store.retry_run("r1")
    rows = {r.id: r for r in await store.list_executions("r1")}
    assert rows["r1"].status == "pending" and rows["r1"].error is None
    assert rows["r1/0/0"].status == "succeeded"
    assert rows["r1/0/1"].status == "pending" and rows["r1/0/1"].attempt == 0
    assert sorted(await store.read_journal("r1")) == [0]
    assert list(rows) == ["r1", "r1/0/0", "r1/0/1"]


async def test_a_child_that_waited_on_its_own_children_still_wakes_its_parent(
    store: Store,
) -> None:
    await store.create_run(run_factory())
    root = await claim_one(store, names=["wf"])
    child = child_factory("r1", 2, 0, kind="workflow", name="wf")
    entry = JournalEntry(2, "schedule", "wf", "scheduled", output={"width": 1})
    assert await store.wait_for_children(root, 3, [2], [entry], [child])
    [middle] = await store.claim("w1", ["wf"], "default", 5, 30)
    assert middle.execution.id == "r1/2/0"
    grandchild = child_factory("r1/2/0", 0, 0)
    entry = JournalEntry(0, "schedule", "child", "scheduled", output={"width": 1})
    assert await store.wait_for_children(middle.fence, 1, [0], [entry], [grandchild])
    [leaf] = await store.claim("w1", ["child"], "default", 5, 30)
    await store.finish(leaf.fence, "succeeded", 1, None)
    [middle] = await store.claim("w1", ["wf"], "default", 5, 30)
    assert middle.execution.id == "r1/2/0" and middle.resumed
    await store.finish(middle.fence, "succeeded", 2, None)
    parent = await store.get_execution("r1")
    assert parent is not None and parent.status == "pending"


async def test_cancel_run_stops_the_whole_unfinished_tree(store: Store) -> None:
    await suspended_parent(store, 3)
    children = await store.claim("w1", ["child"], "default", 5, 30)
    await store.finish(children[0].fence, "succeeded", 1, None)
    assert await store.cancel_run("r1") == 3
    rows = {r.id: r.status for r in await store.list_executions("r1")}
    assert rows == {
        "r1": "cancelled",
        "r1/0/0": "succeeded",
        "r1/0/1": "cancelled",
        "r1/0/2": "cancelled",
    }
    with pytest.raises(LeaseLost):  # the worker running a child cannot record it any more
        await store.finish(children[1].fence, "succeeded", 2, None)
    assert await store.claim("w2", NAMES, "default", 5, 30) == []
    assert await store.cancel_run("r1") == 0
    with pytest.raises(RunNotFoundError):
        await store.cancel_run("nope")


async def test_list_runs_shows_top_level_runs_newest_first(store: Store) -> None:
    for i in range(3):
        await store.create_run(run_factory(f"r{i}", name="wf" if i else "other"))
    fence = await claim_one(store)
    await store.finish(fence, "succeeded", 1, None)

    async def ids(**query: object) -> list[str]:
        return [r.id for r in await store.list_runs(RunQuery(**query))]  # type: ignore[arg-type]

    assert await ids() == ["r2", "r1", "r0"]
    assert await ids(statuses=("succeeded",)) == [fence.execution_id]
    assert await ids(statuses=("succeeded", "pending")) == ["r2", "r1", "r0"]
    assert await ids(statuses=("failed",)) == []
    assert await ids(name="other") == ["r0"]
    assert await ids(limit=2) == ["r2", "r1"]
    rows = await store.list_runs(RunQuery())
    last = rows[1]
    assert await ids(after=(last.created_at, last.id)) == ["r0"]
    assert await ids(since=rows[1].created_at) == ["r2", "r1"]
    assert await ids(until=rows[1].created_at) == ["r0"]


async def test_list_runs_pages_runs_created_in_one_instant_by_id(store: Store) -> None:
    """Keyset pages break ties of created_at by id: none is repeated or skipped."""
    for i in range(7):
        await store.create_run(run_factory(f"t{i}"))
    await execute_sql(store, "UPDATE flowz_executions SET created_at = 1000")
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_runs(RunQuery(limit=3, after=after))
        seen += [r.id for r in page]
        if len(page) < 3:
            break
        after = (page[-1].created_at, page[-1].id)
    assert seen == [f"t{i}" for i in reversed(range(7))]


async def test_list_runs_of_a_parent_lists_its_children(store: Store) -> None:
    await suspended_parent(store, 3)
    children = await store.list_runs(RunQuery(parent="r1"))
    assert sorted(r.id for r in children) == ["r1/0/0", "r1/0/1", "r1/0/2"]
    assert [r.id for r in await store.list_runs(RunQuery())] == ["r1"]


async def test_count_runs_counts_each_status_with_the_filters_of_list_runs(store: Store) -> None:
    for i in range(4):
        await store.create_run(run_factory(f"r{i}", name="wf" if i else "other"))
    fence = await claim_one(store)
    await store.finish(fence, "failed", None, {"type": "x:E", "message": "m"})
    assert await store.count_runs(RunQuery()) == {"pending": 3, "failed": 1}
    assert await store.count_runs(RunQuery(name="other")) == {"pending": 1}
    # Its statuses and its page are not filters of the counts.
    assert await store.count_runs(RunQuery(statuses=("failed",), limit=1)) == {
        "pending": 3,
        "failed": 1,
    }
    rows = await store.list_runs(RunQuery())
    newest = await store.count_runs(RunQuery(since=rows[1].created_at))
    assert newest == dict(Counter(r.status for r in rows[:2]))


async def test_count_runs_of_a_parent_counts_its_children(store: Store) -> None:
    await suspended_parent(store, 3)
    assert await store.count_runs(RunQuery(parent="r1")) == {"pending": 3}
    assert await store.count_runs(RunQuery()) == {"waiting": 1}


async def test_running_by_worker_counts_the_leases_each_worker_holds(store: Store) -> None:
    for i in range(3):
        await store.create_run(run_factory(f"r{i}"))
    assert await store.running_by_worker() == {}
    await store.claim("w1", NAMES, "default", 2, 30)
    await store.claim("w2", NAMES, "default", 5, 30)
    assert await store.running_by_worker() == {"w1": 2, "w2": 1}


async def test_pending_unknown_names_due_work_no_known_function_takes(store: Store) -> None:
    await store.create_run(run_factory("known", name="wf"))
    await store.create_run(run_factory("lost", name="gone:fn"))
    await store.create_run(run_factory("later", name="gone:fn", run_at=time.time() + 3600))
    future = time.time() + 60
    assert [r.id for r in await store.pending_unknown(["wf"], future, 10)] == ["lost"]
    assert [r.id for r in await store.pending_unknown([], future, 10)] == ["known", "lost"]
    assert await store.pending_unknown(["wf"], time.time() - 60, 10) == []  # too recent
    assert len(await store.pending_unknown([], future, 1)) == 1


async def test_create_runs_inserts_a_batch_in_one_go_and_refuses_taken_ids(store: Store) -> None:
    runs = [run_factory(f"b{i}", input={"n": i}) for i in range(5)]
    mark = store.change_mark()
    assert await store.create_runs(runs) == 5
    await store.wait_for_change(5, mark)  # the workers are woken
    assert len(await store.claim("w1", NAMES, "default", 10, 30)) == 5
    assert await store.create_runs(runs[:2]) == 0  # the same runs again: nothing new
    fresh = run_factory("b9", input={"n": 9})
    for taken in (
        run_factory("b1", input={"n": 100}),  # other arguments
        run_factory("b2", name="other", input={"n": 2}),  # another workflow
    ):
        with pytest.raises(flowz.UsageError, match="nothing of this batch was stored"):
            await store.create_runs([fresh, taken])
        assert await store.get_execution("b9") is None
    await suspended_parent(store, 1)
    with pytest.raises(flowz.UsageError, match="a child execution"):
        await store.create_runs([run_factory("r1/0/0", name="child", input={"i": 0})])


async def ended_run_with_children(store: Store) -> Fence:
    """r1 scheduled 3 children at 0, then 1 succeeded, 1 failed, and r1 failed (0/2 cancelled)."""
    fence = await suspended_parent(store, 3)
    for index, status in ((0, "succeeded"), (1, "failed")):
        claims = await store.claim("w2", ["child"], "default", 5, 30)
        child = next(c for c in claims if c.execution.child_index == index)
        for other in claims:
            if other is not child:
                await store.release(other.fence)
        ok = status == "succeeded"
        await store.finish(child.fence, status, index if ok else None, None if ok else {})
    parent = await claim_one(store, names=["wf"])
    await store.append_journal(parent, JournalEntry(2, "step", "s", "succeeded", output="x"))
    await store.append_journal(parent, JournalEntry(3, "step", "t", "failed", error={"m": 1}))
    await store.finish(parent, "failed", None, {"message": "boom"})
    return fence


async def test_fork_copies_the_journal_and_children_before_the_position(store: Store) -> None:
    await ended_run_with_children(store)
    before = {r.id: r for r in await store.list_executions("r1")}
    assert before["r1/0/2"].status == "cancelled"  # the run's end took it

    forked = await store.fork_run("r1", "f1", 3, ["r1/0/2"])
    assert (forked.status, forked.name, forked.input, forked.root_id) == (
        "pending",
        "wf",
        {"n": 1},
        "f1",
    )
    assert sorted(await store.read_journal("f1")) == [0, 2]
    assert (await store.read_journal("f1"))[2].output == "x"
    rows = {r.id: r for r in await store.list_executions("f1")}
    assert {k: (r.status, r.output, r.parent_id) for k, r in rows.items() if k != "f1"} == {
        "f1/0/0": ("succeeded", 0, "f1"),
        "f1/0/1": ("failed", None, "f1"),
        "f1/0/2": ("pending", None, "f1"),  # rerun: it starts again
    }
    assert rows["f1/0/2"].attempt == 0 and rows["f1/0/2"].root_id == "f1"
    # The original is untouched.
    assert {r.id: r for r in await store.list_executions("r1")} == before
    # A fork before the children: neither they nor later entries are copied.
    early = await store.fork_run("r1", "f2", 0, [])
    assert await store.read_journal(early.id) == {}
    assert [r.id for r in await store.list_executions("f2")] == ["f2"]


async def test_fork_refuses_unknown_or_running_runs_and_taken_ids(store: Store) -> None:
    from flowz.errors import UsageError

    await ended_run_with_children(store)
    with pytest.raises(RunNotFoundError, match="no top-level run with id 'nope'"):
        await store.fork_run("nope", "f1", 0, [])
    with pytest.raises(RunNotFoundError):
        await store.fork_run("r1/0/0", "f1", 0, [])  # a child is not a run
    with pytest.raises(UsageError, match="already names a run"):
        await store.fork_run("r1", "r1", 0, [])
    await store.create_run(run_factory("live"))
    with pytest.raises(UsageError, match="is pending: only an ended run can be forked"):
        await store.fork_run("live", "f1", 0, [])
    assert await store.get_execution("f1") is None  # nothing stored


async def test_prune_deletes_old_ended_trees_and_nothing_else(store: Store) -> None:
    await ended_run_with_children(store)  # r1: failed, with children and journal
    for run_id in ("done", "gone"):
        await store.create_run(run_factory(run_id))
        fence = await claim_one(store)
        await store.set_event(fence, JournalEntry(0, "event", "e", "succeeded"), "e", 1)
        await store.finish(fence, "succeeded" if run_id == "done" else "cancelled", 1, None)
    await store.create_run(run_factory("queued"))
    await store.create_run(run_factory("running"))
    await claim_one(store)  # one of the two runs
    await anyio.sleep(0.05)
    cutoff = time.time()
    await anyio.sleep(0.05)
    await store.create_run(run_factory("young"))
    young = await claim_one(store)
    await store.finish(young, "succeeded", 1, None)

    ended = ("succeeded", "failed", "cancelled")
    assert await store.count_prunable(cutoff, ended) == 3
    assert await store.count_prunable(cutoff, ("failed",)) == 1
    assert await store.prune(cutoff, ("failed",), 10) == 1
    assert await store.list_executions("r1") == [] and await store.read_journal("r1") == {}
    assert await store.read_journal("r1/0/0") == {}
    assert await store.prune(cutoff, ended, 1) == 1  # batches of `limit`
    assert await store.prune(cutoff, ended, 10) == 1
    assert await store.prune(cutoff, ended, 10) == 0
    left = {r.id for r in await store.list_runs(RunQuery())}
    assert left == {"queued", "running", "young"}
    assert await store.get_events("done") == {} and await store.get_events("gone") == {}


async def another_store_on_the_same_database(store: Store) -> Store:
    from flowz.store import PostgresStore, SqliteStore

    if isinstance(store, SqliteStore):
        return SqliteStore(store.path)
    assert isinstance(store, PostgresStore)
    other = PostgresStore(store.url)
    await other.open()
    return other


async def test_a_change_made_between_a_mark_and_the_wait_still_wakes_it(store: Store) -> None:
    other = await another_store_on_the_same_database(store)
    try:
        mark = store.change_mark()
        await other.create_run(run_factory("from-another-process"))
        with anyio.fail_after(10):  # the wait's own timeout is a minute
            await store.wait_for_change(60, mark)
        mark = store.change_mark()
        await store.create_run(run_factory("from-this-process"))
        with anyio.fail_after(10):
            await store.wait_for_change(60, mark)
    finally:
        await other.aclose()


async def test_a_claim_carries_the_databases_clock(store: Store) -> None:
    await store.create_run(run_factory())
    [claim] = await store.claim("w1", NAMES, "default", 1, 30)
    # This test's database runs on this host: its clock and ours agree.
    assert abs(claim.now() - time.time()) < 5
    assert claim.now() >= claim.db_now


async def test_messages_are_kept_until_received_in_order_once_each(store: Store) -> None:
    await store.create_run(run_factory())
    for value in ("a", "b"):  # sent before the workflow ever runs: kept
        assert await store.send_message("r1", "t", value, None)
    assert await store.send_message("r1", "t", "c", "key-1")
    assert not await store.send_message("r1", "t", "c again", "key-1"), "same key: one message"
    await store.send_message("r1", "other", "x", None)
    fence = await claim_one(store, names=["wf"])
    taken = [await store.receive(fence, position, "t", None) for position in range(3)]
    assert taken == [(True, "a"), (True, "b"), (True, "c")]
    # Asked again at a position already taken (a retried transaction): the same message.
    assert await store.receive(fence, 1, "t", None) == (True, "b")
    journal = await store.read_journal("r1")
    assert [(e.kind, e.name, e.output) for e in journal.values()] == [
        ("recv", "t", "a"),
        ("recv", "t", "b"),
        ("recv", "t", "c"),
    ]


async def test_a_receive_with_nothing_suspends_and_a_send_wakes_it(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store, names=["wf"])
    assert await store.receive(fence, 0, "t", None) == (False, None)
    row = await store.get_execution("r1")
    assert row is not None and row.status == "waiting" and row.lease_owner is None
    await store.send_message("r1", "other topic", 1, None)
    assert (await store.get_execution("r1")).status == "waiting"  # type: ignore[union-attr]
    await store.send_message("r1", "t", {"ok": True}, None)
    assert (await store.get_execution("r1")).status == "pending"  # type: ignore[union-attr]
    fence = await claim_one(store, names=["wf"])
    assert await store.receive(fence, 0, "t", None) == (True, {"ok": True})


async def test_a_receive_with_a_deadline_sleeps_until_it_then_times_out(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store, names=["wf"])
    deadline = time.time() + 3600
    assert await store.receive(fence, 0, "t", deadline) == (False, None)
    row = await store.get_execution("r1")
    assert row is not None and row.status == "pending" and row.run_at == deadline
    await store.send_message("r1", "t", "early enough", None)
    row = await store.get_execution("r1")
    assert row is not None and row.run_at <= time.time() + 1, "the send made it due now"
    fence = await claim_one(store, names=["wf"])
    assert await store.receive(fence, 0, "t", deadline) == (True, "early enough")
    assert await store.receive(fence, 1, "t", time.time() - 1) == (True, None), "past: timeout"
    assert (await store.read_journal("r1"))[1].status == "succeeded"


async def test_messages_to_what_cannot_read_them_are_refused(store: Store) -> None:
    with pytest.raises(RunNotFoundError, match="no workflow run with id 'nope'"):
        await store.send_message("nope", "t", 1, None)
    fence = await suspended_parent(store, 1)
    del fence
    with pytest.raises(RunNotFoundError, match="no workflow run"):  # a step child
        await store.send_message("r1/0/0", "t", 1, None)
    assert await store.send_message("r1", "t", 1, "hook-1")
    await store.cancel_run("r1")
    with pytest.raises(RunEndedError, match="run 'r1' has been cancelled: a message sent"):
        await store.send_message("r1", "t", 1, None)
    # A webhook delivered again after the run ended: answered as a repeat, not an error.
    assert not await store.send_message("r1", "t", 1, "hook-1")


async def test_events_keep_the_latest_value_and_are_journaled(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store, names=["wf"])
    for position, value in enumerate([1, {"done": 2}]):
        entry = JournalEntry(position, "event", "progress", "succeeded", output=value)
        await store.set_event(fence, entry, "progress", value)
    assert await store.get_events("r1") == {"progress": {"done": 2}}
    assert await store.get_events("other") == {}
    assert len(await store.read_journal("r1")) == 2


async def test_a_stream_is_appended_in_order_and_read_after_a_seq(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store, names=["wf"])
    for position, (value, closed) in enumerate([("a", False), ({"b": 1}, False), (None, True)]):
        entry = JournalEntry(position, "stream", "out", "succeeded", output={"closed": closed})
        await store.write_stream(fence, entry, "out", value, closed)
    items = await store.read_stream("r1", "out", 0)
    assert [(i.seq, i.value, i.closed) for i in items] == [
        (1, "a", False),
        (2, {"b": 1}, False),
        (3, None, True),
    ]
    assert [i.seq for i in await store.read_stream("r1", "out", 2)] == [3]
    assert await store.read_stream("r1", "other", 0) == []


async def test_workers_record_their_queue_and_names(store: Store) -> None:
    await store.register_worker("w1", "host", 1, "fast", ["a:f", "b:g"])
    await store.register_worker("w1", "host", 1, "fast", ["a:f", "b:g", "c:h"])  # it grew
    [worker] = await store.list_workers("host")
    assert (worker.queue, worker.names) == ("fast", ("a:f", "b:g", "c:h"))


async def test_a_wait_for_the_first_child_suspends_only_while_none_has_ended(
    store: Store,
) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store, names=["wf"])
    children = [child_factory("r1", p, 0) for p in (0, 1)]
    entries = [
        JournalEntry(p, "schedule", "child", "scheduled", output={"width": 1}) for p in (0, 1)
    ]
    assert await store.wait_for_children(fence, 2, [0, 1], entries, children, first=True)
    assert (await store.get_execution("r1")).status == "waiting"  # type: ignore[union-attr]
    child = await claim_one(store, names=["child"])
    await store.finish(child, "succeeded", 1, None)
    assert (await store.get_execution("r1")).status == "pending", "one ended: it wakes"  # type: ignore[union-attr]
    fence = await claim_one(store, names=["wf"])
    assert not await store.wait_for_children(fence, 3, [0, 1], first=True), "one has ended"


async def test_cancel_child_cancels_it_and_what_it_started(store: Store) -> None:
    await store.create_run(run_factory())
    fence = await claim_one(store, names=["wf"])
    children = [child_factory("r1", 0, i, kind="workflow", name="wf") for i in range(2)]
    entry = JournalEntry(0, "gather", "wf", "scheduled", output={"width": 2})
    await store.schedule_children(fence, [entry], children)
    await store.create_run(child_factory("r1/0/0", 0, 0))  # a grandchild, under r1/0/0
    cancel = JournalEntry(1, "cancel", "wf", "succeeded", output={"position": 0, "index": 0})
    await store.cancel_child(fence, cancel, "r1/0/0")
    statuses = {r.id: r.status for r in await store.list_executions("r1")}
    assert statuses == {
        "r1": "running",
        "r1/0/0": "cancelled",
        "r1/0/0/0/0": "cancelled",
        "r1/0/1": "pending",
    }
    assert (await store.read_journal("r1"))[1].kind == "cancel"


async def test_expire_wakes_what_waits_or_sleeps_past_its_deadline(store: Store) -> None:
    past, future = time.time() - 1, time.time() + 3600
    for run_id, deadline in (("late", past), ("sleepy", past), ("early", future)):
        await store.create_run(run_factory(run_id, deadline=deadline))
        fence = await claim_one(store, names=["wf"])  # one at a time: this one
        if run_id == "sleepy":
            await store.suspend_until(fence, future, None)  # sleeping beyond its deadline
        else:  # waiting on a message, no timeout
            assert await store.receive(fence, 0, "t", None) == (False, None)
    rows = {r: await store.get_execution(r) for r in ("late", "sleepy", "early")}
    assert {r: row.status for r, row in rows.items() if row} == {
        "late": "waiting",
        "sleepy": "pending",
        "early": "waiting",
    }
    assert await store.expire() == 2
    assert await store.expire() == 0, "nothing left to wake"
    woken = [r.execution.id for r in await store.claim("w1", NAMES, "default", 10, 30)]
    assert sorted(woken) == ["late", "sleepy"]
    assert (await store.get_execution("late")).deadline == past  # type: ignore[union-attr]


async def test_a_limited_claim_never_passes_the_queue_s_limits(store: Store) -> None:
    from flowz.store._protocol import QueueLimits

    await store.define_queues([QueueLimits("api", concurrency=2, per_partition=1)])
    await store.create_run(run_factory())
    parent = await claim_one(store, names=["wf"])
    keys = ["a", "a", "b", "c", "c"]
    children = [
        child_factory("r1", 0, i, queue="api", partition_key=key) for i, key in enumerate(keys)
    ]
    entry = JournalEntry(0, "gather", "child", "scheduled", output={"width": 5})
    assert await store.wait_for_children(parent, 1, [0], [entry], children)
    first, wait = await store.claim_limited("w1", NAMES, "api", 10, 30)
    assert wait is None
    assert len(first) == 2 and len({c.execution.partition_key for c in first}) == 2
    assert (await store.claim_limited("w2", NAMES, "api", 10, 30))[0] == []  # at its limit
    assert await store.claim("w2", NAMES, "default", 10, 30) == []  # another queue
    await store.finish(first[0].fence, "succeeded", 1, None)
    [third], _ = await store.claim_limited("w2", NAMES, "api", 10, 30)
    held = {first[1].execution.partition_key}
    assert third.execution.partition_key not in held  # a full partition waits
    [row] = [q for q in await store.list_queues() if q.limits.name == "api"]
    assert (row.limits.concurrency, row.running, row.waiting) == (2, 2, 2)


async def test_a_rate_limited_claim_admits_the_rate_and_says_when_there_is_room(
    store: Store,
) -> None:
    from flowz.store._protocol import QueueLimits

    await store.define_queues([QueueLimits("paced", rate_limit=3, rate_period=60.0)])
    for i in range(5):
        await store.create_run(run_factory(f"p{i}", queue="paced"))
    taken, wait = await store.claim_limited("w1", NAMES, "paced", 10, 30)
    assert len(taken) == 3 and wait is not None and 59 < wait <= 60
    for claim in taken:
        await store.finish(claim.fence, "succeeded", 1, None)
    assert (await store.claim_limited("w1", NAMES, "paced", 10, 30))[0] == []  # the window
    # Limits change with the next deploy's definition.
    await store.define_queues([QueueLimits("paced")])
    assert len((await store.claim_limited("w1", NAMES, "paced", 10, 30))[0]) == 2


async def test_a_schedule_tick_is_handled_once(store: Store) -> None:
    from flowz.store._protocol import ScheduleRow

    await store.define_schedules([ScheduleRow("wf", "* * * * *", "UTC", "latest")])
    assert await store.tick_schedule("wf", 60.0, run_factory("wf@1"))
    assert not await store.tick_schedule("wf", 60.0, run_factory("wf@1"))  # another worker
    assert not await store.tick_schedule("wf", 30.0, None)  # never backwards
    assert await store.tick_schedule("wf", 120.0, None)  # passed over, no run
    assert [r.id for r in await store.list_runs(RunQuery())] == ["wf@1"]
    assert await store.pause_schedule("wf", True)
    await store.define_schedules([ScheduleRow("wf", "*/5 * * * *", "UTC", "all")])
    [row] = await store.list_schedules()
    assert (row.cron, row.catch_up, row.paused) == ("*/5 * * * *", "all", True)
    assert row.last_tick == 120.0
    assert not await store.pause_schedule("nope", True)


async def test_next_due_in_counts_another_due_time(store: Store) -> None:
    assert await store.next_due_in(NAMES, "default") is None
    due = await store.next_due_in(NAMES, "default", also=time.time() + 30)
    assert due is not None and 25 < due <= 30


async def test_a_fork_keeps_the_partition_key(store: Store) -> None:
    await ended_run_with_children(store)
    await execute_sql(store, "UPDATE flowz_executions SET partition_key = 'tenant-7'")
    forked = await store.fork_run("r1", "f1", 3, ["r1/0/2"])
    assert forked.partition_key == "tenant-7"
    assert {r.partition_key for r in await store.list_executions("f1")} == {"tenant-7"}
