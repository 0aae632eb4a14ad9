"""Pairing batteries with their inverters, and the odd cases left out."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.reports import components_report
from distributord.core.topology import (
    PASS_THROUGH,
    Category,
    Component,
    Components,
    Group,
    InverterType,
    Topology,
    pair_batteries,
)

G, M, INV, B = Category.GRID, Category.METER, Category.INVERTER, Category.BATTERY
RELAY, BREAKER, FUSE, PRE = Category.RELAY, Category.BREAKER, Category.FUSE, Category.PRECHARGER
BATTERY_INV = Component(INV, InverterType.BATTERY)
HYBRID_INV = Component(INV, InverterType.HYBRID)
PV_INV = Component(INV, InverterType.PV)

Graph = dict[int, Component | Category]
"""What ``pair_batteries`` takes: components, or bare categories for short."""


def test_one_inverter_per_battery_pairs_them() -> None:
    categories = {1: G, 2: M, 2001: INV, 2002: INV, 1001: B, 1002: B}
    edges = [(1, 2), (2, 2001), (2, 2002), (2001, 1001), (2002, 1002)]
    topology = pair_batteries(categories, edges)
    assert topology.pairs == {1001: 2001, 1002: 2002}
    assert topology.inverters == {2001: 1001, 2002: 1002}
    assert topology.left_out == {}
    assert topology.hybrid == frozenset()


def test_odd_batteries_are_left_out_with_reasons() -> None:
    categories = {
        1: G,
        2: M,
        2001: INV,
        2002: INV,
        2003: INV,
        2004: INV,
        1001: B,
        1002: B,
        1003: B,
        1004: B,
        1005: B,
        7: Category.OTHER,
    }
    edges = [
        (1, 2),
        (2, 2001),
        (2001, 1001),  # fine
        (2002, 1002),
        (2003, 1002),  # battery 1002: two inverters
        (2004, 1003),
        (2004, 1004),  # inverter 2004 serves two batteries
        (7, 1005),  # battery 1005: connected, but not to an inverter
    ]
    topology = pair_batteries(categories, edges)
    # Issue 25: a battery on two inverters and an inverter on two batteries are groups.
    assert topology.pairs == {1001: 2001, 1002: 2002, 1003: 2004}
    assert topology.groups == {
        1002: Group((1002,), (2002, 2003)),
        1003: Group((1003, 1004), (2004,)),
    }
    assert topology.left_out == {1005: "no inverter is connected to it"}
    assert topology.describe() == [
        "managing 4 batteries",
        "group of battery 1002 on inverters 2002, 2003: one unit, led by battery 1002",
        "group of batteries 1003, 1004 on inverter 2004: one unit, led by battery 1003",
        "inverter types were not given: assuming battery inverters for 4 inverters"
        " (2001, 2002, 2003, 2004)",
        "left out battery 1005: no inverter is connected to it",
    ]


def test_edges_to_unknown_components_are_ignored() -> None:
    topology = pair_batteries({2001: INV, 1001: B}, [(2001, 1001), (99, 1001), (2001, 98)])
    assert topology.pairs == {1001: 2001}


def test_an_unknown_component_does_not_pass_an_inverter_through() -> None:
    topology = pair_batteries({2001: INV, 1001: B}, [(2001, 99), (99, 1001)])
    assert topology.left_out == {1001: "no inverter is connected to it"}


# --- passing through relays, breakers, fuses and prechargers ----------------------------------


@pytest.mark.parametrize(
    "chain",
    [
        pytest.param((PRE, BREAKER), id="precharger-breaker"),
        pytest.param((RELAY, FUSE, PRE), id="relay-fuse-precharger"),
        pytest.param((BREAKER,) * 5, id="five-breakers"),
    ],
)
def test_a_battery_behind_pass_through_components_is_paired(
    chain: tuple[Category, ...],
) -> None:
    ids = list(range(10, 10 + len(chain)))
    components: Graph = {1: M, 2001: BATTERY_INV, 1001: B}
    components.update(zip(ids, chain, strict=True))
    path = [1, 2001, *ids, 1001]
    topology = pair_batteries(components, itertools.pairwise(path))
    assert topology.pairs == {1001: 2001}
    assert topology.left_out == {}
    assert topology.notes == ()


def test_a_meter_between_inverter_and_battery_leaves_the_battery_out() -> None:
    components: Graph = {2001: BATTERY_INV, 10: BREAKER, 5: M, 11: RELAY, 1001: B}
    topology = pair_batteries(components, [(2001, 10), (10, 5), (5, 11), (11, 1001)])
    assert topology.pairs == {}
    assert topology.left_out == {1001: "no inverter is connected to it"}


def test_the_nearest_inverter_is_the_batterys() -> None:
    components: Graph = {2001: BATTERY_INV, 2002: BATTERY_INV, 10: BREAKER, 1001: B}
    topology = pair_batteries(components, [(2001, 2002), (2002, 10), (10, 1001)])
    assert topology.pairs == {1001: 2002}


def test_a_cycle_among_pass_through_components_ends() -> None:
    components: Graph = {2001: BATTERY_INV, 10: RELAY, 11: BREAKER, 1001: B}
    edges = [(2001, 10), (10, 11), (11, 10), (11, 1001), (10, 10)]
    assert pair_batteries(components, edges).pairs == {1001: 2001}


def test_a_cycle_without_an_inverter_ends_with_the_battery_left_out() -> None:
    components: Graph = {10: RELAY, 11: BREAKER, 12: FUSE, 1001: B}
    edges = [(10, 11), (11, 12), (12, 10), (12, 1001)]
    assert pair_batteries(components, edges).left_out == {1001: "no inverter is connected to it"}


def test_a_cycle_through_the_battery_ends() -> None:
    components: Graph = {2001: BATTERY_INV, 10: PRE, 11: FUSE, 1001: B}
    edges = [(2001, 10), (10, 1001), (1001, 11), (11, 10), (1001, 1001)]
    assert pair_batteries(components, edges).pairs == {1001: 2001}


def test_a_long_chain_is_walked_without_recursion() -> None:
    length = 50_000  # far beyond Python's recursion limit
    components: Graph = {2001: BATTERY_INV, 1001: B}
    relays = range(10_000, 10_000 + length)
    components.update(dict.fromkeys(relays, RELAY))
    path = [2001, *relays, 1001]
    assert pair_batteries(components, itertools.pairwise(path)).pairs == {1001: 2001}


def test_several_inverters_through_different_paths_make_a_group() -> None:
    components: Graph = {
        2001: BATTERY_INV,
        2002: BATTERY_INV,
        10: BREAKER,
        11: RELAY,
        12: FUSE,
        1001: B,
    }
    edges = [(2001, 10), (10, 1001), (2002, 11), (11, 12), (12, 1001)]
    topology = pair_batteries(components, edges)
    assert topology.pairs == {1001: 2001}
    assert topology.groups == {1001: Group((1001,), (2001, 2002))}
    assert topology.left_out == {}


def test_one_inverter_through_two_paths_is_one_inverter() -> None:
    components: Graph = {2001: BATTERY_INV, 10: BREAKER, 11: RELAY, 1001: B}
    edges = [(2001, 10), (2001, 11), (10, 1001), (11, 1001)]
    assert pair_batteries(components, edges).pairs == {1001: 2001}


def test_one_inverter_feeding_two_batteries_through_a_breaker_each_makes_a_group() -> None:
    components: Graph = {2001: BATTERY_INV, 10: BREAKER, 11: BREAKER, 1001: B, 1002: B}
    edges = [(2001, 10), (2001, 11), (10, 1001), (11, 1002)]
    topology = pair_batteries(components, edges)
    assert topology.pairs == {1001: 2001}
    assert topology.groups == {1001: Group((1001, 1002), (2001,))}
    assert topology.lead_of == {1001: 1001, 1002: 1001}
    assert topology.left_out == {}


def test_batteries_and_inverters_on_one_bus_are_one_group_led_by_its_smallest_ids() -> None:
    # 1001, 1002 and 1003 each on 2001, 2002 and 2003 (listed in no order): one DC bus.
    components: Graph = {2001: BATTERY_INV, 2002: BATTERY_INV, 2003: BATTERY_INV}
    components.update({1001: B, 1002: B, 1003: B, 1004: B, 2004: BATTERY_INV})
    edges = [(i, b) for b in (1003, 1001, 1002) for i in (2003, 2001, 2002)]
    topology = pair_batteries(components, [*edges, (2004, 1004)])
    assert topology.pairs == {1001: 2001, 1004: 2004}
    assert topology.groups == {1001: Group((1001, 1002, 1003), (2001, 2002, 2003))}
    assert topology.group(1004) == Group((1004,), (2004,))
    assert topology.leads([1001, 1002, 1003, 1004]) == (
        {1001: 1001, 1002: 1001, 1003: 1001, 1004: 1004},
        [],
    )
    leads, problems = topology.leads([1002, 1004, 77])
    assert leads == {1002: 1001, 1004: 1004, 77: 77}
    assert problems == [
        "battery 1002 is in a group with batteries 1001, 1003 (batteries 1001, 1002, 1003 on"
        " inverters 2001, 2002, 2003): name all of them or none"
    ]


def test_a_partial_bus_is_left_out_naming_an_inverter_and_what_it_does_not_reach() -> None:
    # Found in review: in a chain, an inverter connected to only some of the group's batteries
    # was given a share of the group's bounds, more than its own batteries could take.
    components: Graph = {2001: BATTERY_INV, 2002: BATTERY_INV, 2003: BATTERY_INV}
    components.update({1001: B, 1002: B, 1003: B})
    edges = [(2001, 1001), (2002, 1001), (2002, 1002), (2003, 1003)]
    topology = pair_batteries(components, edges)
    assert topology.pairs == {1003: 2003}
    why = (
        "inverter 2001 of its group (batteries 1001, 1002 on inverters 2001, 2002) is not"
        " connected to battery 1002: a group's inverters must each be connected to all its"
        " batteries (one DC bus), or what each inverter may take is not known"
    )
    assert topology.left_out == {1001: why, 1002: why}


def test_a_pv_inverter_in_a_group_leaves_the_whole_group_out() -> None:
    components: Graph = {2001: BATTERY_INV, 2002: PV_INV, 1001: B, 1002: B}
    edges = [(2001, 1001), (2002, 1001), (2002, 1002)]
    topology = pair_batteries(components, edges)
    assert topology.pairs == {}
    why = (
        "inverter 2002 of its group (batteries 1001, 1002 on inverters 2001, 2002) is a PV"
        " inverter: it cannot charge or discharge a battery"
    )
    assert topology.left_out == {1001: why, 1002: why}


def test_a_group_with_a_battery_left_out_is_left_out() -> None:
    # Battery 1002's walk meets a repeated breaker; it shares inverter 2001 with 1001 (a
    # direct edge), so 1001's DC bus holds a battery we do not manage: neither is managed.
    listed = Components(
        [
            (2001, BATTERY_INV),
            (10, Component(BREAKER)),
            (10, Component(RELAY)),
            (1001, Component(B)),
            (1002, Component(B)),
        ]
    )
    edges = [(2001, 1001), (2001, 1002), (2001, 10), (10, 1002)]
    topology = pair_batteries(listed, edges)
    assert topology.pairs == {}
    assert (
        topology.left_out[1002]
        == "component 10 above it is listed more than once in the component graph"
    )
    assert topology.left_out[1001] == (
        "it shares inverters with battery 1002, left out (batteries 1001, 1002 on inverter 2001)"
    )


# --- ids listed more than once ---------------------------------------------------------------


def test_a_list_that_repeats_an_id_keeps_every_entry_of_it() -> None:
    listed = Components([(1001, Component(B)), (2001, BATTERY_INV), (1001, Component(M))])
    assert listed == {1001: Component(M), 2001: BATTERY_INV}  # a mapping, as before
    assert listed.repeated == {1001: (Component(B), Component(M))}
    assert Components([(1001, Component(B))]).repeated == {}


def test_components_listed_more_than_once_are_left_out_and_named_in_one_line() -> None:
    # Issue 18, finding 8: a repeated id was silently taken from its last entry.
    listed = Components(
        [
            (1, Component(G)),
            (2, Component(M)),
            (2, Component(M)),  # the same twice: still a contradiction nobody should resolve
            (2001, BATTERY_INV),
            (1001, Component(B)),  # fine
            (2002, BATTERY_INV),
            (1002, Component(B)),
            (1002, Component(B)),  # a battery listed twice
            (2003, BATTERY_INV),
            (2003, PV_INV),  # an inverter listed twice, differently
            (1003, Component(B)),
            (2004, BATTERY_INV),
            (10, Component(RELAY)),
            (10, Component(BREAKER)),  # pass-through between 2004 and 1004, listed twice
            (1004, Component(B)),
            (2005, BATTERY_INV),
            (7, Component(B)),
            (7, Component(M)),  # a battery, and then not
        ]
    )
    edges = [(1, 2), *((2, i) for i in range(2001, 2006))]
    edges += [(2001, 1001), (2002, 1002), (2003, 1003), (2004, 10), (10, 1004), (2005, 7)]
    topology = pair_batteries(listed, edges)
    assert topology.pairs == {1001: 2001}
    assert topology.left_out == {
        7: "its id is listed 2 times in the component graph",
        1002: "its id is listed 2 times in the component graph",
        1003: "component 2003 above it is listed more than once in the component graph",
        1004: "component 10 above it is listed more than once in the component graph",
    }
    assert topology.repeated == {2, 7, 10, 1002, 2003}
    warnings = [line for line in topology.describe() if line.startswith("left out")]
    assert warnings[0] == (
        "left out components 2, 7, 10, 1002, 2003: each is listed more than once"
        " in the component graph"
    )
    assert len(warnings) == 5  # that line, and one per battery left out
    # list_components shows them as it shows every battery left out.
    assert {entry["battery_id"] for entry in components_report(topology)["left_out"]} == {
        7,
        1002,
        1003,
        1004,
    }


def test_a_battery_with_several_repeated_components_above_names_them_all() -> None:
    twice = [(10, Component(RELAY)), (11, Component(FUSE))] * 2
    listed = Components([(2001, BATTERY_INV), *twice, (1001, Component(B))])
    topology = pair_batteries(listed, [(2001, 10), (2001, 11), (10, 1001), (11, 1001)])
    assert topology.left_out == {
        1001: "components 10, 11 above it are listed more than once in the component graph"
    }


# --- inverter types ---------------------------------------------------------------------------


def test_a_battery_behind_a_pv_inverter_is_left_out() -> None:
    components: Graph = {2001: PV_INV, 10: RELAY, 1001: B}
    topology = pair_batteries(components, [(2001, 10), (10, 1001)])
    assert topology.pairs == {}
    assert topology.left_out == {
        1001: "its inverter 2001 is a PV inverter: it cannot charge or discharge a battery"
    }
    assert topology.notes == ()


def test_a_hybrid_inverter_is_paired_and_listed_as_hybrid() -> None:
    components: Graph = {2001: HYBRID_INV, 2002: BATTERY_INV, 1001: B, 1002: B}
    topology = pair_batteries(components, [(2001, 1001), (2002, 1002)])
    assert topology.pairs == {1001: 2001, 1002: 2002}
    assert topology.hybrid == frozenset({2001})
    assert topology.notes == ()
    assert topology.describe() == [
        "managing 2 batteries",
        "hybrid inverters (2001) are commanded,"
        " but their measured power is not taken as their batteries'",
    ]


def test_a_group_with_a_hybrid_inverter_has_a_hybrid_lead() -> None:
    # Its measured power includes the panels': the group's (the lead's) is never taken.
    components: Graph = {2001: BATTERY_INV, 2002: HYBRID_INV, 1001: B, 1002: B}
    bus = [(2001, 1001), (2001, 1002), (2002, 1001), (2002, 1002)]
    topology = pair_batteries(components, bus)
    assert topology.pairs == {1001: 2001}
    assert topology.hybrid == frozenset({2001})


def test_unspecified_inverter_types_are_assumed_battery_inverters_in_one_note() -> None:
    components: Graph = {
        2001: Component(INV, InverterType.UNSPECIFIED),
        2002: Component(INV),  # no type at all
        2003: INV,  # a bare category: no type either
        2004: BATTERY_INV,
        1001: B,
        1002: Component(B),
        1003: B,
        1004: B,
    }
    edges = [(2001, 1001), (2002, 1002), (2003, 1003), (2004, 1004)]
    topology = pair_batteries(components, edges)
    assert topology.pairs == {1001: 2001, 1002: 2002, 1003: 2003, 1004: 2004}
    assert topology.hybrid == frozenset()
    assert topology.notes == (
        "inverter types were not given: assuming battery inverters for 3 inverters"
        " (2001, 2002, 2003)",
    )
    assert topology.describe()[1:] == list(topology.notes)


def test_many_assumed_inverters_are_named_briefly() -> None:
    components: dict[int, Category] = {}
    edges = []
    for battery in range(1000, 1100):
        components[battery] = B
        components[battery + 1000] = INV
        edges.append((battery + 1000, battery))
    topology = pair_batteries(components, edges)
    assert len(topology.pairs) == 100
    assert topology.notes == (
        "inverter types were not given: assuming battery inverters for 100 inverters"
        " (100 ids: 2000-2099)",
    )


# --- the Topology value -----------------------------------------------------------------------


def test_a_topology_built_from_pairs_and_left_out_has_no_hybrid_and_no_notes() -> None:
    topology = Topology(pairs={1001: 2001}, left_out={1002: "no inverter is connected to it"})
    assert topology.hybrid == frozenset()
    assert topology.notes == ()
    assert topology.describe() == [
        "managing 1 batteries",
        "left out battery 1002: no inverter is connected to it",
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"pairs": {1001: 2001}, "left_out": {1001: "why"}},
            "batteries 1001 are both paired and left out",
            id="paired-and-left-out",
        ),
        pytest.param(
            {"pairs": {1001: 2001, 1002: 2001}, "left_out": {}},
            "an inverter is paired with several batteries",
            id="shared-inverter",
        ),
        pytest.param(
            {"pairs": {1001: 2001}, "left_out": {}, "hybrid": frozenset({2002})},
            "hybrid inverters 2002 are not paired",
            id="stray-hybrid",
        ),
    ],
)
def test_a_topology_refuses_contradictions(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Topology(**fields)  # type: ignore[arg-type]


# --- the property: an exact oracle ------------------------------------------------------------

NODES = 8
"""Most components in a graph of the property: enumerating every path stays cheap."""

CATEGORIES = [B, B, INV, INV, RELAY, BREAKER, FUSE, PRE, M, G, Category.OTHER]
"""Batteries and inverters twice, so that most graphs have both."""


def as_component(value: Component | Category) -> Component:
    """A bare category as the component it stands for."""
    return value if isinstance(value, Component) else Component(value)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[Graph, list[tuple[int, int]]]:
    """Components (some as bare categories) and edges among them, cycles included.

    Edges chosen uniformly rarely lead from an inverter to a battery, so some are planted as
    chains from an inverter to a battery, mostly through pass-through components; the rest are
    any edges at all. The id one past
    the last component names none: edges to or from it must be ignored.
    """
    size = draw(st.integers(1, NODES))
    graph: Graph = dict(
        enumerate(
            draw(
                st.lists(
                    st.one_of(
                        st.sampled_from(CATEGORIES),  # bare, as v1's adapter hands them over
                        st.builds(Component, st.sampled_from(CATEGORIES)),
                        st.builds(Component, st.just(INV), st.sampled_from([None, *InverterType])),
                    ),
                    min_size=size,
                    max_size=size,
                )
            )
        )
    )
    kinds = {cid: as_component(c).category for cid, c in graph.items()}
    inverters = [cid for cid, kind in kinds.items() if kind is INV]
    switches = [cid for cid, kind in kinds.items() if kind in PASS_THROUGH]
    batteries = [cid for cid, kind in kinds.items() if kind is B]
    ids = st.integers(0, size)
    # Mostly switches between, sometimes anything (a meter, a battery, an unknown id).
    between = st.one_of(st.sampled_from(switches), ids) if switches else ids
    edges: list[tuple[int, int]] = []
    if inverters and batteries:
        chains = st.tuples(
            st.sampled_from(inverters), st.lists(between, max_size=3), st.sampled_from(batteries)
        )
        for inverter, middle, battery in draw(st.lists(chains, min_size=1, max_size=3)):
            edges.extend(itertools.pairwise([inverter, *middle, battery]))
    edges.extend(draw(st.lists(st.tuples(ids, ids), max_size=size)))
    return graph, draw(st.permutations(edges))


def oracle(
    components: Mapping[int, Component], edges: list[tuple[int, int]]
) -> tuple[dict[int, int], dict[int, str], set[int]]:
    """Pairs, the kind of reason for each left-out battery, and the hybrid inverters.

    Enumerates every simple path upstream from each battery, through pass-through nodes only.
    """

    def inverters_above(node: int, path: frozenset[int]) -> set[int]:
        found: set[int] = set()
        for source, destination in edges:
            if destination != node or source in path or source not in components:
                continue
            category = components[source].category
            if category is INV:
                found.add(source)
            elif category in PASS_THROUGH:
                found |= inverters_above(source, path | {source})
        return found

    batteries = [cid for cid, c in components.items() if c.category is B]
    above = {b: inverters_above(b, frozenset({b})) for b in batteries}
    pairs: dict[int, int] = {}
    kinds: dict[int, str] = {b: "no inverter" for b in batteries if not above[b]}
    hybrid: set[int] = set()
    groups: dict[int, set[int]] = {b: {b} for b in batteries if above[b]}
    changed = True
    while changed:  # merge batteries sharing an inverter until nothing changes
        changed = False
        for a, b in itertools.combinations(batteries, 2):
            if (
                a in groups
                and b in groups
                and groups[a] is not groups[b]
                and any(above[x] & above[y] for x in groups[a] for y in groups[b])
            ):
                merged = groups[a] | groups[b]
                for member in merged:
                    groups[member] = merged
                changed = True
    for members in {id(g): g for g in groups.values()}.values():
        inverters = set().union(*(above[b] for b in members))
        types = [components[i].inverter_type for i in inverters]
        if InverterType.PV in types:
            kinds.update(dict.fromkeys(members, "PV inverter"))
            continue
        if any(not members <= {b for b in members if i in above[b]} for i in inverters):
            kinds.update(dict.fromkeys(members, "not connected to"))  # a partial bus
            continue
        pairs[min(members)] = min(inverters)
        if InverterType.HYBRID in types:
            hybrid.add(min(inverters))
    return pairs, kinds, hybrid


@given(graphs())
def test_pairing_matches_every_path_upstream(
    graph: tuple[Graph, list[tuple[int, int]]],
) -> None:
    given_components, edges = graph
    components = {cid: as_component(c) for cid, c in given_components.items()}
    topology = pair_batteries(given_components, edges)
    pairs, kinds, hybrid = oracle(components, edges)
    assert topology.pairs == pairs
    assert topology.left_out.keys() == kinds.keys()
    for battery, kind in kinds.items():
        assert kind in topology.left_out[battery]
    assert topology.hybrid == hybrid
    batteries = {cid for cid, c in components.items() if c.category is B}
    assert topology.lead_of.keys() | topology.left_out.keys() == batteries
    assert not topology.lead_of.keys() & topology.left_out.keys()
    assumed = {
        i
        for lead in pairs
        for i in topology.group(lead).inverters
        if components[i].inverter_type in (None, InverterType.UNSPECIFIED)
    }
    assert len(topology.notes) == (1 if assumed else 0)


def test_a_battery_listed_twice_leaves_out_every_battery_sharing_its_inverter() -> None:
    # Found in review: the repeated battery was left out, but 2001, which also feeds it, was
    # paired with 1001 alone, so its commands put power on a battery whose bounds were unread.
    listed = Components(
        [
            (1, Component(G)),
            (2001, BATTERY_INV),
            (2002, BATTERY_INV),
            (1001, Component(B)),
            (1002, Component(B)),
            (1002, Component(B)),
            (1003, Component(B)),
        ]
    )
    edges = [(1, 2001), (1, 2002), (2001, 1001), (2001, 1002), (2002, 1003)]
    topology = pair_batteries(listed, edges)
    assert topology.pairs == {1003: 2002}
    assert topology.left_out == {
        1001: "it shares inverters with battery 1002, left out"
        " (batteries 1001, 1002 on inverter 2001)",
        1002: "its id is listed 2 times in the component graph",
    }
