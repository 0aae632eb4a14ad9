"""The merge inside a bucket: what each proposal is granted, the bucket's target, each bounds.

Theory of operation
-------------------
A *bucket* is the proposals of several programs on the exact same battery set
(``spec/arbitration.md``). This module merges them, given the aggregate bounds of the batteries
the bucket holds (``spec/distribution.md``: inclusion ``[L, U]``, exclusion ``(EL, EU)``). It
is pure: floats in, frozen values out, no clock, no IO, no exception for any input.

The walk, over the bids ordered by priority (high first), then age (older first)::

    window := [L, U], target := 0
    for each bid p:
        B := window ∩ own_p          (own_p: p's bounds, a missing one ±∞, within its limits)
             if empty: the single edge of window nearest to own_p   (bounds_outside_window)
        "add":      with a power: x_p := clamp(power_p, B), target += x_p, window := B − x_p
                    without:      x_p := 0, window := B
        "override": the first bid with a power sets target := x_p := clamp(power_p, B);
                    every bid (that one too) narrows: window := B; the others get x_p := 0
    then: 0 < |target| < the aggregate minimum in target's direction ⇒ target := 0

Readings of the spec where it leaves room (each is a decision, kept in one place):

* **Limits before bounds.** ``B := window ∩ [lower, upper] ∩ limits``; when the program's
  bounds do not meet its own limits at all, its bounds are first clamped into its limits
  (``bounds_outside_limits``), so "the edge of the window nearest to the proposal's bounds" is
  well defined: the operator's limits win over what the program asked.
* **A forced grant.** When the window a bid sees does not hold 0 (a higher bid's bounds exclude
  it), the nearest edge can be *further* from 0 than the bid asked, or beyond its limits: the
  higher priority's bounds demand that power, and it is counted as this bid's grant
  (``bounds_outside_window`` and ``limited_by`` say so). Whenever the window holds 0, a grant
  lies between 0 and what was asked, and inside the bid's limits.
* **below_minimum** changes the target, not the grants: each bid with a power keeps its
  ``granted_w`` from the walk and carries the reason, as the result does.
* **limited_by** names every bid before this one in the order (higher priority, or the same
  priority and older) that moved an edge of the window inwards.
* **What a program may still ask** (:meth:`Merge.headroom`) is the window seen by the first bid
  of that priority or lower, i.e. the walk over strictly higher priorities only: one walk serves
  the grants and every program's bounds.

Exactness: every grant is a clamp (exact) into ``B`` (exact: it is made of comparisons), so a
grant is always inside the window it saw. Shifting the window and summing the target round (a
few ulps: four grants that fit 100 W exactly can sum to 100.00000000000001 W); the final target
is clamped into ``[L, U]`` and only then compared with the exclusion zone, so it is never
outside ``[L, U]`` nor strictly inside ``(EL, EU)``, whatever the rounding. On a grid where the
sums are exact (quarter watts below a gigawatt) the walk is exact.

Inputs that cannot be merged are reasons, not exceptions: unknown (NaN) or infinite aggregate
bounds give a closed window and target 0 (``unknown_bounds``); a bid with a NaN or infinite
power, NaN or inverted bounds, or NaN or negative limits is left out of the walk
(``invalid_bid``) and neither narrows nor is granted; a bucket without bids has target 0
(``no_bids``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from operator import attrgetter

import attrs

from distributord.core.model import PowerBounds


class Mode(enum.StrEnum):
    """How the powers of a bucket's bids combine (``[arbitration] merge``)."""

    ADD = "add"
    """Every bid adds its grant; the window shifts by what was granted (the default)."""

    OVERRIDE = "override"
    """The highest bid with a power sets the target; the others only narrow."""


class Reason(enum.StrEnum):
    """Why a bid got what it got, or why the target is what it is."""

    BOUNDS_OUTSIDE_WINDOW = "bounds_outside_window"
    """The bid's bounds miss the window it saw: it got the window's nearest edge."""

    BOUNDS_OUTSIDE_LIMITS = "bounds_outside_limits"
    """The bid's bounds miss its program's limits: they were clamped into them."""

    CLAMPED = "clamped"
    """The bid got another power than it asked for (the nearest one in ``B``)."""

    OVERRIDDEN = "overridden"
    """``override``: a bid before it already set the target; it only narrows."""

    WINDOW_CLOSED = "window_closed"
    """The window it saw was a single point (equal edges): nothing else could be granted."""

    BELOW_MINIMUM = "below_minimum"
    """The target was non-zero but below the batteries' smallest power in its direction: 0 W."""

    INVALID_BID = "invalid_bid"
    """NaN or infinite power, NaN or inverted bounds, NaN or negative limits: left out."""

    UNKNOWN_BOUNDS = "unknown_bounds"
    """The bucket's aggregate bounds are unknown or not finite: nothing can be granted."""

    NO_BIDS = "no_bids"
    """The bucket has no bids: 0 W."""


