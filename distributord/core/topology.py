"""The component graph and which battery is commanded through which inverter.

Theory of operation
-------------------
``ListConnections`` gives edges directed away from the grid. A battery's inverters are its
predecessors of category inverter. The supported shape is one inverter per battery and one
battery per inverter; every other battery is left out, with a reason an operator can act on:

* no inverter: nothing can command it;
* several inverters: we would not know how to split its power among them;
* an inverter shared with other batteries: one setpoint cannot serve several batteries.

Pure: no IO, no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs


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
        inverter_type: For an inverter, what it converts; None for every other category.
    """

    category: Category
    inverter_type: InverterType | None = None


@attrs.frozen(kw_only=True)
class Topology:
    """The batteries distributord manages and those it left out.

    Attributes:
        pairs: Battery id to the id of the inverter that commands it.
        left_out: Battery id to why it is not managed.
    """

    pairs: Mapping[int, int]
    left_out: Mapping[int, str]

    @property
    def inverters(self) -> Mapping[int, int]:
        """Inverter id to its battery id."""
        return {inverter: battery for battery, inverter in self.pairs.items()}

    def describe(self) -> list[str]:
        """One line per decision, for the start-up log."""
        lines = [f"managing {len(self.pairs)} batteries"]
        lines.extend(f"left out battery {bid}: {why}" for bid, why in sorted(self.left_out.items()))
        return lines


def pair_batteries(
    categories: Mapping[int, Category], connections: Iterable[tuple[int, int]]
) -> Topology:
    """Pair each battery with its inverter.

    Args:
        categories: Component id to category.
        connections: ``(source, destination)`` edges, directed away from the grid.

    Returns:
        The pairs and the batteries left out, with why.
    """
    inverters_of: dict[int, set[int]] = {
        cid: set() for cid, category in categories.items() if category is Category.BATTERY
    }
    for source, destination in connections:
        if destination in inverters_of and categories.get(source) is Category.INVERTER:
            inverters_of[destination].add(source)
    batteries_of: dict[int, set[int]] = {}
    for battery, inverters in inverters_of.items():
        for inverter in inverters:
            batteries_of.setdefault(inverter, set()).add(battery)
    pairs: dict[int, int] = {}
    left_out: dict[int, str] = {}
    for battery, inverters in sorted(inverters_of.items()):
        if not inverters:
            left_out[battery] = "no inverter is connected to it"
            continue
        if len(inverters) > 1:
            left_out[battery] = (
                f"several inverters ({', '.join(map(str, sorted(inverters)))}) are connected to it"
            )
            continue
        (inverter,) = inverters
        sharing = batteries_of[inverter] - {battery}
        if sharing:
            others = ", ".join(map(str, sorted(sharing)))
            left_out[battery] = f"its inverter {inverter} also serves batteries {others}"
            continue
        pairs[battery] = inverter
    return Topology(pairs=pairs, left_out=left_out)
