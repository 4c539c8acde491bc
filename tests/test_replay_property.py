"""Property: however a run is interrupted, resuming gives the uninterrupted result and journal."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowz
from flowz import Settings, gather_durable, step, workflow
from flowz.store import open_store


class Crash(BaseException):
    """Stands in for the process dying: not an Exception, so nothing catches it."""


state = {"calls": 0, "crash_at": -1}


@step
async def op(tag: str) -> str:
    state["calls"] += 1
    if state["calls"] == state["crash_at"]:
        raise Crash(tag)
    return tag.upper()


@workflow
async def branch(width: int, prefix: str) -> list[str]:
    return await gather_durable(*(op(f"{prefix}.{i}") for i in range(width)))


@workflow
async def interpreter(program: list[tuple[str, int]]) -> list[Any]:
    out: list[Any] = []
    for i, (kind, arg) in enumerate(program):
        if kind == "step":
            out.append(await op(f"s{i}"))
        elif kind == "gather":
            out.append(await gather_durable(*(op(f"g{i}.{j}") for j in range(arg))))
        elif kind == "child":
            out.append(await branch(arg, f"c{i}"))
        else:
            await flowz.sleep(0.001 * arg)
            out.append("slept")
    return out


programs = st.lists(
    st.tuples(st.sampled_from(["step", "gather", "child", "sleep"]), st.integers(0, 4)),
    min_size=1,
    max_size=6,
)


def run(url: str, program: list[tuple[str, int]], crash_at: int) -> tuple[Any, list[Any]]:
    """Run to the end, resuming after each injected crash; the result and the journals."""
    os.environ["FLOWZ_DATABASE_URL"] = url
    state["calls"], state["crash_at"] = 0, crash_at
    crashes = 0
    while True:
        try:
            result = flowz.run(interpreter.options(id="prop", progress=False), program)
            break
        except (Crash, BaseExceptionGroup) as exc:
            if isinstance(exc, BaseExceptionGroup):
                assert exc.split(Crash)[0] is not None, exc
            crashes += 1
            assert crashes == 1, "one crash injected, one resume"

    async def journals() -> list[Any]:
        store = await open_store(Settings.from_env())
        try:
            rows = await store.list_executions("prop")
            entries = []
            for row in sorted(rows, key=lambda r: r.id):
                assert row.status == "succeeded", row
                journal = await store.read_journal(row.id)
                entries.append(
                    (row.id, [(p, e.kind, e.name, e.status) for p, e in sorted(journal.items())])
                )
            return entries
        finally:
            await store.aclose()

    return result, anyio.run(journals)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(program=programs, crash_at=st.integers(1, 12))
def test_a_crash_anywhere_replays_to_the_same_result_and_journal(
    program: list[tuple[str, int]], crash_at: int
) -> None:
    previous = os.environ.get("FLOWZ_DATABASE_URL")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clean = run(f"sqlite:///{Path(tmp) / 'clean.db'}", program, crash_at=-1)
            crashed = run(f"sqlite:///{Path(tmp) / 'crashed.db'}", program, crash_at=crash_at)
    finally:
        if previous is None:
            os.environ.pop("FLOWZ_DATABASE_URL", None)
        else:
            os.environ["FLOWZ_DATABASE_URL"] = previous
    assert crashed == clean
