"""Queues with fleet-wide limits, and cron schedules: what the user declares, checked.

Declarations only: the store enforces the limits in its claims, the worker reads
the schedules. Nothing here touches a database.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from .errors import UsageError

__all__ = ["DEFAULT_QUEUE", "CatchUp", "Queue", "Rate", "Schedule"]

#: The queue of runs and children that name none.
DEFAULT_QUEUE = "default"

CatchUp = Literal["latest", "all", "none"]
_CATCH_UP = ("latest", "all", "none")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `limit` starts per `per` seconds, across the fleet (a sliding window).

    Examples:
        >>> flowz.Rate(100, per=60)  # 100 a minute
    """

    limit: int
    per: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise UsageError(f"Rate({self.limit!r}, ...): the limit is a whole number >= 1")
        if not isinstance(self.per, int | float) or self.per <= 0:
            raise UsageError(f"Rate(..., per={self.per!r}): the period is seconds > 0")


_KNOWN: dict[str, Queue] = {}


@dataclass(frozen=True, slots=True)
class Queue:
    """A named queue; each limit is optional and holds across every worker.

    Args:
        name: the queue's name; one definition per name.
        concurrency: at most this many of its executions running at once, fleet-wide.
        per_worker: at most this many running in one worker process.
        rate: at most `rate.limit` starts per `rate.per` seconds, fleet-wide.
        per_partition: at most this many running per partition key (a tenant, a user).

    The database enforces `concurrency`, `rate` and `per_partition` in the claim
    itself, so no race between workers admits one more.

    Examples:
        >>> api = flowz.Queue("api", concurrency=10, rate=flowz.Rate(100, per=60))
        >>> @flowz.step(queue=api)
        ... async def fetch(url: str) -> str: ...
    """

    name: str
    concurrency: int | None = None
    per_worker: int | None = None
    rate: Rate | None = None
    per_partition: int | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not self.name
            or "," in self.name
            or "\x00" in self.name
        ):
            raise UsageError(
                f"Queue({self.name!r}): a queue's name is a non-empty string without commas "
                "or NUL characters"
            )
        for option in ("concurrency", "per_worker", "per_partition"):
            value = getattr(self, option)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise UsageError(
                    f"Queue({self.name!r}, {option}={value!r}): a limit is a whole number "
                    ">= 1, or None for no limit"
                )
        if self.rate is not None and not isinstance(self.rate, Rate):
            raise UsageError(
                f"Queue({self.name!r}, rate={self.rate!r}): use flowz.Rate(limit, per=seconds)"
            )
        known = _KNOWN.setdefault(self.name, self)
        if known != self and _defined_interactively():
            _KNOWN[self.name] = self  # a notebook cell run again with new limits
        elif known != self:
            raise UsageError(
                f"queue {self.name!r} is defined twice with different limits ({known} and "
                f"{self}): define it once and import it where it is used"
            )

    @property
    def limited(self) -> bool:
        """Whether a claim must count (concurrency, rate or partitions) in the database."""
        return not (self.concurrency is None and self.rate is None and self.per_partition is None)


def _defined_interactively() -> bool:
    """Whether the Queue(...) being built is written in __main__ (a notebook, a REPL).

    There, running the cell again redefines the queue, as it redefines functions.
    """
    frame = sys._getframe(3)  # _defined_interactively < __post_init__ < __init__ < caller
    return frame.f_globals.get("__name__") == "__main__"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron schedule of a workflow: a run per tick, exactly once across the fleet."""

    cron: str
    timezone: str = "UTC"
    catch_up: CatchUp = "latest"

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if self.catch_up not in _CATCH_UP:
            raise UsageError(
                f"catch_up={self.catch_up!r}: use 'latest' (run the last missed tick), "
                "'all' (every missed tick) or 'none'"
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise UsageError(
                f"timezone={self.timezone!r} is not a known time zone: use an IANA name "
                "such as 'UTC' or 'Europe/Paris'"
            ) from None
        self.ticks(_dt.datetime.now(_dt.UTC))  # an invalid expression fails here, at once

    def next_tick(self, last_tick: float | None) -> _dt.datetime:
        """The next tick after now and after `last_tick` (epoch seconds), if it was handled."""
        now = _dt.datetime.now(_dt.UTC)
        after = now if last_tick is None else _dt.datetime.fromtimestamp(last_tick, _dt.UTC)
        return next(self.ticks(max(after, now)))

    def ticks(self, after: _dt.datetime) -> Iterator[_dt.datetime]:
        """The ticks strictly after `after`, in the schedule's time zone, in order."""
        from zoneinfo import ZoneInfo

        from cronsim import CronSim, CronSimError

        local = after.astimezone(ZoneInfo(self.timezone)).replace(microsecond=0)
        try:
            return iter(CronSim(self.cron, local))
        except CronSimError as exc:
            raise UsageError(
                f"schedule={self.cron!r} is not a cron expression ({exc}): five fields, "
                "minute hour day month weekday, e.g. '*/5 * * * *' or '0 9 * * mon-fri'"
            ) from None
