"""The request less the unused batteries' measured power, against an exact oracle in fractions."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from distributord.core.compensation import compensate
from distributord.core.model import PLAUSIBLE_LIMIT


def toward_zero(value: Fraction) -> float:
    """The float nearest ``value`` that is no farther from zero than it."""
    nearest = float(value)
    if abs(Fraction(nearest)) > abs(value):
        nearest = math.nextafter(nearest, 0.0)
    return nearest


def oracle(power_w: float, measured: list[float]) -> float:
    """``P − ΣU`` clamped into ``[0, P]``, exactly, then rounded toward zero."""
    exact = Fraction(power_w) - sum((Fraction(m) for m in measured), Fraction(0))
    if power_w == 0.0 or not measured:
        return power_w
    if power_w > 0:
        exact = min(Fraction(power_w), max(Fraction(0), exact))
    else:
        exact = max(Fraction(power_w), min(Fraction(0), exact))
    return toward_zero(exact)


@pytest.mark.parametrize(
    ("power_w", "measured", "target_w", "compensated_w", "uncompensated_w"),
    [
        # An unused battery still charging 1000 W of a 2000 W charge: the others take 1000 W.
        (2000.0, {3: 1000.0}, 1000.0, 1000.0, 0.0),
        # It discharges more than the discharge asked: the others get 0, never a charge.
        (-1000.0, {3: -1500.0}, 0.0, -1000.0, -500.0),
        # It discharges against a charge: the others are not charged more to absorb it.
        (500.0, {3: -1000.0}, 500.0, 0.0, -1000.0),
        # It charges against a discharge: the others are not discharged more to feed it.
        (-500.0, {3: 1000.0}, -500.0, 0.0, 1000.0),
        # Several, partly cancelling each other: their sum counts.
        (3000.0, {3: 1000.0, 4: -400.0}, 2400.0, 600.0, 0.0),
        (1000.0, {}, 1000.0, 0.0, 0.0),
        (0.0, {3: 700.0}, 0.0, 0.0, 700.0),
    ],
)
def test_worked_examples(
    power_w: float,
    measured: dict[int, float],
    target_w: float,
    compensated_w: float,
    uncompensated_w: float,
) -> None:
    result = compensate(power_w, measured)
    assert (result.target_w, result.compensated_w, result.uncompensated_w) == (
        target_w,
        compensated_w,
        uncompensated_w,
    )
    assert result.measured_w == measured


def test_off_takes_nothing_off_and_reports_all_of_it() -> None:
    result = compensate(2000.0, {3: 1000.0, 4: 250.0}, enabled=False)
    assert (result.target_w, result.compensated_w, result.uncompensated_w) == (2000.0, 0.0, 1250.0)


EXTREMES = [0.0, 5e-324, 1e-300, 1e-9, 1.0, 1000.0, 1e9, PLAUSIBLE_LIMIT]

watts = st.one_of(
    st.floats(min_value=-PLAUSIBLE_LIMIT, max_value=PLAUSIBLE_LIMIT, allow_nan=False),
    st.sampled_from(EXTREMES + [-w for w in EXTREMES]),
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[float, list[float]]:
    """A request and measured powers: anywhere, or summing to a few ulps from it or from 0."""
    power = draw(watts)
    measured = draw(st.lists(watts, max_size=6))
    if draw(st.booleans()) and measured:
        # Make them add up to a few ulps from the request (or from 0): where rounding decides.
        near = power if draw(st.booleans()) else 0.0
        rest = math.fsum(measured[1:])
        last = near - rest
        for _ in range(draw(st.integers(min_value=-3, max_value=3)) % 4):
            last = math.nextafter(last, math.inf if draw(st.booleans()) else -math.inf)
        assume(math.isfinite(last) and abs(last) <= PLAUSIBLE_LIMIT)
        measured[0] = last
    return power, measured


@given(cases())
def test_the_target_is_the_exact_clamp_rounded_toward_zero(case: tuple[float, list[float]]) -> None:
    power, measured = case
    result = compensate(power, dict(enumerate(measured)))
    target = result.target_w
    assert target == oracle(power, measured)
    # Never the opposite sign, never more than asked.
    assert target == 0.0 or (target > 0.0) == (power > 0.0)
    assert abs(target) <= abs(power)


@given(cases())
def test_conservation_with_the_unused_power_counted(case: tuple[float, list[float]]) -> None:
    power, measured = case
    result = compensate(power, dict(enumerate(measured)))
    unused = sum((Fraction(m) for m in measured), Fraction(0))
    target, uncompensated = Fraction(result.target_w), Fraction(result.uncompensated_w)
    # Each figure is its exact value rounded once.
    assert result.compensated_w == float(Fraction(power) - target)
    assert result.uncompensated_w == float(unused - Fraction(power) + target)
    # So the site (target + unused) is the request plus the uncompensated part, to its rounding.
    error = abs(target + unused - uncompensated - Fraction(power))
    assert error <= Fraction(math.ulp(result.uncompensated_w)) / 2
    # The commanded part never takes the site past the request where the unused alone do not.
    sign = 1 if power >= 0.0 else -1
    site = sign * (target + unused)
    assert site <= max(abs(Fraction(power)), sign * unused)


@given(watts, st.lists(watts, max_size=6))
def test_off_is_the_request_as_asked(power: float, measured: list[float]) -> None:
    result = compensate(power, dict(enumerate(measured)), enabled=False)
    assert result.target_w == power
    assert result.compensated_w == 0.0
    assert result.uncompensated_w == math.fsum(measured) + 0.0
