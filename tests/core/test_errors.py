"""Every exception class of distributord lives in core/errors.py and derives from ours."""

from __future__ import annotations

import importlib
import inspect
import pathlib

import pytest

from distributord.core import errors
from distributord.core.errors import DistributordError

PACKAGE = pathlib.Path(errors.__file__).resolve().parent.parent


def all_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # running it would run the command
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def exception_classes(module_name: str) -> list[type[BaseException]]:
    module = importlib.import_module(module_name)
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module_name
    ]


@pytest.mark.parametrize("module", all_modules())
def test_no_module_but_errors_defines_an_exception(module: str) -> None:
    if module == errors.__name__:
        return
    assert exception_classes(module) == []


def test_every_error_derives_from_distributord_error() -> None:
    classes = exception_classes(errors.__name__)
    assert len(classes) >= 10  # the walk found them: the check above is not vacuous
    assert [c.__name__ for c in classes if not issubclass(c, DistributordError)] == []
