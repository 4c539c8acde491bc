"""JSON (de)serialisation of arguments, results and errors; nothing is ever pickled."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import sys
import traceback
import typing
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from pydantic_core import PydanticSerializationError, ValidationError

from ._types import JSON, json_list, json_object
from .errors import SerializationError, StepFailed, UsageError

if TYPE_CHECKING:
    from pydantic import TypeAdapter

__all__ = [
    "Codec",
    "abbreviated",
    "checked_text",
    "dump_error",
    "dumps",
    "error_fields",
    "error_line",
    "iso_time",
    "json_value",
    "load_error",
    "loads",
    "shortened",
]


def dumps(value: JSON) -> str:
    """JSON text of an already JSON-compatible value (compact, stable)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def checked_text(value: Any, what: str) -> str:
    """`value` if it is a string both databases store as it is; else a UsageError naming it.

    PostgreSQL cannot store a NUL character in text, so no store takes one: an id,
    a name, a topic or a key with one is refused the same way on SQLite.
    """
    if not isinstance(value, str):
        raise UsageError(f"{what} {value!r}: give a string")
    if "\x00" in value:
        raise UsageError(
            f"{what} {value[:60]!r} contains a NUL character (\\x00), which the database "
            "cannot store: remove it"
        )
    return value


def json_value(value: Any, what: str) -> JSON:
    """`value` itself if JSON can store it as it is; else a SerializationError naming its type."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"{what} of type {type(value).__name__} cannot be stored as JSON ({exc}): use "
            "dicts, lists, strings, numbers, booleans or None (for a pydantic model, "
            "model.model_dump(mode='json'))"
        ) from exc
    return cast(JSON, value)


def abbreviated(value: JSON, limit: int = 60) -> str:
    """`value` as JSON, cut to `limit` characters with an ellipsis."""
    return shortened(dumps(value), limit)


def shortened(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def iso_time(epoch: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC timestamp (None stays None)."""
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def loads(text: str | None) -> JSON:
    """The value of a JSON text; `None` stays `None`."""
    return None if text is None else json.loads(text)


