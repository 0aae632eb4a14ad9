"""The simulator's physics in N:M groups, and the limits it enforces and records; exact numbers."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given

from distributord.sim.record import Change, LimitViolation, Outcome
from distributord.sim.scenario import (
    BatterySpec,
    Faults,
    InverterSpec,
    LimitSpec,
    Scenario,
    feeder,
    named_scenario,
    shared_dc_bus,
    two_on_one,
    two_on_three,
)
from distributord.sim.world import Accepted, Rejected, World
from tests.sim.test_world import _Step, _steps, check_eager_equals_lazy

# 3600 W into 10 kWh moves the SoC by 0.01 %/s at speed 1.
RATE_PCT_PER_S = 0.01


def world_of(scenario: Scenario) -> World:
    return World(scenario, now=0.0)


# --- power in groups ------------------------------------------------------------------------


def test_a_shared_dc_bus_takes_what_both_inverters_put_in() -> None:
    world = world_of(shared_dc_bus())  # 1001: 20 kWh, 10 kW, on 2001 and 2002
    world.command(2001, 3600.0, 60, now=0.0)
    world.command(2002, 3600.0, 60, now=0.0)
    world.advance(10.0)
    assert world.battery_power(1001) == 7200.0
    assert (world.inverter_power(2001), world.inverter_power(2002)) == (3600.0, 3600.0)
    assert world.soc(1001) == pytest.approx(50.0 + 10 * RATE_PCT_PER_S, abs=1e-12)
    assert world.site_power() == 7200.0


def test_one_inverter_through_a_shared_bus_and_the_other_against_it() -> None:
    world = world_of(shared_dc_bus())
    world.command(2001, 5000.0, 60, now=0.0)
    world.command(2002, -2000.0, 60, now=0.0)
    assert world.battery_power(1001) == 3000.0
    assert world.site_power() == 3000.0


def test_an_inverter_splits_its_power_among_its_batteries_by_capacity() -> None:
    world = world_of(two_on_one())  # 2001 on 1001 (10 kWh, SoC 40) and 1002 (20 kWh, SoC 60)
    assert world.command(2001, 5400.0, 60, now=0.0) == Accepted(lifetime_s=60, until=60.0)
    assert world.battery_power(1001) == pytest.approx(1800.0, abs=1e-9)
    assert world.battery_power(1002) == pytest.approx(3600.0, abs=1e-9)
    assert world.inverter_power(2001) == pytest.approx(5400.0, abs=1e-9)
    world.advance(50.0)
    # The same C-rate: both SoCs move alike.
    assert world.soc(1001) == pytest.approx(40.0 + 25 * RATE_PCT_PER_S, abs=1e-9)
    assert world.soc(1002) == pytest.approx(60.0 + 25 * RATE_PCT_PER_S, abs=1e-9)


def test_a_battery_takes_at_most_its_limit_and_the_rest_is_not_carried() -> None:
    scenario = Scenario(
        batteries=(
            BatterySpec(id=11, soc_pct=50.0, power_limit_w=1000.0),
            BatterySpec(id=12, soc_pct=50.0, capacity_wh=30_000.0, power_limit_w=10_000.0),
        ),
        inverters=(InverterSpec(id=21, batteries=(11, 12), power_limit_w=10_000.0),),
    )
    world = world_of(scenario)
    world.command(21, 8000.0, 60, now=0.0)  # 2000 W and 6000 W asked
    assert world.battery_power(11) == 1000.0
    assert world.battery_power(12) == 6000.0
    assert world.inverter_power(21) == 7000.0  # what they took
    assert world.applied_power(21) == 8000.0  # the shortfall: 1000 W


def test_a_full_battery_takes_nothing_and_the_group_command_is_still_accepted() -> None:
    scenario = Scenario(
        batteries=(
            BatterySpec(id=11, soc_pct=90.0),  # at its upper bound: takes no charge
            BatterySpec(id=12, soc_pct=50.0),
        ),
        inverters=(InverterSpec(id=21, batteries=(11, 12), power_limit_w=10_000.0),),
    )
    world = world_of(scenario)
    # Within what the two take together (0 + 5000 W): accepted, half of it not carried.
    assert world.command(21, 4000.0, 60, now=0.0) == Accepted(lifetime_s=60, until=60.0)
    assert (world.battery_power(11), world.battery_power(12)) == (0.0, 2000.0)
    assert world.inverter_power(21) == 2000.0
    refused = world.command(21, 5001.0, 60, now=0.0)
    assert isinstance(refused, Rejected)
    assert refused.code == "OUT_OF_RANGE"
    assert "the bounds of its batteries 11, 12 together [-10000, 5000]" in refused.details
    world.advance(30.0)
    assert world.soc(11) == 90.0
    assert world.soc(12) == pytest.approx(50.0 + 30 * 2000 / 3600 * RATE_PCT_PER_S, abs=1e-12)


def test_a_battery_reaching_its_bound_stops_there_and_its_neighbour_goes_on() -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=11, soc_pct=89.9), BatterySpec(id=12, soc_pct=50.0)),
        inverters=(InverterSpec(id=21, batteries=(11, 12), power_limit_w=10_000.0),),
    )
    world = world_of(scenario)
    world.command(21, 7200.0, 60, now=0.0)  # 3600 W each: battery 1 is full after 10 s
    world.advance(30.0)
    assert world.soc(11) == 90.0
    assert world.soc(12) == pytest.approx(50.0 + 30 * RATE_PCT_PER_S, abs=1e-12)
    assert world.inverter_power(21) == 3600.0


def test_two_batteries_on_three_inverters() -> None:
    world = world_of(two_on_three())  # 2001 -> 1001, 2002 -> 1001 and 1002, 2003 -> 1002
    world.command(2001, 1000.0, 60, now=0.0)
    world.command(2002, 3000.0, 60, now=0.0)  # equal capacities: 1500 W each
    world.command(2003, -500.0, 60, now=0.0)
    assert world.battery_power(1001) == 2500.0
    assert world.battery_power(1002) == 1000.0
    assert [world.inverter_power(i) for i in (2001, 2002, 2003)] == [1000.0, 3000.0, -500.0]
    world.advance(36.0)
    assert world.soc(1001) == pytest.approx(40.0 + 36 * 2500 / 3600 * RATE_PCT_PER_S, abs=1e-12)
    assert world.soc(1002) == pytest.approx(60.0 + 36 * 1000 / 3600 * RATE_PCT_PER_S, abs=1e-12)


def test_each_battery_and_inverter_reports_its_own() -> None:
    world = world_of(two_on_one())
    world.command(2001, -3000.0, 60, now=0.0)
    low = world.battery_reading(1001, Faults())
    high = world.battery_reading(1002, Faults())
    assert (low.soc_pct, low.capacity_wh, low.power_w) == (40.0, 10_000.0, -1000.0)
    assert (high.soc_pct, high.capacity_wh, high.power_w) == (60.0, 20_000.0, -2000.0)
    assert low.power_ranges == ((-5000.0, 5000.0),)
    assert high.power_ranges == ((-10_000.0, 10_000.0),)
    inverter = world.inverter_reading(2001, Faults())
    assert inverter.power_w == -3000.0
    assert inverter.power_ranges == ((-10_000.0, 10_000.0),)


def test_a_ramping_inverter_with_two_batteries_ramps_both_exactly() -> None:
    scenario = Scenario(
        batteries=(
            BatterySpec(id=11, soc_pct=50.0),
            BatterySpec(id=12, soc_pct=50.0, capacity_wh=30_000.0, power_limit_w=10_000.0),
        ),
        inverters=(
            InverterSpec(id=21, batteries=(11, 12), power_limit_w=10_000.0, ramp_w_per_s=1000.0),
        ),
    )
    world = world_of(scenario)
    world.command(21, 4000.0, 60, now=0.0)  # 4 s up to 4000 W: 1000 W and 3000 W
    world.advance(2.0)
    assert (world.battery_power(11), world.battery_power(12)) == (500.0, 1500.0)
    world.advance(10.0)
    # Battery 1's quarter: a ramp to 1000 W over 4 s, then 6 s at 1000 W; battery 2 three times it.
    energy = Fraction(1000) * 4 / 2 + 1000 * 6
    assert world.soc(11) == pytest.approx(float(50 + energy * 100 / 3600 / 10_000), abs=1e-12)
    assert world.soc(12) == pytest.approx(float(50 + 3 * energy * 100 / 3600 / 30_000), abs=1e-12)


def test_reactive_power_and_its_apparent_limit_stay_per_inverter() -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=11, soc_pct=50.0), BatterySpec(id=12, soc_pct=50.0)),
        inverters=(
            InverterSpec(
                id=21, batteries=(11, 12), power_limit_w=10_000.0, apparent_limit_va=5000.0
            ),
            InverterSpec(id=22, batteries=(11,)),
        ),
    )
    world = world_of(scenario)
    world.command(21, 4000.0, 60, now=0.0)
    assert isinstance(world.command_reactive(21, 4000.0, 60, now=0.0), Accepted)
    assert world.reactive_power(21) == 3000.0  # √(5000² − 4000²)
    assert world.reactive_power(22) == 0.0


def test_reading_rarely_or_often_gives_the_same_state_in_groups() -> None:
    check_eager_equals_lazy(
        lambda: world_of(two_on_three()),
        [(0.0, 2002, 1.0, 20), (3.0, 2001, -0.5, 10), (4.0, 2003, 0.7, 30)],
        (1001, 1002),
        5000.0,
    )


@given(_steps([2001, 2002, 2003], 30.0))
def test_reading_rarely_or_often_gives_the_same_state_in_a_group(steps: list[_Step]) -> None:
    # Unequal capacities, one battery near its bound: the split and the clamps both matter.
    def make() -> World:
        scenario = Scenario(
            batteries=(
                BatterySpec(id=11, soc_pct=89.5, power_limit_w=3000.0),
                BatterySpec(id=12, soc_pct=11.0, capacity_wh=25_000.0),
            ),
            inverters=(
                InverterSpec(id=2001, batteries=(11,)),
                InverterSpec(id=2002, batteries=(11, 12), power_limit_w=8000.0),
                InverterSpec(id=2003, batteries=(12,)),
            ),
            speed=50.0,
        )
        return world_of(scenario)

    check_eager_equals_lazy(make, steps, (11, 12), 4000.0)


# --- limits ---------------------------------------------------------------------------------


def test_a_command_within_the_feeder_is_held_as_asked() -> None:
    world = world_of(feeder())
    world.command(2001, 3000.0, 60, now=0.0)
    world.command(2002, 3000.0, 60, now=0.0)  # exactly at the feeder's 6000 W
    assert world.limit_sums() == {"feeder": 6000.0, "grid": 6000.0}
    record = world.snapshot_record()
    assert record.violations == ()
    assert record.violation_counts == {"feeder": 0, "grid": 0}


def test_a_command_beyond_the_feeder_is_curtailed_and_recorded() -> None:
    world = world_of(feeder())
    world.command(2001, 4000.0, 60, now=0.0)
    assert world.command(2002, 4000.0, 60, now=1.0) == Accepted(lifetime_s=60, until=61.0)
    assert world.inverter_power(2002) == 2000.0  # the room the feeder left it
    assert world.limit_sum("feeder") == 6000.0
    world.advance(5.0)
    record = world.snapshot_record()
    assert record.violations == (
        LimitViolation(
            limit="feeder",
            at=1.0,
            inverter_id=2002,
            cause="command",
            power_w=4000.0,
            sum_w=8000.0,
            bound_w=6000.0,
        ),
    )
    assert record.limit_violations("feeder") == list(record.violations)
    assert record.limit_violations("grid") == []
    # The command is recorded as asked and applied; the change as held.
    (command,) = record.commands([2002])
    assert (command.power_w, command.outcome) == (4000.0, Outcome.APPLIED)
    assert record.changes([2002]) == [
        Change(inverter_id=2002, at=1.0, from_w=0.0, to_w=2000.0, until=61.0)
    ]
    assert record.limit_timeline("feeder", start=0.0) == [(0.0, 4000.0), (1.0, 6000.0)]
    assert record.limit_sums == {"feeder": 6000.0, "grid": 6000.0}
    assert world.soc(1002) == pytest.approx(50.0 + 4 * 2000 / 3600 * RATE_PCT_PER_S, abs=1e-12)


def test_discharge_beyond_the_feeder_is_curtailed_too() -> None:
    world = world_of(feeder())
    world.command(2001, -5000.0, 60, now=0.0)
    world.command(2002, -5000.0, 60, now=0.0)
    assert world.inverter_power(2002) == -1000.0
    (violation,) = world.snapshot_record().violations
    assert (violation.sum_w, violation.bound_w) == (-10_000.0, -6000.0)


def test_nested_limits_each_bind() -> None:
    world = world_of(feeder())  # feeder 2001+2002 <= 6000, grid all four <= 15000
    for inverter in (2001, 2002, 2003, 2004):
        world.command(inverter, 5000.0, 60, now=0.0)
    held = [world.inverter_power(i) for i in (2001, 2002, 2003, 2004)]
    assert held == [5000.0, 1000.0, 5000.0, 4000.0]
    assert world.limit_sums() == {"feeder": 6000.0, "grid": 15_000.0}
    record = world.snapshot_record()
    assert [(v.limit, v.inverter_id, v.sum_w) for v in record.violations] == [
        ("feeder", 2002, 10_000.0),
        ("grid", 2004, 16_000.0),
    ]
    assert record.violation_counts == {"feeder": 1, "grid": 1}


def test_the_opposite_direction_is_never_curtailed() -> None:
    world = world_of(feeder())
    world.command(2001, 5000.0, 60, now=0.0)
    world.command(2002, -5000.0, 60, now=0.0)
    assert world.limit_sum("feeder") == 0.0
    assert world.snapshot_record().violations == ()


def two_with_a_limit(max_charge_w: float) -> World:
    scenario = Scenario(
        batteries=(BatterySpec(id=11, soc_pct=50.0), BatterySpec(id=12, soc_pct=50.0)),
        inverters=(InverterSpec(id=21, batteries=(11,)), InverterSpec(id=22, batteries=(12,))),
        limits=(LimitSpec(name="fuse", inverters=(21, 22), max_charge_w=max_charge_w),),
    )
    return world_of(scenario)


def test_an_expiry_that_breaks_a_limit_scales_the_others_down_at_its_instant() -> None:
    world = two_with_a_limit(4000.0)
    world.command(22, -2000.0, 10, now=0.0)
    world.command(21, 5000.0, 20, now=0.0)  # sum 3000 W; without 22 it would be 5000 W
    assert world.advance(15.0) == [22]
    assert world.inverter_power(21) == 4000.0
    record = world.snapshot_record()
    (violation,) = record.violations
    assert (violation.at, violation.inverter_id, violation.cause) == (10.0, 22, "expiry")
    assert (violation.power_w, violation.sum_w, violation.bound_w) == (0.0, 5000.0, 4000.0)
    assert record.changes([21])[-1] == Change(
        inverter_id=21, at=10.0, from_w=5000.0, to_w=4000.0, until=20.0
    )
    # Battery 1 took 5000 W for 10 s, then 4000 W for 5 s.
    expected = 50.0 + (10 * 5000 + 5 * 4000) / 3600 * RATE_PCT_PER_S
    assert world.soc(11) == pytest.approx(expected, abs=1e-12)
    assert world.next_expiry() == 20.0


def test_a_stop_that_breaks_a_limit_is_recorded_and_enforced() -> None:
    world = two_with_a_limit(4000.0)
    world.command(22, -2000.0, 60, now=0.0)
    world.command(21, 5000.0, 60, now=0.0)
    assert world.control(22, "stop", now=3.0) is None
    assert world.inverter_power(21) == 4000.0
    (violation,) = world.snapshot_record().violations
    assert (violation.cause, violation.inverter_id, violation.at) == ("stop", 22, 3.0)


def test_a_command_that_cannot_fix_a_limit_alone_scales_the_others() -> None:
    world = two_with_a_limit(4000.0)
    world.command(22, -2000.0, 60, now=0.0)
    world.command(21, 5000.0, 60, now=0.0)
    world.command(22, 1000.0, 60, now=1.0)  # would be 6000 W; 21 alone holds 5000 W
    assert (world.inverter_power(21), world.inverter_power(22)) == (4000.0, 0.0)
    (violation,) = world.snapshot_record().violations
    assert (violation.power_w, violation.sum_w) == (1000.0, 6000.0)


def test_a_limit_of_0_w_one_way_allows_only_the_other() -> None:
    world = two_with_a_limit(0.0)  # the fuse's inverters may only discharge, together
    world.command(21, 1000.0, 60, now=0.0)
    assert world.inverter_power(21) == 0.0
    world.command(22, -3000.0, 60, now=0.0)
    world.command(21, 2000.0, 60, now=1.0)
    assert (world.inverter_power(21), world.limit_sum("fuse")) == (2000.0, -1000.0)
    world.command(21, 4000.0, 60, now=2.0)
    assert (world.inverter_power(21), world.limit_sum("fuse")) == (3000.0, 0.0)
    record = world.snapshot_record()
    assert [(v.at, v.sum_w, v.bound_w) for v in record.violations] == [
        (0.0, 1000.0, 0.0),
        (2.0, 1000.0, 0.0),
    ]


def test_a_grid_limit_binds_every_inverter_but_pv() -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=11, soc_pct=50.0), BatterySpec(id=12, soc_pct=50.0)),
        inverters=(
            InverterSpec(id=21, batteries=(11,)),
            InverterSpec(id=22, batteries=(12,)),
            InverterSpec(id=23, batteries=(), type="pv", pv_power_w=3000.0),
        ),
        limits=(LimitSpec(name="gcp", grid=True, max_discharge_w=7000.0),),
    )
    world = world_of(scenario)
    world.command(21, -5000.0, 60, now=0.0)
    world.command(22, -5000.0, 60, now=0.0)
    assert world.inverter_power(22) == -2000.0
    assert world.inverter_power(23) == -3000.0  # PV produces: not commanded, not counted
    assert world.limit_sums() == {"gcp": -7000.0}


def test_a_limit_sum_for_an_unknown_limit_is_a_key_error() -> None:
    world = world_of(feeder())
    with pytest.raises(KeyError, match="no limit 'nope'"):
        world.limit_sum("nope")
    with pytest.raises(KeyError, match="no limit 'nope'"):
        world.snapshot_record().limit_violations("nope")


def test_the_record_of_a_scenario_without_limits_has_none() -> None:
    world = world_of(named_scenario("two-on-one"))
    world.command(2001, 1000.0, 60, now=0.0)
    record = world.snapshot_record()
    assert (record.limits, record.violations, record.limit_sums) == ({}, (), {})
    assert [(c.power_w, c.outcome) for c in record.commands()] == [(1000.0, Outcome.APPLIED)]
