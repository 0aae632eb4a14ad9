"""Pairing batteries with their inverters, and the odd cases left out."""

from __future__ import annotations

from distributord.core.topology import Category, pair_batteries

G, M, INV, B = Category.GRID, Category.METER, Category.INVERTER, Category.BATTERY


def test_one_inverter_per_battery_pairs_them() -> None:
    categories = {1: G, 2: M, 2001: INV, 2002: INV, 1001: B, 1002: B}
    edges = [(1, 2), (2, 2001), (2, 2002), (2001, 1001), (2002, 1002)]
    topology = pair_batteries(categories, edges)
    assert topology.pairs == {1001: 2001, 1002: 2002}
    assert topology.inverters == {2001: 1001, 2002: 1002}
    assert topology.left_out == {}


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
    assert topology.pairs == {1001: 2001}
    assert topology.left_out == {
        1002: "several inverters (2002, 2003) are connected to it",
        1003: "its inverter 2004 also serves batteries 1004",
        1004: "its inverter 2004 also serves batteries 1003",
        1005: "no inverter is connected to it",
    }
    assert topology.describe() == [
        "managing 1 batteries",
        "left out battery 1002: several inverters (2002, 2003) are connected to it",
        "left out battery 1003: its inverter 2004 also serves batteries 1004",
        "left out battery 1004: its inverter 2004 also serves batteries 1003",
        "left out battery 1005: no inverter is connected to it",
    ]


def test_edges_to_unknown_components_are_ignored() -> None:
    topology = pair_batteries({2001: INV, 1001: B}, [(2001, 1001), (99, 1001), (2001, 98)])
    assert topology.pairs == {1001: 2001}
