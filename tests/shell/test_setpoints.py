"""Every inverter's power accounted for, through the daemon on the simulator (issue 18).

Each test reproduces one of the issue's findings against the real daemon and the simulator over
loopback, and judges it by the simulator's own record of what each inverter was commanded and
held (:meth:`Simulator.record`): lapses of non-zero setpoints, the total held by a set of
inverters over time, the power each holds now.

Lifetimes run 20 times faster than the clock (the simulator's ``lifetime_scale``, which the
daemon is told): a 10 s lifetime holds for 0.5 s, so a test sees many lifetimes in a second or
two. Nothing sleeps to synchronise: the tests wait on the simulator (``sim_wait``) or on the
daemon's status board, under deadlines; where a test must let time pass to show that something
does *not* happen (a lapse), it waits for the simulator to have seen a given number of
commands, which only time can bring.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from distributord.core.config import Config
from distributord.core.status import Status
from distributord.shell.daemon import Daemon
from distributord.shell.live import Live, LiveValue
from distributord.shell.requestloop import held_s
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import Simulator
from tests.support import (
    Client,
    config_for,
    config_with,
    connect,
    running_daemon,
    sim_wait,
    wait_until,
)

SCALE = 0.05
"""The simulator's lifetime scale: a 10 s lifetime holds for 0.5 s of the clock."""


def scaled(batteries: int, telemetry_hz: float) -> Iterator[Simulator]:
    """A v1alpha18 simulator (what sites serve) whose lifetimes run :data:`SCALE` times faster."""
    with Simulator(
        uniform_fleet(batteries, seed=3),
        telemetry_hz=telemetry_hz,
        lifetime_scale=SCALE,
        apis=("v1alpha18",),
    ) as simulator:
        yield simulator


@pytest.fixture
def sim() -> Iterator[Simulator]:
    yield from scaled(3, 20.0)


def scaled_config(sim: Simulator, lifetime_s: int = 10, **requests: Any) -> Config:
    """The daemon's configuration on ``sim``: ``lifetime_s``, ``requests`` keys, a short drain."""
    return config_for(
        sim, setpoints={"lifetime_s": lifetime_s}, requests={"drain_timeout_s": 0.5, **requests}
    )


@asynccontextmanager
async def scaled_daemon(
    sim: Simulator, path: Path, config: Config | Live[Config] | None = None
) -> AsyncIterator[Daemon]:
    """The daemon on ``sim`` (:func:`scaled_config` unless given), told of :data:`SCALE`."""
    config = config or scaled_config(sim)
    async with running_daemon(sim, path, config, lifetime_scale=SCALE) as daemon:
        yield daemon


def commands_to(sim: Simulator, inverter: int) -> int:
    return sum(1 for c in sim.commands() if c.component_id == inverter)


async def wait_commands(sim: Simulator, inverter: int, count: int) -> None:
    """Wait until ``inverter`` has received ``count`` more commands (time passing, refreshed)."""
    target = commands_to(sim, inverter) + count
    await sim_wait(sim, lambda s: commands_to(s, inverter) >= target, limit_s=20.0)


async def status_of(client: Client, battery: int) -> dict[str, Any]:
    status = await client.result("get_status")
    (entry,) = [b for b in status["batteries"] if b["id"] == battery]
    return entry  # type: ignore[no-any-return]


async def test_a_hanging_inverter_does_not_let_the_others_lapse(
    sim: Simulator, tmp_path: Path
) -> None:
    # Finding 1: request_timeout_s (60 s) longer than the lifetime (10 s, here 0.5 s): one
    # inverter that never answers kept the request running, and what the others had accepted
    # expired before anything re-sent it.
    sim.set_fault(2003, command_hang=True)
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path), connect(path) as client:
        start = sim.now()
        await client.send(
            "set_power",
            {"power_w": 3000, "batteries": [1001, 1002, 1003], "request_timeout_s": 60},
        )
        await wait_commands(sim, 2001, 8)  # about 1.3 s: 2.7 lifetimes
        record = sim.record()
        assert record.lapses([2001, 2002], since=start) == []
        assert record.held_at(2001, record.time) > 0.0