def _type_label(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


class Codec:
    """Converts one function's arguments and result to JSON and back, by its annotations."""

    def __init__(self, fn: Callable[..., Any], label: str) -> None:
        self._fn = fn
        self.label = label
        self.signature = inspect.signature(fn)

    @cached_property
    def _hints(self) -> dict[str, Any]:
        # Resolved lazily: forward references may name classes defined after the decorator ran.
        try:
            return typing.get_type_hints(self._fn)
        except Exception:  # unresolvable string annotations: treat them as plain JSON
            return {
                name: p.annotation
                for name, p in self.signature.parameters.items()
                if not isinstance(p.annotation, str) and p.annotation is not inspect.Parameter.empty
            }

    def _adapter(self, name: str) -> TypeAdapter[Any]:
        cache: dict[str, TypeAdapter[Any]] = self.__dict__.setdefault("_adapters", {})
        adapter = cache.get(name)
        if adapter is None:
            # pydantic's models load with the first adapter, not at `import flowz`.
            from pydantic import PydanticSchemaGenerationError, TypeAdapter

            annotation = self._hints.get(name, Any)
            try:
                adapter = TypeAdapter(annotation)
            except PydanticSchemaGenerationError as exc:
                raise SerializationError(
                    f"{self.label}: the type {_type_label(annotation)} of "
                    f"{'the result' if name == 'return' else f'parameter {name!r}'} cannot be "
                    "stored as JSON; use a pydantic model, a dataclass or built-in types"
                ) from exc
            cache[name] = adapter
        return adapter

    def _dump(self, name: str, value: Any, what: str) -> JSON:
        try:
            return cast(JSON, self._adapter(name).dump_python(value, mode="json", warnings="error"))
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            annotation = self._hints.get(name)
            expected = "" if annotation is None else f" (annotated {_type_label(annotation)})"
            raise SerializationError(
                f"{self.label}: {what}{expected} got a value of type {type(value).__name__} "
                f"that cannot be stored as JSON: {exc}. Pass JSON-compatible values, pydantic "
                "models or dataclasses, and annotate the parameter with their type."
            ) from exc

    def _load(self, name: str, value: JSON, what: str) -> Any:
        try:
            return self._adapter(name).validate_python(value)
        except ValidationError as exc:
            raise SerializationError(
                f"{self.label}: the stored {what} does not match its annotation: {exc}"
            ) from exc

    def dump_args(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> JSON:
        """JSON of a call's arguments, keyed by parameter name; raises SerializationError."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise SerializationError(f"{self.label}: {exc}") from exc
        out: dict[str, JSON] = {}
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            what = f"parameter {name!r}"
            if kind is inspect.Parameter.VAR_POSITIONAL:
                out[name] = [self._dump(name, v, what) for v in value]
            elif kind is inspect.Parameter.VAR_KEYWORD:
                out[name] = {k: self._dump(name, v, what) for k, v in value.items()}
            else:
                out[name] = self._dump(name, value, what)
        return out

    def validate_args(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Coerce plain JSON arguments (from the command line) to the annotated types."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise SerializationError(f"{self.label}: {exc}") from exc
        for name, value in bound.arguments.items():
            try:
                bound.arguments[name] = self._adapter(name).validate_python(value)
            except ValidationError as exc:
                problems = "; ".join(e["msg"] for e in exc.errors())
                raise SerializationError(
                    f"{self.label}: input for parameter {name!r} is not valid: {problems}"
                ) from exc
        return bound.args, bound.kwargs

    def load_args(self, data: JSON) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments stored by dump_args."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        stored = json_object(data)
        for name, param in self.signature.parameters.items():
            if name not in stored:
                continue
            what = f"parameter {name!r}"
            value = stored[name]
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(self._load(name, v, what) for v in json_list(value))
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update({k: self._load(name, v, what) for k, v in json_object(value).items()})
            elif param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(self._load(name, value, what))
            elif param.kind is inspect.Parameter.KEYWORD_ONLY or any(
                p.kind is inspect.Parameter.VAR_POSITIONAL
                for p in self.signature.parameters.values()
            ):
                kwargs[name] = self._load(name, value, what)
            else:
                args.append(self._load(name, value, what))
        return tuple(args), kwargs

    def dump_result(self, value: Any) -> JSON:
        """JSON of the function's return value; raises SerializationError."""
        return self._dump("return", value, "the result")

    def load_result(self, data: JSON) -> Any:
        """The return value stored by dump_result, as its annotated type."""
        return self._load("return", data, "result")


def dump_error(exc: BaseException) -> JSON:
    """A JSON record of an exception: its type, message, arguments and traceback."""
    cls = type(exc)
    args: JSON = None
    try:
        reduced = exc.__reduce__()
        if isinstance(reduced, tuple) and reduced[0] is cls:
            candidate = list(reduced[1])
            json.dumps(candidate)
            args = candidate
    except Exception:  # an exception that cannot describe its own args is rebuilt as StepFailed
        args = None
    if isinstance(exc, StepFailed):
        type_name, message = exc.type_name, exc.remote_message
        remote = exc.remote_traceback
    else:
        type_name, message = f"{cls.__module__}:{cls.__qualname__}", str(exc)
        remote = "".join(traceback.format_exception(exc))
    return {
        "type": f"{cls.__module__}:{cls.__qualname__}",
        "origin_type": type_name,
        "message": message,
        "args": args,
        "traceback": remote,
    }


def error_fields(record: JSON) -> tuple[str, str]:
    """(`ValueError`, `bad input 3`): an error record's type, by its short name, and message."""
    fields = json_object(record) if isinstance(record, dict) else {}
    type_name = str(fields.get("origin_type") or fields.get("type") or "error")
    return type_name.rpartition(":")[2].rpartition(".")[2], str(fields.get("message", ""))


def error_line(record: JSON) -> str:
    """`ValueError: bad input 3`: an error record in one line."""
    short, message = error_fields(record)
    return f"{short}: {message}" if message else short


def _find_class(type_name: str) -> type[Exception] | None:
    module_name, _, qualname = type_name.partition(":")
    # Only classes of modules this process already imported: nothing stored can make us import code.
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def load_error(record: JSON) -> Exception:
    """Rebuild an exception from dump_error's record: its own type if possible, else StepFailed."""
    fields = json_object(record)
    type_name = str(fields.get("origin_type") or fields["type"])
    message = str(fields.get("message", ""))
    remote = str(fields.get("traceback", ""))
    cls = _find_class(str(fields["type"]))
    rebuilt: Exception | None = None
    if cls is not None and fields.get("args") is not None:
        try:
            rebuilt = cls(*json_list(fields["args"]))
        except Exception:
            rebuilt = None
    if rebuilt is None:
        rebuilt = StepFailed(type_name, message, remote)
    if remote:
        rebuilt.add_note(f"Remote traceback:\n{remote.rstrip()}")
    return rebuilt
