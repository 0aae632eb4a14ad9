"""N:M groups in the daemon: telemetry merged into the lead's, commands divided among members.

Theory of operation
-------------------
Above this module a group (``spec/plant.md``) is one pair: its lead battery and its lead
inverter (:class:`~distributord.core.topology.Topology`). Two adapters keep it so:

* :class:`GroupSink` sits between the members' telemetry tasks and the status tracker: each
  member's snapshot goes through the :class:`~distributord.core.groups.GroupMerger`, and the
  tracker hears the group's merged snapshot as the lead's. A member's stream gap reaches the
  tracker as a gap of the lead's side only when every member of that side is broken (one
  silent battery already makes the group's data stale: the merged snapshot was received when
  its oldest member was). Other components pass through unchanged.
* :class:`GroupSide` sits between the request loop's commanders and the microgrid: a command
  to a lead inverter is divided among the group's usable inverters
  (:func:`~distributord.core.groups.divide`; reactive power in proportion to their reactive
  caps the same way), sent to each with the other commands, and lands once every member has
  landed: the earliest valid-until, or the first failure (naming the member). A release (0)
  goes to every inverter of the group, usable or not. A member inverter that is not usable
  gets no share: if it may hold power, it is sent 0 with the others (its answer does not
  decide the group's; until a 0 is accepted or what it held ran out, every command to the
  group sends it 0 again), and what it may hold comes off the others' shares.
* **Landing order within a group.** When a division moves between members (an inverter back
  from error, caps changed), the members whose power rises (the share's way, past everything
  they may hold) are sent once those that may fall (they may hold more than they are sent)
  have landed, and not at all if one of those failed: the group never holds more than it did
  or will, as the commander keeps for pairs. A rising member that surely holds power is sent
  that power at once meanwhile, so a member that hangs does not let its setpoint lapse. What
  each member may hold is kept in a :class:`~distributord.core.ledger.Ledger` per kind, so it
  runs out with its lifetime. A release goes to every member at once. An inverter out of the
  division whose 0 is still in flight when the group's command lands is sent nothing beside it
  (no share, no second 0) until that 0 has landed; what it may hold comes off the share, and a
  release waits for that 0's answer as its own. A member a client never lands fails the
  group's command (``INTERNAL``); every failure names its inverter once.
* **Reply streams** (v1alpha18/19): each member of the division is sent with a tail of its
  own (a refresh and a stray's 0 go without one, read to their end); the group's
  goes on if a member's does, and ends, after the group's command landed, with the worst of
  their final replies (a member's other than ``SUCCESS`` is logged with its id).
* **Apparent power per inverter.** Each member's bounds of one kind are brought within its
  apparent-power limit beside the larger of what the other kind was last sent to it and is
  planned for it, so no inverter of a group is ever sent ``P² + Q² > S²``.
* **Shortfalls are reported.** The request loop asks :meth:`GroupSide.placed` while it plans:
  a division that cannot place the whole share (minimums that no choice of inverters meets,
  an apparent-power limit) places less, the plan says so (not placed, in the result's excess),
  and the command that follows sends exactly that division.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from typing import Literal, TypeAlias

import attrs
import trio

from distributord.api.adapter import FinalReply
from distributord.core.distribution import capped_active_bounds
from distributord.core.errors import CommandError, CommandFailedError
from distributord.core.groups import Division, GroupMerger, divide
from distributord.core.ledger import Ledger, Sent, State, fate
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds
from distributord.core.topology import Group, Topology
from distributord.shell.link import Forwarding, Late, MicrogridClient, Tail, TelemetrySink

logger = logging.getLogger(__name__)

PowerKind: TypeAlias = Literal["active", "reactive"]

KEPT_DIVISIONS = 8
"""Divisions kept per group and kind (a plan may be made a few times before its commands go)."""


class GroupSink:
    """A telemetry sink that merges group members' news into the lead's (see the module doc).

    Args:
        sink: Where the (merged) snapshots and gaps go: the status tracker.
        merger: The groups' merger.
        repeated: Called for each member's sample dropped as not later than its sample before
            (the tracker counts a pair's itself).
    """

    def __init__(
        self, sink: TelemetrySink, merger: GroupMerger, repeated: Callable[[], None] = lambda: None
    ) -> None:
        self._sink = sink
        self._merger = merger
        self._repeated = repeated
        self._broken: set[int] = set()

    def snapshot(self, snapshot: BatterySnapshot | InverterSnapshot) -> None:
        """A component's new snapshot: the group's merged one goes on, if there is one yet."""
        self._broken.discard(snapshot.component_id)
        if snapshot.component_id in self._merger and not self._merger.is_news(snapshot):
            self._repeated()
            return
        merged = self._merger.take(snapshot)
        if merged is not None:
            self._sink.snapshot(merged)

    def gap(self, component_id: int, reason: str) -> None:
        """A stream broke: a group's side is broken when all its members' streams are."""
        group = self._merger.group(component_id)
        if group is None:
            self._sink.gap(component_id, reason)
            return
        self._broken.add(component_id)
        side = group.batteries if component_id in group.batteries else group.inverters
        if self._broken.issuperset(side):
            self._sink.gap(group.battery if side is group.batteries else group.inverter, reason)


def telemetry_components(topology: Topology) -> list[tuple[int, bool]]:
    """Every component whose telemetry the daemon reads: (id, whether it is a battery)."""
    groups = [topology.group(lead) for lead in topology.pairs]
    return [
        *((battery, True) for group in groups for battery in group.batteries),
        *((inverter, False) for group in groups for inverter in group.inverters),
    ]


class GroupSide(Forwarding):
    """A :class:`MicrogridClient` whose lead inverters stand for their groups' inverters.

    Args:
        client: The microgrid.
        groups: Lead battery to its group (only the groups of several members).
        merger: Where the members' latest snapshots are (which inverters are usable, their
            bounds).
        lifetime_scale: How much faster than the clock setpoints' lifetimes run (1 on a site;
            a test simulator's may run faster), for how long a member may hold what it was sent.
    """

    def __init__(
        self,
        client: MicrogridClient,
        groups: Mapping[int, Group],
        merger: GroupMerger,
        *,
        lifetime_scale: float = 1.0,
    ) -> None:
        super().__init__(client)
        self._merger = merger
        self._lifetime_scale = lifetime_scale
        self._by_lead = {group.inverter: group for group in groups.values()}
        self._said: set[tuple[int, PowerKind]] = set()
        # The last divisions planned or sent per kind and lead inverter, newest last, each
        # with its share and what it was worked out from (a command of the share, or of what
        # the division placed, sends it again while those are the same).
        self._divisions: dict[tuple[PowerKind, int], list[_Kept]] = {}
        # What each member inverter was sent and what became of it, per kind: every power it
        # may hold now (a command in flight or unanswered may land; what ran out is gone).
        self._ledgers: dict[PowerKind, Ledger] = {"active": Ledger(), "reactive": Ledger()}
        # Inverters out of a division whose 0 is still in flight (the group's command landed
        # without it): no command goes to one beside it, and a release waits for its answer.
        self._busy: dict[PowerKind, dict[int, _Stray]] = {"active": {}, "reactive": {}}

    def placed(self, kind: PowerKind, inverter: int, power: float) -> tuple[float, bool]:
        """What a command of ``power`` to ``inverter`` places, and whether all of it was taken.

        ``(power, True)``, unless ``inverter`` is a group's lead: then its division among the
        group's usable inverters, which places less by each setpoint's rounding to a float32,
        and ``False`` when they cannot take the whole share (no choice of them can, or an
        inverter out of the division may still hold power, which comes off the share). The
        division is kept: the command that follows (of ``power``, or of what it places)
        sends exactly it while what it was worked out from is unchanged, so the result says
        what was sent.
        """
        group = self._by_lead.get(inverter)
        if group is None or power == 0.0:
            return power, True
        division = self._division(kind, group, power)
        return division.placed_w, division.whole

    def held(self, inverter: int) -> tuple[float, float] | None:
        """The most a group's inverters may hold together: (charging, discharging) W.

        Active power, by what each was sent; None unless ``inverter`` is a group's lead. More
        than the lead's command when an inverter out of the division has not yet let go: what
        a limit must count for the group.
        """
        group = self._by_lead.get(inverter)
        if group is None:
            return None
        return (
            math.fsum(self._most("active", i, 1.0) for i in group.inverters),
            math.fsum(self._most("active", i, -1.0) for i in group.inverters),
        )

    async def set_active_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Active commands, a lead inverter's divided among its group's inverters."""
        await self._send("active", setpoints, lifetime_s, land, tails)

    async def set_reactive_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Reactive commands, a lead inverter's divided by its group's reactive caps."""
        await self._send("reactive", setpoints, lifetime_s, land, tails)

    def _most(self, kind: PowerKind, inverter: int, sign: float | None = None) -> float:
        """The most ``inverter`` may hold of ``kind``: that way (``sign``), or either way."""
        values = self._ledgers[kind].possible(inverter, trio.current_time())
        if sign is None:
            return max(abs(v) for v in values)
        return max(0.0, *(sign * v for v in values))

    def _division(self, kind: PowerKind, group: Group, power: float) -> Division:
        """``power`` divided among ``group``'s usable inverters now (the kept one if it fits).

        Each inverter's bounds of ``kind`` are brought within its apparent-power limit beside
        the most the other kind may hold there or is planned for it. What the group's other
        inverters (not usable now) may still hold that way comes off the share first.
        """
        sign = 1.0 if power > 0 else -1.0
        busy = self._busy[kind]  # a stray's 0 still in flight: nothing is sent beside it
        usable = [i for i in self._merger.usable(group) if i.component_id not in busy]
        ids = {i.component_id for i in usable}
        stray = math.fsum(self._most(kind, i, sign) for i in group.inverters if i not in ids)
        other: PowerKind = "reactive" if kind == "active" else "active"
        planned = [k.division for k in self._divisions.get((other, group.inverter), [])]
        rows = []
        for inverter in usable:
            held = max(
                (abs(d.setpoints.get(inverter.component_id, 0.0)) for d in planned),
                default=0.0,
            )
            held = max(held, self._most(other, inverter.component_id))
            bounds = inverter.bounds if kind == "active" else inverter.reactive_bounds
            rows.append(
                (
                    inverter.component_id,
                    capped_active_bounds(bounds, inverter.apparent_limit_va, held),
                )
            )
        inputs = (tuple(rows), stray)
        kept = self._divisions.setdefault((kind, group.inverter), [])
        for entry in reversed(kept):  # by its share, or by what it placed
            if entry.inputs == inputs and power in (entry.share, entry.division.placed_w):
                return entry.division
        budget = sign * max(0.0, abs(power) - stray)
        division = divide(budget, rows)
        if stray > 0.0:
            division = attrs.evolve(division, whole=False)
        kept.append(_Kept(power, inputs, division))
        del kept[:-KEPT_DIVISIONS]  # the oldest go
        if not division.whole and (group.battery, kind) not in self._said:
            self._said.add((group.battery, kind))
            logger.warning(
                "group of %s: %g of %g (%s) could be divided among its inverters; the rest"
                " is reported as not placed",
                group.describe(),
                division.placed_w,
                power,
                kind,
            )
        return division

    async def _send(
        self,
        kind: PowerKind,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None,
    ) -> None:
        """Send ``setpoints``, each lead's divided among its group's inverters.

        Members whose power falls (or stays) go at once with every other command; within a
        group whose division moved, the members whose power rises go once those that may fall
        have landed, so the group never holds more than it did or will (in any landing order).
        If one of those failed, those that rise are not sent: the group's command fails. A
        member that rises and surely holds power is sent that power at once meanwhile (its
        setpoint is refreshed, not left to lapse while another member keeps it waiting).
        """
        send = (
            self._client.set_active_powers if kind == "active" else self._client.set_reactive_powers
        )
        if not self._by_lead.keys() & setpoints.keys():  # no group's: as they are
            await send(setpoints, lifetime_s, land, tails)
            return
        plan = self._expand(kind, setpoints, land, tails)
        ledger = self._ledgers[kind]
        held_s = lifetime_s * self._lifetime_scale
        busy = self._busy[kind]
        flying: dict[int, Sent] = {}  # a member's command in flight (one at a time)
        strays: dict[int, _Stray] = {}  # this call's strays' 0s

        def members_land(
            member: int, result: float | CommandError, *, verdict: bool = True
        ) -> None:
            if member in plan.members:
                command = flying.pop(member, None)
                if command is None:
                    return  # landed already (a client's bug): once only
                ledger.answered(command, fate(result), now=trio.current_time())
                stray = strays.pop(member, None)
                if stray is not None:
                    stray.ended(busy, result, verdict=verdict)
            plan.land(member, result)

        async def round_of(powers: dict[int, float]) -> None:
            now = trio.current_time()
            mine = {
                m: ledger.sent(m, powers[m], held_s, now=now) for m in powers if m in plan.members
            }
            flying.update(mine)
            for member in powers.keys() & plan.strays:
                strays[member] = busy[member] = _Stray(mine[member])
            passed = (
                None
                if tails is None
                else {
                    i: plan.tails[i] for i in powers if i in plan.tails and i not in plan.refreshes
                }
            )
            await send(powers, lifetime_s, members_land, passed)
            for member, command in mine.items():  # the client never landed it (a bug)
                if flying.get(member) is command:
                    members_land(member, CommandFailedError("INTERNAL", "no answer"), verdict=False)

        async def rise(landing: _Landing, powers: dict[int, float]) -> None:
            await landing.fallen.wait()
            if landing.fall_failed is not None:
                for member in powers:  # not sent: the group's command fails with it
                    plan.land(member, landing.fall_failed, named=True)
                return
            await round_of(powers)

        async def await_stray(member: int, stray: _Stray) -> None:
            """A release's member whose 0 is in flight in another call: its answer is ours.

            If that call ended before its inverter answered, the release sends its own 0
            (once no other call has one in flight to it).
            """
            while True:
                await stray.done.wait()
                if stray.verdict:
                    assert stray.outcome is not None
                    plan.land(member, stray.outcome)
                    return
                newer = busy.get(member)
                if newer is None:
                    plan.members.add(member)
                    await round_of({member: 0.0})
                    return
                stray = newer

        try:
            async with trio.open_nursery() as nursery:
                for lead, rising in plan.rising.items():
                    nursery.start_soon(rise, plan.landings[lead], rising)
                for member, stray in plan.awaited.items():
                    nursery.start_soon(await_stray, member, stray)
                if plan.first:
                    await round_of(plan.first)
        finally:  # cancelled (a newer command, the deadline): what flew may still land
            now = trio.current_time()
            for command in flying.values():
                ledger.answered(command, State.UNKNOWN, now=now)
            for stray in strays.values():
                stray.ended(
                    busy, CommandFailedError("CANCELLED", "its call ended first"), verdict=False
                )
            for landing in plan.landings.values():
                landing.give_up()  # a group's command that did not land: its streams end

    def _expand(
        self,
        kind: PowerKind,
        setpoints: Mapping[int, float],
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None,
    ) -> _Plan:
        """The commands to send in rounds, and the ``land`` that combines members."""
        ledger = self._ledgers[kind]
        possible = functools.partial(ledger.possible, now=trio.current_time())
        plan = _Plan(land)
        for inverter, power in setpoints.items():
            group = self._by_lead.get(inverter)
            if group is None:
                plan.first[inverter] = power
                if tails is not None and inverter in tails:
                    plan.tails[inverter] = tails[inverter]
                continue
            busy = self._busy[kind]
            if power == 0.0:  # a release reaches every inverter of the group: one whose 0 is
                # in flight already is not sent another, its answer is awaited as this one's
                members = {i: 0.0 for i in group.inverters if i not in busy}
                awaited = {i: busy[i] for i in group.inverters if i in busy}
            else:
                members = dict(self._division(kind, group, power).setpoints)
                awaited = {}
            # An inverter out of the division that may still hold power is sent 0 (until it
            # accepts one, or what it held ran out; not while one is in flight to it); what it
            # may hold came off the others' shares.
            out = {
                i: 0.0
                for i in group.inverters
                if i not in members and self._most(kind, i) and i not in busy
            }
            plan.strays.update(out)
            plan.first.update(out)
            plan.members.update(out)
            if not members and not awaited:  # no usable inverter at all: nothing can be sent
                land(inverter, _no_inverter(group))
                continue
            landing = _Landing(
                inverter, {*members, *awaited}, tails.get(inverter) if tails else None
            )
            plan.landings[inverter] = landing
            plan.awaited.update(awaited)
            plan.lead_of.update(dict.fromkeys(awaited, inverter))
            # Members that rise (past anything they may hold, the share's way) wait for those
            # that may fall, when the division moves between them; when none may fall, the
            # commander sent what falls before the group's command.
            # A release goes to every member at once: a 0 never raises anything.
            sign = 1.0 if power > 0.0 else -1.0
            most = {m: max(sign * h for h in possible(m)) for m in members}
            rising = {m: v for m, v in members.items() if power and sign * v > most[m]}
            falling = {m for m, v in members.items() if power and sign * v < most[m]}
            if not falling:
                rising = {}
            for member in rising:  # surely holding power: refreshed while it waits
                held = possible(member)
                if len(held) == 1 and sign * next(iter(held)) > 0.0:
                    plan.first[member] = next(iter(held))
                    plan.refreshes[member] = inverter
                    falling.add(member)
            landing.falling = falling if rising else set()
            if not landing.falling:
                landing.fallen.set()
            for member, value in members.items():
                (plan.rising.setdefault(inverter, {}) if member in rising else plan.first)[
                    member
                ] = value
                plan.lead_of[member] = inverter
                plan.members.add(member)
                if landing.tail is not None:
                    plan.tails[member] = landing.member_tail(member)
        return plan


@attrs.define(eq=False)
class _Plan:
    """One call's commands: the first round, each group's rising members, how they land."""

    forward: Callable[[int, float | CommandError], None]
    first: dict[int, float] = attrs.field(factory=dict)
    rising: dict[int, dict[int, float]] = attrs.field(factory=dict)  # lead: member: power
    members: set[int] = attrs.field(factory=set)  # every group's inverter sent something
    lead_of: dict[int, int] = attrs.field(factory=dict)  # member (of a division): its lead
    strays: set[int] = attrs.field(factory=set)  # out of a division, sent 0: answers theirs
    landings: dict[int, _Landing] = attrs.field(factory=dict)
    tails: dict[int, Tail] = attrs.field(factory=dict)
    refreshes: dict[int, int] = attrs.field(factory=dict)  # rising member refreshed: its lead
    awaited: dict[int, _Stray] = attrs.field(factory=dict)  # a release's members' 0s in flight

    def land(self, member: int, result: float | CommandError, *, named: bool = False) -> None:
        """A member's command landed: the group's lands once all have; others pass on.

        A member's failure names the member (``named``: it names the one that failed already).
        """
        refreshed = self.refreshes.pop(member, None)
        lead = self.lead_of.get(member) if refreshed is None else refreshed
        if lead is None:
            if member not in self.strays:
                self.forward(member, result)  # not a group's
            return  # out of the division: its answer is not the group's
        if not named and (member != lead or refreshed is not None):
            result = _named(member, result)
        if refreshed is not None:  # its refresh, not its command: it may rise now
            self.landings[refreshed].fell(member, result)
            return
        landing = self.landings[lead]
        if landing.landed(member, result):
            self.forward(lead, landing.outcome())
            landing.settle()  # members' streams that ended already end the group's now


@attrs.define
class _Kept:
    """A division kept, with its share and what it was worked out from."""

    share: float
    inputs: tuple[tuple[tuple[int, PowerBounds], ...], float]
    division: Division


class _Landing:
    """One group command's members landing; the group's command lands once all have.

    It holds until the earliest of their valid-untils, or fails with the first failure. With
    the group command's ``tail`` (v1alpha18/19), each member is sent with a tail of its own:
    if any member's stream goes on after it was accepted, so does the group's, which ends when
    the last of theirs ends (the worst of their final replies; never before the group's
    command landed), and abandoning it abandons theirs.
    """

    def __init__(self, lead: int, members: set[int], tail: Tail | None) -> None:
        self.lead = lead
        self.tail = tail
        self._waiting = set(members)
        # The members whose power falls while others' rises (those wait for these), set once
        # all have landed, and the first failure among them.
        self.falling: set[int] = set()
        self.fallen = trio.Event()
        self.fall_failed: CommandError | None = None
        self._outcome: float | CommandError | None = None
        self._tails: dict[int, Tail] = {}
        self._ends: dict[int, Late] = {}
        if tail is not None:
            tail._cancel = self._abandon

    def fell(self, member: int, result: float | CommandError) -> None:
        """A member the rising ones wait for landed (its own command, or its refresh)."""
        if member not in self.falling:
            return
        self.falling.discard(member)
        if isinstance(result, CommandError) and self.fall_failed is None:
            self.fall_failed = result
        if not self.falling:
            self.fallen.set()

    def give_up(self) -> None:
        """The call ended: if the group's command did not land, its members' streams end."""
        if self._waiting:
            self._abandon()

    def member_tail(self, member: int) -> Tail:
        """The tail a member's command is sent with."""
        made = self._tails[member] = Tail(functools.partial(self._ended, member))
        return made

    def landed(self, member: int, result: float | CommandError) -> bool:
        """A member's command landed; whether the group's command has landed now."""
        self.fell(member, result)
        earlier = self._outcome
        if earlier is None or (
            not isinstance(earlier, CommandError)
            and (isinstance(result, CommandError) or result < earlier)
        ):
            self._outcome = result
        self._waiting.discard(member)
        made = self._tails.get(member)
        if self.tail is not None and made is not None and made.following:
            # The group's stream goes on: said before looking whether it was abandoned, as a
            # client does (abandoning it then abandons the members' streams).
            self.tail.following = True
            if self.tail.abandoned:
                self._abandon()
        return not self._waiting

    def outcome(self) -> float | CommandError:
        """The group command's outcome, once :meth:`landed` said so."""
        assert self._outcome is not None
        return self._outcome

    def settle(self) -> None:
        """End the group's stream if it landed and every member's that went on has ended.

        Never before the group's command landed: a stream's end before its landing is not
        heard (the commander follows a stream from the landing on).
        """
        if self.tail is None or self._waiting or not self.tail.following:
            return
        following = [m for m, t in self._tails.items() if t.following]
        if all(m in self._ends for m in following):
            self.tail.end(_worst([self._ends[m] for m in following]))

    def _ended(self, member: int, outcome: Late) -> None:
        if self.tail is None or self.tail.abandoned:
            return  # nothing of the group's stream matters any more
        if outcome is not FinalReply.SUCCESS:  # the group's is the lead's: say whose it was
            logger.info("inverter %d (of lead inverter %d's group): %s", member, self.lead, outcome)
        self._ends[member] = outcome
        self.settle()

    def _abandon(self) -> None:
        for tail in self._tails.values():
            tail.abandon()


