"""Scenario values and the scenario file: the examples load, and every mistake names its key."""

from __future__ import annotations

import pathlib

import pytest

from distributord.core.errors import ScenarioError
from distributord.core.topology import Category, pair_batteries
from distributord.sim.scenario import (
    BatterySpec,
    Faults,
    InverterSpec,
    Scenario,
    parse_scenario,
    uniform_fleet,
)

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent.parent / "config" / "sim-scenario.toml"

ODD = b"""
[simulation]
speed = 60
telemetry_hz = 2

[[battery]]
id = 11
soc_pct = 50

[[battery]]
id = 12
soc_pct = 50

[[battery]]
id = 13
soc_pct = 50

[[battery]]
id = 14
soc_pct = 50

[[battery]]
id = 15
soc_pct = 50

[[inverter]]
id = 21
batteries = [11]

[[inverter]]
id = 22
batteries = [12]

[[inverter]]
id = 23
batteries = [12]

[[inverter]]
id = 24
batteries = [13, 14]

[faults.22]
command_error = "UNAVAILABLE"
nan_metrics = ["power"]
"""


def test_the_documented_example_loads() -> None:
    scenario = parse_scenario(EXAMPLE.read_bytes(), source=str(EXAMPLE))
    assert [b.id for b in scenario.batteries] == [1001, 1002, 1003]
    assert [(i.id, i.batteries) for i in scenario.inverters] == [
        (2001, (1001,)),
        (2002, (1002,)),
        (2003, (1003,)),
    ]
    assert scenario.inverters[1].exclusion_w == 500.0
    assert scenario.batteries[2] == BatterySpec(
        id=1003, soc_pct=70.0, capacity_wh=20_000.0, power_limit_w=8000.0
    )
    assert scenario.faults == {2003: Faults()}
    assert scenario.telemetry_hz == 10.0


def test_the_odd_topologies_can_be_expressed() -> None:
    scenario = parse_scenario(ODD, source="odd.toml")
    assert scenario.speed == 60.0
    assert scenario.telemetry_hz == 2.0
    assert scenario.faults == {
        22: Faults(command_error="UNAVAILABLE", nan_metrics=frozenset({"power"}))
    }
    categories = dict(scenario.components())
    assert categories[1] is Category.GRID
    assert categories[2] is Category.METER
    assert (1, 2) in scenario.connections()
    assert (2, 15) in scenario.connections()  # no inverter: it hangs off the meter
    topology = pair_batteries(categories, scenario.connections())
    assert topology.pairs == {11: 21}
    assert set(topology.left_out) == {12, 13, 14, 15}
    assert "several inverters" in topology.left_out[12]
    assert "also serves" in topology.left_out[13]
    assert "no inverter" in topology.left_out[15]


def test_uniform_fleet() -> None:
    fleet = uniform_fleet(3, seed=7)
    assert [b.id for b in fleet.batteries] == [1001, 1002, 1003]
    assert [(i.id, i.batteries) for i in fleet.inverters] == [
        (2001, (1001,)),
        (2002, (1002,)),
        (2003, (1003,)),
    ]
    assert all(20.0 <= b.soc_pct <= 80.0 for b in fleet.batteries)
    assert all(
        (b.soc_lower_pct, b.soc_upper_pct, b.capacity_wh, b.power_limit_w)
        == (10.0, 90.0, 10_000.0, 5000.0)
        for b in fleet.batteries
    )
    assert all((i.power_limit_w, i.exclusion_w) == (5000.0, 0.0) for i in fleet.inverters)
    assert uniform_fleet(3, seed=7) == fleet
    assert uniform_fleet(3, seed=8) != fleet
    assert len(uniform_fleet(1000, seed=0).batteries) == 1000


@pytest.mark.parametrize("n", [0, 1001])
def test_uniform_fleet_size_is_bounded(n: int) -> None:
    with pytest.raises(ScenarioError, match="batteries: must be between 1 and 1000"):
        uniform_fleet(n, seed=0)


def test_without_components_the_scenario_is_a_fleet() -> None:
    assert parse_scenario(b"") == uniform_fleet(4, seed=0)
    assert parse_scenario(b"", batteries=2, seed=5) == uniform_fleet(2, seed=5)
    assert parse_scenario(b"[fleet]\nbatteries = 3\n[simulation]\nseed = 9\n") == uniform_fleet(
        3, seed=9
    )
    # Flags beat the file.
    assert parse_scenario(b"[fleet]\nbatteries = 3\n", batteries=5) == uniform_fleet(5, seed=0)
    with_faults = parse_scenario(b"[faults.2002]\nerror_state = true\n[simulation]\nspeed = 2\n")
    assert with_faults.faults == {2002: Faults(error_state=True)}
    assert with_faults.speed == 2.0


def test_a_bad_batteries_flag_is_blamed_on_the_flag() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(b"", source="s.toml", batteries=0)
    assert str(caught.value) == "--batteries: must be between 1 and 1000, got 0"


