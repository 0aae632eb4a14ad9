"""The ramp as a pure function: never faster than the rate, reaches its target, through 0."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from distributord.core.ramp import Ramp, apply, reachable, start_from, step_toward

POWER = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_subnormal=True)
RATE = st.floats(min_value=1e-3, max_value=1e8, allow_nan=False)
ELAPSED = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)


def between(value: float, start: float, end: float) -> bool:
    return min(start, end) <= value <= max(start, end)


@given(POWER, POWER, ELAPSED, RATE)
def test_a_step_is_never_faster_than_the_rate_and_never_overshoots(
    previous: float, target: float, elapsed: float, rate: float
) -> None:
    moved = step_toward(previous, target, elapsed, rate)
    assert abs(Fraction(moved) - Fraction(previous)) <= Fraction(rate) * Fraction(elapsed)
    assert between(moved, previous, target)
    if (previous > 0.0 > target) or (previous < 0.0 < target):
        # A direction change stops at 0 first: never past it within the step.
        assert moved == 0.0 or (moved > 0.0) == (previous > 0.0)


@given(
    POWER, POWER, st.integers(min_value=1, max_value=100), st.floats(min_value=0.1, max_value=60)
)
def test_steps_reach_the_target_in_the_time_the_rate_allows(
    start: float, target: float, whole_steps: int, step_s: float
) -> None:
    distance = abs(target - start)
    rate = max(distance / (whole_steps * step_s), 1e-3)
    ramp = Ramp(ramped_w=start, at=0.0)
    crosses = (start > 0.0 > target) or (start < 0.0 < target)
    # Whole steps at the rate, plus one for the stop at 0 on a direction change, plus one for
    # rounding.
    steps = math.ceil(distance / (rate * step_s)) + (1 if crosses else 0) + 1
    now = 0.0
    passed_zero = not crosses
    step = None
    for _ in range(steps):
        now += step_s
        step = apply(ramp, target_w=target, exempt_w=0.0, now=now, rate_w_per_s=rate)
        passed_zero = passed_zero or step.applied_w == 0.0
        ramp = step.ramp
        if not step.ramping:
            break
    assert step is not None
    assert step.applied_w == target
    assert step.eta_s == 0.0
    assert passed_zero  # a reversal is at exactly 0 W for one step at least


def test_a_step_from_0_to_minus_40_kw_at_10_kw_per_s_takes_4_s() -> None:
    ramp = None
    applied = []
    for second in range(6):
        step = apply(ramp, target_w=-40_000.0, exempt_w=0.0, now=float(second), rate_w_per_s=1e4)
        ramp = step.ramp
        applied.append((step.applied_w, step.eta_s))
    assert applied == [
        (0.0, 4.0),
        (-10_000.0, 3.0),
        (-20_000.0, 2.0),
        (-30_000.0, 1.0),
        (-40_000.0, 0.0),
        (-40_000.0, 0.0),
    ]


def test_a_reversal_passes_through_zero() -> None:
    ramp = Ramp(ramped_w=5_000.0, at=0.0)
    seen = []
    for second in range(1, 6):
        step = apply(ramp, target_w=-25_000.0, exempt_w=0.0, now=float(second), rate_w_per_s=1e4)
        ramp = step.ramp
        seen.append(step.applied_w)
    assert seen == [0.0, -10_000.0, -20_000.0, -25_000.0, -25_000.0]


@given(POWER, POWER, POWER, ELAPSED, RATE)
def test_the_exempt_part_moves_at_once_and_the_rest_ramps(
    ramped: float, target: float, exempt: float, elapsed: float, rate: float
) -> None:
    step = apply(
        Ramp(ramped_w=ramped, at=0.0),
        target_w=target,
        exempt_w=exempt,
        now=elapsed,
        rate_w_per_s=rate,
    )
    assert abs(Fraction(step.ramp.ramped_w) - Fraction(ramped)) <= Fraction(rate) * Fraction(
        elapsed
    )
    assert between(step.ramp.ramped_w, ramped, target - exempt)
    if step.ramping:
        assert step.applied_w == exempt + step.ramp.ramped_w
    else:
        assert step.applied_w == target


def test_an_fcr_change_lands_at_once_while_the_rest_ramps() -> None:
    ramp = Ramp(ramped_w=-10_000.0, at=0.0)  # ramping toward -40 kW
    step = apply(ramp, target_w=-40_000.0 + 5_000.0, exempt_w=5_000.0, now=1.0, rate_w_per_s=1e4)
    assert step.applied_w == 5_000.0 - 20_000.0
    assert step.eta_s == 2.0


@given(POWER, ELAPSED)
def test_off_applies_the_target_at_once(target: float, elapsed: float) -> None:
    for rate in (0.0, math.inf):
        step = apply(
            Ramp(ramped_w=1.0, at=0.0),
            target_w=target,
            exempt_w=0.0,
            now=elapsed,
            rate_w_per_s=rate,
        )
        assert step.applied_w == target
        assert not step.ramping


@given(POWER, POWER)
def test_the_start_takes_the_shortfall_off_the_ramped_part_toward_zero(
    ramped: float, shortfall: float
) -> None:
    start = start_from(ramped, shortfall)
    assert between(start, 0.0, ramped)
    if shortfall == 0.0 or (shortfall > 0.0) != (ramped > 0.0):
        assert start == ramped


@given(POWER, POWER, RATE, st.floats(min_value=0.1, max_value=60.0))
def test_what_is_reachable_is_one_step_from_where_the_ramp_stands(
    ramped: float, exempt: float, rate: float, step_s: float
) -> None:
    low, high = reachable(
        Ramp(ramped_w=ramped, at=0.0), exempt_w=exempt, rate_w_per_s=rate, step_s=step_s
    )
    assert low <= exempt + ramped <= high or math.isclose(low, exempt + ramped)
    # Toward the other direction only as far as 0.
    if ramped > 0.0:
        assert low >= exempt + 0.0 - abs(exempt) * 1e-15
    if ramped < 0.0:
        assert high <= exempt + abs(exempt) * 1e-15
    assert reachable(None, exempt_w=0.0, rate_w_per_s=0.0, step_s=1.0) == (-math.inf, math.inf)


def test_the_time_to_target_counts_whole_steps_and_the_stop_at_zero() -> None:
    def eta(ramped: float, target: float) -> float:
        start = Ramp(ramped_w=ramped, at=0.0)
        return apply(
            start, target_w=target, exempt_w=0.0, now=0.0, rate_w_per_s=1e3, step_s=1.0
        ).eta_s

    assert eta(0.0, -4000.0) == 4.0
    assert eta(0.0, -3500.0) == 4.0  # the last step is a whole one too
    assert eta(-1500.0, 1500.0) == 4.0  # two steps to 0 W, two to the target
    assert eta(-1000.0, 1000.0) == 2.0
    assert eta(1.0, 1.0) == 0.0
    assert apply(None, target_w=-4000.0, exempt_w=0.0, now=0.0, rate_w_per_s=3e3).eta_s == 4 / 3


def test_time_the_ramp_stood_still_is_not_banked() -> None:
    # Reached -1000 W at 1 s; a new target at 8 s moves one step's worth, not seven.
    ramp = Ramp(ramped_w=-1000.0, at=1.0)
    step = apply(ramp, target_w=-8000.0, exempt_w=0.0, now=8.0, rate_w_per_s=1e3, step_s=1.0)
    assert step.applied_w == -2000.0
