"""The scenario keys of the AC side and of reactive power: defaults, the file, the checks."""

from __future__ import annotations

import math
import pathlib

import pytest

from distributord.core.errors import ScenarioError
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario, parse_scenario

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent.parent / "config" / "sim-scenario.toml"

BATTERY = "[[battery]]\nid = 1001\nsoc_pct = 50\n"
INVERTER = "[[inverter]]\nid = 2001\nbatteries = [1001]\n"


def test_defaults_are_a_european_low_voltage_site() -> None:
    scenario = parse_scenario(b"", batteries=1, seed=0)
    assert (scenario.ac_frequency_hz, scenario.ac_voltage_v) == (50.0, 230.0)
    assert scenario.ambient_temperature_c == 25.0
    assert scenario.batteries[0].dc_voltage_v == 800.0
    inverter = scenario.inverters[0]
    assert inverter.reactive_limit_var is None
    assert inverter.reactive_limit == inverter.power_limit_w


def test_the_documented_example_sets_every_key() -> None:
    scenario = parse_scenario(EXAMPLE.read_bytes(), source=str(EXAMPLE))
    assert scenario.ac_frequency_hz == 50.0
    assert scenario.ac_voltage_v == 230.0
    assert scenario.ambient_temperature_c == 25.0
    assert scenario.batteries[0].dc_voltage_v == 800.0
    assert scenario.inverters[0].reactive_limit == 5_000.0


def test_keys_from_a_file_and_from_python_are_the_same() -> None:
    text = (
        "[simulation]\nac_frequency_hz = 60\nac_voltage_v = 120\nambient_temperature_c = -5\n"
        + BATTERY
        + "dc_voltage_v = 48\n"
        + INVERTER
        + "reactive_limit_var = 1500\n"
    )
    assert parse_scenario(text.encode()) == Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=50.0, dc_voltage_v=48.0),),
        inverters=(InverterSpec(id=2001, batteries=(1001,), reactive_limit_var=1_500.0),),
        ac_frequency_hz=60.0,
        ac_voltage_v=120.0,
        ambient_temperature_c=-5.0,
    )
    fleet = parse_scenario(b"[simulation]\nac_voltage_v = 240\n", batteries=2)
    assert fleet.ac_voltage_v == 240.0


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[simulation]\nac_frequency_hz = 0\n", "simulation.ac_frequency_hz", "positive"),
        ("[simulation]\nac_frequency_hz = '50'\n", "simulation.ac_frequency_hz", "a number"),
        ("[simulation]\nac_voltage_v = -230\n", "simulation.ac_voltage_v", "positive"),
        ("[simulation]\nac_voltage_v = nan\n", "simulation.ac_voltage_v", "finite"),
        ("[simulation]\nambient_temperature_c = 101\n", "simulation.ambient_temperature_c", "100"),
        (BATTERY + "dc_voltage_v = 0\n", "battery[0].dc_voltage_v", "positive"),
        (BATTERY + "dc_voltage_v = true\n", "battery[0].dc_voltage_v", "a number"),
        (
            BATTERY + INVERTER + "reactive_limit_var = -1\n",
            "inverter[0].reactive_limit_var",
            "between 0",
        ),
        (
            BATTERY + INVERTER + "reactive_limit_var = inf\n",
            "inverter[0].reactive_limit_var",
            "finite",
        ),
    ],
)
def test_a_bad_value_names_its_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text.encode(), source="bad.toml")
    assert caught.value.key == key
    assert problem in caught.value.problem


@pytest.mark.parametrize("value", [math.inf, -1.0, math.nan])
def test_python_values_are_checked_the_same_way(value: float) -> None:
    with pytest.raises(ScenarioError) as caught:
        InverterSpec(id=2001, batteries=(), reactive_limit_var=value)
    assert caught.value.key == "reactive_limit_var"
    with pytest.raises(ScenarioError):
        BatterySpec(id=1001, soc_pct=50.0, dc_voltage_v=value)
    with pytest.raises(ScenarioError):
        Scenario(batteries=(), inverters=(), ac_voltage_v=value)
