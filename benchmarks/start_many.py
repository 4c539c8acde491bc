"""Batch starts: enqueueing many runs with start_many, against start one by one and DBOS.

  python -m benchmarks.start_many --engine sqlite|postgres|all [--runs N] [--sample M]

From one client, as a notebook would: N runs with `client.start_many` (1,000 per
transaction), M runs with `client.start` one after another, and M runs enqueued with
DBOS 3.4.0's DBOSClient.enqueue on the same kind of database. Only the enqueueing is
timed (no worker runs). Targets: start_many ≥ 10x the rate of start, and ≥ 10x DBOS.

Prints the figures and writes benchmarks/results/start_many-<engine>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import flowz
from flowz import step, workflow

from .core import dbos, postgres_database

HERE = Path(__file__).parent


@step
async def noop(i: int) -> int:
    return i


@workflow
async def job(i: int) -> int:
    return await noop(i)


def flowz_rates(url: str, runs: int, sample: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        async with flowz.Client(url) as client:
            start = time.perf_counter()
            await client.start_many(job, ((i,) for i in range(runs)))
            many = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(sample):
                await client.start(job, i)
            one_by_one = time.perf_counter() - start
            counted = sum((await client.count_runs()).values())
            assert counted == runs + sample, counted
            return {"start_many_per_s": runs / many, "start_per_s": sample / one_by_one}

    return anyio.run(main)


def dbos_rate(url: str, sample: int) -> float:
    seconds = dbos("enqueue", sample, url)
    assert seconds is not None, "pip install -e '.[bench]': DBOS is the baseline"
    return sample / seconds


def run_engine(engine: str, url: str, runs: int, sample: int) -> dict[str, Any]:
    result: dict[str, Any] = {"engine": engine, "runs": runs, "sample": sample}
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            flowz_url, dbos_url = f"sqlite:///{tmp}/flowz.db", f"sqlite:///{tmp}/dbos.db"
        else:
            fresh = stack.enter_context(postgres_database(url))
            flowz_url, dbos_url = fresh(), fresh()
        result |= flowz_rates(flowz_url, runs, sample)
        result["dbos_enqueue_per_s"] = dbos_rate(dbos_url, sample)
    return result


def report(r: dict[str, Any]) -> list[str]:
    vs_start = r["start_many_per_s"] / r["start_per_s"]
    vs_dbos = r["start_many_per_s"] / r["dbos_enqueue_per_s"]
    return [
        f"### {r['engine']}: enqueueing runs from one client",
        "",
        "| how | runs | runs/s |",
        "|---|---:|---:|",
        f"| `client.start_many` (1,000 per transaction) | {r['runs']:,} | "
        f"{r['start_many_per_s']:,.0f} |",
        f"| `client.start`, one by one | {r['sample']:,} | {r['start_per_s']:,.0f} |",
        f"| DBOS 3.4.0 `DBOSClient.enqueue` | {r['sample']:,} | {r['dbos_enqueue_per_s']:,.0f} |",
        "",
        f"- start_many / start: {vs_start:.1f}x (target ≥ 10x: "
        f"{'met' if vs_start >= 10 else 'NOT met'}); start_many / DBOS enqueue: "
        f"{vs_dbos:.1f}x (target ≥ 10x: {'met' if vs_dbos >= 10 else 'NOT met'})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=3_000)
    parser.add_argument(
        "--url",
        default=os.environ.get("FLOWZ_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    for engine in ["sqlite", "postgres"] if args.engine == "all" else [args.engine]:
        result = run_engine(engine, args.url, args.runs, args.sample)
        result["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        (out_dir / f"start_many-{engine}.json").write_text(json.dumps(result, indent=2))
        print("\n".join(report(result)), flush=True)


if __name__ == "__main__":
    main()
