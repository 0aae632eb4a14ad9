"""Every input terminates (issue 18, finding 7): extreme exponents, subnormal and huge bounds.

The exponent's documented range is [0, 16] and the config refuses others, but the core is
pure code and gets a result for any input: each call runs under a watchdog, so a split that
loops forever fails the test instead of hanging the suite. The pinned cases are those reported
(and found) before the fix: each failed, hung or raised then.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Iterator
from fractions import Fraction
from types import FrameType

import pytest
from hypothesis import example, given, note
from hypothesis import strategies as st

from distributord.core.distribution import (
    MAX_EXPONENT,
    Allotment,
    Distribution,
    Pair,
    distribute,
)
from distributord.core.errors import DistributionInputError
from distributord.core.model import Error, PowerBounds, Request
from distributord.core.planning import plan
from tests.core.distribution.spec import quantities, reachable_below
from tests.core.distribution.test_exactness import check_invariants
from tests.strategies import (
    EXTREME_EXPONENTS,
    extreme_fleets,
    extreme_requests,
    make_pair,
    symmetric_pair,
)

WATCHDOG_S = 5.0
"""A split takes milliseconds; one still running after this is taken to be stuck."""


class WatchdogError(Exception):
    """The code under test was still running when the watchdog fired."""


@contextlib.contextmanager
def watchdog(seconds: float = WATCHDOG_S) -> Iterator[None]:
    """Raise :class:`WatchdogError` in the block if it runs longer than ``seconds``.

    SIGALRM interrupts pure Python between bytecodes, so an endless loop fails the test instead
    of hanging the suite (pytest runs tests in the main thread, where signals are delivered).
    """

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise WatchdogError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


def watched(power: float, fleet: list[Pair], exponent: float) -> Distribution:
    with watchdog():
        return distribute(power, fleet, exponent=exponent)


def check_no_waste(power: float, fleet: list[Pair], result: Distribution) -> None:
    """``remaining`` is what no allowed assignment could place, to rounding."""
    if abs(power) <= 1e-9:
        return
    magnitude = abs(power)
    best = reachable_below(magnitude, [quantities(p, power > 0) for p in fleet])
    slack = 1e-6 + 1e-12 * magnitude
    assert abs(abs(result.remaining_w) - (magnitude - best)) <= slack, (best, result)


def tiny_pair(
    bid: int,
    soc: float,
    lower: float,
    upper: float,
    capacity: float,
    cap: float,
    minimum: float = 0.0,
) -> Pair:
    """A pair of :func:`~tests.strategies.extreme_fleets`: symmetric battery bounds only."""
    return symmetric_pair(
        bid, soc, lower, upper, capacity, cap, minimum, inverter_bounds=PowerBounds.unknown()
    )


A_HAIR_ABOVE_10 = math.nextafter(10.0, 100.0)

CAP_WITHIN_ROUNDING_OF_THE_REQUEST = [
    tiny_pair(1000, 30.0, 0.0, 100.0, 1.0, 5e-324),
    tiny_pair(1001, A_HAIR_ABOVE_10, 10.0, 90.0, 5e-324, 5e-324),
    tiny_pair(1002, A_HAIR_ABOVE_10, 10.0, 90.0, 5e-324, 1e-9),
    tiny_pair(1003, A_HAIR_ABOVE_10, 10.0, 90.0, 1e-300, 1.0, 5e-324),
]
"""Found by the property below: at exponent 0, -1 W placed 1 nW (see the directed test)."""

A_MINIMUM_A_HAIR_ABOVE_1_MW = [tiny_pair(1000, 30.0, 0.0, 100.0, 5e-324, 1e15, 1e15 * 1e-9)]
"""Found by the property below: its oracle took the 1,000,000.0000000001 W minimum to reach
-1 MW (see the directed test)."""


A_WINDOW_ABSORBED_AT_A_STEEP_EXPONENT = [
    tiny_pair(1000, 30.0, 0.0, 100.0, 5e-324, 5e-324),
    tiny_pair(1001, 50.0, 0.0, 100.0, 5e-324, 100.0, 1.4e-45),
]
"""Found by the property below while the placement in tiers was rewritten: at exponent 1e19,
log2 breakpoints taken relative to the heaviest pair overall gave the lighter pair a window of
width 0 (both ends 4.85e18), and +1 W was reported not placed."""


@given(extreme_fleets(), extreme_requests(), EXTREME_EXPONENTS)
@example(fleet=CAP_WITHIN_ROUNDING_OF_THE_REQUEST, power=-1.0, exponent=0.0)
@example(fleet=A_MINIMUM_A_HAIR_ABOVE_1_MW, power=-1e6, exponent=0.0)
@example(fleet=A_WINDOW_ABSORBED_AT_A_STEEP_EXPONENT, power=1.0, exponent=1e19)
def test_every_exponent_and_bound_gets_a_valid_result(
    fleet: list[Pair], power: float, exponent: float
) -> None:
    note(f"power={power!r} exponent={exponent!r}")
    result = watched(power, fleet, exponent)
    usable = [p for p in fleet if p.problem is None]
    check_invariants(power, usable, result)
    check_no_waste(power, usable, result)


@pytest.mark.parametrize("exponent", [math.inf, math.nan, -1.0])
def test_an_exponent_the_algorithm_refuses_is_an_error_result_not_an_exception(
    exponent: float,
) -> None:
    fleet = [symmetric_pair(1, 30, 10, 90, 10_000, 1000)]
    with pytest.raises(DistributionInputError, match="exponent"):
        distribute(300, fleet, exponent=exponent)
    with watchdog():
        result = plan(Request(power_w=300, batteries=frozenset({1})), fleet, exponent=exponent)
    assert isinstance(result, Error)
    assert "exponent" in result.message


# --- the reported cases --------------------------------------------------------------------


@pytest.mark.parametrize("exponent", [5e17, 1e18, 1e300, 1.7976931348623157e308])
def test_a_steep_exponent_does_not_loop_forever(exponent: float) -> None:
    # Before: e·log2(a) outgrew a tier's span of 900, `key > top - 900` was false for the
    # tier's own top, the tier came out empty and the cut never advanced: the trio thread hung.
    fleet = [
        symmetric_pair(1, 10.5, 10, 90, 5000, 1000),
        symmetric_pair(2, 89.999999, 10, 90, 5000, 100),
    ]
    result = watched(300, fleet, exponent)
    assert result.setpoints == {1: 300.0, 2: 0.0}
    assert result.remaining_w == 0.0


@pytest.mark.parametrize("exponent", [1e19, 1e300])
def test_a_steep_exponent_does_not_raise(exponent: float) -> None:
    # Before: the same empty tier, with power still to place: "max() arg is an empty sequence".
    fleet = [symmetric_pair(1, 10.5, 10, 90, 5000, 1000), symmetric_pair(2, 60, 10, 90, 5000, 100)]
    result = watched(300, fleet, exponent)
    assert result.setpoints == {1: 300.0, 2: 0.0}
    assert result.remaining_w == 0.0


def test_equal_socs_2_to_the_1000_apart_in_capacity_keep_their_order_at_2_to_the_64() -> None:
    # Found in review: at exponent 2^64 a weight's log2 key is about 2^64, in steps of 4096, so
    # pairs with equal SoCs but capacities 2^1000 apart had equal keys; the lightest was taken
    # as the heaviest, and exp2 of its ratio to the others raised OverflowError.
    soc = 28.07544630412633
    fleet = [
        symmetric_pair(1, soc, 10, 90, 7.07e-321, 1868.02),
        symmetric_pair(2, 20.02445009157282, 10, 90, 8.0167e-292, 4218.63),
        symmetric_pair(3, soc, 10, 90, 2.44e-321, 1744.13),
        symmetric_pair(4, soc, 10, 90, 15137.96, 4836.01),
        symmetric_pair(5, 90.0, 10, 90, 8.9003e-308, 1114.24),
    ]
    result = watched(-4660.92, fleet, 2.0**64)
    check_invariants(-4660.92, fleet, result)
    check_no_waste(-4660.92, fleet, result)


@pytest.mark.parametrize("exponent", [100.0, 1075.0, 1e300])
def test_a_light_pair_that_alone_meets_the_request_is_chosen(exponent: float) -> None:
    # Before, at exponent 100: +300 W placed 100 W and reported 200 W as excess. Pair 2's
    # weight is below 2^-900 of pair 1's (available SoC 0.1 against 60), so the tiers were
    # split one after the other: pair 1 took its 100 W, and pair 2 (minimum 300 W) could not
    # take the 200 W left, though it alone takes all 300.
    fleet = [
        symmetric_pair(1, 30, 10, 90, 10_000, 100),
        symmetric_pair(2, 89.9, 10, 90, 10_000, 1000, 300),
    ]
    result = watched(300, fleet, exponent)
    assert result.setpoints == {1: 0.0, 2: 300.0}
    assert result.remaining_w == 0.0
    check_invariants(300, fleet, result)


def test_a_cap_within_rounding_of_the_request_does_not_lose_the_request() -> None:
    # Before: -1 W placed 1 nW and reported 0.999999999 W as remaining, though pair 1003 alone
    # takes 1 W. Its weight (capacity 1e-300) is below 2^-900 of pair 1000's, so the split
    # went by tiers; in the second tier the level where pair 1003 reaches its 1 W cap,
    # fl(u/w), is a hair below the true u/w, and the sum of the clamped shares there rounded
    # to 1 - 2^-53: the sweep passed that breakpoint, and the next stretch's line,
    # (1 - fl(1 + 5e-324)) / slope, gave the level 0. At level 0 pair 1003 was raised to its
    # 5e-324 W minimum and the others, clamped to their caps, took 1 nW.
    fleet = CAP_WITHIN_ROUNDING_OF_THE_REQUEST
    result = watched(-1.0, fleet, 0.0)
    check_invariants(-1.0, fleet, result)
    check_no_waste(-1.0, fleet, result)
    assert result.setpoints[1003] == pytest.approx(-1.0, abs=1e-9)
    # Within an ulp: the two 5e-324 W caps take the sum 1e-323 over, and the only pair with
    # room to give that back gives its own ulp.
    assert abs(result.remaining_w) <= math.ulp(1.0)


def test_a_minimum_a_hair_above_the_request_is_out_of_reach() -> None:
    # The split was right: the pair's minimum, 1e15 · 1e-9 = 1,000,000.0000000001 W, is above
    # the 1 MW request, so it may only take 0. The oracle admitted minimums within 1e-6 W of
    # the request, said all of it was reachable, and failed the property.
    fleet = A_MINIMUM_A_HAIR_ABOVE_1_MW
    assert quantities(fleet[0], False).minimum > 1e6
    assert reachable_below(1e6, [quantities(fleet[0], False)]) == 0.0
    result = watched(-1e6, fleet, 0.0)
    assert result.setpoints == {1000: 0.0}
    assert result.remaining_w == -1e6
    check_no_waste(-1e6, fleet, result)


def test_a_float32_subnormal_bound_at_exponent_1075_is_no_zero_division() -> None:
    # Before: "internal error: ZeroDivisionError". A tier's weights were scaled by the largest
    # power of two among them, not by its heaviest weight's: a mantissa of 0.62^1075 (2^-739)
    # times 2^-400 underflowed to 0, and u/w divided by it.
    fleet = [
        symmetric_pair(1, 10.5, 10, 90, 5000, 1000),
        symmetric_pair(2, 34.3, 10, 90, 5000, 1.4e-45),
        symmetric_pair(3, 89.5, 10, 90, 5000, 1.4e-45),
    ]
    result = watched(300, fleet, 1075.0)
    check_invariants(300, fleet, result)
    assert result.setpoints[1] == pytest.approx(300.0)
    assert abs(result.remaining_w) <= 1e-12


def battery_alone(bid: int, cap: float, minimum: float = 0.0) -> Pair:
    """SoC 50 % of [10, 90], 10 kWh, symmetric battery bounds; the inverter reports none."""
    return make_pair(
        bid,
        soc=50,
        soc_lower=10,
        soc_upper=90,
        capacity=10_000,
        battery_bounds=PowerBounds.symmetric(cap, minimum),
        inverter_bounds=PowerBounds.unknown(),
    )


def test_a_huge_whole_watt_cap_beside_a_minimum_does_not_exhaust_memory() -> None:
    # Before: the whole-watt subset-sum shifted its bitset by up to the 1e15 W cap before
    # masking it to the request: 2^50 bits, MemoryError or the OOM killer. Only pairs 2 and 3
    # can run under 250 W: 200 W, and 50 W remain.
    fleet = [battery_alone(1, 1e15, 300), battery_alone(2, 100), battery_alone(3, 100)]
    result = watched(250, fleet, 1.0)
    assert result.setpoints == {1: 0.0, 2: 100.0, 3: 100.0}
    assert result.remaining_w == 50.0


def test_a_fixed_power_petawatt_pair_and_a_tiny_request_do_not_exhaust_memory() -> None:
    # Found by the property above after the fix of the cap: the bitset was still shifted by the
    # 1e15 W minimum before it was masked.
    fleet = [battery_alone(1, 1e15, 1e15)]
    result = watched(-2e-9, fleet, 0.0)
    assert result.setpoints == {1: 0.0}
    assert result.remaining_w == -2e-9


# --- both ends of the documented range -------------------------------------------------------


@pytest.mark.parametrize("exponent", [0.0, MAX_EXPONENT])
@pytest.mark.parametrize("power", [-1500.0, -300.0, 300.0, 1000.0, 1500.0, 2500.0])
def test_no_waste_at_both_ends_of_the_range_with_ordinary_socs(
    exponent: float, power: float
) -> None:
    # Available SoC 30 % and 70 % (either way round by the sign), a minimum on one of them.
    fleet = [
        symmetric_pair(1, 60, 0, 90, 10_000, 1000, 300),
        symmetric_pair(2, 20, 0, 90, 10_000, 800),
    ]
    result = watched(power, fleet, exponent)
    check_invariants(power, fleet, result)
    check_no_waste(power, fleet, result)


@given(
    st.sampled_from([0.0, MAX_EXPONENT]),
    st.lists(st.sampled_from([0.0, 100.0, 300.0, 1000.0]), min_size=2, max_size=4),
    st.lists(st.sampled_from([100.0, 300.0, 1000.0]), min_size=4, max_size=4),
    st.sampled_from([100.0, 300.0, 500.0, 700.0, 1300.0]),
    st.booleans(),
)
def test_no_waste_at_both_ends_with_minimums(
    exponent: float, minimums: list[float], caps: list[float], magnitude: float, charge: bool
) -> None:
    socs = [60.0, 20.0, 45.0, 80.0]  # available 30, 70, 45, 10 % charging (of [0, 90])
    fleet = [
        symmetric_pair(k, socs[k], 0, 90, 10_000, caps[k], min(minimum, caps[k]))
        for k, minimum in enumerate(minimums)
    ]
    power = magnitude if charge else -magnitude
    result = watched(power, fleet, exponent)
    check_invariants(power, fleet, result)
    check_no_waste(power, fleet, result)


def test_exponent_16_splits_30_and_70_percent_by_the_16th_power() -> None:
    fleet = [
        symmetric_pair(1, 60, 0, 90, 10_000, 10_000),
        symmetric_pair(2, 20, 0, 90, 10_000, 10_000),
    ]
    result = watched(8000, fleet, MAX_EXPONENT)
    ratio = Fraction(3, 7) ** 16  # available 30 and 70
    assert result.setpoints[1] == pytest.approx(
        float(8000 * ratio / (1 + ratio)), rel=1e-9, abs=0.0
    )
    assert math.fsum(result.setpoints.values()) == 8000.0
    assert set(result.reasons.values()) == {Allotment.PROPORTIONAL}
