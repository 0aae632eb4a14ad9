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

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from distributord.core.model import BatterySnapshot, InverterSnapshot
from distributord.core.status import Status
from distributord.shell.daemon import Daemon
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from tests.shell.test_setpoints import SCALE, commands_to, scaled_config, scaled_daemon
from tests.support import (
    LIMIT_S,
    Client,
    config_for,
    connect,
    running_daemon,
    sim_wait,
    wait_until,
)


def fleet(*socs: float) -> Scenario:
    """One battery per SoC (1001.., inverters 2001..), 10 kWh and 5 kW each."""
    ids = range(1001, 1001 + len(socs))
    return Scenario(
        batteries=tuple(BatterySpec(id=b, soc_pct=s) for b, s in zip(ids, socs, strict=True)),
        inverters=tuple(InverterSpec(id=b + 1000, batteries=(b,)) for b in ids),
        telemetry_hz=20.0,
    )


def simulator(scenario: Scenario, scale: float = SCALE) -> Iterator[Simulator]:
    with Simulator(scenario, lifetime_scale=scale, apis=("v1alpha18",)) as sim:
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


# --- power the daemon cannot command --------------------------------------------------------

HOLD_SCALE = 0.5
"""Lifetimes for the compensation tests: a 10 s lifetime holds 5 s (a failed inverter keeps
its old setpoint that long), and standing sets are re-planned every 1.7 s."""

SET = [1001, 1002, 1003]
INVERTERS = [2001, 2002, 2003]


@pytest.fixture
def three() -> Iterator[Simulator]:
    """Three identical batteries at 50 %."""
    yield from simulator(fleet(50.0, 50.0, 50.0), HOLD_SCALE)


def site(sim: Simulator, inverters: list[int] = INVERTERS) -> float:
    """What the inverters of the set deliver now: their measured AC power, W."""
    return sum(sim.setpoint(i) for i in inverters)


@asynccontextmanager
async def held(
    sim: Simulator, tmp_path: Path, **distribution: Any
) -> AsyncIterator[tuple[Daemon, Client]]:
    """The daemon on ``sim``; a battery once blocked stays blocked for the test's length."""
    path = tmp_path / "c.sock"
    config = config_for(
        sim,
        setpoints={"lifetime_s": 10},
        status={"min_blocking_s": 60.0, "max_blocking_s": 60.0},
        distribution=distribution,
    )
    async with (
        running_daemon(sim, path, config, lifetime_scale=HOLD_SCALE) as daemon,
        connect(path) as client,
    ):
        yield daemon, client


def measured(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, inverter: int, power_w: float
) -> trio.Event:
    """Set once the daemon has received ``inverter``'s measured power at ``power_w`` (±1 W).

    Telemetry comes 20 times a second: a request sent right after the one that set the power
    may be planned on a sample from before it. The daemon's telemetry store is watched.
    """
    seen = trio.Event()
    fleet = daemon.tracker.fleet
    update = fleet.update

    def watching(snapshot: BatterySnapshot | InverterSnapshot) -> int | None:
        if (
            isinstance(snapshot, InverterSnapshot)
            and snapshot.component_id == inverter
            and abs(snapshot.active_power_w - power_w) <= 1.0
        ):
            seen.set()
        return update(snapshot)

    monkeypatch.setattr(fleet, "update", watching)
    return seen


async def fail_third(
    sim: Simulator,
    daemon: Daemon,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    first: float,
    then: float,
) -> None:
    """``first`` W over the set, then the third inverter fails ``then`` W: it keeps ``first / 3``.

    Returns once the daemon has received the third inverter's measured power and the third
    battery is blocked.
    """
    seen = measured(daemon, monkeypatch, 2003, first / 3)
    result = await client.result("set_power", {"power_w": first, "batteries": SET})
    assert result["outcome"] == "success", result
    with trio.fail_after(LIMIT_S):
        await seen.wait()
    sim.set_fault(2003, command_error="FAILED_PRECONDITION")
    failed = await client.result("set_power", {"power_w": then, "batteries": SET})
    assert failed["outcome"] == "partial_failure", failed
    assert failed["failed_batteries"] == [1003]
    await wait_until(daemon, lambda d: d.tracker.state(1003).status is Status.UNCERTAIN)
    assert sim.setpoint(2003) == pytest.approx(first / 3, rel=1e-3)


