"""The ``get_status`` and ``list_components`` results, from plain values.

Theory of operation
-------------------
The control socket (IO shell) answers ``get_status`` and ``list_components`` with what these
functions build; the result's shape is a contract (``spec/protocol.md``). They are pure: the
shell passes in the batteries' published states, the telemetry store, the setpoints last
commanded, and the time ``now`` (its monotonic clock, the one the states and snapshots use).

A battery's entry leaves out what is not known rather than sending placeholders: no SoC or
capacity while the battery's latest value is not finite (JSON has no ``nan``), no bounds while
the pair's telemetry is unusable, no ``data_age_s`` until both sides have reported. Times in
the past are reported as 0, never negative. ``data_age_s`` is the age of the older side's
latest *new* sample (the one freshness is judged on: a re-sent old sample is no sample), and
``clock_offset_s`` the microgrid's clock offset (our clock at receipt minus ``sampled_at``; of
the side with the larger magnitude) once a sample said when it was taken.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from distributord.core.fleet import Fleet
from distributord.core.status import BatteryState, Status
from distributord.core.topology import Group, Topology


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def status_report(
    states: Mapping[int, BatteryState],
    fleet: Fleet,
    setpoints: Mapping[int, float],
    *,
    now: float,
    heard: Mapping[int, tuple[float | None, float]] | None = None,
    reactive: Mapping[int, float] | None = None,
    groups: Mapping[int, Group] | None = None,
) -> dict[str, Any]:
    """The ``get_status`` result.

    Args:
        states: Battery id to its published state.
        fleet: The latest telemetry (bounds, SoC, capacity).
        setpoints: Battery id to its last successfully commanded setpoint, W.
        now: The current time, on the clock of ``states`` and the snapshots' ``received_at``.
        heard: Battery id to the receipt time of its older side's latest new sample (None
            until both sides reported) and its clock offset, s (``nan`` if unknown); without
            it, the data age counts from the latest snapshots' receipt.
        reactive: Battery id to the reactive setpoint its inverter is believed to hold, var
            (only those that may hold one); an inverter's reactive bounds and apparent-power
            limit are shown where it reports them.
        groups: Lead battery to its N:M group: a lead's entry is its group's, and names its
            members (``group``).

    Returns:
        The result object, ready for JSON.
    """
    batteries: list[dict[str, Any]] = []
    for battery_id, state in sorted(states.items()):
        entry: dict[str, Any] = {
            "id": battery_id,
            "inverter_id": state.inverter_id,
            **_group_entry(groups, battery_id),
            "status": state.status.value,
            "reasons": sorted(state.reasons),
        }
        if state.blocked_until is not None:
            entry["blocked_until_s"] = max(0.0, state.blocked_until - now)
        battery = fleet.batteries.get(battery_id)
        inverter = fleet.inverters.get(state.inverter_id)
        if battery is not None:
            for key, value in (("soc_pct", battery.soc_pct), ("capacity_wh", battery.capacity_wh)):
                if (finite := _finite(value)) is not None:
                    entry[key] = finite
        pair = fleet.pair(battery_id)
        if pair is not None and pair.problem is None:
            charge, discharge = pair.charge_row, pair.discharge_row
            entry["bounds"] = {
                "inclusion_lower_w": 0.0 - discharge.cap_w,
                "exclusion_lower_w": 0.0 - discharge.min_w,
                "exclusion_upper_w": charge.min_w + 0.0,
                "inclusion_upper_w": charge.cap_w + 0.0,
            }
        if battery_id in setpoints:
            entry["setpoint_w"] = setpoints[battery_id] + 0.0
        if reactive and battery_id in reactive:
            entry["reactive_setpoint_var"] = reactive[battery_id] + 0.0
        if inverter is not None:
            lower = _finite(inverter.reactive_bounds.inclusion_lower)
            upper = _finite(inverter.reactive_bounds.inclusion_upper)
            if lower is not None or upper is not None:
                entry["reactive_bounds"] = {"lower_var": lower, "upper_var": upper}
            if (apparent := _finite(inverter.apparent_limit_va)) is not None:
                entry["apparent_limit_va"] = apparent
        heard_at, offset = (None, math.nan) if heard is None else heard[battery_id]
        if heard is None and battery is not None and inverter is not None:
            heard_at = min(battery.received_at, inverter.received_at)
        if heard_at is not None:
            entry["data_age_s"] = max(0.0, now - heard_at)
        if not math.isnan(offset):
            entry["clock_offset_s"] = offset
        batteries.append(entry)
    return {
        "batteries": batteries,
        "working": sorted(b for b, s in states.items() if s.status is Status.WORKING),
        "uncertain": sorted(b for b, s in states.items() if s.status is Status.UNCERTAIN),
    }


def _group_entry(groups: Mapping[int, Group] | None, lead: int) -> dict[str, Any]:
    """``{"group": {batteries, inverters}}`` for the lead of an N:M group, else nothing."""
    group = None if groups is None else groups.get(lead)
    if group is None:
        return {}
    return {"group": {"batteries": list(group.batteries), "inverters": list(group.inverters)}}


def components_report(topology: Topology) -> dict[str, Any]:
    """The ``list_components`` result: a group is listed under its lead battery and inverter."""
    return {
        "pairs": [
            {"battery_id": b, "inverter_id": i, **_group_entry(topology.groups, b)}
            for b, i in sorted(topology.pairs.items())
        ],
        "left_out": [
            {"battery_id": b, "reason": why} for b, why in sorted(topology.left_out.items())
        ],
    }


def status_changes(
    before: Mapping[int, BatteryState], after: Mapping[int, BatteryState]
) -> list[tuple[int, dict[str, Any]]]:
    """The ``status_changed`` notifications from one published board to the next, by battery.

    A battery is news when it is new, or when its status or its reasons changed (a new
    blocking window's end alone is not news: ``get_status`` tells it).
    """
    changes = []
    for battery, state in sorted(after.items()):
        old = before.get(battery)
        if old is None or (old.status, old.reasons) != (state.status, state.reasons):
            changes.append(
                (
                    battery,
                    {"id": battery, "status": state.status.value, "reasons": sorted(state.reasons)},
                )
            )
    return changes
