"""N:M groups and limits in scenarios: declared in Python and in TOML, and named.

And listed by the simulator's ``ListComponents``/``ListConnections`` in every version it serves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distributord.api.adapter import Adapter
from distributord.core.errors import ScenarioError
from distributord.core.topology import Category
from distributord.sim.scenario import (
    NAMED_SCENARIOS,
    BatterySpec,
    InverterSpec,
    LimitSpec,
    Scenario,
    named_scenario,
    parse_scenario,
)
from distributord.sim.server import API_VERSIONS, Simulator
from tests.sim.test_versions import call

# Two batteries on three inverters, 2002 behind a precharger; a battery on a shared DC bus of two
# inverters; a 1:1 pair.
GROUPS = b"""
[[battery]]
id = 1001
soc_pct = 40

[[battery]]
id = 1002
soc_pct = 60
capacity_wh = 20000

[[battery]]
id = 1003
soc_pct = 50

[[battery]]
id = 1004
soc_pct = 50

[[inverter]]
id = 2001
batteries = [1001]

[[inverter]]
id = 2002
batteries = [1001, 1002]
between = ["precharger"]

[[inverter]]
id = 2003
batteries = [1002]

[[inverter]]
id = 2004
batteries = [1003]

[[inverter]]
id = 2005
batteries = [1003]

[[inverter]]
id = 2006
batteries = [1004]

[[limits]]
name = "feeder-a"
inverters = [2001, 2002, 2003]
max_charge_w = 6000
max_discharge_w = 4000

[[limits]]
name = "gcp"
grid = true
max_discharge_w = 12000
"""
PRECHARGER_OF_2002 = 12002


def test_groups_and_limits_from_toml() -> None:
    scenario = parse_scenario(GROUPS, source="groups.toml")
    assert scenario.groups() == [
        ((1001, 1002), (2001, 2002, 2003)),
        ((1003,), (2004, 2005)),
        ((1004,), (2006,)),
    ]
    assert scenario.limits == (
        LimitSpec(
            name="feeder-a", inverters=(2001, 2002, 2003), max_charge_w=6000, max_discharge_w=4000
        ),
        LimitSpec(name="gcp", grid=True, max_discharge_w=12_000),
    )
    assert scenario.limits[1].max_charge_w == math.inf  # left out: not limited
    assert scenario.limit_members() == {
        "feeder-a": (2001, 2002, 2003),
        "gcp": (2001, 2002, 2003, 2004, 2005, 2006),
    }
    # Each inverter has an edge to each of its batteries (through its chain, if any).
    assert sorted(e for e in scenario.connections() if e[1] in {1001, 1002, 1003, 1004}) == [
        (2001, 1001),
        (2003, 1002),
        (2004, 1003),
        (2005, 1003),
        (2006, 1004),
        (PRECHARGER_OF_2002, 1001),
        (PRECHARGER_OF_2002, 1002),
    ]


def test_limits_go_with_a_uniform_fleet_too() -> None:
    data = b"""
[fleet]
batteries = 3

