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
* **One battery, one inverter.** That is the supported shape; every other battery is left out
  with a reason an operator can act on, checked in this order:

  - no inverter: nothing can command it;
  - several inverters: we would not know how to split its power among them (until N:M groups
    are supported);
  - a PV inverter: it converts only the panels' power, it cannot charge or discharge a battery;
  - an inverter shared with other batteries: one setpoint cannot serve several batteries (until
    N:M groups are supported). Every battery the inverter reaches counts, left out or not.

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


@attrs.frozen(kw_only=True)
class Topology:
    """The batteries distributord manages and those it left out.

    Attributes:
        pairs: Battery id to the id of the inverter that commands it.
        left_out: Battery id to why it is not managed.
        hybrid: The paired inverters that are hybrid: command them, but never take their
            measured power as their battery's (it includes the panels').
        notes: Assumptions made while pairing, one operator-readable line each.
        repeated: Component ids the graph listed more than once: none of them is used.
    """

    pairs: Mapping[int, int]
    left_out: Mapping[int, str] = attrs.field(validator=_one_battery_per_pair)
    hybrid: frozenset[int] = attrs.field(default=frozenset(), validator=_paired_inverters)
    notes: tuple[str, ...] = ()
    repeated: frozenset[int] = frozenset()

    @property
    def inverters(self) -> Mapping[int, int]:
        """Inverter id to its battery id."""
        return {inverter: battery for battery, inverter in self.pairs.items()}

    def describe(self) -> list[str]:
        """One line per decision, for the start-up log.

        Only the lines about a battery left out start with "left out": the shell logs those as
        warnings, the others as information.
        """
        lines = [f"managing {len(self.pairs)} batteries"]
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


_NOT_YET = "not managed until N:M groups are supported"


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
    walks = {
        cid: _inverters_above(cid, parents, graph, repeated)
        for cid, component in graph.items()
        if component.category is Category.BATTERY and cid not in repeated
    }
    inverters_of = {battery: inverters for battery, (inverters, _) in walks.items()}
    batteries_of: dict[int, set[int]] = {}
    for battery, inverters in inverters_of.items():
        for inverter in inverters:
            batteries_of.setdefault(inverter, set()).add(battery)

    pairs: dict[int, int] = {}
    left_out: dict[int, str] = {
        cid: f"its id is listed {len(entries)} times in the component graph"
        for cid, entries in repeated.items()
        if any(entry.category is Category.BATTERY for entry in entries)
    }
    hybrid: set[int] = set()
    assumed: set[int] = set()
    for battery, inverters in sorted(inverters_of.items()):
        met = walks[battery][1]
        if met:
            left_out[battery] = (
                f"{_components(met)} above it {'is' if len(met) == 1 else 'are'} listed more"
                " than once in the component graph"
            )
            continue
        if not inverters:
            left_out[battery] = "no inverter is connected to it"
            continue
        if len(inverters) > 1:
            left_out[battery] = (
                f"several inverters ({ids_brief(inverters)}) are connected to it: {_NOT_YET}"
            )
            continue
        (inverter,) = inverters
        kind = graph[inverter].inverter_type
        if kind is None:
            kind = InverterType.UNSPECIFIED
        if kind is InverterType.PV:
            left_out[battery] = (
                f"its inverter {inverter} is a PV inverter: it cannot charge or discharge a battery"
            )
            continue
        sharing = batteries_of[inverter] - {battery}
        if sharing:
            left_out[battery] = (
                f"its inverter {inverter} also serves batteries {ids_brief(sharing)}: {_NOT_YET}"
            )
            continue
        pairs[battery] = inverter
        if kind is InverterType.HYBRID:
            hybrid.add(inverter)
        elif kind is InverterType.UNSPECIFIED:
            assumed.add(inverter)

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
    )


def _components(ids: Collection[int]) -> str:
    return f"component {next(iter(ids))}" if len(ids) == 1 else f"components {ids_brief(ids)}"
