"""Reactive power: each inverter's room under its apparent-power limit, and the split of a target.

Theory of operation
-------------------
An inverter reports reactive bounds ``[lower, upper]`` (var) and an apparent-power limit ``S``
(VA): whatever it is sent, ``P² + Q² ≤ S²`` (``spec/plant.md``, "Reactive power"). Signs are
the Microgrid API's; this module does not care which way is which, ``Q`` is a signed number.

**The coupling** (``plant.pq_priority``). ``"active"`` (the default): ``P`` is split first, over
active bounds capped at ``|P| ≤ S`` (:func:`capped_active_bounds` with ``Q = 0``); each
inverter's reactive room is then ``|Q| ≤ √(S² − P²)`` within its reactive bounds
(:func:`reactive_room` with its ``P``). ``"reactive"``: ``Q`` is split first over rooms with
``P = 0``, then each inverter's active bounds shrink to ``|P| ≤ √(S² − Q²)``
(:func:`capped_active_bounds` with its ``Q``); a cap below the exclusion minimum leaves that side
``0`` to ``0``, so the active split gives the pair nothing that way.

**Exactly within S.** Both directions use one helper, :func:`headroom`: the *largest* float
``r`` with ``r² + x² ≤ S²`` in exact rational arithmetic. ``math.sqrt`` rounds to nearest and can
be an ulp too large, so the estimate is stepped with :func:`math.nextafter` until the exact
check holds and the next float up fails it. A pair ``(P, Q)`` with ``|P| ≤ |x|`` and
``|Q| ≤ r`` is then within ``S`` exactly, and stays so when the wire rounds both to float32
toward zero (neither grows).

**Rooms.** A room's edges are float32s rounded inward, so a setpoint at an edge (a pinned
inverter's) is unchanged by the wire's rounding, and any other, rounded toward zero, stays in
a room that holds ``0``. A bound that is ``nan`` (or not plausible) is unknown: that side gives
nothing. ``S`` ``nan`` or infinite is no limit. Bounds that leave nothing within ``S`` (they
exclude ``0`` and ``S`` is smaller than the nearest of them) give no room: the inverter is not
commanded, and says why.

**The split** (:func:`split_reactive`):

1. Inverters *pinned* by their room (it excludes ``0``) take the edge nearest ``0``: it is what
   the hardware demands, and they take it whatever the target.
2. The rest of the target, ``R = Q − Σ pinned``, goes to the others in proportion to each one's
   available ``Q`` in the target's direction (``upper`` for ``Q > 0``, ``−lower`` for
   ``Q < 0``; ``0`` for an unknown side), each share capped there; if the availability adds up
   to no more than ``|R|``, every one runs at its edge.
3. ``|Q| ≤ 1e-9`` var (the active split's zero, :data:`~.placement.ZERO_POWER_W`): the others get
   exactly ``0``.
4. Pinned values that reach or pass the target (``R`` of the other sign, or ``0``): the others get
   exactly ``0``. They never run the other way to cancel the hardware's demand; ``remaining``
   says by how much the pinned inverters overshoot (it then has the sign opposite the target's).

Never over, exactly: the others' sum never passes ``R`` (``|Σ others| ≤ |R|``, checked with an
exact sum, :func:`math.fsum`, and the common factor lowered until it holds), and no setpoint
leaves its room. ``remaining`` is the target less every setpoint, summed exactly and rounded
once. Each share is ``availability × factor``, one factor for all: mirroring every room and the
target mirrors the result exactly, the order of the inverters changes nothing, and inverters
with the same room get the same setpoint. The split is ``O(n)``.

**Not read (yet):** reactive *exclusion* bounds (a smallest non-zero ``|Q|``). Telemetry carries
reactive bounds as :class:`~distributord.core.model.PowerBounds`, where 0 is always allowed, so
an inverter from telemetry is never pinned; a ``Q`` between 0 and its exclusion bound is not
kept out. ``plant.pq_priority`` is the config's (``config.PQ_PRIORITIES``); this module gives
both orders their parts and leaves the order to its caller.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Callable, Mapping, Sequence

import attrs

from distributord.core.distribution.placement import ZERO_POWER_W
from distributord.core.errors import DistributionInputError
from distributord.core.model import PLAUSIBLE_LIMIT, InverterSnapshot, PowerBounds
from distributord.core.values import floats32_toward_zero, is_number

_SETTLE_STEPS = 4
"""Steps of :func:`math.nextafter` that :func:`headroom` takes before it bisects: its estimate is
within two ulps (a scaled square root), so more steps mean an estimate gone wrong."""

_FLOAT_BITS = struct.Struct("<d")
_INT_BITS = struct.Struct("<q")
_FLOAT32_BITS = struct.Struct("<f")
_UINT32_BITS = struct.Struct("<I")


class ReactiveAllotment(enum.StrEnum):
    """Why an inverter got the reactive setpoint it got (:attr:`ReactiveSplit.reasons`)."""

    PROPORTIONAL = "proportional"
    """Its share, in proportion to its available ``Q`` in the target's direction."""
    AT_EDGE = "at_edge"
    """Held at its room's edge in the target's direction (bounds or ``S``)."""
    PINNED = "pinned"
    """Its reactive bounds exclude 0: it takes the value nearest 0 that they allow."""
    ZERO_REQUEST = "zero_request"
    """The target is 0 var."""
    PINNED_REACH_TARGET = "pinned_reach_target"
    """The pinned inverters alone reach or pass the target: 0, never the other way."""
    BOUND_UNKNOWN = "bound_unknown"
    """Its reactive bound in the target's direction is unknown (or not plausible): 0."""
    NO_ROOM_THIS_WAY = "no_room_this_way"
    """Its room allows no reactive power in the target's direction (bound or ``S`` at 0)."""


