"""The group adapters alone, on a fake microgrid: merged telemetry, divided commands (issue 25).

Every test runs under trio's ``MockClock``: the fake's answers come at exact times.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from distributord.api.adapter import FinalReply
from distributord.core.errors import CommandError, CommandRejectedError
from distributord.core.groups import GroupMerger
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds, StateCode
from distributord.core.topology import Group, Topology
from distributord.shell.commander import Commander, Flight
from distributord.shell.groups import GroupSide, GroupSink, telemetry_components
from distributord.shell.link import Tail
from tests.fakes import Answer, FakeMicrogrid, Hang
from tests.snapshots import battery_snapshot, inverter_snapshot

BUS = Group((1001,), (2001, 2002))  # a battery on a shared DC bus
PAIRED = {1001: 2001, 1003: 2003}
TOPOLOGY = Topology(pairs=PAIRED, left_out={}, groups={1001: BUS})


def merger_with(*inverters: InverterSnapshot) -> GroupMerger:
    merger = GroupMerger({1001: BUS}, max_age_s=lambda: 10.0)
    for snapshot in inverters:
        merger.take(snapshot)
    return merger


def s_limited(inverter: int, active_w: float, s_va: float) -> InverterSnapshot:
    return inverter_snapshot(
        component_id=inverter,
        bounds=PowerBounds.symmetric(active_w),
        reactive_bounds=PowerBounds.symmetric(s_va),
        apparent_limit_va=s_va,
    )


def bus_side() -> tuple[FakeMicrogrid, GroupMerger, GroupSide]:
    """The fake microgrid, the merger and the side of :data:`BUS`, both inverters reported."""
    fake = FakeMicrogrid()
    merger = merger_with(inverter_snapshot(component_id=2001), inverter_snapshot(component_id=2002))
    return fake, merger, GroupSide(fake, {1001: BUS}, merger)


@asynccontextmanager
async def commanding(
    side: GroupSide,
    *,
    background_s: float = 5.0,
    on_fate: Callable[[Flight], None] = lambda flight: None,
) -> AsyncIterator[Commander]:
    """A commander over ``side`` (60 s lifetimes), serving until the block ends."""
    commander = Commander(
        side,
        lifetime_s=lambda: 60,
        held_s=lambda: 60.0,
        background_timeout_s=lambda: background_s,
        on_fate=on_fate,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(commander.serve)
        yield commander
        nursery.cancel_scope.cancel()


async def command(
    commander: Commander, powers: float | dict[int, float], within_s: float = 10.0
) -> dict[int, Flight]:
    """Send ``powers`` (a number: to 2001) as a request does; wait until the group's landed.

    Wanted, or released when 2001's is 0.
    """
    powers = {2001: powers} if isinstance(powers, float) else powers
    if powers[2001]:
        commander.want("request", powers)
    else:
        commander.drop("request")
    flights = commander.send(powers, deadline=trio.current_time() + within_s)
    await commander.wait([flights[2001]], deadline=trio.current_time() + within_s)
    return flights


def error_2002(merger: GroupMerger, sampled_at: float = 1.0) -> None:
    """2002 reports an error state: out of the divisions."""
    merger.take(
        inverter_snapshot(
            component_id=2002, sampled_at=sampled_at, states=frozenset({StateCode.ERROR})
        )
    )


def in_error(fake: FakeMicrogrid, merger: GroupMerger, inverter: int) -> None:
    """``inverter`` reports an error state and refuses commands."""
    merger.take(
        inverter_snapshot(
            component_id=inverter, sampled_at=1.0, states=frozenset({StateCode.ERROR})
        )
    )
    fake.behaviour[inverter] = Answer(error=CommandRejectedError("FAILED_PRECONDITION", "in error"))


class Sink:
    def __init__(self) -> None:
        self.snapshots: list[BatterySnapshot | InverterSnapshot] = []
        self.gaps: list[int] = []

    def snapshot(self, snapshot: BatterySnapshot | InverterSnapshot) -> None:
        self.snapshots.append(snapshot)

    def gap(self, component_id: int, reason: str) -> None:
        self.gaps.append(component_id)


def test_every_member_is_read_and_the_tracker_hears_the_lead() -> None:
    assert telemetry_components(TOPOLOGY) == [
        (1001, True),
        (1003, True),
        (2001, False),
        (2002, False),
        (2003, False),
    ]
    sink = Sink()
    grouped = GroupSink(sink, merger_with())
    grouped.snapshot(inverter_snapshot(component_id=2002))
    grouped.snapshot(inverter_snapshot(component_id=2003))  # not a member: as it is
    assert [s.component_id for s in sink.snapshots] == [2001, 2003]
    # A gap of one inverter of two is no gap of the group; of both, it is the lead's.
    grouped.gap(2001, "reset")
    assert sink.gaps == []
    grouped.gap(2002, "reset")
    assert sink.gaps == [2001]
    grouped.gap(1001, "reset")
    grouped.gap(2003, "reset")
    assert sink.gaps == [2001, 1001, 2003]


def test_a_members_repeated_sample_is_counted_and_goes_no_further() -> None:
    # A member's sample not later than its own before is no news of the group; it was dropped
    # without being counted, so the repeated-samples metric missed groups' members.
    sink = Sink()
    repeats: list[None] = []
    grouped = GroupSink(sink, merger_with(), lambda: repeats.append(None))
    grouped.snapshot(inverter_snapshot(component_id=2002, sampled_at=1.0))
    grouped.snapshot(inverter_snapshot(component_id=2002, sampled_at=1.0))
    grouped.snapshot(inverter_snapshot(component_id=2002, sampled_at=0.5))
    assert len(repeats) == 2
    # Another member's sample at the same time is news; a pair's goes on as it is (the
    # tracker counts its repeats itself).
    grouped.snapshot(inverter_snapshot(component_id=2001, sampled_at=1.0))
    grouped.snapshot(inverter_snapshot(component_id=2003, sampled_at=1.0))
    grouped.snapshot(inverter_snapshot(component_id=2003, sampled_at=1.0))
    assert len(repeats) == 2
    assert [s.component_id for s in sink.snapshots] == [2001, 2001, 2003, 2003]


async def test_a_groups_stream_ends_after_it_landed_with_the_worst_of_every_members(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found on the simulator: a member whose stream ended before another member was accepted
    # ended the group's (SUCCESS) before the group landed; the commander, not yet following
    # it, dropped that end, and the other member's later OVERRIDDEN was never heard.
    fake, _, side = bus_side()
    fake.behaviour[2001] = Answer(ramps=True)
    fake.behaviour[2002] = Answer(ramps=True, after_s=2.0)
    events: list[tuple[float, str]] = []
    group_tail = Tail(lambda late: events.append((trio.current_time(), f"ended {late}")))

    def land(inverter: int, outcome: float | CommandError) -> None:
        events.append((trio.current_time(), f"landed {inverter}"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side.set_active_powers, {2001: 6_000.0}, 60, land, {2001: group_tail})
        await trio.sleep(1.0)
        (first,) = [c.tail for c in fake.commands if c.inverter == 2001]
        assert first is not None
        assert first.following
        first.end(FinalReply.SUCCESS)  # before 2002 was accepted
        assert events == []
    (second,) = [c.tail for c in fake.commands if c.inverter == 2002]
    assert second is not None
    assert events == [(2.0, "landed 2001")]
    assert group_tail.following
    await trio.sleep(1.0)
    second.end(FinalReply.OVERRIDDEN)
    assert events == [(2.0, "landed 2001"), (3.0, "ended OVERRIDDEN")]


async def test_a_group_command_abandoned_before_it_landed_abandons_its_members_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found in review: the group's stream was marked as going on only once every member had
    # landed, so abandoning it before then (a newer command, the request's deadline) left an
    # accepted member's stream read on, and that member's OVERRIDDEN by our own newer command
    # was logged as someone else's.
    fake, _, side = bus_side()
    fake.behaviour[2001] = Answer(ramps=True)
    fake.behaviour[2002] = Answer(ramps=True, after_s=5.0)
    group_tail = Tail(lambda late: None)
    with trio.move_on_after(1.0):
        await side.set_active_powers({2001: 6_000.0}, 60, lambda *_: None, {2001: group_tail})
    group_tail.abandon()  # as the commander does with a command cancelled before it landed
    (first,) = [c.tail for c in fake.commands if c.inverter == 2001]
    assert first is not None
    assert first.abandoned


async def recovered(
    fall: Answer,
) -> tuple[FakeMicrogrid, GroupSide, list[tuple[float, int, float | CommandError]]]:
    """4 kW on the bus with 2001 in error (all on 2002), then 2001 back and 4 kW again.

    2002's commands are answered as ``fall`` says from then on. Returns the fake, the side
    and what landed of the second command, when.
    """
    fake, merger, side = bus_side()
    in_error(fake, merger, 2001)
    await side.set_active_powers({2001: 4_000.0}, 60, lambda i, o: None)
    assert fake.sent()[-1][1] == {2002: 4_000.0}  # 2001 out of it (never sent anything)
    merger.take(inverter_snapshot(component_id=2001, sampled_at=2.0))
    fake.behaviour[2001] = Answer()
    fake.behaviour[2002] = fall
    landed: list[tuple[float, int, float | CommandError]] = []
    await side.set_active_powers(
        {2001: 4_000.0}, 60, lambda i, o: landed.append((trio.current_time(), i, o))
    )
    return fake, side, landed


async def test_a_division_that_moves_raises_a_member_only_once_the_other_fell(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found in review: both went at once, and a rise landing first put 6 kW on the bus.
    fake, _, landed = await recovered(Answer(after_s=1.0))
    start = fake.sent()[-2][0]
    assert fake.sent()[-2:] == [(start, {2002: 2_000.0}), (start + 1.0, {2001: 2_000.0})]
    assert landed == [(start + 1.0, 2001, start + 61.0)]


async def test_a_member_that_did_not_fall_keeps_the_other_from_rising(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, side, landed = await recovered(
        Answer(after_s=1.0, error=CommandRejectedError("OUT_OF_RANGE", "no"))
    )
    assert fake.sent()[-1][1] == {2002: 2_000.0}  # 2001's rise was never sent
    ((_, lead, outcome),) = landed
    assert lead == 2001
    assert str(outcome) == "OUT_OF_RANGE: inverter 2002: no"
    # 2002 may still hold its 4 kW: a limit counts it, and the group's next share is less it.
    assert side.held(2001) == (4_000.0, 0.0)


async def test_what_a_member_may_hold_runs_out_with_its_lifetime(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found in review: an inverter that keeps refusing commands "held" its last setpoint forever.
    fake, merger, side = bus_side()
    await side.set_active_powers({2001: 8_000.0}, 60, lambda i, o: None)
    in_error(fake, merger, 2002)
    assert side.placed("active", 2001, 5_000.0) == (1_000.0, False)  # 2002 may hold 4 kW
    await side.set_active_powers({2001: 1_000.0}, 60, lambda i, o: None)  # 2002's 0 refused
    assert side.held(2001) == (5_000.0, 0.0)
    await trio.sleep(30.0)
    await side.set_active_powers({2001: 1_000.0}, 60, lambda i, o: None)  # refreshed
    assert side.held(2001) == (5_000.0, 0.0)
    await trio.sleep(30.0)  # 2002's 4 kW ran out (applied at 0, for 60 s)
    assert side.held(2001) == (1_000.0, 0.0)
    assert side.placed("active", 2001, 5_000.0) == (5_000.0, True)


async def test_a_leads_command_lands_when_every_member_has(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, _, side = bus_side()
    fake.behaviour[2002] = Answer(after_s=2.0)
    landed: list[tuple[float, int, float | CommandError]] = []

    def land(inverter: int, outcome: float | CommandError) -> None:
        landed.append((trio.current_time(), inverter, outcome))

    await side.set_active_powers({2001: 6_000.0, 2003: 100.0}, 60, land)
    assert fake.sent() == [(0.0, {2001: 3_000.0, 2002: 3_000.0, 2003: 100.0})]
    # 2003 at once; the group once 2002 has landed, holding until the earlier of the two.
    assert landed == [(0.0, 2003, 60.0), (2.0, 2001, 60.0)]
    # A failure of one member is the group's.
    fake.behaviour[2001] = Answer(error=CommandRejectedError("OUT_OF_RANGE", "no"))
    landed.clear()
    await side.set_active_powers({2001: 1_000.0}, 60, land)
    assert len(landed) == 1
    assert isinstance(landed[0][2], CommandRejectedError)
    assert str(landed[0][2]) == "OUT_OF_RANGE: no"  # the lead's own: the group's
    # Another member's failure says whose it was (it read as the lead's).
    fake.behaviour[2001] = Answer()
    fake.behaviour[2002] = Answer(error=CommandRejectedError("OUT_OF_RANGE", "no"))
    landed.clear()
    await side.set_active_powers({2001: 1_000.0}, 60, land)
    (failed,) = [outcome for _, _, outcome in landed]
    assert isinstance(failed, CommandRejectedError)
    assert str(failed) == "OUT_OF_RANGE: inverter 2002: no"
    # A release reaches every member.
    await side.set_active_powers({2001: 0.0}, 60, land)
    assert fake.sent()[-1][1] == {2001: 0.0, 2002: 0.0}


async def test_an_inverter_in_error_gets_no_share_and_none_usable_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broken = inverter_snapshot(component_id=2002, states=frozenset({StateCode.ERROR}))
    fake = FakeMicrogrid()
    side = GroupSide(fake, {1001: BUS}, merger_with(inverter_snapshot(component_id=2001), broken))
    landed: list[tuple[int, float | CommandError]] = []
    await side.set_active_powers({2001: 4_000.0}, 60, lambda i, o: landed.append((i, o)))
    assert fake.sent()[-1][1] == {2001: 4_000.0}
    alone = GroupSide(fake, {1001: BUS}, merger_with(broken))
    await alone.set_active_powers({2001: 4_000.0}, 60, lambda i, o: landed.append((i, o)))
    assert isinstance(landed[-1][1], CommandError)
    assert "no inverter of the group" in str(landed[-1][1])


async def test_each_member_stays_within_its_apparent_power_beside_the_other_kind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # S = 5 kVA each. 8 kW active is 4 kW each; then 6 kvar reactive cannot be 3 kvar each
    # (4² + 3² = 5², exactly at S: allowed) but 8 kvar would be 4 kvar each (beyond S): each
    # gets at most 3 kvar, and placed says so.
    fake = FakeMicrogrid()
    merger = merger_with(s_limited(2001, 5_000.0, 5_000.0), s_limited(2002, 5_000.0, 5_000.0))
    side = GroupSide(fake, {1001: BUS}, merger)
    await side.set_active_powers({2001: 8_000.0}, 60, lambda i, o: None)
    assert side.placed("reactive", 2001, 6_000.0) == (6_000.0, True)
    assert side.placed("reactive", 2001, 8_000.0) == (6_000.0, False)
    await side.set_reactive_powers({2001: 6_000.0}, 60, lambda i, o: None)
    (batch,) = fake.reactive.sent()
    for inverter, q in batch[1].items():
        p = fake.sent()[-1][1][inverter]
        assert p * p + q * q <= 5_000.0**2
    # Not a group's lead: placed as asked.
    assert side.placed("active", 2003, 123.0) == (123.0, True)


async def test_a_planned_division_is_the_one_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeMicrogrid()
    odd = [
        inverter_snapshot(component_id=2001, bounds=bounds(200.0, 100.0)),
        inverter_snapshot(component_id=2002, bounds=bounds(1_000.0, 500.0)),
    ]
    side = GroupSide(fake, {1001: BUS}, merger_with(*odd))
    assert side.placed("active", 2001, 300.0) == (200.0, False)
    await side.set_active_powers({2001: 200.0}, 60, lambda i, o: None)
    assert fake.sent()[-1][1] == {2001: 200.0, 2002: 0.0}


def bounds(cap: float, minimum: float) -> PowerBounds:
    return PowerBounds(
        inclusion_lower=-cap,
        exclusion_lower=-minimum,
        exclusion_upper=minimum,
        inclusion_upper=cap,
    )


def test_the_merged_battery_waits_for_both_batteries() -> None:
    merger = GroupMerger({1001: Group((1001, 1002), (2001,))}, max_age_s=lambda: 10.0)
    sink = Sink()
    grouped = GroupSink(sink, merger)
    grouped.snapshot(battery_snapshot(component_id=1002))
    assert sink.snapshots == []
    grouped.snapshot(battery_snapshot(component_id=1001))
    assert [s.component_id for s in sink.snapshots] == [1001]


async def test_an_inverter_out_of_the_division_is_sent_0_and_what_it_holds_comes_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, merger, side = bus_side()
    await side.set_active_powers({2001: 6_000.0}, 60, lambda i, o: None)
    in_error(fake, merger, 2002)
    landed: list[tuple[int, float | CommandError]] = []
    # Found in review: 2001 was sent the whole 4 kW while 2002 might still hold its 3 kW.
    assert side.placed("active", 2001, 4_000.0) == (1_000.0, False)
    await side.set_active_powers({2001: 4_000.0}, 60, lambda i, o: landed.append((i, o)))
    assert fake.sent()[-1][1] == {2001: 1_000.0, 2002: 0.0}
    assert landed == [(2001, 60.0)]  # 2002's refusal is not the group's
    # Refused, it may still hold 3 kW: it is sent 0 again, and 3 kW leaves 2001 nothing.
    await side.set_active_powers({2001: 3_000.0}, 60, lambda i, o: None)
    assert fake.sent()[-1][1] == {2001: 0.0, 2002: 0.0}
    del fake.behaviour[2002]
    await side.set_active_powers({2001: 3_000.0}, 60, lambda i, o: None)
    assert fake.sent()[-1][1] == {2001: 0.0, 2002: 0.0}
    # 2002 accepted its 0: it holds nothing, gets nothing more, and 2001 takes all.
    await side.set_active_powers({2001: 2_000.0}, 60, lambda i, o: None)
    assert fake.sent()[-1][1] == {2001: 2_000.0}


async def test_a_kept_division_is_not_sent_once_a_members_bounds_shrink(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found in review: 12 kW divided 6 + 6 kW was sent again after 2002's bound fell to 2 kW.
    wide = PowerBounds.symmetric(10_000.0)
    fake = FakeMicrogrid()
    merger = merger_with(
        inverter_snapshot(component_id=2001, bounds=wide),
        inverter_snapshot(component_id=2002, bounds=wide),
    )
    side = GroupSide(fake, {1001: BUS}, merger)
    assert side.placed("active", 2001, 12_000.0) == (12_000.0, True)
    merger.take(
        inverter_snapshot(component_id=2002, sampled_at=1.0, bounds=PowerBounds.symmetric(2_000.0))
    )
    assert side.placed("active", 2001, 12_000.0) == (12_000.0, True)
    await side.set_active_powers({2001: 12_000.0}, 60, lambda i, o: None)
    assert fake.sent()[-1][1] == {2001: 10_000.0, 2002: 2_000.0}


async def test_a_lead_inverter_out_of_the_division_does_not_land_the_groups_command(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found in review: the lead's answer to its 0 landed the group's command, then the real
    # member landed it again.
    fake, merger, side = bus_side()
    await side.set_active_powers({2001: 2_000.0}, 60, lambda i, o: None)  # 1 kW each
    in_error(fake, merger, 2001)
    fake.behaviour[2002] = Answer(after_s=2.0)
    landed: list[tuple[float, int, float | CommandError]] = []
    await side.set_active_powers(
        {2001: 4_000.0}, 60, lambda i, o: landed.append((trio.current_time(), i, o))
    )
    assert fake.sent()[-1][1] == {2001: 0.0, 2002: 3_000.0}  # 2001 may hold 1 kW
    assert landed == [(2.0, 2001, 62.0)]


async def test_what_a_groups_inverters_may_hold_together_is_known(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, merger, side = bus_side()
    assert side.held(2003) is None  # not a group's lead
    assert side.held(2001) == (0.0, 0.0)
    await side.set_active_powers({2001: 6_000.0}, 60, lambda i, o: None)
    assert side.held(2001) == (6_000.0, 0.0)
    in_error(fake, merger, 2002)
    await side.set_active_powers({2001: -1_000.0}, 60, lambda i, o: None)
    # 2001 now at -1 kW; 2002 refused its 0 and may still hold 3 kW.
    assert side.held(2001) == (3_000.0, 1_000.0)


# --- found in the second review: the rounds, strays in flight, hanging members, cancellation --


def wide_bus(fake: FakeMicrogrid) -> tuple[GroupMerger, GroupSide]:
    """The bus with both inverters at ±10 kW, and its side on ``fake``."""
    wide = PowerBounds.symmetric(10_000.0)
    merger = merger_with(
        inverter_snapshot(component_id=2001, bounds=wide),
        inverter_snapshot(component_id=2002, bounds=wide),
    )
    return merger, GroupSide(fake, {1001: BUS}, merger)


def derate_2001(merger: GroupMerger) -> None:
    """2001 derates to ±2 kW: 10 kW moves to 1,667 W on 2001 and 8,333 W on 2002."""
    merger.take(
        inverter_snapshot(component_id=2001, sampled_at=1.0, bounds=PowerBounds.symmetric(2_000.0))
    )
    merger.take(
        inverter_snapshot(component_id=2002, sampled_at=1.0, bounds=PowerBounds.symmetric(10_000.0))
    )


async def derated_bus(fake: FakeMicrogrid) -> GroupSide:
    """10 kW on the wide bus (5 kW each, landed), then 2001 derates (see :func:`derate_2001`)."""
    merger, side = wide_bus(fake)
    await side.set_active_powers({2001: 10_000.0}, 60, lambda i, o: None)
    derate_2001(merger)
    return side


async def unanswered(fake: FakeMicrogrid, side: GroupSide, inverter: int) -> None:
    """10 kW on the wide bus, ``inverter``'s 5 kW unanswered when the 5 s deadline ran out.

    It may hold 5 kW or nothing from then on.
    """
    fake.behaviour[inverter] = Hang()
    with trio.move_on_after(5.0):
        await side.set_active_powers({2001: 10_000.0}, 60, lambda i, o: None)


async def test_a_member_that_may_hold_more_is_waited_for_even_if_it_may_rise(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 2001 may hold 5 kW or nothing (its command went unanswered): it counted only as rising,
    # so 2002's rise went at once and the group might hold 5 + 8.3 kW.
    fake = FakeMicrogrid()
    merger, side = wide_bus(fake)
    await unanswered(fake, side, 2001)
    assert side._ledgers["active"].possible(2001, trio.current_time()) == {5_000.0, 0.0}
    derate_2001(merger)
    fake.behaviour[2001] = Answer(after_s=1.0)
    await side.set_active_powers({2001: 10_000.0}, 60, lambda i, o: None)
    # 2002 surely holds 5 kW: refreshed at once; its rise once 2001 has landed.
    assert fake.sent()[1:] == [
        (5.0, {2001: 1_666.6666259765625, 2002: 5_000.0}),
        (6.0, {2002: 8_333.3330078125}),
    ]


async def test_a_rising_member_is_refreshed_while_a_hanging_one_keeps_it_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 2001 falls and stops answering: 2002 got no command at all, call after call, until its
    # 5 kW ran out.
    fake = FakeMicrogrid()
    side = await derated_bus(fake)
    fake.behaviour[2001] = Hang()
    for _ in range(4):  # the request, then refreshes every 20 s, each with a 5 s deadline
        with trio.move_on_after(5.0):
            await side.set_active_powers({2001: 10_000.0}, 60, lambda i, o: None)
        await trio.sleep(15.0)
    to_2002 = [(t, s[2002]) for t, s in fake.sent() if 2002 in s]
    # Refreshed at 5 kW while 2001 might still hold its 5 kW; at 60 s that ran out (2001 may
    # hold no more than its 1,667 W now), so nothing holds 2002 back any more.
    assert to_2002 == [
        (0.0, 5_000.0),
        (0.0, 5_000.0),
        (20.0, 5_000.0),
        (40.0, 5_000.0),
        (60.0, 8_333.3330078125),
    ]
    assert side._ledgers["active"].lapses(trio.current_time()) == 0


async def test_a_stray_is_not_commanded_again_while_its_zero_is_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The group's command lands without its strays, so the next one to the lead sent a hanging
    # stray a second 0 W beside the first.
    fake, merger, side = bus_side()
    async with commanding(side) as commander:
        for power, broken in ((6_000.0, False), (4_000.0, True), (3_000.0, True)):
            if broken:  # 2002 in error and silent: a stray, sent 0 while it may hold 3 kW
                error_2002(merger)
                fake.behaviour[2002] = Hang()
            await command(commander, power)
    assert [batch for _, batch in fake.sent()] == [
        {2001: 3_000.0, 2002: 3_000.0},
        {2001: 1_000.0, 2002: 0.0},
        {2001: 0.0},
    ]
    assert fake.most_in_flight == 1


class AcceptedThenCancelled(FakeMicrogrid):
    """2001 is accepted (its stream read on) but its landing never arrives.

    The call is cancelled first (the real link drops a landing posted after cancellation).
    """

    async def set_active_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        assert tails is not None
        self.tails = dict(tails)
        tails[2001].following = True
        await trio.sleep_forever()


async def test_a_group_command_that_never_landed_ends_its_accepted_members_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = AcceptedThenCancelled()
    side = GroupSide(
        fake,
        {1001: BUS},
        merger_with(inverter_snapshot(component_id=2001), inverter_snapshot(component_id=2002)),
    )
    group_tail = Tail(lambda late: None)
    with trio.move_on_after(1.0):  # a newer command, or the deadline
        await side.set_active_powers({2001: 6_000.0}, 60, lambda *_: None, {2001: group_tail})
    assert fake.tails[2001].abandoned


# --- found in the third review: releases, strays in flight, a client that never answers ----


def noop(i: int, o: float | CommandError) -> None:
    pass


async def _mixed_signs(fake: FakeMicrogrid, merger: GroupMerger, side: GroupSide) -> None:
    """2001 holds +1 kW for sure; 2002 (in error, refusing) still holds -500 W."""
    await side.set_active_powers({2001: -1_000.0}, 60, noop)  # -500 W each
    in_error(fake, merger, 2002)  # not usable, refuses every command
    await side.set_active_powers({2001: 1_000.0}, 60, noop)  # all on 2001; 2002's 0 refused
    now = trio.current_time()
    assert side._ledgers["active"].possible(2001, now) == {1_000.0}
    assert side._ledgers["active"].possible(2002, now) == {-500.0}


async def test_a_release_reaches_every_member_even_if_another_refuses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, merger, side = bus_side()
    await _mixed_signs(fake, merger, side)
    start = len(fake.batches)
    landed: list[tuple[int, float | CommandError]] = []
    await side.set_active_powers({2001: 0.0}, 60, lambda i, o: landed.append((i, o)))
    sent = [b for _, b in fake.sent()[start:]]
    # A release is absolute: 2001 must be sent 0, and never be re-sent its +1 kW.
    assert all(b.get(2001, 0.0) == 0.0 for b in sent), sent
    assert any(b.get(2001) == 0.0 for b in sent), sent


async def test_a_release_is_not_held_back_by_a_hanging_member(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, merger, side = bus_side()
    await _mixed_signs(fake, merger, side)
    fake.behaviour[2002] = Hang()
    start = len(fake.batches)
    with trio.move_on_after(5.0):  # the release's deadline
        await side.set_active_powers({2001: 0.0}, 60, noop)
    sent = [(t, b) for t, b in fake.sent()[start:]]
    assert any(b.get(2001) == 0.0 for _, b in sent), sent


async def test_a_recovered_stray_is_not_sent_a_share_beside_its_zero_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, merger, side = bus_side()
    async with commanding(side) as commander:
        await command(commander, 6_000.0)  # 3 kW each
        error_2002(merger)
        fake.behaviour[2002] = Hang()
        await command(commander, 4_000.0)  # 2001: 1 kW; 2002 a stray, its 0 hangs
        # 2002 is back (and answers again) while its 0 is still in flight.
        merger.take(inverter_snapshot(component_id=2002, sampled_at=2.0))
        fake.behaviour[2002] = Answer()
        await command(commander, 6_000.0)
    assert fake.most_in_flight == 1


class RefreshNeverLands(FakeMicrogrid):
    """A client that returns from the first round without landing one member (a bug)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches_seen: list[dict[int, float]] = []

    async def set_active_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        if self.drop and 2002 in setpoints and setpoints[2002] == 5_000.0:
            self.batches_seen.append(dict(setpoints))
            for i in setpoints:
                if i != self.dropped:
                    land(i, trio.current_time() + lifetime_s)
            return
        await super().set_active_powers(setpoints, lifetime_s, land, tails)

    drop = False
    dropped = 2002


