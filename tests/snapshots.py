"""Snapshots of a healthy battery and inverter, for tests to change what they need."""

from __future__ import annotations

from typing import Any

from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds, StateCode


def battery_snapshot(**overrides: Any) -> BatterySnapshot:
    """Battery 1001 at 50 % of 10..90 %, 10 kWh, ±5 kW, ready, sampled and received at 0."""
    values: dict[str, Any] = {
        "component_id": 1001,
        "sampled_at": 0.0,
        "received_at": 0.0,
        "soc_pct": 50.0,
        "soc_lower_pct": 10.0,
        "soc_upper_pct": 90.0,
        "capacity_wh": 10_000.0,
        "bounds": PowerBounds.symmetric(5000.0),
        "states": frozenset({StateCode.READY}),
    }
    values.update(overrides)
    return BatterySnapshot(**values)


def inverter_snapshot(**overrides: Any) -> InverterSnapshot:
    """Inverter 2001 at ±5 kW, ready, sampled and received at 0."""
    values: dict[str, Any] = {
        "component_id": 2001,
        "sampled_at": 0.0,
        "received_at": 0.0,
        "bounds": PowerBounds.symmetric(5000.0),
        "states": frozenset({StateCode.READY}),
    }
    values.update(overrides)
    return InverterSnapshot(**values)
