"""Per-pair quantities: what one battery/inverter pair can take in each direction.

Theory of operation
-------------------
For each pair and direction (``spec/distribution.md``):

* available SoC ``a``: headroom to the SoC bound in that direction (``0`` at or past it);
* cap ``u``: the largest magnitude both battery and inverter allow;
* minimum ``m``: the smallest non-zero magnitude both allow (their exclusion bound);
* weight ``w = capacity/Σcapacity · a^e``, and ``w = 0`` whenever ``a = 0`` (even for ``e = 0``).

SoC derating (``distribution.derate_band_pct = d``, off at 0): a pair whose ``a`` is below
``d`` has its cap scaled by ``a/d``, linearly to 0 at its SoC bound; its weight stays. The
derated cap is ``u·a/d`` rounded toward zero, the largest float not above the exact value, so
no pair is ever sent more than the spec allows, and a float minimum is above the derated cap
exactly when it is above the exact one. The band is a setting, not telemetry: it is applied per
request (:func:`derate`) to the rows of the pairs inside it; the others' rows are used as built.

A pair may take exactly ``0`` or any magnitude in ``[m, u]``. Pairs with ``w = 0``, ``u = 0``
or ``m > u`` cannot take power at all (rule 2); their row says why, as an :class:`Allotment`.

A ``nan`` power bound on one side of a pair is replaced by the other side's; this is how the
Microgrid API's "no bounds" is read. Pairs with non-finite or implausible telemetry (or power
bounds unknown on both battery and inverter) are *excluded*: their row carries a message naming
the field instead of an :class:`Allotment`. Which battery values are bad is decided by the rule the
status tracker shares (:func:`~distributord.core.model.bad_battery_values`); the distribution
is the strictest user and excludes the pair for any fault it finds.

Everything that depends only on a pair's telemetry is worked out once, when its :class:`Pair`
is built (in the daemon: when telemetry arrives): the quantities above, whether the pair can
take power at all, and for the default exponent its weight and the ratios ``u/w`` and ``m/w``.
Only ratios of weights matter, so the ``capacity/Σcapacity`` factor is left out; other
exponents get their weights per request (:func:`_weights`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter
from typing import NamedTuple, TypeAlias, assert_never

import attrs

from distributord.core.model import (
    PLAUSIBLE_LIMIT,
    BatterySnapshot,
    InverterSnapshot,
    PowerBounds,
    ValueFault,
    bad_battery_values,
)

MAX_EXPONENT = 16.0
"""The top of the exponent's documented range, ``[0, 16]`` (``spec/distribution.md``; the
config refuses others). At 16 a battery with half the headroom of another gets 1/65,536 of its
share: convergence gains little beyond it. Larger exponents still give a valid split (the
weights are handled in any range), only the config refuses them."""

MIN_WEIGHT = 1e-300
"""Floor for the weight of a pair with capacity and headroom, whose exact weight can underflow
next to the others' (a subnormal capacity, say). Its share stays negligible, but it remains a
candidate, as the spec's "w > 0" says, and so takes its cap when everything else is full."""


class Allotment(enum.StrEnum):
    """How a pair's power was allotted: why it got the power it got (``Distribution.reasons``).

    Not :class:`~distributord.core.status.Reason`, which says why a battery is not working.
    """

    PROPORTIONAL = "proportional"
    """Its share by weight; no bound was in the way."""
    CAPPED = "capped"
    """Held at the largest magnitude battery and inverter allow (derated near its SoC bound,
    ``distribution.derate_band_pct``)."""
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
    SEARCH_BUDGET_ENDED = "search_budget_ended"
    """Not chosen to run: the search over exclusion minimums ran out of its time budget before
    it found a choice that meets the request, and kept the best it had found; the shortfall is
    in the result's excess."""
    LIMITED = "limited"
    """Held below its share by a group limit (``[[limits]]``: a feeder, a fuse, the grid
    connection) that bound: it shares the limit's maximum with the limit's other members."""


_Status: TypeAlias = "Allotment | str | None"
"""A pair's standing in one direction: ``None`` if it can take power, the :class:`Allotment` why
it cannot, or a plain ``str`` saying why it is excluded altogether (bad telemetry)."""


