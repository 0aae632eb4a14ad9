"""Group limits: feeders, fuses and the grid connection point over sets of inverters.

Theory of operation
-------------------
A :class:`Limit` caps the sum of its inverters' setpoints, per direction (``spec/plant.md``,
"Group limits"). Limits form a *laminar* family: any two are disjoint or one contains the
other (equal sets nest too), so they make a forest, :func:`limit_tree`. A pair of limits that
overlap without nesting is refused, naming both and an inverter they share.

The split with limits is a nested water-fill. Over a pool (the request's candidates, or the
members of a limit that binds) with a target ``T``:

1. Split ``T``, less what the bound limits of this pool placed (rounded toward zero), over the
   pool's *free* pairs (those inside no bound limit) with the split of rules 3 to 6, as if
   there were no limits.
2. Find the limits of the pool, not inside a bound one, whose members now add up to more
   than their maximum (compared exactly). If none, stop.
3. Bind the innermost of them (those with no such limit inside): each is solved as a pool of
   its own with ``T`` = its maximum (recursively: limits inside it may bind in turn), and its
   members leave the free pool; a bound limit inside one that binds now is solved again as
   part of it. Go to 1.

Why this is the nested water-fill (pairs without minimums): with ``F_p(λ) = min(λ·w, u)`` for
a pair and ``F_L(λ) = min(max_L, Σ_children F(λ))`` for a limit, the split asks for the level
``λ`` with ``Σ F(λ) = T`` over the pool's children; each child limit then has its own level
``λ_L = min(λ, the level at which its members reach max_L)``, recursively. Step 3 binds a limit
only when its members exceed its maximum at the pool's current level, so ``λ_L < λ``; binding
it gives its members exactly ``max_L`` where they held more, which leaves *more* for the free
pairs, so the pool's level only rises and a bound limit stays bound: the fixed point is the
nested water-fill. Binding an outer limit before an inner one that is violated too could make
the outer one bound where the inner one's binding would have left it slack, hence innermost
first. Each limit binds at most once per pool (it leaves the free pool for good, or is solved
again inside a bound ancestor, which is bound for good), so a pool takes at most ``k + 1``
passes for ``k`` limits; binding every innermost violated limit per pass keeps it to a few in
practice (all the fuses in one pass, then the feeders).

The invariants, exactly: what a bound pool's free pairs share is its target less what its
bound limits placed, rounded toward zero (:func:`rest_toward_zero`), and the split never places
more than its target, so no limit's members ever add up to more than its maximum, and the
whole never to more than the request. With no minimums nothing is wasted: a limit binds only
where its members could exceed it, and then places its maximum.

Reasons: a pair inside a bound limit that follows that limit's level (below the level it
would have followed without it) is :attr:`~.rows.Allotment.LIMITED`, as is one that gets 0
because its limit's maximum is 0; capped pairs and those dropped below their minimum keep
their reason. The result names every limit that bound (``Distribution.bound_limits``).

Aggregate bounds (:func:`nested_total`): in a direction, a limit's members can take at most
``min(max_L, Σ what its children can take)``, recursively; pairs inside no limit take their cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import attrs

from distributord.core.distribution.rows import Allotment
from distributord.core.errors import DistributionInputError, LimitOverlapError
from distributord.core.values import is_number

_Split = tuple[float, list[float], list[Allotment]]
"""``(placed, setpoints, reasons)`` over the picked candidates, as :func:`~.waterfill.split`."""

BaseSplit = Callable[[Sequence[int], float], _Split]
"""The split without limits: a target over some of the candidates (positions, ascending)."""


def _check_max(limit: Limit, attribute: attrs.Attribute[float], value: float) -> None:
    if not (is_number(value) and value >= 0.0 and not math.isnan(value)):
        raise DistributionInputError(
            "limits",
            f"{limit.name!r}: {attribute.name} must be a number >= 0 (inf: no limit), "
            f"got {value!r}",
        )


def _check_inverters(
    limit: Limit, attribute: attrs.Attribute[frozenset[int]], value: object
) -> None:
    if not isinstance(value, frozenset) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise DistributionInputError(
            "limits", f"{limit.name!r}: inverters must be a frozenset of ids, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class Limit:
    """A limit on the sum of some inverters' setpoints: a feeder, a fuse, the grid connection.

    Attributes:
        name: What the operator calls it; results name the limits that bound.
        inverters: The inverter ids it covers (:attr:`~.rows.Pair.inverter_id`); ids not in
            a request are ignored by it.
        max_charge_w: The most its inverters may charge together, W (``>= 0``; ``inf``: no
            limit).
        max_discharge_w: The most they may discharge together, W, as a magnitude.
    """

    name: str
    inverters: frozenset[int] = attrs.field(validator=_check_inverters)
    max_charge_w: float = attrs.field(default=math.inf, validator=_check_max)
    max_discharge_w: float = attrs.field(default=math.inf, validator=_check_max)

    def max_w(self, charging: bool) -> float:
        """The maximum in one direction."""
        return self.max_charge_w if charging else self.max_discharge_w


def _nesting_key(limit: Limit) -> tuple[int, str, float, float]:
    """Larger sets first; equal sets in a fixed order, whatever the order they came in.

    Limits that tie on this key and differ in their sets are disjoint (or refused), and their
    order changes nothing; those that tie and hold the same set are the same limit.
    """
    return (-len(limit.inverters), limit.name, limit.max_charge_w, limit.max_discharge_w)


def limit_tree(limits: Iterable[Limit]) -> tuple[tuple[Limit, int | None], ...]:
    """The limits as a forest, outermost first, refusing any two that overlap without nesting.

    Args:
        limits: The limits, in any order.

    Returns:
        Each limit with the position, in the returned tuple, of the innermost limit that
        contains it (``None``: inside none). Of two limits over the same set, the one later
        in the order (by name, then maxima) is inside the other. Permuting ``limits`` gives
        the same tree.

    Raises:
        LimitOverlapError: Two limits overlap without one containing the other (the message
            names both and an inverter they share).
        DistributionInputError: An entry is not a :class:`Limit`.
    """
    ordered = list(limits)
    for limit in ordered:
        if not isinstance(limit, Limit):
            raise DistributionInputError("limits", f"must be Limit values, got {limit!r}")
    ordered.sort(key=_nesting_key)
    # Larger sets first: the innermost limit so far that holds each inverter. A limit whose
    # inverters all have the same innermost holder (or none) is inside it, and nests with
    # every limit before it; otherwise two limits before it that it meets form a chain only
    # if they nest, and the innermost of that chain would hold all its inverters.
    holder: dict[int, int] = {}
    tree: list[tuple[Limit, int | None]] = []
    for position, limit in enumerate(ordered):
        holders = set(map(holder.get, limit.inverters))
        if len(holders) > 1:
            raise _overlap(limit, ordered[:position])
        tree.append((limit, holders.pop() if holders else None))
        holder.update(dict.fromkeys(limit.inverters, position))
    return tuple(tree)


def _overlap(limit: Limit, earlier: Sequence[Limit]) -> LimitOverlapError:
    """The error for ``limit``, which overlaps one of ``earlier`` (no smaller) without nesting."""
    for other in earlier:
        shared = limit.inverters & other.inverters
        if shared and not limit.inverters <= other.inverters:
            return LimitOverlapError(other, limit, min(shared))
    raise AssertionError("no overlapping limit found")  # pragma: no cover - see limit_tree


def rest_toward_zero(terms: Iterable[float]) -> float:
    """``Σ terms`` rounded toward zero: never more in magnitude than the exact sum.

    ``math.fsum`` rounds to nearest; a remainder so rounded can be a hair more than what is
    really left, and what is placed from it a hair more than allowed.
    """
    terms = list(terms)
    rest = math.fsum(terms)
    beyond = math.fsum([*terms, -rest])  # the sign of (exact sum) - rest
    if (rest > 0.0 and beyond < 0.0) or (rest < 0.0 and beyond > 0.0):
        rest = math.nextafter(rest, 0.0)
    return rest + 0.0


# --- the split -------------------------------------------------------------------------------


@attrs.frozen
class LimitNode:
    """A limit restricted to one request's candidates, in one direction (:func:`request_tree`)."""

    name: str
    max_w: float
    members: tuple[int, ...]
    """Candidate positions in its subtree, ascending."""
    children: tuple[LimitNode, ...]