@attrs.frozen(kw_only=True)
class Bid:
    """One proposal as the merge sees it.

    Attributes:
        program: The program's name.
        priority: Its priority (higher wins).
        sequence: Arrival order among the bucket's proposals: smaller is older.
        power_w: The power it wants for the set, or ``None`` (bounds only: a limiter).
        lower_w: The lowest power it allows every lower bid, or ``None`` (−∞).
        upper_w: The highest power it allows every lower bid, or ``None`` (+∞).
        max_charge_w: The program's operator limit on charging (``inf``: none).
        max_discharge_w: The program's operator limit on discharging, a magnitude.
    """

    program: str
    priority: int
    sequence: int
    power_w: float | None = None
    lower_w: float | None = None
    upper_w: float | None = None
    max_charge_w: float = math.inf
    max_discharge_w: float = math.inf

    @property
    def order(self) -> tuple[int, int, str]:
        """The merge's order: priority high first, then older first (then by name)."""
        return (-self.priority, self.sequence, self.program)


@attrs.frozen(kw_only=True)
class Window:
    """A closed interval of power, W (``lower_w <= upper_w``)."""

    lower_w: float
    upper_w: float


@attrs.frozen(kw_only=True)
class Limiter:
    """A bid that narrowed the window before another one saw it."""

    program: str
    priority: int


@attrs.frozen(kw_only=True)
class Grant:
    """What one bid got, and why.

    Attributes:
        bid: The bid.
        window: The window it saw (before step 1).
        bounds: ``B``: the window within its bounds and limits (or the nearest edge).
        granted_w: ``x_p``: its share of the target (0 for a limiter, an overridden or an
            invalid bid).
        reasons: Why (see :class:`Reason`).
        limited_by: The bids before it that narrowed the window, in merge order.
    """

    bid: Bid
    window: Window
    bounds: Window
    granted_w: float
    reasons: tuple[Reason, ...]
    limited_by: tuple[Limiter, ...]


@attrs.frozen(kw_only=True)
class Headroom:
    """What a program at some priority may still ask of a bucket.

    Attributes:
        priority: The priority it was worked out for.
        inclusion_lower_w: The lowest power it may ask.
        exclusion_lower_w: The bucket's exclusion zone, lower edge.
        exclusion_upper_w: The bucket's exclusion zone, upper edge.
        inclusion_upper_w: The highest power it may ask.
        limited_by: The higher bids that narrowed the window.
        reasons: ``unknown_bounds`` when nothing can be asked for want of bounds.
    """

    priority: int
    inclusion_lower_w: float
    exclusion_lower_w: float
    exclusion_upper_w: float
    inclusion_upper_w: float
    limited_by: tuple[Limiter, ...]
    reasons: tuple[Reason, ...]


@attrs.frozen(kw_only=True)
class Merge:
    """The merge of one bucket.

    Attributes:
        mode: How the powers combined.
        bounds: The bucket's aggregate bounds it was made with.
        target_w: The power for the bucket's held batteries.
        grants: One per bid, in merge order.
        window: The window after the last bid (what a priority below all bids may ask).
        limited_by: Every bid that narrowed the window, in merge order.
        reasons: Why the target is what it is (``no_bids``, ``below_minimum``,
            ``unknown_bounds``).
    """

    mode: Mode
    bounds: PowerBounds
    target_w: float
    grants: tuple[Grant, ...]
    window: Window
    limited_by: tuple[Limiter, ...]
    reasons: tuple[Reason, ...]

    def headroom(self, priority: int) -> Headroom:
        """What a program at ``priority`` may still ask of the bucket.

        The walk over strictly higher priorities only, then the window at that point, with the
        bucket's exclusion zone: the window the first bid at ``priority`` or lower saw (the
        final window when there is none).
        """
        window, limited_by = self.window, self.limited_by
        for grant in self.grants:
            if grant.bid.priority <= priority:
                window, limited_by = grant.window, grant.limited_by
                break
        known = Reason.UNKNOWN_BOUNDS not in self.reasons
        return Headroom(
            priority=priority,
            inclusion_lower_w=window.lower_w,
            exclusion_lower_w=self.bounds.exclusion_lower if known else 0.0,
            exclusion_upper_w=self.bounds.exclusion_upper if known else 0.0,
            inclusion_upper_w=window.upper_w,
            limited_by=limited_by,
            reasons=() if known else (Reason.UNKNOWN_BOUNDS,),
        )


def _valid(bid: Bid) -> bool:
    power, lower, upper = bid.power_w, bid.lower_w, bid.upper_w
    if power is not None and not math.isfinite(power):
        return False
    if lower is not None and (math.isnan(lower) or lower == math.inf):
        return False
    if upper is not None and (math.isnan(upper) or upper == -math.inf):
        return False
    if lower is not None and upper is not None and lower > upper:
        return False
    # ``not x >= 0`` is also true for NaN.
    return bid.max_charge_w >= 0.0 and bid.max_discharge_w >= 0.0


