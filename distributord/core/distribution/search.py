"""The exact search over which pairs run when their minimums cannot all be met (rule 6).

Theory of operation
-------------------
When the exclusion minimums of the pairs still running exceed the request's magnitude ``M``,
water-filling cannot satisfy them all, and a choice is needed: keep the largest weights, meet
``M`` exactly if any choice can, else deliver the largest magnitude below ``M``. In general
this is subset-sum, so the search stops after :data:`SEARCH_BUDGET` steps and then uses the
best choice it found; it only runs for fleets whose allowed windows ``[m, u]`` are narrow
compared with the request. The search only chooses; :mod:`.waterfill` then places the power
over the chosen pairs.

The budget is time (``distribution.search_budget_ms``, :class:`SearchBudget`), read from a clock
the caller passes in: the core reads no clock of its own. Without one (tests, benchmarks) the
search counts steps instead (:data:`SEARCH_STEPS`). When the budget ends the search before it
finds an exact choice, it keeps the best choice found, and the pairs it did not choose say so
(``Reason.SEARCH_BUDGET_ENDED``). Exact subset sums are NP-hard; for fleets of fixed-power
inverters (``m = u``) beyond a few dozen pairs the budget can end the search a few watts short
of a reachable request (``python -m distributord.bench.distribution --fixed-power`` measures
how far).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    """Choose which pairs with a minimum run (rule 6): exact within the budget.

    Pairs without a minimum always run: they widen what is reachable and never raise its floor.
    A set ``S`` reaches every magnitude in ``[Σ_S m, Σ_S u + U0]``. Depth-first over the pairs
    with a minimum, heaviest first, trying "run it" before "drop it", visits the choices in
    order of preference; the first branch whose caps already reach ``target`` is completed
    greedily (run each further pair whose minimum still fits) and wins. Branches that cannot
    beat the best partial answer are pruned.

    Returns:
        The chosen pairs with a minimum, the largest magnitude up to ``target`` they reach, and
        whether the budget ended the search first.
    """
    n = len(w)
    base_cap = math.fsum(u[k] for k in range(n) if m[k] <= 0.0)
    # Stable sort of an id-ordered list: equal weights stay in id order.
    items = sorted((k for k in range(n) if m[k] > 0.0), key=lambda k: -w[k])
    suffix_cap = [0.0] * (len(items) + 1)
    for i in range(len(items) - 1, -1, -1):
        suffix_cap[i] = suffix_cap[i + 1] + u[items[i]]
    best_value, best = min(base_cap, target), _Chosen.EMPTY
    # Frames: (depth, Σm, Σu + U0, chosen so far). An explicit stack, because a recursion as
    # deep as the fleet would overflow Python's limit.
    stack: list[tuple[int, float, float, _Chosen]] = [(0, 0.0, base_cap, _Chosen.EMPTY)]
    steps = 0
    clock = budget.clock if budget is not None else None
    deadline = clock() + budget.seconds if clock is not None and budget is not None else 0.0
    while stack:
        steps += 1
        if clock is None:
            if steps > SEARCH_STEPS:
                break
        elif not steps % _CLOCK_EVERY and clock() >= deadline:
            break
        depth, floor, cap, chosen = stack.pop()
        if cap >= target:
            picked = chosen.as_list()
            for k in items[depth:]:
                if floor + m[k] <= target:
                    floor += m[k]
                    picked.append(k)
            return set(picked), target, False
        if cap > best_value:
            best_value, best = cap, chosen
        if depth == len(items) or cap + suffix_cap[depth] <= best_value:
            continue
        k = items[depth]
        stack.append((depth + 1, floor, cap, chosen))
        if floor + m[k] <= target:
            stack.append((depth + 1, floor + m[k], cap + u[k], _Chosen(k, chosen)))
    return set(best.as_list()), best_value, bool(stack)


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
