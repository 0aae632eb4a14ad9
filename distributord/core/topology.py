"""The component graph and which battery is commanded through which inverter.

Theory of operation
-------------------
``ListConnections`` gives edges directed away from the grid. A battery's inverters are the
inverters found by walking up from it, against the edges, through components that only switch
or protect the line (:data:`PASS_THROUGH`: relays, breakers, fuses, prechargers), in chains of
any length. The walk stops at the first component that is not pass-through: an inverter there is
one of the battery's inverters (so an inverter behind another inverter is never the battery's);
anything else (a meter, a grid connection, another battery) means "not through an inverter".

* **The graph is the server's word, not ours.** Edges naming unknown ids are ignored, cycles are
  allowed, and the walk is iterative with a visited set: it ends, and never recurses, whatever
  the edges are. Each battery's walk visits only the pass-through components above it, so on a
  real site (a switch or two over each battery) the whole pairing is linear in the graph's size.
* **An id names one component.** A graph that lists an id more than once is contradicting
  itself (which of the entries is meant?), so no entry is believed: every component listed
  more than once is left out (:attr:`Topology.repeated`, one line in :meth:`Topology.describe`),
  a battery among them is left out with that reason, and so is every battery whose walk up to
  its inverter meets one. The adapters hand the list over as :class:`Components`, which
  remembers the repeated ids; a plain mapping cannot repeat an id.
* **Groups.** Batteries and the inverters above them form a bipartite graph; its connected
  components are the *groups* (``spec/plant.md``): one battery on one inverter (a *pair*, the
  common case), one battery on several inverters (a common DC bus), several batteries on one
  inverter, or several of each, every inverter on every battery. A group is one unit for the
  split. In :attr:`Topology.pairs` each group appears once, as its *lead* battery (the smallest
  id) and its lead inverter (the smallest id);
  :attr:`Topology.groups` lists the groups of more than one battery or inverter with all their
  members. Every other battery is left out with a reason an operator can act on, checked in
  this order:

  - no inverter: nothing can command it;
  - a PV inverter in its group: it converts only the panels' power, it cannot charge or
    discharge a battery (the whole group is left out);
  - another battery of its group is left out (its inverters share that battery's DC bus, so
    nothing in the group can be commanded safely); a battery listed more than once counts,
    its inverters found as any battery's are;
  - an inverter of its group is not connected to every battery of the group (a *partial
    bus*, a chain such as 2001-1001-2002-1002): what each inverter may take then depends on
    which batteries it reaches, which a group's one set of bounds cannot say, so no division
    of the group's share is known to be safe.

* **The inverter type decides what we trust.** A battery inverter is paired. A hybrid inverter
  is paired and listed in :attr:`Topology.hybrid`: its AC power includes the panels', so
  callers command it but never take its measured power as the battery's. An API version that
  gives no type (:attr:`InverterType.UNSPECIFIED`, or no type at all) is taken to mean a
  battery inverter, and :attr:`Topology.notes` says so once, naming the inverters concerned.

Pure: no IO, no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attrs

from distributord.core.values import ids_brief


class Category(enum.StrEnum):
    """Component categories distributord distinguishes (prefix dropped, lower case).

    Each API version's adapter maps its own category names onto these by name; a category
    that is none of these is :attr:`OTHER`.
    """

    GRID = "grid"
    METER = "meter"
    INVERTER = "inverter"
    BATTERY = "battery"
    RELAY = "relay"
    BREAKER = "breaker"
    FUSE = "fuse"
    PRECHARGER = "precharger"
    OTHER = "other"


PASS_THROUGH = frozenset({Category.RELAY, Category.BREAKER, Category.FUSE, Category.PRECHARGER})
"""Components that only switch or protect a line: a battery's inverter is found through them."""


class InverterType(enum.StrEnum):
    """What an inverter converts (v1alpha18/19 say; v1 does not: :attr:`UNSPECIFIED`)."""

    BATTERY = "battery"
    HYBRID = "hybrid"
    PV = "pv"
    UNSPECIFIED = "unspecified"


@attrs.frozen
class Component:
    """One component of the graph, as the adapters hand it over.

    Attributes:
        category: What it is.
        inverter_type: For an inverter, what it converts; None for every other category (an
            inverter with None is treated as :attr:`InverterType.UNSPECIFIED`).
    """

    category: Category
    inverter_type: InverterType | None = None


