"""The distribution algorithm: split a requested power across battery/inverter pairs.

Theory of operation
-------------------
A request asks for a power ``P`` (W, + charge, − discharge) over some pairs. We work on the
magnitude ``M = |P|`` in the request's direction and restore the sign at the end. For each pair
and direction (``spec/distribution.md``):

* available SoC ``a``: headroom to the SoC bound in that direction (``0`` at or past it);
* cap ``u``: the largest magnitude both battery and inverter allow;
* minimum ``m``: the smallest non-zero magnitude both allow (their exclusion bound);
* weight ``w = capacity/Σcapacity · a^e``, and ``w = 0`` whenever ``a = 0`` (even for ``e = 0``).

A pair may take exactly ``0`` or any magnitude in ``[m, u]``. The rules, in order:

1. ``M ≈ 0`` (≤ 1 nW): every setpoint is exactly ``0``.
2. Pairs with ``w = 0``, ``u = 0`` or ``m > u`` get exactly ``0`` and no leftover.
3. If the others' caps sum to at most ``M``, all run at their cap; the rest is ``remaining``.
4. Otherwise the split is proportional to weight (``x = M·w/Σw``) wherever nothing binds;
   caps that bind are filled to the cap and the overflow re-shared in proportion to weight
   (water-filling), so every pair that is not at a bound has the same ``x/w``.
5. A pair whose share falls below its minimum is dropped to ``0``, the smallest weight first,
   and the others re-filled — as long as the rest can still take ``M``. If dropping it would
   leave ``M`` unreachable, such pairs run at their minimum instead ("raised to minimum").
6. If the minimums of the pairs still running exceed ``M``, an exact search chooses which pairs
   run: keep the largest weights, meet ``M`` exactly if any choice can, else deliver the largest
   magnitude below ``M``. In general this is subset-sum, so the search stops after
   :data:`SEARCH_BUDGET` steps and then uses the best choice it found; it only runs for
   fleets whose allowed windows ``[m, u]`` are narrow compared with the request.

Every pair in the result carries a :class:`Reason`. Pairs with non-finite or implausible
telemetry (or power bounds unknown on both battery and inverter) are *excluded*: they are not in
``setpoints`` and ``excluded`` says why, naming the field. A ``nan`` power bound on one side of
a pair is replaced by the other side's; this is how the Microgrid API's "no bounds" is read.

Speed and numerics
------------------
Everything that depends only on a pair's telemetry is worked out once, when its :class:`Pair`
is built (in the daemon: when telemetry arrives): the quantities above, whether the pair can
take power at all, and for the default exponent its weight and the ratios ``u/w`` and ``m/w``.
A distribution then reads one tuple per pair; "nothing binds" is ``min(u/w) > λ > max(m/w)``
for the level ``λ = M/Σw``, and the water level only sorts pairs when a cap binds.

Pairs are put in battery-id order first and every tie is broken by id, so permuting the input
permutes the output exactly. Running sums only *classify* pairs (capped, at minimum, free); the
final level is recomputed with ``math.fsum`` from that classification, so conservation holds to
rounding however many pairs were capped on the way, and a final guard keeps every setpoint
inside its window even for pairs within rounding of a breakpoint.
"""

from __future__ import annotations

import enum
import math
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import accumulate, chain, compress
from operator import attrgetter, ge, itemgetter, lt, truediv
from typing import Any, ClassVar, Final, TypeAlias

import attrs

from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds

ZERO_POWER_W = 1e-9
"""Requests at or below this magnitude are zero: 1 nW is far below any inverter's resolution."""

PLAUSIBLE_LIMIT = 1e15
"""Largest magnitude of any telemetry value we believe (W, Wh or %). A petawatt is beyond any
site; the limit keeps every sum over a fleet finite, so no arithmetic can overflow."""

MIN_WEIGHT = 1e-300
"""Floor for the weight of a pair with capacity and headroom, whose exact weight can underflow
next to the others' (a subnormal capacity, say). Its share stays negligible, but it remains a
candidate, as the spec's "w > 0" says, and so takes its cap when everything else is full."""

SEARCH_BUDGET = 20_000
"""Steps the exact search over exclusion minimums may take (about 20 ms in the worst case)."""

_MARGIN = 1e-12
"""Relative distance from a breakpoint within which the fast path defers to the exact one, so
rounding in ``λ·w`` can never step over a cap or under a minimum."""

