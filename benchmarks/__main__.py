"""flowz's benchmark suite: every workload next to its baseline, in one run.

  python -m benchmarks --engine sqlite|postgres|all [--quick] [--url URL]

Prints a table of absolute figures and ratios per engine, checks the targets, and
writes benchmarks/results/<engine>.json and benchmarks/RESULTS.md. --quick runs
small sizes (a smoke test for CI: no timing is asserted anywhere).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

import flowz
from flowz import gather_durable, step, workflow

from .core import (
    create_schema,
    dbos,
    fan,
    in_process,
    postgres_database,
    raw_postgres,
    raw_sqlite,
    sequential,
    with_worker_processes,
    worker_processes,
)
from .startup import startup, startup_section

HERE = Path(__file__).parent


@step
async def one(i: int) -> int:
    return i


@workflow
async def one_step(i: int) -> int:
    return await one(i)


@workflow
async def wake_probe(n: int) -> str:
    await gather_durable(*(one(i) for i in range(n)))
    return (await flowz.now()).isoformat()


def one_step_workflows(url: str, n: int) -> float:
    """n one-step workflows, each started and completed with `client.run(wf, i)`.

    One client for all, as DBOS launches once for all of its workflows.
    """

    create_schema(url)

    async def main() -> float:
        async with flowz.Client(url, settings=flowz.Settings(progress=False)) as client:
            started = time.perf_counter()
            for i in range(n):
                assert await client.run(one_step, i) == i
            return time.perf_counter() - started

    return anyio.run(main)


def one_step_zero_setup(url: str, n: int) -> float:
    """n one-step workflows with `await wf.run(i)`: a client opened and closed per call."""
    os.environ["FLOWZ_DATABASE_URL"] = url
    create_schema(url)

    async def main() -> float:
        started = time.perf_counter()
        for i in range(n):
            assert await one_step.options(progress=False).run(i) == i
        return time.perf_counter() - started

    return anyio.run(main)


@workflow
async def message_probe() -> None:
    await flowz.recv("go")


@workflow
async def drain(n: int) -> int:
    for i in range(n):
        assert await flowz.recv("m") == i, "messages come in send order"
    return n


def wake_up_latency(url: str, probes: int) -> list[float]:
    """Seconds from the last child's commit to the parent running again, per probe."""

    async def main() -> list[float]:
        latencies = []
        async with flowz.Client(url) as client:
            store = client.store
            for _ in range(probes):
                handle = await client.start(wake_probe, 10)
                await handle.result(timeout=60)
                rows = await store.list_executions(handle.id)
                last_child = max(r.finished_at or 0 for r in rows if r.parent_id == handle.id)
                journal = await store.read_journal(handle.id)
                resumed = journal[max(journal)].started_at or 0
                latencies.append(resumed - last_child)
        return latencies

    with worker_processes(url, 2, "benchmarks.__main__"):
        return anyio.run(main)


def message_wake_latency(url: str, probes: int) -> list[float]:
    """Seconds from a send to the receiving workflow running again on a worker, per probe.

    Timed from just before the send (its commit is inside), to the receive's own
    transaction on the worker (the journal entry's start, on the database's clock,
    which is this machine's).
    """

    async def main() -> list[float]:
        latencies = []
        async with flowz.Client(url) as client:
            store = client.store
            for _ in range(probes):
                handle = await client.start(message_probe)
                while True:  # until it suspended in recv, its worker freed
                    mark = store.change_mark()
                    row = await store.get_execution(handle.id)
                    if row is not None and row.status == "waiting":
                        break
                    await store.wait_for_change(1.0, mark)
                sent = time.time()
                await handle.send("go", None)
                await handle.result(timeout=60)
                resumed = (await store.read_journal(handle.id))[0].started_at or 0
                latencies.append(resumed - sent)
        return latencies

    with worker_processes(url, 2, "benchmarks.__main__"):
        return anyio.run(main)


def messages_in_order(url: str, n: int) -> tuple[float, float]:
    """(seconds to send n messages to one run, seconds for it to take all n, in order)."""
    create_schema(url)

    async def main() -> tuple[float, float]:
        async with flowz.Client(url, settings=flowz.Settings(progress=False)) as client:
            run = drain.options(id="drain")
            handle = await client.start(run, n)
            started = time.perf_counter()
            for i in range(n):
                await handle.send("m", i)
            sent = time.perf_counter()
            assert await client.run(run, n) == n
            return sent - started, time.perf_counter() - sent

    return anyio.run(main)


def medians(
    quick: bool,
    raw: Callable[[], float],
    steps: Callable[[], float],
    peer: Callable[[], float | None] = lambda: None,
) -> tuple[float, float, float | None]:
    """The raw commit, sequential steps and the peer's, in alternating rounds: medians.

    Three rounds (one with --quick), so that a burst of noise on this shared machine
    moves one round of each, not one side of a ratio.
    """
    times: tuple[list[float], list[float], list[float]] = ([], [], [])
    for _ in range(1 if quick else 3):
        times[0].append(raw())
        times[1].append(steps())
        if (seconds := peer()) is not None:
            times[2].append(seconds)
    return (
        statistics.median(times[0]),
        statistics.median(times[1]),
        statistics.median(times[2]) if times[2] else None,
    )


