"""Ramping inverters, through the daemon on the simulator (issue 21, item 3).

On v1alpha18/19 a command answers with a stream: ``ACCEPTED`` at once, the final reply after the
inverter has ramped, which may be long after the request should be answered. The rule
(``spec/microgrid-api.md``, "The set-power reply stream"): a command succeeds for the request on
``ACCEPTED``; the daemon reads the rest of the stream in the background until the final reply or
the command's lifetime, whichever is first, and a newer command of ours abandons it. A late
``FAILED`` blocks the battery, is logged, counted and announced (``command_failed``); a late
``OVERRIDDEN`` by someone else gives the battery the reason ``overridden`` (a warning once, a
metric, no block); ``SUCCESS`` is counted.

Real gRPC over loopback and the real control socket; the simulator's ``ramp_s`` fault makes an
inverter ramp. Nothing sleeps to synchronise: the tests wait on the simulator, on the status
board or on the socket, each under a deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from distributord.core.status import Reason, Status
from distributord.shell.daemon import Daemon
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from tests.support import (
    LIMIT_S,
    Client,
    config_for,
    connect,
    running_daemon,
    sim_wait,
    wait_until,
)

SCENARIO = Scenario(
    batteries=(BatterySpec(id=1001, soc_pct=40.0), BatterySpec(id=1002, soc_pct=40.0)),
    inverters=(InverterSpec(id=2001, batteries=(1001,)), InverterSpec(id=2002, batteries=(1002,))),
)


@pytest.fixture(params=["v1alpha18", "v1alpha19"])
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    """A simulator that speaks one version with a reply stream."""
    with Simulator(SCENARIO, telemetry_hz=20.0, apis=(request.param,)) as simulator:
        yield simulator


def final_replies(daemon: Daemon, reply: str) -> float:
    """``distributord_command_final_replies_total`` for ``reply``, in the version spoken."""
    value = daemon.metrics.registry.get_sample_value(
        "distributord_command_final_replies_total",
        {"reply": reply, "api": daemon.link.version or "unknown"},
    )
    return value or 0.0


async def wait_finals(daemon: Daemon, count: int) -> None:
    """Wait until ``count`` accepted commands' reply streams have ended (read in the background)."""
    with trio.fail_after(LIMIT_S):
        await daemon.loop.commander.finals.wait_value(lambda n: n >= count)


async def notification(client: Client, method: str) -> dict[str, Any]:
    """The next notification ``method`` on ``client`` (others are skipped)."""
    with trio.fail_after(LIMIT_S):
        while True:
            message = await client.receive()
            if message.get("method") == method:
                params: dict[str, Any] = message["params"]
                return params


