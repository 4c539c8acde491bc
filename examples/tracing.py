"""Tracing a run with OpenTelemetry: one trace from the caller through every step.

Needs `pip install "flowz[otel]" opentelemetry-sdk`; run it with
`python examples/tracing.py`. The checkout request's span is the root; the run's
attempts, each step attempt (a retry is a second span), and the gather with its
children hang under it, wherever the workers that ran them were.
"""

from __future__ import annotations

from collections import Counter

# --8<-- [start:setup]
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# In production: BatchSpanProcessor(OTLPSpanExporter()) to your collector, set up in
# the module your workers import (or run them under `opentelemetry-instrument`).
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
# --8<-- [end:setup]

import flowz  # noqa: E402
from flowz import gather_durable, step, workflow  # noqa: E402

PRICES = {"tea": 4, "cup": 9, "pot": 25}
CALLS: Counter[str] = Counter()


@step(retries=2, retry_delay=0.01)
async def price(sku: str) -> int:
    CALLS[sku] += 1
    if CALLS[sku] == 1:
        raise ConnectionError("the price service timed out")
    return PRICES[sku]


@step
async def reserve(sku: str) -> str:
    return f"{sku}: reserved"


@workflow
async def checkout(skus: list[str]) -> int:
    total = await price(skus[0]) * len(skus)
    await gather_durable(*(reserve(sku) for sku in skus))
    return total


def print_tree(spans: tuple[ReadableSpan, ...]) -> None:
    """Each span under its parent; a gather's children on one line, counted."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        children.setdefault(span.parent.span_id if span.parent else None, []).append(span)

    def show(span: ReadableSpan, depth: int, count: int = 1) -> None:
        attrs = span.attributes or {}
        line = "  " * depth + span.name
        if count > 1:
            line += f"  x {count}"
        elif "flowz.attempt" in attrs:
            line += f"  attempt {attrs['flowz.attempt']}"
        if span.status.status_code.name == "ERROR":
            line += f"  ERROR {span.status.description}"
        if "flowz.status" in attrs:
            line += f"  ({attrs['flowz.status']})"
        print(line)
        below = children.get(span.context.span_id if span.context else None, [])
        if span.name.startswith("gather"):
            for name, n in Counter(s.name for s in below).items():
                show(next(s for s in below if s.name == name), depth + 1, n)
        else:
            for child in below:
                show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)


if __name__ == "__main__":
    # --8<-- [start:call]
    with trace.get_tracer("shop").start_as_current_span("checkout request"):
        total = flowz.run(checkout.options(progress=False), ["tea", "cup", "pot"])
    # --8<-- [end:call]
    print(f"total: {total}")
    spans = exporter.get_finished_spans()
    print(f"one trace: {len({s.context.trace_id for s in spans if s.context}) == 1}")
    print_tree(spans)
