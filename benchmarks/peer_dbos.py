"""DBOS Transact workloads, for flowz's benchmark to run side by side (one per process).

  python -m benchmarks.peer_dbos WORKLOAD N DATABASE_URL   ->  prints {"seconds": ...}

WORKLOAD: steps (N sequential steps in one workflow), workflows (N one-step workflows,
sequential), fanout (a parent enqueues N child workflows on a Queue and waits for their
handles), enqueue (a DBOSClient enqueues N one-step workflows on a Queue; only the
enqueueing is timed, no worker runs them), concurrent (N five-step workflows enqueued
on a Queue from 4 threads and run by this process, every result awaited). DBOS as its
docs recommend: DBOS(config=...), @DBOS.workflow/@DBOS.step, DBOS.launch(),
DBOS.register_queue + enqueue + handle.get_result(); system database on the same
PostgreSQL, default settings otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from dbos import DBOS, DBOSClient, DBOSConfig, Queue

QUEUE = "flowz_bench"


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow()
def sequential(n: int) -> int:
    return sum(noop(i) for i in range(n))


@DBOS.workflow()
def one_step(i: int) -> int:
    return noop(i)


@DBOS.workflow()
def child(i: int) -> int:
    return noop(i)


@DBOS.workflow()
def five_steps(i: int) -> int:
    return sum(noop(i + k) for k in range(5))


@DBOS.workflow()
def parent(n: int) -> int:
    queue = DBOS.retrieve_queue(QUEUE)
    assert isinstance(queue, Queue)
    handles = [queue.enqueue(child, i) for i in range(n)]
    return sum(h.get_result() for h in handles)


def main() -> None:
    workload, n, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    config: DBOSConfig = {"name": "flowz-bench", "system_database_url": url, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(QUEUE)  # DBOS 3.4: queues are declared in the system database
    if workload == "enqueue":
        DBOS.destroy()  # the schema and the queue exist: enqueue as a client does
        client = DBOSClient(system_database_url=url)
        started = time.perf_counter()
        for i in range(n):
            client.enqueue({"queue_name": QUEUE, "workflow_name": "one_step"}, i)
        elapsed = time.perf_counter() - started
        client.destroy()
        print(json.dumps({"seconds": elapsed, "dbos": "3.4.0"}))
        return
    if workload == "concurrent":
        queue = DBOS.retrieve_queue(QUEUE)
        assert isinstance(queue, Queue)
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            handles = list(pool.map(lambda i: queue.enqueue(five_steps, i), range(n)))
        total = sum(h.get_result() for h in handles)
        elapsed = time.perf_counter() - started
        assert total == sum(i * 5 + 10 for i in range(n)), total
        DBOS.destroy()
        print(json.dumps({"seconds": elapsed, "dbos": "3.4.0"}))
        return
    started = time.perf_counter()
    if workload == "steps":
        result = sequential(n)
    elif workload == "workflows":
        result = sum(one_step(i) for i in range(n))
    else:
        result = parent(n)
    elapsed = time.perf_counter() - started
    assert result == sum(range(n)), result
    DBOS.destroy()
    print(json.dumps({"seconds": elapsed, "dbos": "3.4.0"}))


if __name__ == "__main__":
    main()
