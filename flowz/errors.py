"""Every error flowz raises.

```
FlowzError                      base class of everything below
├── UsageError                  the API was misused (decoration or call time)
│   ├── NotAWorkflowError       `run`/`start` was given something that is not a @workflow
│   ├── RegistrationError       two functions claim one journal name
│   └── SerializationError      a value cannot be stored as JSON
├── ConfigError                 a bad setting (database URL, option value)
├── WorkflowError               a run went wrong
│   ├── StepFailed              a remote error that could not be rebuilt as its own type
│   ├── NonDeterminismError     a replay asked for a different durable call than the journal holds
│   ├── StepTimeoutError        a step attempt ran past its timeout
│   ├── RunCancelledError       the run was cancelled
│   └── UnknownWorkflowError    the journal name is not registered in this process
└── StoreError                  the database failed; the driver's error is on __cause__
    ├── StoreUnavailableError   the database cannot be opened or reached
    ├── StoreNotWritableError   the database refuses writes: disk full, or read-only
    ├── SchemaVersionError      the database schema is older or newer than this flowz
    └── RunNotFoundError        no run has that id
```
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FlowzError",
    "NonDeterminismError",
    "NotAWorkflowError",
    "RegistrationError",
    "RunCancelledError",
    "RunNotFoundError",
    "SchemaVersionError",
    "SerializationError",
    "StepFailed",
    "StepTimeoutError",
    "StoreError",
    "StoreNotWritableError",
    "StoreUnavailableError",
    "UnknownWorkflowError",
    "UsageError",
    "WorkflowError",
]


class FlowzError(Exception):
    """Base class of every flowz error; `str(error)` is its message."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or type(self).__name__).strip()
        super().__init__(self.message)

    def __reduce__(self) -> tuple[type[FlowzError], tuple[str]]:
        return (type(self), (self.message,))


class UsageError(FlowzError):
    """The flowz API was used in a way it does not support."""


class NotAWorkflowError(UsageError, TypeError):
    """The object given is not a function decorated with @workflow."""


class RegistrationError(UsageError):
    """Two different functions were registered under the same journal name."""


class SerializationError(UsageError, TypeError):
    """A value could not be converted to or from JSON."""


class ConfigError(FlowzError, ValueError):
    """A flowz setting has a value flowz cannot use."""


class WorkflowError(FlowzError):
    """A workflow run went wrong."""


class StepFailed(WorkflowError):
    """A step or child failed with an error that could not be rebuilt as its own type.

    Attributes:
        type_name: the `module:qualname` of the original exception type.
        remote_message: the original exception's message.
        remote_traceback: the traceback formatted where the error was raised.
    """

    def __init__(self, type_name: str, remote_message: str, remote_traceback: str = "") -> None:
        self.type_name = type_name
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(f"{type_name}: {remote_message}")

    def __reduce__(self) -> tuple[type[StepFailed], tuple[str, str, str]]:  # type: ignore[override]
        return (type(self), (self.type_name, self.remote_message, self.remote_traceback))


class NonDeterminismError(WorkflowError):
    """A replayed workflow made a different durable call than its journal records.

    Attributes:
        run_id: the execution whose journal disagrees.
        position: the position of the durable call in the workflow.
        expected: the name the code asked for now.
        recorded: the name the journal holds at that position.
    """

    def __init__(self, run_id: str, position: int, expected: str, recorded: str) -> None:
        self.run_id = run_id
        self.position = position
        self.expected = expected
        self.recorded = recorded
        super().__init__(
            f"run {run_id!r}: at position {position} the workflow now calls {expected!r}, "
            f"but its journal recorded {recorded!r}. The workflow code changed between the "
            "first run and this replay, or it is not deterministic (use flowz.now(), "
            "flowz.uuid4(), flowz.random() instead of reading clocks or randomness). "
            "Guard the change with `if flowz.patched(...)` so recorded runs keep the old "
            "code, restore the old code to finish this run, or fork it (`flowz fork`)."
        )

    def __reduce__(self) -> tuple[type[NonDeterminismError], tuple[str, int, str, str]]:  # type: ignore[override]
        return (type(self), (self.run_id, self.position, self.expected, self.recorded))


class StepTimeoutError(WorkflowError, TimeoutError):
    """A step attempt ran longer than its `timeout`."""


class RunCancelledError(WorkflowError):
    """The run was cancelled."""


class RunTimeoutError(WorkflowError, TimeoutError):
    """The workflow run passed its deadline (`@workflow(timeout=)` or `options(deadline=)`).

    Its unfinished children were cancelled with it.
    """


class UnknownWorkflowError(WorkflowError, LookupError):
    """No function is registered under this journal name in this process."""


class StoreError(FlowzError):
    """The database failed; the driver's error is on `__cause__`."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The database cannot be opened or reached."""


class StoreNotWritableError(StoreError):
    """The database refuses writes (its disk is full, or it is read-only).

    Nothing already stored is lost: once it can write again, resume the run by its id.
    """


class SchemaVersionError(StoreError):
    """The database schema version does not match this version of flowz."""


class RunNotFoundError(StoreError, LookupError):
    """No run with this id exists in the database."""


class RunEndedError(UsageError):
    """The run has ended: a message sent to it would never be read."""
