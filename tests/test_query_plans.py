"""Every list_runs filter and the prune read use an index: no scan of the table, no sort."""

from __future__ import annotations

from typing import Any

import pytest

from flowz.store import PostgresStore, SqliteStore, Store
from flowz.store._protocol import RunQuery
from flowz.store._sql import (
    CLAIM_ORDER,
    cancel_descendants_sql,
    prunable_sql,
    run_counts_sql,
    run_query_sql,
)
from tests.test_store_contract import execute_sql

pytestmark = pytest.mark.anyio

QUERIES = {
    "newest": (RunQuery(), "ix_flowz_executions_runs"),
    "status": (RunQuery(statuses=("failed",)), "ix_flowz_executions_runs_status"),
    "name": (RunQuery(name="wf3"), "ix_flowz_executions_runs_name"),
    "since and until": (RunQuery(since=1.0, until=2.0), "ix_flowz_executions_runs"),
    "next page": (RunQuery(after=(5.0, "r9")), "ix_flowz_executions_runs"),
    "status, next page": (
        RunQuery(statuses=("failed",), after=(5.0, "r9")),
        "ix_flowz_executions_runs_status",
    ),
    "children": (RunQuery(parent="r1"), "ix_flowz_executions_parent"),
}


@pytest.fixture
async def filled(store: Store) -> Store:
    """20,000 ended runs of 10 names, with statistics, so the planner sees a real table."""
    await execute_sql(
        store,
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999) "
        "INSERT INTO flowz_executions (id, root_id, kind, name, input, status, attempt, "
        "max_attempts, run_at, queue, priority, wait_count, created_at, updated_at, "
        "finished_at) SELECT 'r' || i, 'r' || i, 'workflow', 'wf' || (i - i / 10 * 10), "
        "'[]', CASE i - i / 3 * 3 WHEN 0 THEN 'succeeded' WHEN 1 THEN 'failed' "
        "ELSE 'cancelled' END, 1, 1, 1, 'default', 0, 0, i, i, i + 1 FROM n",
    )
    await execute_sql(store, "ANALYZE")
    return store


async def plan(store: Store, sql: str, params: list[Any]) -> str:
    """The query plan as text, on SQLite or PostgreSQL (there with sequential scans off)."""
    if isinstance(store, SqliteStore):
        rows = store._db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return "\n".join(str(r[-1]) for r in rows)
    assert isinstance(store, PostgresStore)
    conn = await store.db.checkout()
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await (await conn.execute(f"EXPLAIN {sql}", params)).fetchall()
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("label", list(QUERIES))
async def test_list_runs_reads_an_index_in_order(filled: Store, label: str) -> None:
    query, index = QUERIES[label]
    sqlite = isinstance(filled, SqliteStore)
    text = await plan(filled, *run_query_sql(query, "?" if sqlite else "%s", hint=sqlite))
    assert "SCAN flowz_executions\n" not in text + "\n" and "Seq Scan" not in text, text
    if sqlite:  # the statement names its index: the plan is the same on any data
        assert index in text, text
        if label != "children":  # a parent's children: bounded by its fan-out, then sorted
            assert "TEMP B-TREE" not in text, text
    else:  # PostgreSQL picks among the indexes by its statistics; never a scan
        assert "ix_flowz_executions" in text, text


async def test_the_prune_read_uses_the_status_index(filled: Store) -> None:
    sqlite = isinstance(filled, SqliteStore)
    mark = "?" if sqlite else "%s"
    statuses = ("succeeded", "failed", "cancelled")
    sql = prunable_sql(statuses, mark, "id", hint=sqlite) + f" LIMIT {mark}"
    text = await plan(filled, sql, [*statuses, 100.0, 100.0, 10])
    assert "Seq Scan" not in text and "TEMP B-TREE" not in text and "Sort" not in text, text
    assert ("ix_flowz_executions_runs_status" if sqlite else "ix_flowz_executions_runs") in text


