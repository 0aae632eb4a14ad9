"""The v1 adapter: commands and topology (telemetry: ``test_decoding``, for every version)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from frequenz.api.common.v1.microgrid.components import components_pb2, inverter_pb2

from distributord.api import v1
from distributord.api.adapter import PowerType
from distributord.core.topology import Category, Component, InverterType

T0 = 1_800_000_000.0


def test_set_power_round_trip() -> None:
    assert v1.parse_set_power(v1.set_power_request(2001, -2500.5, 60)) == (2001, -2500.5, 60)
    assert v1.valid_until(v1.set_power_response(T0 + 60.125)) == pytest.approx(
        T0 + 60.125, abs=1e-6
    )


def test_topology_round_trip() -> None:
    categories = {
        1: Category.GRID,
        2: Category.METER,
        2001: Category.INVERTER,
        1001: Category.BATTERY,
        9: Category.OTHER,
    }
    components = v1.components_of(v1.components_response(categories.items()))
    assert {cid: component.category for cid, component in components.items()} == categories
    edges = [(1, 2), (2, 2001), (2001, 1001)]
    assert v1.connections_of(v1.connections_response(edges)) == edges


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


def test_the_stream_request_asks_for_the_metrics_read() -> None:
    # Without a filter a server streams every metric a component has: a site has many.
    request = v1.stream_request(1001)
    assert request.component_id == 1001
    names = {v1.Metric.Name(m) for m in request.filter.metrics}
    assert names == {
        "METRIC_BATTERY_SOC_PCT",
        "METRIC_BATTERY_CAPACITY",
        "METRIC_DC_POWER",
        "METRIC_AC_ACTIVE_POWER",
        "METRIC_AC_REACTIVE_POWER",  # for their bounds (issue 24)
        "METRIC_AC_APPARENT_POWER",
    }


class FakeReactiveStub:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def SetComponentPowerReactive(self, request: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        return v1.SetReactiveResponse(valid_until=v1.set_power_response(T0 + 30.5).valid_until)


async def test_a_reactive_command_is_set_component_power_reactive() -> None:
    stub = FakeReactiveStub()
    until = await v1.V1.set_power(stub, 2001, 640.0, 30, power_type=PowerType.REACTIVE)
    assert until == T0 + 30.5
    (request,) = stub.requests
    assert isinstance(request, v1.SetReactiveRequest)
    assert (request.component_id, request.power, request.request_lifetime) == (2001, 640.0, 30)
