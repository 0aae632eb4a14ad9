"""The merge inside a bucket (``spec/arbitration.md``), against an exact oracle.

The oracle (:mod:`tests.core.arbitration.oracle`) reads the spec afresh in
:class:`~fractions.Fraction`. On the quarter-watt grid every float sum is exact, so the merge
and the oracle must agree exactly; on arbitrary floats they agree to the rounding of the
window shifts and the sum, and the safety properties hold exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import attrs
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from distributord.core.arbitration.merge import (
    Bid,
    Grant,
    Limiter,
    Merge,
    Mode,
    Reason,
    Window,
    merge,
)
from distributord.core.model import PowerBounds
from tests.core.arbitration.oracle import OracleBid, oracle_headroom, oracle_merge
from tests.core.arbitration.strategies import buckets

KW = 1000.0
INF = math.inf

modes = st.sampled_from(list(Mode))


# --- the oracle's view ----------------------------------------------------------------------


def _f(value: float | None) -> Fraction | None:
    return None if value is None or math.isinf(value) else Fraction(value)


def oracle_bids(bids: Sequence[Bid]) -> list[OracleBid]:
    return [
        OracleBid(
            program=b.program,
            priority=b.priority,
            sequence=b.sequence,
            power=_f(b.power_w),
            lower=_f(b.lower_w),
            upper=_f(b.upper_w),
            max_charge=_f(b.max_charge_w),
            max_discharge=_f(b.max_discharge_w),
        )
        for b in bids
    ]


def _inclusion(bounds: PowerBounds) -> tuple[Fraction, Fraction]:
    return Fraction(bounds.inclusion_lower), Fraction(bounds.inclusion_upper)


def _exclusion(bounds: PowerBounds) -> tuple[Fraction, Fraction]:
    return Fraction(bounds.exclusion_lower), Fraction(bounds.exclusion_upper)


def _pair(window: Window) -> tuple[Fraction, Fraction]:
    return Fraction(window.lower_w), Fraction(window.upper_w)


def _limiters(limiters: Sequence[Limiter]) -> tuple[tuple[str, int], ...]:
    return tuple((limiter.program, limiter.priority) for limiter in limiters)


# --- against the oracle -------------------------------------------------------------------


@given(bucket=buckets(), mode=modes)
def test_equals_the_oracle_exactly_on_the_grid(
    bucket: tuple[PowerBounds, list[Bid]], mode: Mode
) -> None:
    bounds, bids = bucket
    result = merge(bounds, bids, mode)
    expected = oracle_merge(_inclusion(bounds), _exclusion(bounds), oracle_bids(bids), mode)
    note(f"result: {result}\nexpected: {expected}")
    assert Fraction(result.target_w) == expected.target
    assert (Reason.BELOW_MINIMUM in result.reasons) == expected.below_minimum
    assert len(result.grants) == len(expected.grants)
    for grant, want in zip(result.grants, expected.grants, strict=True):
        assert (grant.bid.program, grant.bid.priority) == (want.program, want.priority)
        assert _pair(grant.window) == want.window
        assert _pair(grant.bounds) == want.b
        assert Fraction(grant.granted_w) == want.x
        assert (Reason.BOUNDS_OUTSIDE_WINDOW in grant.reasons) == want.outside_window
        assert _limiters(grant.limited_by) == want.limited_by
    assert _pair(result.window) == expected.final_window
    for priority in range(-1, 5):
        headroom = result.headroom(priority)
        want_window = oracle_headroom(
            _inclusion(bounds), _exclusion(bounds), oracle_bids(bids), mode, priority
        )
        assert (Fraction(headroom.inclusion_lower_w), Fraction(headroom.inclusion_upper_w)) == (
            want_window
        )
        assert (headroom.exclusion_lower_w, headroom.exclusion_upper_w) == (
            bounds.exclusion_lower,
            bounds.exclusion_upper,
        )


def _tolerance(bounds: PowerBounds, bids: Sequence[Bid]) -> float:
    """The rounding the float walk may gather: a few ulps of the largest value, per bid."""
    values = [abs(bounds.inclusion_lower), abs(bounds.inclusion_upper), 1.0]
    values += [abs(b.power_w) for b in bids if b.power_w is not None]
    return 8 * (len(bids) + 1) * max(values) * 2.0**-52


@given(bucket=buckets(exact=False), mode=modes)
def test_close_to_the_oracle_on_any_floats(
    bucket: tuple[PowerBounds, list[Bid]], mode: Mode
) -> None:
    bounds, bids = bucket
    result = merge(bounds, bids, mode)
    expected = oracle_merge(_inclusion(bounds), _exclusion(bounds), oracle_bids(bids), mode)
    tolerance = Fraction(_tolerance(bounds, bids))
    note(f"result: {result}\nexpected: {expected}\ntolerance: {float(tolerance)}")
    # The walk is continuous in its inputs; only the minimum jumps (to 0 or not).
    exact_sum = sum((g.x for g in expected.grants), Fraction(0))
    near_minimum = any(abs(abs(exact_sum) - abs(edge)) <= tolerance for edge in _exclusion(bounds))
    if not near_minimum:
        assert abs(Fraction(result.target_w) - expected.target) <= tolerance
    for grant, want in zip(result.grants, expected.grants, strict=True):
        assert abs(Fraction(grant.granted_w) - want.x) <= tolerance
        assert abs(Fraction(grant.window.lower_w) - want.window[0]) <= tolerance
        assert abs(Fraction(grant.window.upper_w) - want.window[1]) <= tolerance
    _assert_safe(bounds, result)


# --- the spec's properties ----------------------------------------------------------------


def _assert_safe(bounds: PowerBounds, result: Merge) -> None:
    """Target inside [L, U], never strictly inside the exclusion zone; grants within B ⊆ window."""
    target = result.target_w
    assert bounds.inclusion_lower <= target <= bounds.inclusion_upper
    assert target == 0.0 or not bounds.exclusion_lower < target < bounds.exclusion_upper
    assert math.copysign(1.0, target) == 1.0 or target != 0.0  # never -0.0
    for grant in result.grants:
        assert grant.window.lower_w <= grant.bounds.lower_w <= grant.bounds.upper_w
        assert grant.bounds.upper_w <= grant.window.upper_w
        if grant.bid.power_w is None:
            assert grant.granted_w == 0.0  # a limiter gets 0, even when 0 is outside B
        elif Reason.OVERRIDDEN not in grant.reasons:
            assert grant.bounds.lower_w <= grant.granted_w <= grant.bounds.upper_w


EXTREME_BOUNDS = [
    PowerBounds(
        inclusion_lower=lower, exclusion_lower=0.0, exclusion_upper=minimum, inclusion_upper=upper
    )
    for lower in (-1e15, -1e-300, -5e-324, 0.0)
    for minimum, upper in ((0.0, 1e15), (5e-324, 1e-300), (5e-324, 5e-324), (1e15, 1e15))
]


@given(
    bucket=buckets(exact=False),
    extreme=st.none() | st.sampled_from(EXTREME_BOUNDS),
    mode=modes,
)
def test_target_inside_the_bounds_and_never_in_the_exclusion_zone(
    bucket: tuple[PowerBounds, list[Bid]], extreme: PowerBounds | None, mode: Mode
) -> None:
    bounds, bids = bucket
    bounds = bounds if extreme is None else extreme
    _assert_safe(bounds, merge(bounds, bids, mode))


@given(bucket=buckets(), mode=modes)
def test_a_grant_never_above_what_was_asked_nor_outside_the_limits(
    bucket: tuple[PowerBounds, list[Bid]], mode: Mode
) -> None:
    """A grant lies between 0 and what was asked, inside the limits, when 0 is in the window.

    The window a bid sees holds 0 unless a higher bid's bounds exclude 0 (then the nearest edge
    is forced on it: ``test_a_forced_grant_is_counted_and_explained``).
    """
    bounds, bids = bucket
    for grant in merge(bounds, bids, mode).grants:
        bid, x = grant.bid, grant.granted_w
        if not grant.window.lower_w <= 0.0 <= grant.window.upper_w:
            continue
        assert -bid.max_discharge_w <= x <= bid.max_charge_w
        asked = 0.0 if bid.power_w is None else bid.power_w
        own_low = -INF if bid.lower_w is None else bid.lower_w
        own_high = INF if bid.upper_w is None else bid.upper_w
        if own_low <= asked <= own_high:
            # Its own bounds hold what it asked: never pushed past it, away from 0.
            assert min(0.0, asked) <= x <= max(0.0, asked)


@given(bucket=buckets(), newcomer=buckets(), mode=modes)
def test_a_lower_bid_never_changes_a_higher_grant(
    bucket: tuple[PowerBounds, list[Bid]], newcomer: tuple[PowerBounds, list[Bid]], mode: Mode
) -> None:
    """Every bid of the newcomers is given a priority below all others', and is newer."""
    bounds, bids = bucket
    lowest = min((b.priority for b in bids), default=0)
    newcomers = [
        attrs.evolve(
            b,
            program=f"new{b.program}",
            priority=lowest - 1 - b.priority,
            sequence=100 + b.sequence,
        )
        for b in newcomer[1]
    ]
    before = merge(bounds, bids, mode)
    after = merge(bounds, [*newcomers, *bids], mode)
    # The target (and so below_minimum, a reason about the target) may change; no grant does.
    assert [_walk(g) for g in after.grants[: len(before.grants)]] == [
        _walk(g) for g in before.grants
    ]