_TINY_TOTAL_WEIGHT = 1e-100
"""Below this, weights are re-scaled before the level ``M/Σw`` is taken, so it stays finite."""


class Reason(enum.StrEnum):
    """Why a pair got the power it got."""

    PROPORTIONAL = "proportional"
    """Its share by weight; no bound was in the way."""
    CAPPED = "capped"
    """Held at the largest magnitude battery and inverter allow."""
    RAISED_TO_MINIMUM = "raised_to_minimum"
    """Its share was below its exclusion minimum; it runs at that minimum so the request can
    be met."""
    DROPPED_BELOW_MINIMUM = "dropped_below_minimum"
    """Its share was below its exclusion minimum (or the minimums could not all be met); set to
    0 and its share given to the others."""
    MINIMUM_ABOVE_CAP = "minimum_above_cap"
    """Its exclusion minimum exceeds its cap, so only 0 is allowed."""
    ZERO_POWER_BOUND = "zero_power_bound"
    """Its bounds allow no power in this direction."""
    AT_SOC_LIMIT = "at_soc_limit"
    """Its SoC is at or past its bound in this direction."""
    ZERO_CAPACITY = "zero_capacity"
    """It reports zero capacity."""
    ZERO_REQUEST = "zero_request"
    """The request is 0 W."""
    EQUAL_SHARE = "equal_share"
    """Not working, included on request: an equal share of what the working pairs left."""


_Status: TypeAlias = "Reason | str | None"
"""A pair's standing in one direction: ``None`` if it can take power, the :class:`Reason` why
it cannot, or a plain ``str`` saying why it is excluded altogether (bad telemetry)."""

_Row: TypeAlias = tuple[int, int, _Status, float, float, float, float, float, float, float]
"""A pair in one direction, in the order of the ``_ID`` ... ``_AVAILABLE`` positions below."""

# Positions in a _Row: the ids, the status, the weight for exponent 1 (`capacity·a`, floored at
# MIN_WEIGHT) with `u/w` and `m/w`, then `u`, `m`, the capacity and `a`.
_ID: Final = 0
_INVERTER: Final = 1
_STATUS: Final = 2
_WEIGHT: Final = 3
_CAP_RATIO: Final = 4
_MIN_RATIO: Final = 5
_CAP: Final = 6
_MIN: Final = 7
_CAPACITY: Final = 8
_AVAILABLE: Final = 9

_Picker: TypeAlias = Callable[[Sequence[Any]], Sequence[Any]]
"""Selects the candidates' entries from a column (any element type)."""

_Columns: TypeAlias = tuple[
    Sequence[float], Sequence[float], Sequence[float], Sequence[float], Sequence[float]
]
"""The candidates' ``(w, m, u, u/w, m/w)``."""


class DistributionInputError(ValueError):
    """The caller passed arguments the algorithm does not accept (a bug at the call site).

    Attributes:
        field: The offending argument.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# --- per-pair quantities, worked out when a Pair is built ---------------------------------


def _merge_bound(
    battery: float, inverter: float, tighter: Callable[[float, float], float]
) -> float:
    """Combine one bound of battery and inverter: the tighter one; an unknown side yields."""
    if battery != battery:  # nan
        return inverter
    if inverter != inverter:
        return battery
    return tighter(battery, inverter)


def _merged(battery: PowerBounds, inverter: PowerBounds) -> tuple[tuple[str, float], ...]:
    return (
        ("inclusion_lower", _merge_bound(battery.inclusion_lower, inverter.inclusion_lower, max)),
        ("exclusion_lower", _merge_bound(battery.exclusion_lower, inverter.exclusion_lower, min)),
        ("exclusion_upper", _merge_bound(battery.exclusion_upper, inverter.exclusion_upper, max)),
        ("inclusion_upper", _merge_bound(battery.inclusion_upper, inverter.inclusion_upper, min)),
    )


def _envelope(battery: BatterySnapshot, inverter: InverterSnapshot) -> tuple[_Row, _Row]:
    """The pair's rows for charging and for discharging (see the module docstring)."""
    bid, iid = battery.component_id, inverter.component_id
    merged = _merged(battery.bounds, inverter.bounds)
    problem = _telemetry_problem(battery, iid, merged)
    if problem is not None:
        dead: _Row = (bid, iid, problem, 0.0, math.inf, 0.0, 0.0, 0.0, 0.0, 0.0)
        return dead, dead
    incl_lower, excl_lower, excl_upper, incl_upper = (float(v) for _, v in merged)
    soc, capacity = float(battery.soc_pct), float(battery.capacity_wh)
    # `0.0 - x` and `x + 0.0` rather than `-x` and `x`: no -0.0, which would print as "-0.0".
    up = max(0.0, battery.soc_upper_pct - soc)
    down = max(0.0, soc - battery.soc_lower_pct)
    return (
        _row(bid, iid, capacity, up, incl_upper + 0.0, excl_upper + 0.0),
        _row(bid, iid, capacity, down, 0.0 - incl_lower, 0.0 - excl_lower),
    )