def request_tree(
    tree: Sequence[tuple[Limit, int | None]], inverter_ids: Sequence[int], charging: bool
) -> tuple[LimitNode, ...]:
    """The limits over the candidates ``inverter_ids`` (positions 0 to n-1), top level first.

    Args:
        tree: The limits as :func:`limit_tree` nests them.
        inverter_ids: The candidates' inverters.
        charging: The request's direction: which maxima count.

    Limits that hold none of the candidates are left out (nothing to cap).
    """
    where = dict(zip(inverter_ids, range(len(inverter_ids)), strict=True))
    members: list[list[int]] = [
        sorted(map(where.__getitem__, where.keys() & limit.inverters)) for limit, _ in tree
    ]
    children: list[list[int]] = [[] for _ in tree]
    roots: list[int] = []
    for position, (_, parent) in enumerate(tree):
        if members[position]:
            (roots if parent is None else children[parent]).append(position)

    def node(position: int) -> LimitNode:
        limit = tree[position][0]
        return LimitNode(
            limit.name,
            limit.max_w(charging),
            tuple(members[position]),
            tuple(map(node, children[position])),
        )

    return tuple(map(node, roots))


def nested_split(
    target: float,
    count: int,
    roots: Sequence[LimitNode],
    base_split: BaseSplit,
) -> tuple[float, list[float], list[Allotment], list[str]]:
    """Place ``target > 0`` over ``count`` candidates under the limits ``roots`` (module docs).

    Args:
        target: The magnitude to place.
        count: How many candidates; the nodes' members are positions among them.
        roots: The top-level limits over them (:func:`request_tree`).
        base_split: The split without limits over some of the candidates.

    Returns:
        ``(placed, setpoints, reasons, bound)``: as :func:`~.waterfill.split`, and the names
        of the limits that bound.
    """
    xs = [0.0] * count
    why = [Allotment.PROPORTIONAL] * count
    bound: list[str] = []
    _solve(target, range(count), roots, base_split, xs, why, bound)
    return math.fsum(xs), xs, why, bound