@attrs.frozen(kw_only=True)
class ReactiveLimits:
    """One inverter's reactive limits, from its telemetry.

    Attributes:
        lower_var: Lower reactive inclusion bound, var; ``nan`` if unknown.
        upper_var: Upper reactive inclusion bound, var; ``nan`` if unknown. Normally
            ``lower_var <= 0 <= upper_var``; bounds that exclude 0 pin the inverter.
        apparent_va: Apparent-power limit ``S``, VA; ``nan`` or ``inf`` if none is known.
    """

    lower_var: float
    upper_var: float
    apparent_va: float = math.nan
    _edges: tuple[float, float] = attrs.field(init=False, eq=False, repr=False)
    _room: ReactiveRoom | None = attrs.field(init=False, eq=False, repr=False)
    _clear: float = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.lower_var > self.upper_var:
            raise ValueError(
                f"reactive bounds out of order: lower_var ({self.lower_var}) > "
                f"upper_var ({self.upper_var})"
            )
        if self.apparent_va < 0.0:
            raise ValueError(f"apparent_va must not be negative, got {self.apparent_va}")
        # What depends only on the telemetry, worked out once (see reactive_room): the bounds
        # rounded inward to float32, the room they make, and how large P may be for that room
        # to be within S.
        lower, upper = _plausible(self.lower_var), _plausible(self.upper_var)
        if lower == lower:
            lower = _float32_up(lower)
        if upper == upper:
            upper = _float32_down(upper)
        room = None if lower > upper else ReactiveRoom(lower_var=lower, upper_var=upper)
        object.__setattr__(self, "_edges", (lower, upper))
        object.__setattr__(self, "_room", room)
        object.__setattr__(self, "_clear", _clear_active_squared(lower, upper, self.apparent_va))

    @classmethod
    def of(cls, inverter: InverterSnapshot) -> ReactiveLimits:
        """An inverter's limits from its telemetry: its reactive inclusion bounds and ``S``.

        Its reactive *exclusion* bounds are not read: the split may give it a ``|Q|`` below
        them (see the module docstring).
        """
        bounds = inverter.reactive_bounds
        return cls(
            lower_var=bounds.inclusion_lower,
            upper_var=bounds.inclusion_upper,
            apparent_va=inverter.apparent_limit_va,
        )


