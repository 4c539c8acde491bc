"""Fan out over a list with typed results: fetch pages durably, then summarise them.

Run it with `python examples/fanout.py` (200 pages) or `python examples/fanout.py 50`.
Each fetch is its own child execution, retried on its own; `crawl` waits for all
of them without holding a worker and gets back `Page` objects, in URL order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys

import anyio
import pydantic

import flowz
from flowz import gather_durable, step, workflow


class Page(pydantic.BaseModel):
    url: str
    words: int
    fetched_at: dt.datetime


class Report(pydantic.BaseModel):
    pages: int
    words: int
    longest: str


@step(retries=3, backoff=2.0, retry_delay=0.2, timeout=10)
async def fetch(url: str) -> Page:
    # Stands in for an HTTP call: a latency and a size that depend on the URL.
    digest = hashlib.sha256(url.encode()).digest()
    await anyio.sleep(0.02 + digest[0] / 2550)
    return Page(url=url, words=100 + digest[1] * 10, fetched_at=dt.datetime.now(dt.UTC))


@step
async def summarize(pages: list[Page]) -> Report:
    longest = max(pages, key=lambda p: p.words)
    return Report(pages=len(pages), words=sum(p.words for p in pages), longest=longest.url)


@workflow
async def crawl(urls: list[str]) -> Report:
    pages = await gather_durable(*(fetch(url) for url in urls))
    return await summarize(pages)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    report = flowz.run(crawl, [f"https://example.com/page/{i}" for i in range(count)])
    print(report.model_dump_json())
