"""Water-filling: split a magnitude over the candidate pairs by weight (rules 3 to 5).

Theory of operation
-------------------
The candidates are the pairs that can take power (``w > 0``, ``u > 0``, ``m <= u``), in
battery-id order. :func:`split` places a magnitude ``M > 0`` over them, following
``spec/distribution.md``:

3. If the candidates' caps sum to at most ``M``, all run at their cap; the rest is
   ``remaining``.
4. Otherwise the split is proportional to weight (``x = M·w/Σw``) wherever nothing binds;
   caps that bind are filled to the cap and the overflow re-shared in proportion to weight
   (water-filling), so every pair that is not at a bound has the same ``x/w``.
5. A pair whose share falls below its minimum is dropped to ``0``, the smallest weight first,
   and the others re-filled — as long as the rest can still take ``M``. If dropping it would
   leave ``M`` unreachable, such pairs run at their minimum instead ("raised to minimum").
   If the choice so made drops some of a group of identical pairs (equal weight, minimum and
   cap) and runs the others, it is made again with each group dropped whole or not at all,
   and that fair choice wins if it places as much ("Fair choices under minimums").
   If the minimums of the pairs still running exceed ``M``, :mod:`.search` chooses which
   pairs run (rule 6).

"Nothing binds" is ``min(u/w) > λ > max(m/w)`` for the level ``λ = M/Σw``, checked first; the
water level only sorts pairs when a cap binds. Ties are broken by position, that is by id.
Running sums only *classify* pairs (capped, at minimum, free); the final level is recomputed
with ``math.fsum`` from that classification, so conservation holds to rounding however many
pairs were capped on the way, and a final guard keeps every setpoint inside its window even for
pairs within rounding of a breakpoint.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, chain, compress
from operator import ge, itemgetter, lt, truediv
from typing import Any, NamedTuple, TypeAlias

from distributord.core.distribution.rows import Allotment
from distributord.core.distribution.search import SearchBudget, _identical, _search

_MARGIN = 1e-12
"""Relative distance from a breakpoint within which the fast path defers to the exact one, so
rounding in ``λ·w`` can never step over a cap or under a minimum."""

_TINY_TOTAL_WEIGHT = 1e-100
"""Below this, weights are re-scaled before the level ``M/Σw`` is taken, so it stays finite."""

_Picker: TypeAlias = Callable[[Sequence[Any]], Sequence[Any]]
"""Selects the candidates' entries from a column (any element type)."""


def _pick(indices: Sequence[int]) -> _Picker:
    """``itemgetter`` that always returns a tuple (``itemgetter(k)`` returns the item)."""
    if len(indices) == 1:
        only = indices[0]
        return lambda column: (column[only],)
    return itemgetter(*indices)


def split(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    cap_ratio: Sequence[float],
    min_ratio: Sequence[float],
    budget: SearchBudget | None = None,
) -> tuple[float, list[float], list[Allotment]]:
    """Place ``target > 0`` over candidates: weights ``w``, minimums ``m``, caps ``u``.

    Candidates must have ``w > 0``, ``u > 0`` and ``m <= u``, come with ``u/w`` and ``m/w``,
    and be in id order (ties are broken by position).

    Returns:
        ``(placed, setpoints, reasons)``: ``placed == target`` whenever any allowed assignment
        reaches it (to rounding), else the largest reachable magnitude below it; setpoints
        are magnitudes, each ``0`` or within ``[m, u]``.
    """
    total_w = math.fsum(w)
    if total_w < _TINY_TOTAL_WEIGHT:
        w = [x / total_w for x in w]
        cap_ratio = list(map(truediv, u, w))
        min_ratio = list(map(truediv, m, w))
        total_w = math.fsum(w)
    level = target / total_w
    lowest_cap = min(cap_ratio)
    if (
        math.isfinite(level)
        and lowest_cap > level * (1.0 + _MARGIN)
        and max(min_ratio) < level * (1.0 - _MARGIN)
    ):
        # M·(w/Σw) rather than w·(M/Σw): a pair that takes everything gets exactly M.
        xs = [target * (x / total_w) for x in w]
        return _settle(target, m, u, xs, [Allotment.PROPORTIONAL] * len(w))
    total_cap = math.fsum(u)
    if total_cap <= target:
        return _settle(target, m, u, list(u), [Allotment.CAPPED] * len(w))
    _, xs, reasons = _split_binding(
        target, w, m, u, cap_ratio, min_ratio, total_w, lowest_cap, total_cap, budget
    )
    return _settle(target, m, u, xs, reasons)