def _walk(grant: Grant) -> Grant:
    """The grant as the walk made it, without the reason the target's minimum adds."""
    reasons = tuple(r for r in grant.reasons if r is not Reason.BELOW_MINIMUM)
    return attrs.evolve(grant, reasons=reasons)


@given(bucket=buckets(), mode=modes)
def test_no_bids_is_zero(bucket: tuple[PowerBounds, list[Bid]], mode: Mode) -> None:
    """No bids (or every one withdrawn): 0 W, and the whole window to ask of."""
    bounds, _ = bucket
    result = merge(bounds, [], mode)
    assert result.target_w == 0.0
    assert result.grants == ()
    assert result.reasons == (Reason.NO_BIDS,)
    headroom = result.headroom(0)
    assert (headroom.inclusion_lower_w, headroom.inclusion_upper_w) == (
        bounds.inclusion_lower,
        bounds.inclusion_upper,
    )


@given(bucket=buckets(exact=False), mode=modes, seed=st.integers(0, 2**32))
def test_the_order_of_the_input_changes_nothing(
    bucket: tuple[PowerBounds, list[Bid]], mode: Mode, seed: int
) -> None:
    """Bids are ordered by priority, then age: the order they are given in changes nothing.

    Proposals of different priorities, or of one priority with their ages, in any order.
    """
    bounds, bids = bucket
    shuffled = list(bids)
    random.Random(seed).shuffle(shuffled)
    assert merge(bounds, shuffled, mode) == merge(bounds, bids, mode)


