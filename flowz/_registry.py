"""The registry: journal names to decorated functions."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._queues import Queue, Schedule
from ._serde import Codec
from ._types import Kind
from .errors import RegistrationError

__all__ = [
    "Definition",
    "Registry",
    "StepOptions",
    "default_registry",
    "import_name",
    "journal_name",
    "same_function",
]


@dataclass(frozen=True, slots=True)
class StepOptions:
    """Retry and timeout policy of a step."""

    retries: int = 0
    backoff: float = 2.0
    retry_delay: float = 1.0
    timeout: float | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    #: The queue its executions go to (None: the caller's).
    queue: Queue | None = None
    #: The partition key of a call, from its arguments (None: the caller's).
    partition: Callable[..., str] | None = None
    #: A workflow's cron schedule.
    schedule: Schedule | None = None

    @property
    def max_attempts(self) -> int:
        return self.retries + 1


@dataclass(frozen=True, slots=True)
class Definition:
    """A registered step or workflow."""

    name: str
    kind: Kind
    fn: Callable[..., Any]
    codec: Codec
    is_async: bool
    options: StepOptions = field(default_factory=StepOptions)


def journal_name(fn: Callable[..., Any]) -> str:
    """`module:qualname`, the module named after its file's place in its package.

    The same function gets the same name however its module was loaded: imported as
    `examples.quickstart` or as `quickstart`, from `flowz start path/to/file.py:fn`, or
    run as a script (`__main__`). A module without a file (a notebook) keeps its name.
    """
    module = sys.modules.get(fn.__module__)
    file = getattr(module, "__file__", None)
    name = _package_path(file) if file else fn.__module__
    return f"{name}:{fn.__qualname__}"


@functools.lru_cache(maxsize=256)
def _package_path(file: str) -> str:
    """`pkg.sub.mod` for pkg/sub/mod.py: the folders up to the first one without __init__.py."""
    path = Path(file).resolve()
    parts = [] if path.stem == "__init__" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts) or path.stem


def import_name(fn: Callable[..., Any]) -> str:
    """`module:qualname` by the name the module was imported under (flowz 0.1's journal name)."""
    return f"{fn.__module__}:{fn.__qualname__}"


def same_function(stored: str, name: str) -> bool:
    """Whether a stored journal name names the function now called `name`.

    True for the same name, and for a module named with more of its dotted path
    (`examples.quickstart:fan` stored by an earlier flowz, `quickstart:fan` now).
    """
    if stored == name:
        return True
    stored_module, _, stored_fn = stored.rpartition(":")
    module, _, fn = name.rpartition(":")
    if stored_fn != fn or not stored_module or not module:
        return False
    return stored_module.endswith("." + module) or module.endswith("." + stored_module)


class Registry:
    """Maps journal names to functions; a worker runs only what is registered in its registry.

    Decorators register in the process-wide default registry unless given
    `registry=`. A run of a workflow of another registry is worked on by workers
    of that registry: `wf.run()` and `flowz.Client.run()` pick it up from the
    workflow, `flowz worker MODULE --registry MODULE:ATTR` serves it.

    Examples:
        >>> billing = flowz.Registry()
        >>> @flowz.step(registry=billing)
        ... async def charge(amount: int) -> str: ...
        >>> @flowz.workflow(registry=billing)
        ... async def invoice(amount: int) -> str:
        ...     return await charge(amount)
    """

    def __init__(self) -> None:
        self._definitions: dict[str, Definition] = {}
        self._aliases: dict[str, str] = {}  #: another name a stored run may use -> name

    def alias(self, alias: str, name: str) -> None:
        """Let runs stored under `alias` (an earlier journal name) run `name`'s function."""
        if alias != name and alias not in self._definitions:
            self._aliases[alias] = name

    def register(self, definition: Definition) -> None:
        """Add a definition; a redefinition of the same function replaces it.

        The same function: same qualname and kind, from the same file (one file
        imported under two module names) or from `__main__` (a notebook cell run again).
        """
        existing = self._definitions.get(definition.name)
        if existing is not None and not _same_source(existing, definition):
            raise RegistrationError(
                f"the journal name {definition.name!r} is already used by "
                f"{existing.fn.__qualname__} of {_source(existing)}, so "
                f"{definition.fn.__qualname__} of {_source(definition)} cannot have it: "
                "give one of them another name with name=..."
            )
        self._aliases.pop(definition.name, None)
        self._definitions[definition.name] = definition

    def get(self, name: str) -> Definition | None:
        """The definition registered under `name` (or an alias of it), if any."""
        return self._definitions.get(name) or self._definitions.get(self._aliases.get(name, ""))

    def names(self) -> list[str]:
        """Every journal name a worker of this registry claims (aliases too), sorted."""
        return sorted([*self._definitions, *self._aliases])

    def known(self) -> list[str]:
        """The journal names of the registered functions, sorted (no aliases)."""
        return sorted(self._definitions)

    def queues(self) -> list[Queue]:
        """The queues the registered functions name, by name."""
        found = {d.options.queue.name: d.options.queue for d in self._definitions.values()
                 if d.options.queue is not None}  # fmt: skip
        return [found[name] for name in sorted(found)]

    def schedules(self) -> list[tuple[Definition, Schedule]]:
        """The scheduled workflows and their schedules, by name."""
        return [
            (d, d.options.schedule)
            for _, d in sorted(self._definitions.items())
            if d.options.schedule is not None
        ]


def _source(definition: Definition) -> str:
    code = getattr(definition.fn, "__code__", None)
    return code.co_filename if code is not None else definition.fn.__module__


def _same_source(a: Definition, b: Definition) -> bool:
    return a.kind is b.kind and a.fn.__qualname__ == b.fn.__qualname__ and _source(a) == _source(b)


_DEFAULT = Registry()


def default_registry() -> Registry:
    """The registry decorators use unless given another."""
    return _DEFAULT
