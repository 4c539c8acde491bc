"""Operating runs at scale: a list_runs page over 100,000 runs, and prune beside live work.

  python -m benchmarks.operate --engine sqlite|postgres|all [--runs N] [--url URL]

1. `list_runs` first page (50 runs) over N top-level runs, per filter; the baseline
   is a primary-key read of one run (`get_run`) on the same client. Target ≤ 10 ms.
2. Worker step latency while `flowz db prune` deletes N ended runs (each with a
   child and journal entries) in another process; the baseline is the same probe
   with nothing else running. Target: p99 within 2x of idle.

Prints the figures and writes benchmarks/results/operate-<engine>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import flowz
from flowz import step, workflow

from .core import ROOT, postgres_database

HERE = Path(__file__).parent


@step
async def tick(i: int) -> int:
    return i


@workflow
async def probe(n: int) -> list[float]:
    """`n` sequential steps; the seconds each took, journal write included."""
    took = []
    for i in range(n):
        start = time.perf_counter()
        await tick(i)
        took.append(time.perf_counter() - start)
    return took


async def fill(client: flowz.Client, runs: int, *, with_children: bool) -> None:
    """`runs` ended top-level runs created long ago (4 per instant), in bulk statements."""
    store: Any = client.store
    numbers = (
        f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {runs - 1}) "
    )
    statements = [
        numbers + "INSERT INTO flowz_executions (id, root_id, kind, name, input, status, "
        "attempt, max_attempts, run_at, queue, priority, wait_count, created_at, updated_at, "
        "finished_at) SELECT 'r' || i, 'r' || i, 'workflow', "
        "CASE WHEN i - i / 10 * 10 = 0 THEN 'rare' ELSE 'common' END, '[]', "
        "CASE i - i / 3 * 3 WHEN 0 THEN 'succeeded' WHEN 1 THEN 'failed' ELSE 'cancelled' END, "
        "1, 1, 1, 'default', 0, 0, 1000 + i / 4, 1000, 1001 + i / 4 FROM n",
    ]
    if with_children:
        statements += [
            numbers + "INSERT INTO flowz_executions (id, root_id, parent_id, position, "
            "child_index, kind, name, input, output, status, attempt, max_attempts, run_at, "
            "queue, priority, wait_count, created_at, updated_at, finished_at) SELECT "
            "'r' || i || '/0/0', 'r' || i, 'r' || i, 0, 0, 'step', 'child', '[1]', '2', "
            "'succeeded', 1, 1, 1, 'default', 0, 0, 1000, 1000, 1001 FROM n",
            numbers + "INSERT INTO flowz_journal (execution_id, position, kind, name, status, "
            "output, attempt) SELECT 'r' || i, 0, 'schedule', 'child', 'scheduled', "
            "'{\"width\": 1}', 1 FROM n",
            numbers + "INSERT INTO flowz_journal (execution_id, position, kind, name, status, "
            "output, attempt) SELECT 'r' || i, 2, 'step', 'tick', 'succeeded', '3', 1 FROM n",
        ]
    for sql in statements:
        if hasattr(store, "_db"):  # SQLite
            store._db.execute(sql)
        else:
            await store.db.execute(sql, ())
    if hasattr(store, "_db"):
        store._db.execute("ANALYZE")
    else:
        await store.db.execute("ANALYZE", ())


def list_pages(url: str, runs: int, repeats: int) -> dict[str, float]:
    """Median seconds of a first page per filter, and of the get_run baseline."""

    async def main() -> dict[str, float]:
        async with flowz.Client(url) as client:
            await fill(client, runs, with_children=False)
            queries: dict[str, dict[str, Any]] = {
                "newest": {},
                "status=failed": {"status": "failed"},
                "name=rare (10%)": {"name": "rare"},
                "name+status": {"name": "rare", "status": "cancelled"},
                "since 1 h": {"since": dt.timedelta(hours=1)},
            }
            queries["page 2 (cursor)"] = {"cursor": (await client.list_runs(limit=50)).next_cursor}
            out: dict[str, float] = {}
            for label, filters in queries.items():
                samples = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    await client.list_runs(limit=50, **filters)
                    samples.append(time.perf_counter() - start)
                out[label] = statistics.median(samples)
            samples = []
            for i in range(repeats):
                start = time.perf_counter()
                await client.get_run(f"r{i}")
                samples.append(time.perf_counter() - start)
            out["baseline: get_run"] = statistics.median(samples)
            return out

    return anyio.run(main)


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)]


def prune_latency(url: str, runs: int, steps: int) -> dict[str, float]:
    """Step latency p50/p99 idle, then while another process prunes `runs` ended runs."""
    os.environ["FLOWZ_DATABASE_URL"] = url
    os.environ["FLOWZ_PROGRESS"] = "0"

    async def fill_only() -> None:
        async with flowz.Client(url) as client:
            await fill(client, runs, with_children=True)

    async def probe_run() -> list[float]:
        async with flowz.Client(url) as client:
            return await client.run(probe.options(progress=False), steps)

    anyio.run(fill_only)
    idle: list[float] = []
    for _ in range(5):  # enough samples for a steady p99
        idle += anyio.run(probe_run)
    start = time.perf_counter()
    pruning = subprocess.Popen(
        [sys.executable, "-m", "flowz", "db", "prune", "--older-than", "1d"],
        cwd=ROOT,
        env={**os.environ},
        stdout=subprocess.PIPE,
        text=True,
    )
    busy: list[float] = []
    while pruning.poll() is None:  # probe for as long as the prune runs
        busy += anyio.run(probe_run)
    prune_s = time.perf_counter() - start
    out = pruning.communicate()[0]
    assert f"deleted {runs} run(s)" in out, out
    return {
        "idle_p50_s": statistics.median(idle),
        "idle_p99_s": p99(idle),
        "busy_p50_s": statistics.median(busy),
        "busy_p99_s": p99(busy),
        "busy_steps": len(busy),
        "prune_s": prune_s,
    }


def run_engine(engine: str, url: str, runs: int) -> dict[str, Any]:
    result: dict[str, Any] = {"engine": engine, "runs": runs}
    if engine == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            result["pages"] = list_pages(f"sqlite:///{tmp}/list.db", runs, 50)
            result["prune"] = prune_latency(f"sqlite:///{tmp}/prune.db", runs, 2000)
    else:
        with postgres_database(url) as fresh:
            result["pages"] = list_pages(fresh(), runs, 50)
            result["prune"] = prune_latency(fresh(), runs, 2000)
    return result


def report(r: dict[str, Any]) -> list[str]:
    lines = [
        f"## {r['engine']}: list_runs and prune over {r['runs']:,} runs",
        "",
        "| list_runs first page (50) | median |",
        "|---|---:|",
    ]
    for label, seconds in r["pages"].items():
        lines.append(f"| {label} | {seconds * 1000:.2f} ms |")
    worst = max(v for k, v in r["pages"].items() if not k.startswith("baseline"))
    p = r["prune"]
    ratio = p["busy_p99_s"] / p["idle_p99_s"]
    lines += [
        "",
        f"- slowest first page: {worst * 1000:.2f} ms (target ≤ 10 ms: "
        f"{'met' if worst <= 0.010 else 'NOT met'})",
        f"- prune of {r['runs']:,} runs (each with a child and 2 journal entries) in another "
        f"process: {p['prune_s']:.1f} s",
        f"- step latency idle: p50 {p['idle_p50_s'] * 1000:.2f} ms, p99 "
        f"{p['idle_p99_s'] * 1000:.2f} ms; during the prune ({p['busy_steps']:,} steps): p50 "
        f"{p['busy_p50_s'] * 1000:.2f} ms, p99 {p['busy_p99_s'] * 1000:.2f} ms = "
        f"{ratio:.2f}x idle (target ≤ 2x: {'met' if ratio <= 2 else 'NOT met'})",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument(
        "--url",
        default=os.environ.get("FLOWZ_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    for engine in ["sqlite", "postgres"] if args.engine == "all" else [args.engine]:
        result = run_engine(engine, args.url, args.runs)
        result["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        (out_dir / f"operate-{engine}.json").write_text(json.dumps(result, indent=2))
        print("\n".join(report(result)), flush=True)


if __name__ == "__main__":
    main()
