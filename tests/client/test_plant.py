"""Plant control through the library's trio face: reactive power, its status, and ramps.

The real daemon on the simulator, over a real Unix socket (tests/support.py, the fixtures of
tests/client/conftest.py); here the simulator's inverters take ±3 kvar within S = 5 kVA.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from distributord.client import (
    Code,
    DaemonError,
    Outcome,
    ReactiveAllotment,
    ReactiveBounds,
)
from distributord.client.trio import Client, open_client
from distributord.shell.daemon import Daemon
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from tests.client.conftest import PROGRAMS
from tests.support import LIMIT_S, config_for, running_daemon

BATTERIES = [1001, 1002, 1003, 1004]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """Four batteries of ±5 kW at 50 % SoC; their inverters take ±3 kvar within S = 5 kVA."""
    scenario = Scenario(
        batteries=tuple(BatterySpec(id=b, soc_pct=50.0) for b in BATTERIES),
        inverters=tuple(
            InverterSpec(
                id=b + 1000, batteries=(b,), reactive_limit_var=3_000.0, apparent_limit_va=5_000.0
            )
            for b in BATTERIES
        ),
        telemetry_hz=20.0,
    )
    with Simulator(scenario, apis=("v1alpha18",)) as simulator:
        yield simulator


async def test_set_power_with_reactive_power_and_the_status_it_leaves(
    sim: Simulator, client: Client
) -> None:
    with trio.fail_after(LIMIT_S):
        result = await client.set_power(-8_000.0, BATTERIES, reactive_var=6_000.0)
        status = await client.get_status()
    assert result.outcome is Outcome.SUCCESS, result
    assert result.reactive is not None
    assert result.reactive.target_var == 6_000.0
    assert result.reactive.distribution == dict.fromkeys(BATTERIES, 1_500.0)
    assert result.reactive.excess_var == 0.0
    assert result.reactive.failed_batteries == frozenset()
    assert set(result.reactive.reasons.values()) <= set(ReactiveAllotment)
    assert [sim.reactive_setpoint(b + 1000) for b in BATTERIES] == [1_500.0] * 4
    assert result.ramping is None  # no [ramp]
    for battery in BATTERIES:
        entry = status.batteries[battery]
        assert entry.reactive_setpoint_var == 1_500.0
        assert entry.reactive_bounds == ReactiveBounds(lower_var=-3_000.0, upper_var=3_000.0)
        assert entry.apparent_limit_va == 5_000.0


async def test_reactive_power_beyond_s_is_excess_with_a_reason_per_battery(
    client: Client,
) -> None:
    with trio.fail_after(LIMIT_S):
        # 5 kW each fills S = 5 kVA: no room for reactive power (plant.pq_priority "active").
        full = await client.set_power(-20_000.0, BATTERIES, reactive_var=4_000.0)
        released = await client.set_power(-20_000.0, BATTERIES)
    assert full.outcome is Outcome.SUCCESS, full
    assert full.reactive is not None
    assert full.reactive.excess_var == 4_000.0
    assert sum(full.reactive.distribution.values()) == 0.0
    assert set(full.reactive.reasons) == set(BATTERIES)
    assert set(full.reactive.reasons.values()) == {ReactiveAllotment.NO_ROOM_THIS_WAY}
    assert released.reactive is None  # without reactive_var: none asked, none reported


async def test_propose_with_reactive_power(daemon: Daemon, path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with open_client(path, program="peak") as peak:
            result = await peak.propose([1001, 1002], power_w=-2_000.0, reactive_var=-1_000.0)
    assert result.outcome is Outcome.SUCCESS, result
    assert result.arbitration is not None
    assert result.reactive is not None
    assert result.reactive.target_var == -1_000.0
    assert result.reactive.distribution == {1001: -500.0, 1002: -500.0}


async def test_a_reactive_power_json_cannot_carry_is_refused_as_the_daemon_would(
    client: Client,
) -> None:
    with trio.fail_after(LIMIT_S):
        with pytest.raises(DaemonError) as infinite:
            await client.set_power(0.0, [1001], reactive_var=math.inf)
        with pytest.raises(DaemonError) as nan:
            await client.propose([1001], power_w=0.0, reactive_var=math.nan)
    for error in (infinite, nan):
        assert error.value.code == Code.INVALID_PARAMS
        assert isinstance(error.value.data, dict)
        assert error.value.data["field"] == "reactive_var"


async def test_a_ramping_target_says_how_far_it_has_got(sim: Simulator, path: Path) -> None:
    config = config_for(sim, programs=PROGRAMS, ramp={"max_w_per_s": 1_000.0, "step_s": 1.0})
    with trio.fail_after(LIMIT_S):
        async with running_daemon(sim, path, config), open_client(path) as client:
            result = await client.set_power(4_000.0, BATTERIES)
    assert result.outcome is Outcome.SUCCESS, result
    assert result.ramping is not None
    assert result.ramping.target_w == 4_000.0
    assert 0.0 <= result.ramping.applied_w < 4_000.0
    assert result.ramping.eta_s > 0.0
    assert result.reactive is None
    assert result.excess_power_w == 0.0  # what is still on its way is not excess
