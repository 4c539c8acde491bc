"""Workflows for the CLI tests (imported by `flowz` subprocesses and by CliRunner)."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

import flowz
from flowz import gather_durable, step, workflow


@step
async def square(x: int) -> int:
    return x * x


class Unlucky(Exception):
    pass


@step
async def fail_until_fixed(x: int) -> int:
    if not Path(os.environ.get("CLI_FIXED", "/nonexistent")).exists():
        raise Unlucky(f"{x} is unlucky")
    return x


@step
async def slow(x: int) -> int:
    await anyio.sleep(60)
    return x


@workflow
async def squares(n: int) -> list[int]:
    return await gather_durable(*(square(i) for i in range(n)))


@workflow
async def fragile(x: int) -> int:
    first = await square(x)
    return first + await fail_until_fixed(x)


@workflow
async def forever(n: int) -> list[int]:
    return await gather_durable(*(slow(i) for i in range(n)))


@step
async def odd_only(x: int) -> int:
    if x % 2 == 0:
        raise Unlucky(f"{x} is even")
    return x


@workflow
async def odds(n: int) -> int:
    results = await gather_durable(*(odd_only(i) for i in range(n)), return_exceptions=True)
    return sum(r for r in results if isinstance(r, int))


@workflow
async def approval(order: str) -> str:
    await flowz.set_event("status", f"{order}: waiting")
    decision = await flowz.recv("decision")
    await flowz.write_stream("log", f"{order} received")
    await flowz.write_stream("log", decision)
    again = await flowz.recv("decision", timeout=0)  # a duplicate delivery would be here
    return f"{order}: {decision['verdict']}, then {again}"


not_a_workflow = 42
