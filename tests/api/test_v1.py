"""The v1 adapter: messages to snapshots and back, commands, topology, error codes."""

from __future__ import annotations

import math
from typing import Any

import pytest
from frequenz.api.common.v1.microgrid.components import components_pb2, inverter_pb2

from distributord.api import v1
from distributord.core.errors import CommandFailedError, CommandRejectedError
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds, StateCode
from distributord.core.topology import Category, Component, InverterType

T0 = 1_800_000_000.0


def battery_message(**overrides: Any) -> v1.ComponentData:
    values: dict[str, Any] = {
        "sampled_at": T0,
        "soc_pct": 55.0,
        "soc_bounds": (10.0, 90.0),
        "capacity_wh": 10_000.0,
        "power_w": -300.0,
        "power_ranges": [(-5000.0, -100.0), (100.0, 5000.0)],
        "states": [StateCode.READY, StateCode.DISCHARGING],
    }
    values.update(overrides)
    return v1.battery_data(1001, **values).data


def decode_battery(
    message: v1.ComponentData, decoder: v1.TelemetryDecoder | None = None, at: float = 100.0
) -> BatterySnapshot:
    decoder = decoder or v1.TelemetryDecoder(1001, battery=True, max_data_age_s=10.0)
    snapshot = decoder.decode(message, received_at=at)
    assert isinstance(snapshot, BatterySnapshot)
    return snapshot


def test_every_battery_field_is_decoded() -> None:
    message = battery_message(
        errors=["overcurrent"], warnings=["battery_imbalance"], sampled_at=T0 + 0.25
    )
    snapshot = decode_battery(message)
    assert snapshot == BatterySnapshot(
        component_id=1001,
        sampled_at=T0 + 0.25,
        received_at=100.0,
        soc_pct=55.0,
        soc_lower_pct=10.0,
        soc_upper_pct=90.0,
        capacity_wh=10_000.0,
        power_w=-300.0,
        bounds=PowerBounds(
            inclusion_lower=-5000.0,
            exclusion_lower=-100.0,
            exclusion_upper=100.0,
            inclusion_upper=5000.0,
        ),
        states=frozenset({StateCode.READY, StateCode.DISCHARGING}),
        errors=frozenset({"overcurrent"}),
        warnings=frozenset({"battery_imbalance"}),
    )


def test_every_inverter_field_is_decoded() -> None:
    message = v1.inverter_data(
        2001,
        sampled_at=T0,
        active_power_w=1234.5,
        power_ranges=[(-4000.0, 4000.0)],
        states=[StateCode.STANDBY],
    ).data
    snapshot = v1.TelemetryDecoder(2001, battery=False, max_data_age_s=10).decode(
        message, received_at=5.0
    )
    assert snapshot == InverterSnapshot(
        component_id=2001,
        sampled_at=T0,
        received_at=5.0,
        active_power_w=1234.5,
        bounds=PowerBounds.symmetric(4000.0),
        states=frozenset({StateCode.STANDBY}),
    )


@pytest.mark.parametrize("field", ["soc_pct", "capacity_wh", "power_w"])
def test_nan_values_decode_as_nan(field: str) -> None:
    snapshot = decode_battery(battery_message(**{field: math.nan}))
    assert math.isnan(getattr(snapshot, field))


def test_a_metric_without_bounds_means_unknown_bounds_at_once() -> None:
    snapshot = decode_battery(battery_message(power_ranges=None, soc_bounds=None))
    assert not snapshot.bounds.is_known
    assert math.isnan(snapshot.soc_lower_pct)
    assert math.isnan(snapshot.soc_upper_pct)
    assert snapshot.power_w == -300.0


def test_a_metric_missing_from_a_sample_keeps_its_value_only_while_fresh() -> None:
    decoder = v1.TelemetryDecoder(1001, battery=True, max_data_age_s=10.0)
    decode_battery(battery_message(), decoder, at=100.0)
    only_soc = battery_message(capacity_wh=None, power_w=None, power_ranges=None, soc_pct=56.0)
    fresh = decode_battery(only_soc, decoder, at=109.9)
    assert fresh.capacity_wh == 10_000.0
    assert fresh.bounds.is_known
    stale = decode_battery(only_soc, decoder, at=110.1)
    assert stale.soc_pct == 56.0
    assert math.isnan(stale.capacity_wh)
    assert not stale.bounds.is_known


def test_inverted_soc_bounds_are_unknown_and_noted() -> None:
    decoder = v1.TelemetryDecoder(1001, battery=True, max_data_age_s=10.0)
    snapshot = decode_battery(battery_message(soc_bounds=(90.0, 10.0)), decoder)
    assert math.isnan(snapshot.soc_lower_pct)
    assert math.isnan(snapshot.soc_upper_pct)
    assert decoder.notes == {v1.Note.INVERTED_SOC_BOUNDS}


def test_unrepresentable_ranges_are_noted() -> None:
    decoder = v1.TelemetryDecoder(1001, battery=True, max_data_age_s=10.0)
    snapshot = decode_battery(
        battery_message(power_ranges=[(1000.0, 2000.0), (3000.0, 4000.0)]), decoder
    )
    assert snapshot.bounds.inclusion_upper == 2000.0
    assert decoder.notes == {v1.Note.LOSSY_BOUNDS}