class Components(dict[int, Component]):
    """Component id to component, as the server listed them, with the ids it listed twice.

    A dict (the adapters' callers and their tests read it as the mapping it is), built by
    :meth:`listed`, that also keeps every entry of an id listed more than once
    (:attr:`repeated`): the mapping alone would keep only the last and hide the contradiction.
    """

    repeated: Mapping[int, tuple[Component, ...]]
    """Each id listed more than once, with all its entries in the order listed."""

    def __init__(self, entries: Iterable[tuple[int, Component]] = ()) -> None:
        everything: dict[int, list[Component]] = {}
        for cid, component in entries:
            everything.setdefault(cid, []).append(component)
        super().__init__((cid, listed[-1]) for cid, listed in everything.items())
        self.repeated = {cid: tuple(c) for cid, c in everything.items() if len(c) > 1}


@attrs.frozen
class Group:
    """Batteries and inverters connected to each other: one unit for the split.

    Attributes:
        batteries: Its batteries' ids, ascending; the first is the group's *lead*, the id it
            goes by in :attr:`Topology.pairs`, distributions and results.
        inverters: Its inverters' ids, ascending; the first is the lead inverter.
    """

    batteries: tuple[int, ...]
    inverters: tuple[int, ...]

    @property
    def battery(self) -> int:
        """The lead battery: the smallest id."""
        return self.batteries[0]

    @property
    def inverter(self) -> int:
        """The lead inverter: the smallest id."""
        return self.inverters[0]

    def describe(self) -> str:
        """``batteries 1, 2 on inverters 3, 4``: for logs and messages."""
        return (
            f"{_plural('battery', 'batteries', self.batteries)} on"
            f" {_plural('inverter', 'inverters', self.inverters)}"
        )


def _plural(one: str, many: str, ids: Collection[int]) -> str:
    return f"{one} {next(iter(ids))}" if len(ids) == 1 else f"{many} {ids_brief(ids)}"


