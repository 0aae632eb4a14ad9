"""Placing a request: :func:`distribute`, :func:`split_equally` and the :class:`Distribution`.

Theory of operation
-------------------
A request asks for a power ``P`` (W, + charge, − discharge) over some pairs. We work on the
magnitude ``M = |P|`` in the request's direction and restore the sign at the end:

1. ``M ≈ 0`` (≤ 1 nW): every setpoint is exactly ``0``, and all of ``P`` remains.
2. Pairs with ``w = 0``, ``u = 0`` or ``m > u`` get exactly ``0`` and no leftover.
3. The others are candidates, and :func:`~.waterfill.split` places ``M`` over them (rules 3
   to 6); what it cannot place is ``remaining``.

Every pair in the result carries an :class:`Allotment`. Pairs with bad telemetry (see
:mod:`.rows`) are *excluded*: they are not in ``setpoints`` and ``excluded`` says why, naming
the field.

Under group limits (``limits=``, :mod:`.limits`) step 3 is the nested water-fill: the split of
rules 3 to 6 runs per pool (the free pairs, and the members of each limit that binds), and the
result names the limits that bound. A request that no limit touches takes the path without
limits, unchanged.

A distribution reads one row per pair, worked out when the pair was built, and works on the
rows' columns. Pairs are put in battery-id order first and every tie is broken by id, so
permuting the input permutes the output exactly.

Around :func:`distribute`: :func:`aggregate_bounds` and :func:`check_power` decide whether a
request is accepted at all, :func:`split_equally` shares what is left (:func:`leftover`, never
more than is really left) over batteries that are not working (``include_broken_batteries``),
and :func:`combine` joins the two results.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import truediv
from typing import Any, TypeAlias

import attrs

from distributord.core.distribution.limits import (
    Limit,
    LimitNode,
    limit_tree,
    nested_split,
    nested_total,
    request_tree,
    rest_toward_zero,
)
from distributord.core.distribution.rows import (
    _CHARGE_ROW,
    _DISCHARGE_ROW,
    Allotment,
    Pair,
    Row,
    RowColumns,
    _merged,
    _Status,
    _weights,
    derate,
)
from distributord.core.distribution.search import SearchBudget
from distributord.core.distribution.waterfill import (
    FAITHFUL_WEIGHT,
    _pick,
    _Picker,
    split,
    split_in_tiers,
)
from distributord.core.errors import DistributionInputError
from distributord.core.model import PLAUSIBLE_LIMIT, PowerBounds
from distributord.core.values import is_number

ZERO_POWER_W = 1e-9
"""Requests at or below this magnitude are zero: 1 nW is far below any inverter's resolution."""

Split: TypeAlias = tuple[float, list[float], list[Allotment]]
"""What :func:`~.waterfill.split` answers: ``(placed, setpoints, reasons)`` over candidates."""


@attrs.frozen(kw_only=True)
class Distribution:
    """What the algorithm decided for one request.

    Attributes:
        power_w: The requested power.
        setpoints: Battery id to setpoint (W) for every usable pair; exactly ``0.0`` for pairs
            that take nothing.
        reasons: Battery id to why it got its setpoint.
        remaining_w: Requested power that could not be placed (same sign as ``power_w``).
        excluded: Battery id to why the pair was left out (not in ``setpoints``; do not
            command it).
        bound_limits: The names of the group limits that bound in this split, sorted (their
            members' reasons say :attr:`Allotment.LIMITED` where they held them back).
    """

    power_w: float
    setpoints: Mapping[int, float]
    reasons: Mapping[int, Allotment]
    remaining_w: float
    excluded: Mapping[int, str] = attrs.field(factory=dict)
    bound_limits: tuple[str, ...] = ()

    @property
    def placed_w(self) -> float:
        """Total power the setpoints add up to."""
        return math.fsum(self.setpoints.values())


# --- distribute ----------------------------------------------------------------------------