def _split_binding(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    cap_ratio: Sequence[float],
    min_ratio: Sequence[float],
    total_w: float,
    lowest_cap: float,
    total_cap: float,
    budget: SearchBudget | None,
) -> tuple[float, list[float], list[Allotment]]:
    """Water-filling with caps, then the exclusion minimums (rules 4 to 6).

    Fair choices under minimums: the choice is first made pair by pair (rule 5, then the
    search of rule 6 if needed). If it drops some of a group of identical pairs and runs the
    others, it is made again with each group dropped whole or not at all; that choice wins if
    it is fair and places as much. Otherwise the first stands: a fleet whose choice splits no
    group is split as if fairness were not asked for.
    """
    level = _CapLevel(target, w, u, cap_ratio, total_w, lowest_cap)
    # Rule 5: the pairs below their minimum at the first level, smallest weight first (ties in
    # id order: the sort is stable). The level only rises as pairs are dropped, so a pair that
    # is not below its minimum at the first level never will be.
    start, capped = level.value, level.capped
    below = [k for k in compress(range(len(w)), m) if min_ratio[k] > start and not capped[k]]
    if not below:  # no minimum binds: the common case
        return _assemble(target, w, m, u, level.capped, [], [], level.next_cap_ratio())
    below.sort(key=w.__getitem__)
    searched: list[tuple[set[int], float, bool]] = []

    def choose() -> tuple[set[int], float, bool]:
        """Rule 6, searched once: it does not depend on what rule 5 dropped."""
        if not searched:
            searched.append(_search(target, w, m, u, budget))
        return searched[0]

    first, how = _minimums(target, w, m, u, level, below, min_ratio, total_cap, choose, False)
    # Rule 5 drops only pairs of `below`, and a pair identical to one of them is in it too.
    if how is None or not _splits_alike(first[1], w, m, u, below if how == "walk" else None):
        return first
    level = _CapLevel(target, w, u, cap_ratio, total_w, lowest_cap)
    fair, _ = _minimums(target, w, m, u, level, below, min_ratio, total_cap, choose, True)
    if fair[0] >= first[0] and not _splits_alike(fair[1], w, m, u, None):
        return fair
    return first


def _minimums(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    level: _CapLevel,
    below: Sequence[int],
    min_ratio: Sequence[float],
    total_cap: float,
    choose: Callable[[], tuple[set[int], float, bool]],
    together: bool,
) -> tuple[tuple[float, list[float], list[Allotment]], str | None]:
    """Rules 5 and 6 from the level of the caps: drop pairs below their minimum, or search.

    ``together``: identical pairs are dropped together or not at all.

    Returns:
        ``(placed, setpoints, reasons)``, and what left pairs with a minimum at 0: ``"walk"``
        (rule 5), ``"search"`` (rule 6), or None if none is.
    """
    n = len(w)
    dropped, stuck = level.drop_below_minimum(below, m, min_ratio, total_cap, together=together)
    how = "walk" if dropped else None
    if not stuck:
        return (
            _assemble(target, w, m, u, level.capped, [], dropped, level.next_cap_ratio()),
            how,
        )
    gone = set(dropped)
    members = [k for k in range(n) if k not in gone]
    if math.fsum(m[k] for k in members) <= target:
        lam = _clamp_level(target, w, m, u, members)
        return _classify(target, w, m, u, lam, dropped), how
    # Rule 6: the running pairs' minimums exceed the target. Choose afresh among all.
    return _chosen(target, w, m, u, choose()), "search"


def _splits_alike(
    xs: Sequence[float],
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    scope: Sequence[int] | None,
) -> bool:
    """Whether a pair with a minimum is at 0 beside an identical one (same w, m, u) that runs.

    Only pairs of ``scope`` are compared (None: all pairs with a minimum). Identical pairs
    have equal weights: without two equal weights there is nothing to compare, and a set of
    the weights says so at C speed.
    """
    pairs = list(compress(range(len(w)), m)) if scope is None else scope
    if len(pairs) < 2 or len(set(itemgetter(*pairs)(w))) == len(pairs):
        return False
    running: dict[tuple[float, float, float], bool] = {}
    for k in pairs:
        if running.setdefault((w[k], m[k], u[k]), xs[k] > 0.0) is not (xs[k] > 0.0):
            return True
    return False


def _chosen(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    choice: tuple[set[int], float, bool],
) -> tuple[float, list[float], list[Allotment]]:
    """Setpoints for the search's choice: the target over the chosen pairs, or all at caps."""
    chosen, reachable, cut_short = choice
    n = len(w)
    rejected = [k for k in range(n) if m[k] > 0.0 and k not in chosen]
    members = [k for k in range(n) if m[k] <= 0.0 or k in chosen]
    if reachable >= target:
        return _classify(target, w, m, u, _clamp_level(target, w, m, u, members), rejected)
    xs = [0.0] * n
    not_chosen = Allotment.SEARCH_BUDGET_ENDED if cut_short else Allotment.DROPPED_BELOW_MINIMUM
    reasons = [not_chosen] * n
    for k in members:
        xs[k] = u[k]
        reasons[k] = Allotment.CAPPED
    return math.fsum(xs), xs, reasons


