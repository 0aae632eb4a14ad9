"""Request planning: errors, the bounds check, include_broken_batteries, outcome summaries."""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from distributord.core.distribution import (
    Allotment,
    Distribution,
    Pair,
    SearchBudget,
    aggregate_bounds,
    check_power,
    distribute,
    split_equally,
)
from distributord.core.fleet import Fleet
from distributord.core.model import (
    PLAUSIBLE_LIMIT,
    Error,
    OutOfBounds,
    PartialFailure,
    PowerBounds,
    Request,
    Success,
)
from distributord.core.planning import (
    Choice,
    Unused,
    as_sent,
    choose,
    plan,
    summarize,
    uncommanded,
    unknown_batteries,
)
from distributord.core.status import Status
from tests.core.distribution.spec import (
    TOLERANCE_W,
    derate_bands,
    oracle,
    quantities,
    water_filling,
)
from tests.snapshots import battery_snapshot, inverter_snapshot
from tests.strategies import (
    NEAR_BOUND_EXPONENTS,
    fleets,
    make_pair,
    near_bound_fleets,
    near_bound_requests,
    requests_for,
)


def battery(
    bid: int, soc: float = 50, cap: float = 1000, minimum: float = 0.0, capacity: float = 10_000
) -> Pair:
    return make_pair(
        bid,
        soc=soc,
        soc_lower=10,
        soc_upper=90,
        capacity=capacity,
        battery_bounds=PowerBounds.symmetric(cap, minimum),
        inverter_bounds=PowerBounds.symmetric(1e6),
    )


def request(power: float, batteries: set[int], **more: Any) -> Request:
    return Request(power_w=power, batteries=frozenset(batteries), **more)


# --- errors --------------------------------------------------------------------------------


def test_no_usable_batteries_is_an_error_naming_them() -> None:
    result = plan(request(1000, {1, 2}), [], exponent=1.0)
    assert isinstance(result, Error)
    assert result.message == "no usable batteries among [1, 2]"


def test_only_bad_telemetry_is_an_error_that_says_why() -> None:
    result = plan(request(1000, {1}), [battery(1, soc=math.nan)], exponent=1.0)
    assert isinstance(result, Error)
    assert result.message == "no usable batteries among [1] (battery 1: soc_pct is nan)"


def test_zero_total_capacity_is_an_error() -> None:
    result = plan(
        request(1000, {1, 2}), [battery(1, capacity=0), battery(2, capacity=0)], exponent=1.0
    )
    assert isinstance(result, Error)
    assert result.message == "zero total capacity among batteries [1, 2]"


def test_unknown_batteries_are_named_with_the_known_ones() -> None:
    error = unknown_batteries(request(1, {1, 7, 9}), [1, 2, 3])
    assert error is not None
    assert error.message == "unknown batteries [7, 9]; known batteries: [1, 2, 3]"
    assert unknown_batteries(request(1, {1, 2}), [1, 2, 3]) is None


def test_a_thousand_known_batteries_are_written_as_runs() -> None:
    # Issue 10, item 8: the error used to list all 1,000 known ids.
    known = [*range(1001, 1500), *range(1501, 2002)]
    error = unknown_batteries(request(1, {9999}), known)
    assert error is not None
    assert error.message == (
        "unknown batteries [9999]; known batteries: [1000 ids: 1001-1499, 1501-2001]"
    )


def test_a_battery_left_out_of_the_topology_is_named_with_why_not_called_unknown() -> None:
    left_out = {5: "no inverter is connected to it"}
    error = unknown_batteries(request(1, {1, 5}), [1, 2], left_out)
    assert error is not None
    assert error.message == (
        "battery 5 is not managed: no inverter is connected to it; known batteries: [1, 2]"
    )
    both = unknown_batteries(request(1, {5, 8}), [1, 2], left_out)
    assert both is not None
    assert both.message.startswith("unknown batteries [8]; battery 5 is not managed: ")


# --- the bounds check ----------------------------------------------------------------------