def _telemetry_problem(
    battery: BatterySnapshot, inverter_id: int, merged: Iterable[tuple[str, float]]
) -> str | None:
    """Why the pair's telemetry cannot be used, naming the field; None if it can."""
    bid = battery.component_id
    for name, value in (
        ("soc_pct", battery.soc_pct),
        ("soc_lower_pct", battery.soc_lower_pct),
        ("soc_upper_pct", battery.soc_upper_pct),
        ("capacity_wh", battery.capacity_wh),
    ):
        if not math.isfinite(value):
            return f"battery {bid}: {name} is {value}"
        if abs(value) > PLAUSIBLE_LIMIT:
            return f"battery {bid}: {name} is implausible ({value:g})"
    if battery.capacity_wh < 0.0:
        return f"battery {bid}: capacity_wh is negative ({battery.capacity_wh:g})"
    for name, value in merged:
        if math.isnan(value):
            return (
                f"battery {bid}: power bound {name} unknown on both the battery and "
                f"inverter {inverter_id}"
            )
        if not abs(value) <= PLAUSIBLE_LIMIT:
            return f"battery {bid}: power bound {name} is not usable ({value:g} W)"
    return None


def _row(bid: int, iid: int, capacity: float, available: float, cap: float, minimum: float) -> _Row:
    status: _Status = None
    if capacity <= 0.0:
        status = Reason.ZERO_CAPACITY
    elif available <= 0.0:
        status = Reason.AT_SOC_LIMIT
    elif minimum > cap:
        status = Reason.MINIMUM_ABOVE_CAP
    elif cap <= 0.0:
        status = Reason.ZERO_POWER_BOUND
    if status is not None:
        return (bid, iid, status, 0.0, math.inf, 0.0, cap, minimum, capacity, available)
    weight = max(capacity * available, MIN_WEIGHT)
    return (
        bid,
        iid,
        None,
        weight,
        cap / weight,
        minimum / weight,
        cap,
        minimum,
        capacity,
        available,
    )


@attrs.frozen(kw_only=True)
class Pair:
    """A battery and the inverter that commands it: the algorithm's input.

    What depends only on the telemetry is worked out here, once, so that the daemon pays for
    it when telemetry arrives rather than on every request.

    Attributes:
        battery: The battery's latest telemetry.
        inverter: Its inverter's latest telemetry.
        problem: Why the pair cannot be used, naming the field; ``None`` if it can.
    """

    battery: BatterySnapshot
    inverter: InverterSnapshot
    problem: str | None = attrs.field(init=False, eq=False)
    charge_row: _Row = attrs.field(init=False, eq=False, repr=False)
    discharge_row: _Row = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        charge, discharge = _envelope(self.battery, self.inverter)
        object.__setattr__(self, "charge_row", charge)
        object.__setattr__(self, "discharge_row", discharge)
        status = charge[_STATUS]
        object.__setattr__(self, "problem", None if isinstance(status, Reason) else status)

    @property
    def battery_id(self) -> int:
        """The battery's component id."""
        return self.battery.component_id

    @property
    def inverter_id(self) -> int:
        """The inverter's component id."""
        return self.inverter.component_id