def test_an_unknown_state_code_reads_as_unknown() -> None:
    message = battery_message()
    message.states[0].states.append(999)  # type: ignore[arg-type]  # a code from a newer API
    assert StateCode.UNKNOWN in decode_battery(message).states


def test_newest_state_wins_and_sampled_at_is_the_newest_sample() -> None:
    message = battery_message(sampled_at=T0)
    newer = v1.battery_data(
        1001,
        sampled_at=T0 + 5,
        soc_pct=None,
        soc_bounds=None,
        capacity_wh=None,
        power_w=None,
        power_ranges=None,
        states=[StateCode.ERROR],
    ).data
    message.states.extend(newer.states)
    snapshot = decode_battery(message)
    assert snapshot.states == {StateCode.ERROR}
    assert snapshot.sampled_at == T0 + 5


def test_set_power_round_trip() -> None:
    assert v1.parse_set_power(v1.set_power_request(2001, -2500.5, 60)) == (2001, -2500.5, 60)
    assert v1.valid_until(v1.set_power_response(T0 + 60.125)) == pytest.approx(
        T0 + 60.125, abs=1e-6
    )


@pytest.mark.parametrize(
    ("code", "kind", "blocks"),
    [
        ("OUT_OF_RANGE", CommandRejectedError, False),
        ("INVALID_ARGUMENT", CommandRejectedError, False),
        ("UNAVAILABLE", CommandFailedError, True),
        ("INTERNAL", CommandFailedError, True),
        ("DEADLINE_EXCEEDED", CommandFailedError, True),
    ],
)
def test_status_codes_become_domain_errors(code: str, kind: type, blocks: bool) -> None:
    error = v1.command_error(code, "details")
    assert type(error) is kind
    assert error.blocks is blocks
    assert error.code == code
    assert str(error) == f"{code}: details"


def test_topology_round_trip() -> None:
    categories = {
        1: Category.GRID,
        2: Category.METER,
        2001: Category.INVERTER,
        1001: Category.BATTERY,
        9: Category.OTHER,
    }
    response = v1.components_response(categories.items())
    assert v1.decode_components(response) == categories
    edges = [(1, 2), (2, 2001), (2001, 1001)]
    assert v1.decode_connections(v1.connections_response(edges)) == edges


def test_stream_request_round_trip() -> None:
    assert v1.parse_stream_request(v1.stream_request(1001)) == 1001


# --- the adapter ---------------------------------------------------------------------------------


def test_the_adapter_names_its_version() -> None:
    assert (v1.V1.name, v1.V1.service) == ("v1", "frequenz.api.microgrid.v1.Microgrid")


@pytest.mark.parametrize(
    ("inverter_type", "sent"),
    [
        (InverterType.BATTERY, "INVERTER_TYPE_BATTERY"),
        (InverterType.HYBRID, "INVERTER_TYPE_HYBRID"),
        (InverterType.PV, "INVERTER_TYPE_SOLAR"),
        (InverterType.UNSPECIFIED, "INVERTER_TYPE_UNSPECIFIED"),
    ],
)
def test_an_inverters_type_round_trips_by_name(inverter_type: InverterType, sent: str) -> None:
    message = v1.encode_component(7, Component(Category.INVERTER, inverter_type))
    assert inverter_pb2.InverterType.Name(message.category_type.inverter.type) == sent
    assert v1.component_of(message) == Component(Category.INVERTER, inverter_type)


def test_an_inverter_without_a_type_is_unspecified() -> None:
    message = components_pb2.Component(
        id=1, category=components_pb2.ComponentCategory.Value("COMPONENT_CATEGORY_INVERTER")
    )
    assert v1.component_of(message) == Component(Category.INVERTER, InverterType.UNSPECIFIED)


@pytest.mark.parametrize(
    ("ours", "read"),
    [
        (Category.RELAY, Category.RELAY),
        (Category.FUSE, Category.FUSE),
        (Category.PRECHARGER, Category.PRECHARGER),
        (Category.BREAKER, Category.RELAY),  # v1 has no breaker: sent as a relay
        (Category.GRID, Category.GRID),
    ],
)
def test_pass_through_categories(ours: Category, read: Category) -> None:
    assert v1.component_of(v1.encode_component(7, Component(ours))) == Component(read)


class FakeStub:
    def __init__(self) -> None:
        self.requests: list[v1.SetPowerRequest] = []

    async def SetComponentPowerActive(  # noqa: N802
        self, request: v1.SetPowerRequest
    ) -> v1.SetPowerResponse:
        self.requests.append(request)
        return v1.set_power_response(T0 + 60.5)


async def test_set_power_returns_valid_until() -> None:
    stub = FakeStub()
    assert await v1.V1.set_power(stub, 2001, -2500.5, 60) == T0 + 60.5
    assert [v1.parse_set_power(r) for r in stub.requests] == [(2001, -2500.5, 60)]


def test_a_reply_without_a_valid_time_is_nan() -> None:
    assert math.isnan(v1.valid_until(v1.SetPowerResponse()))
    response = v1.set_power_response(T0)
    response.valid_until.nanos = -1
    assert math.isnan(v1.valid_until(response))