def got_no_power_have_reasons(result: dict[str, Any]) -> None:
    """Every requested battery with no power in the result says why."""
    powered = {b for b, w in result["distribution"].items() if w != 0.0}
    assert {str(b) for b in result["batteries"]} - powered <= result["reasons"].keys(), result


async def test_a_failed_inverter_keeps_its_old_setpoint_and_the_others_make_up_the_rest(
    three: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distributord")
    sim = three
    async with held(sim, tmp_path) as (daemon, client):
        await fail_third(sim, daemon, client, monkeypatch, 3000.0, 2000.0)
        old = sim.setpoint(2003)
        # The standing set is re-planned at once (1003 changed status): the site meets 2000 W.
        await sim_wait(sim, lambda s: abs(site(s) - 2000.0) < 1e-2)
        assert sim.setpoint(2003) == old
        result = await client.result("set_power", {"power_w": 2000, "batteries": SET})
        assert result["outcome"] == "success", result
        assert sim.setpoint(2003) == old  # still held: the comparison below is fair
        assert site(sim) == pytest.approx(2000.0, abs=1e-2)
        assert result["unused_power_w"] == {"1003": pytest.approx(old, abs=1e-3)}
        assert result["compensated_power_w"] == pytest.approx(old, abs=1e-3)
        assert result["uncompensated_power_w"] == 0.0
        assert result["succeeded_batteries"] == [1001, 1002]
        assert result["succeeded_power_w"] == pytest.approx(2000.0 - old, abs=1e-2)
        assert "1003" not in result["distribution"]
        assert result["reasons"]["1003"].startswith("uncertain (blocked_after_failure); measured ")
        assert result["reasons"]["1003"].endswith(" W, counted against the request")
        got_no_power_have_reasons(result)
        assert (
            "request for batteries [1001, 1002, 1003] at 2000 W: batteries [1003] not used still "
            "carry 1000 W; 1000 W taken off the request, 0 W beyond or against it"
        ) in caplog.text
        # Once its old setpoint ran out, a re-plan gives the others all of it again.
        await sim_wait(sim, lambda s: s.setpoint(2003) == 0.0, limit_s=15.0)
        await sim_wait(sim, lambda s: abs(site(s) - 2000.0) < 1e-2, limit_s=15.0)


@pytest.mark.parametrize(
    ("first", "then", "others", "uncompensated"),
    [
        # The failed one discharges 1000 W, more than the 500 W discharge asked: the others get
        # 0 W, never a charge to absorb it; the 500 W beyond the request is reported.
        (-3000.0, -500.0, 0.0, -500.0),
        # It discharges 1000 W against a 500 W charge: the others are charged 500 W as asked,
        # not 1500 W to absorb it; the 1000 W against the request is reported.
        (-3000.0, 500.0, 500.0, -1000.0),
    ],
)
async def test_power_against_or_beyond_the_request_is_never_absorbed_and_is_reported(
    three: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: float,
    then: float,
    others: float,
    uncompensated: float,
) -> None:
    sim = three
    async with held(sim, tmp_path) as (daemon, client):
        await fail_third(sim, daemon, client, monkeypatch, first, then)
        result = await client.result("set_power", {"power_w": then, "batteries": SET})
        assert result["outcome"] == "success", result
        assert sim.setpoint(2003) == pytest.approx(first / 3, rel=1e-3)
        assert site(sim, [2001, 2002]) == pytest.approx(others, abs=1e-2)
        assert result["succeeded_power_w"] == pytest.approx(others, abs=1e-2)
        assert result["uncompensated_power_w"] == pytest.approx(uncompensated, rel=1e-3), result
        assert result["unused_power_w"]["1003"] == pytest.approx(first / 3, rel=1e-3)
        for battery in ("1001", "1002"):
            assert result["distribution"][battery] * then >= 0.0  # never the opposite sign
        got_no_power_have_reasons(result)


async def test_off_the_measured_power_is_reported_and_not_taken_off(
    three: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = three
    async with held(sim, tmp_path, compensate_unused=False) as (daemon, client):
        await fail_third(sim, daemon, client, monkeypatch, 3000.0, 2000.0)
        result = await client.result("set_power", {"power_w": 2000, "batteries": SET})
        assert result["outcome"] == "success", result
        assert site(sim, [2001, 2002]) == pytest.approx(2000.0, abs=1e-2)
        assert result["compensated_power_w"] == 0.0
        assert result["uncompensated_power_w"] == pytest.approx(1000.0, rel=1e-3)
        assert result["reasons"]["1003"].endswith(
            "not counted (distribution.compensate_unused is off)"
        )


async def test_without_a_fresh_measurement_nothing_is_taken_off_and_the_reason_says_so(
    three: Simulator, tmp_path: Path
) -> None:
    sim = three
    path = tmp_path / "c.sock"
    config = config_for(sim, setpoints={"lifetime_s": 10}, status={"max_data_age_s": 1.0})
    async with (
        running_daemon(sim, path, config, lifetime_scale=HOLD_SCALE) as daemon,
        connect(path) as client,
    ):
        result = await client.result("set_power", {"power_w": 3000, "batteries": SET})
        assert result["outcome"] == "success", result
        sim.set_fault(2003, stream_silence=True)
        await wait_until(daemon, lambda d: d.tracker.state(1003).status is Status.NOT_WORKING)
        result = await client.result("set_power", {"power_w": 3000, "batteries": SET})
        assert result["outcome"] == "success", result
        assert site(sim, [2001, 2002]) == pytest.approx(3000.0, abs=1e-2)
        assert "unused_power_w" not in result
        assert result["reasons"]["1003"] == (
            "not_working (stale_inverter_data); no fresh measured power: not compensated"
        )
        got_no_power_have_reasons(result)
        # Whatever the outcome: a refusal says why too.
        refused = await client.result(
            "set_power", {"power_w": 1e6, "batteries": SET, "adjust_power": False}
        )
        assert refused["outcome"] == "out_of_bounds", refused
        assert refused["reasons"]["1003"].startswith("not_working (stale_inverter_data)")


async def test_batteries_another_program_holds_are_not_counted_as_unused(
    tmp_path: Path,
) -> None:
    # Their power is commanded by us, for that program: taking it off this program's request
    # would leave this program short by what the other was granted.
    programs = {"fcr": {"priority": 90}, "trade": {"priority": 10}}
    with Simulator(fleet(50.0, 50.0, 50.0), apis=("v1",)) as sim:
        path = tmp_path / "c.sock"
        async with (
            running_daemon(sim, path, config_for(sim, programs=programs)),
            connect(path) as trade,
            connect(path) as fcr,
        ):
            for client, name in ((trade, "trade"), (fcr, "fcr")):
                assert (await client.result("hello", {"program": name}))["program"] == name
            result = await trade.result("set_power", {"power_w": 3000, "batteries": SET})
            assert result["outcome"] == "success", result
            taken = await fcr.result("set_power", {"power_w": 1000, "batteries": [1003]})
            assert taken["outcome"] == "success", taken
            # trade's set is re-planned over what it still holds: all of its 3000 W there.
            await sim_wait(sim, lambda s: abs(site(s, [2001, 2002]) - 3000.0) < 1e-2)
            assert sim.setpoint(2003) == pytest.approx(1000.0)
            again = await trade.result("set_power", {"power_w": 3000, "batteries": SET})
            assert again["outcome"] == "success", again
            assert site(sim, [2001, 2002]) == pytest.approx(3000.0, abs=1e-2)
            assert "unused_power_w" not in again
            assert again["reasons"]["1003"] == "held by program fcr (priority 90)"


async def test_an_inverter_that_does_not_work_but_carries_power_is_counted(
    three: Simulator, tmp_path: Path
) -> None:
    # An inverter in an error state that still reports 800 W of charge (the simulator's
    # power_offset_w: power no command of the daemon explains).
    sim = three
    path = tmp_path / "c.sock"
    config = config_for(sim, setpoints={"lifetime_s": 10})
    async with (
        running_daemon(sim, path, config, lifetime_scale=HOLD_SCALE) as daemon,
        connect(path) as client,
    ):
        # One reading brings both: the error state, and the power it still reports.
        sim.set_fault(2003, error_state=True, power_offset_w=800.0)
        await wait_until(daemon, lambda d: d.tracker.state(1003).status is Status.NOT_WORKING)
        result = await client.result("set_power", {"power_w": 3000, "batteries": SET})
    assert result["outcome"] == "success", result
    assert site(sim, [2001, 2002]) == pytest.approx(2200.0, abs=1e-2)
    assert result["unused_power_w"] == {"1003": 800.0}
    assert result["reasons"]["1003"] == (
        "not_working (inverter_error_code, inverter_error_state); "
        "measured 800.0 W, counted against the request"
    )
