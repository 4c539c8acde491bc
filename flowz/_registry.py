"""The registry: journal names to decorated functions."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._serde import Codec
from ._types import Kind
from .errors import RegistrationError

__all__ = ["Definition", "Registry", "StepOptions", "default_registry", "journal_name"]


@dataclass(frozen=True, slots=True)
class StepOptions:
    """Retry and timeout policy of a step."""

    retries: int = 0
    backoff: float = 2.0
    retry_delay: float = 1.0
    timeout: float | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)

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
    """`module:qualname`, with __main__ named as a worker importing the same code would name it."""
    module = fn.__module__
    if module == "__main__":
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        main_file = getattr(main, "__file__", None)
        if spec is not None and spec.name:  # python -m package.module
            module = spec.name
        elif main_file:  # python path/to/script.py
            module = Path(main_file).stem
    return f"{module}:{fn.__qualname__}"


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

    def register(self, definition: Definition) -> None:
        """Add a definition; a redefinition of the same function (notebook cell) replaces it."""
        existing = self._definitions.get(definition.name)
        if existing is not None and (
            existing.fn.__qualname__ != definition.fn.__qualname__
            or existing.kind is not definition.kind
        ):
            raise RegistrationError(
                f"the journal name {definition.name!r} is already used by "
                f"{existing.fn.__module__}.{existing.fn.__qualname__}: give one of them "
                "another name with name=..."
            )
        self._definitions[definition.name] = definition

    def get(self, name: str) -> Definition | None:
        """The definition registered under `name`, if any."""
        return self._definitions.get(name)

    def names(self) -> list[str]:
        """Every registered journal name, sorted."""
        return sorted(self._definitions)


_DEFAULT = Registry()


def default_registry() -> Registry:
    """The registry decorators use unless given another."""
    return _DEFAULT
