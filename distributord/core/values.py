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
from array import array
from collections.abc import Iterable, Sequence
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


BRIEF_IDS = 16
"""Lists of ids up to this long are written out; longer ones are written as runs."""

BRIEF_RUNS = 8
"""Runs written out at most in a long list; the rest are counted."""


def ids_brief(ids: Iterable[int]) -> str:
    """Ids for a message that must stay readable: all of them, or runs for a long list.

    ``"1, 2, 3"`` up to :data:`BRIEF_IDS` ids; beyond, ``"1000 ids: 1001-1500, 1502-2000"``,
    and at most :data:`BRIEF_RUNS` runs, then ``"… and 12 more runs"``.
    """
    ordered = sorted(set(ids))
    if len(ordered) <= BRIEF_IDS:
        return ids_text(ordered)
    runs: list[tuple[int, int]] = []
    for i in ordered:
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    shown = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:BRIEF_RUNS])
    more = f", … and {len(runs) - BRIEF_RUNS} more runs" if len(runs) > BRIEF_RUNS else ""
    return f"{len(ordered)} ids: {shown}{more}"


def floats32_toward_zero(values: Sequence[float]) -> list[float]:
    """Each value as the float32 nearest it that is no farther from zero.

    Setpoints travel as 32-bit floats (``spec/microgrid-api.md``); rounded to nearest, three
    thirds of 1000 W arrive as 1000.00003 W, more than asked. Rounded toward zero, no value grows,
    and one at or above a bound that is itself a float32 (every bound from telemetry is) stays
    at or above it. A request's setpoints are converted at once: C rounds them to nearest, and
    those that grew step one float32 toward zero (float32 is sign and magnitude, so that is the
    bits minus one).
    """
    nearest = array("f", values)
    bits = array("I")
    bits.frombytes(nearest.tobytes())
    for index, (sent, value) in enumerate(zip(nearest, values, strict=True)):
        if abs(sent) > abs(value):
            bits[index] -= 1
    toward_zero = array("f")
    toward_zero.frombytes(bits.tobytes())
    return toward_zero.tolist()