@attrs.frozen(kw_only=True)
class ReactiveRoom:
    """The reactive setpoints an inverter may take now: ``[lower_var, upper_var]``.

    Attributes:
        lower_var: The lowest, var; ``nan`` if unknown (it gives nothing below 0).
        upper_var: The highest, var; ``nan`` if unknown (it gives nothing above 0).
    """

    lower_var: float
    upper_var: float

    def __attrs_post_init__(self) -> None:
        if self.lower_var > self.upper_var:
            raise ValueError(
                f"reactive room out of order: lower_var ({self.lower_var}) > "
                f"upper_var ({self.upper_var})"
            )

    @property
    def pinned_var(self) -> float | None:
        """The value nearest 0 the room allows, if it excludes 0; ``None`` if it holds 0."""
        if self.lower_var > 0.0:
            return self.lower_var
        if self.upper_var < 0.0:
            return self.upper_var
        return None


@attrs.frozen(kw_only=True)
class ReactiveSplit:
    """What :func:`split_reactive` decided.

    Attributes:
        target_var: The target ``Q``.
        setpoints: Inverter id to reactive setpoint (var), for every inverter with a room; exactly
            ``0.0`` for those that take nothing. An inverter not in it must not be commanded.
        remaining_var: The target less the setpoints, summed exactly and rounded once. It has
            the target's sign and is no larger, unless pinned inverters pass the target.
        reasons: Inverter id to why it got its setpoint, or why it has none (no room).
        pinned: The inverters pinned by their bounds.
    """

    target_var: float
    setpoints: Mapping[int, float]
    remaining_var: float
    reasons: Mapping[int, str]
    pinned: frozenset[int] = frozenset()


# --- exactly within S --------------------------------------------------------------------------