def _check_arguments(power_w: float, exponent: float, derate_band_pct: float) -> None:
    if not is_number(power_w):
        raise DistributionInputError("power_w", f"must be a number, got {power_w!r}")
    if not math.isfinite(power_w):
        raise DistributionInputError("power_w", f"must be finite, got {power_w!r}")
    if not is_number(exponent):
        raise DistributionInputError("exponent", f"must be a number, got {exponent!r}")
    if not (math.isfinite(exponent) and exponent >= 0.0):
        raise DistributionInputError("exponent", f"must be finite and >= 0, got {exponent!r}")
    _check_band(derate_band_pct)


def _check_band(derate_band_pct: float) -> None:
    if not (is_number(derate_band_pct) and math.isfinite(derate_band_pct)):
        raise DistributionInputError(
            "derate_band_pct", f"must be a finite number, got {derate_band_pct!r}"
        )
    if derate_band_pct < 0.0:
        raise DistributionInputError("derate_band_pct", f"must be >= 0, got {derate_band_pct!r}")


def _check_unique(battery_ids: Sequence[int], inverter_ids: Sequence[int]) -> None:
    for name, ids in (("battery", battery_ids), ("inverter", inverter_ids)):
        if len(set(ids)) != len(ids):
            dupes = sorted(i for i, count in Counter(ids).items() if count > 1)
            raise DistributionInputError("pairs", f"duplicate {name} ids {dupes}")


def distribute(
    power_w: float,
    pairs: Sequence[Pair],
    *,
    exponent: float = 1.0,
    derate_band_pct: float = 0.0,
    search_budget: SearchBudget | None = None,
    limits: Sequence[Limit] = (),
) -> Distribution:
    """Split ``power_w`` across ``pairs`` (see the package docstring for the rules).

    Args:
        power_w: Requested power, W (+ charge, − discharge). Finite.
        pairs: The usable pairs; battery ids and inverter ids unique. Not empty.
        exponent: ``e ≥ 0`` in the weight ``capacity share · available SoC^e``. The config
            keeps it in ``[0, MAX_EXPONENT]``; any finite ``e ≥ 0`` gets a valid split (weights
            beyond the float range are split in tiers, :func:`~.waterfill.split_in_tiers`).
        derate_band_pct: ``d ≥ 0``, SoC derating: a pair whose available SoC ``a`` is below
            ``d`` percentage points has its cap scaled by ``a/d`` (:func:`~.rows.derate`).
            ``0`` (the default) turns it off. The config keeps it in ``[0, 100]``.
        search_budget: How long the search over exclusion minimums may take (rule 6);
            without one it counts steps (:data:`~.search.SEARCH_STEPS`).
        limits: Group limits over the pairs' inverters (:mod:`.limits`); they must nest or
            be disjoint. Inverters a limit names that are not among ``pairs`` are ignored.
            Without limits that hold a pair of the request, the split is the one without.

    Returns:
        The setpoints, why each pair got its setpoint, what could not be placed, and which
        limits bound.

    Raises:
        DistributionInputError: An argument is invalid, or two limits overlap without
            nesting; the error names it. Telemetry never raises: bad telemetry excludes its
            pair.
    """
    _check_arguments(power_w, exponent, derate_band_pct)
    # Refuses limits that do not nest, whatever the request holds.
    tree = limit_tree(limits) if limits else ()
    if not pairs:
        raise DistributionInputError("pairs", "must not be empty")
    rows: Sequence[Row] = sorted(map(_CHARGE_ROW if power_w > 0 else _DISCHARGE_ROW, pairs))
    rows = derate(rows, derate_band_pct)
    columns = RowColumns._make(zip(*rows, strict=True))
    _check_unique(columns.battery_id, columns.inverter_id)
    excluded: dict[int, str] = {}
    if columns.status.count(None) != len(rows):
        excluded = {
            bid: status
            for bid, status in zip(columns.battery_id, columns.status, strict=True)
            if isinstance(status, str) and not isinstance(status, Allotment)
        }
        if excluded:
            rows = [row for row in rows if row.battery_id not in excluded]
            columns = RowColumns._make(zip(*rows, strict=True) if rows else [()] * len(Row._fields))
    ids = columns.battery_id
    if abs(power_w) <= ZERO_POWER_W or not rows:
        # A zero request, or nothing left to take it: all of it remains, so that setpoints
        # and remaining add up to the request exactly (a tiny request too, rule 6).
        return Distribution(
            power_w=power_w,
            setpoints=dict.fromkeys(ids, 0.0),
            reasons=dict.fromkeys(ids, Allotment.ZERO_REQUEST),
            remaining_w=power_w + 0.0,  # never -0.0
            excluded=excluded,
        )

    def candidate_split(pick: _Picker, target: float) -> Split:
        m, u = pick(columns.min_w), pick(columns.cap_w)
        if exponent == 1.0:
            w = pick(columns.weight)
            if min(w) >= FAITHFUL_WEIGHT:
                return split(
                    target,
                    w,
                    m,
                    u,
                    pick(columns.cap_ratio),
                    pick(columns.min_ratio),
                    search_budget,
                )
        else:
            w = _weights(pick(columns.capacity_wh), pick(columns.available_pct), exponent)
            if min(w) >= FAITHFUL_WEIGHT:
                ratios = list(map(truediv, u, w)), list(map(truediv, m, w))
                return split(target, w, m, u, *ratios, search_budget)
        capacities, available = pick(columns.capacity_wh), pick(columns.available_pct)
        return split_in_tiers(target, capacities, available, exponent, m, u, search_budget)

    if tree:
        status = columns.status
        candidates = (
            range(len(status))
            if status.count(None) == len(status)
            else [k for k, s in enumerate(status) if s is None]
        )
        inverters = columns.inverter_id
        roots = request_tree(tree, [inverters[k] for k in candidates], power_w > 0)
        if roots:
            return _place_limited(
                power_w, ids, status, candidates, roots, candidate_split, excluded
            )
    return _place(power_w, ids, columns.status, candidate_split, excluded)