# --- the worked cases -------------------------------------------------------------

HUNDRED_KW = PowerBounds.symmetric(100 * KW)


def test_worked_case_three_programs_add_up() -> None:
    """20, 50, 50 kW at priorities 3, 2, 1 on ±100 kW: 100 kW; priority 1 sees −170…30 kW.

    "Sees" is the window before its step 1, which is also what it may ask (its bounds).
    """
    result = merge(
        HUNDRED_KW,
        [
            Bid(program="a", priority=3, sequence=0, power_w=20 * KW),
            Bid(program="b", priority=2, sequence=1, power_w=50 * KW),
            Bid(program="c", priority=1, sequence=2, power_w=50 * KW),
        ],
    )
    assert result.target_w == 100 * KW
    a, b, c = result.grants
    assert [g.granted_w for g in result.grants] == [20 * KW, 50 * KW, 30 * KW]
    assert c.window == Window(lower_w=-170 * KW, upper_w=30 * KW)
    assert b.window == Window(lower_w=-120 * KW, upper_w=80 * KW)
    assert c.reasons == (Reason.CLAMPED,)
    assert c.limited_by == (Limiter(program="a", priority=3), Limiter(program="b", priority=2))
    headroom = result.headroom(1)
    assert (headroom.inclusion_lower_w, headroom.inclusion_upper_w) == (-170 * KW, 30 * KW)
    assert (a.reasons, b.reasons) == ((), ())


