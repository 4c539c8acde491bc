"""Testing workflows with pytest: steps are plain functions; workflows run on a temp database.

Run it: `python -m pytest examples/test_pipeline.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import flowz
from flowz import gather_durable, step, workflow


@step(retries=2)
async def price(item: str) -> int:
    return {"apple": 3, "pear": 4}[item]


@workflow
async def basket_total(items: list[str]) -> int:
    return sum(await gather_durable(*(price(i) for i in items)))


@pytest.fixture(autouse=True)
def temporary_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWZ_DATABASE_URL", f"sqlite:///{tmp_path / 'test.db'}")
    monkeypatch.setenv("FLOWZ_PROGRESS", "0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio  # async tests through anyio's pytest plugin (installed with flowz)
async def test_a_step_outside_a_workflow_is_the_plain_function() -> None:
    assert await price("pear") == 4


def test_the_workflow_end_to_end() -> None:
    assert flowz.run(basket_total, ["apple", "pear", "apple"]) == 10


def test_a_failing_child_fails_the_run() -> None:
    with pytest.raises(KeyError):
        flowz.run(basket_total, ["apple", "kiwi"])