async def test_failing_overlapping_requests_do_not_starve_the_refresh(
    sim: Simulator, tmp_path: Path
) -> None:
    # Finding 2: a request overlapping a standing set cancelled its running refresh even when
    # it then failed at once; with slow inverters, a client sending such requests made the
    # standing setpoint lapse.
    for inverter in (2001, 2002):
        sim.set_fault(inverter, command_latency_s=0.1)
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path), connect(path) as client:
        result = await client.result("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
        assert result["outcome"] == "success"
        start = sim.now()
        for _ in range(40):  # 2 s at 20 Hz, each failing before commanding anything
            bad = await client.result(
                "set_power", {"power_w": 1e6, "batteries": [1002, 1003], "adjust_power": False}
            )
            assert bad["outcome"] == "out_of_bounds"
            unknown = await client.result("set_power", {"power_w": 10, "batteries": [1002, 9]})
            assert unknown["outcome"] == "error"
            await trio.sleep(0.05)  # the client's pace, not a synchronisation
        record = sim.record()
        assert record.lapses([2001, 2002], since=start) == []
        assert record.min_total([2001, 2002], start=start) == pytest.approx(2000.0)


async def test_a_reload_that_raises_the_lifetime_does_not_let_setpoints_lapse(
    sim: Simulator, tmp_path: Path
) -> None:
    # Finding 3: raising setpoints.lifetime_s re-timed the refresh by the new lifetime while the
    # setpoints in force were sent with the old, shorter one.
    live = LiveValue(scaled_config(sim, lifetime_s=10))
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path, live), connect(path) as client:
        await client.result("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
        start = sim.now()
        live.value = scaled_config(sim, lifetime_s=60)  # 0.5 s → 3 s
        await wait_commands(sim, 2001, 2)  # the next refresh, then one by the new lifetime
        record = sim.record()
        assert record.lapses([2001, 2002], since=start) == []
        lifetimes = [c.lifetime_s for c in record.commands([2001], since=start)]
        assert lifetimes[-1] == 60


async def test_a_subset_request_releases_the_rest_of_the_set(
    sim: Simulator, tmp_path: Path
) -> None:
    # Finding 4: [1001, 1002] at -5 kW, then [1001] at +2 kW: 1002 was neither refreshed nor
    # stopped, and get_status went on showing its old setpoint.
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path), connect(path) as client:
        await client.result("set_power", {"power_w": -5000, "batteries": [1001, 1002]})
        result = await client.result("set_power", {"power_w": 2000, "batteries": [1001]})
        assert result["outcome"] == "success"
        assert sim.setpoint(2002) == 0.0  # released in the request's own round
        assert sim.setpoint(2001) == pytest.approx(2000.0)
        assert (await status_of(client, 1002))["setpoint_w"] == 0.0
        start = sim.now()
        await wait_commands(sim, 2001, 3)
        record = sim.record()
        assert record.lapses(since=start) == []
        assert [c.power_w for c in record.commands([2002], since=start)] == []


async def test_zero_watts_releases_batteries_that_are_not_usable_and_it_stays_released(
    sim: Simulator, tmp_path: Path
) -> None:
    # Finding 5: a 0 W request while none of its batteries was usable was answered "error"
    # and commanded nothing; the old setpoint stood, and came back when they worked again.
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path) as daemon, connect(path) as client:
        await client.result("set_power", {"power_w": 3000, "batteries": [1001, 1002]})
        for battery in (1001, 1002):
            sim.set_fault(battery, error_state=True)
        await wait_until(
            daemon,
            lambda d: all(d.tracker.state(b).status is Status.NOT_WORKING for b in (1001, 1002)),
        )
        result = await client.result("set_power", {"power_w": 0, "batteries": [1001, 1002]})
        assert result["outcome"] == "success"
        assert result["succeeded_batteries"] == [1001, 1002]
        assert (sim.setpoint(2001), sim.setpoint(2002)) == (0.0, 0.0)
        released = sim.now()
        for battery in (1001, 1002):
            sim.set_fault(battery, error_state=False)
        await wait_until(
            daemon,
            lambda d: all(d.tracker.state(b).status is Status.WORKING for b in (1001, 1002)),
        )
        # Nothing may happen now: only time can show it (two lifetimes, several re-plans).
        await trio.sleep(1.0)
        record = sim.record()
        assert [c.power_w for c in record.commands([2001, 2002], since=released)] == []
        assert record.max_total([2001, 2002], start=released) == 0.0