BATTERY = "[[battery]]\nid = 1001\nsoc_pct = 50\n"
INVERTER = "[[inverter]]\nid = 2001\nbatteries = [1001]\n"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("speed = 1\n", "speed", "unknown key"),
        ("[simulation]\nsped = 1\n", "simulation.sped", "unknown key"),
        ("[simulation]\nspeed = 0\n", "simulation.speed", "must be positive"),
        ("[simulation]\nspeed = 'fast'\n", "simulation.speed", "must be a number"),
        ("[simulation]\nspeed = inf\n", "simulation.speed", "must be finite"),
        ("[simulation]\ntelemetry_hz = 1000\n", "simulation.telemetry_hz", "at most 100"),
        ("[simulation]\nseed = 1.5\n", "simulation.seed", "must be an integer"),
        ("simulation = 3\n", "simulation", "must be a table"),
        ("[fleet]\nbatteries = 1001\n", "fleet.batteries", "between 1 and 1000"),
        ("[fleet]\nbatteries = true\n", "fleet.batteries", "must be an integer"),
        ("[fleet]\nsize = 3\n", "fleet.size", "unknown key"),
        ("[fleet]\nbatteries = 2\n" + BATTERY, "fleet", "cannot be combined"),
        ("[battery]\nid = 1\n", "battery", "array of tables"),
        (BATTERY + "colour = 'red'\n", "battery[0].colour", "unknown key"),
        (BATTERY + "soc_lower_pct = '10'\n", "battery[0].soc_lower_pct", "must be a number"),
        ("[[battery]]\nid = 1001\n", "battery[0].soc_pct", "is required"),
        ("[[battery]]\nid = true\nsoc_pct = 5\n", "battery[0].id", "must be an integer"),
        ("[[battery]]\nid = -3\nsoc_pct = 5\n", "battery[0].id", "positive integer"),
        (BATTERY + BATTERY.replace("50", "120"), "battery[1].soc_pct", "between 0 and 100"),
        (BATTERY + "soc_upper_pct = 5\n", "battery[0].soc_upper_pct", "above soc_lower_pct"),
        (BATTERY + "capacity_wh = 0\n", "battery[0].capacity_wh", "positive"),
        (BATTERY + "power_limit_w = -1\n", "battery[0].power_limit_w", "between 0"),
        (BATTERY + BATTERY, "battery[1].id", "1001 is taken by battery[0].id"),
        ("[[battery]]\nid = 1\nsoc_pct = 5\n", "battery[0].id", "1 is taken by the grid"),
        (BATTERY + "[[inverter]]\nid = 2001\n", "inverter[0].batteries", "is required"),
        (BATTERY + "[[inverter]]\nid = 2001\nbatteries = 1001\n", "inverter[0].batteries", "list"),
        (BATTERY + INVERTER.replace("[1001]", "[1001, 1002]"), "inverter[0].batteries", "exist"),
        (BATTERY + INVERTER.replace("[1001]", "[1001, 1001]"), "inverter[0].batteries", "twice"),
        (BATTERY + INVERTER + "exclusion_w = 6000\n", "inverter[0].exclusion_w", "between 0"),
        (BATTERY + INVERTER.replace("2001", "1001"), "inverter[0].id", "taken by battery[0].id"),
        ("[faults.3]\nerror_state = true\n", "faults.3", "battery or an inverter"),
        ("[faults.x]\nerror_state = true\n", "faults.x", "component id"),
        ("[faults.2001]\nerror_state = 1\n", "faults.2001.error_state", "true or false"),
        ("[faults.2001]\nflaky = true\n", "faults.2001.flaky", "unknown key"),
        ("[faults.2001]\ncommand_error = 'BROKEN'\n", "faults.2001.command_error", "status code"),
        ("[faults.2001]\ncommand_error = 14\n", "faults.2001.command_error", "must be a string"),
        ("[faults.2001]\ncommand_latency_s = -1\n", "faults.2001.command_latency_s", "between"),
        ("[faults.2001]\nnan_metrics = ['temp']\n", "faults.2001.nan_metrics", "unknown metrics"),
        ("[faults.2001]\nnan_metrics = 'soc'\n", "faults.2001.nan_metrics", "list of strings"),
    ],
)
def test_a_bad_scenario_names_the_file_and_the_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text.encode(), source="bad.toml")
    assert caught.value.source == "bad.toml"
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"bad.toml: {key}: ")


def test_the_flag_cannot_resize_an_explicit_scenario() -> None:
    with pytest.raises(ScenarioError, match=r"^s\.toml: battery: .*--batteries"):
        parse_scenario(BATTERY.encode(), source="s.toml", batteries=3)


@pytest.mark.parametrize("data", [b"[simulation\n", b"\xff\xfe"])
def test_a_file_that_is_not_toml(data: bytes) -> None:
    with pytest.raises(ScenarioError, match=r"^bad\.toml: not a valid TOML file"):
        parse_scenario(data, source="bad.toml")


def test_values_built_in_python_are_checked_the_same_way() -> None:
    with pytest.raises(ScenarioError, match=r"^soc_pct: must be between 0 and 100"):
        BatterySpec(id=1, soc_pct=101.0)
    with pytest.raises(ScenarioError, match=r"^faults\.5: "):
        Scenario(batteries=(), inverters=(), faults={5: Faults()})
    with pytest.raises(ScenarioError, match=r"^inverter\[0\]\.batteries: "):
        Scenario(batteries=(), inverters=(InverterSpec(id=3, batteries=(4,)),))
    assert Faults(nan_metrics=["soc"]).nan_metrics == frozenset({"soc"})
