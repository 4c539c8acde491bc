"""Log records that say which run they are about, and the worker's JSON log format.

Every record of a flowz logger carries `run_id`, `execution_id` and `step` (None
outside a run), from the execution the current task works on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any

from .errors import UsageError

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "get_logger",
    "log_context",
    "in_step",
]

#: (run id, execution id, step name) of the work the current task does.
_CURRENT: ContextVar[tuple[str, str, str | None] | None] = ContextVar(
    "flowz_log_context", default=None
)
_FIELDS = ("run_id", "execution_id", "step")


@contextlib.contextmanager
def log_context(run_id: str, execution_id: str, step: str | None = None) -> Iterator[None]:
    """Records logged inside carry this run, execution and step."""
    token = _CURRENT.set((run_id, execution_id, step))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def in_step(step: str) -> contextlib.AbstractContextManager[None]:
    """Inside a workflow's log context: the same run and execution, in this step."""
    current = _CURRENT.get()
    if current is None:
        return contextlib.nullcontext()
    return log_context(current[0], current[1], step)


class _Adapter(logging.LoggerAdapter[logging.Logger]):
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        current = _CURRENT.get() or (None, None, None)
        extra = dict(zip(_FIELDS, current, strict=True))
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(name: str) -> logging.LoggerAdapter[logging.Logger]:
    """A flowz logger whose records carry the current run, execution and step."""
    return _Adapter(logging.getLogger(name), {})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run_id, execution_id, step."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL message [run=... execution=... step=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        run_id = getattr(record, "run_id", None)
        execution_id = getattr(record, "execution_id", None)
        where = [] if run_id is None else [f"run={run_id}"]
        if execution_id is not None and execution_id != run_id:  # a run's own: said once
            where.append(f"execution={execution_id}")
        step = getattr(record, "step", None)
        if step is not None:
            where.append(f"step={step}")
        if not where:
            return text
        head, newline, rest = text.partition("\n")
        return f"{head} [{' '.join(where)}]{newline}{rest}"


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Log to stderr in `text` or `json` (`flowz worker --log-format`)."""
    formats = {"text": TextFormatter, "json": JsonFormatter}
    if log_format not in formats:
        raise UsageError(f"--log-format {log_format!r}: use text or json")
    handler = logging.StreamHandler()
    handler.setFormatter(formats[log_format]())
    logging.basicConfig(level=level, handlers=[handler], force=True)