@pytest.mark.parametrize("final_reply", ["APPLIED_NONE", "APPLIED_END"])
async def test_a_command_applied_without_a_final_reply_is_released_by_zero_watts(
    sim: Simulator, tmp_path: Path, final_reply: str
) -> None:
    # Finding 5: after a v1alpha18 command was ACCEPTED (so applied) but got no final reply, a
    # 0 W request answered success but never commanded that inverter: it kept its old power.
    sim.set_fault(2001, final_reply=final_reply)
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path), connect(path) as client:
        first = await client.result(
            "set_power", {"power_w": 1000, "batteries": [1001], "request_timeout_s": 0.3}
        )
        assert first["outcome"] == "success"  # ACCEPTED: applied (issue 21)
        assert sim.setpoint(2001) == pytest.approx(1000.0)
        assert (await status_of(client, 1001))["setpoint_w"] == pytest.approx(1000.0)
        await client.result(
            "set_power", {"power_w": 0, "batteries": [1001], "request_timeout_s": 0.3}
        )
        assert sim.setpoint(2001) == 0.0


async def test_a_command_without_a_verdict_never_makes_the_set_hold_more_than_asked(
    sim: Simulator, tmp_path: Path
) -> None:
    # Finding 6: a command ACCEPTED with no final reply counted as failed; the request was
    # re-planned on the other batteries and the "failed" inverter was never sent 0 W:
    # +2,000 W requested, the inverters held 3,000 W. Since issue 21 ACCEPTED is a success.
    sim.set_fault(2001, final_reply="APPLIED_END")
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path) as daemon, connect(path) as client:
        start = sim.now()
        result = await client.result("set_power", {"power_w": 2000, "batteries": [1001, 1002]})
        assert result["outcome"] == "success", result
        assert daemon.tracker.state(1001).status is Status.WORKING
        # Several refreshes, each accepted without a final reply: the set holds what was asked.
        await sim_wait(sim, lambda s: len([c for c in s.commands() if c.component_id == 2001]) > 3)
        assert sim.setpoint(2001) > 0.0
        assert sim.setpoint(2001) + sim.setpoint(2002) == pytest.approx(2000.0)
        record = sim.record()
        assert record.max_total([2001, 2002], start=start) <= 2000.0
        assert record.lapses([2001, 2002], since=start) == []


async def test_a_tiny_request_timeout_reports_failures_and_the_set_never_exceeds_the_request(
    sim: Simulator, tmp_path: Path
) -> None:
    # Finding 6: with request_timeout_s 1e-9 (valid) every reply said 0 W succeeded while
    # every command was applied, and no later release knew of them.
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path), connect(path) as client:
        start = sim.now()
        result = await client.result(
            "set_power",
            {"power_w": 2000, "batteries": [1001, 1002], "request_timeout_s": 1e-9},
        )
        assert result["outcome"] == "partial_failure"
        assert result["failed_power_w"] == pytest.approx(2000.0)
        # The daemon cannot know whether they were applied: it reports them as possibly held
        # (the old bookkeeping counted only successes, and knew of nothing to release).
        for battery in (1001, 1002):
            assert (await status_of(client, battery))["setpoint_w"] == pytest.approx(
                result["distribution"][str(battery)]
            )
        # Whatever landed stands: the ledger counts it possibly applied, retries, and holds it.
        await sim_wait(sim, lambda s: s.setpoint(2001) + s.setpoint(2002) == pytest.approx(2000))
        await client.result("set_power", {"power_w": 0, "batteries": [1001, 1002]})
        assert (sim.setpoint(2001), sim.setpoint(2002)) == (0.0, 0.0)
        assert sim.record().max_total([2001, 2002], start=start) <= 2000.0