def _place_limited(
    power_w: float,
    ids: Sequence[int],
    status: Sequence[_Status],
    candidates: Sequence[int],
    roots: Sequence[LimitNode],
    candidate_split: Callable[[_Picker, float], Split],
    excluded: dict[int, str],
) -> Distribution:
    """:func:`_place` under the limits ``roots`` over ``candidates``: :mod:`.limits`."""
    bound: list[str] = []

    def limited_split(pick: _Picker, target: float) -> Split:
        # _place picks exactly `candidates` (status None), with `pick`; the tree's members are
        # positions among them, and so are the pools nested_split splits.
        def pool_split(pool: Sequence[int], rest: float) -> Split:
            if len(pool) == len(candidates):  # all of them: the pick _place made
                return candidate_split(pick, rest)
            return candidate_split(_pick([candidates[k] for k in pool]), rest)

        placed, xs, why, names = nested_split(target, len(candidates), roots, pool_split)
        bound.extend(names)
        return placed, xs, why

    placed = _place(power_w, ids, status, limited_split, excluded)
    return attrs.evolve(placed, bound_limits=tuple(sorted(bound)))


def _all(column: Sequence[Any]) -> Sequence[Any]:
    return column


def _place(
    power_w: float,
    ids: Sequence[int],
    status: Sequence[_Status],
    candidate_split: Callable[[_Picker, float], Split],
    excluded: dict[int, str],
) -> Distribution:
    """Split ``|power_w|`` over the pairs whose status is ``None``, then restore the sign."""
    idle: list[int] = []
    xs: list[float] = []
    why: list[Allotment] = []
    placed = 0.0
    if status.count(None) == len(status):
        candidate_ids: Sequence[int] = ids
        placed, xs, why = candidate_split(_all, abs(power_w))
    else:
        candidates = [k for k, s in enumerate(status) if s is None]
        idle = [k for k, s in enumerate(status) if s is not None]
        candidate_ids = ()
        if candidates:
            pick = _pick(candidates)
            candidate_ids = pick(ids)
            placed, xs, why = candidate_split(pick, abs(power_w))
    magnitude = abs(power_w)
    short = magnitude - placed if placed < magnitude else 0.0
    if power_w < 0:
        xs = [0.0 - x for x in xs]
        short = 0.0 - short
    setpoints: dict[int, float] = dict(zip(candidate_ids, xs, strict=True))
    reasons: dict[int, Allotment] = dict(zip(candidate_ids, why, strict=True))
    for k in idle:
        setpoints[ids[k]] = 0.0
        # An Allotment: the excluded ones (a str) are gone.
        reasons[ids[k]] = status[k]  # type: ignore[assignment]
    return Distribution(
        power_w=power_w, setpoints=setpoints, reasons=reasons, remaining_w=short, excluded=excluded
    )


