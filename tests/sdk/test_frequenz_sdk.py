"""The Frequenz SDK 1.0 (``frequenz-sdk``, a test dependency) runs unpatched on the simulator.

The SDK's own start-up against ``distributord sim``, as an SDK user would write it
(``sdk_client.py``, in a process of its own): ``microgrid.initialize`` reads the microgrid, its
components and connections and validates the graph; a battery pool streams SoC, capacity and
power bounds; ``propose_power`` is split over the simulated inverters, whose batteries then
charge; a PV pool reads the PV inverter's production and limits it. What the SDK reports is
checked against the scenario, and what it commanded against the simulator's own record.

The site is ``config/sim-site.toml``, what real sites look like: a meter at the grid connection
and one in front of every inverter, a battery inverter, a hybrid inverter (battery and PV), and
a PV inverter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from distributord.sim.scenario import parse_scenario
from distributord.sim.server import Simulator

CLIENT = Path(__file__).with_name("sdk_client.py")

SITE_FILE = Path(__file__).resolve().parents[2] / "config" / "sim-site.toml"

# The documented site; SoC moves 600 times faster than real time: visibly within seconds.
SITE = attrs.evolve(parse_scenario(SITE_FILE.read_bytes(), source=str(SITE_FILE)), speed=600.0)


@pytest.fixture(scope="module")
def observed() -> Iterator[tuple[Simulator, dict[str, dict[str, Any]]]]:
    """The SDK's observations, by kind, and the simulator it made them on."""
    with Simulator(SITE, telemetry_hz=10.0, apis=("v1alpha18",)) as sim:
        run = subprocess.run(
            [sys.executable, str(CLIENT), sim.address],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        seen = {line["what"]: line for line in lines}
        assert "error" not in seen, seen["error"]["traceback"] + run.stderr[-3000:]
        assert run.returncode == 0, run.stderr[-3000:]
        assert "done" in seen, run.stderr[-3000:]
        yield sim, seen


def test_the_sdk_reads_the_microgrid(observed: tuple[Simulator, dict[str, Any]]) -> None:
    _, seen = observed
    microgrid = SITE.microgrid
    assert seen["microgrid"] == {
        "what": "microgrid",
        "id": microgrid.id,
        "latitude": microgrid.latitude,
        "longitude": microgrid.longitude,
        "country_code": microgrid.country_code,
    }


def test_the_battery_pool_streams_soc_capacity_and_bounds(
    observed: tuple[Simulator, dict[str, Any]],
) -> None:
    _, seen = observed
    pool = seen["battery_pool"]
    assert pool["ids"] == [1001, 1002]
    assert pool["capacity_wh"] == pytest.approx(30_000.0 * 0.8)  # usable: SoC bounds 10..90 %
    assert 40.0 < pool["soc_pct"] < 60.0
    assert (pool["inclusion_lower_w"], pool["inclusion_upper_w"]) == (-10_000.0, 10_000.0)


def test_propose_power_moves_the_simulated_batteries(
    observed: tuple[Simulator, dict[str, Any]],
) -> None:
    sim, seen = observed
    assert seen["proposed"]["target_w"] == 6_000.0
    assert seen["proposed"]["result"] == "Success"
    assert seen["proposed"]["succeeded_w"] == pytest.approx(6_000.0)
    assert seen["soc_risen"]["soc_pct"] > seen["battery_pool"]["soc_pct"]
    # The simulator's own record: the SDK commanded the two battery inverters, 6 kW in all,
    # each within its bounds, through v1alpha18.
    battery_commands = [c for c in sim.commands() if c.component_id in (2001, 2002)]
    assert battery_commands
    assert {c.api for c in battery_commands} == {"v1alpha18"}
    assert all(c.outcome == "ok" for c in battery_commands)
    first: dict[int, float] = {}
    for command in battery_commands:
        first.setdefault(command.component_id, command.power_w)
    assert sum(first.values()) == pytest.approx(6_000.0)
    assert all(0.0 < power <= 5_000.0 for power in first.values())


def test_the_pv_pool_reads_and_limits_the_pv_inverter(
    observed: tuple[Simulator, dict[str, Any]],
) -> None:
    sim, seen = observed
    assert seen["pv_pool"]["ids"] == [2003]
    assert seen["pv_pool"]["power_w"] == pytest.approx(-4_000.0)
    assert (seen["pv_bounds"]["inclusion_lower_w"], seen["pv_bounds"]["inclusion_upper_w"]) == (
        -8_000.0,
        0.0,
    )
    assert seen["pv_proposed"]["result"] == "Success"
    assert [c.power_w for c in sim.commands() if c.component_id == 2003][-1] == -2_000.0