async def test_an_inverter_that_ramps_longer_than_the_timeout_makes_the_request_succeed(
    sim: Simulator, tmp_path: Path
) -> None:
    # Found on main: the daemon waited for SUCCESS, so a request whose timeout ended during the
    # ramp failed, and its battery was blocked.
    sim.set_fault(2002, ramp_s=1.0)
    async with (
        running_daemon(sim, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        result = await client.result(
            "set_power", {"power_w": 2000, "batteries": [1001, 1002], "request_timeout_s": 0.3}
        )
        assert result["outcome"] == "success", result
        assert result["succeeded_batteries"] == [1001, 1002]
        assert daemon.tracker.state(1002).status is Status.WORKING
        assert sim.ramping(2002)  # answered while the inverter still ramps
        # The ramp ends with SUCCESS, read in the background, and counted.
        await sim_wait(sim, lambda s: [r.reply for r in s.ramps()] == ["SUCCESS"])
        await wait_finals(daemon, 2)  # 1001's at once, 1002's after its ramp
        assert final_replies(daemon, "success") == 2.0
        assert daemon.tracker.state(1002).reasons == frozenset()
    assert sim.setpoint(2002) == 1000.0


async def test_a_late_failed_blocks_the_battery_is_logged_counted_and_announced(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.set_fault(2002, ramp_s=0.5, final_reply="FAILED")
    async with (
        running_daemon(sim, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
        connect(tmp_path / "c.sock") as subscriber,
    ):
        assert await subscriber.result("subscribe_status") == {"subscribed": True}
        request_id = await client.send("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
        result = (await client.reply_to(request_id))["result"]
        assert result["outcome"] == "success", result  # ACCEPTED: the request succeeded
        params = await notification(subscriber, "command_failed")
        assert params == {
            "battery": 1002,
            "inverter": 2002,
            "power_w": 1000.0,
            "reply": "FAILED",
            "request": {"id": request_id, "program": "default"},
        }
        state = daemon.tracker.state(1002)
        assert state.status is Status.UNCERTAIN
        assert Reason.BLOCKED_AFTER_FAILURE in state.reasons
        assert final_replies(daemon, "failed") == 1.0
    failures = [r for r in caplog.records if "failed after it was accepted" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING]
    assert f"request {request_id!r} of program default" in failures[0].getMessage()


async def test_an_inverter_that_accepts_then_fails_every_command_is_blocked_longer_each_time(
    sim: Simulator, tmp_path: Path
) -> None:
    # Found in review: ACCEPTED counted as a success that reset the blocking window, so an
    # inverter failing after every ramp was blocked 1 s each time instead of 1, 2, 4 ... s.
    sim.set_fault(2002, ramp_s=0.2, final_reply="FAILED")
    windows: list[float] = []
    async with (
        running_daemon(sim, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
        connect(tmp_path / "c.sock") as subscriber,
    ):
        assert await subscriber.result("subscribe_status") == {"subscribed": True}
        result = await client.result("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
        assert result["outcome"] == "success", result
        for _ in range(2):  # the request's command, then the daemon's retry of it
            await notification(subscriber, "command_failed")
            state = daemon.tracker.state(1002)
            assert state.blocked_until is not None
            windows.append(state.blocked_until - state.since)
    assert windows == [1.0, 2.0]


async def test_overridden_by_someone_else_is_a_reason_a_warning_once_and_no_block(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The simulator's OVERRIDDEN fault: another controller's command replaced ours.
    sim.set_fault(2002, ramp_s=0.2, final_reply="OVERRIDDEN")
    async with (
        running_daemon(sim, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        for count, power in enumerate((2000, 3000), start=1):  # overridden twice: one warning
            result = await client.result("set_power", {"power_w": power, "batteries": [1001, 1002]})
            assert result["outcome"] == "success", result
            await wait_finals(daemon, 2 * count)  # 1001's SUCCESS and 1002's OVERRIDDEN
            assert final_replies(daemon, "overridden") == count
        state = daemon.tracker.state(1002)
        assert state.status is Status.WORKING  # not blocked: not the battery's failure
        assert state.reasons == frozenset({Reason.OVERRIDDEN})
        (reported,) = [
            b for b in (await client.result("get_status"))["batteries"] if b["id"] == 1002
        ]
        assert (reported["status"], reported["reasons"]) == ("working", ["overridden"])
        # Our next command that ramps to SUCCESS holds again: the reason ends.
        sim.set_fault(2002, final_reply="SUCCESS")
        await client.result("set_power", {"power_w": 1000, "batteries": [1001, 1002]})
        await wait_until(daemon, lambda d: d.tracker.state(1002).reasons == frozenset())
    warnings = [
        r for r in caplog.records if "someone else commands this inverter" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


async def test_our_own_newer_command_abandons_the_older_stream(
    sim: Simulator, tmp_path: Path
) -> None:
    # A real inverter answers OVERRIDDEN on the older stream when a newer command comes, ours
    # included: that must not be taken for someone else's.
    sim.set_fault(2001, ramp_s=60.0)
    async with (
        running_daemon(sim, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        for power in (1000, 500):
            result = await client.result(
                "set_power", {"power_w": power, "batteries": [1001], "request_timeout_s": 0.5}
            )
            assert result["outcome"] == "success", result
        # The older stream ended (cancelled by us, or OVERRIDDEN by our own newer command); the
        # newer one is read on.
        await sim_wait(sim, lambda s: [r.power_w for r in s.ramps()] == [1000.0])
        assert daemon.loop.commander.following(2001)
        assert sim.ramping(2001)
        assert daemon.tracker.state(1001).reasons == frozenset()
        assert final_replies(daemon, "overridden") == 0.0
        assert sim.setpoint(2001) == 500.0


async def test_a_stream_is_followed_no_longer_than_the_commands_lifetime(
    tmp_path: Path,
) -> None:
    # Lifetimes run 20 times faster than the clock: a 10 s lifetime holds for 0.5 s. A 0 W
    # command is sent once and not refreshed: nothing newer abandons its stream.
    with Simulator(SCENARIO, telemetry_hz=20.0, apis=("v1alpha18",), lifetime_scale=0.05) as sim:
        sim.set_fault(2001, ramp_s=60.0)
        config = config_for(sim, setpoints={"lifetime_s": 10})
        async with (
            running_daemon(sim, tmp_path / "c.sock", config, lifetime_scale=0.05) as daemon,
            connect(tmp_path / "c.sock") as client,
        ):
            result = await client.result("set_power", {"power_w": 0, "batteries": [1001]})
            assert result["outcome"] == "success", result
            await sim_wait(sim, lambda s: [r.reply for r in s.ramps()] == ["cancelled"])
            (ramp,) = sim.ramps()
            assert 0.4 <= ramp.ended_at - ramp.accepted_at < 5.0  # its lifetime: 0.5 s
            await wait_finals(daemon, 1)
            assert final_replies(daemon, "none") == 1.0
            assert not daemon.loop.commander.following(2001)