def run_engine(engine: str, quick: bool, url: str) -> dict[str, Any]:
    n = 200 if quick else 1000
    wide = 2000 if quick else 10_000
    r: dict[str, Any] = {"engine": engine, "quick": quick, "n": n, "wide": wide}
    mem: dict[str, float] = {}
    if engine == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}"
            made = iter(range(100))
            r["raw_commit_s"], r["sequential_steps_s"], _ = medians(
                quick,
                lambda: raw_sqlite(Path(tmp) / f"raw{next(made)}.db", n, "FULL"),
                lambda: in_process(f"{db}/s{next(made)}.db", sequential, n),
            )
            r["one_step_workflows_s"] = one_step_workflows(f"{db}/o.db", n)
            r["one_step_zero_setup_s"] = one_step_zero_setup(f"{db}/z.db", n // 5)
            r["gather_n_1_worker_s"] = in_process(f"{db}/g.db", fan, n)
            r["gather_wide_1_worker_s"] = with_worker_processes(f"{db}/w1.db", wide, 1, mem)
            r["gather_wide_2_workers_s"] = with_worker_processes(f"{db}/w2.db", wide, 2)
            r["wake_up_s"] = wake_up_latency(f"{db}/l.db", 5 if quick else 20)
            r["message_wake_up_s"] = message_wake_latency(f"{db}/m.db", 5 if quick else 20)
            r["send_s"], r["take_s"] = messages_in_order(f"{db}/q.db", n * 10)
    else:
        with postgres_database(url) as fresh:
            r["raw_commit_s"], r["sequential_steps_s"], r["dbos_steps_s"] = medians(
                quick,
                lambda: raw_postgres(fresh(), n),
                lambda: in_process(fresh(), sequential, n),
                lambda: dbos("steps", n, fresh()),
            )
            r["one_step_workflows_s"] = one_step_workflows(fresh(), n)
            r["one_step_zero_setup_s"] = one_step_zero_setup(fresh(), n // 5)
            r["gather_n_1_worker_s"] = in_process(fresh(), fan, n)
            r["gather_wide_1_worker_s"] = with_worker_processes(fresh(), wide, 1, mem)
            r["gather_wide_2_workers_s"] = with_worker_processes(fresh(), wide, 2)
            r["wake_up_s"] = wake_up_latency(fresh(), 5 if quick else 20)
            r["message_wake_up_s"] = message_wake_latency(fresh(), 5 if quick else 20)
            r["send_s"], r["take_s"] = messages_in_order(fresh(), n * 10)
            r["dbos_workflows_s"] = dbos("workflows", n, fresh())
            r["dbos_fanout_n_s"] = dbos("fanout", n, fresh())
            r["dbos_fanout_wide_s"] = None if quick else dbos("fanout", wide, fresh())
    r.update(mem)
    return r


def table(r: dict[str, Any]) -> list[str]:
    n, wide = r["n"], r["wide"]
    raw = r["raw_commit_s"] / n
    med = "" if r["quick"] else " (median of 3)"
    rows = [
        (f"{n:,} raw INSERT+COMMIT (same driver){med}", r["raw_commit_s"], n),
        (f"{n:,} sequential inline steps{med}", r["sequential_steps_s"], n),
        (f"{n:,} one-step workflows (client.run, one client)", r["one_step_workflows_s"], n),
        (f"gather of {n:,}, in-process worker", r["gather_n_1_worker_s"], n),
        (f"gather of {wide:,}, 1 worker process", r["gather_wide_1_worker_s"], wide),
        (f"gather of {wide:,}, 2 worker processes", r["gather_wide_2_workers_s"], wide),
    ]
    for key, label, count in [
        ("send_s", f"{n * 10:,} messages sent to one run", n * 10),
        ("take_s", f"{n * 10:,} messages taken by it, in order", n * 10),
        (
            "one_step_zero_setup_s",
            f"{n // 5:,} one-step workflows (await wf.run: a client per call)",
            n // 5,
        ),
        ("dbos_steps_s", f"DBOS: {n:,} sequential steps{med}", n),
        ("dbos_workflows_s", f"DBOS: {n:,} one-step workflows", n),
        ("dbos_fanout_n_s", f"DBOS: queue fan-out of {n:,}", n),
        ("dbos_fanout_wide_s", f"DBOS: queue fan-out of {wide:,}", wide),
    ]:
        if r.get(key):
            rows.append((label, r[key], count))
    lines = [
        "| workload | total | per op | ops/s | vs raw commit |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, total, count in rows:
        per = total / count
        lines.append(
            f"| {label} | {total:.3f} s | {per * 1e6:,.0f} µs | {count / total:,.0f} | "
            f"{per / raw:.2f}x |"
        )
    return lines


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    n, wide = r["n"], r["wide"]
    step_ratio = (r["sequential_steps_s"] / n) / (r["raw_commit_s"] / n)
    wake = r["wake_up_s"]
    wake_median, wake_p95 = (
        statistics.median(wake),
        max(wake) if len(wake) < 20 else sorted(wake)[18],
    )
    message_wake = r["message_wake_up_s"]
    take_ratio = (r["raw_commit_s"] / n) / (r["take_s"] / (n * 10))
    out: list[tuple[str, str, bool | None]] = [
        ("inline step ≤ 1.3x one raw INSERT+COMMIT", f"{step_ratio:.2f}x", step_ratio <= 1.3),
        (
            "parent wake-up ≤ 50 ms after the last child's commit",
            f"median {wake_median * 1000:.1f} ms, p95 {wake_p95 * 1000:.1f} ms",
            wake_median <= 0.05 if r["engine"] == "postgres" else None,
        ),
        (
            "a receiving workflow runs ≤ 20 ms (median) after a send",
            f"median {statistics.median(message_wake) * 1000:.1f} ms, "
            f"max {max(message_wake) * 1000:.1f} ms",
            statistics.median(message_wake) <= 0.02 if r["engine"] == "postgres" else None,
        ),
        (
            f"{n * 10:,} messages taken in order at ≥ 50% of the raw commit rate",
            f"{take_ratio:.0%}",
            take_ratio >= 0.5 if n * 10 >= 10_000 else None,
        ),
    ]
    if "rss_growth_mb" in r:
        out.append(
            (
                f"parent's worker grows < 50 MB during the {wide:,}-child gather",
                f"{r['rss_growth_mb']:.1f} MB",
                r["rss_growth_mb"] < 50 if wide >= 10_000 else None,
            )
        )
    if r["engine"] == "postgres":
        rate = wide / r["gather_wide_2_workers_s"]
        out.append(
            (
                "≥ 2,000 children/s, 2 worker processes",
                f"{rate:,.0f}/s",
                rate >= 2000 if wide >= 10_000 else None,
            )
        )
        if r.get("dbos_steps_s"):
            ratio = r["dbos_steps_s"] / r["sequential_steps_s"]
            out.append(("sequential steps/s ≥ 5x DBOS", f"{ratio:.1f}x", ratio >= 5))
        if r.get("dbos_fanout_wide_s"):
            best = min(r["gather_wide_1_worker_s"], r["gather_wide_2_workers_s"])
            ratio = r["dbos_fanout_wide_s"] / best
            out.append(
                (f"{wide:,}-child gather ≥ 20x faster than DBOS", f"{ratio:.0f}x", ratio >= 20)
            )
    return out


def machine() -> str:
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    pg = ""
    with contextlib.suppress(OSError):
        pg = subprocess.run(
            ["psql", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return (
        f"{os.cpu_count()} cores{memory}, {platform.platform()}, Python {platform.python_version()}"
        f"{', ' + pg if pg else ''}; SQLite WAL synchronous=FULL; PostgreSQL local, "
        "synchronous_commit on"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument(
        "--url",
        default=os.environ.get("FLOWZ_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    os.environ["FLOWZ_PROGRESS"] = "0"
    engines = ["sqlite", "postgres"] if args.engine == "all" else [args.engine]
    report = [
        "# flowz benchmark results",
        "",
        f"Machine: {machine()}. Made by `python -m benchmarks` (each engine's latest full run).",
        "Figures of one run on a shared, noisy machine: read the ratios, not the absolutes.",
        "",
    ]
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    start_up = startup(3 if args.quick else 15)
    start_up["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
    print("\n".join(startup_section(start_up)), flush=True)
    if not args.quick:
        (out_dir / "startup.json").write_text(json.dumps(start_up, indent=2))
    for engine in engines:
        results = run_engine(engine, args.quick, args.url)
        results["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        if not args.quick:
            (out_dir / f"{engine}.json").write_text(json.dumps(results, indent=2))
        print("\n".join(section(results)), flush=True)
    if not args.quick:
        # RESULTS.md: the latest full run of each engine, whichever were run this time.
        for engine in ("sqlite", "postgres"):
            path = out_dir / f"{engine}.json"
            if path.exists():
                report.extend([*section(json.loads(path.read_text())), ""])
        report.extend([*startup_section(start_up), ""])
        report.extend(other_sections(HERE / "RESULTS.md"))
        (HERE / "RESULTS.md").write_text("\n".join(report))
        print(f"written: {HERE / 'RESULTS.md'}")


def other_sections(path: Path) -> list[str]:
    """The sections of RESULTS.md that other benchmarks wrote: kept as they are."""
    own = ("## sqlite", "## postgres", "## start-up")
    kept: list[str] = []
    keep = False
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("## "):
            keep = not line.startswith(own)
        if keep:
            kept.append(line)
    return [*kept, ""] if kept else []


def section(results: dict[str, Any]) -> list[str]:
    lines = [
        f"## {results['engine']} (measured {results.get('measured_at', '?')})",
        "",
        *table(results),
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name, measured, met in targets(results):
        verdict = "n/a (quick or not this engine)" if met is None else ("yes" if met else "NO")
        lines.append(f"| {name} | {measured} | {verdict} |")
    return lines


if __name__ == "__main__":
    main()
