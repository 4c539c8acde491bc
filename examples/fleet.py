"""Fan out over a fleet of workers on PostgreSQL.

Start two workers (each in its own terminal, or on other machines):

    export FLOWZ_DATABASE_URL=postgresql://root@127.0.0.1:5432/test
    flowz worker examples/fleet.py

then enqueue a run and wait for its result from anywhere:

    python examples/fleet.py 1000

The script only enqueues and waits: the workers run the workflow and its
children. Kill a worker with kill -9 mid-run and the others take its work over.
"""

from __future__ import annotations

import os
import sys

import anyio
import pydantic

from flowz import gather_durable, step, workflow


class WordScore(pydantic.BaseModel):
    word: str
    score: int
    worker_pid: int


@step(retries=2, timeout=30)
async def score(word: str) -> WordScore:
    value = sum(ord(c) - ord("a") + 1 for c in word.lower() if c.isalpha())
    return WordScore(word=word, score=value, worker_pid=os.getpid())


@workflow
async def rank(words: list[str]) -> list[WordScore]:
    scores = await gather_durable(*(score(w) for w in words))
    return sorted(scores, key=lambda s: (-s.score, s.word))


async def main(n: int) -> None:
    words = [f"word{i}x{'z' * (i % 7)}" for i in range(n)]
    handle = await rank.start(words)
    ranked = await handle.result(timeout=600)
    print(f"run {handle.id}: {await handle.status()}")
    print(f"best: {ranked[0].word} ({ranked[0].score})")
    print(f"children ran on {len({s.worker_pid for s in ranked})} worker process(es)")


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 100)