def test_worked_case_bounds_narrow_and_powers_add() -> None:
    """+50 kW within [−20, 100] (p3), −10 kW within [−90, 0] (p2), −20 kW (p1): 20 kW."""
    result = merge(
        HUNDRED_KW,
        [
            Bid(
                program="a",
                priority=3,
                sequence=0,
                power_w=50 * KW,
                lower_w=-20 * KW,
                upper_w=100 * KW,
            ),
            Bid(
                program="b", priority=2, sequence=1, power_w=-10 * KW, lower_w=-90 * KW, upper_w=0.0
            ),
            Bid(program="c", priority=1, sequence=2, power_w=-20 * KW),
        ],
    )
    assert result.target_w == 20 * KW
    _, b, c = result.grants
    assert [g.granted_w for g in result.grants] == [50 * KW, -10 * KW, -20 * KW]
    assert b.window == Window(lower_w=-70 * KW, upper_w=50 * KW)
    assert b.bounds == Window(lower_w=-70 * KW, upper_w=0.0)
    assert c.window == Window(lower_w=-60 * KW, upper_w=10 * KW)


# --- the SDK's documented examples ----------------------------------------------------------
#
# The reference SDK 1.0's "shifting matryoshka" power manager is our "add" merge. Its tests
# walk one bucket through a sequence of proposals and, after each, check the target and what
# each priority may ask. The sequences below are its scenarios' figures (ours: a proposal of a
# priority replaces that priority's previous one), each step checked with our merge.

Step = tuple[int, float | None, float | None, float | None, float, dict[int, tuple[float, float]]]
"""(priority, power, lower, upper, expected target, {priority: expected headroom})."""

SDK_NO_EXCLUSION: list[Step] = [
    (2, 25, 25, 50, 25, {2: (-200, 200), 1: (0, 25)}),
    (1, 20, 20, 50, 45, {1: (0, 25)}),
    (3, 10, 10, 15, 15, {3: (-200, 200), 2: (0, 5), 1: (0, 0)}),
    (3, 10, 10, 22, 22, {3: (-200, 200), 2: (0, 12), 1: (0, 0)}),
    (1, 30, 20, 50, 22, {1: (0, 0)}),
    (3, 10, 10, 50, 50, {3: (-200, 200), 2: (0, 40), 1: (0, 15)}),
    (2, 40, 40, None, 50, {3: (-200, 200), 2: (0, 40), 1: (0, 0)}),
    (2, 0, -200, 200, 40, {4: (-200, 200), 3: (-200, 200), 2: (0, 40), 1: (0, 40)}),
    (4, -50, None, -50, -50, {4: (-200, 200), 3: (-150, 0), 2: (0, 0), 1: (0, 0)}),
    (3, 0, -200, 200, -50, {1: (-150, 0)}),
    (1, -150, -200, -150, -200, {2: (-150, 0), 1: (-150, 0)}),
    (4, -180, -200, -50, -200, {1: (-20, 130)}),
    (4, 50, 50, None, 50, {4: (-200, 200), 3: (0, 150), 2: (0, 150), 1: (0, 150)}),
    (4, 0, -200, 200, -150, {4: (-200, 200), 1: (-200, 200)}),
    (2, 50, -100, 100, -100, {3: (-200, 200), 2: (-200, 200), 1: (-150, 50)}),
    (1, 100, 100, 200, 100, {1: (-150, 50)}),
    (1, 50, 50, 200, 100, {1: (-150, 50)}),
    (1, 10, 10, 200, 60, {1: (-150, 50)}),
    (1, 0, -200, 200, 50, {1: (-150, 50)}),
    (1, None, -200, 200, 50, {1: (-150, 50)}),
]

