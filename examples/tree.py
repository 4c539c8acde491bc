"""A nested fan-out tree: regions fan out to cities, cities to stations.

Every level is a durable workflow child that can run on any worker; each parent
waits without holding a worker. Run it: `python examples/tree.py`.
"""

from __future__ import annotations

import flowz
from flowz import gather_durable, step, workflow


@step(retries=2)
async def read_station(city: str, station: int) -> float:
    return round(10 + len(city) * 0.5 + station * 0.1, 2)  # stands in for a sensor API


@workflow
async def city_average(city: str, stations: int) -> float:
    readings = await gather_durable(*(read_station(city, s) for s in range(stations)))
    return round(sum(readings) / len(readings), 2)


@workflow
async def region_report(region: str, cities: list[str]) -> dict[str, float]:
    averages = await gather_durable(*(city_average(c, 5) for c in cities))
    return dict(zip(cities, averages, strict=True))


@workflow
async def country_report(regions: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    names = list(regions)
    reports = await gather_durable(*(region_report(r, regions[r]) for r in names))
    return dict(zip(names, reports, strict=True))


if __name__ == "__main__":
    print(
        flowz.run(
            country_report,
            {"north": ["Oslo", "Bergen"], "south": ["Nice", "Rome", "Seville"]},
        )
    )
