"""Many concurrent workflows: 1,000 runs of 5 sequential steps on a fleet of workers.

  python -m benchmarks.many_workflows --engine sqlite|postgres|all [--runs N] [--quick]

A client enqueues N `five_steps` runs with 16 concurrent `start`s while 1 or 2
`flowz worker` processes (started before the clock) run them; timed from the first
start to the last result. Baselines in the same run, on the same kind of database:

- raw INSERT+COMMIT from 16 concurrent connections (the driver flowz uses), as many
  commits as the workload has steps: the rate the database can commit at all;
- DBOS 3.4.0, the same workload: the workflows enqueued on a Queue from 4 threads,
  executed by the same DBOS process, every handle's result awaited.

The raw baseline and flowz with 1 and 2 workers run in 3 alternating rounds (medians,
each on a fresh database); DBOS runs once. Targets (PostgreSQL, 2 workers): steps/s
≥ 0.6x the raw concurrent commit rate and ≥ 20x DBOS; 2 workers faster than 1.
Prints the figures and writes benchmarks/results/many_workflows-<engine>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio

import flowz
from flowz import workflow

from .core import dbos, noop, postgres_database, worker_processes

HERE = Path(__file__).parent
STEPS = 5
CLIENTS = 16


@workflow
async def five_steps(i: int) -> int:
    total = 0
    for k in range(STEPS):
        total += await noop(i + k)
    return total


def raw_concurrent_postgres(url: str, commits: int) -> float:
    import psycopg

    async def main() -> float:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE raw_t (id serial PRIMARY KEY, position int, output text)"
            )
        conns = [await psycopg.AsyncConnection.connect(url) for _ in range(CLIENTS)]

        async def commit_many(conn: psycopg.AsyncConnection[Any], count: int) -> None:
            for i in range(count):
                await conn.execute(
                    "INSERT INTO raw_t (position, output) VALUES (%s, %s)", (i, str(i))
                )
                await conn.commit()

        try:
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for conn in conns:
                    tg.start_soon(commit_many, conn, commits // CLIENTS)
            return time.perf_counter() - started
        finally:
            for conn in conns:
                await conn.close()

    return anyio.run(main)


def raw_concurrent_sqlite(path: Path, commits: int) -> float:
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, position INTEGER, output TEXT)")
    setup.close()

    def commit_many(count: int) -> None:
        db = sqlite3.connect(path, isolation_level=None, timeout=60)
        db.execute("PRAGMA synchronous=FULL")
        for i in range(count):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (position, output) VALUES (?, ?)", (i, str(i)))
            db.execute("COMMIT")
        db.close()

    threads = [
        threading.Thread(target=commit_many, args=(commits // CLIENTS,)) for _ in range(CLIENTS)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def flowz_concurrent(url: str, runs: int, worker_count: int) -> float:
    """Seconds from the first start to the last result of `runs` five_steps runs."""

    async def main() -> float:
        async with flowz.Client(url, settings=flowz.Settings(progress=False)) as client:
            handles: list[flowz.RunHandle[int]] = []
            numbers = iter(range(runs))

            async def starter() -> None:
                for i in numbers:  # shared: 16 starts in flight at any time
                    handles.append(await client.start(five_steps, i))

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(CLIENTS):
                    tg.start_soon(starter)
            results = [await handle.result(timeout=600) for handle in handles]
            elapsed = time.perf_counter() - started
        expected = sum(i * STEPS + STEPS * (STEPS - 1) // 2 for i in range(runs))
        assert sum(results) == expected, (sum(results), expected)
        return elapsed

    with worker_processes(url, worker_count, "benchmarks.many_workflows"):
        return anyio.run(main)


def run_engine(engine: str, url: str, runs: int, rounds: int) -> dict[str, Any]:
    steps = runs * STEPS
    r: dict[str, Any] = {"engine": engine, "runs": runs, "steps": steps, "rounds": rounds}
    times: dict[str, list[float]] = {"raw_s": [], "flowz_1_s": [], "flowz_2_s": []}
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            os.environ["FLOWZ_SQLITE_SYNCHRONOUS"] = "FULL"
            made = iter(range(1_000))

            def fresh() -> str:
                return f"sqlite:///{tmp}/db{next(made)}.db"

            def raw() -> float:
                return raw_concurrent_sqlite(Path(fresh().removeprefix("sqlite:///")), steps)
        else:
            fresh = stack.enter_context(postgres_database(url))

            def raw() -> float:
                return raw_concurrent_postgres(fresh(), steps)

        for round_ in range(rounds):
            times["raw_s"].append(raw())
            for count in (1, 2):
                times[f"flowz_{count}_s"].append(flowz_concurrent(fresh(), runs, count))
            print(
                f"  round {round_ + 1}: raw {times['raw_s'][-1]:.2f} s, flowz 1 worker "
                f"{times['flowz_1_s'][-1]:.2f} s, 2 workers {times['flowz_2_s'][-1]:.2f} s",
                flush=True,
            )
        r |= {key: statistics.median(values) for key, values in times.items()}
        r["all"] = times
        r["dbos_s"] = dbos("concurrent", runs, fresh())
        if r["dbos_s"] is not None:
            print(f"  DBOS: {r['dbos_s']:.2f} s", flush=True)
    return r


def report(r: dict[str, Any]) -> list[str]:
    steps = r["steps"]
    raw_rate = steps / r["raw_s"]
    lines = [
        f"### {r['engine']}: {r['runs']:,} workflows of {STEPS} steps, {CLIENTS} concurrent starts",
        "",
        "| how | total | steps/s | vs raw commit rate |",
        "|---|---:|---:|---:|",
        f"| raw INSERT+COMMIT from {CLIENTS} connections ({steps:,} commits; median) | "
        f"{r['raw_s']:.2f} s | {raw_rate:,.0f} | 1.00x |",
    ]
    for count in (1, 2):
        seconds = r[f"flowz_{count}_s"]
        lines.append(
            f"| flowz, {count} `flowz worker` process{'es' if count > 1 else ''} (median) | "
            f"{seconds:.2f} s | {steps / seconds:,.0f} | {steps / seconds / raw_rate:.2f}x |"
        )
    if r["dbos_s"] is not None:
        lines.append(
            f"| DBOS 3.4.0 (Queue, 4 enqueue threads) | {r['dbos_s']:.2f} s | "
            f"{steps / r['dbos_s']:,.0f} | {steps / r['dbos_s'] / raw_rate:.2f}x |"
        )
    two = steps / r["flowz_2_s"]
    lines.append("")
    vs_raw = two / raw_rate
    lines.append(
        f"- 2 workers: {vs_raw:.2f}x the raw concurrent commit rate (target ≥ 0.6x: "
        f"{'met' if vs_raw >= 0.6 else 'NOT met'}); 2 workers / 1 worker: "
        f"{r['flowz_1_s'] / r['flowz_2_s']:.2f}x (target > 1: "
        f"{'met' if r['flowz_2_s'] < r['flowz_1_s'] else 'NOT met'})"
        + (
            f"; vs DBOS: {r['dbos_s'] / r['flowz_2_s']:.1f}x (target ≥ 20x: "
            f"{'met' if r['dbos_s'] / r['flowz_2_s'] >= 20 else 'NOT met'})"
            if r["dbos_s"] is not None
            else ""
        )
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 runs, 1 round: a smoke test")
    parser.add_argument(
        "--url",
        default=os.environ.get("FLOWZ_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    os.environ["FLOWZ_PROGRESS"] = "0"
    runs = 100 if args.quick else args.runs
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    for engine in ["sqlite", "postgres"] if args.engine == "all" else [args.engine]:
        result = run_engine(engine, args.url, runs, 1 if args.quick else args.rounds)
        result["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        if not args.quick:
            (out_dir / f"many_workflows-{engine}.json").write_text(json.dumps(result, indent=2))
        print("\n".join(report(result)), flush=True)


if __name__ == "__main__":
    main()