def _solve(
    target: float,
    members: Sequence[int],
    roots: Sequence[LimitNode],
    base_split: BaseSplit,
    xs: list[float],
    why: list[Allotment],
    bound_names: list[str],
) -> None:
    """Place ``target`` at ``members`` under ``roots`` into ``xs``, ``why``; names that bound."""
    bound: dict[int, tuple[LimitNode, list[str]]] = {}  # id(node) -> node, the names that bound
    while True:
        held = {k for node, _ in bound.values() for k in node.members}
        free = [k for k in members if k not in held] if held else members
        # From the bound members' setpoints themselves: their sum rounded to nearest could be
        # a hair less than they hold, and the free pairs then place a hair too much.
        rest = rest_toward_zero([target, *(-xs[k] for k in held)])
        if free:
            if rest > 0.0:
                _, free_xs, free_why = base_split(free, rest)
            else:
                free_xs, free_why = [0.0] * len(free), [Allotment.LIMITED] * len(free)
            if len(free) == len(xs):  # every candidate: the top pool, nothing bound yet
                xs[:], why[:] = free_xs, free_why
            else:
                for k, x, reason in zip(free, free_xs, free_why, strict=True):
                    xs[k], why[k] = x, reason
        violated: list[LimitNode] = []
        for root in roots:
            _innermost_violated(root, xs, bound, violated)
        if not violated:
            break
        for node in violated:
            inner: list[str] = [node.name]
            _solve(node.max_w, node.members, node.children, base_split, xs, why, inner)
            inside = set(node.members)
            for key in [key for key, (other, _) in bound.items() if other.members[0] in inside]:
                del bound[key]
            for k in node.members:
                if why[k] is Allotment.PROPORTIONAL:
                    why[k] = Allotment.LIMITED
            bound[id(node)] = (node, inner)
    for _, names in bound.values():
        bound_names.extend(names)


def _innermost_violated(
    node: LimitNode,
    xs: Sequence[float],
    bound: dict[int, tuple[LimitNode, list[str]]],
    out: list[LimitNode],
) -> bool:
    """Whether ``node`` or a limit inside it (not bound) is exceeded; collects the innermost."""
    if id(node) in bound:
        return False
    inner = False
    for child in node.children:
        inner = _innermost_violated(child, xs, bound, out) or inner
    if inner:
        return True
    # Exactly: fsum is correctly rounded, so its sign is the sign of the exact sum.
    if math.fsum([*map(xs.__getitem__, node.members), -node.max_w]) > 0.0:
        out.append(node)
        return True
    return False


def nested_total(caps: Sequence[float], roots: Sequence[LimitNode]) -> float:
    """The most ``caps`` (one per candidate) can place under the limits ``roots``.

    A limit's members take at most ``min(max_L, Σ what its children take)``, recursively.
    """
    return _total(caps, range(len(caps)), roots)


def _total(caps: Sequence[float], members: Iterable[int], children: Sequence[LimitNode]) -> float:
    inside = {k for child in children for k in child.members}
    return math.fsum(
        [
            *(min(child.max_w, _total(caps, child.members, child.children)) for child in children),
            *(caps[k] for k in members if k not in inside),
        ]
    )