@pytest.mark.parametrize("dropped", [2002, 2001])  # the refresh, the falling member
async def test_a_member_the_client_never_landed_still_lands_the_group_once(
    autojump_clock: trio.testing.MockClock, dropped: int
) -> None:
    fake = RefreshNeverLands()
    fake.dropped = dropped
    # 2001 falls to 1,667 W, 2002 rises to 8,333 W (2002 refreshed first).
    side = await derated_bus(fake)
    fake.drop = True
    landed: list[tuple[int, float | CommandError]] = []
    await side.set_active_powers({2001: 10_000.0}, 60, lambda i, o: landed.append((i, o)))
    assert len(landed) == 1  # the group's command lands (failed), exactly once


async def test_through_the_commander_an_unlanded_member_is_not_called_a_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = RefreshNeverLands()
    merger, side = wide_bus(fake)
    async with commanding(side) as commander:
        await command(commander, 10_000.0)
        derate_2001(merger)
        fake.drop = True
        flights = await command(commander, 10_000.0)
    outcome = flights[2001].outcome
    assert "stopping" not in str(outcome)


async def test_a_release_does_not_send_a_stray_a_second_zero_beside_its_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, merger, side = bus_side()
    async with commanding(side) as commander:
        await command(commander, 6_000.0)
        error_2002(merger)
        fake.behaviour[2002] = Hang()
        await command(commander, 4_000.0)  # 2002's 0 hangs; the group landed without it
        await command(commander, 0.0)  # a release: every member, 2002 too
    assert fake.most_in_flight == 1