async def test_what_get_status_reports_is_what_the_inverter_may_hold(
    sim: Simulator, tmp_path: Path
) -> None:
    # Finding 9: setpoint_w was the last command that succeeded: it stayed after the setpoint
    # lapsed.
    path = tmp_path / "c.sock"
    async with scaled_daemon(sim, path) as daemon, connect(path) as client:
        await client.result("set_power", {"power_w": 3000, "batteries": [1001, 1002, 1003]})
        assert (await status_of(client, 1003))["setpoint_w"] == sim.setpoint(2003) > 0.0
        # Its refreshes are refused from now on (so surely not applied): it lapses. (A command
        # that hangs may have been applied: the ledger then goes on believing it may hold.)
        sim.set_fault(2003, command_error="OUT_OF_RANGE")
        await sim_wait(sim, lambda s: s.setpoint(2003) == 0.0)  # it lapsed
        # The ledger lets it go once its lifetime may have run out.
        ledger = daemon.loop.commander.ledger
        until = ledger.belief_until(2003, trio.current_time())
        if until is not None:  # (None: it has already run out)
            await trio.sleep_until(until)
        assert "setpoint_w" not in await status_of(client, 1003)
        assert 1003 not in daemon.loop.setpoints()
        assert (await status_of(client, 1001))["setpoint_w"] == pytest.approx(sim.setpoint(2001))


def test_a_request_unanswered_at_the_end_may_be_in_force_from_when_it_was_sent() -> None:
    sent = [
        Sent(power_w=-1500.0, sent_at=0.0, answered_at=1.0, outcome="success"),
        Sent(power_w=2000.0, sent_at=2.0),  # the soak ended before its answer
    ]
    assert allowed_at(sent, 1.5) == (-1500.0, 0.0)
    assert allowed_at(sent, 2.5) == (-1500.0, 2000.0)


def test_lifetimes_are_scaled_consistently() -> None:
    assert math.isclose(held_s(config_with(setpoints={"lifetime_s": 10}), SCALE), 0.5)


# -- the worst mix, for minutes ----------------------------------------------------------------

SOAK_S = float(os.environ.get("DISTRIBUTORD_SOAK_S", "600"))
"""How long the slow soak runs (``pytest -m slow``): ten minutes unless told otherwise."""


@attrs.define
class Sent:
    """One request of a soak client, on the simulator's clock."""

    power_w: float
    sent_at: float
    answered_at: float = math.inf
    outcome: str = ""


@attrs.frozen
class SoakFigures:
    """What a soak did, and what the simulator's record says of it."""

    seconds: float
    requests: int
    failing: int
    reloads: int
    releases_while_out: int
    commands: int
    lapses: int
    over: float
    """The largest excess, W, of what a set held over what its requests allowed (0: none)."""


def allowed_at(sent: list[Sent], at: float) -> tuple[float, float]:
    """The range the set's total may be in at ``at``: every request that may be in force.

    A request that was not refused may be in force from when it was sent until the next such
    request has been answered (before that, the old one may still hold on some inverters). A
    request still unanswered when the soak ends (no outcome yet) may be in force from when it
    was sent: leaving it out judged the first commands of the soak's last request as excess
    (+1,001.6 W in set [1004, 1005, 1006] when a loaded machine took the last request past the
    end; the "over-delivery" of issue 18's closing note).
    """
    low = high = 0.0
    applied = [s for s in sent if s.outcome in ("success", "partial_failure", "")]
    for index, request in enumerate(applied):
        later = applied[index + 1] if index + 1 < len(applied) else None
        if request.sent_at <= at and (later is None or at <= later.answered_at):
            low, high = min(low, request.power_w), max(high, request.power_w)
    return low, high


