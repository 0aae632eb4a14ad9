"""An independent reading of "The merge inside a bucket" (``spec/arbitration.md``), exactly.

Written from the spec's text, not from :mod:`distributord.core.arbitration.merge`: plain
tuples, :class:`fractions.Fraction` for every finite value and ``None`` for an infinite edge,
so nothing here rounds. Readings the spec leaves open are the ones the module's docstring
states (limits clamp the bounds; ``override`` narrows with every bid; ``limited_by`` is every
earlier bid that moved an edge inwards); inputs are assumed valid (the tests of invalid ones
are directed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

Edge = Fraction | None
"""A finite edge, or ``None``: −∞ as a lower edge, +∞ as an upper one."""


@dataclass(frozen=True)
class OracleBid:
    program: str
    priority: int
    sequence: int
    power: Fraction | None
    lower: Edge
    upper: Edge
    max_charge: Edge  # None: no limit
    max_discharge: Edge


@dataclass(frozen=True)
class OracleGrant:
    program: str
    priority: int
    window: tuple[Fraction, Fraction]
    b: tuple[Fraction, Fraction]
    x: Fraction
    outside_window: bool
    limited_by: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class OracleMerge:
    target: Fraction
    below_minimum: bool
    grants: tuple[OracleGrant, ...]
    final_window: tuple[Fraction, Fraction]


def _at_least(value: Fraction, lower: Edge) -> bool:
    return lower is None or value >= lower


def _at_most(value: Fraction, upper: Edge) -> bool:
    return upper is None or value <= upper


def _own(bid: OracleBid) -> tuple[Edge, Edge]:
    """[lower, upper] ∩ [−max_discharge, max_charge]; if they miss, the bounds clamped in."""
    limit_lo = None if bid.max_discharge is None else -bid.max_discharge
    limit_hi = bid.max_charge
    lo: Edge = bid.lower
    hi: Edge = bid.upper
    # Clamp each edge of the bid's bounds into the limits (None = ∓∞ stays unless limited).
    if lo is None or (limit_lo is not None and lo < limit_lo):
        lo = limit_lo
    if limit_hi is not None and lo is not None and lo > limit_hi:
        lo = limit_hi
    if hi is None or (limit_hi is not None and hi > limit_hi):
        hi = limit_hi
    if limit_lo is not None and hi is not None and hi < limit_lo:
        hi = limit_lo
    return lo, hi


def oracle_merge(
    inclusion: tuple[Fraction, Fraction],
    exclusion: tuple[Fraction, Fraction],
    bids: Sequence[OracleBid],
    mode: str,
) -> OracleMerge:
    """Steps 1-3 for each bid in order, then the minimum."""
    order = sorted(bids, key=lambda b: (-b.priority, b.sequence, b.program))
    window = inclusion
    target = Fraction(0)
    someone_set_target = False
    narrowed: list[tuple[str, int]] = []
    grants = []
    for p in order:
        seen = window
        lo, hi = _own(p)
        # Step 1: B := window ∩ own; empty: the window's edge nearest to own.
        b_lo = window[0] if lo is None else max(window[0], lo)
        b_hi = window[1] if hi is None else min(window[1], hi)
        outside = b_lo > b_hi
        if outside:
            edge = window[1] if (lo is not None and lo > window[1]) else window[0]
            b_lo = b_hi = edge
        # Step 2.
        x = Fraction(0)
        if mode == "add":
            if p.power is not None:
                x = min(max(p.power, b_lo), b_hi)
                target += x
                window = (b_lo - x, b_hi - x)
            else:
                window = (b_lo, b_hi)
        else:
            if p.power is not None and not someone_set_target:
                target = min(max(p.power, b_lo), b_hi)
                x = target
                someone_set_target = True
            window = (b_lo, b_hi)
        # Step 3.
        grants.append(
            OracleGrant(
                program=p.program,
                priority=p.priority,
                window=seen,
                b=(b_lo, b_hi),
                x=x,
                outside_window=outside,
                limited_by=tuple(narrowed),
            )
        )
        if window[0] > seen[0] or window[1] < seen[1]:
            narrowed.append((p.program, p.priority))
    # Then: 0 < |target| < the aggregate minimum in target's direction ⇒ 0.
    below = (0 < target < exclusion[1]) or (exclusion[0] < target < 0)
    return OracleMerge(
        target=Fraction(0) if below else target,
        below_minimum=below,
        grants=tuple(grants),
        final_window=window,
    )


def oracle_headroom(
    inclusion: tuple[Fraction, Fraction],
    exclusion: tuple[Fraction, Fraction],
    bids: Sequence[OracleBid],
    mode: str,
    priority: int,
) -> tuple[Fraction, Fraction]:
    """The walk over the bids of strictly higher priority only, then the window at that point."""
    higher = [b for b in bids if b.priority > priority]
    return oracle_merge(inclusion, exclusion, higher, mode).final_window


def within(value: Fraction, lower: Edge, upper: Edge) -> bool:
    """``lower <= value <= upper`` with ``None`` edges infinite."""
    return _at_least(value, lower) and _at_most(value, upper)