def _one_battery_per_pair(instance: Topology, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: the pairs and the left-out batteries are disjoint, each inverter pairs once."""
    both = instance.pairs.keys() & instance.left_out.keys()
    if both:
        raise ValueError(f"batteries {ids_brief(both)} are both paired and left out")
    if len(set(instance.pairs.values())) != len(instance.pairs):
        raise ValueError("an inverter is paired with several batteries")


def _paired_inverters(instance: Topology, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: hybrid inverters are inverters of pairs."""
    stray = instance.hybrid - set(instance.pairs.values())
    if stray:
        raise ValueError(f"hybrid inverters {ids_brief(stray)} are not paired")


def _groups_led(instance: Topology, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: each group is listed under its lead, which is paired with its lead inverter."""
    for lead, group in instance.groups.items():
        if lead != group.battery or instance.pairs.get(lead) != group.inverter:
            raise ValueError(f"group {group.describe()} is not paired under its lead {lead}")


@attrs.frozen(kw_only=True)
class Topology:
    """The batteries distributord manages and those it left out.

    Attributes:
        pairs: Battery id to the id of the inverter that commands it; a group of several
            batteries or inverters appears once, as its lead battery and lead inverter.
        left_out: Battery id to why it is not managed.
        hybrid: The paired inverters that are hybrid: command them, but never take their
            measured power as their battery's (it includes the panels').
        notes: Assumptions made while pairing, one operator-readable line each.
        repeated: Component ids the graph listed more than once: none of them is used.
        groups: Lead battery to its group, for the groups of more than one battery or
            inverter (a group of one battery on one inverter is only a pair).
    """

    pairs: Mapping[int, int]
    left_out: Mapping[int, str] = attrs.field(validator=_one_battery_per_pair)
    hybrid: frozenset[int] = attrs.field(default=frozenset(), validator=_paired_inverters)
    notes: tuple[str, ...] = ()
    repeated: frozenset[int] = frozenset()
    groups: Mapping[int, Group] = attrs.field(factory=dict, validator=_groups_led)

    @property
    def inverters(self) -> Mapping[int, int]:
        """Inverter id to its battery id (a group's lead inverter to its lead battery)."""
        return {inverter: battery for battery, inverter in self.pairs.items()}

    def group(self, battery: int) -> Group:
        """The group led by ``battery`` (a managed lead): a pair is a group of one and one."""
        found = self.groups.get(battery)
        return found if found is not None else Group((battery,), (self.pairs[battery],))

    @property
    def lead_of(self) -> Mapping[int, int]:
        """Every managed battery, grouped or not, to its group's lead battery."""
        leads = {battery: battery for battery in self.pairs}
        for lead, group in self.groups.items():
            leads.update((member, lead) for member in group.batteries)
        return leads

    def leads(self, batteries: Collection[int]) -> tuple[dict[int, int], list[str]]:
        """Each of ``batteries`` to its group's lead, and what is wrong with them.

        A request names batteries and must name every battery of a group or none of them:
        each group named only in part gives one message naming the members left out.
        Batteries in no group (managed or not) are their own leads (the caller answers those
        not managed).
        """
        named = set(batteries)
        member_lead = {m: lead for lead, group in self.groups.items() for m in group.batteries}
        problems = [
            f"battery {min(named & set(group.batteries))} is in a group with batteries"
            f" {ids_brief(missing)} ({group.describe()}): name all of them or none"
            for group in self.groups.values()
            if (missing := set(group.batteries) - named) and missing != set(group.batteries)
        ]
        return {battery: member_lead.get(battery, battery) for battery in named}, problems

    def describe(self) -> list[str]:
        """One line per decision, for the start-up log.

        Only the lines about a battery left out start with "left out": the shell logs those as
        warnings, the others as information.
        """
        lines = [f"managing {len(self.lead_of)} batteries"]
        lines.extend(
            f"group of {group.describe()}: one unit, led by battery {lead}"
            for lead, group in sorted(self.groups.items())
        )
        if self.hybrid:
            lines.append(
                f"hybrid inverters ({ids_brief(self.hybrid)}) are commanded, but their measured"
                " power is not taken as their batteries'"
            )
        lines.extend(self.notes)
        if self.repeated:
            lines.append(
                f"left out components {ids_brief(self.repeated)}: each is listed more than once"
                " in the component graph"
            )
        lines.extend(f"left out battery {bid}: {why}" for bid, why in sorted(self.left_out.items()))
        return lines


def _inverters_above(
    battery: int,
    parents: Mapping[int, Iterable[int]],
    components: Mapping[int, Component],
    repeated: Collection[int],
) -> tuple[set[int], set[int]]:
    """The inverters above ``battery``, and the ``repeated`` components met on the way.

    The walk goes against the edges, through pass-through components only, and not past a
    repeated one. Iterative, with a visited set: it ends on any graph, cycles included.
    """
    found: set[int] = set()
    met: set[int] = set()
    seen = {battery}
    stack = [battery]
    while stack:
        for parent in parents.get(stack.pop(), ()):
            if parent in seen:
                continue
            seen.add(parent)
            if parent in repeated:
                met.add(parent)
                continue
            category = components[parent].category
            if category is Category.INVERTER:
                found.add(parent)
            elif category in PASS_THROUGH:
                stack.append(parent)
    return found, met


def pair_batteries(
    components: Mapping[int, Component | Category], connections: Iterable[tuple[int, int]]
) -> Topology:
    """Pair each battery with its inverter (see the module's theory of operation).

    Args:
        components: Component id to component. A bare :class:`Category` is accepted for
            convenience and means a component of that category with no inverter type. As
            :class:`Components`, the ids it saw listed more than once are left out.
        connections: ``(source, destination)`` edges, directed away from the grid. Edges
            naming ids not in ``components`` are ignored.

    Returns:
        The pairs, the batteries left out with why, the hybrid inverters among the pairs and
        the assumptions made.
    """
    graph = {
        cid: value if isinstance(value, Component) else Component(value)
        for cid, value in components.items()
    }
    repeated = components.repeated if isinstance(components, Components) else {}
    parents: dict[int, set[int]] = {}
    for source, destination in connections:
        if source in graph and destination in graph:
            parents.setdefault(destination, set()).add(source)
    # A battery listed more than once is walked too: it is left out, and so is every group it
    # is in (an inverter that feeds it would put power on a battery whose bounds are unknown).
    repeated_batteries = {
        cid
        for cid, entries in repeated.items()
        if any(entry.category is Category.BATTERY for entry in entries)
    }
    walks = {
        cid: _inverters_above(cid, parents, graph, repeated)
        for cid, component in graph.items()
        if component.category is Category.BATTERY or cid in repeated_batteries
    }
    inverters_of = {battery: inverters for battery, (inverters, _) in walks.items()}
    batteries_of: dict[int, set[int]] = {}
    for battery, inverters in inverters_of.items():
        for inverter in inverters:
            batteries_of.setdefault(inverter, set()).add(battery)

    left_out: dict[int, str] = {
        cid: f"its id is listed {len(repeated[cid])} times in the component graph"
        for cid in repeated_batteries
    }
    for battery, inverters in sorted(inverters_of.items()):
        if battery in repeated_batteries:
            continue
        met = walks[battery][1]
        if met:
            left_out[battery] = (
                f"{_components(met)} above it {'is' if len(met) == 1 else 'are'} listed more"
                " than once in the component graph"
            )
        elif not inverters:
            left_out[battery] = "no inverter is connected to it"

    pairs: dict[int, int] = {}
    groups: dict[int, Group] = {}
    hybrid: set[int] = set()
    assumed: set[int] = set()
    for group in _groups(inverters_of, batteries_of):
        why = _why_left_out(group, graph, left_out, batteries_of)
        if why is not None:
            left_out.update(
                (battery, why) for battery in group.batteries if battery not in left_out
            )
            continue
        pairs[group.battery] = group.inverter
        if len(group.batteries) > 1 or len(group.inverters) > 1:
            groups[group.battery] = group
        kinds = {inverter: graph[inverter].inverter_type for inverter in group.inverters}
        if InverterType.HYBRID in kinds.values():
            hybrid.add(group.inverter)
        assumed.update(i for i, kind in kinds.items() if kind in (None, InverterType.UNSPECIFIED))

    notes: list[str] = []
    if assumed:
        which = (
            f"inverter {next(iter(assumed))}"
            if len(assumed) == 1
            else f"{len(assumed)} inverters ({ids_brief(assumed)})"
        )
        notes.append(f"inverter types were not given: assuming battery inverters for {which}")
    return Topology(
        pairs=pairs,
        left_out=left_out,
        hybrid=frozenset(hybrid),
        notes=tuple(notes),
        repeated=frozenset(repeated),
        groups=groups,
    )


def _groups(
    inverters_of: Mapping[int, Collection[int]], batteries_of: Mapping[int, Collection[int]]
) -> list[Group]:
    """The connected components of the battery-inverter graph, by lead battery.

    Batteries without an inverter are no group. Iterative, each battery and inverter visited
    once: linear in the graph's size.
    """
    found: list[Group] = []
    seen: set[int] = set()
    for start in sorted(inverters_of):
        if start in seen or not inverters_of[start]:
            continue
        seen.add(start)
        batteries, inverters = {start}, set()
        stack = [start]
        while stack:
            for inverter in inverters_of[stack.pop()]:
                if inverter in inverters:
                    continue
                inverters.add(inverter)
                for battery in batteries_of[inverter]:
                    if battery not in seen:
                        seen.add(battery)
                        batteries.add(battery)
                        stack.append(battery)
        found.append(Group(tuple(sorted(batteries)), tuple(sorted(inverters))))
    return found


def _why_left_out(
    group: Group,
    graph: Mapping[int, Component],
    left_out: Mapping[int, str],
    batteries_of: Mapping[int, Collection[int]],
) -> str | None:
    """Why ``group`` cannot be managed (see the module's theory of operation), or None."""
    pv = [i for i in group.inverters if graph[i].inverter_type is InverterType.PV]
    if pv:
        if len(group.inverters) == 1:
            return f"its inverter {pv[0]} is a PV inverter: it cannot charge or discharge a battery"
        return (
            f"{_plural('inverter', 'inverters', pv)} of its group ({group.describe()})"
            f" {'is a PV inverter' if len(pv) == 1 else 'are PV inverters'}: it cannot charge"
            " or discharge a battery"
        )
    out = [b for b in group.batteries if b in left_out]
    if out:
        return (
            f"it shares inverters with {_plural('battery', 'batteries', out)}, left out"
            f" ({group.describe()})"
        )
    for inverter in group.inverters:
        missing = set(group.batteries) - set(batteries_of[inverter])
        if missing:
            return (
                f"inverter {inverter} of its group ({group.describe()}) is not connected to"
                f" {_plural('battery', 'batteries', missing)}: a group's inverters must each be"
                " connected to all its batteries (one DC bus), or what each inverter may take"
                " is not known"
            )
    return None


def _components(ids: Collection[int]) -> str:
    return f"component {next(iter(ids))}" if len(ids) == 1 else f"components {ids_brief(ids)}"
