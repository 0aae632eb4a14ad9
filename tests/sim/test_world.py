"""The simulator's physics, with time passed in: exact numbers, no clock."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.model import StateCode
from distributord.sim.record import Change, Command, Expiry, Outcome
from distributord.sim.scenario import BatterySpec, Faults, InverterSpec, Scenario
from distributord.sim.world import (
    MAX_BOUNDS_RANGES,
    MAX_CONTRIBUTIONS,
    Accepted,
    Mode,
    Rejected,
    World,
    intersect,
    merge,
)

# 3600 W into 10 kWh moves the SoC by 0.01 %/s at speed 1: round numbers throughout.
RATE_PCT_PER_S = 0.01


def one_pair(
    *, soc: float = 50.0, speed: float = 1.0, exclusion_w: float = 0.0, scale: float = 1.0
) -> World:
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=soc),),
        inverters=(InverterSpec(id=2001, batteries=(1001,), exclusion_w=exclusion_w),),
        speed=speed,
    )
    return World(scenario, now=0.0, lifetime_scale=scale)


def test_soc_integrates_power_over_capacity() -> None:
    world = one_pair()
    assert world.command(2001, 3600.0, 60, now=0.0) == Accepted(lifetime_s=60, until=60.0)
    world.advance(50.0)
    assert world.soc(1001) == pytest.approx(50.0 + 50 * RATE_PCT_PER_S, abs=1e-12)
    assert world.battery_power(1001) == 3600.0
    assert world.inverter_power(2001) == 3600.0


def test_speed_multiplies_the_soc_rate() -> None:
    world = one_pair(speed=60.0)
    world.command(2001, -3600.0, 60, now=0.0)
    world.advance(10.0)
    assert world.soc(1001) == pytest.approx(50.0 - 10 * RATE_PCT_PER_S * 60, abs=1e-12)


def test_a_setpoint_expires_exactly_at_its_lifetime_even_inside_one_advance() -> None:
    world = one_pair()
    world.command(2001, 3600.0, 10, now=5.0)
    assert world.advance(100.0) == [2001]  # one step across the expiry at 15 s
    assert world.soc(1001) == pytest.approx(50.0 + 10 * RATE_PCT_PER_S, abs=1e-12)
    assert world.inverter_power(2001) == 0.0
    assert world.next_expiry() == math.inf


def test_lifetime_scale_shortens_the_hold_but_not_the_granted_lifetime() -> None:
    world = one_pair(scale=0.01)
    assert world.command(2001, 1000.0, 10, now=0.0) == Accepted(lifetime_s=10, until=0.1)
    world.advance(0.0999)
    assert world.inverter_power(2001) == 1000.0
    assert world.advance(0.1) == [2001]
    assert world.inverter_power(2001) == 0.0


def test_a_renewed_setpoint_does_not_expire_at_the_old_instant() -> None:
    world = one_pair()
    world.command(2001, 1000.0, 10, now=0.0)
    world.command(2001, 1000.0, 10, now=8.0)
    assert world.advance(17.0) == []
    assert world.inverter_power(2001) == 1000.0


def test_time_never_goes_back() -> None:
    world = one_pair()
    world.command(2001, 3600.0, 60, now=10.0)
    world.advance(5.0)
    assert world.time == 10.0
    assert world.soc(1001) == 50.0


def test_soc_stops_exactly_at_the_upper_bound_and_power_is_held_at_zero() -> None:
    world = one_pair(soc=89.5)
    world.command(2001, 3600.0, 900, now=0.0)
    world.advance(1000.0)  # 0.5 % takes 50 s; the rest of the time nothing flows
    assert world.soc(1001) == 90.0
    assert world.battery_power(1001) == 0.0
    assert world.inverter_power(2001) == 0.0
    assert world.battery_bounds(1001) == (-5000.0, 0.0)


def test_soc_stops_exactly_at_the_lower_bound() -> None:
    world = one_pair(soc=10.2)
    world.command(2001, -3600.0, 900, now=0.0)
    world.advance(1000.0)
    assert world.soc(1001) == 10.0
    assert world.battery_bounds(1001) == (0.0, 5000.0)


def test_a_full_battery_refuses_charge_but_takes_discharge() -> None:
    world = one_pair(soc=90.0)
    refused = world.command(2001, 100.0, 60, now=0.0)
    assert isinstance(refused, Rejected)
    assert refused.code == "OUT_OF_RANGE"
    assert world.command(2001, -100.0, 60, now=0.0) == Accepted(lifetime_s=60, until=60.0)
    assert world.command(2001, 0.0, 60, now=0.0) == Accepted(lifetime_s=60, until=60.0)


@pytest.mark.parametrize(
    ("component", "power", "lifetime", "code"),
    [
        (9999, 0.0, 60, "NOT_FOUND"),
        (1001, 0.0, 60, "INVALID_ARGUMENT"),  # a battery
        (1, 0.0, 60, "INVALID_ARGUMENT"),  # the grid
        (2, 0.0, 60, "INVALID_ARGUMENT"),  # the meter
        (2001, 0.0, 9, "INVALID_ARGUMENT"),
        (2001, 0.0, 901, "INVALID_ARGUMENT"),
        (2001, math.nan, 60, "INVALID_ARGUMENT"),
        (2001, 5000.5, 60, "OUT_OF_RANGE"),
        (2001, -5000.5, 60, "OUT_OF_RANGE"),
        (2001, 499.0, 60, "OUT_OF_RANGE"),  # inside the exclusion zone
        (2001, -1.0, 60, "OUT_OF_RANGE"),
    ],
)
def test_refused_commands(component: int, power: float, lifetime: int, code: str) -> None:
    world = one_pair(exclusion_w=500.0)
    result = world.command(component, power, lifetime, now=0.0)
    assert isinstance(result, Rejected)
    assert result.code == code
    assert world.inverter_power(2001) == 0.0


@pytest.mark.parametrize(
    ("power", "lifetime", "granted"),
    [(0.0, None, 60), (500.0, 10, 10), (-500.0, 900, 900), (5000.0, 60, 60), (-5000.0, 60, 60)],
)
def test_accepted_commands(power: float, lifetime: int | None, granted: int) -> None:
    world = one_pair(exclusion_w=500.0)
    assert world.command(2001, power, lifetime, now=1.0) == Accepted(
        lifetime_s=granted, until=1.0 + granted
    )
    assert world.inverter_power(2001) == power


def test_ranges_with_and_without_an_exclusion_zone() -> None:
    assert one_pair().inverter_ranges(2001) == ((-5000.0, 5000.0),)
    assert one_pair(exclusion_w=300.0).inverter_ranges(2001) == (
        (-5000.0, -300.0),
        (300.0, 5000.0),
    )


def test_battery_reading() -> None:
    world = one_pair()
    world.command(2001, -2000.0, 60, now=0.0)
    reading = world.battery_reading(1001, Faults())
    assert reading.soc_pct == 50.0
    assert reading.soc_bounds == (10.0, 90.0)
    assert reading.capacity_wh == 10_000.0
    assert reading.power_w == -2000.0
    assert reading.power_ranges == ((-5000.0, 5000.0),)
    # Connected: its relay is closed, as a real battery reports and the Frequenz SDK requires.
    assert reading.states == (StateCode.READY, StateCode.DISCHARGING, StateCode.RELAY_CLOSED)
    assert reading.errors == ()


def test_inverter_reading_is_ready_at_zero_and_charging_above() -> None:
    world = one_pair()
    assert world.inverter_reading(2001, Faults()).states == (StateCode.READY,)
    world.command(2001, 100.0, 60, now=0.0)
    reading = world.inverter_reading(2001, Faults())
    assert reading.power_w == 100.0
    assert reading.power_ranges == ((-5000.0, 5000.0),)
    assert reading.states == (StateCode.READY, StateCode.CHARGING)


def test_telemetry_faults_in_readings() -> None:
    world = one_pair()
    faults = Faults(
        nan_metrics=frozenset({"soc", "capacity", "power"}), missing_bounds=True, error_state=True
    )
    battery = world.battery_reading(1001, faults)
    assert math.isnan(battery.soc_pct)
    assert math.isnan(battery.capacity_wh)
    assert math.isnan(battery.power_w)
    assert battery.soc_bounds is None
    assert battery.power_ranges is None
    assert battery.states == (StateCode.ERROR,)
    assert battery.errors == ("internal",)
    inverter = world.inverter_reading(2001, faults)
    assert math.isnan(inverter.power_w)
    assert inverter.power_ranges is None
    assert inverter.states == (StateCode.ERROR,)


def test_a_power_offset_is_reported_and_changes_nothing_applied() -> None:
    world = one_pair()
    world.command(2001, 100.0, 60, now=0.0)
    reading = world.inverter_reading(2001, Faults(power_offset_w=-350.0))
    assert reading.power_w == -250.0
    assert world.inverter_power(2001) == 100.0
    assert world.battery_reading(1001, Faults(power_offset_w=-350.0)).power_w == 100.0


def odd_world() -> World:
    scenario = Scenario(
        batteries=(
            BatterySpec(id=1001, soc_pct=50.0),
            BatterySpec(id=1002, soc_pct=50.0),
            BatterySpec(id=1003, soc_pct=50.0, power_limit_w=3000.0),
            BatterySpec(id=1004, soc_pct=50.0),
        ),
        inverters=(
            InverterSpec(id=2001, batteries=(1001, 1002)),  # one inverter, two batteries
            InverterSpec(id=2002, batteries=(1003,)),  # two inverters, one battery
            InverterSpec(id=2003, batteries=(1003,)),
            InverterSpec(id=2004, batteries=()),  # an inverter without a battery
        ),
    )  # and 1004 has no inverter
    return World(scenario, now=0.0)


def test_an_inverter_splits_its_setpoint_among_its_batteries() -> None:
    world = odd_world()
    world.command(2001, 4000.0, 60, now=0.0)
    assert world.battery_power(1001) == 2000.0
    assert world.battery_power(1002) == 2000.0
    assert world.inverter_power(2001) == 4000.0


def test_a_battery_takes_the_sum_of_its_inverters_up_to_its_limit() -> None:
    world = odd_world()
    world.command(2002, 2000.0, 60, now=0.0)
    world.command(2003, 2000.0, 60, now=0.0)
    assert world.battery_power(1003) == 3000.0
    # Each inverter passes its proportional part: power is conserved.
    assert world.inverter_power(2002) == 1500.0
    assert world.inverter_power(2003) == 1500.0
    assert world.site_power() == 3000.0


def test_odd_shapes_without_power_path() -> None:
    world = odd_world()
    assert world.battery_power(1004) == 0.0
    refused = world.command(2004, 100.0, 60, now=0.0)
    assert isinstance(refused, Rejected)
    assert refused.code == "OUT_OF_RANGE"
    assert world.command(2004, 0.0, 60, now=0.0) == Accepted(lifetime_s=60, until=60.0)


def test_meter_reads_the_site_total() -> None:
    world = odd_world()
    world.command(2001, -1000.0, 60, now=0.0)
    world.command(2002, 500.0, 60, now=0.0)
    reading = world.meter_reading()
    assert reading.power_w == -500.0
    assert reading.states == (StateCode.READY,)


def test_check_judges_like_command_and_changes_nothing() -> None:
    world = one_pair(soc=90.0)
    assert world.check(2001, -100.0, 60, now=1.0) == Accepted(lifetime_s=60, until=61.0)
    assert world.inverter_power(2001) == 0.0
    assert world.next_expiry() == math.inf
    refused = world.check(2001, 100.0, 60, now=1.0)
    assert isinstance(refused, Rejected)
    assert refused.code == "OUT_OF_RANGE"
    assert world.command(2001, -100.0, 60, now=1.0) == Accepted(lifetime_s=60, until=61.0)
    assert world.inverter_power(2001) == -100.0


def test_a_pass_through_component_passes_its_inverters_power_and_takes_no_command() -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=11, soc_pct=50.0),),
        inverters=(InverterSpec(id=21, batteries=(11,), between=("precharger", "breaker")),),
    )
    world = World(scenario, now=0.0)
    world.command(21, 1500.0, 60, now=0.0)
    (precharger, breaker) = scenario.chains()[21]
    assert world.line_reading(21).power_w == 1500.0
    assert world.line_reading(21).power_ranges is None
    for cid in (precharger, breaker):
        refused = world.command(cid, 0.0, 60, now=0.0)
        assert isinstance(refused, Rejected)
        assert refused.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "module", ["distributord.sim.scenario", "distributord.sim.world", "distributord.sim.record"]
)
def test_pure_simulator_modules_import_neither_trio_nor_grpc(module: str) -> None:
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in {'trio', 'grpc', 'google'})\n"
        "print(','.join(leaked))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "", f"{module} imports {done.stdout.strip()}"


_Step = tuple[float, int, float, int]


def _steps(inverters: Sequence[int], max_later_s: float) -> st.SearchStrategy[list[_Step]]:
    """Steps: (seconds later, inverter or 0 for none, power as a fraction of W, lifetime)."""
    return st.lists(
        st.tuples(
            st.floats(0.0, max_later_s),
            st.sampled_from([0, *inverters]),
            st.sampled_from([0.0, -1.0, 1.0]) | st.floats(-1.0, 1.0),
            st.integers(10, 40),
        ),
        max_size=30,
    )


def check_eager_equals_lazy(
    make: Callable[[], World],
    steps: list[_Step],
    batteries: Sequence[int],
    watts: float,
    reads_s: Sequence[float] = (100.0,),
) -> None:
    """Replay ``steps`` on two worlds, one read often, one only at the end.

    The eager one is read after every step and ``reads_s`` after the last. Batteries are
    integrated lazily: how often they are read must not change the physics.
    """
    eager, lazy = make(), make()
    now = 0.0
    for later, inverter, fraction, lifetime in steps:
        now += later
        for world in (eager, lazy):
            world.advance(now)
            if inverter:
                world.command(inverter, round(fraction * watts), lifetime, now=now)
        for battery in batteries:
            eager.soc(battery)  # the eager world is read at every step
    for extra in reads_s:
        eager.advance(now + extra)
        for battery in batteries:
            eager.soc(battery)
    lazy.advance(now + reads_s[-1])
    for battery in batteries:
        assert lazy.soc(battery) == pytest.approx(eager.soc(battery), abs=1e-9)
        assert 0.0 <= lazy.soc(battery) <= 100.0
        assert lazy.battery_power(battery) == eager.battery_power(battery)


@given(_steps([2001, 2002, 2003], 30.0))
def test_reading_rarely_or_often_gives_the_same_state(steps: list[_Step]) -> None:
    check_eager_equals_lazy(odd_world, steps, (1001, 1002, 1003, 1004), 3000.0)


# --- the record ------------------------------------------------------------------------------


def test_the_record_of_an_applied_command_its_change_and_its_expiry() -> None:
    world = one_pair()
    world.command(2001, 3600.0, 10, now=5.0, received_at=4.5, api="v1alpha18", final="SUCCESS")
    world.command(2001, 3600.0, 10, now=6.0)  # a refresh: a command, no change
    world.advance(100.0)  # the expiry is recorded at its own instant, 16 s
    record = world.snapshot_record()
    assert record.time == 100.0
    assert record.events() == [
        Command(
            inverter_id=2001,
            at=5.0,
            received_at=4.5,
            power_w=3600.0,
            lifetime_s=10,
            outcome=Outcome.APPLIED,
            final="SUCCESS",
            until=15.0,
            api="v1alpha18",
        ),
        Change(inverter_id=2001, at=5.0, from_w=0.0, to_w=3600.0, until=15.0),
        Command(
            inverter_id=2001,
            at=6.0,
            received_at=6.0,
            power_w=3600.0,
            lifetime_s=10,
            outcome=Outcome.APPLIED,
            until=16.0,
        ),
        Expiry(inverter_id=2001, at=16.0, power_w=3600.0),
    ]
    assert record.lapses() == [Expiry(inverter_id=2001, at=16.0, power_w=3600.0)]
    assert record.held_at(2001, 15.999) == 3600.0
    assert record.held_at(2001, 16.0) == 0.0


def test_the_record_of_commands_that_change_nothing() -> None:
    world = one_pair(exclusion_w=500.0)
    world.command(2001, 100.0, 10, now=1.0)  # in the exclusion zone
    world.command(2001, 1000.0, 5, now=2.0)  # a lifetime the API refuses
    world.command(2001, 1000.0, 60, now=3.0, apply=False, final="FAILED")
    world.command(1001, 1000.0, 60, now=4.0)  # not an inverter: no inverter's record
    world.record_command(2001, 2000.0, 60, now=5.0, outcome=Outcome.CANCELLED, received_at=4.0)
    world.record_command(2001, 2000.0, 60, now=6.0, outcome=Outcome.ERROR, code="UNAVAILABLE")
    record = world.snapshot_record()
    assert [(c.at, c.outcome, c.code, c.final, c.until) for c in record.commands()] == [
        (1.0, Outcome.REJECTED, "OUT_OF_RANGE", None, None),
        (2.0, Outcome.REJECTED, "INVALID_ARGUMENT", None, None),
        (3.0, Outcome.NOT_APPLIED, None, "FAILED", None),
        (5.0, Outcome.CANCELLED, None, None, None),
        (6.0, Outcome.ERROR, "UNAVAILABLE", None, None),
    ]
    assert record.changes() == []
    assert world.time == 6.0  # a recorded command moves the world to its instant
    assert world.inverter_power(2001) == 0.0


def test_an_expiry_before_a_command_is_recorded_before_it() -> None:
    world = one_pair()
    world.command(2001, -1000.0, 10, now=0.0)
    world.command(2001, -1000.0, 10, now=12.0)  # late: the first expired at 10 s
    record = world.snapshot_record()
    assert [(type(e).__name__, e.at) for e in record.events()] == [
        ("Command", 0.0),
        ("Change", 0.0),
        ("Expiry", 10.0),
        ("Command", 12.0),
        ("Change", 12.0),
    ]
    assert record.timeline([2001], start=0.0) == [(0.0, -1000.0), (10.0, 0.0), (12.0, -1000.0)]
    assert record.min_total([2001], start=0.0) == -1000.0
    assert len(record.lapses()) == 1


# --- PV ------------------------------------------------------------------------------------------


def pv_site(*, pv_w: float = 4000.0, hybrid_pv_w: float = 1000.0) -> World:
    """A PV inverter (no battery) beside a hybrid inverter and a battery inverter."""
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=50.0), BatterySpec(id=1002, soc_pct=50.0)),
        inverters=(
            InverterSpec(id=2001, batteries=(1001,), type="hybrid", pv_power_w=hybrid_pv_w),
            InverterSpec(id=2002, batteries=(1002,)),
            InverterSpec(id=2003, batteries=(), type="pv", pv_power_w=pv_w, power_limit_w=6000.0),
        ),
    )
    return World(scenario, now=0.0)


def test_pv_produces_without_a_setpoint_and_the_site_meter_sees_it() -> None:
    world = pv_site()
    assert world.inverter_power(2003) == -4000.0
    assert world.inverter_power(2001) == -1000.0  # the hybrid's PV; its battery idles
    assert world.meter_reading().power_w == -5000.0
    assert world.inverter_reading(2003, Faults()).power_ranges == ((-6000.0, 0.0),)


def test_a_setpoint_limits_pv_production_until_it_expires() -> None:
    world = pv_site()
    assert world.command(2003, -2500.0, 10, now=0.0) == Accepted(lifetime_s=10, until=10.0)
    assert world.inverter_power(2003) == -2500.0
    world.command(2003, -5000.0, 10, now=1.0)  # a limit above what the sun gives: all of it
    assert world.inverter_power(2003) == -4000.0
    world.command(2003, 0.0, 10, now=2.0)  # 0 W: produce nothing
    assert world.inverter_power(2003) == 0.0
    assert world.advance(12.0) == [2003]
    assert world.inverter_power(2003) == -4000.0  # the limit lapsed: full production again


@pytest.mark.parametrize("power_w", [0.001, 100.0, 6000.0])
def test_a_pv_inverter_refuses_to_consume(power_w: float) -> None:
    world = pv_site()
    result = world.command(2003, power_w, 10, now=0.0)
    assert isinstance(result, Rejected)
    assert result.code == "OUT_OF_RANGE"
    assert "PV inverter" in result.details
    assert world.inverter_power(2003) == -4000.0


def test_a_pv_inverter_refuses_more_than_its_limit() -> None:
    result = pv_site().command(2003, -6001.0, 10, now=0.0)
    assert isinstance(result, Rejected)
    assert result.code == "OUT_OF_RANGE"


def test_a_hybrid_inverter_commands_its_battery_and_measures_battery_minus_pv() -> None:
    world = pv_site(hybrid_pv_w=1500.0)
    world.command(2001, 3600.0, 60, now=0.0)
    world.advance(50.0)
    assert world.battery_power(1001) == 3600.0
    assert world.soc(1001) == pytest.approx(50.0 + 50 * RATE_PCT_PER_S, abs=1e-12)
    assert world.inverter_power(2001) == 3600.0 - 1500.0
    assert world.meter_reading().power_w == 3600.0 - 1500.0 - 4000.0


def test_an_inverters_own_meter_takes_no_command() -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=50.0),),
        inverters=(InverterSpec(id=2001, batteries=(1001,), meter=True),),
    )
    result = World(scenario, now=0.0).command(92001, 100.0, 10, now=0.0)
    assert result == Rejected(code="INVALID_ARGUMENT", details="component 92001 is not an inverter")


def test_a_hybrids_battery_power_without_its_pv() -> None:
    world = pv_site(hybrid_pv_w=1500.0)
    world.command(2001, 2000.0, 60, now=0.0)
    assert world.inverter_power(2001, with_pv=False) == 2000.0
    assert world.inverter_power(2001) == 500.0
    assert world.inverter_power(2003, with_pv=False) == -4000.0  # a PV inverter: its production


# --- added bounds -----------------------------------------------------------------------------


def add(
    world: World,
    ranges: Sequence[tuple[float | None, float | None]],
    *,
    now: float = 0.0,
    lifetime: int | None = 60,
    token: str | None = None,
    component: int = 2001,
    metric: str = "ac_power",
) -> Accepted | Rejected:
    return world.add_bounds(component, metric, ranges, lifetime, token, now=now)


def test_added_bounds_narrow_the_inverters_ranges_its_telemetry_and_its_commands() -> None:
    world = one_pair(exclusion_w=500.0)
    assert add(world, [(-1000.0, 2000.0)], now=1.0) == Accepted(lifetime_s=60, until=61.0)
    assert world.allowed_ranges(2001) == ((-1000.0, -500.0), (500.0, 2000.0))
    assert world.inverter_reading(2001, Faults()).power_ranges == world.allowed_ranges(2001)
    assert world.inverter_ranges(2001) == ((-5000.0, -500.0), (500.0, 5000.0))  # its own
    refused = world.command(2001, 2000.5, 60, now=2.0)
    assert isinstance(refused, Rejected)
    assert refused.code == "OUT_OF_RANGE"
    assert "(500.0, 2000.0)" in refused.details
    assert isinstance(world.command(2001, 2000.0, 60, now=2.0), Accepted)
    assert isinstance(world.command(2001, 0.0, 60, now=2.0), Accepted)  # 0 W: always


def test_every_contribution_narrows_and_one_contributions_ranges_are_merged() -> None:
    world = one_pair()
    # The proto's example: [[0, 10], [5, 15], [20, 30]] is [[0, 15], [20, 30]].
    add(world, [(20.0, 30.0), (0.0, 10.0), (5.0, 15.0)])
    assert world.added_bounds(2001)[0].ranges == ((0.0, 15.0), (20.0, 30.0))
    assert world.allowed_ranges(2001) == ((0.0, 15.0), (20.0, 30.0))
    add(world, [(None, 12.0), (25.0, None)])  # open ends
    assert world.allowed_ranges(2001) == ((0.0, 12.0), (25.0, 30.0))


def test_bounds_with_nothing_in_common_allow_zero_only() -> None:
    world = one_pair()
    add(world, [(100.0, 200.0)])
    add(world, [(-200.0, -100.0)])
    assert world.allowed_ranges(2001) == ()
    assert world.inverter_reading(2001, Faults()).power_ranges == ((0.0, 0.0),)
    assert isinstance(world.command(2001, 150.0, 60, now=0.0), Rejected)
    assert isinstance(world.command(2001, 0.0, 60, now=0.0), Accepted)


def test_added_bounds_expire_exactly_at_their_lifetime_and_default_to_five_seconds() -> None:
    world = one_pair(scale=0.5)
    assert add(world, [(-10.0, 10.0)], now=2.0, lifetime=None) == Accepted(lifetime_s=5, until=4.5)
    assert world.next_bounds_expiry() == 4.5
    world.advance(4.499)
    assert world.allowed_ranges(2001) == ((-10.0, 10.0),)
    assert isinstance(world.command(2001, 11.0, 60, now=4.499), Rejected)
    world.advance(4.5)
    assert world.allowed_ranges(2001) == ((-5000.0, 5000.0),)
    assert world.added_bounds(2001) == []
    assert world.next_bounds_expiry() == math.inf
    assert isinstance(world.command(2001, 11.0, 60, now=4.5), Accepted)


def test_a_token_replaces_its_own_bounds_and_clearing_removes_them() -> None:
    world = one_pair()
    add(world, [(-100.0, 100.0)], token="a", lifetime=900)
    add(world, [(-300.0, 300.0)], token="b", lifetime=10)
    add(world, [(-200.0, 200.0)], token="a", lifetime=20)  # replaces a's, not b's
    assert [(c.ranges, c.until) for c in world.added_bounds(2001)] == [
        (((-200.0, 200.0),), 20.0),
        (((-300.0, 300.0),), 10.0),
    ]
    assert world.next_bounds_expiry() == 10.0
    assert world.clear_bounds(2001, "ac_power", "b", now=1.0) is None
    assert world.allowed_ranges(2001) == ((-200.0, 200.0),)
    assert world.next_bounds_expiry() == 20.0
    # Bounds that do not exist: nothing happens.
    assert world.clear_bounds(2001, "ac_power", "b", now=1.0) is None
    assert world.clear_bounds(2001, "dc_power", "a", now=1.0) is None
    assert world.clear_bounds(1001, "ac_power", "a", now=1.0) is None
    assert world.allowed_ranges(2001) == ((-200.0, 200.0),)
    cleared = world.clear_bounds(4242, "ac_power", "a", now=1.0)
    assert cleared == Rejected(code="NOT_FOUND", details="no component 4242")


def test_bounds_without_a_token_are_each_their_own() -> None:
    world = one_pair()
    add(world, [(-100.0, 100.0)], lifetime=10)
    add(world, [(-50.0, 400.0)], lifetime=20)
    assert world.allowed_ranges(2001) == ((-50.0, 100.0),)
    world.advance(10.0)
    assert world.allowed_ranges(2001) == ((-50.0, 400.0),)


def test_a_held_setpoint_outside_new_bounds_is_brought_to_the_nearest_allowed_power() -> None:
    world = one_pair()
    world.command(2001, 3000.0, 60, now=0.0)
    add(world, [(-1000.0, 1000.0)], now=1.0, lifetime=5)
    assert world.inverter_power(2001) == 1000.0
    world.advance(10.0)  # the bounds went; the setpoint stays where it was brought
    assert world.inverter_power(2001) == 1000.0
    changes = [e for e in world.snapshot_record().events() if isinstance(e, Change)]
    assert [(c.at, c.from_w, c.to_w) for c in changes] == [
        (0.0, 0.0, 3000.0),
        (1.0, 3000.0, 1000.0),
    ]
    # Nothing allowed on its side of 0: it goes to 0, never the other way.
    world.command(2001, -2000.0, 60, now=11.0)
    add(world, [(500.0, 800.0)], now=12.0)
    assert world.inverter_power(2001) == 0.0
    # Inside the bounds: nothing changes.
    world.command(2001, 600.0, 60, now=13.0)
    add(world, [(0.0, 700.0)], now=14.0)
    assert world.inverter_power(2001) == 600.0


@pytest.mark.parametrize(
    ("component", "metric", "ranges", "lifetime", "code", "details"),
    [
        (4242, "ac_power", [(-1.0, 1.0)], 60, "NOT_FOUND", "no component 4242"),
        (1001, "ac_power", [(-1.0, 1.0)], 60, "INVALID_ARGUMENT", "component 1001 are not"),
        (1, "ac_power", [(-1.0, 1.0)], 60, "INVALID_ARGUMENT", "not simulated"),
        (2001, "dc_power", [(-1.0, 1.0)], 60, "INVALID_ARGUMENT", "dc_power of inverter 2001"),
        (2001, "METRIC_AC_FREQUENCY", [(49.0, 51.0)], 60, "INVALID_ARGUMENT", "METRIC_AC_FREQ"),
        (2001, "ac_power", [(-1.0, 1.0)], 4, "INVALID_ARGUMENT", "5..900 s, got 4"),
        (2001, "ac_power", [(-1.0, 1.0)], 901, "INVALID_ARGUMENT", "5..900 s, got 901"),
        (2001, "ac_power", [], 60, "INVALID_ARGUMENT", "no bounds given"),
        (2001, "ac_power", [(0.0, 1.0), (2.0, 1.0)], 60, "INVALID_ARGUMENT", "bounds[1]"),
        (2001, "ac_power", [(math.nan, 1.0)], 60, "INVALID_ARGUMENT", "bounds[0]"),
        (2001, "ac_power", [(math.inf, None)], 60, "INVALID_ARGUMENT", "bounds[0]"),
        (2001, "ac_power", [(None, -math.inf)], 60, "INVALID_ARGUMENT", "bounds[0]"),
    ],
)
def test_refused_bounds_change_nothing(
    component: int,
    metric: str,
    ranges: list[tuple[float | None, float | None]],
    lifetime: int,
    code: str,
    details: str,
) -> None:
    world = one_pair()
    result = add(world, ranges, lifetime=lifetime, component=component, metric=metric)
    assert isinstance(result, Rejected)
    assert result.code == code
    assert details in result.details
    assert world.allowed_ranges(2001) == ((-5000.0, 5000.0),)
    assert world.next_bounds_expiry() == math.inf


quarters = st.integers(min_value=-200, max_value=200).map(lambda n: Fraction(n, 4))
closed_ranges = st.lists(
    st.tuples(quarters, quarters).map(lambda r: (min(r), max(r))),
    max_size=5,
)


@given(
    first=closed_ranges,
    second=closed_ranges,
    point=st.integers(min_value=-1700, max_value=1700).map(lambda n: Fraction(n, 8)),
)
def test_intersect_and_merge_keep_exactly_the_points_both_allow(
    first: list[tuple[Fraction, Fraction]],
    second: list[tuple[Fraction, Fraction]],
    point: Fraction,
) -> None:
    # The oracle: membership, in exact arithmetic. Quarters and eighths are exact in a float.
    def within(ranges: Iterable[tuple[float, float] | tuple[Fraction, Fraction]]) -> bool:
        return any(Fraction(low) <= point <= Fraction(high) for low, high in ranges)

    def floats(ranges: list[tuple[Fraction, Fraction]]) -> list[tuple[float, float]]:
        return [(float(low), float(high)) for low, high in ranges]

    both = intersect(floats(first), floats(second))
    assert within(both) == (within(first) and within(second))
    assert within(merge(floats(first))) == within(first)
    for (_, high), (low, _) in itertools.pairwise(both):
        assert high < low  # ascending, disjoint, not touching
    assert all(low <= high for low, high in both)


# --- start, standby, stop, acknowledge -------------------------------------------------------


def test_a_stopped_inverter_drops_its_setpoint_reports_off_and_refuses_until_started() -> None:
    world = one_pair()
    world.command(2001, 2000.0, 60, now=0.0)
    assert world.control(2001, "stop", now=10.0) is None
    assert world.mode(2001) is Mode.STOPPED
    assert world.inverter_power(2001) == 0.0
    world.advance(20.0)
    assert world.soc(1001) == pytest.approx(50.0 + 10 * 2000.0 / 3600.0 * RATE_PCT_PER_S)
    reading = world.inverter_reading(2001, Faults())
    assert (reading.states, reading.power_ranges) == ((StateCode.OFF,), ((0.0, 0.0),))
    for power in (1000.0, 0.0):
        refused = world.command(2001, power, 60, now=21.0)
        assert refused == Rejected(
            code="FAILED_PRECONDITION", details="inverter 2001 is stopped: start it first"
        )
    assert world.control(2001, "start", now=22.0) is None
    assert world.mode(2001) is Mode.RUNNING
    assert world.inverter_reading(2001, Faults()).states == (StateCode.READY,)
    assert isinstance(world.command(2001, 1000.0, 60, now=23.0), Accepted)
    changes = [e for e in world.snapshot_record().events() if isinstance(e, Change)]
    assert [(c.at, c.to_w) for c in changes] == [(0.0, 2000.0), (10.0, 0.0), (23.0, 1000.0)]
    assert world.next_expiry() == 83.0  # the dropped setpoint's expiry is gone


def test_standby_drops_the_setpoint_and_the_next_command_brings_the_inverter_back() -> None:
    world = one_pair()
    world.command(2001, -1500.0, 60, now=0.0)
    assert world.control(2001, "standby", now=1.0) is None
    assert world.control(2001, "standby", now=2.0) is None  # already: nothing to do
    assert world.inverter_power(2001) == 0.0
    assert world.inverter_reading(2001, Faults()).states == (StateCode.STANDBY,)
    assert world.inverter_reading(2001, Faults()).power_ranges == ((-5000.0, 5000.0),)
    assert isinstance(world.command(2001, -1000.0, 60, now=3.0), Accepted)
    assert world.mode(2001) is Mode.RUNNING
    assert world.inverter_power(2001) == -1000.0
    world.control(2001, "stop", now=4.0)
    refused = world.control(2001, "standby", now=5.0)
    assert isinstance(refused, Rejected)
    assert refused.code == "FAILED_PRECONDITION"
    assert "start it before" in refused.details
    assert world.mode(2001) is Mode.STOPPED


def test_a_battery_stops_at_zero_only_and_then_takes_no_power() -> None:
    world = one_pair()
    world.command(2001, 1000.0, 60, now=0.0)
    refused = world.control(1001, "stop", now=1.0)
    assert refused == Rejected(
        code="FAILED_PRECONDITION", details="battery 1001 carries 1000 W: it stops at 0 W only"
    )
    world.command(2001, 0.0, 60, now=2.0)
    assert world.control(1001, "stop", now=3.0) is None
    reading = world.battery_reading(1001, Faults())
    assert reading.states == (StateCode.OFF, StateCode.RELAY_OPEN)
    assert reading.power_ranges == ((0.0, 0.0),)
    commanded = world.command(2001, 500.0, 60, now=4.0)
    assert isinstance(commanded, Rejected)
    assert commanded.code == "OUT_OF_RANGE"
    assert "battery 1001's bounds [0, 0]" in commanded.details
    assert world.control(1001, "start", now=5.0) is None
    assert StateCode.RELAY_CLOSED in world.battery_reading(1001, Faults()).states
    assert isinstance(world.command(2001, 500.0, 60, now=6.0), Accepted)


@pytest.mark.parametrize(
    ("component", "action", "code", "details"),
    [
        (4242, "start", "NOT_FOUND", "no component 4242"),
        (1001, "standby", "INVALID_ARGUMENT", "battery 1001 has no standby"),
        (1, "stop", "INVALID_ARGUMENT", "component 1 is not switched by the simulator"),
        (2, "start", "INVALID_ARGUMENT", "only inverters and batteries"),
    ],
)
def test_what_cannot_be_switched_is_refused(
    component: int, action: str, code: str, details: str
) -> None:
    result = one_pair().control(component, action, now=0.0)
    assert isinstance(result, Rejected)
    assert result.code == code
    assert details in result.details


def test_acknowledging_an_error_stops_the_component_and_nothing_else() -> None:
    world = one_pair()
    world.command(2001, 1000.0, 60, now=0.0)
    assert world.acknowledge(2001, error=False, now=1.0) is None
    assert world.mode(2001) is Mode.RUNNING
    assert world.inverter_power(2001) == 1000.0
    assert world.acknowledge(2001, error=True, now=2.0) is None
    assert world.mode(2001) is Mode.STOPPED
    assert world.inverter_power(2001) == 0.0
    assert world.acknowledge(1001, error=True, now=3.0) is None
    assert world.mode(1001) is Mode.STOPPED
    assert world.acknowledge(2, error=True, now=3.0) is None  # the meter: no error to clear
    assert world.acknowledge(4242, error=True, now=3.0) == Rejected(
        code="NOT_FOUND", details="no component 4242"
    )


def test_switching_an_inverter_drops_its_reactive_setpoint_and_a_stopped_one_refuses_it() -> None:
    world = one_pair()
    assert isinstance(world.command_reactive(2001, 800.0, 60, now=0.0), Accepted)
    world.control(2001, "standby", now=1.0)
    assert world.reactive_power(2001) == 0.0
    assert isinstance(world.command_reactive(2001, -300.0, 60, now=2.0), Accepted)
    assert world.mode(2001) is Mode.RUNNING  # a reactive command brings it back too
    world.control(2001, "stop", now=3.0)
    assert world.reactive_power(2001) == 0.0
    refused = world.command_reactive(2001, 100.0, 60, now=4.0)
    assert isinstance(refused, Rejected)
    assert refused.code == "FAILED_PRECONDITION"


def test_a_client_cannot_pile_up_bounds_without_end() -> None:
    world = one_pair()
    too_many = [(float(k), k + 0.5) for k in range(MAX_BOUNDS_RANGES + 1)]
    refused = add(world, too_many)
    assert isinstance(refused, Rejected)
    assert refused.code == "INVALID_ARGUMENT"
    assert f"at most {MAX_BOUNDS_RANGES}" in refused.details
    assert isinstance(add(world, too_many[:MAX_BOUNDS_RANGES], token="t"), Accepted)
    for _ in range(MAX_CONTRIBUTIONS - 1):
        assert isinstance(add(world, [(-100.0, 100.0)]), Accepted)
    full = add(world, [(-100.0, 100.0)])
    assert isinstance(full, Rejected)
    assert full.code == "RESOURCE_EXHAUSTED"
    assert f"holds {MAX_CONTRIBUTIONS} added bounds" in full.details
    assert isinstance(add(world, [(-50.0, 50.0)], token="t"), Accepted)  # replaces its own
    assert world.clear_bounds(2001, "ac_power", "t", now=1.0) is None
    assert isinstance(add(world, [(-100.0, 100.0)]), Accepted)  # room again


# --- ramping inverters -------------------------------------------------------------------------


def ramping_pair(
    *, soc: float = 50.0, rate: float = 1800.0, limit: float = 5000.0, scale: float = 1.0
) -> World:
    """One battery (10 kWh) behind an inverter that ramps at ``rate`` W/s: 3600 W in 2 s."""
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=soc, power_limit_w=limit),),
        inverters=(InverterSpec(id=2001, batteries=(1001,), ramp_w_per_s=rate),),
    )
    return World(scenario, now=0.0, lifetime_scale=scale)


def test_a_ramping_inverter_applies_its_setpoint_linearly_at_its_rate() -> None:
    world = ramping_pair()
    world.command(2001, 3600.0, 60, now=0.0)
    assert world.applied_power(2001) == 0.0
    assert world.settles_at(2001) == 2.0
    world.advance(0.5)
    assert (world.applied_power(2001), world.inverter_power(2001)) == (900.0, 900.0)
    assert world.battery_power(1001) == 900.0
    assert world.meter_reading().power_w == 900.0
    world.advance(2.0)
    assert world.applied_power(2001) == 3600.0
    assert world.settles_at(2001) == 2.0  # reached: now
    world.advance(10.0)
    # 1 s of 3600 W while ramping (the trapezoid's half of 2 s), then 8 s: 0.01 %/s for 9 s.
    assert world.soc(1001) == pytest.approx(50.0 + 9 * RATE_PCT_PER_S, abs=1e-12)


def test_an_expired_setpoint_ramps_down_to_zero_at_the_same_rate() -> None:
    world = ramping_pair()
    world.command(2001, 3600.0, 10, now=0.0)
    assert world.advance(11.0) == [2001]
    assert world.applied_power(2001) == 1800.0  # 1 s after the expiry at 10 s
    assert world.inverter_power(2001) == 1800.0
    assert world.meter_reading().power_w == 1800.0  # no setpoint held, still carrying
    assert world.settles_at(2001) == 12.0
    world.advance(20.0)
    assert world.applied_power(2001) == 0.0
    # Up 1 s-equivalent, held 8 s, down 1 s-equivalent: 10 s of 3600 W.
    assert world.soc(1001) == pytest.approx(50.0 + 10 * RATE_PCT_PER_S, abs=1e-12)


def test_a_new_setpoint_ramps_from_what_is_applied_through_zero() -> None:
    world = ramping_pair()
    world.command(2001, 3600.0, 60, now=0.0)
    world.command(2001, -3600.0, 60, now=1.0)  # at 1800 W: 5400 W to go, 3 s
    assert world.settles_at(2001) == 4.0
    world.advance(2.0)
    assert world.applied_power(2001) == 0.0
    world.advance(3.0)
    assert (world.applied_power(2001), world.battery_power(1001)) == (-1800.0, -1800.0)
    world.advance(4.0)
    # Charged 900 Ws up to 1 s (half of 1 s at 1800 W) and 900 Ws more down to 0 W at 2 s;
    # discharged 3600 Ws from 2 to 4 s: net -1800 Ws, half a second of 3600 W.
    assert world.soc(1001) == pytest.approx(50.0 - 0.5 * RATE_PCT_PER_S, abs=1e-12)


def test_a_soc_bound_reached_during_a_ramp_holds_the_power_until_the_ramp_turns() -> None:
    # 0.01 % below full: the ramp to 3600 W (2 s, 0.01 %) fills it exactly at 2 s. At 5 s the
    # setpoint turns to -3600 W: the ramp crosses 0 at 7 s and discharges from then on, 0.01 %
    # by 9 s. Integrated over 5..9 s in one piece the mean power is 0 and the SoC stayed full.
    world = ramping_pair(soc=89.99)
    world.command(2001, 3600.0, 60, now=0.0)
    world.command(2001, -3600.0, 60, now=5.0)
    world.advance(9.0)
    assert world.soc(1001) == pytest.approx(89.99, abs=1e-12)
    assert world.battery_power(1001) == -3600.0


def test_a_battery_limit_crossed_during_a_ramp_is_exact() -> None:
    # Two inverters on one battery (an odd shape), each ramping to 3600 W at 1800 W/s: the
    # battery's 5000 W limit is reached at 25/18 s, and the power stays there.
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=50.0),),
        inverters=(
            InverterSpec(id=2001, batteries=(1001,), ramp_w_per_s=1800.0),
            InverterSpec(id=2002, batteries=(1001,), ramp_w_per_s=1800.0),
        ),
    )
    world = World(scenario, now=0.0)
    world.command(2001, 3600.0, 60, now=0.0)
    world.command(2002, 3600.0, 60, now=0.0)
    world.advance(10.0)
    crossed = Fraction(25, 18)
    energy_ws = Fraction(5000) * crossed / 2 + 5000 * (10 - crossed)
    expected = Fraction(50) + energy_ws * 100 / 3600 / 10_000
    assert world.soc(1001) == pytest.approx(float(expected), abs=1e-12)
    assert world.battery_power(1001) == 5000.0


def test_a_stop_cuts_a_ramping_inverters_power_at_once_and_the_record_says_so() -> None:
    world = ramping_pair()
    world.command(2001, 3600.0, 10, now=0.0)
    world.advance(11.0)  # expired at 10 s, ramping down: 1800 W
    assert world.control(2001, "stop", now=11.0) is None
    assert (world.applied_power(2001), world.battery_power(1001)) == (0.0, 0.0)
    record = world.snapshot_record()
    assert record.changes()[-1] == Change(
        inverter_id=2001, at=11.0, from_w=0.0, to_w=0.0, until=math.inf, at_once=True
    )
    assert record.log(2001).applied(11.0) == [
        (0.0, 0.0),
        (2.0, 3600.0),
        (10.0, 3600.0),
        (11.0, 1800.0),
        (11.0, 0.0),
    ]


def test_the_record_gives_the_applied_power_at_any_instant_as_the_world_does() -> None:
    world = ramping_pair()
    world.command(2001, -4000.0, 10, now=1.0)
    world.command(2001, 1000.0, 10, now=2.5)
    applied: dict[float, float] = {}
    for step in range(100):
        world.advance(step * 0.25)
        applied[world.time] = world.applied_power(2001)
    record = world.snapshot_record()
    for at, power in applied.items():
        assert record.applied_at(2001, at) == pytest.approx(power, abs=1e-9), at
    assert record.log(2001).applied(world.time) == [
        (0.0, 0.0),
        (1.0, 0.0),  # the command: the ramp starts
        (2.5, -2700.0),  # the ramp turned 1.5 s into its way to -4000 W
        (2.5 + 3700.0 / 1800.0, 1000.0),  # 3700 W up at 1800 W/s
        (12.5, 1000.0),  # the expiry
        (12.5 + 1000.0 / 1800.0, 0.0),
        (world.time, 0.0),
    ]
    assert record.held_at(2001, 3.0) == 1000.0  # what it held: the setpoint, at once


def test_a_ramp_survives_the_record_forgetting_its_start() -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=50.0),),
        inverters=(InverterSpec(id=2001, batteries=(1001,), ramp_w_per_s=100.0),),
    )
    short = World(scenario, now=0.0, record_maxlen=2)
    full = World(scenario, now=0.0)
    for world in (short, full):
        world.command(2001, 3000.0, 60, now=0.0)
        world.command(2001, -3000.0, 60, now=10.0)
        world.command(2001, 0.0, 60, now=20.0)
        world.advance(40.0)
    kept, everything = short.snapshot_record(), full.snapshot_record()
    assert kept.log(2001).start == 10.0  # the first events forgotten, folded into the base
    assert kept.log(2001).start_applied_w == 1000.0  # 10 s into the ramp to 3000 W
    assert kept.applied_at(2001, 15.0) == 500.0  # on its way to -3000 W
    for at in (10.0, 15.0, 20.0, 25.0, 30.0, 40.0):
        assert kept.applied_at(2001, at) == everything.applied_at(2001, at)
    assert kept.applied_at(2001, 40.0) == short.applied_power(2001) == 0.0


def test_without_a_ramp_rate_the_applied_power_is_the_setpoint_at_once() -> None:
    world = one_pair()
    world.command(2001, 3600.0, 10, now=0.0)
    assert world.applied_power(2001) == 3600.0
    assert world.settles_at(2001) == 0.0
    world.advance(10.0)
    assert world.applied_power(2001) == 0.0
    record = world.snapshot_record()
    assert record.applied_at(2001, 5.0) == record.held_at(2001, 5.0) == 3600.0
    assert record.log(2001).applied(12.0) == [
        (0.0, 0.0),
        (0.0, 3600.0),
        (10.0, 3600.0),
        (10.0, 0.0),
        (12.0, 0.0),
    ]


def ramping_world() -> World:
    """Two batteries with every kind of corner.

    One behind two ramping inverters (one of them slow), one behind a ramping and a stepping
    one.
    """
    scenario = Scenario(
        batteries=(
            BatterySpec(id=1001, soc_pct=50.0, capacity_wh=100.0),
            BatterySpec(id=1002, soc_pct=12.0, capacity_wh=50.0, power_limit_w=2000.0),
        ),
        inverters=(
            InverterSpec(id=2001, batteries=(1001,), ramp_w_per_s=700.0),
            InverterSpec(id=2002, batteries=(1001,), ramp_w_per_s=90.0),
            InverterSpec(id=2003, batteries=(1002,), ramp_w_per_s=400.0),
            InverterSpec(id=2004, batteries=(1002,)),
        ),
    )
    return World(scenario, now=0.0, lifetime_scale=0.2)


@given(_steps([2001, 2002, 2003, 2004], 20.0))
def test_ramping_batteries_read_rarely_or_often_give_the_same_state(steps: list[_Step]) -> None:
    # Integrated piece by piece: reads inside ramps and after them, not only at the end.
    check_eager_equals_lazy(ramping_world, steps, (1001, 1002), 2000.0, (0.3, 1.7, 100.0))