class Row(NamedTuple):
    """A pair in one direction: everything a distribution reads about it.

    Built twice per :class:`Pair` (charging, discharging) when the pair is built. A pair that
    cannot take power in this direction has weight ``0``, ``cap_ratio`` ``inf`` and
    ``min_ratio`` ``0``; an excluded pair (bad telemetry) has all its quantities ``0`` except
    ``cap_ratio``.
    """

    battery_id: int
    """The battery's component id."""
    inverter_id: int
    """The component id of the inverter that commands it."""
    status: Allotment | str | None
    """``None`` if the pair can take power in this direction, the :class:`Allotment` why it
    cannot, or a plain ``str`` saying why it is excluded altogether (bad telemetry)."""
    weight: float
    """``w`` for exponent 1: ``capacity_wh · available_pct``, floored at :data:`MIN_WEIGHT`."""
    cap_ratio: float
    """``u/w``: the level at which the pair reaches its cap."""
    min_ratio: float
    """``m/w``: the level at which the pair reaches its minimum."""
    cap_w: float
    """``u``: the largest magnitude battery and inverter allow, W (derated by :func:`derate`
    in a request inside the derating band)."""
    min_w: float
    """``m``: the smallest non-zero magnitude battery and inverter allow, W."""
    capacity_wh: float
    """The battery's capacity, Wh."""
    available_pct: float
    """``a``: SoC headroom to the bound in this direction, percentage points (``0`` at or past
    it)."""


class RowColumns(NamedTuple):
    """Rows transposed (``RowColumns._make(zip(*rows))``): one sequence per :class:`Row` field.

    Same fields in the same order as :class:`Row` (a test keeps them so), so that a
    distribution reads whole columns by name.
    """

    battery_id: Sequence[int]
    inverter_id: Sequence[int]
    status: Sequence[Allotment | str | None]
    weight: Sequence[float]
    cap_ratio: Sequence[float]
    min_ratio: Sequence[float]
    cap_w: Sequence[float]
    min_w: Sequence[float]
    capacity_wh: Sequence[float]
    available_pct: Sequence[float]


_make_row = Row._make
"""A :class:`Row` from a tuple in field order, for :func:`_row`, which runs on every Pair build."""


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


def _envelope(battery: BatterySnapshot, inverter: InverterSnapshot) -> tuple[Row, Row]:
    """The pair's rows for charging and for discharging (see the module docstring)."""
    bid, iid = battery.component_id, inverter.component_id
    merged = _merged(battery.bounds, inverter.bounds)
    problem = _telemetry_problem(battery, iid, merged)
    if problem is not None:
        dead = Row(
            battery_id=bid,
            inverter_id=iid,
            status=problem,
            weight=0.0,
            cap_ratio=math.inf,
            min_ratio=0.0,
            cap_w=0.0,
            min_w=0.0,
            capacity_wh=0.0,
            available_pct=0.0,
        )
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
    """Why the pair's telemetry cannot be used, naming the field; None if it can.

    Any of the battery's bad values (:func:`~distributord.core.model.bad_battery_values`)
    excludes the pair, the first one named; so does a power bound unknown on both sides or
    not plausible.
    """
    bid = battery.component_id
    bad = bad_battery_values(battery)
    if bad:
        name, value = bad[0].field, bad[0].value
        match bad[0].fault:
            case ValueFault.NOT_FINITE:
                return f"battery {bid}: {name} is {value}"
            case ValueFault.IMPLAUSIBLE:
                return f"battery {bid}: {name} is implausible ({value:g})"
            case ValueFault.NEGATIVE:
                return f"battery {bid}: {name} is negative ({value:g})"
            case unexpected:
                assert_never(unexpected)
    for name, value in merged:
        if math.isnan(value):
            return (
                f"battery {bid}: power bound {name} unknown on both the battery and "
                f"inverter {inverter_id}"
            )
        if not abs(value) <= PLAUSIBLE_LIMIT:
            return f"battery {bid}: power bound {name} is not usable ({value:g} W)"
    return None


