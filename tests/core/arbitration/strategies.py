"""Hypothesis strategies for buckets: aggregate bounds and bids.

Drawn field by field, a bucket of seven bids costs hypothesis about 60 draws (several ms per
example, minutes at the CI profile's 1,000 examples per property); as ``tests/strategies.py``
does for fleets, the values are decoded from one ``st.binary`` draw instead, which hypothesis
still chooses and shrinks (towards zero bytes: no bids, closed bounds, zeros).

Each value takes one 32-bit word; its top bits pick a band: zero, a few round values that
collide with one another (so bounds meet window edges and ties happen), a value a few ulps from
a round one (``exact=False`` only), or anywhere in the range. On the ``exact`` grid (quarter
watts within ±100 kW) every sum and difference of a few values is exact in floating point.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

from distributord.core.arbitration.merge import Bid
from distributord.core.model import PowerBounds

TOP_W = 100_000.0
ROUND_W = (0.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0, 100_000.0)
_WORDS_PER_BID = 14  # priority, 3 optional values (3 words each), 2 limits (2 each)
MAX_BIDS = 7
_WORDS = 4 + 1 + MAX_BIDS * _WORDS_PER_BID


class _Words:
    def __init__(self, raw: bytes, *, exact: bool) -> None:
        raw = raw.ljust(4 * _WORDS, b"\0")
        self._words = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 4)]
        self._pos = 0
        self._exact = exact

    def word(self) -> int:
        word = self._words[self._pos]
        self._pos += 1
        return word

    def magnitude(self, top: float = TOP_W) -> float:
        """A value in ``[0, top]``."""
        word = self.word()
        band, rest = word >> 28, word & 0x0FFF_FFFF
        if band == 0:
            return 0.0
        if band < 6:
            return min(top, ROUND_W[rest % len(ROUND_W)])
        if band < 8 and not self._exact:
            value = ROUND_W[rest % len(ROUND_W)]
            steps = (rest >> 8) % 9 - 4
            for _ in range(abs(steps)):
                value = math.nextafter(value, math.inf if steps > 0 else -math.inf)
            return min(top, max(0.0, value))
        fraction = rest / 0x0FFF_FFFF
        if self._exact:
            return min(top, math.floor(fraction * top * 4) / 4)
        return min(top, fraction * top)

    def signed(self) -> float:
        negative = self.word() & 1
        value = self.magnitude()
        return -value if negative else value

    def optional(self, *, none_if_below: int = 0x4000_0000) -> float | None:
        """``None`` for a quarter of the words, else a signed value."""
        if self.word() < none_if_below:
            self._pos += 2
            return None
        return self.signed()

    def bounds(self) -> PowerBounds:
        upper, lower = self.magnitude(), self.magnitude()
        exclusion_upper, exclusion_lower = self.magnitude(upper), self.magnitude(lower)
        return PowerBounds(
            inclusion_lower=-lower,
            exclusion_lower=-exclusion_lower,
            exclusion_upper=exclusion_upper,
            inclusion_upper=upper,
        )

    def limit(self) -> float:
        if self.word() < 0x8000_0000:
            self._pos += 1
            return math.inf
        return self.magnitude(2 * TOP_W)


def _decode(raw: bytes, *, exact: bool, priorities: int) -> tuple[PowerBounds, list[Bid]]:
    words = _Words(raw, exact=exact)
    bounds = words.bounds()
    size = words.word() % (MAX_BIDS + 1)
    bids = []
    for k in range(size):
        priority = words.word() % priorities
        power, lower, upper = words.optional(), words.optional(), words.optional()
        if lower is not None and upper is not None and lower > upper:
            lower, upper = upper, lower
        bids.append(
            Bid(
                program=f"p{k}",
                priority=priority,
                sequence=k,
                power_w=power,
                lower_w=lower,
                upper_w=upper,
                max_charge_w=words.limit(),
                max_discharge_w=words.limit(),
            )
        )
    return bounds, bids


def buckets(
    *, exact: bool = True, priorities: int = 4
) -> st.SearchStrategy[tuple[PowerBounds, list[Bid]]]:
    """A bucket's aggregate bounds and up to :data:`MAX_BIDS` valid bids."""
    return st.binary(min_size=4 * _WORDS, max_size=4 * _WORDS).map(
        lambda raw: _decode(raw, exact=exact, priorities=priorities)
    )
