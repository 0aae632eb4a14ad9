"""The exact search over which pairs run when their minimums cannot all be met (rule 6).

Theory of operation
-------------------
When the exclusion minimums of the pairs still running exceed the request's magnitude ``M``,
water-filling cannot satisfy them all, and a choice is needed: meet ``M`` exactly if any
choice can, else deliver the largest magnitude below ``M``, keeping the largest weights.
Among choices that place the same power a fair one wins ("Fair choices under minimums"):
identical pairs all run or all stop, so they get identical setpoints. The search chooses pair
by pair first; if its choice runs some of a group of identical pairs and not the others, it
chooses again among whole groups, and that choice wins if it places as much. In general this
is subset-sum, so the search stops when its budget ends and then uses the best choice it
found; it only runs for fleets whose allowed windows ``[m, u]`` are narrow compared with the
request. The search only chooses; :mod:`.waterfill` then places the power over the chosen
pairs.

The budget is time (``distribution.search_budget_ms``, :class:`SearchBudget`), read from a clock
the caller passes in: the core reads no clock of its own. Without one (tests, benchmarks) the
search counts steps instead (:data:`SEARCH_STEPS`). With identical pairs in the fleet, the
pair-by-pair search has half the budget and the search among groups what is left. When the
budget ends the search before it finds an exact choice, it keeps the best choice found, and
the pairs it did not choose say so (``Allotment.SEARCH_BUDGET_ENDED``). Exact subset sums are
NP-hard; for fleets of fixed-power inverters (``m = u``) beyond a few dozen pairs the budget
can end the search a few watts short of a reachable request (``python -m bench.distribution
--fixed-power`` measures how far).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import ClassVar

import attrs

from distributord.core.values import is_number

DEFAULT_SEARCH_BUDGET_S = 0.002
"""2 ms: a few thousand search steps, well inside any request's deadline (operations.md)."""

SEARCH_STEPS = 20_000
"""Steps the search may take when no clock is given (about 20 ms in the worst case)."""

_CLOCK_EVERY = 64
"""Steps between readings of the clock: a step costs about a microsecond, a reading 0.1."""


