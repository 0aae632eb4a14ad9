"""v1 allowed-power ranges to the four bounds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.bounds import Range, apparent_limit, bounds_from_ranges
from distributord.core.model import PowerBounds


def four(b: PowerBounds) -> tuple[float, float, float, float]:
    return (b.inclusion_lower, b.exclusion_lower, b.exclusion_upper, b.inclusion_upper)


@pytest.mark.parametrize(
    ("ranges", "expected", "lossy"),
    [
        # The spec's examples.
        pytest.param([(-5000, 5000)], (-5000, 0, 0, 5000), False, id="one-range-through-zero"),
        pytest.param(
            [(-5000, -300), (300, 5000)], (-5000, -300, 300, 5000), False, id="exclusion-zone"
        ),
        pytest.param([(200, 4000)], (0, 0, 200, 4000), False, id="charge-only-with-minimum"),
        # A gap that does not touch zero: keep the piece nearest to zero.
        pytest.param(
            [(1000, 2000), (3000, 4000)], (0, 0, 1000, 2000), True, id="far-gap-keeps-near-piece"
        ),
        pytest.param([(-5000, 5000), (6000, 7000)], (-5000, 0, 0, 5000), True, id="gap-after-zero"),
        # Overlapping and touching ranges are one piece.
        pytest.param(
            [(0, 2000), (2000, 3000), (2500, 4000)], (0, 0, 0, 4000), False, id="touching"
        ),
        pytest.param([(-1000, 0), (0, 1000)], (-1000, 0, 0, 1000), False, id="meeting-at-zero"),
        # Only touching zero from one side allows nothing on the other.
        pytest.param([(-5000, 0), (300, 400)], (-5000, 0, 300, 400), False, id="zero-edge"),
        pytest.param([(0, 0), (300, 5000)], (0, 0, 300, 5000), False, id="point-at-zero"),
        # Unbounded ends.
        pytest.param([(None, None)], (-math.inf, 0, 0, math.inf), False, id="unbounded"),
        pytest.param([(None, -100)], (-math.inf, -100, 0, 0), False, id="unbounded-below"),
    ],
)
def test_conversion(ranges: list[Range], expected: tuple[float, ...], lossy: bool) -> None:
    result = bounds_from_ranges(ranges)
    assert four(result.bounds) == expected
    assert result.lossy is lossy


def test_no_ranges_means_unknown() -> None:
    result = bounds_from_ranges([])
    assert all(math.isnan(v) for v in four(result.bounds))
    assert not result.bounds.is_known
    assert result.lossy is False


@pytest.mark.parametrize("bad", [(5000, 1000), (math.nan, 1000), (-1000, math.nan)])
def test_empty_or_nan_ranges_are_ignored_and_reported(bad: Range) -> None:
    result = bounds_from_ranges([bad, (-2000, 2000)])
    assert four(result.bounds) == (-2000, 0, 0, 2000)
    assert result.lossy is True


def test_only_bad_ranges_mean_unknown() -> None:
    result = bounds_from_ranges([(5, 1)])
    assert not result.bounds.is_known
    assert result.lossy is True


finite = st.integers(-10_000, 10_000).map(float)
ranges_strategy = st.lists(
    st.tuples(finite, finite).map(lambda t: (min(t), max(t))), min_size=1, max_size=6
)


def allowed_by_ranges(x: float, ranges: list[tuple[float, float]]) -> bool:
    return x == 0 or any(lo <= x <= hi for lo, hi in ranges)


def allowed_by_bounds(x: float, b: PowerBounds) -> bool:
    return (
        x == 0
        or b.inclusion_lower <= x <= b.exclusion_lower
        or b.exclusion_upper <= x <= b.inclusion_upper
    )


@given(ranges_strategy, st.integers(-10_001, 10_001).map(float))
def test_conversion_never_allows_what_the_ranges_forbid(
    ranges: list[tuple[float, float]], x: float
) -> None:
    bounds = bounds_from_ranges(ranges).bounds
    if allowed_by_bounds(x, bounds):
        assert allowed_by_ranges(x, ranges)


@given(ranges_strategy, st.integers(-10_001, 10_001).map(float))
def test_lossless_conversion_allows_everything_the_ranges_allow(
    ranges: list[tuple[float, float]], x: float
) -> None:
    result = bounds_from_ranges(ranges)
    if not result.lossy and allowed_by_ranges(x, ranges):
        assert allowed_by_bounds(x, result.bounds)


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        pytest.param([(0, 5000)], 5000.0, id="magnitude"),
        pytest.param([(-5000, 5000)], 5000.0, id="signed"),
        pytest.param([(-4000, 6000)], 4000.0, id="signed-asymmetric-takes-the-smaller"),
        pytest.param([(-5000, 0)], 0.0, id="nothing-above-zero"),
        pytest.param([(0, None)], math.inf, id="no-upper-end"),
        pytest.param([], math.nan, id="unknown"),
    ],
)
def test_the_apparent_limit_of_apparent_power_ranges(ranges: list[Range], expected: float) -> None:
    limit = apparent_limit(bounds_from_ranges(ranges).bounds)
    assert limit == expected or (math.isnan(limit) and math.isnan(expected))


@given(st.lists(st.tuples(st.none() | st.floats(), st.none() | st.floats()), max_size=4))
def test_the_apparent_limit_is_never_negative(ranges: list[Range]) -> None:
    limit = apparent_limit(bounds_from_ranges(ranges).bounds)
    assert math.isnan(limit) or limit >= 0.0
