"""An independent reading of the spec, shared by the distribution tests.

The per-pair table of ``spec/distribution.md`` read afresh (not through the rows), the exact set
of reachable totals, and a builder of the worked examples' pairs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import attrs
from hypothesis import note
from hypothesis import strategies as st

from distributord.core.distribution import MAX_EXPONENT, Distribution, Pair, distribute
from tests.strategies import symmetric_pair

TOLERANCE_W = 1e-6
"""Conservation holds "within 1e-6 W per pair" (spec)."""

exponents = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, MAX_EXPONENT]) | st.floats(0.0, MAX_EXPONENT)
"""The spec's range, [0, 16]: every invariant holds at both ends of it."""

derate_bands = st.sampled_from([0.0, 0.0, 5.0, 10.0, 37.5, 100.0]) | st.floats(0.0, 100.0)
"""``distribution.derate_band_pct``: off (often), typical bands, the top of the config's range
[0, 100] and anything in between; every invariant holds on the derated caps."""


@attrs.frozen
class Quantities:
    available: float
    cap: float | Fraction
    """The spec's cap, derated exactly (a :class:`Fraction`) inside the derating band."""
    minimum: float
    capacity: float

    @property
    def candidate(self) -> bool:
        """Can take power: weight > 0, cap > 0 and minimum <= cap."""
        return (
            self.capacity > 0 and self.available > 0 and self.cap > 0 and self.minimum <= self.cap
        )


def _merge(a: float, b: float, tighter: Callable[[float, float], float]) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return tighter(a, b)


def quantities(pair: Pair, charging: bool, band: float = 0.0) -> Quantities:
    """The spec's per-pair table; with a derating ``band`` the cap inside it is ``u·a/band``.

    Derated in rational arithmetic: the split's caps are floats that may never exceed it.
    """
    b, i = pair.battery, pair.inverter
    if charging:
        available = max(0.0, b.soc_upper_pct - b.soc_pct)
        cap = _merge(b.bounds.inclusion_upper, i.bounds.inclusion_upper, min)
        minimum = _merge(b.bounds.exclusion_upper, i.bounds.exclusion_upper, max)
    else:
        available = max(0.0, b.soc_pct - b.soc_lower_pct)
        cap = -_merge(b.bounds.inclusion_lower, i.bounds.inclusion_lower, max)
        minimum = -_merge(b.bounds.exclusion_lower, i.bounds.exclusion_lower, min)
    derated: float | Fraction = cap
    if 0 < available < band and cap > 0:
        derated = Fraction(cap) * Fraction(available) / Fraction(band)
    return Quantities(available=available, cap=derated, minimum=minimum, capacity=b.capacity_wh)


def reachable_below(target: float, items: Sequence[Quantities]) -> float:
    """Exactly: the largest total up to ``target`` that allowed setpoints can add up to.

    Each candidate takes 0 or [m, u]; pairs without a minimum just widen [0, U0]. The union of
    reachable totals is kept as merged intervals, in rational arithmetic. A set of pairs counts
    only if its minimums add up to at most ``target`` exactly, as the split may never place
    more than asked: a minimum 1e-10 W above the request is out of reach. (It once counted
    within 1e-6 W, and took a lone pair with a 1,000,000.0000000001 W minimum to reach a
    1 MW request.) Intervals less than :data:`TOLERANCE_W` apart are merged, which keeps their
    number small and overstates the best total by less than that.
    """
    goal, gap = Fraction(target), Fraction(TOLERANCE_W)
    base = sum((Fraction(q.cap) for q in items if q.candidate and q.minimum <= 0), Fraction(0))
    intervals = [(Fraction(0), base)]
    for q in items:
        if not (q.candidate and q.minimum > 0):
            continue
        minimum, cap = Fraction(q.minimum), Fraction(q.cap)
        shifted = [(lo + minimum, hi + cap) for lo, hi in intervals if lo + minimum <= goal]
        merged: list[tuple[Fraction, Fraction]] = []
        for lo, hi in sorted(intervals + shifted):
            if merged and lo <= merged[-1][1] + gap:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        intervals = merged
    return float(max(min(hi, goal) for _, hi in intervals))  # every lo is at most the goal


def identical_groups(fleet: Sequence[Pair]) -> list[list[Pair]]:
    """The fleet's pairs grouped by identical inputs (everything but the component ids).

    Keyed by ``repr``: the snapshots hold NaN (no measured power), and NaN is not equal to
    itself, so snapshots compared as values are never equal. Compared so, every group had one
    pair and the fairness property never compared two.
    """
    groups: dict[str, list[Pair]] = {}
    for pair in fleet:
        key = repr(
            (
                attrs.evolve(pair.battery, component_id=0),
                attrs.evolve(pair.inverter, component_id=0),
            )
        )
        groups.setdefault(key, []).append(pair)
    return list(groups.values())


