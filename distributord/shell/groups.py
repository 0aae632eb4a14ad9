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
  caps the same way), sent to each in one batch with the other commands, and lands once every
  member has landed: the earliest valid-until, or the first failure. A release (0) goes to every
  inverter of the group, usable or not. A member inverter that is not usable gets no other
  command: its last setpoint lapses. Commands to members go without a tail (their replies are
  read to the end), so a ramping member holds the group's command until it is done.

A division that cannot place the whole share (minimums that no choice of inverters meets) sends
what it can and logs the shortfall once per group and kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from distributord.api.adapter import Decoder
from distributord.core.errors import CommandError, CommandFailedError
from distributord.core.groups import GroupMerger, divide
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds
from distributord.core.topology import Group, Topology
from distributord.shell.link import MessageStream, MicrogridClient, Tail, TelemetrySink

logger = logging.getLogger(__name__)


class GroupSink:
    """A telemetry sink that merges group members' news into the lead's (see the module doc).

    Args:
        sink: Where the (merged) snapshots and gaps go: the status tracker.
        merger: The groups' merger.
    """

    def __init__(self, sink: TelemetrySink, merger: GroupMerger) -> None:
        self._sink = sink
        self._merger = merger
        self._broken: set[int] = set()

    def snapshot(self, snapshot: BatterySnapshot | InverterSnapshot) -> None:
        """A component's new snapshot: the group's merged one goes on, if there is one yet."""
        self._broken.discard(snapshot.component_id)
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


class GroupSide:
    """A :class:`MicrogridClient` whose lead inverters stand for their groups' inverters.

    Args:
        client: The microgrid.
        groups: Lead battery to its group (only the groups of several members).
        merger: Where the members' latest snapshots are (which inverters are usable, their
            bounds).
    """

    def __init__(
        self, client: MicrogridClient, groups: Mapping[int, Group], merger: GroupMerger
    ) -> None:
        self._client = client
        self._merger = merger
        self._by_lead = {group.inverter: group for group in groups.values()}
        self._said: set[tuple[int, str]] = set()

    async def topology(self) -> Topology:
        """The client's topology."""
        return await self._client.topology()

    def telemetry(self, component_id: int) -> AbstractAsyncContextManager[MessageStream[Any]]:
        """The client's stream of a component."""
        return self._client.telemetry(component_id)

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> Decoder:
        """The client's decoder."""
        return self._client.decoder(component_id, battery=battery, max_data_age_s=max_data_age_s)

    async def set_active_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Active commands, a lead inverter's divided among its group's inverters."""
        sent, members_land, member_tails = self._expand(
            setpoints, land, tails, lambda i: i.bounds, "active"
        )
        await self._client.set_active_powers(sent, lifetime_s, members_land, member_tails)

    async def set_reactive_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Reactive commands, a lead inverter's divided by its group's reactive caps."""
        sent, members_land, member_tails = self._expand(
            setpoints, land, tails, lambda i: i.reactive_bounds, "reactive"
        )
        await self._client.set_reactive_powers(sent, lifetime_s, members_land, member_tails)

    def _expand(
        self,
        setpoints: Mapping[int, float],
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None,
        bounds_of: Callable[[InverterSnapshot], PowerBounds],
        kind: str,
    ) -> tuple[
        dict[int, float], Callable[[int, float | CommandError], None], dict[int, Tail] | None
    ]:
        """The commands to send, the ``land`` that combines members, the tails kept."""
        if not self._by_lead or not self._by_lead.keys() & setpoints.keys():
            return dict(setpoints), land, None if tails is None else dict(tails)
        sent: dict[int, float] = {}
        lead_of: dict[int, int] = {}
        waiting: dict[int, set[int]] = {}
        outcome: dict[int, float | CommandError] = {}
        for inverter, power in setpoints.items():
            group = self._by_lead.get(inverter)
            if group is None:
                sent[inverter] = power
                continue
            if power == 0.0:
                members = dict.fromkeys(group.inverters, 0.0)
            else:
                usable = [(i.component_id, bounds_of(i)) for i in self._merger.usable(group)]
                division = divide(power, usable)
                members = dict(division.setpoints)
                if division.placed_w != power and (group.battery, kind) not in self._said:
                    self._said.add((group.battery, kind))
                    logger.warning(
                        "group of %s: only %g of %g (%s) could be divided among its inverters",
                        group.describe(),
                        division.placed_w,
                        power,
                        kind,
                    )
            if not members:  # no usable inverter at all: nothing can be sent
                land(inverter, _no_inverter(group))
                continue
            sent.update(members)
            lead_of.update(dict.fromkeys(members, inverter))
            waiting[inverter] = set(members)

        def members_land(member: int, result: float | CommandError) -> None:
            lead = lead_of.get(member)
            if lead is None:
                land(member, result)
                return
            earlier = outcome.get(lead)
            if earlier is None or (
                not isinstance(earlier, CommandError)
                and (isinstance(result, CommandError) or result < earlier)
            ):
                outcome[lead] = result
            waiting[lead].discard(member)
            if not waiting[lead]:
                land(lead, outcome[lead])

        kept = None if tails is None else {i: t for i, t in tails.items() if i not in lead_of}
        return sent, members_land, kept


def _no_inverter(group: Group) -> CommandError:
    return CommandFailedError(
        "UNAVAILABLE", f"no inverter of the group of {group.describe()} is usable"
    )
