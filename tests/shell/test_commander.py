"""The commander and accepted commands' reply streams (issue 21), with a fake microgrid.

Every test runs under ``MockClock(autojump_threshold=0)``: times are exact. The fake's
``Answer(ramps=True)`` accepts a command and keeps its tail (the rest of its reply stream) for
the test to end, as a ramping inverter on v1alpha18/19 would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from distributord.api.adapter import FinalReply
from distributord.core.errors import CommandFailedError
from distributord.core.ledger import State
from distributord.shell.commander import Commander, Flight
from distributord.shell.link import Late
from tests.fakes import Answer, FakeMicrogrid

LIFETIME_S = 60


@asynccontextmanager
async def commanding(
    fake: FakeMicrogrid, lates: list[tuple[int, float, Late]]
) -> AsyncIterator[Commander]:
    """A commander serving on ``fake``; each late outcome goes to ``lates``."""

    def on_late(flight: Flight, late: Late) -> None:
        lates.append((flight.inverter, flight.power_w, late))

    commander = Commander(
        fake,
        lifetime_s=lambda: LIFETIME_S,
        held_s=lambda: float(LIFETIME_S),
        background_timeout_s=lambda: 5.0,
        on_late=on_late,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(commander.serve)
        yield commander
        nursery.cancel_scope.cancel()


async def send(commander: Commander, inverter: int, power_w: float) -> Flight:
    """Send one command as a request does, and wait for it to land."""
    commander.want("request", {inverter: power_w})
    (flight,) = commander.send({inverter: power_w}, deadline=trio.current_time() + 5.0).values()
    await commander.wait([flight], deadline=trio.current_time() + 5.0)
    return flight


async def test_an_accepted_command_lands_at_once_and_its_late_failure_reaches_the_ledger(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeMicrogrid()
    fake.behaviour[7] = Answer(ramps=True)
    lates: list[tuple[int, float, Late]] = []
    async with commanding(fake, lates) as commander:
        flight = await send(commander, 7, 500.0)
        assert flight.error is None  # a success for the request, on ACCEPTED
        assert flight.command is not None
        assert flight.command.state is State.ACCEPTED
        assert commander.following(7)
        await trio.sleep(10.0)  # the inverter ramps
        (tail,) = [c.tail for c in fake.commands if c.tail is not None]
        tail.end(FinalReply.FAILED)
        assert lates == [(7, 500.0, FinalReply.FAILED)]
        assert commander.finals.value == 1
        assert not commander.following(7)
        last = commander.ledger.last(7)
        assert last is not None
        assert last.state is State.FAILED  # not in force: the wanted power is due again
        tail.end(FinalReply.SUCCESS)  # nothing after the end counts
        assert lates == [(7, 500.0, FinalReply.FAILED)]


async def test_our_newer_command_abandons_the_older_stream_before_it_goes_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeMicrogrid()
    fake.behaviour[7] = Answer(ramps=True)
    lates: list[tuple[int, float, Late]] = []
    async with commanding(fake, lates) as commander:
        await send(commander, 7, 500.0)
        older = fake.commands[0].tail
        assert older is not None
        abandoned_when_sent: list[bool] = []
        fake.behaviour[7] = Answer(ramps=True, after_s=1.0)
        commander.want("request", {7: 200.0})
        newer = commander.send({7: 200.0}, deadline=trio.current_time() + 5.0)
        abandoned_when_sent.append(older.abandoned)  # the newer one's RPC has just started
        await commander.wait(newer.values(), deadline=trio.current_time() + 5.0)
        assert abandoned_when_sent == [True]
        older.end(FinalReply.OVERRIDDEN)  # what the inverter says of it: ours, not counted
        assert lates == []
        assert commander.following(7)  # the newer one is read on


async def test_a_stream_is_read_until_the_commands_lifetime_at_most(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeMicrogrid()
    fake.behaviour[7] = Answer(ramps=True)
    lates: list[tuple[int, float, Late]] = []
    async with commanding(fake, lates) as commander:
        start = trio.current_time()
        flight = await send(commander, 7, 0.0)  # 0 W: sent once, not refreshed
        assert flight.tail is not None
        await flight.tail.finished.wait()
        assert trio.current_time() - start == LIFETIME_S  # its lifetime, exactly
        assert flight.tail.abandoned
        assert lates == [(7, 0.0, FinalReply.NONE)]
        assert not commander.following(7)


async def test_a_failed_command_leaves_nothing_to_follow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeMicrogrid()
    fake.behaviour[7] = Answer(error=CommandFailedError("UNAVAILABLE"), ramps=True)
    lates: list[tuple[int, float, Late]] = []
    async with commanding(fake, lates) as commander:
        flight = await send(commander, 7, 500.0)
        assert flight.error is not None
        assert flight.tail is not None
        assert flight.tail.abandoned
        assert not commander.following(7)
    assert lates == []
