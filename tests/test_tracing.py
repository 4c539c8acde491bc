"""OpenTelemetry: one trace from the caller of start() through a gather run by two worker
processes; a retried step is two spans; without opentelemetry, nothing is traced."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_a_gather_across_two_workers_is_one_trace(database_url: str, tmp_path: Path) -> None:
    spans_dir = tmp_path / "spans"
    spans_dir.mkdir()
    env = {
        **os.environ,
        "FLOWZ_DATABASE_URL": database_url,
        "OTEL_SPANS_DIR": str(spans_dir),
        "FLOWZ_CONCURRENCY": "2",
        "FLOWZ_SHUTDOWN_GRACE_SECONDS": "1",
    }
    workers = []
    for i in range(2):
        with (tmp_path / f"worker-{i}.log").open("wb") as log:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "flowz", "worker", "tests.otel_app"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        caller = subprocess.run(
            [sys.executable, "-m", "tests.otel_app", database_url],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert caller.returncode == 0, caller.stderr
        assert caller.stdout.strip() == str(sum(range(8)))
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(timeout=30)
    spans: list[dict[str, Any]] = []
    for found in spans_dir.glob("*.json"):
        spans += json.loads(found.read_text())
    by_id = {s["span_id"]: s for s in spans}
    (root,) = [s for s in spans if s["name"] == "caller"]
    assert {s["trace_id"] for s in spans} == {root["trace_id"]}, "one trace"

    runs = [s for s in spans if s["name"] == "run tests.otel_app:traced"]
    assert len(runs) >= 2  # the first attempt suspends at the gather; a later one ends it
    assert all(s["parent_id"] == root["span_id"] for s in runs)
    statuses = [s["attributes"]["flowz.status"] for s in runs]
    assert statuses.count("succeeded") == 1 and set(statuses) == {"suspended", "succeeded"}
    assert {s["attributes"]["flowz.run_id"] for s in runs} == {"traced-1"}

    flaky = sorted(
        (s for s in spans if s["name"] == "step tests.otel_app:flaky"),
        key=lambda s: s["attributes"]["flowz.attempt"],
    )
    assert [s["attributes"]["flowz.attempt"] for s in flaky] == [1, 2]
    assert [s["status"] for s in flaky] == ["ERROR", "UNSET"]
    assert flaky[0]["parent_id"] == flaky[1]["parent_id"]
    assert by_id[flaky[0]["parent_id"]]["name"] == "run tests.otel_app:traced"
    assert flaky[0]["attributes"]["flowz.position"] == 0

    (gather,) = [s for s in spans if s["name"] == "gather tests.otel_app:part"]
    assert by_id[gather["parent_id"]]["name"] == "run tests.otel_app:traced"
    assert gather["attributes"]["flowz.width"] == 8
    parts = [s for s in spans if s["name"] == "step tests.otel_app:part"]
    assert len(parts) == 8
    assert all(s["parent_id"] == gather["span_id"] for s in parts)
    assert sorted(s["attributes"]["flowz.child_index"] for s in parts) == list(range(8))
    assert {s["attributes"]["flowz.execution_id"] for s in parts} == {
        f"traced-1/1/{i}" for i in range(8)
    }
    workers_used = Counter(s["pid"] for s in parts)
    assert len(workers_used) == 2, f"the children ran in one process only: {workers_used}"


def test_without_opentelemetry_nothing_is_traced(tmp_path: Path) -> None:
    """`opentelemetry` made unimportable: runs work, no trace context is stored."""
    script = f"""
import sys
sys.modules["opentelemetry"] = None  # as if not installed
import flowz
from flowz import _tracing
from tests import otel_app

assert not _tracing.enabled()
settings = flowz.Settings(database_url="sqlite:///{tmp_path}/t.db", progress=False)

async def main():
    async with flowz.Client(settings=settings) as client:
        assert await client.run(otel_app.traced.options(id="t"), 3) == 3
        rows = await client.store.list_executions("t")
        assert [r.trace_context for r in rows] == [None] * 4, rows

import anyio
anyio.run(main)
assert "opentelemetry" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_step_span_is_made_only_once_a_tracer_provider_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from flowz import _tracing
    from flowz.store._protocol import ExecutionRow

    row = ExecutionRow(**{f.name: None for f in dataclasses.fields(ExecutionRow)})
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    assert _tracing.step_span(row, "s", 0, 1) is _tracing._NOTHING
    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setattr(trace, "get_tracer", provider.get_tracer)
    with _tracing.step_span(row, "s", 0, 1) as span:
        assert span.is_recording()
