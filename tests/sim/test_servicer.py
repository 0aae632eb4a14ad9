"""Each version's served methods on a gRPC server (``sim/servicer.py``), read by its daemon side.

Over real gRPC (the wiring, not the rules): the servicer serves a fake
:class:`~distributord.api.adapter.SimHandler`; the adapter's daemon side reads it. Each test
runs its own asyncio loop (grpc.aio) under a deadline. The registration is also compared with
what the generated ``add_MicrogridServicer_to_server`` registers.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import grpc
import pytest

from distributord.api import v1, v1alpha
from distributord.api.adapter import (
    Adapter,
    BatteryTelemetry,
    FinalReply,
    MicrogridInfo,
    Served,
    SetPowerOutcome,
    SimAbort,
    SimHandler,
    Telemetry,
)
from distributord.core.bounds import Range
from distributord.core.errors import (
    CommandFailedError,
    CommandOverriddenError,
    CommandRejectedError,
)
from distributord.core.model import BatterySnapshot, StateCode
from distributord.core.topology import Category, Component, InverterType
from distributord.sim.servicer import add_servicer, not_simulated
from tests.api.versions import VERSIONS, Version

DEADLINE_S = 10.0
LATER = time.time() + 3600

COMPONENTS = [
    (1, Component(Category.GRID)),
    (2, Component(Category.METER)),
    (10, Component(Category.INVERTER, InverterType.HYBRID)),
    (11, Component(Category.PRECHARGER)),
    (100, Component(Category.BATTERY)),
]
EDGES = [(1, 2), (2, 10), (10, 11), (11, 100)]
MICROGRID = MicrogridInfo(
    id=42,
    enterprise_id=7,
    name="test site",
    latitude=-33.875,
    longitude=151.25,
    country_code="AU",
    delivery_area_code="",
    delivery_area_code_type="europe_eic",
    status="inactive",
    created_at=1_700_000_000.5,
)


class Handler:
    """A fake simulator: fixed components, one battery reading, commands decided by power."""

    def __init__(self) -> None:
        self.commands: list[tuple[int, float, int | None]] = []
        self.bounds: list[tuple[int, str, tuple[Range, ...], int | None, str | None]] = []
        self.cleared: list[tuple[int, str, str]] = []
        self.site = MICROGRID
        self.switched: list[tuple[int, str]] = []

    def components(self) -> Sequence[tuple[int, Component]]:
        return COMPONENTS

    def connections(self) -> Sequence[tuple[int, int]]:
        return EDGES

    async def set_power(
        self, component_id: int, power_w: float, lifetime_s: int | None
    ) -> SetPowerOutcome:
        self.commands.append((component_id, power_w, lifetime_s))
        if component_id == 99:
            raise SimAbort("NOT_FOUND", "no component 99")
        if power_w > 10_000:
            return SetPowerOutcome(valid_until=None, code="OUT_OF_RANGE", details="too much")
        final = {1.0: FinalReply.FAILED, 2.0: FinalReply.OVERRIDDEN, 3.0: FinalReply.NONE}
        return SetPowerOutcome(valid_until=LATER, final=final.get(power_w, FinalReply.SUCCESS))

    async def set_reactive_power(
        self, component_id: int, power_var: float, lifetime_s: int | None
    ) -> SetPowerOutcome:
        return await self.set_power(component_id, power_var, lifetime_s)

    def microgrid(self) -> MicrogridInfo:
        return self.site

    def sensors(self) -> Sequence[int]:
        return ()

    def add_bounds(
        self,
        component_id: int,
        metric: str,
        ranges: Sequence[Range],
        lifetime_s: int | None,
        token: str | None,
    ) -> float:
        self.bounds.append((component_id, metric, tuple(ranges), lifetime_s, token))
        if component_id == 99:
            raise SimAbort("NOT_FOUND", "no component 99")
        return LATER

    def clear_bounds(self, component_id: int, metric: str, token: str) -> None:
        self.cleared.append((component_id, metric, token))

    def control(self, component_id: int, action: str) -> None:
        if component_id == 99:
            raise SimAbort("NOT_FOUND", "no component 99")
        self.switched.append((component_id, action))

    async def telemetry(self, component_id: int) -> AsyncIterator[Telemetry]:
        if component_id == 99:
            raise SimAbort("NOT_FOUND", "no component 99")
        yield BatteryTelemetry(
            component_id=component_id,
            sampled_at=1_800_000_000.0,
            soc_pct=55.0,
            soc_bounds=(10.0, 90.0),
            capacity_wh=10_000.0,
            power_w=-300.0,
            power_ranges=[(-5000.0, 5000.0)],
            states=[StateCode.READY],
        )
        await asyncio.Event().wait()  # then nothing, until the client goes


class Without:
    """An adapter that serves what ``adapter`` serves but ``left_out``."""

    def __init__(self, adapter: Adapter, left_out: str) -> None:
        self._adapter = adapter
        self._left_out = left_out
        self.name, self.service, self.rpcs = adapter.name, adapter.service, adapter.rpcs

    def serve(self, handler: SimHandler) -> Mapping[str, Served]:
        served = dict(self._adapter.serve(handler))
        del served[self._left_out]
        return served


def serve(
    version: Version,
    test: Callable[[Adapter, Any, Handler], Awaitable[None]],
    *,
    without: str | None = None,
    handler: Handler | None = None,
) -> None:
    """Run ``test(adapter, stub, handler)`` against a server of ``version`` on localhost.

    ``without`` names a method the server leaves out; ``handler`` is a fresh one by default.
    """

    async def main() -> None:
        nonlocal handler
        handler = handler or Handler()
        server = grpc.aio.server()
        served: Any = version.adapter if without is None else Without(version.adapter, without)
        add_servicer(served, handler, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await test(version.adapter, version.adapter.stub(channel), handler)
        finally:
            await server.stop(None)

    asyncio.run(asyncio.wait_for(main(), DEADLINE_S))


versions = pytest.mark.parametrize("version", VERSIONS, ids=repr)


@versions
def test_the_graph_round_trips(version: Version) -> None:
    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        # Every version carries the inverter type (v1 in category_type).
        assert await adapter.components(stub) == dict(COMPONENTS)
        assert await adapter.connections(stub) == EDGES

    serve(version, test)


@versions
def test_telemetry_round_trips(version: Version) -> None:
    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        decoder = adapter.decoder(100, battery=True, max_data_age_s=10.0)
        stream = adapter.telemetry(stub, 100)
        snapshot = decoder.decode(await anext(stream), received_at=1.0)
        await stream.aclose()  # type: ignore[attr-defined]  # an async generator
        assert isinstance(snapshot, BatterySnapshot)
        assert (snapshot.soc_pct, snapshot.capacity_wh, snapshot.power_w) == (55.0, 10_000, -300)

    serve(version, test)


@versions
def test_a_handlers_abort_ends_the_call_with_its_code(version: Version) -> None:
    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anext(adapter.telemetry(stub, 99))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await adapter.set_power(stub, 99, 1.0, 60)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    serve(version, test)


@versions
def test_commands(version: Version) -> None:
    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        assert await adapter.set_power(stub, 10, 500.0, 60) == pytest.approx(LATER, abs=1e-6)
        assert handler.commands == [(10, 500.0, 60)]
        if version.name == "v1":
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await adapter.set_power(stub, 10, 20_000.0, 60)
            assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
            return
        with pytest.raises(CommandRejectedError):
            await adapter.set_power(stub, 10, 20_000.0, 60)
        with pytest.raises(CommandFailedError):
            await adapter.set_power(stub, 10, 1.0, 60)
        with pytest.raises(CommandOverriddenError):
            await adapter.set_power(stub, 10, 2.0, 60)
        with pytest.raises(TimeoutError):  # no final reply: only the caller's deadline ends it
            await asyncio.wait_for(adapter.set_power(stub, 10, 3.0, 60), 0.2)

    serve(version, test)


@pytest.mark.parametrize(
    ("version", "request_type"),
    [
        (VERSIONS[0], "frequenz.api.microgrid.v1alpha18.microgrid_pb2"),
        (VERSIONS[1], "frequenz.api.microgrid.v1alpha19.microgrid_pb2"),
    ],
    ids=["v1alpha18", "v1alpha19"],
)
def test_alpha_filters(version: Version, request_type: str) -> None:
    import importlib

    pb2 = importlib.import_module(request_type)
    request = pb2.ReceiveElectricalComponentTelemetryStreamRequest

    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        listed = await stub.ListElectricalComponents(
            pb2.ListElectricalComponentsRequest(
                electrical_component_ids=[1, 10, 100],
                electrical_component_categories=[
                    v1alpha.encode_component(0, Component(Category.INVERTER)).category,
                    v1alpha.encode_component(0, Component(Category.BATTERY)).category,
                ],
            )
        )
        assert [c.id for c in listed.electrical_components] == [10, 100]
        edges = await stub.ListElectricalComponentConnections(
            pb2.ListElectricalComponentConnectionsRequest(
                source_electrical_component_ids=[2, 10], destination_electrical_component_ids=[10]
            )
        )
        assert [
            (e.source_electrical_component_id, e.destination_electrical_component_id)
            for e in edges.electrical_component_connections
        ] == [(2, 10)]
        soc = version.metrics["soc"]
        call = stub.ReceiveElectricalComponentTelemetryStream(
            request(electrical_component_id=100, filter={"metrics": [soc]})
        )
        message = await anext(aiter(call))
        call.cancel()
        assert [s.metric for s in message.telemetry.metric_samples] == [soc]
        call = stub.ReceiveElectricalComponentTelemetryStream(
            request(electrical_component_id=100, filter={"metrics": []})
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anext(aiter(call))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    serve(version, test)


def test_v1_filters() -> None:
    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        listed = await stub.ListComponents(
            v1.ComponentsRequest(
                component_ids=[1, 2, 10],
                categories=[v1.encode_component(0, Component(Category.METER)).category],
            )
        )
        assert [c.id for c in listed.components] == [2]
        edges = await stub.ListConnections(v1.ConnectionsRequest(starts=[10, 11], ends=[100]))
        assert [(e.source_component_id, e.destination_component_id) for e in edges.connections] == [
            (11, 100)
        ]

    serve(VERSIONS[2], test)


@versions
def test_methods_not_served_answer_unimplemented_and_say_so(version: Version) -> None:
    from google.protobuf import empty_pb2

    name = "GetMicrogridMetadata" if version.name == "v1" else "GetMicrogrid"

    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub, name)(empty_pb2.Empty())
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert caught.value.details() == f"{name} is not simulated by distributord sim"
        assert caught.value.details() == not_simulated(name)

    serve(version, test, without=name)


class RecordingServer:
    """Records what a servicer registers (a grpc.aio server's two registration methods)."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered[service] = handlers


def shape(handler: Any) -> tuple[Any, ...]:
    """What a method handler says on the wire (its behaviour aside)."""
    return (
        handler.request_streaming,
        handler.response_streaming,
        handler.request_deserializer,
        handler.response_serializer,
    )


@versions
def test_every_method_is_registered_as_the_generated_code_registers_it(version: Version) -> None:
    generated = importlib.import_module(f"frequenz.api.microgrid.{version.name}.microgrid_pb2_grpc")
    theirs, ours = RecordingServer(), RecordingServer()
    generated.add_MicrogridServicer_to_server(generated.MicrogridServicer(), theirs)
    add_servicer(version.adapter, Handler(), ours)  # type: ignore[arg-type]  # a recording fake
    service = version.adapter.service
    assert list(ours.registered) == list(theirs.registered) == [service]
    assert {name: shape(h) for name, h in ours.registered[service].items()} == {
        name: shape(h) for name, h in theirs.registered[service].items()
    }
    assert [g.service_name() for g in ours.generic] == [service]


# --- the microgrid, sensors, added bounds ---------------------------------------------------


def enum_name(message: Any, field: str) -> str:
    """The name of a message's enum field's value (enums by name, never by number)."""
    enum = message.DESCRIPTOR.fields_by_name[field].enum_type
    return str(enum.values_by_number[getattr(message, field)].name)


@versions
def test_the_microgrid_is_encoded_field_by_field(version: Version) -> None:
    from google.protobuf import empty_pb2

    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        method = stub.GetMicrogridMetadata if version.name == "v1" else stub.GetMicrogrid
        microgrid = (await method(empty_pb2.Empty())).microgrid
        assert (microgrid.id, microgrid.enterprise_id, microgrid.name) == (42, 7, "test site")
        location = microgrid.location
        assert (location.latitude, location.longitude, location.country_code) == (
            -33.875,
            151.25,
            "AU",
        )
        assert not microgrid.HasField("delivery_area")  # "" is none: an island
        assert enum_name(microgrid, "status") == "MICROGRID_STATUS_INACTIVE"
        created = microgrid.create_timestamp
        assert (created.seconds, created.nanos) == (1_700_000_000, 500_000_000)

    serve(version, test)


@versions
def test_a_delivery_area_is_sent_with_its_code_type(version: Version) -> None:
    from google.protobuf import empty_pb2

    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        method = stub.GetMicrogridMetadata if version.name == "v1" else stub.GetMicrogrid
        area = (await method(empty_pb2.Empty())).microgrid.delivery_area
        assert area.code == "10YUS-NERC-X"
        assert enum_name(area, "code_type") == "ENERGY_MARKET_CODE_TYPE_US_NERC"

    handler = Handler()
    handler.site = attrs.evolve(
        MICROGRID, delivery_area_code="10YUS-NERC-X", delivery_area_code_type="us_nerc"
    )
    serve(version, test, handler=handler)


@versions
def test_sensors_are_listed_and_streams_of_unknown_sensors_end_not_found(
    version: Version,
) -> None:
    stream_name = (
        "ReceiveSensorDataStream" if version.name == "v1" else ("ReceiveSensorTelemetryStream")
    )
    request_class = next(r.request for r in version.adapter.rpcs if r.name == stream_name)

    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        request = next(r.request for r in adapter.rpcs if r.name == "ListSensors")
        assert list((await stub.ListSensors(request())).sensors) == []
        assert list((await stub.ListSensors(request(sensor_ids=[5]))).sensors) == []
        metric = version.metrics["ac_power"]
        call = getattr(stub, stream_name)(request_class(sensor_id=5, filter={"metrics": [metric]}))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anext(aiter(call))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == "no sensor 5: the simulated microgrid has none"
        # A filter that names no metric is an error first, as the proto says.
        call = getattr(stub, stream_name)(request_class(sensor_id=5, filter={"metrics": []}))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anext(aiter(call))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    serve(version, test)


@pytest.mark.parametrize("version", VERSIONS[:2], ids=repr)
def test_augmented_bounds_reach_the_handler_as_asked(version: Version) -> None:
    ac, dc = version.metrics["ac_power"], version.metrics["dc_power"]
    frequency = version.metric_enum.Value("METRIC_AC_FREQUENCY")

    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        request = next(r.request for r in adapter.rpcs if r.name.startswith("Augment"))
        reply = await stub.AugmentElectricalComponentBounds(
            request(
                electrical_component_id=10,
                target_metric=ac,
                bounds=[{"lower": -100.0, "upper": 200.0}, {"upper": 5.0}],
                request_lifetime=30,
                bounds_token="t1",
            )
        )
        assert reply.valid_until_time.seconds == int(LATER)
        await stub.AugmentElectricalComponentBounds(
            request(electrical_component_id=100, target_metric=dc, bounds=[{"lower": 1.0}])
        )
        await stub.AugmentElectricalComponentBounds(
            request(electrical_component_id=10, target_metric=frequency, bounds=[])
        )
        assert handler.bounds == [
            (10, "ac_power", ((-100.0, 200.0), (None, 5.0)), 30, "t1"),
            (100, "dc_power", ((1.0, None),), None, None),  # lifetime and token left out
            (10, "METRIC_AC_FREQUENCY", (), None, None),  # another metric: by its name
        ]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AugmentElectricalComponentBounds(
                request(electrical_component_id=99, target_metric=ac, bounds=[{"lower": 1.0}])
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        clear = next(r.request for r in adapter.rpcs if r.name.startswith("Clear"))
        await stub.ClearElectricalComponentBounds(
            clear(electrical_component_id=10, target_metric=ac, bounds_token="t1")
        )
        assert handler.cleared == [(10, "ac_power", "t1")]

    serve(version, test)


add_bounds_request: Any = next(r.request for r in v1.V1.rpcs if r.name == "AddComponentBounds")


@pytest.mark.parametrize(
    ("duration", "lifetime"),
    [
        ("COMPONENT_BOUNDS_VALIDITY_DURATION_UNSPECIFIED", None),
        ("COMPONENT_BOUNDS_VALIDITY_DURATION_5_SECONDS", 5),
        ("COMPONENT_BOUNDS_VALIDITY_DURATION_1_MINUTE", 60),
        ("COMPONENT_BOUNDS_VALIDITY_DURATION_5_MINUTES", 300),
        ("COMPONENT_BOUNDS_VALIDITY_DURATION_15_MINUTES", 900),
    ],
)
def test_v1_added_bounds_last_as_the_validity_duration_says(
    duration: str, lifetime: int | None
) -> None:
    from frequenz.api.microgrid.v1 import microgrid_pb2

    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        reply = await stub.AddComponentBounds(
            add_bounds_request(
                component_id=10,
                target_metric=VERSIONS[2].metrics["ac_power"],
                bounds=[{"lower": -1.0, "upper": 1.0}],
                validity_duration=microgrid_pb2.ComponentBoundsValidityDuration.Value(duration),
            )
        )
        assert reply.ts.seconds == int(LATER)
        assert handler.bounds == [(10, "ac_power", ((-1.0, 1.0),), lifetime, None)]

    serve(VERSIONS[2], test)


def test_v1_refuses_a_validity_duration_it_does_not_define() -> None:
    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AddComponentBounds(
                add_bounds_request(component_id=10, bounds=[{"lower": -1.0}], validity_duration=77)
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "validity_duration 77" in (caught.value.details() or "")
        assert handler.bounds == []

    serve(VERSIONS[2], test)


CONTROLS = {
    "v1": {
        "StartComponent": "start",
        "PutComponentInStandby": "standby",
        "StopComponent": "stop",
        "AckComponentError": "ack",
    },
    "alpha": {
        "StartElectricalComponent": "start",
        "PutElectricalComponentInStandby": "standby",
        "StopElectricalComponent": "stop",
        "AckElectricalComponentError": "ack",
    },
}


@versions
def test_start_standby_stop_and_ack_reach_the_handler_with_their_component(
    version: Version,
) -> None:
    controls = CONTROLS["v1" if version.name == "v1" else "alpha"]

    async def test(adapter: Adapter, stub: Any, handler: Handler) -> None:
        for offset, name in enumerate(controls):
            request: Any = next(r.request for r in adapter.rpcs if r.name == name)
            [field] = request.DESCRIPTOR.fields
            await getattr(stub, name)(request(**{field.name: 10 + offset}))
        assert handler.switched == [(10, "start"), (11, "standby"), (12, "stop"), (13, "ack")]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub, next(iter(controls)))(request(**{field.name: 99}))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    serve(version, test)