def test_aggregate_bounds_report_the_smallest_achievable_magnitude() -> None:
    # The reference design sums the minimums (200 W) and refuses 150 W that one pair can take.
    pairs = [battery(1, minimum=100), battery(2, minimum=100)]
    bounds = aggregate_bounds(pairs)
    assert (
        bounds.inclusion_lower,
        bounds.exclusion_lower,
        bounds.exclusion_upper,
        bounds.inclusion_upper,
    ) == (
        -2000,
        -100,
        100,
        2000,
    )
    result = plan(request(150, {1, 2}, adjust_power=False), pairs, exponent=1.0)
    assert isinstance(result, Distribution)
    assert result.remaining_w == 0.0


@given(fleets(max_size=30), derate_bands)
def test_aggregate_bounds_count_only_the_pairs_that_can_run_each_way(
    fleet: list[Pair], band: float
) -> None:
    """Per direction, over w > 0, u > 0, m <= u: Σu, and the smallest m (0 if none can run).

    The caps are derated by ``band`` (exactly in the spec's reading, rounded toward zero in the
    split's: each sum is the float sum of the largest floats at or below the exact caps).
    """
    expected = []
    for charging in (False, True):
        runnable = [q for q in (quantities(p, charging, band) for p in fleet) if q.candidate]
        expected.append(
            (
                math.fsum(_toward_zero(q.cap) for q in runnable),
                min((q.minimum for q in runnable), default=0.0),
            )
        )
    (discharge_caps, discharge_min), (charge_caps, charge_min) = expected
    bounds = aggregate_bounds(fleet, derate_band_pct=band)
    assert bounds.inclusion_upper == charge_caps
    assert bounds.exclusion_upper == charge_min
    assert bounds.inclusion_lower == -discharge_caps
    assert bounds.exclusion_lower == -discharge_min


def _toward_zero(value: float | Fraction) -> float:
    """The largest float at or below a non-negative ``value``."""
    rounded = float(value)
    return math.nextafter(rounded, 0.0) if Fraction(rounded) > value else rounded


def test_aggregate_bounds_include_derating() -> None:
    # Band 10: SoC 85 % of [10, 90] has 5 points of room to charge, SoC 15 % 5 to discharge;
    # each may take half its 1000 W cap that way.
    pairs = [battery(1, soc=85), battery(2, soc=15)]
    bounds = aggregate_bounds(pairs, derate_band_pct=10)
    assert (bounds.inclusion_lower, bounds.inclusion_upper) == (-1500.0, 1500.0)
    assert aggregate_bounds(pairs).inclusion_upper == 2000.0
    refused = plan(
        request(2000, {1, 2}, adjust_power=False), pairs, exponent=1.0, derate_band_pct=10
    )
    assert isinstance(refused, OutOfBounds)
    assert refused.bounds == bounds
    trimmed = plan(request(2000, {1, 2}), pairs, exponent=1.0, derate_band_pct=10)
    assert isinstance(trimmed, Distribution)
    assert trimmed.setpoints == {1: 500.0, 2: 1000.0}
    assert trimmed.remaining_w == 500.0


def test_a_derating_band_the_distribution_refuses_is_an_error_result() -> None:
    result = plan(request(500, {1}), [battery(1)], exponent=1.0, derate_band_pct=-1.0)
    assert isinstance(result, Error)
    assert result.message == "cannot distribute: derate_band_pct: must be >= 0, got -1.0"


def test_a_pair_counts_only_in_the_direction_it_can_run() -> None:
    charge_only_minimum_above_cap = make_pair(
        5,
        soc=50,
        soc_lower=10,
        soc_upper=90,
        capacity=10_000,
        # Charging: minimum 600 W above the 500 W cap; discharging: [100, 700] W.
        battery_bounds=PowerBounds(
            inclusion_lower=-700, exclusion_lower=-100, exclusion_upper=600, inclusion_upper=600
        ),
        inverter_bounds=PowerBounds(
            inclusion_lower=-1000, exclusion_lower=-0.0, exclusion_upper=0.0, inclusion_upper=500
        ),
    )
    empty = battery(6, soc=10, cap=2000, minimum=50)  # at its lower bound: charge only
    bounds = aggregate_bounds([charge_only_minimum_above_cap, empty])
    assert (bounds.inclusion_upper, bounds.exclusion_upper) == (2000, 50)
    assert (bounds.inclusion_lower, bounds.exclusion_lower) == (-700, -100)
    assert aggregate_bounds([empty]).exclusion_lower == 0.0  # no pair can discharge


