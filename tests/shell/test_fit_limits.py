"""Keeping a group limit whatever order commands land in (``_fit_side``), as a property."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from distributord.shell.requestloop import _fit_side

watts = st.floats(0.0, 1e6, width=32)


@st.composite
def sides(draw: st.DrawFn) -> tuple[dict[int, float], dict[int, float], float, float]:
    sign = draw(st.sampled_from([1.0, -1.0]))
    count = draw(st.integers(1, 6))
    wanted = {2000 + k: sign * draw(watts) for k in range(count)}
    old = {2000 + k: draw(watts) for k in range(count)}
    room = draw(st.floats(0.0, 4e6))
    return wanted, old, sign, room


@given(sides())
def test_the_worst_landing_order_fits_or_nothing_rises(
    side: tuple[dict[int, float], dict[int, float], float, float],
) -> None:
    wanted, old, sign, room = side
    changed = _fit_side(wanted, old, sign=sign, room=room)
    now = {**wanted, **changed}
    for inverter, value in changed.items():
        # Only rises are cut, never past what was wanted, and not below what it held but for
        # the float32 rounding toward zero.
        assert sign * wanted[inverter] > old[inverter]
        assert sign * value < sign * wanted[inverter]
        assert sign * value >= old[inverter] * (1 - 2**-23)
    worst = math.fsum(max(sign * now[i], old[i]) for i in now)
    if worst > room:
        assert all(sign * now[i] <= old[i] for i in now)  # the rest was held already


def test_a_rise_beside_a_fall_is_held_to_what_the_fall_leaves() -> None:
    # 2001 falls 3 kW -> 1 kW, 2002 rises 3 kW -> 5 kW under 6 kW: 2002 may reach 3 kW now.
    changed = _fit_side(
        {2001: 1000.0, 2002: 5000.0}, {2001: 3000.0, 2002: 3000.0}, sign=1.0, room=6000.0
    )
    assert changed == {2002: 3000.0}
    # Discharging alike; nothing cut when the worst case fits.
    assert (
        _fit_side({2001: -1000.0, 2002: -2000.0}, {2001: 3000.0, 2002: 0.0}, sign=-1.0, room=6000.0)
        == {}
    )
