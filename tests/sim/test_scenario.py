"""Scenario values and the scenario file: the examples load, and every mistake names its key."""

from __future__ import annotations

import datetime
import math
import pathlib

import pytest

from distributord.api.adapter import FinalReply
from distributord.core.errors import ScenarioError
from distributord.core.topology import Category, Component, Group, InverterType, pair_batteries
from distributord.sim.scenario import (
    FINAL_REPLIES,
    BatterySpec,
    Faults,
    InverterSpec,
    MicrogridSpec,
    Scenario,
    parse_scenario,
    uniform_fleet,
)
from distributord.sim.server import REPLY_FAULTS

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
    assert scenario.microgrid == MicrogridSpec()  # every key shown, at its default


def test_the_documented_site_loads() -> None:
    site = EXAMPLE.with_name("sim-site.toml")
    scenario = parse_scenario(site.read_bytes(), source=str(site))
    assert [(i.id, i.type, i.batteries, i.meter, i.pv_power_w) for i in scenario.inverters] == [
        (2001, InverterType.BATTERY, (1001,), True, 0.0),
        (2002, InverterType.HYBRID, (1002,), True, 1500.0),
        (2003, InverterType.PV, (), True, 4000.0),
    ]
    assert scenario.meters() == {92001: 2001, 92002: 2002, 92003: 2003}
    assert scenario.microgrid == MicrogridSpec(
        name="distributord sim: Hamburg harbour", latitude=53.5, longitude=9.75
    )
    assert pair_batteries(dict(scenario.components()), scenario.connections()).pairs == {
        1001: 2001,
        1002: 2002,
    }


