"""Small rules about values that every parser and validator shares.

Theory of operation
-------------------
JSON and TOML hand Python ``int``, ``float`` and ``bool``. ``bool`` is a subclass of ``int`` in
Python, but ``true`` is never a number in a request, a configuration file or a scenario, so
every "is this a number" question in distributord is answered here, once. Ids are written the
same way in every message an operator reads: sorted, comma-separated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeGuard


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an int or a float, and not a bool (finite or not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_integer(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an int, and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_component_id(value: object) -> TypeGuard[int]:
    """Whether ``value`` can be a component id: a non-negative integer."""
    return is_integer(value) and value >= 0


def short_number(value: float) -> str:
    """A finite float as short as it goes without changing value (``5``, ``2.5``, ``1e-07``)."""
    short = f"{value:g}"
    return short if math.isfinite(value) and float(short) == value else repr(value)


def ids_text(ids: Iterable[int]) -> str:
    """Ids as messages write them: ``"1, 2, 3"``, sorted."""
    return ", ".join(map(str, sorted(ids)))