def _clamp(value: float, lower: float, upper: float) -> float:
    return lower if value < lower else upper if value > upper else value


def merge(bounds: PowerBounds, bids: Iterable[Bid], mode: Mode = Mode.ADD) -> Merge:
    """Merge a bucket's bids over its aggregate ``bounds`` (``spec/arbitration.md``).

    Args:
        bounds: The aggregate bounds of the batteries the bucket holds.
        bids: Its proposals, in any order (they are sorted by :attr:`Bid.order`).
        mode: ``add`` or ``override``.

    Returns:
        The target, one :class:`Grant` per bid in merge order, and the final window.
    """
    ordered = sorted(bids, key=attrgetter("order"))
    known = all(
        math.isfinite(v)
        for v in (
            bounds.inclusion_lower,
            bounds.exclusion_lower,
            bounds.exclusion_upper,
            bounds.inclusion_upper,
        )
    )
    low, high = (bounds.inclusion_lower, bounds.inclusion_upper) if known else (0.0, 0.0)
    w_low, w_high = low, high
    target = 0.0
    powered = False  # override: a bid with a power has set the target
    limited_by: tuple[Limiter, ...] = ()  # shared by the grants until the next narrowing
    grants: list[Grant] = []
    for bid in ordered:
        seen = Window(lower_w=w_low, upper_w=w_high)
        reasons: list[Reason] = []
        if not known:
            reasons.append(Reason.UNKNOWN_BOUNDS)
        if not _valid(bid):
            reasons.append(Reason.INVALID_BID)
            grants.append(
                Grant(
                    bid=bid,
                    window=seen,
                    bounds=seen,
                    granted_w=0.0,
                    reasons=tuple(reasons),
                    limited_by=limited_by,
                )
            )
            continue
        if w_low == w_high:
            reasons.append(Reason.WINDOW_CLOSED)
        # The bid's own bounds, within its limits.
        limit_low, limit_high = -bid.max_discharge_w, bid.max_charge_w
        own_low = -math.inf if bid.lower_w is None else bid.lower_w
        own_high = math.inf if bid.upper_w is None else bid.upper_w
        if own_low > limit_high or own_high < limit_low:
            reasons.append(Reason.BOUNDS_OUTSIDE_LIMITS)
        own_low = _clamp(own_low, limit_low, limit_high)
        own_high = _clamp(own_high, limit_low, limit_high)
        # B: the window within them, or the window's edge nearest to them.
        b_low, b_high = max(w_low, own_low), min(w_high, own_high)
        if b_low > b_high:
            reasons.append(Reason.BOUNDS_OUTSIDE_WINDOW)
            b_low = b_high = w_high if own_low > w_high else w_low
        granted = 0.0
        if bid.power_w is not None:
            if mode is Mode.OVERRIDE and powered:
                reasons.append(Reason.OVERRIDDEN)
            else:
                granted = _clamp(bid.power_w, b_low, b_high)
                if granted != bid.power_w:
                    reasons.append(Reason.CLAMPED)
        if mode is Mode.ADD and bid.power_w is not None:
            target += granted
            new_low, new_high = b_low - granted, b_high - granted
        else:
            if bid.power_w is not None and not powered:
                target = granted
            new_low, new_high = b_low, b_high
        powered = powered or bid.power_w is not None
        grants.append(
            Grant(
                bid=bid,
                window=seen,
                bounds=Window(lower_w=b_low, upper_w=b_high),
                granted_w=granted,
                reasons=tuple(reasons),
                limited_by=limited_by,
            )
        )
        if new_low > w_low or new_high < w_high:
            limited_by = (*limited_by, Limiter(program=bid.program, priority=bid.priority))
        w_low, w_high = new_low, new_high
    # The sum may have rounded outside [L, U]: clamp, then apply the minimum (towards 0 only).
    target = _clamp(target, low, high)
    result_reasons: list[Reason] = []
    if not known:
        result_reasons.append(Reason.UNKNOWN_BOUNDS)
    if not ordered:
        result_reasons.append(Reason.NO_BIDS)
    if bounds.exclusion_lower < target < bounds.exclusion_upper and target != 0.0:
        target = 0.0
        result_reasons.append(Reason.BELOW_MINIMUM)
        grants = [
            attrs.evolve(g, reasons=(*g.reasons, Reason.BELOW_MINIMUM))
            if g.bid.power_w is not None and Reason.INVALID_BID not in g.reasons
            else g
            for g in grants
        ]
    return Merge(
        mode=mode,
        bounds=bounds,
        target_w=target + 0.0,  # never -0.0
        grants=tuple(grants),
        window=Window(lower_w=w_low, upper_w=w_high),
        limited_by=limited_by,
        reasons=tuple(result_reasons),
    )
