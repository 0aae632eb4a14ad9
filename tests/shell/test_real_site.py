"""The daemon on a site as real sites look (``config/sim-site.toml``).

Meters and PV beside the batteries do not confuse discovery, the daemon never commands the PV
inverter, and a hybrid inverter's measured power (which includes its PV's) is never taken as
its battery's. The site: a meter at the grid connection and one in front of every inverter; a
battery inverter behind a precharger, a hybrid inverter (battery and PV), a PV inverter with
no battery.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from distributord.core.status import Status
from distributord.shell.daemon import Daemon
from distributord.sim.scenario import parse_scenario
from distributord.sim.server import Simulator
from tests.support import Client, wait_until

SITE_FILE = Path(__file__).resolve().parents[2] / "config" / "sim-site.toml"
SITE = parse_scenario(SITE_FILE.read_bytes(), source=str(SITE_FILE))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SITE, telemetry_hz=20.0, apis=("v1alpha18",)) as simulator:
        yield simulator


async def test_the_batteries_are_found_through_meters_and_a_precharger(daemon: Daemon) -> None:
    states = daemon.tracker.states
    assert sorted(states) == [1001, 1002]
    assert all(state.status is Status.WORKING for state in states.values())


async def test_a_request_commands_the_battery_inverters_and_never_the_pv_inverter(
    sim: Simulator, client: Client
) -> None:
    with trio.fail_after(10):
        result = await client.result("set_power", {"power_w": 6000, "batteries": [1001, 1002]})
    assert result["outcome"] == "success"
    assert result["succeeded_power_w"] == pytest.approx(6000)
    assert sim.setpoint(2001) + sim.setpoint(2002) == pytest.approx(6000)
    assert {c.component_id for c in sim.commands()} == {2001, 2002}
    # The PV still produces, unlimited, and the hybrid's PV too: the meters see it.
    assert sim.setpoint(2003) == -4000.0


async def test_an_unused_hybrids_pv_is_not_taken_for_its_batterys_power(
    sim: Simulator, client: Client, daemon: Daemon
) -> None:
    # The hybrid's battery out of use: its inverter measures -1500 W, all of it PV. Taken for
    # the battery's power, it would cut a -6000 W request to -4500 W.
    sim.set_fault(1002, error_state=True)
    await wait_until(daemon, lambda d: d.tracker.states[1002].status is Status.NOT_WORKING)
    with trio.fail_after(10):
        result = await client.result("set_power", {"power_w": -6000, "batteries": [1001, 1002]})
    assert result["succeeded_batteries"] == [1001]
    assert result["distribution"] == {"1001": -5000.0}  # its limit: nothing taken off
    assert "hybrid inverter's measured power includes its PV" in result["reasons"]["1002"]
