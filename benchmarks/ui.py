"""The dashboard at scale: page render times, and what open browsers cost a live run.

  python -m benchmarks.ui --engine sqlite|postgres|all [--runs N] [--width W]
                          [--part pages|live|all] [--quick]

1. The runs page (counts per status and the first 50 rows) over N runs, per filter,
   server time (the app called in process); the baseline is `client.get_run` on the
   same database. Target ≤ 200 ms.
2. A run page whose gather has W children (10,000): server time. Target ≤ 300 ms.
3. A gather of W steps run by two `flowz worker` processes, with 0 and then 20 browsers
   (server-sent event streams) watching its page on a `flowz ui` process, alternated
   five times: the median wall time with 20 over the median with none. Target ≤ 1.05.

Prints the figures and writes benchmarks/results/ui-<engine>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio

import flowz
from flowz import gather_durable, step, workflow

from .core import ROOT, postgres_database
from .operate import fill

HERE = Path(__file__).parent


@step
async def item(i: int) -> int:
    return i


@workflow
async def wide(n: int) -> int:
    return len(await gather_durable(*(item(i) for i in range(n))))


def server_times(url: str, runs: int, width: int, repeats: int) -> dict[str, float]:
    """Median seconds per page, called in process (no network), and the get_run baseline."""
    from starlette.testclient import TestClient

    from flowz._ui._app import create_app

    async def prepare() -> None:
        async with flowz.Client(url) as client:
            await fill(client, runs, with_children=False)
            await client.run(wide.options(id="wide-1", progress=False), width)

    anyio.run(prepare)
    cursor_page = ""
    out: dict[str, float] = {}
    with TestClient(create_app(flowz.Settings(database_url=url))) as http:
        first = http.get("/runs").text
        marker = 'rel="next" href="?'
        cursor_page = first[first.index(marker) + len(marker) :].split('"', 1)[0]
        pages = {
            "runs: newest": "/runs",
            "runs: status=failed": "/runs?status=failed",
            "runs: name=rare (10%)": "/runs?name=rare",
            "runs: page 2 (cursor)": "/runs?" + cursor_page.replace("&amp;", "&"),
            f"run page: gather of {width:,}": "/runs/wide-1",
        }
        for label, path in pages.items():
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                response = http.get(path)
                samples.append(time.perf_counter() - start)
                assert response.status_code == 200, (path, response.text[:300])
            out[label] = statistics.median(samples)

    async def baseline() -> float:
        async with flowz.Client(url) as client:
            samples = []
            for i in range(repeats):
                start = time.perf_counter()
                await client.get_run(f"r{i}")
                samples.append(time.perf_counter() - start)
            return statistics.median(samples)

    out["baseline: get_run"] = anyio.run(baseline)
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _watch(url: str, stop: threading.Event, received: list[int]) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as stream:
            for line in stream:
                if line.startswith(b"event: fragment"):
                    received.append(1)
                if stop.is_set():
                    return
    except OSError:
        return  # the server stopped


def watched_runs(url: str, width: int, rounds: int, watchers: int) -> dict[str, Any]:
    """Wall seconds of the same gather with no browser and with `watchers` watching it."""
    env = {**os.environ, "FLOWZ_DATABASE_URL": url, "FLOWZ_PROGRESS": "0"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "flowz", "worker", "benchmarks.ui"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "flowz", "ui", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/runs", timeout=2).close()
            break
        except OSError:
            time.sleep(0.1)
    times: dict[int, list[float]] = {0: [], watchers: []}
    ui_cpu: dict[int, list[float]] = {0: [], watchers: []}
    events: list[int] = []

    def cpu_seconds() -> float:
        fields = Path(f"/proc/{ui.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def one(run_id: str, n_watchers: int) -> float:
        async with flowz.Client(url) as client:
            start = time.perf_counter()
            handle = await client.start(wide.options(id=run_id), width)
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=_watch, args=(f"{base}/live/run/{run_id}", stop, events), daemon=True
                )
                for _ in range(n_watchers)
            ]
            for t in threads:
                t.start()
            await handle.result(timeout=600)
            took = time.perf_counter() - start
            stop.set()
            return took

    try:
        anyio.run(one, "warm-up", 0)
        for r in range(rounds):
            for n in (0, watchers) if r % 2 == 0 else (watchers, 0):
                before = cpu_seconds()
                times[n].append(anyio.run(one, f"run-{r}-{n}", n))
                ui_cpu[n].append(cpu_seconds() - before)
    finally:
        for proc in [ui, *workers]:
            proc.terminate()
        for proc in [ui, *workers]:
            proc.wait(timeout=30)
    return {
        "width": width,
        "watchers": watchers,
        "idle_s": times[0],
        "watched_s": times[watchers],
        "ratio": statistics.median(times[watchers]) / statistics.median(times[0]),
        "fragments_received": len(events),
        "ui_cpu_s": ui_cpu,
    }


def run_engine(
    engine: str, url: str, runs: int, width: int, quick: bool, parts: set[str]
) -> dict[str, Any]:
    result: dict[str, Any] = {"engine": engine, "runs": runs}
    repeats, rounds, live_width = (3, 1, 200) if quick else (20, 5, width)
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            names = iter(["pages", "live"])

            def fresh() -> str:
                return f"sqlite:///{tmp}/{next(names)}.db"
        else:
            fresh = stack.enter_context(postgres_database(url))
        if "pages" in parts:
            result["pages"] = server_times(fresh(), runs, width, repeats)
        if "live" in parts:
            result["live"] = watched_runs(fresh(), live_width, rounds, 20)
    return result


def report(r: dict[str, Any]) -> list[str]:
    lines = [f"## {r['engine']}: the dashboard over {r['runs']:,} runs", ""]
    if "pages" in r:
        lines += ["| page (server time, in process) | median |", "|---|---:|"]
        for label, seconds in r["pages"].items():
            lines.append(f"| {label} | {seconds * 1000:.1f} ms |")
        runs_worst = max(v for k, v in r["pages"].items() if k.startswith("runs:"))
        run_page = next(v for k, v in r["pages"].items() if k.startswith("run page"))
        lines += [
            "",
            f"- slowest runs page: {runs_worst * 1000:.1f} ms (target ≤ 200 ms: "
            f"{'met' if runs_worst <= 0.2 else 'NOT met'})",
            f"- run page with its gather: {run_page * 1000:.1f} ms (target ≤ 300 ms: "
            f"{'met' if run_page <= 0.3 else 'NOT met'})",
        ]
    if "live" in r:
        live = r["live"]
        lines.append(
            f"- a gather of {live['width']:,} steps on two worker processes: median "
            f"{statistics.median(live['idle_s']):.2f} s unwatched, "
            f"{statistics.median(live['watched_s']):.2f} s with {live['watchers']} browsers "
            f"watching ({live['fragments_received']:,} updates received) = "
            f"{live['ratio']:.3f}x (target ≤ 1.05: "
            f"{'met' if live['ratio'] <= 1.05 else 'NOT met'}); "
            f"the flowz ui process used {statistics.median(_watched_cpu(live)):.2f} s of CPU "
            "per watched run"
        )
    return lines


def _watched_cpu(live: dict[str, Any]) -> list[float]:
    cpu = live["ui_cpu_s"]  # keys are ints when measured, strings when read back from JSON
    return list(cpu.get(live["watchers"], cpu.get(str(live["watchers"]), [0.0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--part", choices=["pages", "live", "all"], default="all")
    parser.add_argument(
        "--url",
        default=os.environ.get("FLOWZ_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    for engine in ["sqlite", "postgres"] if args.engine == "all" else [args.engine]:
        parts = {"pages", "live"} if args.part == "all" else {args.part}
        result = run_engine(engine, args.url, args.runs, args.width, args.quick, parts)
        result["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
        if not args.quick:
            saved = out_dir / f"ui-{engine}.json"
            previous = json.loads(saved.read_text()) if saved.exists() else {}
            saved.write_text(json.dumps(previous | result, indent=2))
        print("\n".join(report(result)), flush=True)


if __name__ == "__main__":
    main()