def test_the_odd_topologies_can_be_expressed() -> None:
    scenario = parse_scenario(ODD, source="odd.toml")
    assert scenario.speed == 60.0
    assert scenario.telemetry_hz == 2.0
    assert scenario.faults == {
        22: Faults(command_error="UNAVAILABLE", nan_metrics=frozenset({"power"}))
    }
    categories = {cid: component.category for cid, component in scenario.components()}
    assert categories[1] is Category.GRID
    assert categories[2] is Category.METER
    assert (1, 2) in scenario.connections()
    assert (2, 15) in scenario.connections()  # no inverter: it hangs off the meter
    topology = pair_batteries(categories, scenario.connections())
    # A battery on two inverters and two batteries on one are groups now (spec/plant.md).
    assert topology.pairs == {11: 21, 12: 22, 13: 24}
    assert topology.left_out.keys() == {15}
    assert "no inverter" in topology.left_out[15]
    assert topology.groups == {12: Group((12,), (22, 23)), 13: Group((13, 14), (24,))}
    assert scenario.groups() == [((11,), (21,)), ((12,), (22, 23)), ((13, 14), (24,)), ((15,), ())]


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
        ("[[battery]]\nid = -3\nsoc_pct = 5\n", "battery[0].id", "positive 64-bit integer"),
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
        ("[faults.2001]\npower_offset_w = nan\n", "faults.2001.power_offset_w", "finite"),
        ("[faults.2001]\npower_offset_w = true\n", "faults.2001.power_offset_w", "number"),
        ("[faults.2001]\nnan_metrics = ['temp']\n", "faults.2001.nan_metrics", "unknown metrics"),
        ("[faults.2001]\nnan_metrics = 'soc'\n", "faults.2001.nan_metrics", "list of strings"),
        (
            "[faults.2001]\nfinal_reply = 'OK'\n",
            "faults.2001.final_reply",
            "one of APPLIED_END, APPLIED_NONE, FAILED, NONE, OVERRIDDEN, SUCCESS, got 'OK'",
        ),
        (
            "[faults.2001]\ncommand_latencies_s = 5\n",
            "faults.2001.command_latencies_s",
            "must be a list of seconds, got 5",
        ),
        (
            "[faults.2001]\ncommand_latencies_s = [0, -1]\n",
            "faults.2001.command_latencies_s",
            "0 or more (inf: hang), got -1",
        ),
        (
            "[faults.2001]\ncommand_latencies_s = [nan]\n",
            "faults.2001.command_latencies_s",
            "got nan",
        ),
        (
            "[faults.2001]\ncommand_latencies_s = ['1']\n",
            "faults.2001.command_latencies_s",
            "got '1'",
        ),
        ("[faults.2001]\nfinal_reply = 3\n", "faults.2001.final_reply", "must be a string"),
        ("[faults.2001]\nramp_s = 'slow'\n", "faults.2001.ramp_s", "must be a number"),
        ("[faults.2001]\nramp_s = -1\n", "faults.2001.ramp_s", "must be between 0 and 86400"),
        (
            BATTERY + INVERTER + "ramp_w_per_s = 0\n",
            "inverter[0].ramp_w_per_s",
            "must be a positive, finite number of W/s, got 0.0",
        ),
        (BATTERY + INVERTER + "ramp_w_per_s = -5\n", "inverter[0].ramp_w_per_s", "got -5.0"),
        (BATTERY + INVERTER + "ramp_w_per_s = 'fast'\n", "inverter[0].ramp_w_per_s", "number"),
        (BATTERY + INVERTER + "ramp_w_per_s = inf\n", "inverter[0].ramp_w_per_s", "finite"),
        (
            "[[inverter]]\nid = 2001\nbatteries = []\ntype = 'pv'\nramp_w_per_s = 100\n",
            "inverter[0].ramp_w_per_s",
            "a 'pv' inverter does not ramp",
        ),
        ("[fleet]\nramp_w_per_s = 0\n", "fleet.ramp_w_per_s", "positive, finite number of W/s"),
        ("[fleet]\nramp_w_per_s = true\n", "fleet.ramp_w_per_s", "must be a number"),
        (BATTERY + INVERTER + "type = 'wind'\n", "inverter[0].type", "one of 'battery'"),
        (BATTERY + INVERTER + "type = 'unspecified'\n", "inverter[0].type", "got 'unspecified'"),
        (BATTERY + INVERTER + "type = 1\n", "inverter[0].type", "must be a string"),
        (BATTERY + INVERTER + "between = 'fuse'\n", "inverter[0].between", "list of strings"),
        (
            BATTERY + INVERTER + "between = ['fuse', 'meter']\n",
            "inverter[0].between",
            "'meter' is not a pass-through category; known: breaker, fuse, precharger, relay",
        ),
        ("[fleet]\nbetween = ['switch']\n", "fleet.between", "not a pass-through category"),
        ("[fleet]\nmeters = 1\n", "fleet.meters", "must be true or false"),
        (BATTERY + INVERTER + "meter = 'yes'\n", "inverter[0].meter", "must be true or false"),
        (BATTERY + INVERTER + "pv_power_w = 100\n", "inverter[0].pv_power_w", "'pv' or 'hybrid'"),
        (
            BATTERY + INVERTER + "type = 'pv'\npv_power_w = -1\n",
            "inverter[0].pv_power_w",
            "between 0",
        ),
        (
            BATTERY + INVERTER + "meter = true\nbetween = " + str(["fuse"] * 9) + "\n",
            "inverter[0].between",
            "at most 8 components in front of a metered inverter",
        ),
        (
            "[[battery]]\nid = 1844674407370955161\nsoc_pct = 5\n"
            "[[inverter]]\nid = 3\nbatteries = [1844674407370955161]\nmeter = true\n",
            "inverter[0].meter",
            "would not fit in 64 bits",
        ),
        ("[fleet]\nbetween = 'fuse'\n", "fleet.between", "list of strings"),
        (
            "[[battery]]\nid = 18446744073709551615\nsoc_pct = 5\n"
            "[[inverter]]\nid = 3\nbatteries = [18446744073709551615]\nbetween = ['fuse']\n",
            "inverter[0].between",
            "would not fit in 64 bits",
        ),
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


CHAINS = b"""
[[battery]]
id = 11
soc_pct = 50

[[battery]]
id = 12
soc_pct = 50

[[battery]]
id = 13
soc_pct = 50

[[inverter]]
id = 21
batteries = [11]
between = ["precharger", "breaker"]

[[inverter]]
id = 22
batteries = [12]
type = "hybrid"
between = ["fuse"]

[[inverter]]
id = 23
batteries = [13]
type = "pv"

[faults.21]
final_reply = "OVERRIDDEN"

[faults.22]
ramp_s = 2.5
"""


