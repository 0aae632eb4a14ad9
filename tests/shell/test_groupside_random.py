"""A group's commands under random hostile timing, through the commanders (fifth review).

A bus of three inverters and a pair's inverter beside it, commanded through an active and a
reactive :class:`~distributord.shell.commander.Commander` sharing one
:class:`~distributord.shell.groups.GroupSide`. Inverters go into error and derate at random;
answers hang, crash, are refused, break, come late or ramp; requests mix releases with
commands, short deadlines with long ones. Whatever happens: every flight's fate is told once,
no inverter ever has two commands in flight, no member is falsely said not to have answered,
and a clean release at the end leaves the group holding nothing, with no inverter busy.
Under trio's ``MockClock``: each seed is exact and repeatable.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.testing

from distributord.core.errors import CommandError, CommandFailedError, CommandRejectedError
from distributord.core.groups import GroupMerger
from distributord.core.model import PowerBounds, StateCode
from distributord.core.topology import Group
from distributord.shell.commander import Commander, Flight
from distributord.shell.groups import GroupSide
from distributord.shell.link import ReactiveSide
from tests.fakes import Answer, Crash, FakeMicrogrid, Hang
from tests.snapshots import inverter_snapshot

THREE = Group((1001,), (2001, 2002, 2003))
EVERY = (*THREE.inverters, 4001)  # and a pair's inverter, in the same batches
SEEDS = 100


def behaviour(rng: random.Random, benign: bool) -> Answer | Hang | Crash:
    """How an inverter answers its next commands (``benign``: mostly it does)."""
    r = rng.random()
    late = rng.choice([0.0, 0.0, 0.5, 2.0, 6.0])
    if benign and r < 0.85:
        return Answer(after_s=late, ramps=rng.random() < 0.3)
    if r < 0.03:
        return Crash(error=RuntimeError("a bug in the client"))
    if r < 0.1:
        return Hang()
    if r < 0.2:
        refused = CommandRejectedError("FAILED_PRECONDITION", "no")
        return Answer(after_s=rng.choice([0.0, 1.0, 3.0]), error=refused)
    if r < 0.3:
        broken = CommandFailedError("UNAVAILABLE", "the call broke")
        return Answer(after_s=rng.choice([0.0, 2.0]), error=broken)
    return Answer(after_s=late, ramps=rng.random() < 0.3)


@pytest.mark.parametrize("seed", range(SEEDS))
async def test_a_group_keeps_its_promises_whatever_the_timing(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(seed)
    benign = seed % 2 == 1
    wide = PowerBounds.symmetric(10_000.0)
    merger = GroupMerger({1001: THREE}, max_age_s=lambda: 1e9)
    for inverter in THREE.inverters:
        merger.take(inverter_snapshot(component_id=inverter, bounds=wide))
    fake = FakeMicrogrid()
    side = GroupSide(fake, {1001: THREE}, merger)
    told: Counter[int] = Counter()
    flights_told: list[Flight] = []  # kept: an id is only unique while its object lives
    false_silence: list[CommandError] = []

    def fate(flight: Flight) -> None:
        told[id(flight)] += 1
        flights_told.append(flight)
        outcome = flight.outcome
        if (
            isinstance(outcome, CommandError)
            and outcome.code == "INTERNAL"
            and "no answer" in str(outcome)
        ):
            false_silence.append(outcome)

    def commander(client: GroupSide | ReactiveSide) -> Commander:
        return Commander(
            client,
            lifetime_s=lambda: 60,
            held_s=lambda: 60.0,
            background_timeout_s=lambda: 8.0,
            on_fate=fate,
        )

    active, reactive = commander(side), commander(ReactiveSide(side))
    sampled = 1.0
    async with trio.open_nursery() as nursery:
        await nursery.start(active.serve)
        await nursery.start(reactive.serve)
        for _ in range(25):
            for inverter in EVERY:
                fake.behaviour[inverter] = behaviour(rng, benign)
                fake.reactive.behaviour[inverter] = behaviour(rng, benign)
            if rng.random() < 0.5:
                var = rng.choice([0.0, 0.0, 1_000.0, -3_000.0])
                if var:
                    reactive.want("q", {2001: var})
                else:
                    reactive.drop("q")
                reactive.send({2001: var}, deadline=trio.current_time() + rng.choice([2.0, 10.0]))
            if rng.random() < 0.4:  # an inverter goes into error or derates, or is back
                sampled += 1.0
                merger.take(
                    inverter_snapshot(
                        component_id=rng.choice(THREE.inverters),
                        sampled_at=sampled,
                        bounds=PowerBounds.symmetric(rng.choice([2_000.0, 5_000.0, 10_000.0])),
                        states=frozenset(
                            {StateCode.ERROR if rng.random() < 0.4 else StateCode.READY}
                        ),
                    )
                )
            power = rng.choice([0.0, 3_000.0, 9_000.0, 9_000.0, 9_000.0, -6_000.0, 15_000.0])
            powers = {2001: power}
            if rng.random() < 0.5:
                powers[4001] = rng.choice([0.0, 100.0])
            if power:
                active.want("r", powers)
            else:
                active.drop("r")
            flights = active.send(powers, deadline=trio.current_time() + rng.choice([2.0, 10.0]))
            if rng.random() < 0.6:
                await active.wait(flights.values(), deadline=trio.current_time() + 10.0)
            else:
                await trio.sleep(rng.choice([0.0, 0.5, 1.5]))
        for inverter in EVERY:  # from now on every inverter answers at once
            fake.behaviour[inverter] = Answer()
            fake.reactive.behaviour[inverter] = Answer()
        await trio.sleep(12.0)  # every deadline has passed
        active.drop("r")
        final = active.send({2001: 0.0}, deadline=trio.current_time() + 10.0)
        await active.wait(final.values(), deadline=trio.current_time() + 10.0)
        held = side.held(2001)
        await trio.sleep(1.0)
        busy = {kind: dict(strays) for kind, strays in side._busy.items()}
        nursery.cancel_scope.cancel()
    assert [n for n in told.values() if n > 1] == []
    assert false_silence == []
    assert fake.most_in_flight == 1
    assert fake.reactive.most_in_flight == 1
    assert held == (0.0, 0.0), final[2001].last().outcome
    assert busy == {"active": {}, "reactive": {}}
