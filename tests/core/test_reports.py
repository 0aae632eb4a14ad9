"""The ``get_status`` and ``list_components`` results, built from plain values."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from distributord.core.fleet import Fleet
from distributord.core.model import PowerBounds
from distributord.core.reports import components_report, status_changes, status_report
from distributord.core.status import BatteryState, Reason, Status
from distributord.core.topology import Topology
from tests.snapshots import battery_snapshot, inverter_snapshot

PAIRS = {1001: 2001, 1002: 2002, 1003: 2003}
SPEC_KEYS = {
    "id",
    "inverter_id",
    "status",
    "reasons",
    "blocked_until_s",
    "soc_pct",
    "capacity_wh",
    "bounds",
    "setpoint_w",
    "data_age_s",
}
"""Every key ``spec/protocol.md`` lets a battery's entry have."""


def state(battery_id: int, status: Status = Status.WORKING, **more: Any) -> BatteryState:
    return BatteryState(battery_id=battery_id, inverter_id=PAIRS[battery_id], status=status, **more)


def fed(
    fleet: Fleet, battery_id: int, *, at: float = 0.0, inverter_at: float | None = None, **b: Any
) -> None:
    fleet.update(battery_snapshot(component_id=battery_id, received_at=at, **b))
    fleet.update(
        inverter_snapshot(
            component_id=PAIRS[battery_id], received_at=at if inverter_at is None else inverter_at
        )
    )


def entry_of(report: dict[str, Any], battery_id: int) -> dict[str, Any]:
    entries: list[dict[str, Any]] = report["batteries"]
    (entry,) = [e for e in entries if e["id"] == battery_id]
    assert set(entry) <= SPEC_KEYS
    return entry


def test_a_working_battery_with_bounds_and_a_setpoint() -> None:
    fleet = Fleet(PAIRS)
    bounds = PowerBounds(
        inclusion_lower=-4000.0,
        exclusion_lower=-200.0,
        exclusion_upper=100.0,
        inclusion_upper=3000.0,
    )
    fed(fleet, 1001, at=10.0, inverter_at=12.0, bounds=bounds)
    report = status_report({1001: state(1001)}, fleet, {1001: -1500.0}, now=15.0)
    assert report == {
        "batteries": [
            {
                "id": 1001,
                "inverter_id": 2001,
                "status": "working",
                "reasons": [],
                "soc_pct": 50.0,
                "capacity_wh": 10_000.0,
                "bounds": {
                    "inclusion_lower_w": -4000.0,
                    "exclusion_lower_w": -200.0,
                    "exclusion_upper_w": 100.0,
                    "inclusion_upper_w": 3000.0,
                },
                "setpoint_w": -1500.0,
                "data_age_s": 5.0,  # from the older of the two sides
            }
        ],
        "working": [1001],
        "uncertain": [],
    }
    json.dumps(report, allow_nan=False)  # the report is valid JSON as it stands


def test_bounds_at_zero_are_positive_zero() -> None:
    fleet = Fleet(PAIRS)
    fed(fleet, 1001)  # ±5 kW, no exclusion zone
    bounds = entry_of(status_report({1001: state(1001)}, fleet, {}, now=0.0), 1001)["bounds"]
    assert bounds["exclusion_lower_w"] == 0.0
    assert math.copysign(1.0, bounds["exclusion_lower_w"]) == 1.0
    assert math.copysign(1.0, bounds["exclusion_upper_w"]) == 1.0


def test_a_zero_setpoint_is_positive_zero() -> None:
    entry = entry_of(status_report({1001: state(1001)}, Fleet(PAIRS), {1001: -0.0}, now=0.0), 1001)
    assert entry["setpoint_w"] == 0.0
    assert math.copysign(1.0, entry["setpoint_w"]) == 1.0


@pytest.mark.parametrize(("now", "left_s"), [(15.0, 5.0), (20.0, 0.0), (25.0, 0.0)])
def test_a_blocked_battery_says_how_long_it_stays_blocked(now: float, left_s: float) -> None:
    blocked = state(
        1001,
        Status.UNCERTAIN,
        reasons=frozenset({Reason.BLOCKED_AFTER_FAILURE}),
        blocked_until=20.0,
    )
    report = status_report({1001: blocked, 1002: state(1002)}, Fleet(PAIRS), {}, now=now)
    entry = entry_of(report, 1001)
    assert entry["status"] == "uncertain"
    assert entry["reasons"] == ["blocked_after_failure"]
    assert entry["blocked_until_s"] == left_s
    assert "blocked_until_s" not in entry_of(report, 1002)
    assert report["working"] == [1002]
    assert report["uncertain"] == [1001]