class _CapLevel:
    """The water level ``λ`` for caps only, over a running set that only shrinks.

    In order of ``u/w``, a pair caps when its cap is at or below its share at the level the
    pairs before it leave; once one does not, none after it does. Dropping a pair raises the
    level, so capped pairs stay capped and the scan only moves forward: O(n log n) in all,
    however many pairs are dropped. The order is sorted only once the level reaches the
    smallest ratio. The running sums drift with rounding; they only classify (see
    :func:`_assemble`).
    """

    __slots__ = (
        "_exact_w",
        "_free_n",
        "_free_w",
        "_goal",
        "_lowest",
        "_order",
        "_pos",
        "_ratios",
        "_target",
        "_u",
        "_w",
        "capped",
        "running",
        "value",
    )

    def __init__(
        self,
        target: float,
        w: Sequence[float],
        u: Sequence[float],
        ratios: Sequence[float],
        total_w: float,
        lowest: float,
    ) -> None:
        n = len(w)
        self._w, self._u, self._ratios, self._lowest = w, u, ratios, lowest
        self._goal = self._target = target  # the whole target; what the free pairs take
        self._free_w, self._free_n = total_w, n
        self._exact_w = total_w  # _free_w as last added up from its terms
        self._order: list[int] = []
        self._pos = 0
        self.capped = [False] * n
        self.running = [True] * n
        level = self._rise(target / total_w, _WALK_STEPS)
        if self._order and self._pos < n and level >= ratios[self._order[self._pos]]:
            level = self._rise_by_bisection()
        self.value = level

    def drop_below_minimum(
        self,
        below: Sequence[int],
        m: Sequence[float],
        min_ratio: Sequence[float],
        total_cap: float,
        *,
        together: bool,
    ) -> tuple[list[int], bool]:
        """Rule 5: drop each pair of ``below`` (in order) still below its minimum.

        ``together``: pairs with identical ``(w, m, u)`` are dropped together or not at all, at
        the place of the first of them (dropping one of two identical pairs and running the
        other is unfair). A pair, or group, is dropped only if the others' caps can still take
        the whole target; the walk stops at the first one that cannot be ("stuck").

        Returns:
            The dropped pairs and whether the walk got stuck.
        """
        w, u, capped, running = self._w, self._u, self.capped, self.running
        goal, running_cap, level = self._goal, total_cap, self.value
        dropped: list[int] = []
        groups: Iterable[Sequence[int]] = _identical(below, w, m, u) if together else zip(below)
        for group in groups:
            k = group[0]
            if capped[k] or min_ratio[k] <= level:
                continue
            group_cap = math.fsum(u[j] for j in group) if together else u[k]
            if running_cap - group_cap < goal:
                self.value = level
                return dropped, True
            running_cap -= group_cap
            for j in group:
                dropped.append(j)
                running[j] = False
                self._free_w -= w[j]
                self._free_n -= 1
            if self._free_w < self._exact_w * _CANCELLED:
                self._free_w = self._exact_w = math.fsum(
                    w[j] for j in range(len(w)) if running[j] and not capped[j]
                )
            level = self._rise(self._free_level())
        self.value = level
        return dropped, False

    def next_cap_ratio(self) -> float:
        """The smallest ``u/w`` among running pairs that are not capped (``inf`` if none)."""
        if not self._order:
            return self._lowest
        running, order = self.running, self._order
        for pos in range(self._pos, len(order)):
            k = order[pos]
            if running[k] and not self.capped[k]:
                return self._ratios[k]
        return math.inf

    def _free_level(self) -> float:
        if self._free_n and self._free_w > 0.0:
            return self._target / self._free_w
        return math.inf

    def _rise(self, level: float, steps: int = -1) -> float:
        """Cap the running pairs whose ratio the level reaches, in ratio order.

        Stops after ``steps`` pairs have capped, if ``steps`` is not negative.
        """
        if level < self._lowest:
            return level
        if not self._order:
            self._order = sorted(range(len(self._w)), key=self._ratios.__getitem__)
        order, ratios, u, w = self._order, self._ratios, self._u, self._w
        running, capped = self.running, self.capped
        pos, end = self._pos, len(order)
        target, free_w, free_n = self._target, self._free_w, self._free_n
        floor = self._exact_w * _CANCELLED
        while pos < end and steps:
            k = order[pos]
            if running[k]:
                if ratios[k] > level:
                    break
                capped[k] = True
                target -= u[k]
                free_w -= w[k]
                free_n -= 1
                if free_w < floor:
                    free_w = math.fsum(w[j] for j in order[pos + 1 :] if running[j])
                    self._exact_w, floor = free_w, free_w * _CANCELLED
                level = target / free_w if free_n and free_w > 0.0 else math.inf
                steps -= 1
            pos += 1
        self._pos, self._target, self._free_w, self._free_n = pos, target, free_w, free_n
        return level

    def _rise_by_bisection(self) -> float:
        """Like :meth:`_rise`, for many pairs: binary search over prefix sums in ratio order.

        Only before any pair is dropped, so every pair from ``_pos`` on is running. Pair ``j``
        of the rest caps iff its ratio is at most the level the ``j`` before it leave; that is
        true up to some ``j`` and false after it. The weight the ``j`` leave is a suffix sum,
        added up from the far end: a sum of positive terms, never a difference that cancels.
        """
        rest = self._order[self._pos :]
        pick = _pick(rest)
        ratios = pick(self._ratios)
        caps = [0.0, *accumulate(pick(self._u))]
        left_w = [*accumulate(reversed(pick(self._w)))][::-1]
        left_w.append(0.0)
        target = self._target
        low, high = 0, len(rest)
        while low < high:
            mid = (low + high) // 2
            left = left_w[mid]
            if left > 0.0 and ratios[mid] * left <= target - caps[mid]:
                low = mid + 1
            else:
                high = mid
        capped = self.capped
        for k in rest[:low]:
            capped[k] = True
        self._pos += low
        self._target = target - caps[low]
        self._free_w = self._exact_w = left_w[low]
        self._free_n -= low
        return self._free_level()