SDK_EXCLUSION_BELOW_ZERO: list[Step] = [
    # Exclusion zone (−30, 0): the steps where our rule (only ever towards 0) agrees.
    (2, 25, 25, 50, 25, {2: (-200, 200), 1: (0, 25)}),
    (1, 20, 20, 50, 45, {1: (0, 25)}),
    (2, -10, -10, 50, 10, {1: (0, 60), 0: (0, 30)}),
    (1, -10, -10, 50, 0, {0: (0, 50)}),  # −10 is inside the zone: both go to 0
    (1, -10, -10, -5, 0, {0: (0, 0)}),
]


def _replay(bounds: PowerBounds, steps: Sequence[Step]) -> None:
    live: dict[int, Bid] = {}
    for sequence, (priority, power, lower, upper, target, headrooms) in enumerate(steps):
        live[priority] = Bid(
            program=f"actor-{priority}",
            priority=priority,
            sequence=sequence,
            power_w=power,
            lower_w=lower,
            upper_w=upper,
        )
        result = merge(bounds, live.values(), Mode.ADD)
        assert result.target_w == target, (sequence, result)
        for p, (low, high) in headrooms.items():
            headroom = result.headroom(p)
            assert (headroom.inclusion_lower_w, headroom.inclusion_upper_w) == (low, high), (
                sequence,
                p,
            )


def test_sdk_shifting_matryoshka_without_exclusion() -> None:
    _replay(PowerBounds.symmetric(200.0), SDK_NO_EXCLUSION)


def test_sdk_shifting_matryoshka_with_exclusion_where_we_agree() -> None:
    bounds = PowerBounds(
        inclusion_lower=-200.0, exclusion_lower=-30.0, exclusion_upper=0.0, inclusion_upper=200.0
    )
    _replay(bounds, SDK_EXCLUSION_BELOW_ZERO)


def test_inside_the_exclusion_zone_we_go_to_zero_where_the_sdk_goes_away_from_it() -> None:
    """The deliberate difference: inside the exclusion zone we go to 0.

    The SDK moves a target inside the exclusion zone to the nearer of its edges (here −20 W in
    (−30, 0) → −30 W, more power than anyone asked); we only ever move towards 0.
    """
    bounds = PowerBounds(
        inclusion_lower=-200.0, exclusion_lower=-30.0, exclusion_upper=0.0, inclusion_upper=200.0
    )
    result = merge(
        bounds,
        [
            Bid(program="actor-2", priority=2, sequence=0, power_w=-10, lower_w=-200, upper_w=-5),
            Bid(program="actor-1", priority=1, sequence=1, power_w=-10, lower_w=-10, upper_w=-5),
        ],
    )
    assert [g.granted_w for g in result.grants] == [-10.0, -10.0]  # −20 W in the walk
    assert result.target_w == 0.0  # the SDK: −30 W
    assert result.reasons == (Reason.BELOW_MINIMUM,)
    assert all(Reason.BELOW_MINIMUM in g.reasons for g in result.grants)
    assert result.headroom(1).inclusion_lower_w == -190.0
    headroom = result.headroom(0)
    assert (headroom.inclusion_lower_w, headroom.inclusion_upper_w) == (0.0, 5.0)
    assert (headroom.exclusion_lower_w, headroom.exclusion_upper_w) == (-30.0, 0.0)