def _positive_seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (is_number(value) and 0.0 < value <= 1.0):
        raise ValueError(f"{attribute.name} must be a number of seconds in (0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class SearchBudget:
    """How long the search over exclusion minimums may take, on the caller's clock.

    Attributes:
        clock: A monotonic clock in seconds (the daemon passes ``time.perf_counter``).
        seconds: The budget (``distribution.search_budget_ms`` / 1000).
    """

    clock: Callable[[], float]
    seconds: float = attrs.field(default=DEFAULT_SEARCH_BUDGET_S, validator=_positive_seconds)


def _search(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    budget: SearchBudget | None = None,
) -> tuple[set[int], float, bool]:
    """Choose which pairs with a minimum run (rule 6): exact within the budget, fair first.

    Pair by pair first (:func:`_search_pairs`), as if no two pairs were alike. If that choice
    runs some of a group of identical pairs and not the others, :func:`_search_fair` looks
    for a choice that runs each group whole or not at all, and that one wins if it places as
    much ("Fair choices under minimums"). With identical pairs in the fleet the first search
    has half the budget, the second what is left.

    Returns:
        The chosen pairs with a minimum, the largest magnitude up to ``target`` they reach, and
        whether the budget ended the search first.
    """
    allowance = _Allowance(budget)
    items = sorted((k for k in range(len(w)) if m[k] > 0.0), key=lambda k: -w[k])
    groups: list[list[int]] = []
    # Identical pairs have equal weights: a set of the weights rules them out at C speed.
    if len(items) > 1 and len(set(itemgetter(*items)(w))) < len(items):
        groups = _identical(items, w, m, u)
    alike = 0 < len(groups) < len(items)
    by_pair = _search_pairs(target, w, m, u, items, allowance, 0.5 if alike else 1.0)
    if not alike or not _splits(by_pair[0], groups):
        return by_pair
    fair = _search_fair(target, w, m, u, items, groups, allowance)
    if fair[1] < by_pair[1]:
        return by_pair
    # As much, fairly. If neither meets the target, whether the budget ended a search before
    # it could rule out more still decides the reasons.
    return fair[0], fair[1], fair[1] < target and (fair[2] or by_pair[2])


def _splits(chosen: set[int], groups: Sequence[Sequence[int]]) -> bool:
    """Whether ``chosen`` holds some pairs of a group but not all of them."""
    return any(len(group) > 1 and len({k in chosen for k in group}) > 1 for group in groups)


class _Allowance:
    """What is left of one request's search budget, shared by the searches made for it.

    The clock is first read when a search starts. Without a clock the budget is
    :data:`SEARCH_STEPS` steps in all.
    """

    __slots__ = ("_clock", "_deadline", "_seconds", "_steps")

    def __init__(self, budget: SearchBudget | None) -> None:
        self._clock = budget.clock if budget is not None else None
        self._seconds = budget.seconds if budget is not None else 0.0
        self._deadline: float | None = None
        self._steps = SEARCH_STEPS

    @property
    def clock(self) -> Callable[[], float] | None:
        """The caller's clock, or None (count steps)."""
        return self._clock

    def take(self, share: float) -> tuple[float, float, int]:
        """``(start, seconds, steps)``: ``share`` of what is left, from now."""
        now = self._clock() if self._clock is not None else 0.0
        if self._deadline is None:
            self._deadline = now + self._seconds
        return now, (self._deadline - now) * share, int(self._steps * share)

    def spend(self, steps: int) -> None:
        """Count ``steps`` as taken."""
        self._steps -= steps


def _search_pairs(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    items: Sequence[int],
    allowance: _Allowance,
    share: float,
) -> tuple[set[int], float, bool]:
    """Choose pair by pair among ``items``, with ``share`` of what is left of the budget.

    Returns:
        As :func:`_search`.
    """
    base_cap = math.fsum(u[k] for k in range(len(w)) if m[k] <= 0.0)
    start, seconds, steps = allowance.take(share)
    chosen, reached, cut_short, spent = _choose(
        target, w, m, u, items, base_cap, allowance.clock, start, seconds, steps
    )
    allowance.spend(spent)
    return chosen, reached, cut_short


def _search_fair(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    items: Sequence[int],
    groups: Sequence[Sequence[int]],
    allowance: _Allowance,
) -> tuple[set[int], float, bool]:
    """The best fair choice, with what is left of the budget.

    Pairs with the same weight, minimum and cap (identical inputs give identical ones) run
    all alike or not at all, and then get identical setpoints: a group of ``g`` is one item
    with the window ``[g·m, g·u]`` (``g`` pairs each in ``[m, u]`` reach every total in it).

    Returns:
        As :func:`_search`.
    """
    base_cap = math.fsum(u[k] for k in range(len(w)) if m[k] <= 0.0)
    sizes = [len(group) for group in groups]
    heads = [group[0] for group in groups]
    group_w = [w[k] for k in heads]
    group_m = [g * m[k] for g, k in zip(sizes, heads, strict=True)]
    group_u = [g * u[k] for g, k in zip(sizes, heads, strict=True)]
    start, seconds, steps = allowance.take(1.0)
    picked, reached, cut_short, spent = _choose(
        target,
        group_w,
        group_m,
        group_u,
        range(len(groups)),
        base_cap,
        allowance.clock,
        start,
        seconds,
        steps,
    )
    allowance.spend(spent)
    return {k for index in picked for k in groups[index]}, reached, cut_short


def _identical(
    items: Sequence[int], w: Sequence[float], m: Sequence[float], u: Sequence[float]
) -> list[list[int]]:
    """``items`` grouped by equal ``(w, m, u)``, in the order of each group's first item."""
    groups: dict[tuple[float, float, float], list[int]] = {}
    for k in items:
        groups.setdefault((w[k], m[k], u[k]), []).append(k)
    return list(groups.values())


def _choose(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    items: Sequence[int],
    base_cap: float,
    clock: Callable[[], float] | None,
    start: float,
    seconds: float,
    step_limit: int,
) -> tuple[set[int], float, bool, int]:
    """The search proper over ``items`` (heaviest first), from ``start`` for ``seconds``.

    A set ``S`` reaches every magnitude in ``[Σ_S m, Σ_S u + U0]``. Depth-first over the
    items, trying "run it" before "drop it", visits the choices in order of preference; the
    first branch whose caps already reach ``target`` is completed greedily (run each further
    item whose minimum still fits) and wins. Branches that cannot beat the best partial answer
    are pruned. The depth-first search has half the budget; if it ends without an exact
    choice, :func:`_polish` improves the best one found with the rest. Without a clock the
    budget is ``step_limit`` steps.

    Returns:
        The chosen items, the largest magnitude up to ``target`` they reach, whether the budget
        ended the search first, and the steps taken.
    """
    suffix_cap = [0.0] * (len(items) + 1)
    for i in range(len(items) - 1, -1, -1):
        suffix_cap[i] = suffix_cap[i + 1] + u[items[i]]
    best_value, best = min(base_cap, target), _Chosen.EMPTY
    # Frames: (depth, Σm, Σu + U0, chosen so far). An explicit stack, because a recursion as
    # deep as the fleet would overflow Python's limit.
    stack: list[tuple[int, float, float, _Chosen]] = [(0, 0.0, base_cap, _Chosen.EMPTY)]
    steps = 0

    exact: set[int] = set()

    def run(until: float, step_cap: int) -> bool:
        """Search on until ``until`` (or ``step_cap`` steps); True when it found an exact choice."""
        nonlocal steps, best_value, best, exact
        while stack:
            steps += 1
            if clock is None:
                if steps > step_cap:
                    return False
            elif not steps % _CLOCK_EVERY and clock() >= until:
                return False
            depth, floor, cap, chosen = stack.pop()
            if cap >= target:
                picked = chosen.as_list()
                for k in items[depth:]:
                    if floor + m[k] <= target:
                        floor += m[k]
                        picked.append(k)
                exact = set(picked)
                return True
            if cap > best_value:
                best_value, best = cap, chosen
            if depth == len(items) or cap + suffix_cap[depth] <= best_value:
                continue
            k = items[depth]
            stack.append((depth + 1, floor, cap, chosen))
            if floor + m[k] <= target:
                stack.append((depth + 1, floor + m[k], cap + u[k], _Chosen(k, chosen)))
        return False

    by_watts = _exact_in_watts(target, m, u, items, base_cap)
    if by_watts is not None:
        chosen_set, reached, settled = by_watts
        if settled:
            return chosen_set, reached, False, steps
        best_value, best = reached, _Chosen.EMPTY
        for k in chosen_set:
            best = _Chosen(k, best)
    # Half the budget depth-first; then polish its best; then the rest depth-first again.
    if run(start + seconds / 2.0, step_limit // 2):
        return exact, target, False, steps
    if not stack:
        return set(best.as_list()), best_value, False, steps  # exhausted: nothing reaches more
    polished = set(best.as_list())
    reached = _polish(target, m, u, items, polished, base_cap, clock, start + seconds)
    if reached >= target:
        return polished, target, False, steps
    if run(start + seconds, step_limit):
        return exact, target, False, steps
    if best_value > reached:
        return set(best.as_list()), best_value, bool(stack), steps
    return polished, reached, True, steps


_WATT_WORDS = 100_000
"""The most work the subset-sum over whole watts may take: pairs × (request in W) / 64 bits
per machine word, about a millisecond of big-integer shifts (100 pairs and a 64 kW request)."""


def _exact_in_watts(
    target: float,
    m: Sequence[float],
    u: Sequence[float],
    items: Sequence[int],
    base_cap: float,
) -> tuple[set[int], float, bool] | None:
    """The best choice, found exactly, when every minimum and cap is a whole number of watts.

    Pseudo-polynomial subset-sum: the set of reachable whole-watt totals is a bitset in one
    Python integer; each pair ``k`` adds the set shifted by every ``x`` in ``[m_k, u_k]``
    (doubling shifts), and the pairs without a minimum start it as ``[0, U0]``. Pairs are added
    lightest first, so walking back from the heaviest and running each pair that can still
    reach the total keeps the largest weights, as the spec prefers. None when the bounds are
    not whole watts or the work would exceed :data:`_WATT_WORDS`.

    If the best whole-watt total is below ``⌊target⌋`` no choice reaches within a watt of it
    more (every whole watt between a set's minimums and its caps is reachable), so the answer
    is final. If it is ``⌊target⌋`` but the fraction of a watt above it is out of reach, the
    caller's search may still find a set that reaches it.

    Returns:
        The chosen pairs, the largest magnitude up to ``target`` they reach, and whether that
        answer is final; or None.
    """
    whole = int(target)
    if not items or whole * len(items) > _WATT_WORDS * 64:
        return None
    if not all(m[k].is_integer() and u[k].is_integer() for k in items):
        return None
    mask = (1 << (whole + 1)) - 1  # totals above ⌊target⌋ are of no use
    reachable = (1 << (min(int(base_cap), whole) + 1)) - 1
    order = list(reversed(items))  # items are heaviest first: lightest first here
    steps = [reachable]
    for k in order:
        # Totals above ⌊target⌋ are masked off as they are made, and a bound beyond ⌊target⌋
        # adds nothing: unmasked, a 1e15 W cap beside a minimum grew the set to 2^50 bits.
        low = int(m[k])
        if low > whole:
            steps.append(reachable)
            continue
        width = min(int(u[k]), whole) - low
        shifted = (reachable << low) & mask
        covered = 1
        while covered <= width:  # OR of shifts by 0..width, by doubling
            span = min(covered, width + 1 - covered)
            shifted = (shifted | shifted << span) & mask
            covered += span
        reachable |= shifted
        steps.append(reachable)
    best = total = reachable.bit_length() - 1
    chosen: set[int] = set()
    for position in range(len(order) - 1, -1, -1):
        k, before = order[position], steps[position]
        low, high = max(0, total - int(u[k])), total - int(m[k])
        if high < 0:
            continue
        window = (before >> low) & ((1 << (high - low + 1)) - 1)
        if window:  # run it: some total before it plus a setpoint in [m_k, u_k] gives ours
            total = low + (window & -window).bit_length() - 1
            chosen.add(k)
    floor = math.fsum(m[k] for k in chosen)
    cap = base_cap + math.fsum(u[k] for k in chosen)
    if floor > target:  # cannot happen with whole watts; the caller's search decides then
        return None
    reached = min(cap, target)
    return chosen, reached, reached >= target or best < whole


_POLISH_ROUNDS = 16
"""Swap rounds at most, each ``O(n log n)``; in practice one or two reach the request."""


def _polish(
    target: float,
    m: Sequence[float],
    u: Sequence[float],
    items: Sequence[int],
    chosen: set[int],
    base_cap: float,
    clock: Callable[[], float] | None,
    deadline: float,
) -> float:
    """Improve a choice the search could not finish (in place); returns what it reaches.

    First every pair not chosen whose minimum still fits is added, heaviest first. Then pairs
    are swapped one for one: taking out ``o`` and putting in ``i`` moves the reachable window
    ``[Σm, Σu + U0]`` by ``m_i - m_o`` and ``u_i - u_o``. A swap whose ``u_i - u_o`` closes
    the gap ``g`` while ``Σm`` stays at or below the request meets it exactly; failing that
    the swap that closes most of it is made, and again, until the budget or the rounds end.
    For fixed-power inverters (``m = u``) that is a search for two powers ``g`` apart among
    hundreds of pairs, which usually exists.
    """
    floor = math.fsum(m[k] for k in chosen)
    cap = base_cap + math.fsum(u[k] for k in chosen)
    for k in items:
        if k not in chosen and floor + m[k] <= target:
            chosen.add(k)
            floor += m[k]
            cap += u[k]
            if cap >= target:
                return target
    for _ in range(_POLISH_ROUNDS):
        if clock is not None and clock() >= deadline:
            break
        gap, slack = target - cap, target - floor
        out = sorted((u[k], k) for k in items if k not in chosen)
        if not out or gap <= 0.0:
            break
        caps = [c for c, _ in out]
        # lowest[j]: the smallest minimum among the pairs out with the j-th cap or a larger one.
        lowest = [math.inf] * (len(out) + 1)
        for j in range(len(out) - 1, -1, -1):
            lowest[j] = min(lowest[j + 1], m[out[j][1]])
        best_gain, best_swap = 0.0, (-1, -1)
        for o in chosen:
            bound = m[o] + slack  # m_i may be at most this
            j = bisect.bisect_left(caps, u[o] + gap)
            if lowest[j] <= bound:  # some pair closes the whole gap
                i = next(out[q][1] for q in range(j, len(out)) if m[out[q][1]] <= bound)
                best_gain, best_swap = gap, (o, i)
                break
            q = j - 1  # the largest cap below u_o + gap
            if q >= 0 and caps[q] > u[o] and m[out[q][1]] <= bound:
                gain = caps[q] - u[o]
                if gain > best_gain:
                    best_gain, best_swap = gain, (o, out[q][1])
        if best_gain <= 0.0:
            break
        o, i = best_swap
        chosen.discard(o)
        chosen.add(i)
        floor += m[i] - m[o]
        cap += u[i] - u[o]
        if cap >= target:
            return target
    return min(cap, target)


@attrs.frozen
class _Chosen:
    """A persistent list of chosen pairs: sharing tails makes each search step O(1)."""

    head: int
    tail: _Chosen | None

    EMPTY: ClassVar[_Chosen]

    def as_list(self) -> list[int]:
        out: list[int] = []
        node: _Chosen | None = self
        while node is not None and node.head >= 0:
            out.append(node.head)
            node = node.tail
        return out


_Chosen.EMPTY = _Chosen(-1, None)
