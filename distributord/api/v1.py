"""The one module that speaks ``frequenz.api.microgrid.v1`` (and its common types, ``common.v1``).

Theory of operation
-------------------
:data:`V1` is this version's :class:`~distributord.api.adapter.Adapter`; nothing else in
distributord imports this version's generated code. The daemon hands it the stub and the
messages it receives and gets distributord's own types back; the simulator serves the methods
of :meth:`V1.serve <distributord.api.adapter.Adapter.serve>` from its version-neutral handler.
The rules for judging telemetry are shared by every version (``distributord.api``); this module
only says how v1 spells things (:data:`DIALECT`).

What v1 says differently (``spec/microgrid-api.md``):

* ``ListComponents``: ``components[]``; an inverter's type is in ``category_type.inverter``
  (``INVERTER_TYPE_SOLAR`` is our ``PV``). v1 has relays, fuses and prechargers but no
  breaker: the simulator sends a breaker as a relay (:data:`CATEGORY_SUBSTITUTES`).
* ``ReceiveComponentDataStream``: ``data: ComponentData{component_id, metric_samples[],
  states[]}``; samples have ``sampled_at``, states ``sampled_at`` and error *codes*.
* Metric names: ``METRIC_BATTERY_SOC_PCT``, ``METRIC_BATTERY_CAPACITY``, ``METRIC_DC_POWER``,
  ``METRIC_AC_ACTIVE_POWER``.
* ``SetComponentPowerActive`` is unary: one ``valid_until``; a refusal is a gRPC status code.
  So is ``SetComponentPowerReactive`` (same fields, var): the daemon sends both through one
  code path (:data:`COMMANDS`), and the simulator serves both.

This module imports protobuf and v1's generated messages, never grpc: the stub is built on the
channel the shell hands in (``api.common.Stub``), and ``distributord.sim.servicer`` puts the
served methods on the simulator's server.
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Literal, overload

from frequenz.api.common.v1.metrics import metric_sample_pb2
from frequenz.api.common.v1.microgrid.components import components_pb2, inverter_pb2
from frequenz.api.common.v1.microgrid.sensors import sensors_pb2
from frequenz.api.microgrid.v1 import microgrid_pb2
from google.protobuf import timestamp_pb2

from distributord.api.adapter import (
    Adapter,
    Decoder,
    Follow,
    PowerType,
    Rpc,
    Served,
    SimAbort,
    SimHandler,
    Telemetry,
)
from distributord.api.common import (
    INVERTER_TYPES,
    Dialect,
    Stub,
    TelemetryDecoder,
    TelemetryServing,
    bounds_metric,
    category_from_name,
    category_name,
    control,
    enum_names,
    fill_microgrid,
    fill_sample,
    metric_numbers,
    ranges_of,
    rpcs,
    samples,
    sensor_stream,
    sensors_wanted,
    split_seconds,
    state_decoder,
    time_of,
    unwrapped,
    wanted,
)
from distributord.core.model import StateCode
from distributord.core.topology import Category, Component, Components, InverterType

__all__ = ["CATEGORY_SUBSTITUTES", "DIALECT", "V1", "encode_telemetry"]

Metric = metric_sample_pb2.Metric
ComponentData = components_pb2.ComponentData
StreamResponse = microgrid_pb2.ReceiveComponentDataStreamResponse
SetPowerRequest = microgrid_pb2.SetComponentPowerActiveRequest
SetPowerResponse = microgrid_pb2.SetComponentPowerActiveResponse
SetReactiveRequest = microgrid_pb2.SetComponentPowerReactiveRequest
SetReactiveResponse = microgrid_pb2.SetComponentPowerReactiveResponse
StreamRequest = microgrid_pb2.ReceiveComponentDataStreamRequest
ComponentsRequest = microgrid_pb2.ListComponentsRequest
ComponentsResponse = microgrid_pb2.ListComponentsResponse
ConnectionsRequest = microgrid_pb2.ListConnectionsRequest
ConnectionsResponse = microgrid_pb2.ListConnectionsResponse

_CATEGORY_PREFIX = "COMPONENT_CATEGORY_"
_INVERTER_TYPE_PREFIX = "INVERTER_TYPE_"
_STATE_PREFIX = "COMPONENT_STATE_CODE_"
_ERROR_PREFIX = "COMPONENT_ERROR_CODE_"

_category_name = enum_names(components_pb2.ComponentCategory, _CATEGORY_PREFIX)
_inverter_type_name = enum_names(inverter_pb2.InverterType, _INVERTER_TYPE_PREFIX)
_CATEGORY_NAMES = [
    n.removeprefix(_CATEGORY_PREFIX) for n, _ in components_pb2.ComponentCategory.items()
]
_ERROR_NAMES = frozenset(n for n, _ in components_pb2.ComponentErrorCode.items())

CATEGORY_SUBSTITUTES = {Category.BREAKER: "RELAY"}
"""What the simulator sends for a category v1 has no name for: a breaker, like a relay, only
switches the line (both pass through when pairing batteries)."""

_INVERTER_TYPE_NAMES = {
    InverterType.BATTERY: "BATTERY",
    InverterType.HYBRID: "HYBRID",
    InverterType.PV: "SOLAR",
    InverterType.UNSPECIFIED: "UNSPECIFIED",
}

_states = state_decoder(
    enum_names(components_pb2.ComponentStateCode, _STATE_PREFIX),
    enum_names(components_pb2.ComponentErrorCode, _ERROR_PREFIX),
)


def _state_codes(state: components_pb2.ComponentState) -> Any:
    # Errors and warnings are mostly none: an empty field is not iterated.
    errors, warnings = state.errors, state.warnings
    return _states(
        tuple(state.states),
        tuple(errors) if errors else (),
        tuple(warnings) if warnings else (),
    )


DIALECT = Dialect(
    component_id=operator.attrgetter("component_id"),
    metric_samples=operator.attrgetter("metric_samples"),
    sample_time="sampled_at",
    state_snapshots=operator.attrgetter("states"),
    state_time="sampled_at",
    states=_state_codes,
    # Plain ints: the generated enum resolves `Metric.X` through a Python __getattr__ each time,
    # which cost a third of the decoding time.
    soc=Metric.Value("METRIC_BATTERY_SOC_PCT"),
    capacity=Metric.Value("METRIC_BATTERY_CAPACITY"),
    dc_power=Metric.Value("METRIC_DC_POWER"),
    ac_power=Metric.Value("METRIC_AC_ACTIVE_POWER"),
    ac_reactive=Metric.Value("METRIC_AC_REACTIVE_POWER"),
    ac_apparent=Metric.Value("METRIC_AC_APPARENT_POWER"),
)
"""How v1 spells a telemetry message."""

_METRICS = {name: Metric.ValueType(number) for name, number in DIALECT.metrics.items()}

_STREAMED_METRICS = sorted(set(_METRICS.values()))
"""What the daemon asks a stream for: every metric it reads (the rest stay home)."""

SIM_METRIC_NUMBERS = metric_numbers(Metric, "METRIC_")
"""Each metric the simulator streams (neutral name, v1's own) to its number."""

_SIM_METRIC_NAMES = {number: name for name, number in SIM_METRIC_NUMBERS.items()}

_CONTROLS = {
    "StartComponent": "start",
    "PutComponentInStandby": "standby",
    "StopComponent": "stop",
    "AckComponentError": "ack",
}
"""The methods that switch a component, and what each asks the simulator to do."""

_BOUNDS_METRICS = {DIALECT.ac_power: "ac_power", DIALECT.dc_power: "dc_power"}
"""The metrics an ``AddComponentBounds`` may name that we have names for."""

_VALIDITY_PREFIX = "COMPONENT_BOUNDS_VALIDITY_DURATION_"
_validity_name = enum_names(microgrid_pb2.ComponentBoundsValidityDuration, _VALIDITY_PREFIX)

VALIDITY_DURATIONS: Mapping[str, int | None] = {
    "UNSPECIFIED": None,  # the request left it out: the default, 5 s
    "5_SECONDS": 5,
    "1_MINUTE": 60,
    "5_MINUTES": 300,
    "15_MINUTES": 900,
}
"""``AddComponentBounds``' ``validity_duration`` by name (prefix dropped), in seconds."""


# --- topology -----------------------------------------------------------------------------------


def component_of(component: components_pb2.Component) -> Component:
    """Our view of a ``Component``: its category by name, an inverter's type by name."""
    name = _category_name(component.category)
    category = Category.OTHER if name is None else category_from_name(name)
    if category is not Category.INVERTER:
        return Component(category)
    inverter_type = InverterType.UNSPECIFIED
    if component.category_type.WhichOneof("metadata") == "inverter":
        type_name = _inverter_type_name(component.category_type.inverter.type)
        inverter_type = _inverter_type(type_name)
    return Component(category, inverter_type)


def _inverter_type(name: str | None) -> InverterType:
    if name is None:
        return InverterType.UNSPECIFIED
    return INVERTER_TYPES.get(name, InverterType.UNSPECIFIED)


def components_of(response: ComponentsResponse) -> Components:
    """Component id to what it is (ids listed twice remembered)."""
    return Components((c.id, component_of(c)) for c in response.components)


def connections_of(response: ConnectionsResponse) -> list[tuple[int, int]]:
    """``(source, destination)`` edges."""
    return [(c.source_component_id, c.destination_component_id) for c in response.connections]


def _category_value(category: Category) -> components_pb2.ComponentCategory.ValueType:
    name = category_name(category, _CATEGORY_NAMES, CATEGORY_SUBSTITUTES)
    return components_pb2.ComponentCategory.Value(_CATEGORY_PREFIX + name)


def encode_component(
    component_id: int, component: Component | Category
) -> components_pb2.Component:
    """A ``Component`` (for the simulator); an inverter carries its type."""
    if isinstance(component, Category):
        component = Component(component)
    message = components_pb2.Component(
        id=component_id,
        name=f"{component.category.value}-{component_id}",
        category=_category_value(component.category),
    )
    if component.category is Category.INVERTER:
        inverter_type = component.inverter_type or InverterType.UNSPECIFIED
        message.category_type.inverter.type = inverter_pb2.InverterType.Value(
            _INVERTER_TYPE_PREFIX + _INVERTER_TYPE_NAMES[inverter_type]
        )
    return message


def components_response(
    components: Iterable[tuple[int, Component | Category]],
    request: ComponentsRequest | None = None,
) -> ComponentsResponse:
    """A ``ListComponents`` answer (for the simulator), filtered as ``request`` asks."""
    messages = [encode_component(cid, component) for cid, component in components]
    if request is not None:
        messages = [
            m
            for m in messages
            if wanted(m.id, request.component_ids) and wanted(m.category, request.categories)
        ]
    return ComponentsResponse(components=messages)


def connections_response(
    edges: Iterable[tuple[int, int]], request: ConnectionsRequest | None = None
) -> ConnectionsResponse:
    """A ``ListConnections`` answer (for the simulator), filtered as ``request`` asks."""
    if request is not None:
        edges = [(s, d) for s, d in edges if wanted(s, request.starts) and wanted(d, request.ends)]
    return ConnectionsResponse(
        connections=[
            components_pb2.ComponentConnection(source_component_id=s, destination_component_id=d)
            for s, d in edges
        ]
    )


# --- commands -----------------------------------------------------------------------------------


SetRequest = SetPowerRequest | SetReactiveRequest
SetResponse = SetPowerResponse | SetReactiveResponse

COMMANDS: Mapping[PowerType, tuple[str, type[SetRequest], type[SetResponse]]] = {
    PowerType.ACTIVE: ("SetComponentPowerActive", SetPowerRequest, SetPowerResponse),
    PowerType.REACTIVE: ("SetComponentPowerReactive", SetReactiveRequest, SetReactiveResponse),
}
"""Each power type's method, request and response: the two have the same fields."""


@overload
def set_power_request(
    inverter_id: int,
    power: float,
    lifetime_s: int,
    power_type: Literal[PowerType.ACTIVE] = PowerType.ACTIVE,
) -> SetPowerRequest: ...


@overload
def set_power_request(
    inverter_id: int, power: float, lifetime_s: int, power_type: PowerType
) -> SetRequest: ...


def set_power_request(
    inverter_id: int, power: float, lifetime_s: int, power_type: PowerType = PowerType.ACTIVE
) -> SetRequest:
    """``SetComponentPowerActive`` (W) or ``SetComponentPowerReactive`` (var) for an inverter."""
    _, request, _ = COMMANDS[power_type]
    return request(component_id=inverter_id, power=power, request_lifetime=lifetime_s)


def parse_set_power(request: SetRequest) -> tuple[int, float, int | None]:
    """``(component id, power W or var, lifetime s or None when absent)`` (for the simulator)."""
    lifetime = request.request_lifetime if request.HasField("request_lifetime") else None
    return request.component_id, request.power, lifetime


@overload
def set_power_response(
    valid_until: float, power_type: Literal[PowerType.ACTIVE] = PowerType.ACTIVE
) -> SetPowerResponse: ...


@overload
def set_power_response(valid_until: float, power_type: PowerType) -> SetResponse: ...


def set_power_response(valid_until: float, power_type: PowerType = PowerType.ACTIVE) -> SetResponse:
    """The answer to a ``SetComponentPowerActive`` or ``...Reactive`` (for the simulator)."""
    _, _, response = COMMANDS[power_type]
    return response(valid_until=_timestamp(valid_until))


def valid_until(response: SetResponse) -> float:
    """Until when (Unix time, s) the accepted setpoint holds; nan if the reply does not say."""
    return time_of(response, "valid_until")


# --- telemetry ----------------------------------------------------------------------------------


def stream_request(component_id: int) -> StreamRequest:
    """``ReceiveComponentDataStream`` for one component: the metrics the daemon reads."""
    return StreamRequest(
        component_id=component_id,
        filter=StreamRequest.ComponentDataStreamFilter(metrics=_STREAMED_METRICS),
    )


def _timestamp(value: float) -> timestamp_pb2.Timestamp:
    whole, nanos = split_seconds(value)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=nanos)