def test_pairs_that_cannot_take_power_do_not_count_in_the_bounds() -> None:
    pairs = [battery(1, soc=90, cap=5000, minimum=10), battery(2, cap=1000, minimum=300)]
    bounds = aggregate_bounds(pairs)
    assert bounds.inclusion_upper == 1000  # the full battery cannot charge
    assert bounds.exclusion_upper == 300
    assert bounds.inclusion_lower == -6000
    assert bounds.exclusion_lower == -10


@pytest.mark.parametrize(
    ("power", "adjust", "accepted"),
    [
        (0, False, True),
        (0, True, True),
        (50, True, False),  # strictly inside the exclusion zone
        (-50, True, False),
        (100, True, True),
        (5000, True, True),  # beyond the inclusion bound: trimmed
        (5000, False, False),
        (2000, False, True),
        (-2000, False, True),
        (-2001, False, False),
        (99.9, False, False),
    ],
)
def test_check_power(power: float, adjust: bool, accepted: bool) -> None:
    bounds = PowerBounds.symmetric(2000, 100)
    assert check_power(power, bounds, adjust_power=adjust) is accepted


def test_out_of_bounds_carries_the_aggregate_bounds() -> None:
    pairs = [battery(1, minimum=100), battery(2, minimum=100)]
    result = plan(request(50, {1, 2}), pairs, exponent=1.0)
    assert isinstance(result, OutOfBounds)
    assert result.bounds == aggregate_bounds(pairs)


def test_the_search_budget_reaches_the_distribution() -> None:
    # 40 fixed-power pairs of odd sizes and a half (not whole watts: only a search can meet
    # the request), and a clock that jumps 1 ms per reading ends a 2 ms budget at once.
    pairs = [battery(k, cap=1001.5 + 2 * k, minimum=1001.5 + 2 * k) for k in range(40)]
    readings: list[float] = []

    def clock() -> float:
        readings.append(len(readings) * 0.001)
        return readings[-1]

    budget = SearchBudget(clock=clock, seconds=0.002)
    result = plan(request(4034, set(range(40))), pairs, exponent=1.0, search_budget=budget)
    assert isinstance(result, Distribution)
    assert readings  # the clock given was the one the search read
    assert Allotment.SEARCH_BUDGET_ENDED in result.reasons.values()
    assert 0 < math.fsum(result.setpoints.values()) < 4034


def test_adjusted_power_is_trimmed_and_the_rest_reported() -> None:
    result = plan(request(-5000, {1, 2}), [battery(1), battery(2)], exponent=1.0)
    assert isinstance(result, Distribution)
    assert result.setpoints == {1: -1000.0, 2: -1000.0}
    assert result.remaining_w == -3000.0


@given(fleets(max_size=60))
def test_the_aggregate_inclusion_bound_is_always_placed_exactly(fleet: list[Pair]) -> None:
    bounds = aggregate_bounds(fleet)
    for limit in (bounds.inclusion_upper, bounds.inclusion_lower):
        if abs(limit) > 1e-9:
            result = distribute(limit, fleet)
            assert abs(result.placed_w - limit) <= 1e-6 * len(fleet)
            assert result.remaining_w == 0.0


@given(fleets(max_size=60))
def test_the_aggregate_exclusion_bound_is_reachable(fleet: list[Pair]) -> None:
    bounds = aggregate_bounds(fleet)
    for edge in (bounds.exclusion_upper, bounds.exclusion_lower):
        if abs(edge) > 1e-9:
            assert distribute(edge, fleet).remaining_w == 0.0


@given(st.data(), fleets(max_size=60), st.booleans())
def test_adjustment_only_moves_power_towards_zero(
    data: st.DataObject, fleet: list[Pair], adjust: bool
) -> None:
    power = data.draw(requests_for(fleet))
    ids = {p.battery_id for p in fleet}
    result = plan(request(power, ids, adjust_power=adjust), fleet, exponent=1.0)
    if isinstance(result, Distribution):
        placed = result.placed_w
        assert abs(placed) <= abs(power) + 1e-6 * len(fleet)
        assert placed == 0 or math.copysign(1, placed) == math.copysign(1, power)
        if not adjust:
            assert check_power(power, aggregate_bounds(fleet), adjust_power=False)