_ROUNDING = 2.0**-40
"""A shortfall below this fraction of the target is rounding in the shares, not a bound."""

_CANCELLED = 2.0**-20
"""A weight sum kept up to date by subtracting terms carries a rounding error of about ``k·ε``
times the largest value it had since it was last added up from its terms. Once it falls below
this fraction of that value it is added up again (``math.fsum``), so its relative error stays
below ``k·ε·2^20``. Tracked only by differences, the weight left can come out as 0, or far too
large, when it is below the rounding noise of what was taken away: one battery a hair from its
SoC bound beside others."""

_WALK_STEPS = 64
"""Pairs the first water level caps one by one before it switches to a binary search: a Python
step costs about as much as 1/16 of a vectorised pass over a fleet of 1,000."""


def _clamp_level(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    members: Sequence[int],
) -> float:
    """The level ``λ`` with ``Σ clamp(λ·w, m, u) = target`` over ``members``.

    Requires ``Σm <= target <= Σu``. ``f(λ)`` is piecewise linear and non-decreasing, with
    breakpoints at ``m/w`` (a pair starts to follow ``λ``) and ``u/w`` (it stops at its cap);
    sweep them in order.
    """
    events: list[tuple[float, int, int]] = []
    for k in members:
        events.append((m[k] / w[k], 0, k))
        events.append((u[k] / w[k], 1, k))
    events.sort()
    constant, slope, largest = math.fsum(m[k] for k in members), 0.0, 0.0
    for i, (at, kind, k) in enumerate(events):
        if constant + slope * at >= target:
            break
        if kind == 0:
            constant -= m[k]
            slope += w[k]
            largest = max(largest, slope)
        else:
            constant += u[k]
            slope -= w[k]
            if slope < largest * _CANCELLED:
                # Rare: add up the weights of the pairs following λ now, from the events.
                following = dict.fromkeys(j for _, kind_, j in events[: i + 1] if kind_ == 0)
                for _, kind_, j in events[: i + 1]:
                    if kind_ == 1:
                        following.pop(j, None)
                slope = largest = math.fsum(w[j] for j in following)
    else:
        return math.inf
    before = events[i - 1][0] if i else 0.0
    if slope > 0.0:
        level = (target - constant) / slope
        if level >= before:
            return level
    # f already met the target (to rounding) at the breakpoint before this one: f is flat here,
    # or this stretch's line crosses the target before the stretch begins. That happens when
    # the crossing is within rounding of that breakpoint: fl(u/w) can be a hair below the
    # true u/w, f(fl(u/w)) round below the target, and the sweep pass the breakpoint; the line
    # of the next stretch, whose constant has taken the whole cap, then gives a level far
    # below it (0 for a 1 W cap beside a 1 W request: the pair was held at its minimum).
    # Any level within the stretch will do; the midpoint is clear of both ends, so no pair sits
    # on its own breakpoint when the setpoints are classified, and _assemble places the target
    # exactly over that classification. (Returning 0 here classified every pair as at its
    # minimum or free, and the free ones could not take what was left.)
    return before + (at - before) / 2.0


def _classify(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    lam: float,
    dropped: Sequence[int],
) -> tuple[float, list[float], list[Allotment]]:
    """Setpoints from an approximate level.

    A running pair whose share reaches its cap is capped, one below its minimum is raised to
    it, the others follow the level.
    """
    n = len(w)
    shares = [x * lam for x in w]
    high = list(map(ge, shares, u))
    low = list(compress(range(n), map(lt, shares, m)))
    if dropped:
        gone = set(dropped)
        for k in dropped:
            high[k] = False
        low = [k for k in low if k not in gone]
    return _assemble(target, w, m, u, high, low, list(dropped), 0.0)


