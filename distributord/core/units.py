"""Power in human units: ``-5kW`` in on the command line, ``-5.00 kW`` out in tables.

Theory of operation
-------------------
Operators think in kilowatts and megawatts; the protocol speaks watts. This module converts
between the two and nothing else: pure, no IO, no clock, standard library only.

Parsing (:func:`parse_power`) accepts one grammar and rejects everything else, because a
mistyped power that is silently reinterpreted moves real batteries::

    power  := space* number space* unit? space*
    number := [+-]? (digits ["." digits?] | "." digits) [("e" | "E") [+-]? digits]
    unit   := "W" | "kW" | "MW"            (W and kW case-insensitive; MW exactly)

* A bare number is watts: ``0``, ``-250``, ``1.5e3``.
* ``W`` and ``kW`` are case-insensitive (``kw``, ``KW`` and ``Kw`` are kilowatts). Megawatts
  are ``MW`` exactly: ``mW`` is a milliwatt in SI, a million times smaller, and ``mw`` and
  ``Mw`` could mean either, so all three are refused as ambiguous rather than guessed.
  Milliwatts are meaningless for a battery inverter, so ``mW`` is never accepted either.
* Digits are ASCII only; no ``inf``, ``nan``, hexadecimal, underscores or thousands separators.
  The result must be a finite float: ``1e400W`` is refused, not sent as infinity.
* The number is scaled in decimal, so ``1.1kW`` is exactly 1100 W (binary floating point
  would give 1100.0000000000002); ``-0`` becomes ``0.0``.

Formatting (:func:`format_power`) prints two decimals and a unit: the smallest of W, kW, MW in
which the rounded number has at most three integer digits (``999.99 W``, but ``1.00 kW`` for
999.996 W, which would round to ``1000.00 W``), or a fixed unit so that a table's column is
comparable row by row. It never prints ``-0.00``.
"""

from __future__ import annotations

import decimal
import math
import re
from collections.abc import Mapping

from distributord.core.errors import PowerSyntaxError

UNIT_EXPONENTS: Mapping[str, int] = {"w": 0, "kw": 3, "mw": 6}
"""Lower-cased unit to its power of ten (see above for the case of megawatts)."""

MEGAWATT = "MW"
"""The only spelling of megawatts accepted: ``mW`` is SI for milliwatts."""

UNIT_FACTORS: Mapping[str, float] = {"W": 1.0, "kW": 1e3, "MW": 1e6}
"""Display units, smallest first, and their size in watts."""

DECIMALS = 2
"""Two decimals: 10 W resolution in kW, which is finer than any inverter's setpoint accuracy."""

_POWER = re.compile(
    r"\s*(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"\s*(?P<unit>[A-Za-z]*)\s*"
)

_EXPECTED = "expected a number with an optional unit W, kW or MW, e.g. -5kW, 1.2MW, 300W"

_AMBIGUOUS = "is ambiguous: write MW for megawatts (milliwatts are not accepted)"


def parse_power(text: str) -> float:
    """Parse a power in human units into watts.

    Args:
        text: E.g. ``"-5kW"``, ``"1.2MW"``, ``"300W"``, ``"-250 W"``, ``"0"``, ``"1.5e3W"``.

    Returns:
        The power in watts, finite; ``0.0`` rather than ``-0.0``.

    Raises:
        PowerSyntaxError: The text does not follow the grammar, names an unknown unit, or is
            too large for a float. The message quotes the text and says what was expected.
    """
    match = _POWER.fullmatch(text)
    if match is None:
        if not text.strip():
            raise PowerSyntaxError(f"no power given; {_EXPECTED}")
        raise PowerSyntaxError(f"{text!r} is not a power; {_EXPECTED}")
    unit = match["unit"] or "W"
    exponent = UNIT_EXPONENTS.get(unit.lower())
    if exponent is None:
        raise PowerSyntaxError(f"{text!r}: unknown unit {unit!r}; use W, kW or MW")
    if unit.lower() == "mw" and unit != MEGAWATT:
        raise PowerSyntaxError(f"{text!r}: unit {unit!r} {_AMBIGUOUS}")
    try:
        watts = float(decimal.Decimal(match["number"]).scaleb(exponent))
    except ArithmeticError:  # decimal.Overflow: an exponent beyond anything a float holds
        watts = math.inf
    if not math.isfinite(watts):
        raise PowerSyntaxError(f"{text!r} is too large")
    return watts + 0.0  # -0.0 + 0.0 == 0.0: a released set is never "minus zero"


def format_power(watts: float, unit: str | None = None) -> str:
    """Format watts for people: ``-5.00 kW``, ``300.00 W``, ``1.20 MW``.

    Args:
        watts: The power, W.
        unit: ``"W"``, ``"kW"`` or ``"MW"`` to fix the unit (for a table column); ``None`` to
            pick the smallest unit in which the rounded number stays below 1000.

    Returns:
        The number with :data:`DECIMALS` decimals, a space and the unit. Non-finite values
        (which the daemon never sends) are shown as they are: ``nan W``, ``-inf W``.

    Raises:
        ValueError: ``unit`` is not one of the three.
    """
    if unit is not None and unit not in UNIT_FACTORS:
        raise ValueError(f"unit must be one of {', '.join(UNIT_FACTORS)}, got {unit!r}")
    if not math.isfinite(watts):
        return f"{watts} W"
    if unit is None:
        smallest, *larger_units = UNIT_FACTORS
        unit = smallest
        for larger in larger_units:
            if round(abs(watts) / UNIT_FACTORS[unit], DECIMALS) < 1000.0:
                break
            unit = larger
    value = round(watts / UNIT_FACTORS[unit], DECIMALS) + 0.0  # no "-0.00"
    return f"{value:.{DECIMALS}f} {unit}"