def test_pass_through_chains_and_inverter_types() -> None:
    scenario = parse_scenario(CHAINS, source="chains.toml")
    assert [(i.type, i.between) for i in scenario.inverters] == [
        (InverterType.BATTERY, (Category.PRECHARGER, Category.BREAKER)),
        (InverterType.HYBRID, (Category.FUSE,)),
        (InverterType.PV, ()),
    ]
    assert scenario.faults == {21: Faults(final_reply="OVERRIDDEN"), 22: Faults(ramp_s=2.5)}
    # The largest battery or inverter id is 23: chain ids are k * 100 + the inverter's id.
    assert scenario.chains() == {21: (121, 221), 22: (122,), 23: ()}
    assert scenario.components() == [
        (1, Component(Category.GRID)),
        (2, Component(Category.METER)),
        (21, Component(Category.INVERTER, InverterType.BATTERY)),
        (22, Component(Category.INVERTER, InverterType.HYBRID)),
        (23, Component(Category.INVERTER, InverterType.PV)),
        (121, Component(Category.PRECHARGER)),
        (221, Component(Category.BREAKER)),
        (122, Component(Category.FUSE)),
        (11, Component(Category.BATTERY)),
        (12, Component(Category.BATTERY)),
        (13, Component(Category.BATTERY)),
    ]
    assert scenario.connections() == [
        (1, 2),
        (2, 21),
        (21, 121),
        (121, 221),
        (221, 11),
        (2, 22),
        (22, 122),
        (122, 12),
        (2, 23),
        (23, 13),
    ]
    assert scenario.pass_through() == [
        (121, Category.PRECHARGER, 21),
        (221, Category.BREAKER, 21),
        (122, Category.FUSE, 22),
    ]


def test_a_chain_serves_all_of_its_inverters_batteries() -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=11, soc_pct=50.0), BatterySpec(id=12, soc_pct=50.0)),
        inverters=(InverterSpec(id=21, batteries=(11, 12), between=("relay", "relay")),),
    )
    assert scenario.connections() == [(1, 2), (2, 21), (21, 121), (121, 221), (221, 11), (221, 12)]


@pytest.mark.parametrize(
    ("top", "chain"),
    [(9, (19, 29)), (10, (110, 210)), (99, (199, 299)), (100, (1100, 2100))],
)
def test_chain_ids_start_above_every_id(top: int, chain: tuple[int, ...]) -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=3, soc_pct=50.0),),
        inverters=(InverterSpec(id=top, batteries=(3,), between=("fuse", "breaker")),),
    )
    assert scenario.chains() == {top: chain}


def test_fleet_with_a_chain() -> None:
    fleet = uniform_fleet(2, seed=7, between=("precharger", "breaker"))
    assert fleet.chains() == {2001: (12001, 22001), 2002: (12002, 22002)}
    assert (22002, 1002) in fleet.connections()
    assert [b.soc_pct for b in fleet.batteries] == [
        b.soc_pct for b in uniform_fleet(2, seed=7).batteries
    ]
    parsed = parse_scenario(
        b"[fleet]\nbatteries = 2\nbetween = ['precharger', 'breaker']\n", seed=7
    )
    assert parsed == fleet
    assert parse_scenario(b"[fleet]\nbetween = ['fuse']\n", batteries=1).chains() == {
        2001: (12001,)
    }
    with pytest.raises(ScenarioError, match=r"^between: 'meter' is not a pass-through"):
        uniform_fleet(1, seed=0, between=("meter",))


def test_a_metered_inverter_has_a_meter_of_its_own_in_front() -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=11, soc_pct=50.0), BatterySpec(id=12, soc_pct=50.0)),
        inverters=(
            InverterSpec(id=21, batteries=(11,), meter=True, between=("breaker",)),
            InverterSpec(id=22, batteries=(12,)),
            InverterSpec(id=23, batteries=(), type="pv", pv_power_w=4000.0, meter=True),
        ),
    )
    assert scenario.meters() == {921: 21, 923: 23}
    assert scenario.connections() == [
        (1, 2), (2, 921), (921, 21), (21, 121), (121, 11), (2, 22), (22, 12), (2, 923), (923, 23)
    ]  # fmt: skip
    assert (921, Component(Category.METER)) in scenario.components()
    assert (923, Component(Category.METER)) in scenario.components()


def test_a_fleet_with_meters_from_python_and_from_a_file() -> None:
    fleet = uniform_fleet(2, seed=7, meters=True)
    assert fleet.meters() == {92001: 2001, 92002: 2002}
    assert (92001, 2001) in fleet.connections()
    assert parse_scenario(b"[fleet]\nbatteries = 2\nmeters = true\n", seed=7) == fleet
    assert parse_scenario(b"[fleet]\nbatteries = 2\n", seed=7).meters() == {}