def best_fair_choice(target: float, groups: Sequence[Sequence[Quantities]]) -> Fraction:
    """Exactly, by enumeration: the largest total up to ``target`` a *fair* choice reaches.

    A fair choice runs every pair of a group of identical pairs or none of them (run alike,
    identical pairs get identical setpoints); a group that can take power and has no minimum
    always runs, as it can take any total down to 0. Every subset of the other groups is tried:
    running ``S``, the fleet reaches every total in ``[Σ_S m, Σ_S u + U0]``, and counts only if
    its minimums add up to at most ``target`` exactly (the split never places more than asked).
    """
    goal = Fraction(target)
    base = Fraction(0)
    windows: list[tuple[Fraction, Fraction]] = []
    for group in groups:
        q = group[0]
        if not q.candidate:
            continue
        size = len(group)
        if q.minimum <= 0:
            base += size * Fraction(q.cap)
        else:
            windows.append((size * Fraction(q.minimum), size * Fraction(q.cap)))
    best = min(base, goal)
    for chosen in itertools.product((False, True), repeat=len(windows)):
        floor = sum((lo for (lo, _), on in zip(windows, chosen, strict=True) if on), Fraction(0))
        if floor <= goal:
            cap = base + sum(
                (hi for (_, hi), on in zip(windows, chosen, strict=True) if on), Fraction(0)
            )
            best = max(best, min(cap, goal))
    return best


def run(
    power: float, fleet: Sequence[Pair], exponent: float = 1.0, band: float = 0.0
) -> Distribution:
    note(f"power={power!r} exponent={exponent!r} band={band!r} pairs={len(fleet)}")
    return distribute(power, fleet, exponent=exponent, derate_band_pct=band)


battery = symmetric_pair
"""The worked examples' pairs: plain numbers, symmetric bounds."""


# --- an exact oracle --------------------------------------------------------------------------


def exact_weight(q: Quantities, exponent: int) -> Fraction:
    """The spec's weight ``capacity · a^e`` in rational arithmetic (0 when ``a`` is 0).

    The spec's ``1/Σcapacity`` factor is common to every pair and left out. Only whole
    exponents have an exact power; the float inputs themselves are exact rationals.
    """
    if not q.candidate:
        return Fraction(0)
    return Fraction(q.capacity) * Fraction(q.available) ** exponent


def water_filling(
    magnitude: Fraction, weights: Sequence[Fraction], caps: Sequence[Fraction]
) -> list[Fraction]:
    """Exactly: water-filling without minimums (spec rules 1, 2 and 4).

    Pairs with weight 0 take 0. If the caps add up to at most ``magnitude`` every pair runs at
    its cap; otherwise the level ``λ`` with ``Σ min(λ·w, u) = magnitude``: cap every pair whose
    cap is below its share at the level the others leave, until none is.
    """
    active = [k for k, w in enumerate(weights) if w > 0 and caps[k] > 0]
    out = [Fraction(0)] * len(weights)
    if sum((caps[k] for k in active), Fraction(0)) <= magnitude:
        for k in active:
            out[k] = caps[k]
        return out
    capped: set[int] = set()
    while True:
        free = [k for k in active if k not in capped]
        level = (magnitude - sum((caps[k] for k in capped), Fraction(0))) / sum(
            (weights[k] for k in free), Fraction(0)
        )
        newly = {k for k in free if level * weights[k] >= caps[k]}
        if not newly:
            break
        capped |= newly
    for k in active:
        out[k] = caps[k] if k in capped else level * weights[k]
    return out


def oracle(
    power: float, fleet: Sequence[Pair], exponent: int, band: float = 0.0
) -> dict[int, Fraction]:
    """The exact setpoints the spec asks for, for a fleet without exclusion minimums."""
    charging = power > 0
    items = [quantities(p, charging, band) for p in fleet]
    assert all(q.minimum <= 0 for q in items), "the oracle knows no minimums"
    if abs(power) <= 1e-9:
        return {p.battery_id: Fraction(0) for p in fleet}
    magnitudes = water_filling(
        abs(Fraction(power)),
        [exact_weight(q, exponent) for q in items],
        [Fraction(max(q.cap, 0)) for q in items],
    )
    sign = 1 if charging else -1
    return {p.battery_id: sign * x for p, x in zip(fleet, magnitudes, strict=True)}


def check_agrees(result: Distribution, power: float, expected: dict[int, Fraction]) -> None:
    """``result``'s setpoints are the oracle's ``expected`` to 1e-6 W, and so is what remains."""
    for bid, x in expected.items():
        assert abs(Fraction(result.setpoints[bid]) - x) <= TOLERANCE_W, (
            bid,
            result.setpoints[bid],
            float(x),
        )
    unplaced = Fraction(power) - sum(expected.values(), Fraction(0))
    assert abs(Fraction(result.remaining_w) - unplaced) <= TOLERANCE_W * len(expected)