async def test_a_tree_of_children_is_read_through_the_parent_index(filled: Store) -> None:
    """Ending a workflow cancels its unfinished descendants: a walk down the parent index.

    With 20,000 analysed top-level runs, the parent index used to hold them all under
    NULL, and SQLite's statistics made it scan the table at each level instead (24 s
    for 3,000 children over 100,000 runs). Partial, it holds children only.
    """
    sqlite = isinstance(filled, SqliteStore)
    mark = "?" if sqlite else "%s"
    sql = cancel_descendants_sql(mark, mark)
    text = await plan(filled, sql, ["r1", 1.0, 1.0])
    assert "SCAN flowz_executions\n" not in text + "\n" and "SCAN e\n" not in text + "\n", text
    assert "Seq Scan" not in text and "ix_flowz_executions_parent" in text, text


@pytest.mark.parametrize(
    "query", [RunQuery(), RunQuery(name="wf3"), RunQuery(since=5.0)], ids=["all", "name", "since"]
)
async def test_the_counts_per_status_read_an_index(filled: Store, query: RunQuery) -> None:
    """The dashboard's counts over every run: from an index, never the table."""
    sqlite = isinstance(filled, SqliteStore)
    text = await plan(filled, *run_counts_sql(query, "?" if sqlite else "%s", hint=sqlite))
    assert "SCAN flowz_executions\n" not in text + "\n" and "Seq Scan" not in text, text
    assert "ix_flowz_executions_runs" in text, text


async def test_a_claim_reads_pending_work_in_order_off_its_index(store: Store) -> None:
    # 20,000 pending children of one gather, with statistics: a claim must not sort them
    # (it did, every claim, until v8: the index's priority ran the other way).
    await execute_sql(
        store,
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999) "
        "INSERT INTO flowz_executions (id, root_id, parent_id, position, child_index, kind, "
        "name, input, status, attempt, max_attempts, run_at, queue, priority, wait_count, "
        "created_at, updated_at) SELECT 'r/0/' || i, 'r', 'r', 0, i, 'step', 's', '[]', "
        "'pending', 0, 1, 1, 'default', 0, 0, 0, 0 FROM n",
    )
    await execute_sql(store, "ANALYZE")
    sqlite = isinstance(store, SqliteStore)
    mark = "?" if sqlite else "%s"
    sql = (
        "SELECT id FROM flowz_executions WHERE status = 'pending' AND queue = "
        f"{mark} AND run_at <= {mark} {CLAIM_ORDER} LIMIT {mark}"
    )
    text = await plan(store, sql, ["default", 2.0, 16])
    assert "TEMP B-TREE" not in text and "Sort" not in text, text
    assert "ix_flowz_executions_claim" in text, text


@pytest.mark.postgres
async def test_a_wide_gather_refreshes_the_planners_statistics(postgres_url: str) -> None:
    # Autovacuum's analyze is a minute or more away: until then the planner took a
    # million new children for an empty table and sorted them all on every claim.
    from flowz.store._protocol import JournalEntry, NewExecution

    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await store.create_run(
            NewExecution(id="r", root_id="r", kind="workflow", name="wf", input=None)
        )
        [claim] = await store.claim("w", ["wf"], "default", 1, 30)
        children = [
            NewExecution(
                id=f"r/0/{i}", root_id="r", kind="step", name="s", input=None,
                parent_id="r", position=0, child_index=i,
            )
            for i in range(10_000)
        ]  # fmt: skip
        entry = JournalEntry(0, "gather", "s", "scheduled", output={"width": 10_000})
        assert await store.wait_for_children(claim.fence, 1, [0], [entry], children)
        [(rows,)] = await store.db.select(
            "SELECT reltuples FROM pg_class WHERE relname = 'flowz_executions'", ()
        )
        assert rows >= 10_000
    finally:
        await store.aclose()