def _error_code(name: str) -> components_pb2.ComponentErrorCode.ValueType:
    full = _ERROR_PREFIX + name.upper()
    return components_pb2.ComponentErrorCode.Value(
        full if full in _ERROR_NAMES else _ERROR_PREFIX + "UNKNOWN"
    )


_STATE_NUMBERS = {
    code: components_pb2.ComponentStateCode.Value(_STATE_PREFIX + code.name) for code in StateCode
}
"""Our state codes to v1's numbers, by name (once: ``Value`` is slow)."""


def encode_telemetry(
    telemetry: Telemetry, wanted: frozenset[str] | None = None
) -> components_pb2.ComponentData:
    """A reading as v1's ``ComponentData`` (for the simulator; what :data:`V1` decodes).

    Args:
        telemetry: The reading.
        wanted: The metrics to send, by neutral name (``api.common.SIM_METRICS``); None:
            every metric the reading has.

    Error and warning names are ``ComponentErrorCode`` names without their prefix, in any case
    (``"overcurrent"``); a name v1 does not know is sent as ``unknown``.
    """
    # Built in place (``add``): a sub-message handed to a constructor is copied.
    whole, nanos = split_seconds(telemetry.sampled_at)
    message = components_pb2.ComponentData(component_id=telemetry.component_id)
    add = message.metric_samples.add
    numbers = SIM_METRIC_NUMBERS
    for name, value, ranges in samples(telemetry, wanted):
        sample = add(metric=Metric.ValueType(numbers[name]))
        when = sample.sampled_at
        when.seconds, when.nanos = whole, nanos
        fill_sample(sample, value, ranges)
    state = message.states.add()
    when = state.sampled_at
    when.seconds, when.nanos = whole, nanos
    state.states.extend([_STATE_NUMBERS[s] for s in telemetry.states])
    if telemetry.errors:
        state.errors.extend([_error_code(e) for e in telemetry.errors])
    if telemetry.warnings:
        state.warnings.extend([_error_code(w) for w in telemetry.warnings])
    return message


