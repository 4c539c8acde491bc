"""Wide gathers: does the cost per child stay flat from 10,000 to 100,000 children?

  python -m benchmarks.gather_scale --engine sqlite|postgres|all [--million] [--quick]

One `fan(n)` run (a gather of n no-op steps) on a fresh database with 2 `flowz worker`
processes, for n = 10,000 and 100,000 (and 1,000,000 with --million: by hand, not in
CI); only the run is timed. Targets: the per-child cost at 100,000 within 1.3x of the
one at 10,000, and the workers' peak RSS < 150 MB at 100,000.

Prints the figures and writes benchmarks/results/gather_scale-<engine>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .core import postgres_database, with_worker_processes

HERE = Path(__file__).parent


def measure(engine: str, sizes: list[int], url: str) -> dict[str, Any]:
    figures: dict[str, Any] = {"engine": engine, "workers": 2}
    with tempfile.TemporaryDirectory() as tmp, postgres_database(url) as fresh:
        for n in sizes:
            target = fresh() if engine == "postgres" else f"sqlite:///{tmp}/g{n}.db"
            memory: dict[str, float] = {}
            seconds = with_worker_processes(target, n, 2, memory, timeout=max(300, n / 100))
            figures[str(n)] = {
                "seconds": seconds,
                "us_per_child": seconds / n * 1e6,
                "peak_rss_mb": memory["peak_rss_mb"],
            }
            print(
                f"{engine}: gather of {n:,}: {seconds:.1f} s, {seconds / n * 1e6:.0f} µs/child, "
                f"workers' peak RSS {memory['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    small, large = str(sizes[0]), str(sizes[1])
    figures["growth"] = figures[large]["us_per_child"] / figures[small]["us_per_child"]
    print(
        f"{engine}: per-child cost x{figures['growth']:.2f} from {sizes[0]:,} to {sizes[1]:,} "
        f"(target ≤ 1.3); peak RSS at {sizes[1]:,}: {figures[large]['peak_rss_mb']:.0f} MB "
        "(target < 150)",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 children")
    parser.add_argument("--quick", action="store_true", help="1,000 and 5,000: a smoke test")
    parser.add_argument(
        "--url",
        default=os.environ.get("FLOWZ_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    os.environ["FLOWZ_PROGRESS"] = "0"
    sizes = [1_000, 5_000] if args.quick else [10_000, 100_000]
    if args.million and not args.quick:
        sizes.append(1_000_000)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    for engine in ["sqlite", "postgres"] if args.engine == "all" else [args.engine]:
        figures = measure(engine, sizes, args.url)
        if not args.quick:
            (out / f"gather_scale-{engine}.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
