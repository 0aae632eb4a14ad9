"""From the Microgrid API's allowed-power ranges to the four power bounds.

Theory of operation
-------------------
The v1 API reports a component's allowed power as a union of ranges ``[lower, upper]`` (either
end may be absent: unbounded), and 0 W is always allowed. distributord works with four numbers
``inclusion_lower <= exclusion_lower <= 0 <= exclusion_upper <= inclusion_upper``: on each side
of zero one interval, possibly with a gap (the exclusion zone) next to zero.

On each side we take the allowed set's connected piece nearest to zero:

* a range that contains 0 makes that side's exclusion bound 0;
* otherwise the exclusion bound is the nearest range end on that side;
* the inclusion bound is the far end of that nearest piece (overlapping or touching ranges
  merge into one piece).

A second, farther piece on one side (``[1000, 2000] ∪ [3000, 4000]``) cannot be represented;
we keep the nearer piece, which is the safe choice, and report ``lossy`` so the caller can log
it once. Ranges that are empty (``lower > upper``) or hold ``nan`` are ignored and also make the
conversion ``lossy``. No ranges at all means the bounds are unknown: four ``nan``.

Reactive power's ranges (var) become four bounds by the same rule. Apparent power's ranges are
a magnitude's, and the API does not say whether a server writes them ``[0, S]`` or signed,
``[-S, S]``: :func:`apparent_limit` reads the limit ``S`` from their four bounds so that either
way gives ``S``, and an asymmetric signed range the smaller end (the safe reading).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs

from distributord.core.model import PowerBounds

Range = tuple[float | None, float | None]
"""``(lower, upper)``; ``None`` for an absent (unbounded) end."""


@attrs.frozen(kw_only=True)
class Conversion:
    """The result of :func:`bounds_from_ranges`.

    Attributes:
        bounds: The four bounds.
        lossy: Whether some of the ranges could not be represented (a second piece on one
            side, or an empty or ``nan`` range) and were left out.
    """

    bounds: PowerBounds
    lossy: bool


def bounds_from_ranges(ranges: Iterable[Range]) -> Conversion:
    """Convert the API's allowed-power ranges to the four bounds.

    Examples (from the spec):
        ``[(-5000, 5000)]`` gives ``(-5000, 0, 0, 5000)``;
        ``[(-5000, -300), (300, 5000)]`` gives ``(-5000, -300, 300, 5000)``;
        ``[(200, 4000)]`` gives ``(0, 0, 200, 4000)``.
    """
    valid: list[tuple[float, float]] = []
    lossy = False
    for lower, upper in ranges:
        low = -math.inf if lower is None else float(lower)
        high = math.inf if upper is None else float(upper)
        if math.isnan(low) or math.isnan(high) or low > high:
            lossy = True
            continue
        valid.append((low, high))
    if not valid:
        return Conversion(bounds=PowerBounds.unknown(), lossy=lossy)
    upper_gap, upper_edge, upper_lossy = _nearest_piece(valid)
    mirrored = [(-high, -low) for low, high in valid]
    lower_gap, lower_edge, lower_lossy = _nearest_piece(mirrored)
    return Conversion(
        bounds=PowerBounds(
            inclusion_lower=0.0 - lower_edge,
            exclusion_lower=0.0 - lower_gap,
            exclusion_upper=upper_gap,
            inclusion_upper=upper_edge,
        ),
        lossy=lossy or upper_lossy or lower_lossy,
    )


def apparent_limit(bounds: PowerBounds) -> float:
    """The apparent-power limit ``S`` (VA) of the bounds of an apparent-power metric.

    The upper inclusion bound; when the bounds reach below 0 too (a signed range), the smaller
    of the two ends' magnitudes. ``nan`` when the bounds are unknown, ``inf`` when they have no
    upper end (and no lower one below 0).

    Examples:
        ``[(0, 5000)]`` and ``[(-5000, 5000)]`` give 5000; ``[(-4000, 6000)]`` gives 4000;
        ``[(-5000, 0)]`` gives 0 (nothing above 0 is allowed: no power at all is safe).
    """
    upper = bounds.inclusion_upper
    lower = bounds.inclusion_lower
    if math.isnan(upper) or math.isnan(lower):
        return math.nan
    return min(upper, -lower) if lower < 0.0 else upper


def _nearest_piece(ranges: list[tuple[float, float]]) -> tuple[float, float, bool]:
    """On the positive side: (exclusion bound, inclusion bound, whether a piece was dropped).

    Ranges are clipped to the positive side; a range reaching across zero starts at 0 and so
    sorts first. A range that only touches zero from below (``[-5000, 0]``) allows nothing
    above zero and is not on this side.
    """
    positive = sorted((max(low, 0.0), high) for low, high in ranges if high > 0.0)
    if not positive:
        return 0.0, 0.0, False
    start, end = positive[0]
    for low, high in positive[1:]:
        if low > end:
            return start, end, True
        end = max(end, high)
    return start, end, False
