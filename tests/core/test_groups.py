"""N:M groups: merged snapshots and the division of a group's share, against exact oracles."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from distributord.core.groups import GroupMerger, divide, merged_battery, merged_inverter
from distributord.core.model import BatterySnapshot, PowerBounds, StateCode
from distributord.core.status import battery_problems, inverter_problems
from distributord.core.topology import Group
from tests.snapshots import battery_snapshot, inverter_snapshot

GROUP = Group((1001, 1002), (2001, 2002))


def bounds(low: float, exclusion_low: float, exclusion_up: float, up: float) -> PowerBounds:
    return PowerBounds(
        inclusion_lower=low,
        exclusion_lower=exclusion_low,
        exclusion_upper=exclusion_up,
        inclusion_upper=up,
    )


# --- the battery side ----------------------------------------------------------------------


def test_a_groups_battery_is_capacity_weighted_and_summed() -> None:
    a = battery_snapshot(component_id=1001, soc_pct=20.0, capacity_wh=10_000.0, sampled_at=5.0)
    b = battery_snapshot(
        component_id=1002,
        soc_pct=80.0,
        soc_upper_pct=100.0,
        capacity_wh=30_000.0,
        bounds=bounds(-3000.0, -200.0, 100.0, 2000.0),
        received_at=3.0,
        power_w=-100.0,
    )
    merged = merged_battery(1001, [a, b])
    assert merged.component_id == 1001
    assert merged.capacity_wh == 40_000.0
    assert merged.soc_pct == (20.0 * 1 + 80.0 * 3) / 4  # 65 %
    assert merged.soc_upper_pct == (90.0 + 100.0 * 3) / 4
    assert merged.soc_lower_pct == 10.0
    assert merged.bounds == bounds(-8000.0, -200.0, 100.0, 7000.0)
    assert math.isnan(merged.power_w)  # one battery gave no power
    assert (merged.sampled_at, merged.received_at) == (5.0, 0.0)  # newest sample, oldest receipt


def test_one_battery_in_error_puts_the_group_in_error_and_is_named() -> None:
    ok = battery_snapshot(component_id=1001)
    broken = battery_snapshot(
        component_id=1002, states=frozenset({StateCode.ERROR}), errors=frozenset({"overheat"})
    )
    merged = merged_battery(1001, [ok, broken])
    assert battery_problems(merged)  # the group is not usable
    assert merged.errors == frozenset({"battery 1002: overheat"})
    assert not battery_problems(merged_battery(1001, [ok, battery_snapshot(component_id=1002)]))


# --- the inverter side ---------------------------------------------------------------------


def test_a_groups_inverter_sums_the_usable_ones_with_the_smallest_minimum() -> None:
    a = inverter_snapshot(component_id=2001, bounds=bounds(-1000.0, -100.0, 300.0, 1000.0))
    b = inverter_snapshot(
        component_id=2002, bounds=bounds(-2000.0, -300.0, 100.0, 500.0), active_power_w=10.0
    )
    merged = merged_inverter(2001, [a, b], max_age_s=10.0)
    assert merged.component_id == 2001
    assert merged.bounds == bounds(-3000.0, -100.0, 100.0, 1500.0)
    assert math.isnan(merged.active_power_w)  # a gave no measurement


def test_an_inverter_in_error_or_stale_is_left_out_of_the_group() -> None:
    a = inverter_snapshot(component_id=2001, received_at=100.0)
    broken = inverter_snapshot(component_id=2002, states=frozenset({StateCode.ERROR}))
    assert merged_inverter(2001, [a, broken], max_age_s=1000.0).bounds == a.bounds
    stale = inverter_snapshot(component_id=2002, received_at=50.0)
    assert merged_inverter(2001, [a, stale], max_age_s=10.0).bounds == a.bounds
    both = merged_inverter(2001, [a, stale], max_age_s=60.0)
    assert both.bounds.inclusion_upper == 2 * a.bounds.inclusion_upper
    # None usable: all of them, so the status machine says why.
    only_broken = merged_inverter(2002, [broken], max_age_s=10.0)
    assert inverter_problems(only_broken)


def test_the_merger_waits_for_every_battery_and_forwards_others() -> None:
    merger = GroupMerger({1001: GROUP}, max_age_s=lambda: 10.0)
    other = battery_snapshot(component_id=7)
    assert merger.take(other) is other
    assert merger.take(battery_snapshot(component_id=1002)) is None  # 1001 not heard yet
    merged = merger.take(battery_snapshot(component_id=1001))
    assert isinstance(merged, BatterySnapshot)
    assert merged.component_id == 1001
    assert merged.capacity_wh == 20_000.0
    first = merger.take(inverter_snapshot(component_id=2002))
    assert first is not None
    assert first.component_id == 2001  # as the lead inverter, from the one heard so far
    assert [i.component_id for i in merger.usable(GROUP)] == [2002]


# --- division ------------------------------------------------------------------------------


def test_a_share_is_divided_in_proportion_to_caps() -> None:
    division = divide(900.0, [(2001, bounds(-1000, 0, 0, 1000)), (2002, bounds(-500, 0, 0, 500))])
    assert division.setpoints == {2001: 600.0, 2002: 300.0}
    assert division.placed_w == 900.0
    assert divide(
        -300.0, [(2001, bounds(-1000, 0, 0, 1000)), (2002, bounds(-500, 0, 0, 500))]
    ).setpoints == {2001: -200.0, 2002: -100.0}


def test_shares_below_minimums_use_fewer_inverters() -> None:
    both = [(2002, bounds(-1000, -100, 100, 1000)), (2003, bounds(-1000, -100, 100, 1000))]
    division = divide(150.0, both)  # 75 W each is below 100 W: one inverter takes it all
    assert division.setpoints == {2002: 150.0, 2003: 0.0}
    assert division.placed_w == 150.0


def test_what_no_choice_takes_is_placed_below_the_share() -> None:
    # 300 W: both would be 50 + 250 (below their minimums), the big one alone is below 500 W,
    # the small one alone caps at 200 W: 200 W is the most that can be placed.
    odd = [(1, bounds(-200, -100, 100, 200)), (2, bounds(-1000, -500, 500, 1000))]
    assert divide(300.0, odd).setpoints == {1: 200.0, 2: 0.0}
    assert divide(300.0, odd).placed_w == 200.0
    assert divide(0.0, odd).setpoints == {1: 0.0, 2: 0.0}


magnitudes = st.floats(0.0, 1e7, allow_subnormal=False, width=32)
"""Bounds come from telemetry as float32s, and shares are float32s (``as_sent``)."""
shares = st.floats(-2e7, 2e7, allow_subnormal=False, width=32)


@st.composite
def inverters(draw: st.DrawFn) -> list[tuple[int, PowerBounds]]:
    count = draw(st.integers(1, 5))
    rows = []
    for index in range(count):
        cap = draw(magnitudes)
        minimum = draw(st.one_of(st.just(0.0), st.floats(0.0, cap, width=32)))
        rows.append((index + 10, bounds(-cap, -minimum, minimum, cap)))
    return draw(st.permutations(rows))


@given(inverters(), shares)
def test_a_division_is_never_over_and_within_every_bound(
    rows: list[tuple[int, PowerBounds]], share: float
) -> None:
    division = divide(share, rows)
    assert division.setpoints.keys() == {i for i, _ in rows}
    exact = sum((Fraction(v) for v in division.setpoints.values()), Fraction(0))
    assert abs(exact) <= abs(Fraction(share))  # never over, exactly
    assert Fraction(division.placed_w) == exact or math.isclose(division.placed_w, float(exact))
    for inverter, b in rows:
        value = division.setpoints[inverter]
        assert value == 0.0 or (value > 0) == (share > 0)  # the share's direction only
        assert value == 0.0 or b.exclusion_upper <= abs(value) <= b.inclusion_upper
    caps = [b.inclusion_upper for _, b in rows]
    if all(b.exclusion_upper == 0.0 for _, b in rows):
        # Without minimums it places all it can (the share, or every cap), less what rounding
        # each setpoint toward zero to a float32 takes: under one float32 ulp of each.
        expected = min(abs(Fraction(share)), sum((Fraction(c) for c in caps), Fraction(0)))
        assert expected - len(rows) * expected / 2**23 <= abs(exact) <= expected


@given(inverters(), shares, st.randoms())
def test_a_division_does_not_depend_on_the_order(
    rows: list[tuple[int, PowerBounds]], share: float, random: object
) -> None:
    shuffled = list(rows)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    assert divide(share, rows) == divide(share, shuffled)


def test_interleaved_members_each_make_a_new_group_sample() -> None:
    merger = GroupMerger({1001: GROUP}, max_age_s=lambda: 10.0)
    first = merger.take(inverter_snapshot(component_id=2001, sampled_at=10.0))
    late = merger.take(inverter_snapshot(component_id=2002, sampled_at=9.5))  # arrives later
    assert first is not None
    assert late is not None
    assert first.sampled_at == 10.0
    assert late.sampled_at == math.nextafter(10.0, math.inf)  # new for the tracker
    assert late.bounds.inclusion_upper == 10_000.0  # and it carries 2002's news
    # A member's own repeat is no news of the group.
    assert merger.take(inverter_snapshot(component_id=2002, sampled_at=9.5)) is None
    assert merger.take(battery_snapshot(component_id=1001, sampled_at=3.0)) is None
    assert merger.take(battery_snapshot(component_id=1001, sampled_at=3.0)) is None