def test_a_ramp_rate_per_inverter_and_for_a_whole_fleet() -> None:
    scenario = parse_scenario(
        (BATTERY + INVERTER + "ramp_w_per_s = 10000\n" + "[[inverter]]\nid = 2002\n").encode()
        + b"batteries = []\n"
    )
    assert [i.ramp_w_per_s for i in scenario.inverters] == [10_000.0, None]  # None: at once
    fleet = uniform_fleet(2, seed=7, ramp_w_per_s=2500.0)
    assert {i.ramp_w_per_s for i in fleet.inverters} == {2500.0}
    assert parse_scenario(b"[fleet]\nbatteries = 2\nramp_w_per_s = 2500\n", seed=7) == fleet
    assert {i.ramp_w_per_s for i in uniform_fleet(2, seed=7).inverters} == {None}
    with pytest.raises(ScenarioError, match=r"^ramp_w_per_s: must be a positive"):
        InverterSpec(id=2001, batteries=(1001,), ramp_w_per_s=math.nan)


def test_pv_keys_from_a_file() -> None:
    scenario = parse_scenario(
        BATTERY.encode()
        + b"[[inverter]]\nid = 2001\nbatteries = [1001]\ntype = 'hybrid'\npv_power_w = 1500\n"
        + b"[[inverter]]\nid = 2002\nbatteries = []\ntype = 'pv'\npv_power_w = 8000\n"
        + b"meter = true\n"
    )
    hybrid, pv = scenario.inverters
    assert (hybrid.type, hybrid.pv_power_w, hybrid.meter) == (InverterType.HYBRID, 1500.0, False)
    assert (pv.type, pv.pv_power_w, pv.meter) == (InverterType.PV, 8000.0, True)


def test_pairing_passes_through_the_chain() -> None:
    """What the daemon will see (core.topology follows the chain since the pass-through work)."""
    scenario = parse_scenario(CHAINS)
    chain_ids = {cid for cid, _, _ in scenario.pass_through()}
    # Every battery is reachable from its inverter through pass-through components only.
    edges = scenario.connections()
    for inverter in scenario.inverters:
        (battery,) = inverter.batteries
        node, seen = inverter.id, [inverter.id]
        while node != battery:
            (node,) = [d for s, d in edges if s == node]
            seen.append(node)
        assert set(seen[1:-1]) <= chain_ids


@pytest.mark.parametrize("ramp_s", [-1.0, math.nan, math.inf, 1e9])
def test_a_ramp_is_a_finite_time(ramp_s: float) -> None:
    with pytest.raises(ScenarioError, match=r"^ramp_s: must be between 0 and 86400"):
        Faults(ramp_s=ramp_s)


def test_faults_defaults_and_final_replies() -> None:
    assert Faults().final_reply == "SUCCESS"
    assert Faults().ramp_s == 0.0  # the final reply follows ACCEPTED at once
    assert set(REPLY_FAULTS) == FINAL_REPLIES  # each fault has its reply stream and physics
    assert {final for final, _ in REPLY_FAULTS.values()} == set(FinalReply)  # all wire cases
    for name in FINAL_REPLIES:
        Faults(final_reply=name)
    with pytest.raises(ScenarioError, match=r"^final_reply: must be one of"):
        Faults(final_reply="success")
    with pytest.raises(ScenarioError, match=r"^final_reply: must be one of"):
        Faults(final_reply="APPLIED")
    with pytest.raises(ScenarioError, match=r"^type: must be one of"):
        InverterSpec(id=3, batteries=(), type="solar")
    with pytest.raises(ScenarioError, match=r"^between: must be a list"):
        InverterSpec(id=3, batteries=(), between="fuse")
    assert InverterSpec(id=3, batteries=(), type="pv").type is InverterType.PV


def test_per_command_latencies_from_a_file_and_from_python() -> None:
    text = (
        BATTERY
        + INVERTER
        + "[faults.2001]\ncommand_latency_s = 0.5\ncommand_latencies_s = [0, 30, inf]\n"
    )
    scenario = parse_scenario(text.encode(), source="s.toml")
    assert scenario.faults[2001] == Faults(
        command_latency_s=0.5, command_latencies_s=(0.0, 30.0, math.inf)
    )
    assert Faults(command_latencies_s=[1, 2]).command_latencies_s == (1.0, 2.0)  # a tuple
    assert Faults().command_latencies_s == ()
    offset = parse_scenario(
        (BATTERY + INVERTER + "[faults.2001]\npower_offset_w = -500\n").encode()
    )
    assert offset.faults[2001] == Faults(power_offset_w=-500.0)
    assert Faults(command_latencies_s=[10**400]).command_latencies_s == (math.inf,)
    for bad in ("0,30", 5, [math.nan], [-0.5], [True], [None]):
        with pytest.raises(ScenarioError, match=r"^command_latencies_s: must be"):
            Faults(command_latencies_s=bad)  # type: ignore[arg-type]


# --- [microgrid] ------------------------------------------------------------------------------

