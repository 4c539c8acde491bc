"""The cost of a queue's limits: a gather into a queue with concurrency=64 vs the default queue.

  python -m benchmarks.queues --engine sqlite|postgres|all [--n N] [--url URL]

Both gathers run N no-op step children with the in-process worker (64 at once), in
the same process, alternately, three times each; the ratio of the median child rates
is the figure (target: the limited queue at ≥ 80% of the unlimited claim rate).
Writes benchmarks/results/queues-<engine>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import flowz
from flowz import gather_durable, step, workflow

from .core import in_process, postgres_database

HERE = Path(__file__).parent
limited = flowz.Queue("bench-64", concurrency=64)


@step
async def free_hop(i: int) -> int:
    return i


@step(queue=limited)
async def limited_hop(i: int) -> int:
    return i


@workflow
async def unlimited_fan(n: int) -> int:
    return sum(await gather_durable(*(free_hop(i) for i in range(n))))


@workflow
async def limited_fan(n: int) -> int:
    return sum(await gather_durable(*(limited_hop(i) for i in range(n))))


def run_engine(engine: str, url: str, n: int) -> dict[str, Any]:
    free: list[float] = []
    capped: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, postgres_database(url) as fresh:
        for i in range(3):
            for wf, into in ((unlimited_fan, free), (limited_fan, capped)):
                db = f"sqlite:///{tmp}/{wf.name.replace(':', '_')}{i}.db"
                into.append(in_process(db if engine == "sqlite" else fresh(), wf, n))
    # The limited queue's child rate over the default queue's (same n): the time ratio inverted.
    ratio = statistics.median(free) / statistics.median(capped)
    return {"engine": engine, "n": n, "unlimited_s": free, "limited_s": capped, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument(
        "--url",
        default=os.environ.get("FLOWZ_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    os.environ["FLOWZ_PROGRESS"] = "0"
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    for engine in ["sqlite", "postgres"] if args.engine == "all" else [args.engine]:
        r = run_engine(engine, args.url, args.n)
        r["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        (out_dir / f"queues-{engine}.json").write_text(json.dumps(r, indent=2))
        free, capped = statistics.median(r["unlimited_s"]), statistics.median(r["limited_s"])
        print(
            f"{engine}: gather of {r['n']:,}: default queue {r['n'] / free:,.0f} children/s, "
            f"queue with concurrency=64 {r['n'] / capped:,.0f}/s = {r['ratio']:.0%} "
            f"(target ≥ 80%: {'met' if r['ratio'] >= 0.8 else 'NOT met'})",
            flush=True,
        )


if __name__ == "__main__":
    main()
