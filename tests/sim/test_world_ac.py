"""The world's reactive power and the AC side of its readings, with time passed in."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.sim.scenario import BatterySpec, Faults, InverterSpec, Scenario
from distributord.sim.world import (
    EMPTY_VOLTAGE_FRACTION,
    HEATING_C,
    Accepted,
    Rejected,
    World,
    battery_voltage,
)

SCENARIO = Scenario(
    batteries=(
        BatterySpec(id=1001, soc_pct=50.0, dc_voltage_v=1000.0),
        BatterySpec(id=1002, soc_pct=50.0),
    ),
    inverters=(
        InverterSpec(id=2001, batteries=(1001,), between=("relay",)),
        InverterSpec(id=2002, batteries=(1002,), type="pv", reactive_limit_var=1_000.0),
    ),
    ac_frequency_hz=49.95,
    ac_voltage_v=231.0,
    ambient_temperature_c=15.0,
)
RELAY = 12001


def world(scale: float = 1.0) -> World:
    return World(SCENARIO, now=0.0, lifetime_scale=scale)


@pytest.mark.parametrize(
    ("inverter", "var", "lifetime", "code"),
    [
        (2001, 5_000.1, 60, "OUT_OF_RANGE"),  # default limit: the active power limit
        (2001, -5_000.1, 60, "OUT_OF_RANGE"),
        (2002, 1_000.5, 60, "OUT_OF_RANGE"),  # its own limit
        (2002, -1e300, 60, "OUT_OF_RANGE"),
        (2002, float("nan"), 60, "INVALID_ARGUMENT"),
        (2002, float("inf"), 60, "INVALID_ARGUMENT"),
        (2002, 0.0, 9, "INVALID_ARGUMENT"),
        (2002, 0.0, 901, "INVALID_ARGUMENT"),
        (1001, 0.0, 60, "INVALID_ARGUMENT"),  # a battery
        (2, 0.0, 60, "INVALID_ARGUMENT"),  # the meter
        (RELAY, 0.0, 60, "INVALID_ARGUMENT"),
        (9999, 0.0, 60, "NOT_FOUND"),
    ],
)
def test_refused_reactive_commands(inverter: int, var: float, lifetime: int, code: str) -> None:
    w = world()
    result = w.command_reactive(inverter, var, lifetime, now=1.0)
    assert isinstance(result, Rejected)
    assert result.code == code
    assert result.details  # says what was wrong
    assert w.reactive_power(2001) == w.reactive_power(2002) == 0.0


@pytest.mark.parametrize(
    ("inverter", "var"),
    [(2001, 5_000.0), (2001, -5_000.0), (2002, 1_000.0), (2002, -1_000.0), (2002, 0.0)],
)
def test_reactive_commands_within_the_limit_are_applied(inverter: int, var: float) -> None:
    w = world()
    assert w.command_reactive(inverter, var, None, now=1.0) == Accepted(lifetime_s=60, until=61.0)
    assert w.reactive_power(inverter) == var


def test_a_reactive_setpoint_reverts_to_zero_at_its_lifetime_and_moves_no_energy() -> None:
    w = world(scale=0.5)
    w.command_reactive(2001, 3_000.0, 10, now=0.0)
    assert w.next_reactive_expiry() == 5.0
    w.advance(4.999)
    assert w.reactive_power(2001) == 3_000.0
    assert w.soc(1001) == 50.0
    assert w.battery_power(1001) == 0.0
    w.advance(5.0)
    assert w.reactive_power(2001) == 0.0
    assert w.next_reactive_expiry() == float("inf")
    assert w.snapshot_record().events([2001]) == []  # the record is the active power's


def test_reactive_and_active_setpoints_are_independent() -> None:
    w = world()
    w.command(2001, 2_000.0, 20, now=0.0)
    w.command_reactive(2001, -700.0, 60, now=0.0)
    w.advance(30.0)
    assert w.inverter_power(2001) == 0.0
    assert w.reactive_power(2001) == -700.0


def test_an_inverter_reading_has_its_ac_side() -> None:
    w = world()
    w.command(2001, -2_500.0, 60, now=0.0)
    w.command_reactive(2001, 400.0, 60, now=0.0)
    reading = w.inverter_reading(2001, Faults())
    assert reading.power_w == -2_500.0
    assert reading.reactive_power_var == 400.0
    assert reading.reactive_ranges == ((-5_000.0, 5_000.0),)
    assert reading.frequency_hz == 49.95
    assert reading.voltage_v == 231.0
    assert reading.temperature_c == 15.0 + HEATING_C / 2
    assert w.inverter_reading(2002, Faults()).reactive_ranges == ((-1_000.0, 1_000.0),)
    assert w.inverter_reading(2002, Faults(missing_bounds=True)).reactive_ranges is None


def test_meters_and_lines_report_the_reactive_power_behind_them() -> None:
    w = world()
    w.command_reactive(2001, 400.0, 60, now=0.0)
    w.command_reactive(2002, -1_000.0, 30, now=0.0)
    assert w.meter_reading().reactive_power_var == -600.0
    assert w.line_reading(2001).reactive_power_var == 400.0
    w.advance(30.0)
    assert w.meter_reading().reactive_power_var == 400.0
    for reading in (w.meter_reading(), w.line_reading(2001)):
        assert reading.frequency_hz == 49.95
        assert reading.voltage_v == 231.0
        assert reading.temperature_c is None
        assert reading.reactive_ranges is None


def test_a_battery_reading_has_its_voltage_and_temperature() -> None:
    w = world()
    w.command(2001, 5_000.0, 60, now=0.0)
    reading = w.battery_reading(1001, Faults())
    assert reading.dc_voltage_v == 950.0  # 50 % between 900 V (empty) and 1000 V (full)
    assert reading.temperature_c == 15.0 + HEATING_C  # at its power limit
    assert w.battery_reading(1002, Faults()).temperature_c == 15.0  # idle


@given(
    full=st.floats(min_value=1e-3, max_value=1e6),
    soc=st.floats(min_value=0.0, max_value=100.0),
)
def test_battery_voltage_is_linear_in_soc_between_empty_and_full(full: float, soc: float) -> None:
    empty = Fraction(full) * Fraction(EMPTY_VOLTAGE_FRACTION)
    exact = empty + (Fraction(full) - empty) * Fraction(soc) / 100
    assert battery_voltage(full, soc) == pytest.approx(float(exact), rel=1e-12)
    assert full * EMPTY_VOLTAGE_FRACTION * (1 - 1e-12) <= battery_voltage(full, soc)
    assert battery_voltage(full, soc) <= full * (1 + 1e-12)
