"""Hypothesis strategies for fleets of battery/inverter pairs (one place for all tests).

A fleet of up to 200 pairs needs about 2,400 values. Drawn one by one, hypothesis spends about
25 µs per value (60 ms per fleet, minutes per property at the CI profile's 1,000 examples), so
the bulk values are decoded from one ``st.binary`` draw instead: hypothesis still chooses and
shrinks them (towards zero bytes, which decode to the simplest fleet), about 40 times faster.

Each value is a 16-bit word. Its top four bits pick a band: 1/16 of values are the bottom of
their range (0: zero capacity, no headroom, no minimum ...), 1/16 are the top (a minimum equal
to the cap, a full battery ...), the rest spread over the range. On the ``exact`` grid (whole W
and Wh, quarter percents) mirroring a fleet is exact in floating point; ``exact=False`` gives
arbitrary fractions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from hypothesis import strategies as st

from distributord.core.distribution import Pair
from distributord.core.distribution.reactive import ReactiveRoom
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds

MAX_POWER_W = 100_000.0
MAX_CAPACITY_WH = 1_000_000.0
_WORDS_PER_PAIR = 12


def make_pair(
    bid: int,
    *,
    soc: float,
    soc_lower: float,
    soc_upper: float,
    capacity: float,
    battery_bounds: PowerBounds,
    inverter_bounds: PowerBounds,
    inverter_id: int | None = None,
) -> Pair:
    """A pair from plain values (the inverter's id defaults to ``bid + 100000``)."""
    battery = BatterySnapshot(
        component_id=bid,
        sampled_at=0.0,
        received_at=0.0,
        soc_pct=soc,
        soc_lower_pct=soc_lower,
        soc_upper_pct=soc_upper,
        capacity_wh=capacity,
        bounds=battery_bounds,
    )
    inverter = InverterSnapshot(
        component_id=bid + 100_000 if inverter_id is None else inverter_id,
        sampled_at=0.0,
        received_at=0.0,
        bounds=inverter_bounds,
    )
    return Pair(battery=battery, inverter=inverter)


WIDE_INVERTER = PowerBounds.symmetric(1e9)
"""An inverter that allows ±1 GW: it never limits a pair of :func:`symmetric_pair`."""


def symmetric_pair(
    bid: int,
    soc: float,
    lower: float,
    upper: float,
    capacity: float,
    cap: float,
    minimum: float = 0.0,
    inverter_bounds: PowerBounds = WIDE_INVERTER,
) -> Pair:
    """A pair from plain numbers: symmetric battery bounds, an inverter that allows ±1 GW.

    The battery allows ``[-cap, -minimum] ∪ {0} ∪ [minimum, cap]``; ``inverter_bounds`` may
    say otherwise for the inverter (``PowerBounds.unknown()``: its bounds are not reported).
    """
    return make_pair(
        bid,
        soc=soc,
        soc_lower=lower,
        soc_upper=upper,
        capacity=capacity,
        battery_bounds=PowerBounds.symmetric(cap, minimum),
        inverter_bounds=inverter_bounds,
    )


class _Decoder:
    """Turns 16-bit words into values in a range, with the bottom and top over-represented."""

    def __init__(self, raw: bytes, *, exact: bool) -> None:
        self._words = [int.from_bytes(raw[i : i + 2], "little") for i in range(0, len(raw), 2)]
        self._pos = 0
        self._exact = exact

    def value(self, top: float, grid: float = 1.0) -> float:
        word = self._words[self._pos]
        self._pos += 1
        band = word >> 12
        if band == 0 or top <= 0.0:
            return 0.0
        if band == 1:
            return top
        fraction = (word & 0x0FFF) / 0x0FFF if band < 8 else word / 0xFFFF
        value = top * fraction
        if self._exact:
            value = min(top, math.floor(value / grid) * grid)
        return value

    def optional(self, top: float, grid: float = 1.0) -> float:
        """Zero for half the words (the top bit clear), else a value in ``[0, top]``."""
        if self._words[self._pos] < 0x8000:
            self._pos += 1
            return 0.0
        return self.value(top, grid)

    def bounds(self, *, exclusion: bool) -> PowerBounds:
        upper = self.value(MAX_POWER_W)
        upper_gap = self.optional(upper) if exclusion else self._skip()
        lower = self.value(MAX_POWER_W)
        lower_gap = self.optional(lower) if exclusion else self._skip()
        return PowerBounds(
            inclusion_lower=-lower,
            exclusion_lower=-lower_gap,
            exclusion_upper=upper_gap,
            inclusion_upper=upper,
        )

    def _skip(self) -> float:
        self._pos += 1
        return 0.0

    def pair(self, bid: int, *, exclusion: bool) -> Pair:
        soc = self.value(100.0, 0.25)
        soc_lower = self.value(60.0, 0.25)
        soc_upper = soc_lower + self.value(100.0 - soc_lower, 0.25)
        capacity = self.value(MAX_CAPACITY_WH)
        return make_pair(
            bid,
            soc=soc,
            soc_lower=soc_lower,
            soc_upper=soc_upper,
            capacity=capacity,
            battery_bounds=self.bounds(exclusion=exclusion),
            inverter_bounds=self.bounds(exclusion=exclusion),
        )


def _with_id(pair: Pair, bid: int) -> Pair:
    b, i = pair.battery, pair.inverter
    return make_pair(
        bid,
        soc=b.soc_pct,
        soc_lower=b.soc_lower_pct,
        soc_upper=b.soc_upper_pct,
        capacity=b.capacity_wh,
        battery_bounds=b.bounds,
        inverter_bounds=i.bounds,
    )


@st.composite
def fleets(
    draw: st.DrawFn,
    *,
    min_size: int = 1,
    max_size: int = 200,
    exact: bool = True,
    exclusion: bool = True,
    duplicates: bool = False,
) -> list[Pair]:
    """``min_size`` to ``max_size`` pairs with distinct ids, in a shuffled order.

    With ``duplicates`` the fleet is made of copies of a few templates (identical inputs,
    different ids), for the fairness property.
    """
    if duplicates:
        templates = draw(st.integers(1, 10))
        copies = draw(
            st.lists(st.integers(1, max_size // 10), min_size=templates, max_size=templates)
        )
        n = templates
    else:
        n = draw(st.integers(min_size, max_size))
    raw = draw(st.binary(min_size=2 * _WORDS_PER_PAIR * n, max_size=2 * _WORDS_PER_PAIR * n))
    decoder = _Decoder(raw, exact=exact)
    made = [decoder.pair(1000 + k, exclusion=exclusion) for k in range(n)]
    if duplicates:
        made = [
            _with_id(template, 1000 + 20 * t + c)
            for t, template in enumerate(made)
            for c in range(copies[t])
        ]
    random.Random(draw(st.integers(0, 2**32 - 1))).shuffle(made)
    return made


def reachable_cap(fleet: Sequence[Pair], charging: bool) -> float:
    """Σ of the pairs' caps in one direction (a scale for drawing requests)."""
    rows = [p.charge_row if charging else p.discharge_row for p in fleet]
    return math.fsum(r.cap_w for r in rows if r.status is None)


def largest_minimum(fleet: Sequence[Pair], charging: bool) -> float:
    """The largest exclusion minimum among the pairs that can take power in one direction."""
    rows = [p.charge_row if charging else p.discharge_row for p in fleet]
    return max((r.min_w for r in rows if r.status is None), default=0.0)


@st.composite
def requests_for(draw: st.DrawFn, fleet: Sequence[Pair], *, exact: bool = True) -> float:
    """A power for ``fleet``, either sign.

    0, near 0, near the exclusion minimums (where pairs must be dropped or raised), or up to
    1.5 times what the fleet can take.
    """
    charging = draw(st.booleans())
    kind = draw(st.sampled_from(["scaled", "zero", "tiny", "small", "scaled", "scaled"]))
    if kind == "zero":
        return 0.0
    scale = max(1.0, 1.5 * reachable_cap(fleet, charging))
    if kind == "small":
        scale = max(1.0, min(scale, 3.0 * largest_minimum(fleet, charging)))
    if kind == "tiny":
        magnitude = draw(st.floats(0.0, 1e-9))
    elif exact:
        magnitude = float(draw(st.integers(1, int(scale))))
    else:
        magnitude = draw(st.floats(1e-6, scale))
    return magnitude if charging else -magnitude


# --- where floats break ---------------------------------------------------------------------

NEAR_BOUND_EXPONENTS = st.sampled_from([0, 1, 2, 3, 10, 16])
"""Whole exponents (the exact oracle can raise to them), up to the top of the spec's range."""

_SOC_LOWER, _SOC_UPPER = 10.0, 90.0


def _ulps_from(value: float, steps: int, towards: float) -> float:
    for _ in range(steps):
        value = math.nextafter(value, towards)
    return value


@st.composite
def _near_bound_soc(draw: st.DrawFn) -> tuple[float, float, float]:
    """``(soc, soc_lower, soc_upper)``: often a hair from a bound, sometimes subnormal."""
    kind = draw(
        st.sampled_from(["ulps", "hair", "typical", "at_bound", "subnormal", "ulps", "hair"])
    )
    near_upper = draw(st.booleans())
    if kind == "subnormal":
        # Headroom below the smallest normal float: SoC bounds at 0 and 100 %.
        tiny = draw(st.integers(1, 2**20)) * 5e-324
        return (100.0 - tiny, 0.0, 100.0) if near_upper else (tiny, 0.0, 100.0)
    if kind == "at_bound":
        return (_SOC_UPPER if near_upper else _SOC_LOWER), _SOC_LOWER, _SOC_UPPER
    if kind == "typical":
        return draw(st.floats(_SOC_LOWER, _SOC_UPPER)), _SOC_LOWER, _SOC_UPPER
    if kind == "ulps":
        steps = draw(st.integers(1, 64))
        if near_upper:
            return _ulps_from(_SOC_UPPER, steps, 0.0), _SOC_LOWER, _SOC_UPPER
        return _ulps_from(_SOC_LOWER, steps, 100.0), _SOC_LOWER, _SOC_UPPER
    # A hair: 1e-8 to 1e-4 percentage points (the 79.9999 % is 1e-4 below 80 %).
    hair = 10.0 ** draw(st.floats(-8.0, -4.0))
    return (_SOC_UPPER - hair if near_upper else _SOC_LOWER + hair), _SOC_LOWER, _SOC_UPPER


@st.composite
def near_bound_fleets(
    draw: st.DrawFn, *, max_size: int = 40, exclusion: bool = False
) -> list[Pair]:
    """Fleets where floats break, in a shuffled order.

    SoCs ulps to 1e-4 points from a bound, capacities spread up to 1e13 apart (and some
    subnormal), caps from 1 W to 100 kW.

    With ``exclusion`` some pairs have an exclusion minimum (up to their cap, or equal to it:
    fixed-power inverters).
    """
    n = draw(st.integers(1, max_size))
    made = []
    for k in range(n):
        soc, lower, upper = draw(_near_bound_soc())
        capacity = (
            draw(st.integers(1, 2**30)) * 5e-324
            if draw(st.integers(0, 15)) == 0
            else 10.0 ** draw(st.floats(-3.0, 10.0))
        )
        cap = 10.0 ** draw(st.floats(0.0, 5.0))
        minimum = 0.0
        if exclusion and draw(st.booleans()):
            minimum = cap if draw(st.booleans()) else cap * draw(st.floats(0.0, 1.0))
        made.append(symmetric_pair(1000 + k, soc, lower, upper, capacity, cap, minimum))
    random.Random(draw(st.integers(0, 2**32 - 1))).shuffle(made)
    return made


@st.composite
def near_bound_requests(draw: st.DrawFn, fleet: Sequence[Pair]) -> float:
    """A power for ``fleet`` of either sign: tiny, or a fraction up to 1.5 of its caps."""
    charging = draw(st.booleans())
    magnitude: float
    if draw(st.integers(0, 7)) == 0:
        magnitude = 10.0 ** draw(st.floats(-12.0, -3.0))
    else:
        scale = max(1.0, reachable_cap(fleet, charging))
        magnitude = scale * draw(st.floats(1e-9, 1.5))
    return magnitude if charging else -magnitude


# --- every input terminates -----------------------------------------------------------------

EXTREME_EXPONENTS = st.sampled_from(
    [0.0, 5e-324, 16.0, 17.0, 100.0, 1075.0, 5e17, 1e19, 2.0**64, 1e300, 1.7976931348623157e308]
) | st.floats(0.0, 1.7976931348623157e308)
"""Exponents in and far out of the documented range [0, 16]: a subnormal one, those where
``a^e`` underflows (1075), where ``e · log2(a)`` outgrows a tier's span (5e17 and up), the
largest float."""

EXTREME_WATTS = [5e-324, 1.4e-45, 1e-300, 1e-9, 1.0, 100.0, 1000.0, 1e9, 1e15, 1e300]
"""Power bounds from the smallest subnormal to 1e300 W (beyond PLAUSIBLE_LIMIT: excludes its
pair), and float32's smallest subnormal (1.4e-45 W)."""


@st.composite
def _extreme_pair(draw: st.DrawFn, bid: int) -> Pair:
    soc, lower, upper = draw(
        _near_bound_soc()
        | st.tuples(st.sampled_from([30.0, 50.0, 70.0]), st.just(0.0), st.just(100.0))
    )
    capacity = draw(st.sampled_from([5e-324, 1e-300, 1.0, 10_000.0, 1e15]))
    cap = draw(st.sampled_from(EXTREME_WATTS))
    minimum = draw(
        st.sampled_from([0.0, 0.0, cap, 5e-324, 1.4e-45, 300.0]).filter(lambda m: m <= cap)
        | st.floats(0.0, 1.0).map(lambda f: cap * f)
    )
    return make_pair(
        bid,
        soc=soc,
        soc_lower=lower,
        soc_upper=upper,
        capacity=capacity,
        battery_bounds=PowerBounds.symmetric(cap, minimum),
        inverter_bounds=PowerBounds.unknown(),
    )


@st.composite
def extreme_fleets(draw: st.DrawFn, *, max_size: int = 6) -> list[Pair]:
    """Small fleets where floats under- or overflow.

    Subnormal and huge bounds, subnormal and huge capacities, SoCs a hair from a bound.
    """
    n = draw(st.integers(1, max_size))
    return [draw(_extreme_pair(1000 + k)) for k in range(n)]


def extreme_requests() -> st.SearchStrategy[float]:
    """Powers of either sign from a subnormal to the largest float."""
    magnitudes = st.sampled_from(
        [5e-324, 1.4e-45, 1e-9, 2e-9, 1.0, 250.0, 300.0, 1e15, 1e300, 1.7976931348623157e308]
    ) | st.floats(1e-12, 1e6)
    return st.tuples(magnitudes, st.booleans()).map(lambda t: t[0] if t[1] else -t[0])


# --- reactive power (distributord.core.distribution.reactive) ---------------------------------

REACTIVE_MAGNITUDES = st.sampled_from(
    [0.0, 5e-324, 1e-310, 1.4e-45, 1e-9, 0.1, 1.0, 250.0, 3000.0, 1e4, 1e13, 1e15]
) | st.floats(0.0, 1e6)
"""Magnitudes of reactive bounds, var: subnormals, float32's smallest, weights 1e13 apart."""


@st.composite
def reactive_magnitudes(draw: st.DrawFn) -> float:
    """A magnitude from :data:`REACTIVE_MAGNITUDES`, sometimes a few ulps off it."""
    value = draw(REACTIVE_MAGNITUDES)
    steps = draw(st.sampled_from([0, 0, 0, 1, 3]))
    return _ulps_from(value, steps, draw(st.sampled_from([0.0, math.inf])))


_ROOM_KINDS = (
    "free",
    "free",
    "free",
    "same",
    "pinned",
    "pinned",
    "nan_low",
    "nan_high",
    "nan",
    "none",
)
"""Room kinds, weighted: ``same`` is a room several inverters share (identical inputs)."""


@st.composite
def reactive_rooms_of(draw: st.DrawFn, *, max_size: int = 8) -> dict[int, ReactiveRoom | str]:
    """Inverter id to a room: mostly holding 0, some pinned, some with unknown sides or none."""
    n = draw(st.integers(1, max_size))
    shared = draw(reactive_magnitudes()), draw(reactive_magnitudes())
    rooms: dict[int, ReactiveRoom | str] = {}
    for k in range(n):
        kind = draw(st.sampled_from(_ROOM_KINDS))
        a, b = draw(reactive_magnitudes()), draw(reactive_magnitudes())
        if kind == "none":
            rooms[5000 + k] = "no room (drawn)"
            continue
        if kind == "same":
            a, b = shared
        low, high = -a, b
        if kind == "pinned":
            low, high = sorted((a, b)) if draw(st.booleans()) else sorted((-a, -b))
        if kind in ("nan_low", "nan"):
            low = math.nan
        if kind in ("nan_high", "nan"):
            high = math.nan
        rooms[5000 + k] = ReactiveRoom(lower_var=low + 0.0, upper_var=high + 0.0)
    return rooms


@st.composite
def reactive_targets(draw: st.DrawFn, rooms: dict[int, ReactiveRoom | str]) -> float:
    """A target up to 1.5 times the rooms' availability either way, often right at it."""
    positive = draw(st.booleans())
    total = math.fsum(
        (room.upper_var if positive else -room.lower_var)
        for room in rooms.values()
        if isinstance(room, ReactiveRoom)
        and (room.upper_var if positive else -room.lower_var) > 0.0
    )
    base = draw(
        st.sampled_from([0.0, 1e-9, 2e-9, total, total, 1e300])
        | st.floats(0.0, 1.5).map(lambda f: f * total)
        | reactive_magnitudes()
    )
    steps = draw(st.sampled_from([0, 0, 1, 3]))
    magnitude = _ulps_from(base, steps, draw(st.sampled_from([0.0, 2e300])))
    return magnitude if positive else -magnitude
