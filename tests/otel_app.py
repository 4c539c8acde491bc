"""A traced workflow for the OpenTelemetry test, run by `flowz worker tests.otel_app` processes.

With $OTEL_SPANS_DIR set, importing this module installs a tracer provider with the
SDK's in-memory exporter; at exit the process writes the spans it finished to
$OTEL_SPANS_DIR/<pid>.json. `python -m tests.otel_app URL` is the caller: it starts the
run inside a span of its own and waits for the result.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

import anyio

import flowz
from flowz import gather_durable, step, workflow

if os.environ.get("OTEL_SPANS_DIR"):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    @atexit.register
    def _dump() -> None:
        spans = [
            {
                "name": s.name,
                "trace_id": f"{s.context.trace_id:032x}",
                "span_id": f"{s.context.span_id:016x}",
                "parent_id": None if s.parent is None else f"{s.parent.span_id:016x}",
                "attributes": dict(s.attributes or {}),
                "status": s.status.status_code.name,
                "pid": os.getpid(),
            }
            for s in exporter.get_finished_spans()
        ]
        out = Path(os.environ["OTEL_SPANS_DIR"]) / f"{os.getpid()}.json"
        out.write_text(json.dumps(spans))


@step(retries=1, retry_delay=0.01)
async def flaky(key: str) -> str:
    if flowz.current_step().attempt == 1:
        raise ConnectionError(f"{key}: first attempt fails")
    return key


@step
async def part(i: int) -> int:
    await anyio.sleep(0.3)
    return i


@workflow
async def traced(n: int) -> int:
    await flaky("warm-up")
    return sum(await gather_durable(*(part(i) for i in range(n))))


async def _call(url: str) -> None:
    from opentelemetry import trace

    settings = flowz.Settings(database_url=url, progress=False)
    with trace.get_tracer("caller").start_as_current_span("caller"):
        async with flowz.Client(settings=settings) as client:
            handle = await client.start(traced.options(id="traced-1"), 8)
    async with flowz.Client(settings=settings) as client:
        print(await client.handle(handle.id).result(timeout=60))


if __name__ == "__main__":
    anyio.run(_call, sys.argv[1])