# --- directed cases -----------------------------------------------------------------------


def test_override_the_highest_power_sets_the_target_the_rest_narrow() -> None:
    result = merge(
        HUNDRED_KW,
        [
            Bid(program="limiter", priority=5, sequence=0, lower_w=-10 * KW, upper_w=60 * KW),
            Bid(program="a", priority=3, sequence=1, power_w=80 * KW, upper_w=70 * KW),
            Bid(program="b", priority=2, sequence=2, power_w=-5 * KW),
        ],
        Mode.OVERRIDE,
    )
    assert result.target_w == 60 * KW
    _, a, b = result.grants
    assert a.granted_w == 60 * KW
    assert a.reasons == (Reason.CLAMPED,)
    assert b.granted_w == 0.0
    assert b.reasons == (Reason.OVERRIDDEN,)
    assert b.window == Window(lower_w=-10 * KW, upper_w=60 * KW)
    assert b.limited_by == (Limiter(program="limiter", priority=5),)


def test_bounds_outside_the_window_take_its_nearest_edge() -> None:
    result = merge(
        HUNDRED_KW,
        [
            Bid(program="a", priority=2, sequence=0, lower_w=10 * KW, upper_w=20 * KW),
            Bid(program="b", priority=1, sequence=1, power_w=50 * KW, lower_w=30 * KW),
        ],
    )
    b = result.grants[1]
    assert b.bounds == Window(lower_w=20 * KW, upper_w=20 * KW)
    assert b.granted_w == 20 * KW
    assert Reason.BOUNDS_OUTSIDE_WINDOW in b.reasons


def test_a_forced_grant_is_counted_and_explained() -> None:
    """A higher limiter's bounds exclude 0: the lower bid gets the window's nearest edge.

    That is past what it asked and past its limits (step 1's rule), and the reasons say so.
    """
    result = merge(
        HUNDRED_KW,
        [
            Bid(program="floor", priority=2, sequence=0, lower_w=50 * KW),
            Bid(program="small", priority=1, sequence=1, power_w=10 * KW, max_charge_w=20 * KW),
        ],
    )
    small = result.grants[1]
    assert small.granted_w == 50 * KW
    assert result.target_w == 50 * KW
    assert Reason.BOUNDS_OUTSIDE_WINDOW in small.reasons
    assert small.limited_by == (Limiter(program="floor", priority=2),)


def test_limits_bind_and_bounds_outside_them_are_clamped_into_them() -> None:
    capped = merge(
        HUNDRED_KW,
        [Bid(program="a", priority=1, sequence=0, power_w=90 * KW, max_charge_w=30 * KW)],
    )
    assert capped.target_w == 30 * KW
    assert capped.grants[0].bounds == Window(lower_w=-100 * KW, upper_w=30 * KW)
    clamped = merge(
        HUNDRED_KW,
        [
            Bid(
                program="b",
                priority=0,
                sequence=1,
                power_w=50 * KW,
                lower_w=40 * KW,
                max_charge_w=10 * KW,
            ),
        ],
    )
    (b,) = clamped.grants
    assert b.reasons == (Reason.BOUNDS_OUTSIDE_LIMITS, Reason.CLAMPED)
    assert b.bounds == Window(lower_w=10 * KW, upper_w=10 * KW)
    assert clamped.target_w == 10 * KW


def test_equal_window_edges_grant_the_point_with_a_reason() -> None:
    closed = PowerBounds.symmetric(0.0)
    result = merge(closed, [Bid(program="a", priority=1, sequence=0, power_w=5 * KW)])
    assert result.target_w == 0.0
    assert result.grants[0].reasons == (Reason.WINDOW_CLOSED, Reason.CLAMPED)