async def test_a_failed_refresh_is_named_as_its_members(
    autojump_clock: trio.testing.MockClock,
) -> None:
    three = Group((1001,), (2001, 2002, 2003))
    wide = PowerBounds.symmetric(10_000.0)
    merger = GroupMerger({1001: three}, max_age_s=lambda: 10.0)
    for i in (2001, 2002, 2003):
        merger.take(inverter_snapshot(component_id=i, bounds=wide))
    merger.take(
        inverter_snapshot(
            component_id=2001, sampled_at=0.5, bounds=wide, states=frozenset({StateCode.ERROR})
        )
    )
    fake = FakeMicrogrid()
    side = GroupSide(fake, {1001: three}, merger)
    await side.set_active_powers({2001: 10_000.0}, 60, noop)  # 2002, 2003: 5 kW each
    assert fake.sent()[-1][1] == {2002: 5_000.0, 2003: 5_000.0}
    merger.take(inverter_snapshot(component_id=2001, sampled_at=1.0, bounds=wide))
    merger.take(inverter_snapshot(component_id=2002, sampled_at=1.0, bounds=wide))
    merger.take(
        inverter_snapshot(component_id=2003, sampled_at=1.0, bounds=PowerBounds.symmetric(1_000.0))
    )
    fake.behaviour[2002] = Answer(error=CommandRejectedError("OUT_OF_RANGE", "no"))
    landed: list[tuple[int, float | CommandError]] = []
    await side.set_active_powers({2001: 15_000.0}, 60, lambda i, o: landed.append((i, o)))
    ((_, outcome),) = landed
    assert "2002" in str(outcome)  # 2002's refresh failed, not the lead
