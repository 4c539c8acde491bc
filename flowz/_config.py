"""Settings: the only place flowz reads the environment."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, UsageError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "Settings",
    "parse_duration",
    "parse_moment",
    "redacted_url",
]

DEFAULT_DATABASE_URL = "sqlite:///.flowz/flowz.db"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How flowz connects and runs; explicit values win over `FLOWZ_*` variables.

    Examples:
        >>> Settings(database_url="sqlite:///tmp/x.db").database_url
        'sqlite:///tmp/x.db'
    """

    #: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or `postgresql://...`.
    database_url: str = DEFAULT_DATABASE_URL
    #: Seconds a claimed execution stays owned without a heartbeat.
    lease_seconds: float = 30.0
    #: How many executions one worker runs at once.
    concurrency: int = 64
    #: The queue a worker takes work from and new runs go to.
    queue: str = "default"
    #: Longest pause between two looks for new work when no wake-up arrives.
    poll_seconds: float = 1.0
    #: On stop, how long running executions may take to finish before they are released.
    shutdown_grace_seconds: float = 10.0
    #: Show the live progress view in flowz.run() and wf.run() (FLOWZ_PROGRESS=0 turns it off).
    progress: bool = True
    #: SQLite durability: FULL survives power loss, NORMAL only process crashes.
    sqlite_synchronous: str = "FULL"
    #: PostgreSQL: connections each process keeps at most. No connection is held across
    #: user code, so this bounds throughput, not how many executions can run at once.
    pool_size: int = 10
    #: Workers delete runs that ended longer ago than this (`30d`, `12h`); empty: never.
    #: The same pruning as `flowz db prune --older-than`, a batch at a time.
    retention: str = ""

    def __post_init__(self) -> None:
        if not self.database_url.startswith(("sqlite:", "postgresql:", "postgres:")):
            raise ConfigError(
                f"database URL {self.database_url!r} is not supported: use "
                "sqlite:///path/to/file.db or postgresql://user@host/dbname"
            )
        if self.lease_seconds <= 0 or self.poll_seconds <= 0 or self.shutdown_grace_seconds < 0:
            raise ConfigError(
                "lease_seconds and poll_seconds must be positive numbers of seconds, "
                "shutdown_grace_seconds zero or more"
            )
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.pool_size < 1:
            raise ConfigError(f"pool_size must be at least 1, got {self.pool_size}")
        if self.retention:
            parse_duration(self.retention, "FLOWZ_RETENTION")
        if self.sqlite_synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError(
                f"FLOWZ_SQLITE_SYNCHRONOUS={self.sqlite_synchronous!r} is not supported: "
                "use FULL (default) or NORMAL"
            )

    @property
    def retention_seconds(self) -> float | None:
        """`retention` in seconds; None when workers keep every run."""
        return parse_duration(self.retention, "FLOWZ_RETENTION") if self.retention else None

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Resolve settings: explicit overrides, then `FLOWZ_*` variables, then defaults."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = os.environ.get(f"FLOWZ_{field.name.upper()}")
            if raw is None or raw == "":
                continue
            convert: type[str | int | float] = type(field.default)  # type: ignore[assignment]
            if isinstance(field.default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ConfigError(f"FLOWZ_{field.name.upper()}={raw!r}: use 1 or 0")
                values[field.name] = raw.lower() in ("1", "true", "yes", "on")
                continue
            try:
                values[field.name] = convert(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"FLOWZ_{field.name.upper()}={raw!r} is not a valid "
                    f"{type(field.default).__name__}"
                ) from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")


def parse_duration(text: str, what: str) -> float:
    """Seconds in `30d`, `12h`, `90m`, `45s`, `2w` or a sum such as `1d12h`.

    Examples:
        >>> parse_duration("1d12h", "--older-than")
        129600.0
    """
    parts = _DURATION.findall(text)
    if not parts or "".join(_DURATION.sub("", text).split()):
        raise ConfigError(
            f"{what}={text!r} is not a duration: write a number and a unit, s m h d or w "
            "(30d, 12h, 1d12h)"
        )
    return float(sum(float(n) * _UNITS[unit] for n, unit in parts))


def parse_moment(text: str | None, option: str) -> _dt.datetime | None:
    """`1d` (that long ago) or an ISO 8601 date-time (local time unless it names a zone)."""
    if text is None:
        return None
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            return _dt.datetime.now(_dt.UTC) - _dt.timedelta(seconds=parse_duration(text, option))
        except ConfigError:
            raise UsageError(
                f"{option} {text!r}: write how long ago (1d, 12h, 30m) or an ISO date-time "
                "(2026-12-01 or 2026-12-01T08:00:00+00:00)"
            ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def redacted_url(url: str) -> str:
    """The database URL without its password, fit for messages and logs."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}@{tail}"
