"""flowz: durable workflows that feel like plain async Python.

Examples:
    >>> import flowz
    >>> from flowz import workflow, step, gather_durable
    >>> @step
    ... async def double(x: int) -> int:
    ...     return 2 * x
    >>> @workflow
    ... async def fan(n: int) -> int:
    ...     return sum(await gather_durable(*(double(i) for i in range(n))))
    >>> flowz.run(fan, 1000)  # doctest: +SKIP
    999000
"""

import contextlib as _contextlib

from ._client import Client as Client
from ._client import RunHandle as RunHandle
from ._config import Settings as Settings
from ._context import DurableCall as DurableCall
from ._context import RunOptions as RunOptions
from ._context import StepContext as StepContext
from ._context import StepHandle as StepHandle
from ._context import current_step as current_step
from ._context import deprecate_patch as deprecate_patch
from ._context import now as now
from ._context import patched as patched
from ._context import random as random
from ._context import sleep as sleep
from ._context import uuid4 as uuid4
from ._decorators import StepFunction as StepFunction
from ._decorators import WorkflowFunction as WorkflowFunction
from ._decorators import cron as cron
from ._decorators import step as step
from ._decorators import workflow as workflow
from ._gather import gather_durable as gather_durable
from ._gather import schedule as schedule
from ._gather import wait_all as wait_all
from ._gather import wait_first as wait_first
from ._messages import close_stream as close_stream
from ._messages import recv as recv
from ._messages import send as send
from ._messages import set_event as set_event
from ._messages import write_stream as write_stream
from ._queues import Queue as Queue
from ._queues import Rate as Rate
from ._registry import Registry as Registry
from ._runner import run as run
from ._runs import JournalInfo as JournalInfo
from ._runs import RunInfo as RunInfo
from ._runs import RunPage as RunPage
from ._types import Status as Status
from ._ui._serve import ui as ui
from .errors import ConfigError as ConfigError
from .errors import FlowzError as FlowzError
from .errors import NonDeterminismError as NonDeterminismError
from .errors import NotAWorkflowError as NotAWorkflowError
from .errors import RegistrationError as RegistrationError
from .errors import RunCancelledError as RunCancelledError
from .errors import RunEndedError as RunEndedError
from .errors import RunNotFoundError as RunNotFoundError
from .errors import RunTimeoutError as RunTimeoutError
from .errors import SchemaVersionError as SchemaVersionError
from .errors import SerializationError as SerializationError
from .errors import StepFailed as StepFailed
from .errors import StepTimeoutError as StepTimeoutError
from .errors import StoreError as StoreError
from .errors import StoreNotWritableError as StoreNotWritableError
from .errors import StoreUnavailableError as StoreUnavailableError
from .errors import UnknownWorkflowError as UnknownWorkflowError
from .errors import UsageError as UsageError
from .errors import WorkflowError as WorkflowError

__all__ = [
    "Client",
    "ConfigError",
    "DurableCall",
    "FlowzError",
    "JournalInfo",
    "NonDeterminismError",
    "NotAWorkflowError",
    "Queue",
    "Rate",
    "RegistrationError",
    "Registry",
    "RunCancelledError",
    "RunEndedError",
    "RunHandle",
    "RunInfo",
    "RunNotFoundError",
    "RunOptions",
    "RunPage",
    "RunTimeoutError",
    "SchemaVersionError",
    "SerializationError",
    "Settings",
    "Status",
    "StepContext",
    "StepFailed",
    "StepFunction",
    "StepHandle",
    "StepTimeoutError",
    "StoreError",
    "StoreNotWritableError",
    "StoreUnavailableError",
    "UnknownWorkflowError",
    "UsageError",
    "WorkflowError",
    "WorkflowFunction",
    "close_stream",
    "cron",
    "current_step",
    "deprecate_patch",
    "gather_durable",
    "now",
    "patched",
    "random",
    "recv",
    "run",
    "schedule",
    "send",
    "set_event",
    "sleep",
    "step",
    "ui",
    "uuid4",
    "wait_all",
    "wait_first",
    "workflow",
    "write_stream",
]

__version__ = "0.1.0"

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "flowz").startswith("flowz._"):
        with _contextlib.suppress(AttributeError, TypeError):  # objects without __module__
            _obj.__module__ = "flowz"
del _name, _obj, _contextlib