# --- include_broken_batteries --------------------------------------------------------------


def test_what_the_usable_pairs_leave_is_shared_equally_by_the_broken() -> None:
    broken = {3: [PowerBounds.symmetric(400)], 4: []}
    result = plan(
        request(2600, {1, 3, 4}, include_broken_batteries=True),
        [battery(1)],
        exponent=1.0,
        broken=broken,
    )
    assert isinstance(result, Distribution)
    # Battery 1 takes 1000; 1600 are left: 400 to battery 3 (its bound), 1200 to battery 4.
    assert result.setpoints == {1: 1000.0, 3: 400.0, 4: 1200.0}
    assert result.reasons == {1: Allotment.CAPPED, 3: Allotment.CAPPED, 4: Allotment.EQUAL_SHARE}
    assert result.remaining_w == 0.0


def test_with_nothing_usable_all_of_it_is_shared_equally() -> None:
    result = plan(
        request(-900, {3, 4, 5}, include_broken_batteries=True),
        [],
        exponent=1.0,
        broken={3: [], 4: [], 5: []},
    )
    assert isinstance(result, Distribution)
    assert result.setpoints == {3: -300.0, 4: -300.0, 5: -300.0}


def test_equal_shares_respect_last_known_exclusion_bounds() -> None:
    shared = split_equally(
        300, {1: [PowerBounds.symmetric(1000, 200)], 2: [PowerBounds.symmetric(1000, 200)]}
    )
    assert shared.setpoints == {1: 0.0, 2: 300.0}
    assert shared.remaining_w == 0.0


def test_equal_shares_use_the_tighter_of_battery_and_inverter_bounds() -> None:
    shared = split_equally(
        -3000, {1: [PowerBounds.symmetric(5000), PowerBounds.symmetric(800)], 2: []}
    )
    assert shared.setpoints == {1: -800.0, 2: -2200.0}


def test_equal_split_of_zero_is_zero() -> None:
    shared = split_equally(0.0, {1: []})
    assert shared.setpoints == {1: 0.0}
    assert shared.remaining_w == 0.0


def test_an_equal_split_of_a_tiny_power_leaves_it_all_remaining() -> None:
    shared = split_equally(-1e-10, {1: []})
    assert shared.setpoints == {1: 0.0}
    assert shared.remaining_w == -1e-10


def test_the_broken_share_never_takes_the_total_past_the_request() -> None:
    # Before: 1 - 0.1 rounds up to 0.9 (0.1 is 0.1000000000000000055...), the broken battery
    # took all of that 0.9, and the two setpoints added up to 1.0000000000000000278 W.
    for power in (1.0, -1.0):
        result = plan(
            request(power, {1, 2}, include_broken_batteries=True),
            [battery(1, cap=0.1)],
            exponent=1.0,
            broken={2: []},
        )
        assert isinstance(result, Distribution)
        placed = sum(map(Fraction, result.setpoints.values()), Fraction(0))
        assert abs(placed) <= abs(Fraction(power))
        assert result.setpoints[2] == pytest.approx(0.9 * power)
        assert abs(placed + Fraction(result.remaining_w) - Fraction(power)) <= 1e-9


def _broken_side(cap: float | None) -> list[PowerBounds]:
    return [] if cap is None else [PowerBounds.symmetric(cap)]


_BROKEN_CAPS = st.none() | st.sampled_from([0.1, 1 / 3, 5e-324, 1e-9]) | st.floats(1e-3, 1e5)


@st.composite
def broken_batteries(draw: st.DrawFn) -> dict[int, list[PowerBounds]]:
    """Up to four broken batteries, each with last known bounds on none, one or both sides."""
    count = draw(st.integers(1, 4))
    return {
        2000 + k: _broken_side(draw(_BROKEN_CAPS)) + _broken_side(draw(_BROKEN_CAPS))
        for k in range(count)
    }


def _broken_cap(sides: list[PowerBounds]) -> Fraction:
    """A broken battery's cap in either direction: the tighter known side, else the limit."""
    return Fraction(min((b.inclusion_upper for b in sides), default=PLAUSIBLE_LIMIT))