async def soak(sim: Simulator, tmp_path: Path, seconds: float) -> SoakFigures:
    """Run the worst mix for ``seconds`` and judge it by the simulator's record."""
    sim.set_fault(2006, command_hang=True)  # one inverter never answers
    # Commands no client waits for (the refreshes to the hanging inverter) end after 1 s.
    live = LiveValue(scaled_config(sim, lifetime_s=10, default_timeout_s=1.0))
    path = tmp_path / "c.sock"
    holders: dict[tuple[int, ...], list[Sent]] = {(1001, 1002, 1003): [], (1004, 1005, 1006): []}
    counts = {"failing": 0, "reloads": 0, "releases": 0}
    start = sim.now()

    async def holder(batteries: tuple[int, ...], powers: list[float], every_s: float) -> None:
        async with connect(path) as client:
            for index in itertools.count():
                entry = Sent(power_w=powers[index % len(powers)], sent_at=time.monotonic())
                holders[batteries].append(entry)
                result = await client.result(
                    "set_power",
                    {
                        "power_w": entry.power_w,
                        "batteries": list(batteries),
                        "request_timeout_s": 2,
                    },
                )
                entry.answered_at, entry.outcome = time.monotonic(), result["outcome"]
                await trio.sleep(every_s)

    async def failing() -> None:  # overlapping requests that fail before commanding, 10 Hz
        async with connect(path) as client:
            while True:
                await client.result(
                    "set_power", {"power_w": 1e6, "batteries": [1003, 1004], "adjust_power": False}
                )
                await client.result("set_power", {"power_w": 5, "batteries": [1002, 9]})
                counts["failing"] += 2
                await trio.sleep(0.1)

    async def reloads() -> None:  # the lifetime up and down
        for lifetime in itertools.cycle([30, 10, 60, 10]):
            await trio.sleep(2.3)
            live.value = scaled_config(sim, lifetime_s=lifetime, default_timeout_s=1.0)
            counts["reloads"] += 1

    async def outages(daemon: Daemon) -> None:  # releases while batteries are out
        async with connect(path) as client:
            while True:
                await trio.sleep(7.0)
                for battery in (1001, 1002):
                    sim.set_fault(battery, error_state=True)
                await wait_until(
                    daemon,
                    lambda d: all(
                        d.tracker.state(b).status is Status.NOT_WORKING for b in (1001, 1002)
                    ),
                )
                entry = Sent(power_w=0.0, sent_at=time.monotonic())
                holders[(1001, 1002, 1003)].append(entry)
                release = {"power_w": 0, "batteries": [1001, 1002, 1003], "request_timeout_s": 5}
                result = await client.result("set_power", release)
                entry.answered_at, entry.outcome = time.monotonic(), result["outcome"]
                counts["releases"] += 1
                for battery in (1001, 1002):
                    sim.set_fault(battery, error_state=False)

    async with scaled_daemon(sim, path, live) as daemon, trio.open_nursery() as nursery:
        nursery.start_soon(holder, (1001, 1002, 1003), [3000.0, -2000.0, 1500.0, 2500.0], 0.9)
        nursery.start_soon(holder, (1004, 1005, 1006), [-1500.0, 2000.0, 900.0], 1.3)
        nursery.start_soon(failing)
        nursery.start_soon(reloads)
        nursery.start_soon(outages, daemon)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
        end = sim.now()  # the daemon still lives: every lapse until here counts
    record = sim.record()
    healthy = [2001, 2002, 2003, 2004, 2005]
    lapses = record.lapses(healthy, since=start)
    lapses = [e for e in lapses if e.at <= end]
    over = 0.0
    for batteries, sent in holders.items():
        inverters = [sim.inverter_of(b) for b in batteries]
        for at, total in record.timeline(inverters, start=start, end=end):
            low, high = allowed_at(sent, at)
            if max(total - high, low - total) > 0 and os.environ.get("SOAK_DEBUG"):
                print("OVER", batteries, at - start, total, (low, high))
                for e in sent:
                    print(
                        "  REQ",
                        round(e.sent_at - start, 4),
                        round(e.answered_at - start, 4),
                        e.power_w,
                        e.outcome,
                    )
                for inv in inverters:
                    for c in record.commands([inv], since=at - 0.3):
                        if c.at <= at + 0.05:
                            print("   ", inv, round(c.at - start, 4), c.power_w, c.outcome)
            over = max(over, total - high, low - total)
    commands = sum(1 for c in record.commands(since=start) if c.at <= end)
    return SoakFigures(
        seconds=end - start,
        requests=sum(len(s) for s in holders.values()),
        failing=counts["failing"],
        reloads=counts["reloads"],
        releases_while_out=counts["releases"],
        commands=commands,
        lapses=len(lapses),
        over=over,
    )


async def test_the_worst_mix_for_a_while_no_lapse_and_never_more_than_asked(
    sim6: Simulator, tmp_path: Path
) -> None:
    figures = await soak(sim6, tmp_path, 15.0)
    print(figures)
    assert figures.releases_while_out >= 1
    assert (figures.lapses, figures.over) == (0, 0.0), figures


@pytest.mark.slow
async def test_the_worst_mix_soaked_no_lapse_and_never_more_than_asked(
    sim6: Simulator, tmp_path: Path
) -> None:
    figures = await soak(sim6, tmp_path, SOAK_S)
    print(figures)
    assert (figures.lapses, figures.over) == (0, 0.0), figures


@pytest.fixture
def sim6() -> Iterator[Simulator]:
    yield from scaled(6, 10.0)
