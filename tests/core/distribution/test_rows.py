"""Per-pair quantities: which pairs can take power, why not, and bad telemetry."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.distribution import (
    MIN_WEIGHT,
    Allotment,
    Pair,
    Row,
    aggregate_bounds,
    distribute,
)
from distributord.core.distribution.rows import RowColumns, derate
from distributord.core.errors import DistributionInputError
from distributord.core.model import PowerBounds
from tests.core.distribution.spec import battery, derate_bands, exponents, quantities, run
from tests.snapshots import battery_snapshot, inverter_snapshot
from tests.strategies import fleets, make_pair, requests_for


@given(st.data(), fleets(), exponents, derate_bands)
def test_soc_limits_pairs_with_zero_weight_get_exactly_zero(
    data: st.DataObject, fleet: list[Pair], e: float, band: float
) -> None:
    power = data.draw(requests_for(fleet))
    result = run(power, fleet, e, band)
    for pair in fleet:
        q = quantities(pair, power > 0)
        if q.available == 0 or q.capacity == 0:
            assert result.setpoints[pair.battery_id] == 0.0
            assert result.reasons[pair.battery_id] in {
                Allotment.AT_SOC_LIMIT,
                Allotment.ZERO_CAPACITY,
                Allotment.ZERO_REQUEST,
            }


@st.composite
def broken_fleets(draw: st.DrawFn) -> list[Pair]:
    """Fleets in which some pairs carry nan or infinite telemetry."""
    fleet = draw(fleets(max_size=60, exact=False))
    bad = [math.nan, math.inf, -math.inf]
    out = []
    for pair in fleet:
        field = draw(
            st.sampled_from(
                [
                    "none",
                    "none",
                    "soc",
                    "soc_lower",
                    "soc_upper",
                    "capacity",
                    "battery_bounds",
                    "inverter_bounds",
                    "both_bounds",
                ]
            )
        )
        b, i = pair.battery, pair.inverter
        value = draw(st.sampled_from(bad))
        if field == "soc":
            b = attrs.evolve(b, soc_pct=value)
        elif field == "capacity":
            b = attrs.evolve(b, capacity_wh=value)
        elif field == "soc_lower":
            b = attrs.evolve(b, soc_lower_pct=value if value != math.inf else math.nan)
        elif field == "soc_upper":
            b = attrs.evolve(b, soc_upper_pct=value if value != -math.inf else math.nan)
        elif field == "battery_bounds":
            b = attrs.evolve(b, bounds=PowerBounds.unknown())
        elif field == "inverter_bounds":
            i = attrs.evolve(i, bounds=PowerBounds.unknown())
        elif field == "both_bounds":
            b = attrs.evolve(b, bounds=PowerBounds.unknown())
            i = attrs.evolve(i, bounds=PowerBounds.unknown())
        out.append(Pair(battery=b, inverter=i))
    return out


@given(st.data(), broken_fleets(), exponents)
def test_totality_bad_telemetry_excludes_its_pair_never_a_nan_setpoint(
    data: st.DataObject, fleet: list[Pair], e: float
) -> None:
    power = data.draw(requests_for(fleet, exact=False))
    result = run(power, fleet, e)
    for pair in fleet:
        bid = pair.battery_id
        b = pair.battery
        unusable = not all(
            math.isfinite(v) for v in (b.soc_pct, b.soc_lower_pct, b.soc_upper_pct, b.capacity_wh)
        ) or (not b.bounds.is_known and not pair.inverter.bounds.is_known)
        if unusable:
            assert bid in result.excluded
            assert bid not in result.setpoints
            assert str(bid) in result.excluded[bid]
        else:
            # One side without bounds borrows the other's.
            assert bid in result.setpoints
            assert bid not in result.excluded
            assert math.isfinite(result.setpoints[bid])
    assert math.isfinite(result.remaining_w)


@pytest.mark.parametrize(
    ("exponent", "expected"),
    [
        (0, (4000, 4000)),
        (1, (2000, 6000)),
        (2, (800, 7200)),
        (3, (285.71, 7714.29)),
        (16, (8000 / (1 + 3**16), 8000 * 3**16 / (1 + 3**16))),  # the top of the range
    ],
)
def test_higher_exponents_converge_faster(exponent: float, expected: tuple[float, float]) -> None:
    fleet = [battery(1, 70, 20, 80, 10_000, 10_000), battery(2, 50, 20, 80, 10_000, 10_000)]
    result = distribute(8000, fleet, exponent=exponent)
    assert result.setpoints == pytest.approx(dict(zip((1, 2), expected, strict=True)), abs=0.01)


# --- reasons for pairs that take nothing ---------------------------------------------------


def test_each_idle_pair_says_why() -> None:
    fleet = [
        battery(1, 50, 10, 90, 0, 1000),  # zero capacity
        battery(2, 90, 10, 90, 10_000, 1000),  # full
        battery(3, 50, 10, 90, 10_000, 0),  # no power allowed
        make_pair(
            4,
            soc=50,
            soc_lower=10,
            soc_upper=90,
            capacity=10_000,
            battery_bounds=PowerBounds.symmetric(500),
            inverter_bounds=PowerBounds.symmetric(5000, 800),  # minimum 800 > cap 500
        ),
        battery(5, 50, 10, 90, 10_000, 1000),
    ]
    result = distribute(500, fleet)
    assert result.reasons == {
        1: Allotment.ZERO_CAPACITY,
        2: Allotment.AT_SOC_LIMIT,
        3: Allotment.ZERO_POWER_BOUND,
        4: Allotment.MINIMUM_ABOVE_CAP,
        5: Allotment.PROPORTIONAL,
    }
    assert result.setpoints == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 500.0}


def test_exponent_zero_does_not_charge_a_full_battery() -> None:
    # The reference computes 0**0 = 1 and charges it.
    result = distribute(
        1000,
        [battery(1, 90, 10, 90, 10_000, 1000), battery(2, 50, 10, 90, 10_000, 1000)],
        exponent=0,
    )
    assert result.setpoints == {1: 0.0, 2: 1000.0}


def test_a_bound_unknown_on_one_side_is_taken_from_the_other() -> None:
    pair = make_pair(
        1,
        soc=50,
        soc_lower=10,
        soc_upper=90,
        capacity=10_000,
        battery_bounds=PowerBounds.unknown(),
        inverter_bounds=PowerBounds.symmetric(700),
    )
    assert distribute(1000, [pair]).setpoints == {1: 700.0}


def test_excluded_pairs_are_named_with_the_field() -> None:
    pair = battery(7, math.nan, 10, 90, 10_000, 1000)
    result = distribute(1000, [pair, battery(8, 50, 10, 90, 10_000, 1000)])
    assert result.excluded == {7: "battery 7: soc_pct is nan"}
    assert result.setpoints == {8: 1000.0}


def test_implausible_values_exclude_the_pair() -> None:
    result = distribute(
        1000, [battery(1, 50, 10, 90, 1e300, 1000), battery(2, 50, 10, 90, 10_000, 1000)]
    )
    assert "capacity_wh is implausible" in result.excluded[1]


# --- rows ----------------------------------------------------------------------------------


def test_row_fields_are_the_published_names_in_order() -> None:
    # Code outside the package reads rows by these names; RowColumns transposes them and must
    # name the columns in the same order.
    assert Row._fields == (
        "battery_id",
        "inverter_id",
        "status",
        "weight",
        "cap_ratio",
        "min_ratio",
        "cap_w",
        "min_w",
        "capacity_wh",
        "available_pct",
    )
    assert RowColumns._fields == Row._fields


@given(fleets(), st.booleans())
def test_a_pairs_rows_hold_the_spec_quantities_by_name(fleet: list[Pair], charging: bool) -> None:
    for pair in fleet:
        row = pair.charge_row if charging else pair.discharge_row
        assert (row.battery_id, row.inverter_id) == (pair.battery_id, pair.inverter_id)
        if pair.problem is not None:
            assert row.status == pair.problem
            continue
        q = quantities(pair, charging)
        assert (row.cap_w, row.min_w, row.capacity_wh, row.available_pct) == (
            q.cap,
            q.minimum,
            q.capacity,
            q.available,
        )
        assert (row.status is None) == q.candidate
        if q.candidate:
            assert row.weight == max(q.capacity * q.available, MIN_WEIGHT)
            assert (row.cap_ratio, row.min_ratio) == (q.cap / row.weight, q.minimum / row.weight)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"soc_upper_pct": math.inf}, "battery 1001: soc_upper_pct is inf"),
        ({"capacity_wh": -5.0}, "battery 1001: capacity_wh is negative (-5)"),
        (
            {"soc_pct": 1e16, "capacity_wh": math.nan},
            "battery 1001: soc_pct is implausible (1e+16)",
        ),
    ],
)
def test_the_first_bad_battery_value_names_the_problem(
    overrides: dict[str, float], problem: str
) -> None:
    pair = Pair(battery=battery_snapshot(**overrides), inverter=inverter_snapshot())
    assert pair.problem == problem


# --- SoC derating ----------------------------------------------------------------------------


def test_derating_halves_the_cap_of_a_battery_halfway_into_the_band() -> None:
    # spec/distribution.md, "SoC derating": SoC 85 % of [10, 90] with a 10-point band has
    # a = 5 points of room to charge, so half its 1000 W cap; discharging (a = 75) it is whole.
    fleet = [battery(1, 85, 10, 90, 10_000, 1000)]
    charge = distribute(1000, fleet, derate_band_pct=10)
    assert charge.setpoints == {1: 500.0}
    assert charge.remaining_w == 500.0
    assert charge.reasons == {1: Allotment.CAPPED}
    assert distribute(-1000, fleet, derate_band_pct=10).setpoints == {1: -1000.0}
    assert distribute(1000, fleet).setpoints == {1: 1000.0}  # off by default


@pytest.mark.parametrize(
    ("band", "expected"),
    [(0, 1000.0), (5, 1000.0), (10, 500.0), (20, 250.0), (100, 50.0)],
)
def test_derating_scales_the_cap_linearly_in_the_band(band: float, expected: float) -> None:
    # a = 5: outside a band of 5 or less, a/d of the cap inside a wider one.
    result = distribute(1000, [battery(1, 85, 10, 90, 10_000, 1000)], derate_band_pct=band)
    assert result.setpoints == {1: expected}


def test_derating_leaves_the_weights_and_caps_only_the_share_above_the_derated_cap() -> None:
    # Room to charge 5 and 40 points, 10 kW each, band 10: the first may take 5 kW. 900 W:
    # shares by weight 100 / 800 W, as without derating. 18 kW: shares 2 / 16 kW, the second
    # is capped at 10 kW, the first would take 8 kW of the rest but is held at 5 kW.
    fleet = [battery(1, 85, 10, 90, 10_000, 10_000), battery(2, 50, 10, 90, 10_000, 10_000)]
    assert distribute(900, fleet, derate_band_pct=10) == distribute(900, fleet)
    assert distribute(900, fleet).setpoints == pytest.approx({1: 100.0, 2: 800.0})
    derated = distribute(18_000, fleet, derate_band_pct=10)
    assert derated.setpoints == {1: 5000.0, 2: 10_000.0}
    assert derated.remaining_w == 3000.0
    assert distribute(18_000, fleet).setpoints == {1: 8000.0, 2: 10_000.0}


def test_a_derated_cap_below_the_minimum_leaves_only_zero() -> None:
    # a = 1 point, band 10: the 1000 W cap becomes 100 W, below the 300 W minimum. Without
    # derating 2000 W runs both at their caps.
    fleet = [
        battery(1, 89, 10, 90, 10_000, 1000, minimum=300),
        battery(2, 50, 10, 90, 10_000, 1000),
    ]
    result = distribute(2000, fleet, derate_band_pct=10)
    assert result.setpoints == {1: 0.0, 2: 1000.0}
    assert result.remaining_w == 1000.0
    assert result.reasons[1] is Allotment.MINIMUM_ABOVE_CAP
    assert distribute(2000, fleet).setpoints == {1: 1000.0, 2: 1000.0}
    bounds = aggregate_bounds(fleet, derate_band_pct=10)
    assert (bounds.exclusion_upper, bounds.inclusion_upper) == (0.0, 1000.0)


def test_a_derated_cap_is_rounded_toward_zero_never_above_the_exact_value() -> None:
    # SoC 0.3 % over a bound at 0: a = 0.3 (the float just below 3/10), band 10, cap 1000 W.
    # Exactly u·a/d is a hair below 30 W; rounded to nearest the product is 30.0 W, a hair
    # more than the spec allows.
    fleet = [battery(1, 0.3, 0, 90, 10_000, 1000)]
    exact = Fraction(1000) * Fraction(0.3) / Fraction(10)
    assert Fraction(1000.0 * (0.3 / 10.0)) > exact  # why rounding to nearest is not enough
    result = distribute(-1000, fleet, derate_band_pct=10)
    assert result.setpoints == {1: -math.nextafter(30.0, 0.0)}
    assert fleet[0].discharge_row.cap_w == 1000.0  # the pair's own row is not derated


@given(
    st.floats(5e-324, 1e15),
    st.floats(5e-324, 100.0),
    st.floats(5e-324, 100.0),
)
def test_a_derated_cap_is_the_largest_float_not_above_the_exact_value(
    cap: float, available: float, band: float
) -> None:
    weight = max(available, MIN_WEIGHT)  # as a 1 Wh battery's row has it
    row = Row(
        battery_id=1,
        inverter_id=2,
        status=None,
        weight=weight,
        cap_ratio=cap / weight,
        min_ratio=0.0,
        cap_w=cap,
        min_w=0.0,
        capacity_wh=1.0,
        available_pct=available,
    )
    (derated,) = derate([row], band)
    if available >= band:
        assert derated is row
        return
    exact = Fraction(cap) * Fraction(available) / Fraction(band)
    assert Fraction(derated.cap_w) <= exact < Fraction(math.nextafter(derated.cap_w, math.inf))
    if derated.cap_w == 0:  # a cap below the smallest float: nothing allowed
        assert derated.status is Allotment.ZERO_POWER_BOUND
    else:
        assert derated.status is None
        assert derated.weight == row.weight


@pytest.mark.parametrize("band", [-1.0, math.nan, math.inf, "10", True])
def test_a_bad_derating_band_is_refused_naming_it(band: Any) -> None:
    fleet = [battery(1, 85, 10, 90, 10_000, 1000)]
    with pytest.raises(DistributionInputError, match=r"^derate_band_pct: ") as caught:
        distribute(1000, fleet, derate_band_pct=band)
    assert caught.value.field == "derate_band_pct"
    with pytest.raises(DistributionInputError, match=r"^derate_band_pct: "):
        aggregate_bounds(fleet, derate_band_pct=band)