@given(st.data(), near_bound_fleets(max_size=8), broken_batteries(), NEAR_BOUND_EXPONENTS)
def test_include_broken_agrees_with_the_exact_oracle_and_never_exceeds_the_request(
    data: st.DataObject,
    fleet: list[Pair],
    broken: dict[int, list[PowerBounds]],
    exponent: int,
) -> None:
    """The usable pairs split as the oracle says; the broken share exactly what they leave."""
    power = data.draw(near_bound_requests(fleet))
    ids = {p.battery_id for p in fleet} | set(broken)
    result = plan(
        request(power, ids, include_broken_batteries=True),
        fleet,
        exponent=float(exponent),
        broken=broken,
    )
    assert isinstance(result, Distribution)
    setpoints = {b: Fraction(x) for b, x in result.setpoints.items()}
    total = sum(setpoints.values(), Fraction(0))
    asked = Fraction(power)
    assert abs(total) <= abs(asked), f"over by {float(abs(total) - abs(asked))} W"
    assert abs(total + Fraction(result.remaining_w) - asked) <= 1e-9 * abs(asked)
    assert result.remaining_w == 0.0 or (result.remaining_w > 0) == (power > 0)
    if abs(power) <= 1e-9:
        assert set(setpoints.values()) == {0}
        assert result.remaining_w == power
        return
    for bid, x in oracle(power, fleet, exponent).items():
        assert abs(setpoints[bid] - x) <= TOLERANCE_W, (bid, float(setpoints[bid]), float(x))
    left = asked - sum((setpoints[p.battery_id] for p in fleet), Fraction(0))
    ids_broken = sorted(broken)
    shares = water_filling(
        abs(left), [Fraction(1)] * len(ids_broken), [_broken_cap(broken[b]) for b in ids_broken]
    )
    sign = 1 if power > 0 else -1
    for bid, share in zip(ids_broken, shares, strict=True):
        assert abs(setpoints[bid] - sign * share) <= TOLERANCE_W, (bid, float(share))


def test_a_tiny_request_is_all_remaining_with_broken_batteries_too() -> None:
    for broken in ({}, {2: [PowerBounds.symmetric(400)]}):
        result = plan(
            request(-5e-10, {1, *broken}, include_broken_batteries=bool(broken)),
            [battery(1)],
            exponent=1.0,
            broken=broken,
        )
        assert isinstance(result, Distribution)
        assert set(result.setpoints.values()) == {0.0}
        assert result.remaining_w == -5e-10


# --- choosing the batteries ----------------------------------------------------------------

W, U, N = Status.WORKING, Status.UNCERTAIN, Status.NOT_WORKING
TTL_S = 100.0


def fed_fleet(*batteries: int, at: float = 0.0, **battery_overrides: Any) -> Fleet:
    """A fleet of batteries 1..4 (inverters 11..14); ``batteries`` have reported at ``at``."""
    fleet = Fleet({b: 10 + b for b in (1, 2, 3, 4)})
    for b in batteries:
        fleet.update(battery_snapshot(component_id=b, received_at=at, **battery_overrides))
        fleet.update(inverter_snapshot(component_id=10 + b, received_at=at))
    return fleet


def chosen_ids(choice: Choice) -> list[int]:
    return [p.battery_id for p in choice.pairs]


def choice_for(
    fleet: Fleet,
    statuses: dict[int, Status],
    *,
    include_broken: bool = False,
    now: float = 0.0,
    batteries: set[int] | None = None,
) -> Choice:
    wanted = set(statuses) if batteries is None else batteries
    return choose(
        request(1000, wanted, include_broken_batteries=include_broken),
        statuses,
        fleet,
        now=now,
        cache_ttl_s=TTL_S,
    )


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({1: W, 2: U, 3: N}, [1]),
        ({1: W, 2: W, 3: U}, [1, 2]),
        ({1: U, 2: U, 3: N}, [1, 2]),  # none working: the uncertain ones
        ({1: N, 2: N, 3: N}, []),
    ],
)
def test_the_working_batteries_are_chosen_else_the_uncertain(
    statuses: dict[int, Status], expected: list[int]
) -> None:
    choice = choice_for(fed_fleet(1, 2, 3), statuses)
    assert chosen_ids(choice) == expected
    assert choice.broken == {}


