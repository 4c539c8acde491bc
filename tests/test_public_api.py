from __future__ import annotations

import inspect

import flowz
import flowz.errors


def test_all_is_sorted_and_complete() -> None:
    assert flowz.__all__ == sorted(flowz.__all__)
    public = {name for name in vars(flowz) if not name.startswith("_")}
    modules = {name for name, obj in vars(flowz).items() if inspect.ismodule(obj)}
    assert public - modules == set(flowz.__all__)


def test_every_export_claims_a_public_module() -> None:
    for name in flowz.__all__:
        module = getattr(getattr(flowz, name), "__module__", "flowz")
        assert not any(part.startswith("_") for part in module.split(".")), (name, module)


def test_every_error_derives_from_flowz_error_and_is_documented() -> None:
    doc = flowz.errors.__doc__ or ""
    for name in flowz.errors.__all__:
        cls = getattr(flowz.errors, name)
        assert issubclass(cls, flowz.FlowzError)
        assert name in doc, f"{name} is missing from the error tree in flowz/errors.py"
        assert cls.__doc__