def _within(r: float, x: float, s: float) -> bool:
    """Exactly, in integers: ``r² + x² ≤ s²`` (finite floats)."""
    rn, rd = r.as_integer_ratio()
    xn, xd = x.as_integer_ratio()
    sn, sd = s.as_integer_ratio()
    # The denominators are powers of two: each divides the largest.
    d = max(rd, xd, sd)
    rn, xn, sn = rn * (d // rd), xn * (d // xd), sn * (d // sd)
    return rn * rn + xn * xn <= sn * sn


def _bisect(x: float, s: float) -> float:
    """:func:`headroom` the slow, sure way: bisection over the bit patterns of ``[0, s]``."""
    (low,) = _INT_BITS.unpack(_FLOAT_BITS.pack(0.0))
    (high,) = _INT_BITS.unpack(_FLOAT_BITS.pack(s))
    # Invariant: low fits, high does not (x > 0, so s itself does not).
    while high - low > 1:
        middle = (low + high) // 2
        (value,) = _FLOAT_BITS.unpack(_INT_BITS.pack(middle))
        if _within(value, x, s):
            low = middle
        else:
            high = middle
    (found,) = _FLOAT_BITS.unpack(_INT_BITS.pack(low))
    return float(found)


def headroom(apparent_va: float, other: float) -> float:
    """The largest float ``r ≥ 0`` with ``r² + other² ≤ apparent_va²``, exactly.

    The room ``√(S² − x²)`` one quantity leaves the other under the apparent-power limit:
    ``|Q|`` given ``P``, or ``|P|`` given ``Q``.

    Args:
        apparent_va: ``S``; ``nan`` or ``inf`` (none known) gives ``inf``. Not negative.
        other: The quantity already placed, ``x`` (any sign).

    Returns:
        ``r``; ``0.0`` when ``|other| ≥ S`` (``|other| > S`` leaves no room at all; callers
        keep it from happening by capping at ``S`` first).
    """
    s, x = apparent_va, abs(other)
    if not s < math.inf:  # nan or inf: no limit
        return math.inf
    if not x < s:
        return 0.0
    if x == 0.0:
        return s
    # √((s − x)(s + x)), scaled by a power of two (exact) so that neither overflow nor
    # subnormals cost precision: within about two ulps of the exact root.
    _, exponent = math.frexp(s)
    s1, x1 = math.ldexp(s, -exponent), math.ldexp(x, -exponent)
    r = min(s, math.ldexp(math.sqrt((s1 - x1) * (s1 + x1)), exponent))
    within = _within_check(x, s, exponent)
    for _ in range(_SETTLE_STEPS):
        if not within(r):
            r = math.nextafter(r, 0.0)
            continue
        up = math.nextafter(r, math.inf)
        if not within(up):
            return r
        r = up
    return _bisect(x, s)


_FAST_BITS = 113
"""Bits :func:`_within_check` scales by: ``s`` (53 significant bits) and any ``x`` or ``r`` at
least ``s·2⁻⁶¹`` become whole numbers, exactly."""


def _within_check(x: float, s: float, exponent: int) -> Callable[[float], bool]:
    """``r ↦ r² + x² ≤ s²``, exactly, for ``0 < x < s`` (``s = m·2^exponent``, ``½ ≤ m < 1``).

    Where ``s`` is a normal float far from both ends of the range and ``x`` is not negligible
    beside it, ``s² − x²`` is worked out once as a whole number (all scaled by one power of two)
    and each ``r`` costs one product; otherwise each check is :func:`_within`.
    """
    floor = math.ldexp(1.0, exponent - 61)
    if not (x >= floor and 2.0**-900 <= s <= 2.0**900):
        return lambda r: _within(r, x, s)
    shift = _FAST_BITS - exponent
    whole_s, whole_x = int(math.ldexp(s, shift)), int(math.ldexp(x, shift))
    room = whole_s * whole_s - whole_x * whole_x

    def within(r: float) -> bool:
        if r < floor:
            return _within(r, x, s)
        whole_r = int(math.ldexp(r, shift))
        return whole_r * whole_r <= room

    return within


def capped_active_bounds(
    bounds: PowerBounds, apparent_va: float, reactive_var: float = 0.0
) -> PowerBounds:
    """An inverter's active bounds within its apparent-power limit, given its reactive setpoint.

    Each inclusion bound is brought within ``headroom(S, Q)``; with ``Q = 0`` that is
    ``|P| ≤ S`` (``pq_priority = "active"``), with the ``Q`` it was sent ``|P| ≤ √(S² − Q²)``
    (``"reactive"``). A side whose exclusion bound the cap falls below becomes ``0`` to ``0``:
    valid bounds that allow no power that way (the active split gives the pair ``0`` there).

    Args:
        bounds: The inverter's active bounds, W (``nan`` unknown; an unknown inclusion bound
            becomes the cap).
        apparent_va: ``S``, VA; ``nan`` or ``inf`` if none is known (the bounds come back as
            they are).
        reactive_var: The inverter's reactive setpoint; ``|Q| ≥ S`` leaves no active power.

    Returns:
        The capped bounds; ``bounds`` itself when the cap changes nothing.
    """
    cap = headroom(apparent_va, reactive_var)
    if cap == math.inf:
        return bounds
    lower, lower_min = _capped_side(-bounds.inclusion_lower, -bounds.exclusion_lower, cap)
    upper, upper_min = _capped_side(bounds.inclusion_upper, bounds.exclusion_upper, cap)
    capped = PowerBounds(
        inclusion_lower=0.0 - lower,
        exclusion_lower=0.0 - lower_min,
        exclusion_upper=upper_min,
        inclusion_upper=upper,
    )
    return bounds if capped == bounds else capped


def _capped_side(limit: float, minimum: float, cap: float) -> tuple[float, float]:
    """One side's (inclusion, exclusion) magnitudes within ``cap``; ``nan`` stays unknown."""
    if not limit <= cap:  # above the cap, or unknown: the cap is the limit
        limit = cap
    if minimum > limit:
        return 0.0, 0.0
    return limit, minimum


# --- rooms ------------------------------------------------------------------------------------


def _float32_up(value: float) -> float:
    """The smallest float32 at or above ``value`` (finite, within float32's range)."""
    (nearest,) = _FLOAT32_BITS.unpack(_FLOAT32_BITS.pack(value))
    if nearest >= value:
        return float(nearest)
    # One float32 up: float32 is sign and magnitude, so the bits grow above 0, shrink below.
    (bits,) = _UINT32_BITS.unpack(_FLOAT32_BITS.pack(nearest))
    (up,) = _FLOAT32_BITS.unpack(_UINT32_BITS.pack(bits + 1 if nearest >= 0.0 else bits - 1))
    return float(up) + 0.0  # never -0.0


def _float32_down(value: float) -> float:
    """The largest float32 at or below ``value`` (finite, within float32's range)."""
    return -_float32_up(-value)


def _plausible(value: float) -> float:
    """``value`` if it is a usable bound, else ``nan`` (unknown)."""
    return value if abs(value) <= PLAUSIBLE_LIMIT else math.nan


def reactive_room(limits: ReactiveLimits, active_w: float = 0.0) -> ReactiveRoom | str:
    """The reactive setpoints an inverter may take with its active setpoint ``active_w``.

    Its reactive bounds within ``±headroom(S, P)``, edges rounded inward to float32 (see the
    module docstring); an unknown or implausible bound stays unknown (``nan``).

    Args:
        limits: The inverter's reactive limits.
        active_w: Its active setpoint, W (``0`` for ``pq_priority = "reactive"``).

    Returns:
        The room, or why there is none: the active setpoint already exceeds ``S``, or the
        bounds exclude 0 and ``S`` leaves none of them.
    """
    s = limits.apparent_va
    if not math.isfinite(active_w):
        return f"active setpoint {active_w} W is not finite"
    if abs(active_w) > s:  # False for nan S
        return f"active setpoint {active_w:g} W exceeds the apparent-power limit {s:g} VA"
    if active_w * active_w <= limits._clear and limits._room is not None:
        return limits._room
    lower, upper = limits._edges
    r = headroom(s, active_w)
    # Plausible bounds keep the edges within float32's range.
    if lower == lower:
        lower = _float32_up(max(lower, -r))
    if upper == upper:
        upper = _float32_down(min(upper, r))
    # Comparisons with nan are False: an unknown side never empties the room.
    if lower > r or upper < -r or lower > upper:
        return (
            f"reactive bounds [{limits.lower_var:g}, {limits.upper_var:g}] var leave no "
            f"float32 setpoint within the apparent-power limit {s:g} VA at {active_w:g} W"
        )
    return ReactiveRoom(lower_var=lower, upper_var=upper)


_CLEAR_MARGIN = 1.0 - 2.0**-50
"""How far below ``S²`` the float sums of squares must stay for :func:`_clear_active_squared`:
eight times the relative error of one float operation, enough for the five it makes."""

_CLEAR_RANGE = 2.0**-400, 2.0**400
"""Where ``S`` must be for :func:`_clear_active_squared`: no square can overflow, and what
underflows is far below the margin."""


def _clear_active_squared(lower: float, upper: float, s: float) -> float:
    """A bound on ``P²`` below which every ``Q`` in ``[lower, upper]`` is within ``S``, exactly.

    ``inf`` when ``S`` is no limit; else ``S²·(1 − 2⁻⁵⁰) − w²`` in floats, ``w`` the wider known
    bound: a ``P`` with ``P·P`` (a float) at most this has ``P² + w² ≤ S²`` exactly, as each
    float operation is off by at most 2⁻⁵³ relative (``_CLEAR_MARGIN`` covers five of them).
    This is the common case, where the reactive bounds bind before ``S``: no :func:`headroom`.
    ``-inf`` (never) where ``S`` is too small or too large for that reasoning.
    """
    if not s < math.inf:
        return math.inf
    low, high = _CLEAR_RANGE
    if not low <= s <= high:
        return -math.inf
    # An unknown (nan) bound limits nothing.
    widest = max(abs(lower) if lower == lower else 0.0, abs(upper) if upper == upper else 0.0)
    return s * s * _CLEAR_MARGIN - widest * widest


def reactive_rooms(
    limits: Mapping[int, ReactiveLimits], active_w: Mapping[int, float] | None = None
) -> dict[int, ReactiveRoom | str]:
    """:func:`reactive_room` for each inverter (an inverter not in ``active_w`` has ``P = 0``)."""
    active_w = active_w or {}
    return {iid: reactive_room(lim, active_w.get(iid, 0.0)) for iid, lim in limits.items()}


# --- the split --------------------------------------------------------------------------------


def split_reactive(target_var: float, rooms: Mapping[int, ReactiveRoom | str]) -> ReactiveSplit:
    """Split ``target_var`` over the inverters' rooms (see the module docstring for the rules).

    Args:
        target_var: The reactive power to place, var. Finite.
        rooms: Inverter id to its room (:func:`reactive_room`), or why it has none (it gets no
            setpoint).

    Returns:
        The setpoints, why each inverter got its own, and what could not be placed.

    Raises:
        DistributionInputError: ``target_var`` is not a finite number.
    """
    if not (is_number(target_var) and math.isfinite(target_var)):
        raise DistributionInputError("target_var", f"must be a finite number, got {target_var!r}")
    reasons: dict[int, str] = {}
    pinned: dict[int, float] = {}
    free: dict[int, ReactiveRoom] = {}
    for iid in sorted(rooms):
        room = rooms[iid]
        if isinstance(room, str):
            reasons[iid] = room
        elif (value := room.pinned_var) is not None:
            pinned[iid] = value
            reasons[iid] = ReactiveAllotment.PINNED
        else:
            free[iid] = room
    setpoints = dict.fromkeys(free, 0.0)
    setpoints.update(pinned)
    # Positive when the pinned inverters leave some of the target, in its direction.
    direction = 1.0 if target_var > 0.0 else -1.0
    rest = direction * math.fsum([target_var, *(-v for v in pinned.values())])
    if abs(target_var) <= ZERO_POWER_W:
        reasons.update(dict.fromkeys(free, ReactiveAllotment.ZERO_REQUEST))
    elif rest <= 0.0:
        reasons.update(dict.fromkeys(free, ReactiveAllotment.PINNED_REACH_TARGET))
    elif free:
        setpoints.update(_share(target_var, rest, direction, free, list(pinned.values()), reasons))
    remaining = math.fsum([target_var, *(-v for v in setpoints.values())])
    return ReactiveSplit(
        target_var=target_var,
        setpoints=setpoints,
        remaining_var=remaining + 0.0,  # never -0.0
        reasons=reasons,
        pinned=frozenset(pinned),
    )


def _share(
    target: float,
    rest: float,
    direction: float,
    free: Mapping[int, ReactiveRoom],
    pinned: Sequence[float],
    reasons: dict[int, str],
) -> dict[int, float]:
    """The free inverters' setpoints: ``rest > 0`` in ``direction``, by availability."""
    available: dict[int, float] = {}
    for iid, room in free.items():
        edge = room.upper_var if direction > 0.0 else -room.lower_var
        if edge != edge:  # nan: unknown that way
            reasons[iid] = ReactiveAllotment.BOUND_UNKNOWN
        elif edge <= 0.0:
            reasons[iid] = ReactiveAllotment.NO_ROOM_THIS_WAY
        else:
            available[iid] = edge
    if not available:
        return {}
    total = math.fsum(available.values())
    factor = min(1.0, rest / total)
    weights = list(available.values())
    shares = [w * factor for w in weights]
    cut = 2.0**-52
    # `rest` is rounded: the exact test is on the shares against the target less the pinned,
    # all as magnitudes in the target's direction.
    left = [direction * target, *(-direction * p for p in pinned)]
    while math.fsum([*shares, *(-v for v in left)]) > 0.0:
        factor *= 1.0 - cut
        cut = min(2.0 * cut, 1.0)
        shares = [w * factor for w in weights]
    why = ReactiveAllotment.AT_EDGE if factor == 1.0 else ReactiveAllotment.PROPORTIONAL
    reasons.update(dict.fromkeys(available, why))
    # `+ 0.0`: no -0.0 for a share of 0.
    return {iid: direction * share + 0.0 for iid, share in zip(available, shares, strict=True)}


def reactive_as_sent(split: ReactiveSplit) -> ReactiveSplit:
    """``split`` as the wire carries it: every setpoint a float32 rounded toward zero.

    As for active power (:func:`~distributord.core.planning.as_sent`, the same rounding): no
    setpoint grows, and what they lose goes to ``remaining_var``, worked out again from the
    target (rounded once). Setpoints stay in rooms made by :func:`reactive_room` (float32
    edges), and within ``S``.
    """
    setpoints = split.setpoints
    # `+ 0.0`: a tiny negative setpoint rounds to -0.0, which would print as "-0.0".
    sent = {
        iid: value + 0.0
        for iid, value in zip(
            setpoints, floats32_toward_zero(list(setpoints.values())), strict=True
        )
    }
    if sent == setpoints:
        return split
    remaining = math.fsum([split.target_var, *(-v for v in sent.values())])
    return attrs.evolve(split, setpoints=sent, remaining_var=remaining + 0.0)