def test_only_the_requested_batteries_are_chosen() -> None:
    statuses = {1: W, 2: W, 3: U}
    choice = choice_for(fed_fleet(1, 2, 3), statuses, batteries={2, 3})
    assert chosen_ids(choice) == [2]


def test_a_chosen_battery_without_a_complete_pair_is_skipped() -> None:
    fleet = fed_fleet(2)
    fleet.update(battery_snapshot(component_id=1))  # its inverter has not reported yet
    choice = choice_for(fleet, {1: W, 2: W})
    assert chosen_ids(choice) == [2]
    assert choice.pairs == (fleet.pair(2),)


def test_the_others_are_left_out_without_include_broken_batteries() -> None:
    choice = choice_for(fed_fleet(1, 2, 3), {1: W, 2: N, 3: U}, now=1.0)
    assert chosen_ids(choice) == [1]
    assert choice.broken == {}


def test_include_broken_uses_a_fresh_cache() -> None:
    fleet = fed_fleet(1, 2, 3, at=50.0)
    choice = choice_for(fleet, {1: N, 2: W, 3: N}, include_broken=True, now=50.0 + TTL_S)
    # The selected pairs first, then the cached ones, each in id order.
    assert chosen_ids(choice) == [2, 1, 3]
    assert choice.broken == {}


def test_include_broken_with_a_stale_cache_shares_on_the_last_known_bounds() -> None:
    fleet = fed_fleet(1, 2, at=50.0)
    fleet.update(
        battery_snapshot(component_id=3, received_at=50.0, bounds=PowerBounds.symmetric(400))
    )
    fleet.update(
        inverter_snapshot(component_id=13, received_at=50.0, bounds=PowerBounds.symmetric(300))
    )
    choice = choice_for(fleet, {1: W, 2: W, 3: N}, include_broken=True, now=50.1 + TTL_S)
    assert chosen_ids(choice) == [1, 2]
    assert choice.broken == {3: (PowerBounds.symmetric(400), PowerBounds.symmetric(300))}


def test_include_broken_without_a_cache() -> None:
    # Battery 3 only ever sent an invalid snapshot: nothing valid is cached, but its bounds
    # (and its inverter's) are known. Battery 4 never reported at all.
    fleet = fed_fleet(1)
    fleet.update(
        battery_snapshot(component_id=3, soc_pct=math.nan, bounds=PowerBounds.symmetric(700))
    )
    fleet.update(inverter_snapshot(component_id=13, bounds=PowerBounds.symmetric(900)))
    choice = choice_for(fleet, {1: W, 3: N, 4: N}, include_broken=True)
    assert chosen_ids(choice) == [1]
    assert choice.broken == {
        3: (PowerBounds.symmetric(700), PowerBounds.symmetric(900)),
        4: (),
    }


def test_a_choice_with_broken_batteries_is_planned_as_an_equal_share() -> None:
    fleet = fed_fleet(at=0.0)
    choice = choose(
        request(-900, {1, 2, 3}, include_broken_batteries=True),
        {1: N, 2: N, 3: N},
        fleet,
        now=0.0,
        cache_ttl_s=TTL_S,
    )
    assert choice.pairs == ()
    result = plan(
        request(-900, {1, 2, 3}, include_broken_batteries=True),
        choice.pairs,
        exponent=1.0,
        broken=choice.broken,
    )
    assert isinstance(result, Distribution)
    assert result.setpoints == {1: -300.0, 2: -300.0, 3: -300.0}


# --- summaries -----------------------------------------------------------------------------


def distribution(setpoints: dict[int, float], remaining: float = 0.0) -> Distribution:
    return Distribution(
        power_w=math.fsum(setpoints.values()) + remaining,
        setpoints=setpoints,
        reasons=dict.fromkeys(setpoints, Allotment.PROPORTIONAL),
        remaining_w=remaining,
    )


def test_summary_of_all_succeeded_is_success() -> None:
    r = request(-1500, {1, 2})
    result = summarize(r, distribution({1: -1000.0, 2: -500.0}), failed=())
    assert isinstance(result, Success)
    assert result.succeeded_power_w == -1500.0
    assert result.succeeded_batteries == {1, 2}
    assert result.excess_power_w == 0.0
    assert result.reasons == {1: "proportional", 2: "proportional"}