def _assemble(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    high: list[bool],
    low: list[int],
    dropped: list[int],
    cap_guard: float,
) -> tuple[float, list[float], list[Allotment]]:
    """Setpoints from a classification, the level of the free pairs recomputed exactly.

    Pairs flagged in ``high`` run at their caps, ``low`` ones at their minimums, ``dropped``
    ones at 0, the rest ("free") at one level computed with ``math.fsum`` over exactly those
    pairs. ``cap_guard`` is the smallest ``u/w`` among free pairs, if known (else 0): when the
    level stays clear of it, no free pair can pass its cap by rounding and that check is
    skipped.
    """
    n = len(w)
    free_mask = list(map(operator.not_, high))
    for k in chain(low, dropped):
        free_mask[k] = False
    free = list(compress(range(n), free_mask))
    rest, free_w = 0.0, 1.0  # the free pairs share `rest` in proportion to w / free_w
    if free:
        # Never below 0: a classification off by rounding must not turn a share's sign.
        rest = max(0.0, target - math.fsum(chain(compress(u, high), [m[k] for k in low])))
        free_w = math.fsum(compress(w, free_mask))
    exact = rest / free_w
    # Start from the larger class and write the smaller one.
    if 2 * len(free) < n:
        xs, reasons = list(u), [Allotment.CAPPED] * n
        for k in free:
            xs[k] = rest * (w[k] / free_w)
            reasons[k] = Allotment.PROPORTIONAL
    else:
        xs, reasons = [rest * (x / free_w) for x in w], [Allotment.PROPORTIONAL] * n
        for k in compress(range(n), high):
            xs[k] = u[k]
            reasons[k] = Allotment.CAPPED
    for k in low:
        xs[k] = m[k]
        reasons[k] = Allotment.RAISED_TO_MINIMUM
    for k in dropped:
        xs[k] = 0.0
        reasons[k] = Allotment.DROPPED_BELOW_MINIMUM
    # A free pair within rounding of a breakpoint may sit a hair outside [m, u].
    if exact > cap_guard * (1.0 - _MARGIN):
        for k in free:
            if xs[k] > u[k]:
                xs[k] = u[k]
    for k in compress(range(n), m):
        if xs[k] < m[k] and reasons[k] is Allotment.PROPORTIONAL:
            xs[k] = m[k]
    return target, xs, reasons


def _settle(
    target: float,
    m: Sequence[float],
    u: Sequence[float],
    xs: list[float],
    reasons: list[Allotment],
) -> tuple[float, list[float], list[Allotment]]:
    """Make ``Σ xs <= target`` hold exactly, and say what the setpoints really add up to.

    Every path above places ``target`` to rounding; rounding can leave the sum a few ulps
    above it, and a pair raised to its minimum within rounding of it can add more. Whatever is
    over is taken back from the first pair with room for it above its minimum (a pair left with
    no room at all is dropped to 0). ``math.fsum`` of the setpoints and ``-target`` has the sign
    of the exact difference, so the test is exact, not within a tolerance. A shortfall of
    rounding size is first given to a proportional pair with room below its cap, so a request
    that can be met is met to the last ulp rather than reported short by 1e-13 W.

    Returns:
        ``(placed, xs, reasons)`` with ``placed`` the rounded ``Σ xs`` (``target`` plus the
        exactly rounded difference), never more than ``target``: the shortfall the caller
        reports is what was really not placed.
    """
    over = math.fsum([*xs, -target])  # the sign of the exact difference
    if over < -target * _ROUNDING:
        return target + over, xs, reasons  # short by more than rounding: placed < target
    if over < 0.0 and target + over < target:  # short by enough to show in the total
        k = next(
            (
                j
                for j, why in enumerate(reasons)
                if why is Allotment.PROPORTIONAL and xs[j] - over <= u[j]
            ),
            -1,
        )
        if k >= 0:
            xs[k] -= over
            over = math.fsum([*xs, -target])
    while over > 0.0:
        k = next((j for j, x in enumerate(xs) if x > 0.0 and x - m[j] >= over), -1)
        if k >= 0:
            lowered = xs[k] - over
            xs[k] = max(m[k], lowered if lowered < xs[k] else math.nextafter(xs[k], 0.0))
        else:
            n = len(xs)
            roomy = [j for j in range(n) if xs[j] > m[j] and xs[j] > 0.0]
            if roomy:  # no single pair has room for all of it: take all one has
                k = max(roomy, key=lambda j: xs[j] - m[j])
                xs[k] = m[k]
            else:  # everything running sits at its minimum: the smallest one stops
                k = min((j for j in range(n) if xs[j] > 0.0), key=xs.__getitem__)
                xs[k], reasons[k] = 0.0, Allotment.DROPPED_BELOW_MINIMUM
        over = math.fsum([*xs, -target])
    return target + over, xs, reasons


# --- weights beyond the float range -------------------------------------------------------

FAITHFUL_WEIGHT = 2.0**-900
"""The smallest weight the float arithmetic above is trusted with. Caps are at most 2^50 W
(PLAUSIBLE_LIMIT), so ``u/w`` stays finite for weights down to 2^-970; below 2^-1022 a weight
loses precision, and the product ``capacity · a^e`` of subnormal inputs underflows to 0. A
fleet with a candidate below this is split by :func:`split_in_tiers`."""