_CHARGE_ROW = attrgetter("charge_row")
_DISCHARGE_ROW = attrgetter("discharge_row")


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
    """

    power_w: float
    setpoints: Mapping[int, float]
    reasons: Mapping[int, Reason]
    remaining_w: float
    excluded: Mapping[int, str] = attrs.field(factory=dict)

    @property
    def placed_w(self) -> float:
        """Total power the setpoints add up to."""
        return math.fsum(self.setpoints.values())


# --- distribute ----------------------------------------------------------------------------


def _check_arguments(power_w: float, exponent: float) -> None:
    if isinstance(power_w, bool) or not isinstance(power_w, int | float):
        raise DistributionInputError("power_w", f"must be a number, got {power_w!r}")
    if not math.isfinite(power_w):
        raise DistributionInputError("power_w", f"must be finite, got {power_w!r}")
    if isinstance(exponent, bool) or not isinstance(exponent, int | float):
        raise DistributionInputError("exponent", f"must be a number, got {exponent!r}")
    if not (math.isfinite(exponent) and exponent >= 0.0):
        raise DistributionInputError("exponent", f"must be finite and >= 0, got {exponent!r}")


def _check_unique(battery_ids: Sequence[int], inverter_ids: Sequence[int]) -> None:
    for name, ids in (("battery", battery_ids), ("inverter", inverter_ids)):
        if len(set(ids)) != len(ids):
            dupes = sorted(i for i, count in Counter(ids).items() if count > 1)
            raise DistributionInputError("pairs", f"duplicate {name} ids {dupes}")


def distribute(power_w: float, pairs: Sequence[Pair], *, exponent: float = 1.0) -> Distribution:
    """Split ``power_w`` across ``pairs`` (see the module docstring for the rules).

    Args:
        power_w: Requested power, W (+ charge, − discharge). Finite.
        pairs: The usable pairs; battery ids and inverter ids unique. Not empty.
        exponent: ``e ≥ 0`` in the weight ``capacity share · available SoC^e``.

    Returns:
        The setpoints, why each pair got its setpoint, and what could not be placed.

    Raises:
        DistributionInputError: An argument is invalid; the error names it. Telemetry never
            raises: bad telemetry excludes its pair.
    """
    _check_arguments(power_w, exponent)
    if not pairs:
        raise DistributionInputError("pairs", "must not be empty")
    rows: Sequence[_Row] = sorted(map(_CHARGE_ROW if power_w > 0 else _DISCHARGE_ROW, pairs))
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    _check_unique(columns[_ID], columns[_INVERTER])
    excluded: dict[int, str] = {}
    if columns[_STATUS].count(None) != len(rows):
        excluded = {
            bid: status
            for bid, status in zip(columns[_ID], columns[_STATUS], strict=True)
            if isinstance(status, str) and not isinstance(status, Reason)
        }
        if excluded:
            rows = [row for row in rows if row[_ID] not in excluded]
            columns = list(zip(*rows, strict=True)) if rows else [()] * 10
    ids: Sequence[int] = columns[_ID]
    if abs(power_w) <= ZERO_POWER_W or not rows:
        return Distribution(
            power_w=power_w,
            setpoints=dict.fromkeys(ids, 0.0),
            reasons=dict.fromkeys(ids, Reason.ZERO_REQUEST),
            remaining_w=0.0 if abs(power_w) <= ZERO_POWER_W else float(power_w),
            excluded=excluded,
        )

    def candidate_columns(pick: _Picker) -> _Columns:
        m, u = pick(columns[_MIN]), pick(columns[_CAP])
        if exponent == 1.0:
            return (
                pick(columns[_WEIGHT]),
                m,
                u,
                pick(columns[_CAP_RATIO]),
                pick(columns[_MIN_RATIO]),
            )
        w = _weights(pick(columns[_CAPACITY]), pick(columns[_AVAILABLE]), exponent)
        return w, m, u, list(map(truediv, u, w)), list(map(truediv, m, w))

    return _place(power_w, ids, columns[_STATUS], candidate_columns, excluded)


def _weights(
    capacities: Sequence[float], available: Sequence[float], exponent: float
) -> list[float]:
    """``capacity · a^e`` for candidates (capacity > 0, a > 0), for exponents other than 1.

    Only ratios of weights matter, so the spec's ``capacity/Σcapacity`` factor is left out;
    ``a`` is normalised by its largest value so ``a^e`` cannot overflow, and every candidate
    keeps a positive weight (:data:`MIN_WEIGHT`).
    """
    if exponent == 0.0:
        weights = list(capacities)
    else:
        a_scale = 1.0 / max(available)
        weights = [
            c * (a * a_scale) ** exponent for c, a in zip(capacities, available, strict=True)
        ]
    if min(weights) < MIN_WEIGHT:
        weights = [w if w >= MIN_WEIGHT else MIN_WEIGHT for w in weights]
    return weights


def _pick(indices: Sequence[int]) -> _Picker:
    """``itemgetter`` that always returns a tuple (``itemgetter(k)`` returns the item)."""
    if len(indices) == 1:
        only = indices[0]
        return lambda column: (column[only],)
    return itemgetter(*indices)


def _all(column: Sequence[Any]) -> Sequence[Any]:
    return column


def _place(
    power_w: float,
    ids: Sequence[int],
    status: Sequence[_Status],
    candidate_columns: Callable[[_Picker], _Columns],
    excluded: dict[int, str],
) -> Distribution:
    """Split ``|power_w|`` over the pairs whose status is ``None``, then restore the sign."""
    idle: list[int] = []
    xs: list[float] = []
    why: list[Reason] = []
    placed = 0.0
    if status.count(None) == len(status):
        candidate_ids: Sequence[int] = ids
        placed, xs, why = split(abs(power_w), *candidate_columns(_all))
    else:
        candidates = [k for k, s in enumerate(status) if s is None]
        idle = [k for k, s in enumerate(status) if s is not None]
        candidate_ids = ()
        if candidates:
            pick = _pick(candidates)
            candidate_ids = pick(ids)
            placed, xs, why = split(abs(power_w), *candidate_columns(pick))
    magnitude = abs(power_w)
    short = magnitude - placed if placed < magnitude else 0.0
    if power_w < 0:
        xs = [0.0 - x for x in xs]
        short = 0.0 - short
    setpoints: dict[int, float] = dict(zip(candidate_ids, xs, strict=True))
    reasons: dict[int, Reason] = dict(zip(candidate_ids, why, strict=True))
    for k in idle:
        setpoints[ids[k]] = 0.0
        reasons[ids[k]] = status[k]  # type: ignore[assignment]  # a Reason: excluded ones are gone
    return Distribution(
        power_w=power_w, setpoints=setpoints, reasons=reasons, remaining_w=short, excluded=excluded
    )


# --- the split over candidates (w > 0, u > 0, m <= u) -------------------------------------


def split(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    cap_ratio: Sequence[float],
    min_ratio: Sequence[float],
) -> tuple[float, list[float], list[Reason]]:
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
        return target, [target * (x / total_w) for x in w], [Reason.PROPORTIONAL] * len(w)
    total_cap = math.fsum(u)
    if total_cap <= target:
        return total_cap, list(u), [Reason.CAPPED] * len(w)
    return _split_binding(target, w, m, u, cap_ratio, min_ratio, total_w, lowest_cap, total_cap)


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
) -> tuple[float, list[float], list[Reason]]:
    """Water-filling with caps, then the exclusion minimums (rules 4 to 6)."""
    n = len(w)
    level = _CapLevel(target, w, u, cap_ratio, total_w, lowest_cap)
    # Rule 5: the pairs below their minimum at the first level, smallest weight first (ties in
    # id order: the sort is stable). The level only rises as pairs are dropped, so a pair that
    # is not below its minimum at the first level never will be.
    start, capped = level.value, level.capped
    below = [k for k in compress(range(n), m) if min_ratio[k] > start and not capped[k]]
    below.sort(key=w.__getitem__)
    dropped, stuck = level.drop_below_minimum(below, m, min_ratio, total_cap)
    if not stuck:
        return _assemble(target, w, m, u, level.capped, [], dropped, level.next_cap_ratio())
    gone = set(dropped)
    members = [k for k in range(n) if k not in gone]
    if math.fsum(m[k] for k in members) <= target:
        lam = _clamp_level(target, w, m, u, members)
        return _classify(target, w, m, u, lam, dropped)
    # Rule 6: the running pairs' minimums exceed the target. Choose afresh among all.
    chosen, reachable = _search(target, w, m, u)
    rejected = [k for k in range(n) if m[k] > 0.0 and k not in chosen]
    members = [k for k in range(n) if m[k] <= 0.0 or k in chosen]
    if reachable >= target:
        return _classify(target, w, m, u, _clamp_level(target, w, m, u, members), rejected)
    xs = [0.0] * n
    reasons = [Reason.DROPPED_BELOW_MINIMUM] * n
    for k in members:
        xs[k] = u[k]
        reasons[k] = Reason.CAPPED
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
        self._order: list[int] = []
        self._pos = 0
        self.capped = [False] * n
        self.running = [True] * n
        level = self._rise(target / total_w, _WALK_STEPS)
        if self._order and self._pos < n and level >= ratios[self._order[self._pos]]:
            level = self._rise_by_bisection()
        self.value = level

    def drop_below_minimum(
        self, below: Sequence[int], m: Sequence[float], min_ratio: Sequence[float], total_cap: float
    ) -> tuple[list[int], bool]:
        """Rule 5: drop each pair of ``below`` (in order) still below its minimum.

        A pair is dropped only if the others' caps can still take the whole target; the walk
        stops at the first one that cannot be ("stuck").

        Returns:
            The dropped pairs and whether the walk got stuck.
        """
        w, u, capped, running = self._w, self._u, self.capped, self.running
        goal, running_cap, level = self._goal, total_cap, self.value
        dropped: list[int] = []
        for k in below:
            if capped[k] or min_ratio[k] <= level:
                continue
            if running_cap - u[k] < goal:
                self.value = level
                return dropped, True
            running_cap -= u[k]
            dropped.append(k)
            running[k] = False
            self._free_w -= w[k]
            self._free_n -= 1
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
        while pos < end and steps:
            k = order[pos]
            if running[k]:
                if ratios[k] > level:
                    break
                capped[k] = True
                target -= u[k]
                free_w -= w[k]
                free_n -= 1
                level = target / free_w if free_n and free_w > 0.0 else math.inf
                steps -= 1
            pos += 1
        self._pos, self._target, self._free_w, self._free_n = pos, target, free_w, free_n
        return level

    def _rise_by_bisection(self) -> float:
        """Like :meth:`_rise`, for many pairs: binary search over prefix sums in ratio order.

        Only before any pair is dropped, so every pair from ``_pos`` on is running. Pair ``j``
        of the rest caps iff its ratio is at most the level the ``j`` before it leave; that is
        true up to some ``j`` and false after it.
        """
        rest = self._order[self._pos :]
        pick = _pick(rest)
        ratios = pick(self._ratios)
        caps = [0.0, *accumulate(pick(self._u))]
        weights = [0.0, *accumulate(pick(self._w))]
        target, free_w = self._target, self._free_w
        low, high = 0, len(rest)
        while low < high:
            mid = (low + high) // 2
            left = free_w - weights[mid]
            if left > 0.0 and ratios[mid] * left <= target - caps[mid]:
                low = mid + 1
            else:
                high = mid
        capped = self.capped
        for k in rest[:low]:
            capped[k] = True
        self._pos += low
        self._target = target - caps[low]
        self._free_w = free_w - weights[low]
        self._free_n -= low
        return self._free_level()


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
    constant, slope = math.fsum(m[k] for k in members), 0.0
    for at, kind, k in events:
        if constant + slope * at >= target:
            break
        if kind == 0:
            constant -= m[k]
            slope += w[k]
        else:
            constant += u[k]
            slope -= w[k]
    else:
        return math.inf
    return (target - constant) / slope if slope > 0.0 else 0.0


def _classify(
    target: float,
    w: Sequence[float],
    m: Sequence[float],
    u: Sequence[float],
    lam: float,
    dropped: Sequence[int],
) -> tuple[float, list[float], list[Reason]]:
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
) -> tuple[float, list[float], list[Reason]]:
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
        rest = target - math.fsum(chain(compress(u, high), [m[k] for k in low]))
        free_w = math.fsum(compress(w, free_mask))
    exact = rest / free_w
    # Start from the larger class and write the smaller one.
    if 2 * len(free) < n:
        xs, reasons = list(u), [Reason.CAPPED] * n
        for k in free:
            xs[k] = rest * (w[k] / free_w)
            reasons[k] = Reason.PROPORTIONAL
    else:
        xs, reasons = [rest * (x / free_w) for x in w], [Reason.PROPORTIONAL] * n
        for k in compress(range(n), high):
            xs[k] = u[k]
            reasons[k] = Reason.CAPPED
    for k in low:
        xs[k] = m[k]
        reasons[k] = Reason.RAISED_TO_MINIMUM
    for k in dropped:
        xs[k] = 0.0
        reasons[k] = Reason.DROPPED_BELOW_MINIMUM
    # A free pair within rounding of a breakpoint may sit a hair outside [m, u].
    if exact > cap_guard * (1.0 - _MARGIN):
        for k in free:
            if xs[k] > u[k]:
                xs[k] = u[k]
    for k in compress(range(n), m):
        if xs[k] < m[k] and reasons[k] is Reason.PROPORTIONAL:
            xs[k] = m[k]
    return target, xs, reasons


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


# --- aggregate bounds and the request check ----------------------------------------------


def aggregate_bounds(pairs: Iterable[Pair]) -> PowerBounds:
    """The bounds of a set of pairs, for the request check.

    ``inclusion_upper`` is the sum of the caps of the pairs that can charge, ``exclusion_upper``
    the smallest minimum among them (the smallest magnitude one pair alone can take; the
    reference design summed the minimums instead); likewise for discharging. A direction in
    which no pair can take power has both bounds ``0``.
    """
    pairs = list(pairs)
    upper = _direction_bounds(map(_CHARGE_ROW, pairs))
    lower = _direction_bounds(map(_DISCHARGE_ROW, pairs))
    return PowerBounds(
        inclusion_lower=0.0 - lower[1],
        exclusion_lower=0.0 - lower[0],
        exclusion_upper=upper[0],
        inclusion_upper=upper[1],
    )


def _direction_bounds(rows: Iterable[_Row]) -> tuple[float, float]:
    """(smallest minimum, sum of caps) of the rows that can take power in their direction."""
    caps: list[float] = []
    minimum = math.inf
    for row in rows:
        if row[_STATUS] is None:
            caps.append(row[_CAP])
            minimum = min(minimum, row[_MIN])
    if not caps:
        return 0.0, 0.0
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


def split_equally(power_w: float, known: Mapping[int, Sequence[PowerBounds]]) -> Distribution:
    """Split ``power_w`` equally across batteries that are not working.

    Used for ``include_broken_batteries``: what the usable pairs could not take is shared
    equally, clamped to each pair's last known bounds (the tighter of battery and inverter; a
    pair with no known bounds takes any share). This overrides the status tracker's
    protection.

    Args:
        power_w: Power to share, W. Finite.
        known: Battery id to the last known bounds of its battery and of its inverter (none,
            one or both).

    Returns:
        The equal shares (reason :attr:`Reason.EQUAL_SHARE` where nothing binds).
    """
    if not math.isfinite(power_w):
        raise DistributionInputError("power_w", f"must be finite, got {power_w!r}")
    ids = sorted(known)
    magnitude = abs(power_w)
    if magnitude <= ZERO_POWER_W or not ids:
        return Distribution(
            power_w=power_w,
            setpoints=dict.fromkeys(ids, 0.0),
            reasons=dict.fromkeys(ids, Reason.ZERO_REQUEST),
            remaining_w=0.0 if magnitude <= ZERO_POWER_W else float(power_w),
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
        cap = min(max(edge, 0.0), PLAUSIBLE_LIMIT) if math.isfinite(edge) else PLAUSIBLE_LIMIT
        floor = max(gap, 0.0) if math.isfinite(gap) else 0.0
        caps.append(cap)
        minimums.append(floor)
        status.append(
            Reason.MINIMUM_ABOVE_CAP
            if floor > cap
            else Reason.ZERO_POWER_BOUND
            if cap <= 0
            else None
        )

    def equal(pick: _Picker) -> _Columns:
        m, u = pick(minimums), pick(caps)
        return [1.0] * len(m), m, u, u, m  # with w = 1, u/w = u and m/w = m

    shared = _place(power_w, ids, status, equal, {})
    return attrs.evolve(
        shared,
        reasons={
            bid: Reason.EQUAL_SHARE if why is Reason.PROPORTIONAL else why
            for bid, why in shared.reasons.items()
        },
    )


def combine(first: Distribution, second: Distribution) -> Distribution:
    """The union of two distributions over disjoint pairs, for the same request.

    ``second`` places what ``first`` left (``second.power_w == first.remaining_w``).
    """
    overlap = first.setpoints.keys() & second.setpoints.keys()
    if overlap:
        raise DistributionInputError("second", f"pairs {sorted(overlap)} appear in both")
    setpoints = dict(sorted({**first.setpoints, **second.setpoints}.items()))
    reasons = {**first.reasons, **second.reasons}
    return Distribution(
        power_w=first.power_w,
        setpoints=setpoints,
        reasons={bid: reasons[bid] for bid in setpoints},
        remaining_w=second.remaining_w,
        excluded={**first.excluded, **second.excluded},
    )
