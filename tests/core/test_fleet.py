"""The telemetry store: latest snapshots, pairs built on demand, the cache of valid ones."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.fleet import Fleet, _valid_battery
from distributord.core.model import PLAUSIBLE_LIMIT, ValueFault, bad_battery_values
from tests.snapshots import battery_snapshot, inverter_snapshot

PAIRS = {1001: 2001, 1002: 2002}


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(PAIRS)


def test_update_returns_the_battery_whose_pair_changed(fleet: Fleet) -> None:
    assert fleet.update(battery_snapshot(component_id=1002)) == 1002
    assert fleet.update(inverter_snapshot(component_id=2001)) == 1001  # via its inverter
    assert fleet.update(battery_snapshot(component_id=9999)) is None  # not managed
    assert (
        fleet.update(inverter_snapshot(component_id=1001)) is None
    )  # a battery id, not an inverter
    assert 9999 not in fleet.batteries


def test_the_pair_is_none_until_both_sides_arrived(fleet: Fleet) -> None:
    battery, inverter = battery_snapshot(component_id=1001), inverter_snapshot(component_id=2001)
    assert fleet.pair(1001) is None
    fleet.update(battery)
    assert fleet.pair(1001) is None
    fleet.update(inverter)
    pair = fleet.pair(1001)
    assert pair is not None
    assert pair.battery is battery  # the latest snapshots, as sent
    assert pair.inverter is inverter
    assert fleet.pair(1002) is None
    assert fleet.pair(4242) is None  # not managed


def test_the_pair_is_kept_until_either_side_changes(fleet: Fleet) -> None:
    fleet.update(battery_snapshot(component_id=1001))
    fleet.update(inverter_snapshot(component_id=2001))
    first = fleet.pair(1001)
    assert fleet.pair(1001) is first  # built once
    fleet.update(battery_snapshot(component_id=1002))  # another battery's news changes nothing
    assert fleet.pair(1001) is first
    fleet.update(inverter_snapshot(component_id=2001, received_at=1.0))
    second = fleet.pair(1001)
    assert second is not first
    assert second is not None
    assert second.inverter.received_at == 1.0


def test_a_pair_with_invalid_telemetry_is_built_but_not_usable(fleet: Fleet) -> None:
    fleet.update(battery_snapshot(component_id=1001, soc_pct=math.nan))
    fleet.update(inverter_snapshot(component_id=2001))
    pair = fleet.pair(1001)
    assert pair is not None  # the distribution names it as excluded, and why
    assert pair.problem is not None
    assert "soc_pct" in pair.problem
    assert fleet.cached_pair(1001, now=0.0, ttl_s=100.0) is None  # nothing valid cached


def test_cached_pair_honours_its_time_to_live(fleet: Fleet) -> None:
    fleet.update(battery_snapshot(component_id=1001, received_at=10.0))
    assert fleet.cached_pair(1001, now=10.0, ttl_s=100.0) is None  # one side only
    fleet.update(inverter_snapshot(component_id=2001, received_at=30.0))
    # The age is the older side's: fresh up to and including ttl_s after it.
    assert fleet.cached_pair(1001, now=110.0, ttl_s=100.0) is not None
    assert fleet.cached_pair(1001, now=110.5, ttl_s=100.0) is None
    assert fleet.cached_pair(1001, now=110.5, ttl_s=101.0) is not None
    fleet.update(battery_snapshot(component_id=1001, received_at=50.0))  # a newer valid sample
    assert fleet.cached_pair(1001, now=130.0, ttl_s=100.0) is not None


def test_cached_pair_keeps_the_last_valid_battery_snapshot(fleet: Fleet) -> None:
    fleet.update(battery_snapshot(component_id=1001, received_at=0.0, soc_pct=40.0))
    fleet.update(inverter_snapshot(component_id=2001, received_at=0.0))
    fleet.update(battery_snapshot(component_id=1001, received_at=5.0, capacity_wh=math.nan))
    latest = fleet.pair(1001)
    assert latest is not None
    assert latest.problem is not None
    cached = fleet.cached_pair(1001, now=5.0, ttl_s=100.0)
    assert cached is not None
    assert cached.problem is None
    assert cached.battery.soc_pct == 40.0
    assert cached.battery.received_at == 0.0
    assert fleet.cached_pair(1001, now=100.5, ttl_s=100.0) is None  # judged by the valid one's age


def test_cached_pair_is_none_for_an_unmanaged_battery(fleet: Fleet) -> None:
    assert fleet.cached_pair(4242, now=0.0, ttl_s=math.inf) is None


VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, PLAUSIBLE_LIMIT, -PLAUSIBLE_LIMIT, 2 * PLAUSIBLE_LIMIT]),
)


@given(soc=VALUES, low=VALUES, high=VALUES, capacity=VALUES)
def test_a_valid_battery_is_one_with_no_value_that_is_not_finite(
    soc: float, low: float, high: float, capacity: float
) -> None:
    # The fleet's direct test (asked of every sample) against the shared rule it stands for.
    if low > high:
        low, high = high, low
    snapshot = battery_snapshot(
        soc_pct=soc, soc_lower_pct=low, soc_upper_pct=high, capacity_wh=capacity
    )
    assert _valid_battery(snapshot) == all(
        bad.fault is not ValueFault.NOT_FINITE for bad in bad_battery_values(snapshot)
    )
