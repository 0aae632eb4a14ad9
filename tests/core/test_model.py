"""Validation where values enter: requests, snapshots, bounds; the rule for battery values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from distributord.core.model import (
    BatterySnapshot,
    PowerBounds,
    Request,
    ValueFault,
    bad_battery_values,
)
from tests.snapshots import battery_snapshot


def request(**overrides: Any) -> Request:
    values: dict[str, Any] = {"power_w": -5000.0, "batteries": frozenset({1001, 1002})}
    values.update(overrides)
    return Request(**values)


def test_a_valid_request_has_the_documented_defaults() -> None:
    r = request()
    assert r.request_timeout_s == 5.0
    assert r.adjust_power is True
    assert r.include_broken_batteries is False


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("power_w", math.nan, "power_w must be a finite number"),
        ("power_w", math.inf, "power_w must be a finite number"),
        ("power_w", "5", "power_w must be a finite number"),
        ("power_w", True, "power_w must be a finite number"),
        ("batteries", frozenset(), "batteries must name at least one battery"),
        ("batteries", frozenset({-1}), "batteries must hold non-negative integer ids"),
        ("batteries", frozenset(range(1025)), "at most 1024 are allowed"),
        ("batteries", [1, 2], "batteries must be a frozenset"),
        ("request_timeout_s", 0, "request_timeout_s must be a number in \\(0, 60\\]"),
        ("request_timeout_s", 61, "request_timeout_s must be a number in \\(0, 60\\]"),
        ("request_timeout_s", math.nan, "request_timeout_s must be a number in \\(0, 60\\]"),
        ("adjust_power", "yes", "adjust_power"),
        ("include_broken_batteries", 1, "include_broken_batteries"),
    ],
)
def test_bad_requests_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        request(**{field: value})


def test_inverted_soc_bounds_are_refused_naming_both_fields() -> None:
    with pytest.raises(
        ValueError, match=r"battery 1: soc_lower_pct \(80.0\) > soc_upper_pct \(20.0\)"
    ):
        BatterySnapshot(
            component_id=1,
            sampled_at=0.0,
            received_at=0.0,
            soc_pct=50.0,
            soc_lower_pct=80.0,
            soc_upper_pct=20.0,
            capacity_wh=1.0,
            bounds=PowerBounds.unknown(),
        )


def test_unknown_soc_bounds_pass_through_as_nan() -> None:
    snapshot = BatterySnapshot(
        component_id=1,
        sampled_at=0.0,
        received_at=0.0,
        soc_pct=math.nan,
        soc_lower_pct=math.nan,
        soc_upper_pct=20.0,
        capacity_wh=1.0,
        bounds=PowerBounds.unknown(),
    )
    assert math.isnan(snapshot.soc_lower_pct)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((-10.0, 5.0, 0.0, 10.0), "exclusion_lower \\(5.0\\) > zero"),
        ((-10.0, -20.0, 0.0, 10.0), "inclusion_lower \\(-10.0\\) > exclusion_lower"),
        ((-10.0, 0.0, 20.0, 10.0), "exclusion_upper \\(20.0\\) > inclusion_upper"),
        ((5.0, 0.0, 0.0, 10.0), "inclusion_lower \\(5.0\\) > exclusion_lower \\(0.0\\)"),
    ],
)
def test_misordered_power_bounds_are_refused(values: tuple[float, ...], message: str) -> None:
    il, el, eu, iu = values
    with pytest.raises(ValueError, match=message):
        PowerBounds(inclusion_lower=il, exclusion_lower=el, exclusion_upper=eu, inclusion_upper=iu)


def test_power_bounds_accept_unknown_values() -> None:
    b = PowerBounds(
        inclusion_lower=math.nan,
        exclusion_lower=-5.0,
        exclusion_upper=math.nan,
        inclusion_upper=1.0,
    )
    assert not b.is_known
    assert PowerBounds.symmetric(10.0, 2.0).is_known


def test_component_ids_must_be_non_negative() -> None:
    with pytest.raises(ValueError, match="component_id must be a non-negative integer"):
        BatterySnapshot(
            component_id=-3,
            sampled_at=0.0,
            received_at=0.0,
            soc_pct=1.0,
            soc_lower_pct=0.0,
            soc_upper_pct=2.0,
            capacity_wh=1.0,
            bounds=PowerBounds.unknown(),
        )


# --- the rule for a battery's values --------------------------------------------------------

NOT_FINITE, IMPLAUSIBLE, NEGATIVE = (
    ValueFault.NOT_FINITE,
    ValueFault.IMPLAUSIBLE,
    ValueFault.NEGATIVE,
)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, []),
        ({"soc_pct": math.nan}, [("soc_pct", NOT_FINITE)]),
        ({"soc_upper_pct": math.inf}, [("soc_upper_pct", NOT_FINITE)]),
        ({"soc_lower_pct": -1e15}, []),  # the limit itself is believed
        ({"capacity_wh": 2e15}, [("capacity_wh", IMPLAUSIBLE)]),
        ({"capacity_wh": -1.0}, [("capacity_wh", NEGATIVE)]),
        ({"capacity_wh": -math.inf}, [("capacity_wh", NOT_FINITE)]),  # one fault per value
        ({"capacity_wh": -2e15}, [("capacity_wh", IMPLAUSIBLE)]),
        (
            {"capacity_wh": math.nan, "soc_pct": 1e16},
            [("soc_pct", IMPLAUSIBLE), ("capacity_wh", NOT_FINITE)],  # in field order
        ),
    ],
)
def test_bad_battery_values_names_each_bad_value_once_in_field_order(
    overrides: dict[str, Any], expected: list[tuple[str, ValueFault]]
) -> None:
    snapshot = battery_snapshot(**overrides)
    bad = bad_battery_values(snapshot)
    assert [(b.field, b.fault) for b in bad] == expected
    assert all(b.value is getattr(snapshot, b.field) for b in bad)