def test_failed_power_is_not_counted_as_succeeded() -> None:
    r = request(-2000, {1, 2, 3})
    result = summarize(
        r, distribution({1: -1000.0, 2: -500.0, 3: 0.0}, remaining=-500.0), failed={2}
    )
    assert isinstance(result, PartialFailure)
    assert result.succeeded_power_w == -1000.0
    assert result.succeeded_batteries == {1, 3}
    assert result.failed_power_w == -500.0
    assert result.failed_batteries == {2}
    assert result.excess_power_w == -500.0


@given(
    power=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    shares=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=12),
)
@example(power=15.0, shares=[0.5796087367150525, 1.1209091459024635e-199])  # two roundings lost
def test_as_sent_never_grows_a_setpoint_and_reports_what_it_loses(
    power: float, shares: list[float]
) -> None:
    # The float32 wire (found by the end-to-end harness): rounded to nearest, commands could
    # add up to more than the request. Exact oracle: Fractions.
    total = sum(shares) or 1.0
    setpoints = {1001 + k: power * share / total for k, share in enumerate(shares)}
    remaining = power - math.fsum(setpoints.values())
    planned = Distribution(power_w=power, setpoints=setpoints, reasons={}, remaining_w=remaining)
    sent = as_sent(planned)
    assert set(sent.setpoints) == set(setpoints)
    for battery, value in sent.setpoints.items():
        assert struct.unpack("<f", struct.pack("<f", value))[0] == value
        assert Fraction(abs(value)) <= Fraction(abs(setpoints[battery]))
    planned_sum = sum((Fraction(v) for v in setpoints.values()), Fraction(0))
    placed = sum((Fraction(v) for v in sent.setpoints.values()), Fraction(0))
    assert abs(placed) <= abs(planned_sum)  # never more than planned
    # What was lost is reported: the new remainder is the old one plus the loss (one rounding).
    expected = Fraction(remaining) + (planned_sum - placed)
    assert abs(Fraction(sent.remaining_w) - expected) <= Fraction(math.ulp(sent.remaining_w))


def test_three_thirds_of_a_kilowatt_are_sent_as_no_more_than_a_kilowatt() -> None:
    third = 1000.0 / 3
    planned = Distribution(
        power_w=1000.0, setpoints={1: third, 2: third, 3: third}, reasons={}, remaining_w=0.0
    )
    sent = as_sent(planned)
    assert sum((Fraction(v) for v in sent.setpoints.values()), Fraction(0)) <= 1000
    assert 0 < sent.remaining_w < 1e-3


# --- power the daemon cannot command ------------------------------------------------------


def measured_fleet(powers: dict[int, tuple[float, float]]) -> Fleet:
    """Batteries 1..4 reported at 0; ``powers``: battery → (its inverter's power, received at)."""
    fleet = fed_fleet(1, 2, 3, 4)
    for b, (power, at) in powers.items():
        fleet.update(inverter_snapshot(component_id=10 + b, received_at=at, active_power_w=power))
    return fleet


def test_the_unused_say_why_and_their_fresh_power_is_taken_off() -> None:
    statuses = {1: W, 2: U, 3: N, 4: N}
    fleet = measured_fleet({2: (400.0, 5.0), 3: (250.0, 0.0), 4: (math.nan, 5.0)})
    wanted = request(1000, {1, 2, 3, 4})
    choice = choose(wanted, statuses, fleet, now=5.0, cache_ttl_s=TTL_S)
    result = uncommanded(
        wanted,
        choice,
        statuses,
        fleet,
        status_reasons={2: {"blocked_after_failure"}, 3: {"stale_inverter_data"}},
        now=5.0,
        max_age_s=5.0,
    )
    assert result.unused == {
        2: Unused(why="uncertain (blocked_after_failure)", measured_w=400.0),
        3: Unused(why="not_working (stale_inverter_data)", measured_w=None),  # 5 s old: stale
        4: Unused(why="not_working", measured_w=None),  # NaN is no measurement
    }
    assert result.compensation.target_w == 600.0
    assert result.reasons() == {
        2: "uncertain (blocked_after_failure); measured 400.0 W, counted against the request",
        3: "not_working (stale_inverter_data); no fresh measured power: not compensated",
        4: "not_working; no fresh measured power: not compensated",
    }
    planned = plan(wanted, choice.pairs, exponent=1.0, split_w=result.compensation.target_w)
    assert isinstance(planned, Distribution)
    assert planned.setpoints == {1: 600.0}
    summary = summarize(wanted, planned, failed=[], uncommanded=result)
    assert summary.succeeded_power_w == 600.0
    assert summary.unused_power_w == {2: 400.0}
    assert (summary.compensated_power_w, summary.uncompensated_power_w) == (400.0, 0.0)
    assert summary.reasons.keys() == {1, 2, 3, 4}