EXPONENT_HORIZON = 2.0**64
"""Larger exponents are computed as this one, whose split is already their limit. Two different
available SoCs differ by a factor of at least ``1 + 2^-53``; raised to 2^64 that is more than
2^2900, beyond what capacities (2^1124 from a subnormal to PLAUSIBLE_LIMIT) and a tier (2^900)
can make up, so every SoC is a tier of its own, as for any larger exponent. Capped, ``e ·
log2(a)`` stays finite, and exact (the cap is a power of two)."""

_TIER_SPAN = 900.0
"""A tier holds the weights within 2^-900 of its heaviest: after scaling the heaviest to about
1, every weight of the tier is at least :data:`FAITHFUL_WEIGHT`."""

_SQUASHED = (902.0, 60.0)
"""For the choice of which pairs run, a weight lighter than 2^-900 of the heaviest is squashed,
order kept, into ``(2^-962, 2^-902]``: positive, ``u/w`` finite, and below every weight of the
heaviest tier."""

_DIRECT_POWER = 1000.0
"""Up to this exponent a ratio of mantissas, in (1/2, 2), raised to it stays within 2^±1000 and
is computed as a power (exact to rounding); beyond it, through ``log2``."""

_NORMAL = 2.0**-1000
"""A ratio of available SoCs at least this large is a normal float, and its ``log2`` exact to
rounding."""


class _Weights(NamedTuple):
    """Weights ``capacity · (a / max a)^e`` kept apart so that none under- or overflows.

    Weight ``k`` is ``mantissa[k] · 2^(scale[k] + soc_part[k])``, with ``mantissa`` in
    ``[1/2, 1)``, ``scale`` the capacity's binary exponent and ``soc_part = e · log2(a/max a)``
    (the same float for equal SoCs, so pairs with equal SoCs compare by capacity exactly).
    ``key`` is the weight's ``log2``, for ordering.
    """

    mantissa: list[float]
    scale: list[float]
    soc_part: list[float]
    key: list[float]


def _log_weights(
    capacities: Sequence[float], available: Sequence[float], exponent: float
) -> _Weights:
    """The candidates' weights as :class:`_Weights`, for any exponent (capped at the horizon)."""
    e = min(exponent, EXPONENT_HORIZON)
    top_mantissa, top_exp = math.frexp(max(available))
    weights = _Weights([], [], [], [])
    for c, a in zip(capacities, available, strict=True):
        c_mantissa, c_exp = math.frexp(c)
        a_mantissa, a_exp = math.frexp(a)
        ratio = a_mantissa / top_mantissa  # in (1/2, 2): unlike a / max(a) it cannot underflow
        shift = a_exp - top_exp
        if e <= _DIRECT_POWER:
            mantissa, carry = math.frexp(c_mantissa * ratio**e)
            soc_part = e * shift
        else:
            relative = math.ldexp(ratio, shift)  # a / max(a), rounded once
            log_ratio = math.log2(relative) if relative >= _NORMAL else math.log2(ratio) + shift
            mantissa, carry = c_mantissa, 0
            soc_part = e * log_ratio
        scale = float(c_exp + carry)
        weights.mantissa.append(mantissa)
        weights.scale.append(scale)
        weights.soc_part.append(soc_part)
        weights.key.append(soc_part + scale + math.log2(mantissa))
    return weights


def _relative(weights: _Weights, k: int, top: int) -> float:
    """Weight ``k`` divided by weight ``top``'s power of two: about 1 for ``top`` itself.

    The power of two is clamped to ``[-_TIER_SPAN - 2, 2]``, which matters only where rounding
    at an absurd exponent disagrees with the tiers; the result is never 0 nor infinite.
    """
    power = (weights.soc_part[k] - weights.soc_part[top]) + (weights.scale[k] - weights.scale[top])
    power = min(max(power, -_TIER_SPAN - 2.0), 2.0)
    if power.is_integer():  # whole exponents: exact
        return math.ldexp(weights.mantissa[k], int(power))
    return weights.mantissa[k] * math.exp2(power)


def _tiers(key: Sequence[float]) -> list[list[int]]:
    """Candidates cut into tiers, heaviest first, each within 2^-900 of its heaviest.

    A tier always holds its heaviest, so the cut always advances (it once compared a key with
    itself minus 900, which rounds to the key itself beyond 2^63, and stood still forever).
    Within a tier, in id order.
    """
    order = sorted(range(len(key)), key=lambda k: -key[k])  # stable: ties in id order
    tiers: list[list[int]] = []
    start = 0
    while start < len(order):
        top = key[order[start]]
        end = start + 1
        while end < len(order) and top - key[order[end]] < _TIER_SPAN:
            end += 1
        tiers.append(sorted(order[start:end]))
        start = end
    return tiers


