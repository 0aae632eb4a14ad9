"""An inverter's apparent-power limit S in the simulator: the scenario key, refusals, curtailment.

The simulator keeps ``P² + Q² <= S²``: a command whose own value exceeds ``S`` is refused as
one out of range is; when an accepted pair exceeds it, the inverter curtails its reactive
power to ``√(S² − P²)`` (active power first, as most inverters do) and reports that. Its
telemetry carries the apparent-power bounds ``[0, S]``.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.errors import ScenarioError
from distributord.sim.scenario import BatterySpec, Faults, InverterSpec, Scenario, parse_scenario
from distributord.sim.world import Accepted, Rejected, World

S = 4_000.0

SCENARIO = Scenario(
    batteries=(
        BatterySpec(id=1001, soc_pct=50.0, capacity_wh=1e9),
        BatterySpec(id=1002, soc_pct=50.0),
    ),
    inverters=(
        InverterSpec(id=2001, batteries=(1001,), power_limit_w=5_000.0, apparent_limit_va=S),
        InverterSpec(id=2002, batteries=(1002,), power_limit_w=5_000.0),
    ),
)


def world(scale: float = 1.0) -> World:
    return World(SCENARIO, now=0.0, lifetime_scale=scale)


# --- the scenario key ---------------------------------------------------------------------------


def test_by_default_an_inverter_has_no_apparent_limit() -> None:
    assert InverterSpec(id=2001, batteries=(1001,)).apparent_limit_va is None
    assert parse_scenario(b"", batteries=1, seed=0).inverters[0].apparent_limit_va is None


def test_the_key_from_a_file_is_the_one_from_python() -> None:
    text = b"[[battery]]\nid = 1001\nsoc_pct = 50\n[[inverter]]\nid = 2001\nbatteries = [1001]\n"
    scenario = parse_scenario(text + b"apparent_limit_va = 4500\n")
    assert scenario.inverters[0] == InverterSpec(
        id=2001, batteries=(1001,), apparent_limit_va=4_500.0
    )


@pytest.mark.parametrize(
    ("value", "problem"), [("-1", "between 0"), ("inf", "finite"), ("nan", ""), ("'4k'", "number")]
)
def test_a_bad_apparent_limit_names_its_key(value: str, problem: str) -> None:
    text = "[[battery]]\nid = 1001\nsoc_pct = 50\n[[inverter]]\nid = 2001\nbatteries = [1001]\n"
    with pytest.raises(ScenarioError) as caught:
        parse_scenario((text + f"apparent_limit_va = {value}\n").encode(), source="bad.toml")
    assert caught.value.key == "inverter[0].apparent_limit_va"
    assert problem in caught.value.problem


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("power", [4_000.5, -4_001.0, 5_000.0])
def test_an_active_command_beyond_s_is_refused_though_within_the_power_limit(power: float) -> None:
    w = world()
    result = w.command(2001, power, 60, now=1.0)
    assert isinstance(result, Rejected)
    assert result.code == "OUT_OF_RANGE"
    assert "apparent" in result.details
    assert w.inverter_power(2001) == 0.0
    # Another inverter, without a limit, takes it.
    assert isinstance(w.command(2002, power, 60, now=1.0), Accepted)


@pytest.mark.parametrize("var", [4_000.5, -4_500.0])
def test_a_reactive_command_beyond_s_is_refused_though_within_its_reactive_limit(
    var: float,
) -> None:
    w = world()
    result = w.command_reactive(2001, var, 60, now=1.0)  # its reactive limit is 5000 var
    assert isinstance(result, Rejected)
    assert result.code == "OUT_OF_RANGE"
    assert "apparent" in result.details
    assert w.reactive_power(2001) == 0.0


def test_commands_of_exactly_s_are_accepted() -> None:
    w = world()
    assert isinstance(w.command(2001, -S, 60, now=1.0), Accepted)
    assert isinstance(w.command_reactive(2002, 5_000.0, 60, now=1.0), Accepted)  # no limit
    w2 = world()
    assert isinstance(w2.command_reactive(2001, S, 60, now=1.0), Accepted)
    assert w2.reactive_power(2001) == S  # no active power: all of S is reactive


# --- curtailment: active power first --------------------------------------------------------------


def test_reactive_power_is_curtailed_to_what_the_active_power_leaves() -> None:
    w = world()
    assert isinstance(w.command_reactive(2001, -3_500.0, 60, now=0.0), Accepted)
    assert w.reactive_power(2001) == -3_500.0
    assert isinstance(w.command(2001, 3_000.0, 60, now=1.0), Accepted)  # active first
    assert w.inverter_power(2001) == 3_000.0
    assert w.reactive_power(2001) == -math.sqrt(S**2 - 3_000.0**2)
    reading = w.inverter_reading(2001, Faults())
    assert reading.power_w == 3_000.0
    assert reading.reactive_power_var == w.reactive_power(2001)
    assert math.hypot(reading.power_w, reading.reactive_power_var) == pytest.approx(S)
    assert w.site_reactive_power() == w.reactive_power(2001)


def test_the_reactive_setpoint_comes_back_when_the_active_power_goes() -> None:
    w = world(scale=0.1)
    w.command_reactive(2001, 3_500.0, 60, now=0.0)  # holds 6 s
    w.command(2001, -3_900.0, 10, now=0.0)  # holds 1 s
    w.advance(0.5)
    assert w.reactive_power(2001) == pytest.approx(math.sqrt(S**2 - 3_900.0**2))
    w.advance(2.0)
    assert w.inverter_power(2001) == 0.0
    assert w.reactive_power(2001) == 3_500.0


def test_an_inverter_without_a_limit_is_never_curtailed() -> None:
    w = world()
    w.command(2002, 5_000.0, 60, now=0.0)
    w.command_reactive(2002, -5_000.0, 60, now=0.0)
    assert (w.inverter_power(2002), w.reactive_power(2002)) == (5_000.0, -5_000.0)


POWERS = st.floats(-S, S, allow_nan=False).map(lambda x: round(x, 3))
"""Powers within S to the milliwatt (the world's battery arithmetic is not for subnormals)."""


@given(p=POWERS, q=POWERS, reactive_first=st.booleans())
def test_what_it_reports_never_exceeds_s_and_keeps_the_reactive_sign(
    p: float, q: float, reactive_first: bool
) -> None:
    w = world()
    if reactive_first:
        assert isinstance(w.command_reactive(2001, q, 60, now=1.0), Accepted)
    assert isinstance(w.command(2001, p, 60, now=1.0), Accepted)
    if not reactive_first:
        assert isinstance(w.command_reactive(2001, q, 60, now=1.0), Accepted)
    active, reactive = w.inverter_power(2001), w.reactive_power(2001)
    assert active == pytest.approx(p, abs=1e-9)  # active power first: never curtailed
    assert abs(reactive) <= abs(q)
    assert reactive == 0.0 or math.copysign(1.0, reactive) == math.copysign(1.0, q)
    assert active**2 + reactive**2 <= S**2 * (1 + 1e-12)
    if p**2 + q**2 <= S**2:
        assert reactive == q  # within S: untouched


# --- telemetry ----------------------------------------------------------------------------------


def test_an_inverter_with_a_limit_reports_its_apparent_bounds() -> None:
    w = world()
    assert w.inverter_reading(2001, Faults()).apparent_ranges == ((0.0, S),)
    assert w.inverter_reading(2002, Faults()).apparent_ranges is None  # no limit: none
    assert w.inverter_reading(2001, Faults(missing_bounds=True)).apparent_ranges is None
    # Reactive bounds stay its reactive limit's, symmetric.
    assert w.inverter_reading(2001, Faults()).reactive_ranges == ((-5_000.0, 5_000.0),)
