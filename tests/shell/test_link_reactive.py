"""Reactive power through the microgrid link, against the simulator over real gRPC (issue 24).

``set_reactive_powers`` is ``set_active_powers`` with var instead of W: one batch, each
outcome landed as it comes, refusals as :class:`CommandRejectedError`, v1alpha18/19's reply
stream followed by a :class:`Tail`. The inverters' reactive bounds and apparent-power limit
arrive in their snapshots. :class:`ReactiveSide` lets a second commander drive reactive power.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
import trio.testing

from distributord.api.adapter import FinalReply
from distributord.core.errors import CommandError, CommandFailedError, CommandRejectedError
from distributord.core.model import InverterSnapshot, PowerBounds
from distributord.core.topology import Topology
from distributord.shell.link import (
    Late,
    MicrogridClient,
    MicrogridLink,
    ReactiveSide,
    Tail,
    Telemetry,
    discover,
    open_link,
)
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from tests.fakes import Answer, FakeMicrogrid
from tests.shell.test_commander import commanding, send
from tests.shell.test_link import RecordingSink, sim_wait
from tests.support import LIMIT_S

APIS = ["v1alpha18", "v1alpha19", "v1"]

SCENARIO = Scenario(
    batteries=(BatterySpec(id=1001, soc_pct=50.0), BatterySpec(id=1002, soc_pct=50.0)),
    inverters=(
        InverterSpec(
            id=2001,
            batteries=(1001,),
            power_limit_w=5_000.0,
            reactive_limit_var=3_000.0,
            apparent_limit_va=4_000.0,
        ),
        InverterSpec(id=2002, batteries=(1002,), power_limit_w=5_000.0),
    ),
)


@pytest.fixture(params=APIS)
def sim(request: pytest.FixtureRequest) -> Iterator[Simulator]:
    with Simulator(
        SCENARIO, telemetry_hz=20.0, lifetime_scale=0.01, apis=(request.param,)
    ) as simulator:
        yield simulator


@pytest.fixture
async def link(sim: Simulator) -> AsyncIterator[MicrogridLink]:
    async with open_link(sim.address) as opened:
        await discover(opened)
        yield opened


async def reactive(link: MicrogridClient, inverter: int, var: float, lifetime_s: int = 60) -> float:
    landed: dict[int, float | CommandError] = {}
    with trio.fail_after(LIMIT_S):
        await link.set_reactive_powers({inverter: var}, lifetime_s, landed.__setitem__)
    outcome = landed[inverter]
    if isinstance(outcome, CommandError):
        raise outcome
    return outcome


async def test_a_reactive_command_lands_in_every_version(
    sim: Simulator, link: MicrogridLink
) -> None:
    until = await reactive(link, 2001, -1_250.0)
    assert until == pytest.approx(time.time() + 60, abs=2)
    assert sim.reactive_setpoint(2001) == -1_250.0
    assert sim.setpoint(2001) == 0.0  # active power untouched
    assert sim.commands() == []  # the active commands' log


async def test_a_batch_of_reactive_commands_lands_each_on_its_inverter(
    sim: Simulator, link: MicrogridLink
) -> None:
    landed: dict[int, float | CommandError] = {}
    with trio.fail_after(LIMIT_S):
        await link.set_reactive_powers({2001: 900.0, 2002: -400.0}, 60, landed.__setitem__)
    assert all(isinstance(outcome, float) for outcome in landed.values())
    assert (sim.reactive_setpoint(2001), sim.reactive_setpoint(2002)) == (900.0, -400.0)


@pytest.mark.parametrize(
    ("var", "lifetime", "code"),
    [(3_500.0, 60, "OUT_OF_RANGE"), (100.0, 5, "INVALID_ARGUMENT")],
    ids=["beyond-its-reactive-limit", "lifetime-too-short"],
)
async def test_a_refused_reactive_command_is_a_rejection(
    sim: Simulator, link: MicrogridLink, var: float, lifetime: int, code: str
) -> None:
    with pytest.raises(CommandRejectedError) as caught:
        await reactive(link, 2001, var, lifetime)
    # v1alpha18/19 refuse with a REJECTED reply, v1 with the gRPC code.
    assert caught.value.code == ("REJECTED" if link.version != "v1" else code)
    assert sim.reactive_setpoint(2001) == 0.0


async def test_a_reactive_command_to_an_unknown_component_fails(
    sim: Simulator, link: MicrogridLink
) -> None:
    with pytest.raises(CommandError) as caught:
        await reactive(link, 9999, 100.0)
    assert caught.value.code == ("REJECTED" if link.version != "v1" else "NOT_FOUND")
    if link.version == "v1":
        assert isinstance(caught.value, CommandFailedError)


async def test_a_reactive_setpoint_ends_with_its_lifetime(
    sim: Simulator, link: MicrogridLink
) -> None:
    await reactive(link, 2002, 700.0, 10)  # 10 s x lifetime_scale 0.01
    await sim_wait(sim, lambda s: s.reactive_setpoint(2002) == 0.0)


async def test_with_a_tail_a_reactive_command_lands_and_its_tail_hears_the_end(
    sim: Simulator, link: MicrogridLink
) -> None:
    heard: list[Late] = []
    tail = Tail(heard.append)
    landed: dict[int, float | CommandError] = {}
    with trio.fail_after(LIMIT_S):
        await link.set_reactive_powers({2001: 500.0}, 60, landed.__setitem__, {2001: tail})
        assert isinstance(landed[2001], float)
        if link.version == "v1":  # one reply: nothing follows
            assert not tail.following
            return
        assert tail.following
        await tail.finished.wait()
    assert heard == [FinalReply.SUCCESS]


async def test_an_inverters_snapshot_carries_its_reactive_bounds_and_apparent_limit(
    sim: Simulator, link: MicrogridLink
) -> None:
    sink = RecordingSink()
    async with trio.open_nursery() as nursery:
        for inverter in (2001, 2002):
            telemetry = Telemetry(
                link, inverter, battery=False, sink=sink, max_data_age_s=10.0, silence_s=5.0
            )
            nursery.start_soon(telemetry.serve)
        with trio.fail_after(LIMIT_S):
            await sink.wait(lambda: bool(sink.snapshots[2001]) and bool(sink.snapshots[2002]))
        nursery.cancel_scope.cancel()
    limited = sink.snapshots[2001][-1]
    assert isinstance(limited, InverterSnapshot)
    assert limited.reactive_bounds == PowerBounds.symmetric(3_000.0)
    assert limited.apparent_limit_va == 4_000.0
    plain = sink.snapshots[2002][-1]
    assert isinstance(plain, InverterSnapshot)
    assert plain.reactive_bounds == PowerBounds.symmetric(5_000.0)  # its power limit
    assert math.isnan(plain.apparent_limit_va)  # no apparent-power limit: none reported


# --- ReactiveSide: a MicrogridClient whose active power is the reactive power ------------------


TOPOLOGY = Topology(pairs={1001: 2001}, left_out={})


async def test_the_reactive_side_sends_reactive_commands_and_forwards_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeMicrogrid(TOPOLOGY)
    fake.reactive.behaviour[2002] = Answer(error=CommandRejectedError("OUT_OF_RANGE", "no"))
    side: MicrogridClient = ReactiveSide(fake)
    assert await side.topology() is await fake.topology()
    landed: dict[int, float | CommandError] = {}
    tail = Tail(lambda _: None)
    await side.set_active_powers({2001: 300.0, 2002: -50.0}, 30, landed.__setitem__, {2001: tail})
    assert fake.batches == []  # no active command
    assert fake.reactive.sent() == [(0.0, {2001: 300.0, 2002: -50.0})]
    assert fake.reactive.batches[0].lifetime_s == 30
    assert landed[2001] == pytest.approx(30.0)
    assert isinstance(landed[2002], CommandRejectedError)
    with pytest.raises(NotImplementedError):  # the fake has no telemetry: forwarded as it is
        side.decoder(2001, battery=False, max_data_age_s=1.0)


async def test_a_commander_through_the_reactive_side_keeps_reactive_setpoints(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeMicrogrid(TOPOLOGY)
    async with commanding(ReactiveSide(fake), []) as commander:  # type: ignore[arg-type]
        flight = await send(commander, 2001, -800.0)
        assert flight.error is None
        await trio.sleep(120.0)  # refreshed before its lifetime, as an active setpoint is
    assert fake.batches == []
    sent = fake.reactive.sent()
    assert sent[0][1] == {2001: -800.0}
    assert len(sent) >= 2
    assert all(setpoints == {2001: -800.0} for _, setpoints in sent)