# --- aggregate bounds and the request check ----------------------------------------------


def aggregate_bounds(
    pairs: Iterable[Pair], *, derate_band_pct: float = 0.0, limits: Sequence[Limit] = ()
) -> PowerBounds:
    """The bounds of a set of pairs, for the request check.

    ``inclusion_upper`` is the sum of the caps of the pairs that can charge, ``exclusion_upper``
    the smallest minimum among them (the smallest magnitude one pair alone can take; the
    reference design summed the minimums instead); likewise for discharging. A direction in
    which no pair can take power has both bounds ``0``. The caps are derated as
    :func:`distribute` derates them (``derate_band_pct``), so the bounds say what a split can
    place. Under group ``limits`` the inclusion bounds are what the nested limits let the caps
    place (:func:`~.limits.nested_total`); the exclusion bounds stay as they are, unless the
    limits leave less than the smallest minimum: then that direction takes no power (both 0).

    Raises:
        DistributionInputError: ``derate_band_pct`` is not a finite number ``>= 0``, or the
            limits do not nest.
    """
    _check_band(derate_band_pct)
    tree = limit_tree(limits) if limits else ()
    pairs = list(pairs)
    charge_minimum, charge_caps = _direction_bounds(
        derate(list(map(_CHARGE_ROW, pairs)), derate_band_pct), tree, charging=True
    )
    discharge_minimum, discharge_caps = _direction_bounds(
        derate(list(map(_DISCHARGE_ROW, pairs)), derate_band_pct), tree, charging=False
    )
    return PowerBounds(
        inclusion_lower=0.0 - discharge_caps,
        exclusion_lower=0.0 - discharge_minimum,
        exclusion_upper=charge_minimum,
        inclusion_upper=charge_caps,
    )


def _direction_bounds(
    rows: Iterable[Row], tree: Sequence[tuple[Limit, int | None]], *, charging: bool
) -> tuple[float, float]:
    """(smallest minimum, sum of caps) of the rows that can take power in their direction.

    Under limits (``tree``, :func:`~.limits.limit_tree`), the sum of caps is what the limits
    let them place.
    """
    caps: list[float] = []
    inverters: list[int] = []
    minimum = math.inf
    for row in rows:
        if row.status is None:
            caps.append(row.cap_w)
            inverters.append(row.inverter_id)
            minimum = min(minimum, row.min_w)
    if not caps:
        return 0.0, 0.0
    if tree:
        total = nested_total(caps, request_tree(tree, inverters, charging))
        # Limits that leave less than the smallest minimum leave no power at all that way.
        return (minimum, total) if total >= minimum else (0.0, 0.0)
    return minimum, math.fsum(caps)


def check_power(power_w: float, bounds: PowerBounds, *, adjust_power: bool) -> bool:
    """Whether a request for ``power_w`` is accepted against aggregate ``bounds``.

    0 W is always accepted. With ``adjust_power`` only a request strictly inside the exclusion
    range is refused (adjustment moves power towards zero, never away from it); without it the
    request must lie within ``[inclusion_lower, exclusion_lower]`` or
    ``[exclusion_upper, inclusion_upper]``.
    """
    if abs(power_w) <= ZERO_POWER_W:
        return True
    if adjust_power:
        return not bounds.exclusion_lower < power_w < bounds.exclusion_upper
    return (
        bounds.inclusion_lower <= power_w <= bounds.exclusion_lower
        or bounds.exclusion_upper <= power_w <= bounds.inclusion_upper
    )


# --- include_broken_batteries -------------------------------------------------------------


