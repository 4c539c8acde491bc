"""flowz against the physical limit of a durable write, measured in one script run.

  python -m benchmarks.core --engine sqlite [--synchronous FULL|NORMAL]
  python -m benchmarks.core --engine postgres [--url postgresql://root@127.0.0.1/test]

Workloads, each on a fresh database:
  - 1,000 raw INSERT+COMMITs with the driver flowz uses (sqlite3; async psycopg);
  - 1,000 sequential inline steps in one workflow (flowz.run, in-process worker);
  - gather_durable of 1,000 children (in-process worker);
  - gather_durable of 10,000 children: SQLite with the in-process worker; PostgreSQL with
    1 and with 2 `flowz worker` processes, the script only starting the run and waiting.
Prints absolute times and ratios against the raw commit.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
from rich.console import Console

import flowz
from flowz import gather_durable, step, workflow
from flowz.progress import ProgressView

ROOT = Path(__file__).parents[1]


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


def raw_sqlite(path: Path, n: int, synchronous: str) -> float:
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


def raw_postgres(url: str, n: int) -> float:
    import psycopg

    async def main() -> float:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await conn.execute(
                "CREATE TABLE raw_t (id serial PRIMARY KEY, position int, output text)"
            )
            await conn.commit()
            started = time.perf_counter()
            for i in range(n):
                await conn.execute(
                    "INSERT INTO raw_t (position, output) VALUES (%s, %s)", (i, str(i))
                )
                await conn.commit()
            return time.perf_counter() - started

    return anyio.run(main)


@contextmanager
def postgres_database(base: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh databases, all dropped at the end."""
    import psycopg

    made: list[str] = []

    def make() -> str:
        name = f"flowz_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        made.append(name)
        return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))

    try:
        yield make
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            for name in made:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


def in_process(
    url: str, wf: flowz.WorkflowFunction[[int], int], n: int, *, view: bool = False
) -> float:
    os.environ["FLOWZ_DATABASE_URL"] = url
    create_schema(url)
    progress: bool | ProgressView = False
    if view:  # the live view drawing to a terminal-like sink, refreshed as usual
        console = Console(file=io.StringIO(), force_terminal=True, width=100)
        progress = ProgressView(console=console, mode="live")
    started = time.perf_counter()
    result = flowz.run(wf.options(progress=progress), n)
    elapsed = time.perf_counter() - started
    assert result == sum(range(n)), result
    return stage(f"{wf.name}({n}) in-process", elapsed)


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def with_worker_processes(
    url: str,
    n: int,
    workers: int,
    memory: dict[str, float] | None = None,
    *,
    timeout: float = 300,
) -> float:
    """Start `workers` flowz worker processes, enqueue a gather of n, wait for its result.

    With `memory`, records how much the first worker's peak RSS grew during the run (MB),
    with one worker, and the highest peak RSS of the workers (MB), with any number.
    """
    os.environ["FLOWZ_DATABASE_URL"] = url
    create_schema(url)  # before the workers race for it
    env = {**os.environ, "FLOWZ_DATABASE_URL": url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "flowz", "worker", "benchmarks.core"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        time.sleep(2)  # let the workers import and connect before the clock starts

        async def run() -> tuple[int, float]:
            started = time.perf_counter()
            handle = await fan.start(n)
            result = await handle.result(timeout=timeout)
            return result, time.perf_counter() - started

        before = _rss_kib(procs[0].pid, "VmRSS")
        result, elapsed = anyio.run(run)
        assert result == sum(range(n)), result
        if memory is not None and workers == 1:
            memory["rss_growth_mb"] = (_rss_kib(procs[0].pid, "VmHWM") - before) / 1024
        if memory is not None:
            memory["peak_rss_mb"] = max(_rss_kib(p.pid, "VmHWM") for p in procs) / 1024
        return stage(f"gather of {n} on {workers} worker process(es)", elapsed)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)


def dbos(workload: str, n: int, url: str) -> float | None:
    """Seconds DBOS took for `workload` of n (benchmarks.peer_dbos, a process of its own)."""
    try:
        import dbos  # noqa: F401
    except ImportError:
        print("  (dbos not installed: pip install -e '.[bench]' to compare)", file=sys.stderr)
        return None
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.peer_dbos", workload, str(n), url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


@contextmanager
def worker_processes(url: str, count: int, module: str) -> Iterator[None]:
    """`count` `flowz worker` processes serving `module` on `url`, ready before the block."""
    os.environ["FLOWZ_DATABASE_URL"] = url
    create_schema(url)  # before the workers race for it
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "flowz", "worker", module],
            cwd=ROOT,
            env={**os.environ, "FLOWZ_PROGRESS": "0"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        time.sleep(2)  # imported and connected before the clock starts
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)


def create_schema(url: str) -> None:
    """Make the database's schema before a clock starts: a one-time cost, not a step's."""

    async def open_and_close() -> None:
        async with flowz.Client(url):
            pass

    anyio.run(open_and_close)


def stage(label: str, seconds: float) -> float:
    print(f"  {label}: {seconds:.3f} s", file=sys.stderr, flush=True)
    return seconds


def report(title: str, per_raw: float, rows: list[tuple[str, float, int]]) -> None:
    print(title)
    print(f"{'workload':<52}{'total':>10}{'per op':>12}{'ops/s':>10}{'vs raw':>9}")
    for label, total, count in rows:
        per = total / count
        print(
            f"{label:<52}{total:>9.3f}s{per * 1e6:>10.0f}us{count / total:>10.0f}"
            f"{per / per_raw:>8.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument(
        "--url",
        default=os.environ.get("FLOWZ_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"),
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--wide", type=int, default=10_000)
    args = parser.parse_args()
    n = args.steps
    if args.engine == "sqlite":
        os.environ["FLOWZ_SQLITE_SYNCHRONOUS"] = args.synchronous
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            raw = raw_sqlite(folder / "raw.db", n, args.synchronous)
            db = f"sqlite:///{folder}"
            rows = [
                (f"{n:,} raw sqlite3 INSERT+COMMIT", raw, n),
                (f"{n:,} sequential inline steps", in_process(f"{db}/s.db", sequential, n), n),
                (f"gather of {n:,}, in-process worker", in_process(f"{db}/g.db", fan, n), n),
                (
                    f"gather of {args.wide:,}, in-process worker",
                    in_process(f"{db}/w.db", fan, args.wide),
                    args.wide,
                ),
                (
                    f"gather of {args.wide:,}, with the live view",
                    in_process(f"{db}/v.db", fan, args.wide, view=True),
                    args.wide,
                ),
            ]
        report(f"SQLite, WAL, synchronous={args.synchronous}", raw / n, rows)
        overhead = rows[-1][1] / rows[-2][1]
        print(f"live view overhead on the {args.wide:,}-child gather: {overhead:.2f}x")
        return
    with postgres_database(args.url) as fresh:
        raw = raw_postgres(fresh(), n)
        wide = args.wide
        rows = [
            (f"{n:,} raw async psycopg INSERT+COMMIT", raw, n),
            (f"{n:,} sequential inline steps", in_process(fresh(), sequential, n), n),
            (f"gather of {n:,}, in-process worker", in_process(fresh(), fan, n), n),
            (
                f"gather of {wide:,}, 1 worker process",
                with_worker_processes(fresh(), wide, 1),
                wide,
            ),
            (
                f"gather of {wide:,}, 2 worker processes",
                with_worker_processes(fresh(), wide, 2),
                wide,
            ),
        ]
    report("PostgreSQL 15, local, synchronous_commit on", raw / n, rows)


if __name__ == "__main__":
    main()