def split_in_tiers(
    target: float,
    capacities: Sequence[float],
    available: Sequence[float],
    exponent: float,
    m: Sequence[float],
    u: Sequence[float],
    budget: SearchBudget | None = None,
) -> tuple[float, list[float], list[Allotment]]:
    """:func:`split` for weights that span more than floats can hold.

    Subnormal inputs, or a steep exponent: each weight is kept as a mantissa and powers of two
    (:func:`_log_weights`), and the candidates are cut into tiers, heaviest first, each within
    2^-900 of its heaviest (:func:`_tiers`). A lighter tier's share beside a heavier one is
    below 2^-900 of it, so it takes power only once every pair of the heavier tiers is capped.

    Which pairs run is one choice over the whole fleet, not tier by tier: the exclusion
    minimums can make a lighter tier's pair the only one that meets the request (a heavier pair
    with a 100 W cap and a lighter one with a 300 W minimum, +300 W). Chosen tier by tier, the
    heavier placed 100 W and the lighter could not take the 200 W left. So:

    1. :func:`split` over all candidates, with the lighter tiers' weights squashed (in order)
       into the float range, chooses which pairs run and how much they place;
    2. that much is placed over the pairs that run, in tiers cut where neighbouring weights
       are 2^1200 apart (:func:`_level_tiers`), heaviest first: heavier tiers at their caps,
       lighter ones at their minimums, and in between one tier at its own level (with its true
       weights, :func:`_classify_in_log`) that takes what is left. The tiers of step 1, cut
       2^900 below each tier's heaviest, do not serve here: a pair just inside one and a pair
       just outside it can be 10 times apart in weight and share one level.
    """
    weights = _log_weights(capacities, available, exponent)
    tiers = _tiers(weights.key)
    top = max(tiers[0], key=weights.key.__getitem__)
    in_first = dict.fromkeys(tiers[0])
    span, squash = _SQUASHED
    joint = []
    for k in range(len(capacities)):
        if k in in_first:
            joint.append(_relative(weights, k, top))
        else:
            beyond = max(weights.key[top] - weights.key[k] - _TIER_SPAN, 0.0)
            joint.append(math.exp2(-span - squash * (beyond / (beyond + _TIER_SPAN))))
    placed, xs, reasons = split(
        target, joint, m, u, list(map(truediv, u, joint)), list(map(truediv, m, joint)), budget
    )
    if len(tiers) == 1:
        return placed, xs, reasons
    members = [k for k in range(len(xs)) if xs[k] > 0.0 or m[k] <= 0.0]  # the pairs that run
    levels = _level_tiers(weights, members)
    lighter_m: list[float] = [0.0] * (len(levels) + 1)
    for t in range(len(levels) - 1, -1, -1):
        lighter_m[t] = lighter_m[t + 1] + math.fsum(m[k] for k in levels[t])
    heavier_u: list[float] = []
    out, why = [0.0] * len(xs), list(reasons)
    for t, tier in enumerate(levels):
        need = math.fsum([placed, *(-x for x in heavier_u), -lighter_m[t + 1]])
        caps = [u[k] for k in tier]
        if need >= math.fsum(caps):
            for k in tier:
                out[k], why[k] = u[k], Allotment.CAPPED
            heavier_u.extend(caps)
            continue
        high, low, followers = _classify_in_log(need, weights, m, u, tier)
        # The followers share what the capped and raised pairs leave, by their true weights
        # relative to the heaviest of them (far lighter ones underflow to 0: their shares are
        # below 2^-1000 W).
        w = [1.0] * len(tier)
        if followers:
            top = max(followers, key=_by_weight(weights))
            position = {k: i for i, k in enumerate(tier)}
            for k in followers:  # at most 1 but for rounding: the clamp only keeps exp2 finite
                power = min(_log_ratio(weights, k, top), 2.0)
                w[position[k]] = weights.mantissa[k] * math.exp2(power)
        is_low = set(low)
        _, tier_xs, tier_why = _assemble(
            need,
            w,
            [m[k] for k in tier],
            caps,
            [high[k] for k in tier],
            [i for i, k in enumerate(tier) if k in is_low],
            [],
            0.0,
        )
        for k, x, reason in zip(tier, tier_xs, tier_why, strict=True):
            out[k], why[k] = x, reason
        for lighter in levels[t + 1 :]:
            for k in lighter:  # a share below 2^-1100 of this tier's: its minimum, or nothing
                out[k] = m[k]
                why[k] = Allotment.RAISED_TO_MINIMUM if m[k] > 0.0 else Allotment.PROPORTIONAL
        break
    return _settle(target, m, u, out, why)


_LEVEL_GAP = 1200.0
"""Pairs whose weights are more than 2^1200 apart never follow one level together: following,
a pair's share is within its window ``[m, u]``, and ``u/m`` is below 2^1124 (caps are at most
2^50 W, minimums at least 2^-1074 W); a pair without a minimum whose share is 2^-1200 of
another's (at most 2^-1150 W) takes 0, as it would at its minimum."""