def split_equally(
    power_w: float,
    known: Mapping[int, Sequence[PowerBounds]],
    *,
    search_budget: SearchBudget | None = None,
) -> Distribution:
    """Split ``power_w`` equally across batteries that are not working.

    Used for ``include_broken_batteries``: what the usable pairs could not take is shared
    equally, clamped to each pair's last known bounds (the tighter of battery and inverter; a
    pair with no known bounds takes any share). This overrides the status tracker's
    protection.

    Args:
        power_w: Power to share, W. Finite.
        known: Battery id to the last known bounds of its battery and of its inverter (none,
            one or both).
        search_budget: As for :func:`distribute`.

    Returns:
        The equal shares (reason :attr:`Allotment.EQUAL_SHARE` where nothing binds).
    """
    if not math.isfinite(power_w):
        raise DistributionInputError("power_w", f"must be finite, got {power_w!r}")
    ids = sorted(known)
    magnitude = abs(power_w)
    if magnitude <= ZERO_POWER_W or not ids:
        return Distribution(
            power_w=power_w,
            setpoints=dict.fromkeys(ids, 0.0),
            reasons=dict.fromkeys(ids, Allotment.ZERO_REQUEST),
            remaining_w=power_w + 0.0,  # as in distribute: all of it remains, never -0.0
        )
    unknown = PowerBounds.unknown()
    caps: list[float] = []
    minimums: list[float] = []
    status: list[_Status] = []
    for bid in ids:
        sides = [*known[bid], unknown, unknown][:2]
        merged = dict(_merged(sides[0], sides[1]))
        if power_w > 0:
            edge, gap = merged["inclusion_upper"], merged["exclusion_upper"]
        else:
            edge, gap = 0.0 - merged["inclusion_lower"], 0.0 - merged["exclusion_lower"]
        # float(): bounds given as ints stayed ints here, and the search's whole-watt test
        # (float.is_integer) failed on them with an AttributeError.
        cap = (
            min(max(float(edge), 0.0), PLAUSIBLE_LIMIT) if math.isfinite(edge) else PLAUSIBLE_LIMIT
        )
        # Unknown (nan): no minimum. +inf: only 0 is allowed (it is above any cap).
        floor = 0.0 if math.isnan(gap) else max(float(gap), 0.0)
        caps.append(cap)
        minimums.append(floor)
        status.append(
            Allotment.MINIMUM_ABOVE_CAP
            if floor > cap
            else Allotment.ZERO_POWER_BOUND
            if cap <= 0
            else None
        )

    def equal(pick: _Picker, target: float) -> Split:
        m, u = pick(minimums), pick(caps)
        # With w = 1, u/w = u and m/w = m.
        return split(target, [1.0] * len(m), m, u, u, m, search_budget)

    shared = _place(power_w, ids, status, equal, {})
    return attrs.evolve(
        shared,
        reasons={
            bid: Allotment.EQUAL_SHARE if why is Allotment.PROPORTIONAL else why
            for bid, why in shared.reasons.items()
        },
    )


def leftover(distribution: Distribution) -> float:
    """What ``distribution`` left of its request, rounded toward zero.

    ``remaining_w`` is rounded to nearest, so it can be a hair more than what is really left;
    shared out again (``include_broken_batteries``), that hair took the total past the
    request. This is never more: ``placed + leftover <= |power_w|`` holds exactly.
    """
    return rest_toward_zero(
        [distribution.power_w, *(0.0 - x for x in distribution.setpoints.values())]
    )


def combine(first: Distribution, second: Distribution) -> Distribution:
    """The union of two distributions over disjoint pairs, for the same request.

    ``second`` places what ``first`` left (``second.power_w == leftover(first)``); what remains
    is worked out from all the setpoints, exactly and rounded once.
    """
    overlap = first.setpoints.keys() & second.setpoints.keys()
    if overlap:
        raise DistributionInputError("second", f"pairs {sorted(overlap)} appear in both")
    setpoints = dict(sorted({**first.setpoints, **second.setpoints}.items()))
    reasons = {**first.reasons, **second.reasons}
    remaining = math.fsum([first.power_w, *(0.0 - x for x in setpoints.values())])
    return Distribution(
        power_w=first.power_w,
        setpoints=setpoints,
        reasons={bid: reasons[bid] for bid in setpoints},
        remaining_w=remaining + 0.0,
        excluded={**first.excluded, **second.excluded},
        bound_limits=tuple(sorted({*first.bound_limits, *second.bound_limits})),
    )