def _row(bid: int, iid: int, capacity: float, available: float, cap: float, minimum: float) -> Row:
    status: _Status = None
    if capacity <= 0.0:
        status = Allotment.ZERO_CAPACITY
    elif available <= 0.0:
        status = Allotment.AT_SOC_LIMIT
    elif minimum > cap:
        status = Allotment.MINIMUM_ABOVE_CAP
    elif cap <= 0.0:
        status = Allotment.ZERO_POWER_BOUND
    # A tuple in Row's field order: `Row(battery_id=..., ...)` costs 0.4 µs more per row, paid
    # for every pair whose telemetry changed since the last request.
    if status is not None:
        return _make_row((bid, iid, status, 0.0, math.inf, 0.0, cap, minimum, capacity, available))
    weight = max(capacity * available, MIN_WEIGHT)
    return _make_row(
        (bid, iid, None, weight, cap / weight, minimum / weight, cap, minimum, capacity, available)
    )


def derate(rows: Sequence[Row], band_pct: float) -> Sequence[Row]:
    """``rows`` with the caps of the pairs inside the derating band scaled down.

    A row that can take power (status ``None``) with available SoC ``a < band_pct`` gets the
    cap ``u·a/band_pct`` rounded toward zero (:func:`_scaled_cap`), and its status is worked
    out again: a derated cap below the pair's minimum leaves it only 0
    (:attr:`Allotment.MINIMUM_ABOVE_CAP`), one that rounds to 0 W allows nothing
    (:attr:`Allotment.ZERO_POWER_BOUND`). The weight is unchanged.

    Args:
        rows: The pairs' rows in one direction.
        band_pct: ``d``, percentage points; ``0`` turns derating off (``rows`` is returned
            as it is). Finite and ``>= 0``: :func:`~.placement.distribute` checks it.

    Returns:
        The rows, derated where inside the band, in the same order.
    """
    if band_pct <= 0.0:
        return rows
    return [
        _row(
            row.battery_id,
            row.inverter_id,
            row.capacity_wh,
            row.available_pct,
            _scaled_cap(row.cap_w, row.available_pct, band_pct),
            row.min_w,
        )
        if row.status is None and row.available_pct < band_pct
        else row
        for row in rows
    ]


def _scaled_cap(cap: float, available: float, band: float) -> float:
    """``cap · available / band`` rounded toward zero: never above the exact product.

    Rounded to nearest, ``cap * (available / band)`` can come out an ulp above the exact
    value, and a pair would be allowed a hair more than the spec's derated cap. The exact
    value is a ratio of integers (every float is one); Python divides integers correctly
    rounded, and a result above the exact value is moved one float towards zero, which is
    then the largest float below it. All three are positive and finite here.
    """
    cap_n, cap_d = cap.as_integer_ratio()
    available_n, available_d = available.as_integer_ratio()
    band_n, band_d = band.as_integer_ratio()
    numerator = cap_n * available_n * band_d
    denominator = cap_d * available_d * band_n
    scaled = numerator / denominator  # correctly rounded
    scaled_n, scaled_d = scaled.as_integer_ratio()
    if scaled_n * denominator > numerator * scaled_d:
        scaled = math.nextafter(scaled, 0.0)
    return scaled


@attrs.frozen(kw_only=True)
class Pair:
    """A battery and the inverter that commands it: the algorithm's input.

    What depends only on the telemetry is worked out here, once, so that the daemon pays for
    it when telemetry arrives rather than on every request.

    Attributes:
        battery: The battery's latest telemetry.
        inverter: Its inverter's latest telemetry.
        problem: Why the pair cannot be used, naming the field; ``None`` if it can.
        charge_row: What a distribution reads about the pair when charging.
        discharge_row: What a distribution reads about the pair when discharging.
    """

    battery: BatterySnapshot
    inverter: InverterSnapshot
    problem: str | None = attrs.field(init=False, eq=False)
    charge_row: Row = attrs.field(init=False, eq=False, repr=False)
    discharge_row: Row = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        charge, discharge = _envelope(self.battery, self.inverter)
        object.__setattr__(self, "charge_row", charge)
        object.__setattr__(self, "discharge_row", discharge)
        status = charge.status
        object.__setattr__(self, "problem", None if isinstance(status, Allotment) else status)

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
        # a/max(a) per element, never a·(1/max(a)): the reciprocal of a subnormal is inf.
        a_max = max(available)
        weights = [c * (a / a_max) ** exponent for c, a in zip(capacities, available, strict=True)]
    if min(weights) < MIN_WEIGHT:
        weights = [w if w >= MIN_WEIGHT else MIN_WEIGHT for w in weights]
    return weights
