"""Protecting an API: a fleet-wide concurrency limit, a rate, one request per host, priorities.

Run it with `python examples/limits.py`. A crawl of 24 pages on 4 hosts goes
through the queue `api`: at most 4 requests at once across every worker, at most
8 starts a second, and one request per host at a time. An urgent crawl started
after it is claimed first. The limits hold in the database, so they hold the same
with one worker or fifty (`flowz worker examples/limits.py` on several machines).
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import anyio

import flowz
from flowz import gather_durable, step, workflow

api = flowz.Queue("api", concurrency=4, rate=flowz.Rate(8, per=1), per_partition=1)
RUNNING: list[int] = [0]
MOST_AT_ONCE: list[int] = [0]
FETCHED: list[str] = []


@step(queue=api, partition=lambda url: urlsplit(url).hostname or "", retries=2)
async def fetch(url: str) -> int:
    RUNNING[0] += 1
    MOST_AT_ONCE[0] = max(MOST_AT_ONCE[0], RUNNING[0])
    try:
        await anyio.sleep(0.1)  # the request
        FETCHED.append(url)
        return len(url)
    finally:
        RUNNING[0] -= 1


@workflow
async def crawl(urls: list[str]) -> int:
    return sum(await gather_durable(*(fetch(url) for url in urls)))


async def main() -> None:
    hosts = ["a.example", "b.example", "c.example", "d.example"]
    urls = [f"https://{hosts[i % 4]}/page/{i}" for i in range(24)]
    async with flowz.Client() as client:
        batch = str(time.time_ns())
        started = time.perf_counter()
        slow = await client.start(crawl.options(id=f"crawl-{batch}"), urls)
        urgent_urls = [f"https://{host}/urgent" for host in hosts]
        urgent = await client.start(crawl.options(id=f"urgent-{batch}", priority=10), urgent_urls)
        # Here this process works on them; usually `flowz worker examples/limits.py` does.
        total = await client.run(crawl.options(id=slow.id, progress=False), urls)
        elapsed = time.perf_counter() - started
        print(f"crawled {len(urls)} pages, {total} bytes, in {elapsed:.1f} s")
        before = max(FETCHED.index(url) for url in urgent_urls) - len(urgent_urls) + 1
        print(f"the urgent crawl ({await urgent.status()}) went first: {before} pages before it")
        print(f"at most {MOST_AT_ONCE[0]} requests at once (limit 4)")


if __name__ == "__main__":
    anyio.run(main)
