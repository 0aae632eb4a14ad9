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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import attrs

SEARCH_BUDGET = 20_000
"""Steps the exact search over exclusion minimums may take (about 20 ms in the worst case)."""


def _search(
    target: float, w: Sequence[float], m: Sequence[float], u: Sequence[float]
) -> tuple[set[int], float]:
    """Choose which pairs with a minimum run (rule 6): exact within :data:`SEARCH_BUDGET`.

    Pairs without a minimum always run: they widen what is reachable and never raise its floor.
    A set ``S`` reaches every magnitude in ``[Σ_S m, Σ_S u + U0]``. Depth-first over the pairs
    with a minimum, heaviest first, trying "run it" before "drop it", visits the choices in
    order of preference; the first branch whose caps already reach ``target`` is completed
    greedily (run each further pair whose minimum still fits) and wins. Branches that cannot
    beat the best partial answer are pruned.

    Returns:
        The chosen pairs with a minimum, and the largest magnitude up to ``target`` they reach.
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
    while stack and steps < SEARCH_BUDGET:
        steps += 1
        depth, floor, cap, chosen = stack.pop()
        if cap >= target:
            picked = chosen.as_list()
            for k in items[depth:]:
                if floor + m[k] <= target:
                    floor += m[k]
                    picked.append(k)
            return set(picked), target
        if cap > best_value:
            best_value, best = cap, chosen
        if depth == len(items) or cap + suffix_cap[depth] <= best_value:
            continue
        k = items[depth]
        stack.append((depth + 1, floor, cap, chosen))
        if floor + m[k] <= target:
            stack.append((depth + 1, floor + m[k], cap + u[k], _Chosen(k, chosen)))
    return set(best.as_list()), best_value


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