def test_below_the_minimum_goes_to_zero_in_both_directions() -> None:
    bounds = PowerBounds.symmetric(100 * KW, minimum_w=1 * KW)
    for power in (500.0, -500.0):
        result = merge(bounds, [Bid(program="a", priority=1, sequence=0, power_w=power)])
        assert result.target_w == 0.0
        assert result.reasons == (Reason.BELOW_MINIMUM,)
    at_edge = merge(bounds, [Bid(program="a", priority=1, sequence=0, power_w=-1 * KW)])
    assert at_edge.target_w == -1 * KW
    assert at_edge.reasons == ()


@pytest.mark.parametrize(
    "bounds",
    [
        PowerBounds.unknown(),
        PowerBounds(
            inclusion_lower=-100.0,
            exclusion_lower=math.nan,
            exclusion_upper=0.0,
            inclusion_upper=100.0,
        ),
        PowerBounds.symmetric(math.inf),
    ],
)
def test_unknown_bounds_give_zero_with_a_reason(bounds: PowerBounds) -> None:
    result = merge(bounds, [Bid(program="a", priority=1, sequence=0, power_w=50.0)])
    assert result.target_w == 0.0
    assert Reason.UNKNOWN_BOUNDS in result.reasons
    assert Reason.UNKNOWN_BOUNDS in result.grants[0].reasons
    headroom = result.headroom(0)
    assert (headroom.inclusion_lower_w, headroom.inclusion_upper_w) == (0.0, 0.0)
    assert headroom.reasons == (Reason.UNKNOWN_BOUNDS,)


@pytest.mark.parametrize(
    "invalid",
    [
        {"power_w": math.nan},
        {"power_w": math.inf},
        {"lower_w": math.nan},
        {"upper_w": math.nan},
        {"lower_w": 10.0, "upper_w": -10.0},
        {"lower_w": math.inf},
        {"upper_w": -math.inf},
        {"max_charge_w": math.nan},
        {"max_discharge_w": -1.0},
    ],
)
def test_an_invalid_bid_is_left_out_with_a_reason(invalid: dict[str, Any]) -> None:
    good = Bid(program="good", priority=1, sequence=1, power_w=30.0)
    bad = attrs.evolve(Bid(program="bad", priority=2, sequence=0, power_w=10.0), **invalid)
    result = merge(HUNDRED_KW, [bad, good])
    assert result.target_w == 30.0
    assert result.grants[0].reasons == (Reason.INVALID_BID,)
    assert result.grants[0].granted_w == 0.0
    assert result.grants[1].limited_by == ()


def test_a_limiter_without_power_only_narrows() -> None:
    result = merge(
        HUNDRED_KW,
        [
            Bid(program="cap", priority=9, sequence=0, upper_w=5 * KW),
            Bid(program="a", priority=1, sequence=1, power_w=50 * KW),
        ],
    )
    assert result.grants[0].granted_w == 0.0
    assert result.target_w == 5 * KW
    assert result.headroom(1).inclusion_upper_w == 5 * KW
    assert result.headroom(9).inclusion_upper_w == 100 * KW


def test_a_sum_that_rounds_past_the_bound_is_clamped_into_it() -> None:
    """Four grants that fit in 100 W exactly, whose float sum is 100.00000000000001 W."""
    powers = [24.58481292004392, 10.094762253929234, 61.13917498214947, 80.75676977333616]
    bids = [
        Bid(program=f"p{k}", priority=10 - k, sequence=k, power_w=power)
        for k, power in enumerate(powers)
    ]
    result = merge(PowerBounds.symmetric(100.0), bids)
    rounded = 0.0
    for grant in result.grants:
        rounded += grant.granted_w
    assert rounded > 100.0  # what an unclamped walk would command
    # The shifted windows rounded too: the grants' exact sum is a few ulps past 100 W.
    assert sum(Fraction(g.granted_w) for g in result.grants) > 100
    assert result.target_w == 100.0
