"""Fair choices under minimums, as a client sees them: the daemon on the simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from tests.support import connect, running_daemon


async def test_identical_batteries_under_minimums_get_identical_setpoints(
    tmp_path: Path,
) -> None:
    # Issue 21, item 6. Shares of -300 W by available SoC are 60 / 60 / 180 W: the two
    # identical batteries are below their inverters' 100 W minimums. The daemon dropped the
    # first and capped the others (0 / -120 / -180 W), exact but unfair; -100 W each is
    # exact too, and fair.
    scenario = Scenario(
        batteries=(
            BatterySpec(id=1001, soc_pct=30.0),
            BatterySpec(id=1002, soc_pct=30.0),
            BatterySpec(id=1003, soc_pct=70.0),
        ),
        inverters=(
            InverterSpec(id=2001, batteries=(1001,), power_limit_w=120.0, exclusion_w=100.0),
            InverterSpec(id=2002, batteries=(1002,), power_limit_w=120.0, exclusion_w=100.0),
            InverterSpec(id=2003, batteries=(1003,), power_limit_w=180.0, exclusion_w=50.0),
        ),
    )
    socket_path = tmp_path / "c.sock"
    with Simulator(scenario, telemetry_hz=20.0, apis=("v1alpha18",)) as sim:
        async with running_daemon(sim, socket_path), connect(socket_path) as client:
            with trio.fail_after(10):
                result = await client.result(
                    "set_power", {"power_w": -300, "batteries": [1001, 1002, 1003]}
                )
            assert result["outcome"] == "success"
            distribution = {int(b): w for b, w in result["distribution"].items()}
            assert distribution == pytest.approx({1001: -100.0, 1002: -100.0, 1003: -100.0})
            assert result["reasons"]["1001"] == result["reasons"]["1002"] == "raised_to_minimum"
            assert result["succeeded_power_w"] == pytest.approx(-300.0)
            for battery in (1001, 1002, 1003):
                assert sim.setpoint(sim.inverter_of(battery)) == pytest.approx(-100.0)