def _log_gap(weights: _Weights, j: int, k: int) -> float:
    """``log2(w_j / w_k)``: exact for pairs with equal SoCs, however steep the exponent.

    Not a difference of :attr:`_Weights.key`: at an exponent near 2^64 a key is about 2^64, in
    steps of 4096, and pairs with equal SoCs but capacities 2^1000 apart have equal keys.
    """
    mantissas = math.log2(weights.mantissa[j]) - math.log2(weights.mantissa[k])
    return _log_ratio(weights, j, k) + mantissas


def _by_weight(weights: _Weights) -> Callable[[int], Any]:
    """A sort key ordering pairs by weight, lightest first, compared by :func:`_log_gap`."""

    def compare(j: int, k: int) -> int:
        gap = _log_gap(weights, j, k)
        return (gap > 0.0) - (gap < 0.0)

    return functools.cmp_to_key(compare)


def _level_tiers(weights: _Weights, members: Sequence[int]) -> list[list[int]]:
    """``members`` cut into tiers, heaviest first, where their weights are 2^1200 apart.

    Unlike :func:`_tiers`, which cuts at a fixed distance below each tier's heaviest, the cut is
    at a gap between neighbours: while a pair of a lighter tier follows the level, every pair of
    the heavier ones is capped, and while a pair of a heavier tier follows, every lighter one is
    at its minimum (:data:`_LEVEL_GAP`). Within a tier, in id order.
    """
    order = sorted(sorted(members), key=_by_weight(weights), reverse=True)  # ties: id order
    tiers: list[list[int]] = []
    for position, k in enumerate(order):
        if not position or _log_gap(weights, order[position - 1], k) > _LEVEL_GAP:
            tiers.append([])
        tiers[-1].append(k)
    return [sorted(tier) for tier in tiers]


def _log_ratio(weights: _Weights, k: int, ref: int) -> float:
    """``log2`` of weight ``k`` over weight ``ref``'s power of two, differences first.

    The SoC parts and scales are subtracted before they are added, so pairs with equal SoCs
    compare by capacity exactly, however large the SoC part.
    """
    return (weights.soc_part[k] - weights.soc_part[ref]) + (weights.scale[k] - weights.scale[ref])


def _classify_in_log(
    need: float,
    weights: _Weights,
    m: Sequence[float],
    u: Sequence[float],
    members: Sequence[int],
) -> tuple[list[bool], list[int], list[int]]:
    """Which of ``members`` are capped, held at their minimum, or follow the level.

    The level ``λ`` with ``Σ clamp(λ·w, m, u) = need``, as :func:`_clamp_level` finds it, for
    weights beyond the float range: in ``log2``, relative to the heaviest member. Pair ``k``
    follows ``λ`` between its breakpoints ``log2(m/w)`` and ``log2(u/w)``; ``f(L)``, the total
    at ``L = log2 λ``, is non-decreasing, so a binary search over the sorted breakpoints finds
    the stretch holding the level, and every pair is classified at that stretch's midpoint.

    The members are one tier of :func:`_level_tiers`: their weights may span more than the
    float range, but no gap between neighbours exceeds 2^1200, so every ``log2`` here is a
    moderate number, exact to far below a breakpoint's width. (Placed in the tiers of
    :func:`_tiers` instead, the lighter of two pairs 10 times apart in weight, either side of a
    cut, got nothing until the heavier was capped.)

    Returns:
        ``(high, low, followers)``: a mask of the capped pairs (over all pairs), the pairs at
        their minimum, and the pairs that follow the level.
    """
    n = len(m)
    high = [False] * n
    if need >= math.fsum(u[k] for k in members):
        for k in members:
            high[k] = True
        return high, [], []
    ref = max(members, key=_by_weight(weights))
    log_w = {k: _log_ratio(weights, k, ref) + math.log2(weights.mantissa[k]) for k in members}
    lo = {k: math.log2(m[k]) - log_w[k] if m[k] > 0.0 else -math.inf for k in members}
    hi = {k: math.log2(u[k]) - log_w[k] for k in members}

    def total(level: float) -> float:
        return math.fsum(
            m[k] if level < lo[k] else u[k] if level >= hi[k] else math.exp2(level + log_w[k])
            for k in members
        )

    points = sorted(x for x in chain(lo.values(), hi.values()) if math.isfinite(x))
    if total(points[0]) > need:
        level = points[0] - 1.0
    elif total(points[-1]) <= need:
        level = points[-1] + 1.0
    else:  # the last breakpoint at which the total is at most `need`, and the next one
        first, last = 0, len(points) - 1  # total(points[first]) <= need < total(points[last])
        while last - first > 1:
            mid = (first + last) // 2
            if total(points[mid]) <= need:
                first = mid
            else:
                last = mid
        level = points[first] + (points[last] - points[first]) / 2.0
    low, followers = [], []
    for k in members:
        if level >= hi[k]:
            high[k] = True
        elif level < lo[k]:
            low.append(k)
        else:
            followers.append(k)
    return high, low, followers
