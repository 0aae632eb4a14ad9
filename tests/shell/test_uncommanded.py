"""Power the daemon does not command, through the daemon on the simulator (issue 21, items 4, 5).

Batteries of a request that are not used (blocked after a failed command, not working, left out)
may still carry power; the daemon subtracts their fresh measured power from the request, never
past zero, and says in the result why each was left out and what it measured. A battery whose
share is 0 W gets that 0 W once, not at every refresh of the standing setpoint.

Lifetimes run 20 times faster than the clock (as in ``test_setpoints``): a 10 s lifetime holds
0.5 s, so refreshes come every 0.17 s. Nothing sleeps to synchronise: the tests wait on the
simulator (its record of commands, its measured power) and the daemon's status board.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from tests.shell.test_setpoints import SCALE, commands_to, scaled_config, scaled_daemon
from tests.support import connect, sim_wait


def fleet(*socs: float) -> Scenario:
    """One battery per SoC (1001.., inverters 2001..), 10 kWh and 5 kW each."""
    ids = range(1001, 1001 + len(socs))
    return Scenario(
        batteries=tuple(BatterySpec(id=b, soc_pct=s) for b, s in zip(ids, socs, strict=True)),
        inverters=tuple(InverterSpec(id=b + 1000, batteries=(b,)) for b in ids),
        telemetry_hz=20.0,
    )


def simulator(scenario: Scenario) -> Iterator[Simulator]:
    with Simulator(scenario, lifetime_scale=SCALE, apis=("v1alpha18",)) as sim:
        yield sim


@pytest.fixture
def full_third() -> Iterator[Simulator]:
    """Three batteries, the third full: a charge gives it 0 W (at its SoC bound)."""
    yield from simulator(fleet(50.0, 50.0, 90.0))


def zeros_to(sim: Simulator, inverter: int) -> int:
    return sum(1 for c in sim.commands() if c.component_id == inverter and c.power_w == 0.0)


async def test_a_zero_share_is_sent_once_and_not_refreshed(
    full_third: Simulator, tmp_path: Path
) -> None:
    sim = full_third
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path, scaled_config(sim)), connect(path) as client:
        result = await client.result(
            "set_power", {"power_w": 2000, "batteries": [1001, 1002, 1003]}
        )
        assert result["outcome"] == "success", result
        assert result["distribution"]["1003"] == 0.0
        assert result["reasons"]["1003"] == "at_soc_limit"
        await sim_wait(sim, lambda s: zeros_to(s, 2003) >= 1)
        # Six refreshes of the others (two lifetimes): the 0 W share is not among them.
        target = commands_to(sim, 2001) + 6
        await sim_wait(sim, lambda s: commands_to(s, 2001) >= target, limit_s=20.0)
        assert commands_to(sim, 2003) == 1, [c for c in sim.commands() if c.component_id == 2003]
        # A new request for the set whose share for it is still 0 W sends it nothing either.
        again = await client.result("set_power", {"power_w": 1000, "batteries": [1001, 1002, 1003]})
        assert again["outcome"] == "success", again
        assert again["distribution"]["1003"] == 0.0
        target = commands_to(sim, 2001) + 3
        await sim_wait(sim, lambda s: commands_to(s, 2001) >= target, limit_s=20.0)
        assert commands_to(sim, 2003) == 1
        # An explicit release still commands 0 W once to each battery.
        released = await client.result("set_power", {"power_w": 0, "batteries": [1001, 1002, 1003]})
        assert released["outcome"] == "success", released
        assert commands_to(sim, 2003) == 2