[[limits]]
name = "f"
inverters = [2001, 2003]
max_charge_w = 1000
"""
    scenario = parse_scenario(data)
    assert scenario.limit_members() == {"f": (2001, 2003)}
    assert scenario.groups() == [((1001,), (2001,)), ((1002,), (2002,)), ((1003,), (2003,))]


def test_groups_with_a_lone_battery_and_a_lone_inverter() -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=12, soc_pct=50.0), BatterySpec(id=11, soc_pct=50.0)),
        inverters=(InverterSpec(id=21, batteries=()), InverterSpec(id=22, batteries=(12,))),
    )
    assert scenario.groups() == [((11,), ()), ((12,), (22,)), ((), (21,))]


LIMIT = '[[limits]]\nname = "f"\ninverters = [2001]\nmax_charge_w = 1000\n'


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[[limits]]\ninverters = [2001]\nmax_charge_w = 1\n", "limits[0].name", "is required"),
        (
            '[[limits]]\nname = ""\ninverters = [2001]\nmax_charge_w = 1\n',
            "limits[0].name",
            "1 to 64",
        ),
        ('[[limits]]\nname = "f"\nmax_charge_w = 1\n', "limits[0].inverters", "one or more"),
        (
            '[[limits]]\nname = "f"\ninverters = [2001]\n',
            "limits[0].max_charge_w",
            "limit something",
        ),
        (
            '[[limits]]\nname = "f"\ninverters = [2001]\ngrid = true\nmax_charge_w = 1\n',
            "limits[0].inverters",
            "name none",
        ),
        (
            '[[limits]]\nname = "f"\ninverters = [2001, 2001]\nmax_charge_w = 1\n',
            "limits[0].inverters",
            "twice",
        ),
        (
            '[[limits]]\nname = "f"\ninverters = [2009]\nmax_charge_w = 1\n',
            "limits[0].inverters",
            "do not exist: [2009]",
        ),
        (
            '[[limits]]\nname = "f"\ninverters = [2001]\nmax_charge_w = -1\n',
            "limits[0].max_charge_w",
            "between 0 and inf",
        ),
        (
            '[[limits]]\nname = "f"\ninverters = [2001]\nmax_charge_w = nan\n',
            "limits[0].max_charge_w",
            "must be a number",
        ),
        (
            '[[limits]]\nname = "f"\ninverters = "2001"\nmax_charge_w = 1\n',
            "limits[0].inverters",
            "list of inverter ids",
        ),
        (
            '[[limits]]\nname = "f"\ninverters = [2001]\nmax_charge_w = 1\nfuse = 3\n',
            "limits[0].fuse",
            "unknown key",
        ),
        (LIMIT + LIMIT, "limits[1].name", "names another limit"),
        ("limits = 3\n", "limits", "array of tables"),
    ],
)
def test_a_bad_limit_is_named(text: str, key: str, problem: str) -> None:
    data = (text + "\n[fleet]\nbatteries = 2\n").encode()
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data, source="bad.toml")
    message = str(caught.value)
    assert message.startswith(f"bad.toml: {key}: "), message
    assert problem in message


def test_a_limit_built_in_python_is_checked_as_one_read_from_a_file() -> None:
    with pytest.raises(ScenarioError, match=r"^max_discharge_w: must be between 0 and inf"):
        LimitSpec(name="f", inverters=(1,), max_discharge_w=math.nan)
    with pytest.raises(ScenarioError, match=r"^limits\[0\]\.inverters: .*\[7\]"):
        Scenario(
            batteries=(BatterySpec(id=1001, soc_pct=50.0),),
            inverters=(InverterSpec(id=2001, batteries=(1001,)),),
            limits=(LimitSpec(name="f", inverters=(7,), max_charge_w=1.0),),
        )


def test_the_named_scenarios() -> None:
    assert set(NAMED_SCENARIOS) == {"shared-dc-bus", "two-on-one", "two-on-three", "feeder"}
    assert named_scenario("shared-dc-bus").groups() == [
        ((1001,), (2001, 2002)),
        ((1002,), (2003,)),
        ((1003,), (2004,)),
    ]
    assert named_scenario("two-on-one").groups() == [((1001, 1002), (2001,)), ((1003,), (2002,))]
    assert named_scenario("two-on-three").groups() == [
        ((1001, 1002), (2001, 2002, 2003)),
        ((1003,), (2004,)),
    ]
    feeder = named_scenario("feeder")
    assert feeder.limit_members() == {
        "feeder": (2001, 2002),
        "grid": (2001, 2002, 2003, 2004),
    }
    assert [(lim.max_charge_w, lim.max_discharge_w) for lim in feeder.limits] == [
        (6000.0, 6000.0),
        (15_000.0, 15_000.0),
    ]
    with pytest.raises(ScenarioError, match="no scenario is named 'nope'; known: 'shared-dc-bus'"):
        named_scenario("nope")


# --- over the wire, in every version --------------------------------------------------------


@pytest.fixture
def sim(api: str) -> Iterator[Simulator]:
    with Simulator(parse_scenario(GROUPS), apis=(api,)) as simulator:
        yield simulator


@pytest.mark.parametrize("api", API_VERSIONS)
def test_every_version_lists_the_groups_edges(sim: Simulator, api: str) -> None:
    async def work(version: Adapter, stub: Any) -> Any:
        return await version.components(stub), await version.connections(stub)

    components, connections = call(sim, api, work)
    batteries = {cid for cid, c in components.items() if c.category is Category.BATTERY}
    inverters = {cid for cid, c in components.items() if c.category is Category.INVERTER}
    assert batteries == {1001, 1002, 1003, 1004}
    assert inverters == {2001, 2002, 2003, 2004, 2005, 2006}
    assert components[PRECHARGER_OF_2002].category is Category.PRECHARGER
    assert sorted(connections) == sorted(
        [
            (1, 2),
            *((2, i) for i in sorted(inverters)),
            (2001, 1001),
            (2002, PRECHARGER_OF_2002),
            (PRECHARGER_OF_2002, 1001),
            (PRECHARGER_OF_2002, 1002),
            (2003, 1002),
            (2004, 1003),
            (2005, 1003),
            (2006, 1004),
        ]
    )
    assert sim.inverters_of(1001) == (2001, 2002)
    assert sim.inverters_of(1004) == (2006,)


@pytest.fixture
def feeder_sim(api: str) -> Iterator[Simulator]:
    with Simulator(named_scenario("feeder"), apis=(api,)) as simulator:
        yield simulator


@pytest.mark.parametrize("api", API_VERSIONS)
def test_every_version_is_held_to_the_feeder_and_its_violations_recorded(
    feeder_sim: Simulator, api: str
) -> None:
    async def work(version: Adapter, stub: Any) -> None:
        await version.set_power(stub, 2001, 4000.0, 60)
        await version.set_power(stub, 2002, 4000.0, 60)  # accepted, curtailed to 2000 W

    call(feeder_sim, api, work)
    assert feeder_sim.setpoint(2002) == 2000.0
    assert feeder_sim.limit_sums() == {"feeder": 6000.0, "grid": 6000.0}
    record = feeder_sim.record()
    (violation,) = record.limit_violations("feeder")
    assert (violation.inverter_id, violation.cause, violation.power_w, violation.sum_w) == (
        2002,
        "command",
        4000.0,
        8000.0,
    )
    assert record.violation_counts == {"feeder": 1, "grid": 0}
    assert (
        max(w for _, w in record.limit_timeline("feeder", start=record.log(2001).start)) == 6000.0
    )
    assert [c.api for c in record.commands()] == [api, api]


def test_the_documented_groups_site_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "sim-groups.toml"
    scenario = parse_scenario(path.read_bytes(), source=str(path))
    assert scenario.groups() == [
        ((1001,), (2001, 2002)),
        ((1002, 1003), (2003,)),
        ((1004,), (2004,)),
    ]
    assert scenario.limit_members() == {
        "feeder": (2001, 2002, 2003),
        "grid": (2001, 2002, 2003, 2004),
    }
    assert [(lim.max_charge_w, lim.max_discharge_w) for lim in scenario.limits] == [
        (12_000.0, 12_000.0),
        (18_000.0, 15_000.0),
    ]
    assert scenario.chains() == {2001: (), 2002: (), 2003: (12003,), 2004: ()}