def _wrap(data: ComponentData) -> StreamResponse:
    return StreamResponse(data=data)


# --- the adapter --------------------------------------------------------------------------------


SERVICE = microgrid_pb2.DESCRIPTOR.services_by_name["Microgrid"]
"""v1's ``Microgrid`` service, as its descriptor says."""


class _V1:
    """The v1 :class:`~distributord.api.adapter.Adapter` (see the module docstring)."""

    name = "v1"
    service: str = SERVICE.full_name
    rpcs: tuple[Rpc, ...] = rpcs(SERVICE)

    def stub(self, channel: Any) -> Any:
        """A ``Microgrid`` stub on a grpc channel."""
        return Stub(channel, self.rpcs)

    async def components(self, stub: Any) -> Components:
        """Every component (``ListComponents``)."""
        return components_of(await stub.ListComponents(ComponentsRequest()))

    async def connections(self, stub: Any) -> list[tuple[int, int]]:
        """Every edge (``ListConnections``)."""
        return connections_of(await stub.ListConnections(ConnectionsRequest()))

    def telemetry(self, stub: Any, component_id: int) -> AsyncIterator[Any]:
        """A component's ``ComponentData`` messages; closing the iterator cancels the RPC."""
        return unwrapped(stub.ReceiveComponentDataStream(stream_request(component_id)), "data")

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> Decoder:
        """A decoder for one component's ``ComponentData`` messages."""
        return TelemetryDecoder(
            DIALECT, component_id, battery=battery, max_data_age_s=max_data_age_s
        )

    async def set_power(
        self,
        stub: Any,
        inverter_id: int,
        power: float,
        lifetime_s: int,
        *,
        follow: Follow | None = None,
        power_type: PowerType = PowerType.ACTIVE,
    ) -> float:
        """``SetComponentPowerActive`` or ``...Reactive``: until when it holds (nan if unsaid).

        A refusal comes as a gRPC error, which passes through (see ``api.adapter``). v1
        answers once: nothing is left to ``follow``.
        """
        method, _, _ = COMMANDS[power_type]
        request = set_power_request(inverter_id, power, lifetime_s, power_type)
        return valid_until(await getattr(stub, method)(request))

    def serve(self, handler: SimHandler) -> Mapping[str, Served]:
        """v1's ``Microgrid`` methods, served from ``handler`` (the others: ``UNIMPLEMENTED``)."""
        serving = TelemetryServing(handler, encode_telemetry, _wrap, _SIM_METRIC_NAMES)

        async def list_components(request: ComponentsRequest) -> ComponentsResponse:
            return components_response(handler.components(), request)

        async def list_connections(request: ConnectionsRequest) -> ConnectionsResponse:
            return connections_response(handler.connections(), request)

        async def receive_component_data_stream(
            request: StreamRequest,
        ) -> AsyncIterator[StreamResponse]:
            metrics = list(request.filter.metrics) if request.HasField("filter") else None
            async for reply in serving.replies(request.component_id, metrics):
                yield reply

        def set_component_power(power_type: PowerType) -> Served:
            async def serve(request: SetRequest) -> SetResponse:
                command = (
                    handler.set_power
                    if power_type is PowerType.ACTIVE
                    else handler.set_reactive_power
                )
                outcome = await command(*parse_set_power(request))
                if outcome.code is not None or outcome.valid_until is None:
                    raise SimAbort(outcome.code or "INTERNAL", outcome.details)
                return set_power_response(outcome.valid_until, power_type)

            return serve

        return {
            "ListComponents": list_components,
            "ListConnections": list_connections,
            "ReceiveComponentDataStream": receive_component_data_stream,
            **{method: set_component_power(kind) for kind, (method, _, _) in COMMANDS.items()},
            **_serve_site(handler),
        }


