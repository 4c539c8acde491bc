"""flowz on SQLite against the physical limit, measured in one process.

Runs, on fresh databases in a temporary folder, with the same durability setting:
  - 1,000 raw sqlite3 INSERT+COMMITs (WAL): the cost of one durable write;
  - 1,000 sequential inline steps in one workflow;
  - a gather_durable of 1,000 (and 10,000) trivial children, end to end.
Prints absolute times and ratios. Usage:
  python -m benchmarks.core_sqlite [--synchronous FULL|NORMAL] [--wide 10000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import flowz
from flowz import gather_durable, step, workflow


@step
async def noop(i: int) -> int:
    return i


@workflow
async def sequential(n: int) -> int:
    total = 0
    for i in range(n):
        total += await noop(i)
    return total


@workflow
async def fan(n: int) -> int:
    return sum(await gather_durable(*(noop(i) for i in range(n))))


def raw_commits(path: Path, n: int, synchronous: str) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, position INTEGER, output TEXT)")
    started = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (position, output) VALUES (?, ?)", (i, str(i)))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def timed_run(folder: Path, name: str, wf: flowz.WorkflowFunction[[int], int], n: int) -> float:
    os.environ["FLOWZ_DATABASE_URL"] = f"sqlite:///{folder / name}.db"
    started = time.perf_counter()
    result = flowz.run(wf, n)
    elapsed = time.perf_counter() - started
    assert result == sum(range(n)), result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--wide", type=int, default=10_000)
    args = parser.parse_args()
    os.environ["FLOWZ_SQLITE_SYNCHRONOUS"] = args.synchronous
    n = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        raw = raw_commits(folder / "raw.db", n, args.synchronous)
        seq = timed_run(folder, "sequential", sequential, n)
        gather = timed_run(folder, "gather", fan, n)
        wide = timed_run(folder, "wide", fan, args.wide) if args.wide else None
    print(f"SQLite, WAL, synchronous={args.synchronous}")
    print(f"{'workload':<44}{'total':>10}{'per op':>12}{'vs raw commit':>15}")
    per_raw = raw / n
    rows = [
        (f"{n:,} raw sqlite3 INSERT+COMMIT", raw, n),
        (f"{n:,} sequential inline steps (1 workflow)", seq, n),
        (f"gather_durable of {n:,} children", gather, n),
    ]
    if wide is not None:
        rows.append((f"gather_durable of {args.wide:,} children", wide, args.wide))
    for label, total, count in rows:
        per = total / count
        print(f"{label:<44}{total:>9.3f}s{per * 1e6:>10.0f}µs{per / per_raw:>14.2f}x")


if __name__ == "__main__":
    main()