def test_a_hybrid_inverters_measured_power_is_never_compensated() -> None:
    # Its AC power includes its PV's: -1500 W measured is the panels', not the battery's.
    fleet = Fleet({b: 10 + b for b in (1, 2, 3, 4)}, hybrid={12})
    for b in (1, 2):
        fleet.update(battery_snapshot(component_id=b, received_at=0.0))
    fleet.update(inverter_snapshot(component_id=11, received_at=0.0))
    fleet.update(inverter_snapshot(component_id=12, received_at=0.0, active_power_w=-1500.0))
    assert fleet.measured_power_w(2, now=0.0, max_age_s=1.0) is None
    statuses = {1: W, 2: N}
    wanted = request(-1000, {1, 2})
    choice = choose(wanted, statuses, fleet, now=0.0, cache_ttl_s=TTL_S)
    result = uncommanded(wanted, choice, statuses, fleet, now=0.0, max_age_s=1.0)
    assert result.unused == {2: Unused(why="not_working", measured_w=None, hybrid=True)}
    assert result.compensation.target_w == -1000.0
    assert result.reasons() == {
        2: "not_working; a hybrid inverter's measured power includes its PV: not compensated"
    }


def test_unusable_telemetry_is_a_reason_and_its_inverter_still_counts() -> None:
    statuses = {1: W, 2: W}
    fleet = measured_fleet({2: (-300.0, 0.0)})
    fleet.update(battery_snapshot(component_id=2, soc_pct=math.nan))
    wanted = request(-1000, {1, 2})
    choice = choose(wanted, statuses, fleet, now=0.0, cache_ttl_s=TTL_S)
    result = uncommanded(wanted, choice, statuses, fleet, now=0.0, max_age_s=1.0)
    assert result.unused[2] == Unused(
        why="unusable telemetry (battery 2: soc_pct is nan)", measured_w=-300.0
    )
    planned = plan(wanted, choice.pairs, exponent=1.0, split_w=result.compensation.target_w)
    assert isinstance(planned, Distribution)
    assert planned.setpoints == {1: -700.0}
    # Without the unused batteries' account the distribution's exclusion is a reason too.
    assert summarize(wanted, planned, failed=[]).reasons[2] == (
        "unusable telemetry (battery 2: soc_pct is nan)"
    )


def test_a_compensation_never_turns_an_accepted_request_into_a_refusal() -> None:
    # 150 W asked of a pair with a 100 W minimum; 100 W measured elsewhere leaves 50 W, inside
    # the exclusion zone: the request (checked as asked) is accepted, and 50 W cannot be placed.
    planned = plan(request(150, {1, 2}), [battery(1, minimum=100.0)], exponent=1.0, split_w=50.0)
    assert isinstance(planned, Distribution)
    assert planned.setpoints == {1: 0.0}
    assert planned.remaining_w == 50.0


def test_off_nothing_is_taken_off_and_the_reason_says_so() -> None:
    statuses = {1: W, 2: U}
    fleet = measured_fleet({2: (400.0, 0.0)})
    wanted = request(1000, {1, 2})
    choice = choose(wanted, statuses, fleet, now=0.0, cache_ttl_s=TTL_S)
    result = uncommanded(wanted, choice, statuses, fleet, now=0.0, max_age_s=1.0, enabled=False)
    assert result.compensation.target_w == 1000.0
    assert result.reasons() == {
        2: "uncertain; measured 400.0 W, not counted (distribution.compensate_unused is off)"
    }