def _serve_site(handler: SimHandler) -> dict[str, Served]:
    """The microgrid, its sensors and added bounds, served from ``handler``."""

    async def get_microgrid_metadata(request: Any) -> Any:
        response = microgrid_pb2.GetMicrogridMetadataResponse()
        fill_microgrid(response.microgrid, handler.microgrid())
        return response

    async def list_sensors(request: Any) -> Any:
        return microgrid_pb2.ListSensorsResponse(
            sensors=[
                sensors_pb2.Sensor(id=sensor)
                for sensor in sensors_wanted(handler, request.sensor_ids)
            ]
        )

    async def receive_sensor_data_stream(request: Any) -> AsyncIterator[Any]:
        metrics = list(request.filter.metrics) if request.HasField("filter") else None
        async for message in sensor_stream(handler, request.sensor_id, metrics):
            yield message

    async def add_component_bounds(request: Any) -> Any:
        duration = _validity_name(request.validity_duration)
        if duration is None:
            raise SimAbort(
                "INVALID_ARGUMENT",
                f"validity_duration {request.validity_duration} is not one the API defines",
            )
        until = handler.add_bounds(
            request.component_id,
            bounds_metric(request.target_metric, _BOUNDS_METRICS, Metric),
            ranges_of(request.bounds),
            VALIDITY_DURATIONS[duration],
            None,
        )
        return microgrid_pb2.AddComponentBoundsResponse(ts=_timestamp(until))

    return {
        "GetMicrogridMetadata": get_microgrid_metadata,
        "ListSensors": list_sensors,
        "ReceiveSensorDataStream": receive_sensor_data_stream,
        "AddComponentBounds": add_component_bounds,
        **{name: control(handler, action) for name, action in _CONTROLS.items()},
    }


V1: Adapter = _V1()
"""The v1 adapter."""