SITE = b"""
[microgrid]
id = 4711
enterprise_id = 815
name = "Hafen Nord"
latitude = 53.5
longitude = 9.75
country_code = "DE"
delivery_area_code = "10YDE-EON------1"
delivery_area_code_type = "europe_eic"
status = "inactive"
created_at = 2023-06-01T08:30:00+02:00
"""


def test_every_scenario_has_a_microgrid_by_default() -> None:
    for scenario in (
        parse_scenario(b""),
        uniform_fleet(2, seed=1),
        Scenario(batteries=(), inverters=()),
    ):
        assert scenario.microgrid == MicrogridSpec()
    site = MicrogridSpec()
    assert (site.id, site.enterprise_id, site.status) == (1, 1, "active")
    assert (site.latitude, site.longitude, site.country_code) == (52.5, 13.5, "DE")
    assert site.delivery_area_code == "10Y1001A1001A82H"  # the German-Luxembourg bidding zone
    assert site.delivery_area_code_type == "europe_eic"
    assert site.created_at == datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def test_the_microgrid_table_is_read_key_by_key_in_a_fleet_and_with_components() -> None:
    expected = MicrogridSpec(
        id=4711,
        enterprise_id=815,
        name="Hafen Nord",
        latitude=53.5,
        longitude=9.75,
        country_code="DE",
        delivery_area_code="10YDE-EON------1",
        delivery_area_code_type="europe_eic",
        status="inactive",
        created_at=datetime.datetime(2023, 6, 1, 6, 30, tzinfo=datetime.UTC),
    )
    assert parse_scenario(SITE).microgrid == expected
    assert parse_scenario(SITE + BATTERY.encode()).microgrid == expected
    assert parse_scenario(b'[microgrid]\ndelivery_area_code = ""\n').microgrid == (
        MicrogridSpec(delivery_area_code="")  # an island: no delivery area
    )


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("microgrid = 3\n", "microgrid", "must be a table"),
        ("[microgrid]\nsite = 3\n", "microgrid.site", "unknown key"),
        ("[microgrid]\nid = 0\n", "microgrid.id", "positive 64-bit integer"),
        ("[microgrid]\nid = 18446744073709551616\n", "microgrid.id", "positive 64-bit"),
        ("[microgrid]\nid = '7'\n", "microgrid.id", "must be an integer"),
        ("[microgrid]\nenterprise_id = -1\n", "microgrid.enterprise_id", "positive 64-bit"),
        ("[microgrid]\nname = 3\n", "microgrid.name", "must be a string"),
        ("[microgrid]\nlatitude = 90.5\n", "microgrid.latitude", "between -90 and 90"),
        ("[microgrid]\nlatitude = nan\n", "microgrid.latitude", "finite"),
        ("[microgrid]\nlongitude = -181\n", "microgrid.longitude", "between -180 and 180"),
        ("[microgrid]\nlongitude = true\n", "microgrid.longitude", "must be a number"),
        ("[microgrid]\ncountry_code = 'DEU'\n", "microgrid.country_code", "two capital"),
        ("[microgrid]\ncountry_code = 'de'\n", "microgrid.country_code", "got 'de'"),
        ("[microgrid]\ndelivery_area_code = 1\n", "microgrid.delivery_area_code", "a string"),
        (
            "[microgrid]\ndelivery_area_code_type = 'EIC'\n",
            "microgrid.delivery_area_code_type",
            "one of europe_eic, us_nerc, got 'EIC'",
        ),
        ("[microgrid]\nstatus = 'on'\n", "microgrid.status", "one of active, inactive"),
        ("[microgrid]\ncreated_at = 2023-06-01\n", "microgrid.created_at", "offset date-time"),
        (
            "[microgrid]\ncreated_at = 2023-06-01T08:30:00\n",
            "microgrid.created_at",
            "with a time zone",
        ),
    ],
)
def test_a_bad_microgrid_names_the_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text.encode(), source="site.toml")
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"site.toml: {key}: ")


def test_a_microgrid_built_in_python_is_checked_the_same_way() -> None:
    with pytest.raises(ScenarioError, match=r"^country_code: must be two capital letters"):
        MicrogridSpec(country_code="Deutschland")
    with pytest.raises(ScenarioError, match=r"^created_at: must be a date-time with a time zone"):
        MicrogridSpec(created_at=datetime.datetime(2024, 1, 1))  # no time zone: the point
    with pytest.raises(ScenarioError, match=r"^status: "):
        Scenario(batteries=(), inverters=(), microgrid=MicrogridSpec(status="gone"))