def test_non_finite_soc_and_capacity_are_left_out() -> None:
    fleet = Fleet(PAIRS)
    fed(fleet, 1001, soc_pct=math.nan)
    fed(fleet, 1002, capacity_wh=math.inf)
    states = {
        1001: state(1001, Status.NOT_WORKING, reasons=frozenset({Reason.NAN_SOC})),
        1002: state(1002, Status.NOT_WORKING, reasons=frozenset({Reason.NAN_CAPACITY})),
    }
    report = status_report(states, fleet, {}, now=1.0)
    nan_soc, inf_capacity = entry_of(report, 1001), entry_of(report, 1002)
    assert "soc_pct" not in nan_soc
    assert nan_soc["capacity_wh"] == 10_000.0
    assert "capacity_wh" not in inf_capacity
    assert inf_capacity["soc_pct"] == 50.0
    # Telemetry the distribution cannot use has no bounds; its age is still reported.
    assert "bounds" not in nan_soc
    assert "bounds" not in inf_capacity
    assert nan_soc["data_age_s"] == 1.0
    assert report["working"] == report["uncertain"] == []
    json.dumps(report, allow_nan=False)


def test_data_age_needs_both_sides_and_is_never_negative() -> None:
    fleet = Fleet(PAIRS)
    fleet.update(battery_snapshot(component_id=1001, received_at=3.0))  # no inverter yet
    fed(fleet, 1002, at=7.5, inverter_at=9.0)
    fed(fleet, 1003, at=12.0)  # received after `now`: the age is clamped at 0
    states = {b: state(b) for b in PAIRS}
    report = status_report(states, fleet, {}, now=10.0)
    only_battery = entry_of(report, 1001)
    assert "data_age_s" not in only_battery
    assert "bounds" not in only_battery  # no pair yet
    assert only_battery["soc_pct"] == 50.0
    assert entry_of(report, 1002)["data_age_s"] == 2.5
    assert entry_of(report, 1003)["data_age_s"] == 0.0


def test_a_battery_without_telemetry_has_only_its_status() -> None:
    initial = frozenset({Reason.NO_BATTERY_DATA, Reason.NO_INVERTER_DATA})
    states = {b: state(b, Status.NOT_WORKING, reasons=initial) for b in (1003, 1001)}
    report = status_report(states, Fleet(PAIRS), {1002: 10.0}, now=100.0)
    assert report == {
        "batteries": [
            {
                "id": b,
                "inverter_id": PAIRS[b],
                "status": "not_working",
                "reasons": ["no_battery_data", "no_inverter_data"],
            }
            for b in (1001, 1003)  # in id order; setpoints of batteries not listed are ignored
        ],
        "working": [],
        "uncertain": [],
    }


def test_the_components_report_lists_pairs_and_what_was_left_out() -> None:
    topology = Topology(
        pairs={1002: 2002, 1001: 2001},
        left_out={1009: "no inverter is connected to it", 1005: "several inverters"},
    )
    assert components_report(topology) == {
        "pairs": [
            {"battery_id": 1001, "inverter_id": 2001},
            {"battery_id": 1002, "inverter_id": 2002},
        ],
        "left_out": [
            {"battery_id": 1005, "reason": "several inverters"},
            {"battery_id": 1009, "reason": "no inverter is connected to it"},
        ],
    }


def test_an_empty_topology_has_empty_lists() -> None:
    assert components_report(Topology(pairs={}, left_out={})) == {"pairs": [], "left_out": []}


def test_status_changes_name_new_batteries_and_changed_statuses_or_reasons_only() -> None:
    def state(battery: int, status: Status, *reasons: Reason, until: float | None = None) -> Any:
        return BatteryState(
            battery_id=battery,
            inverter_id=battery + 1000,
            status=status,
            reasons=frozenset(reasons),
            blocked_until=until,
        )

    stale = next(iter(Reason))
    before = {1: state(1, Status.WORKING), 2: state(2, Status.UNCERTAIN, until=5.0)}
    after = {
        1: state(1, Status.NOT_WORKING, stale),  # status changed
        2: state(2, Status.UNCERTAIN, until=9.0),  # only its window moved: not news
        3: state(3, Status.WORKING),  # new
    }
    assert status_changes(before, after) == [
        (1, {"id": 1, "status": "not_working", "reasons": [str(stale)]}),
        (3, {"id": 3, "status": "working", "reasons": []}),
    ]
    assert status_changes(after, after) == []