_FINAL_ORDER = (FinalReply.FAILED, FinalReply.OVERRIDDEN, FinalReply.NONE, FinalReply.END)


def _worst(outcomes: list[Late]) -> Late:
    """The group's final reply: the first error, else the worst reply (success only if all)."""
    for outcome in outcomes:
        if isinstance(outcome, CommandError):
            return outcome
    for final in _FINAL_ORDER:
        if final in outcomes:
            return final
    return FinalReply.SUCCESS


def _named(member: int, result: float | CommandError) -> float | CommandError:
    """A member's failure, saying which member it was (a success as it is)."""
    if not isinstance(result, CommandError):
        return result
    details = f"inverter {member}: {result.details}" if result.details else f"inverter {member}"
    return type(result)(result.code, details)


@attrs.define(eq=False)
class _Stray:
    """A 0 in flight to an inverter out of a division, which may outlive its group's command."""

    command: Sent
    done: trio.Event = attrs.field(factory=trio.Event)
    outcome: float | CommandError | None = None
    verdict: bool = False  # the inverter (the client) answered it; not its call's end

    def ended(
        self, busy: dict[int, _Stray], outcome: float | CommandError, *, verdict: bool
    ) -> None:
        """It landed, or its call ended: the inverter is free (unless a newer 0 took it)."""
        if self.done.is_set():
            return
        self.outcome = outcome
        self.verdict = verdict
        self.done.set()
        if busy.get(self.command.inverter) is self:
            del busy[self.command.inverter]


def _no_inverter(group: Group) -> CommandError:
    return CommandFailedError(
        "UNAVAILABLE", f"no inverter of the group of {group.describe()} is usable"
    )
