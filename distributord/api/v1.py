"""The one module that speaks ``frequenz.api.microgrid.v1`` (and its common types).

Theory of operation
-------------------
Nothing else in distributord imports the generated code. The IO shell passes messages it
receives straight here and gets distributord's own frozen types back; it asks here for the
messages it sends. The simulator, the other side of the wire, builds its messages here too.

Decoding is pure (no grpc, no clock): time comes in as arguments. ``grpc`` itself is only
imported by :func:`microgrid_stub` and the servicer helpers, which the IO shell calls.

What we read (``spec/microgrid-v1.md``):

* battery: ``METRIC_BATTERY_SOC_PCT`` (value, and ``bounds[0]`` as the SoC bounds),
  ``METRIC_BATTERY_CAPACITY``, ``METRIC_DC_POWER`` (value, and ``bounds`` as the power bounds);
* inverter: ``METRIC_AC_ACTIVE_POWER`` (value, and ``bounds`` as the power bounds);
* both: the newest ``ComponentState`` (state codes, errors, warnings).

A metric missing from a sample keeps its previous value only while that value is fresh
(received less than ``max_data_age`` ago); otherwise it is unknown (``nan``). Inverted SoC
bounds and power ranges that cannot be represented are reported as :class:`Note` so that the
caller can log them once.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

from frequenz.api.common.v1.metrics import bounds_pb2, metric_sample_pb2
from frequenz.api.common.v1.microgrid.components import components_pb2
from frequenz.api.microgrid.v1 import microgrid_pb2
from google.protobuf import timestamp_pb2

from distributord.core.bounds import Range, bounds_from_ranges
from distributord.core.errors import CommandError, CommandFailedError, CommandRejectedError
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds, StateCode
from distributord.core.topology import Category

Metric = metric_sample_pb2.Metric
ComponentData = components_pb2.ComponentData
StreamResponse = microgrid_pb2.ReceiveComponentDataStreamResponse
SetPowerRequest = microgrid_pb2.SetComponentPowerActiveRequest
SetPowerResponse = microgrid_pb2.SetComponentPowerActiveResponse
StreamRequest = microgrid_pb2.ReceiveComponentDataStreamRequest
ComponentsRequest = microgrid_pb2.ListComponentsRequest
ComponentsResponse = microgrid_pb2.ListComponentsResponse
ConnectionsRequest = microgrid_pb2.ListConnectionsRequest
ConnectionsResponse = microgrid_pb2.ListConnectionsResponse

_CATEGORY_PREFIX = "COMPONENT_CATEGORY_"
_STATE_PREFIX = "COMPONENT_STATE_CODE_"
_ERROR_PREFIX = "COMPONENT_ERROR_CODE_"

REJECTING_CODES = frozenset({"OUT_OF_RANGE", "INVALID_ARGUMENT"})
"""gRPC status codes that mean "this setpoint is not acceptable", not "something broke"."""


# --- topology -------------------------------------------------------------------------------


def components_request() -> microgrid_pb2.ListComponentsRequest:
    """``ListComponents`` for all components."""
    return microgrid_pb2.ListComponentsRequest()


def connections_request() -> microgrid_pb2.ListConnectionsRequest:
    """``ListConnections`` for all connections."""
    return microgrid_pb2.ListConnectionsRequest()


def decode_components(response: microgrid_pb2.ListComponentsResponse) -> dict[int, Category]:
    """Component id to category."""
    out: dict[int, Category] = {}
    for component in response.components:
        name = components_pb2.ComponentCategory.Name(component.category)
        short = name.removeprefix(_CATEGORY_PREFIX).lower()
        out[component.id] = (
            Category(short) if short in Category.__members__.values() else Category.OTHER
        )
    return out


def decode_connections(response: microgrid_pb2.ListConnectionsResponse) -> list[tuple[int, int]]:
    """``(source, destination)`` edges."""
    return [(c.source_component_id, c.destination_component_id) for c in response.connections]


def components_response(components: Iterable[tuple[int, Category]]) -> ComponentsResponse:
    """A ``ListComponents`` answer (for the simulator)."""
    return microgrid_pb2.ListComponentsResponse(
        components=[
            components_pb2.Component(
                id=cid,
                name=f"{category.value}-{cid}",
                category=components_pb2.ComponentCategory.Value(
                    _CATEGORY_PREFIX
                    + (category.name if category is not Category.OTHER else "UNSPECIFIED")
                ),
            )
            for cid, category in components
        ]
    )


def connections_response(edges: Iterable[tuple[int, int]]) -> ConnectionsResponse:
    """A ``ListConnections`` answer (for the simulator)."""
    return microgrid_pb2.ListConnectionsResponse(
        connections=[
            components_pb2.ComponentConnection(source_component_id=s, destination_component_id=d)
            for s, d in edges
        ]
    )


# --- commands -------------------------------------------------------------------------------


def set_power_request(inverter_id: int, power_w: float, lifetime_s: int) -> SetPowerRequest:
    """``SetComponentPowerActive`` for an inverter."""
    return microgrid_pb2.SetComponentPowerActiveRequest(
        component_id=inverter_id, power=power_w, request_lifetime=lifetime_s
    )


def parse_set_power(request: SetPowerRequest) -> tuple[int, float, int | None]:
    """``(component id, power W, lifetime s or None when absent)`` (for the simulator)."""
    lifetime = request.request_lifetime if request.HasField("request_lifetime") else None
    return request.component_id, request.power, lifetime


def set_power_response(valid_until: float) -> SetPowerResponse:
    """The answer to a ``SetComponentPowerActive`` (for the simulator)."""
    return microgrid_pb2.SetComponentPowerActiveResponse(valid_until=_timestamp(valid_until))


def valid_until(response: SetPowerResponse) -> float:
    """Until when (Unix time, s) the accepted setpoint holds."""
    return _seconds(response.valid_until)


def command_error(code: str, details: str = "") -> CommandError:
    """The domain error for a gRPC status code name (``"OUT_OF_RANGE"``, ...)."""
    if code in REJECTING_CODES:
        return CommandRejectedError(code, details)
    return CommandFailedError(code, details)


# --- telemetry ------------------------------------------------------------------------------


def stream_request(component_id: int) -> StreamRequest:
    """``ReceiveComponentDataStream`` for one component, all metrics."""
    return microgrid_pb2.ReceiveComponentDataStreamRequest(component_id=component_id)


def parse_stream_request(request: StreamRequest) -> int:
    """The component a stream is asked for (for the simulator)."""
    return request.component_id


class Note(enum.StrEnum):
    """Something in a sample the caller should log (once)."""

    LOSSY_BOUNDS = "power ranges that cannot be represented were left out"
    INVERTED_SOC_BOUNDS = "SoC bounds are inverted; treated as unknown"


_SOC = Metric.Value("METRIC_BATTERY_SOC_PCT")
_CAPACITY = Metric.Value("METRIC_BATTERY_CAPACITY")
_DC_POWER = Metric.Value("METRIC_DC_POWER")
_AC_POWER = Metric.Value("METRIC_AC_ACTIVE_POWER")
# Plain ints: the generated enum resolves `Metric.X` through a Python __getattr__ each time,
# which cost a third of the decoding time.

_UNKNOWN_BOUNDS = PowerBounds.unknown()
_NO_STATES: tuple[frozenset[StateCode], frozenset[str], frozenset[str]] = (
    frozenset(),
    frozenset(),
    frozenset(),
)


@functools.lru_cache(maxsize=4096)
def _convert(ranges: tuple[Range, ...]) -> tuple[PowerBounds, bool]:
    """Bounds from ranges, cached: a component's ranges change rarely (at its SoC limits)."""
    conversion = bounds_from_ranges(ranges)
    return conversion.bounds, conversion.lossy


@functools.lru_cache(maxsize=4096)
def _states(
    states: tuple[int, ...], errors: tuple[int, ...], warnings: tuple[int, ...]
) -> tuple[frozenset[StateCode], frozenset[str], frozenset[str]]:
    """Decoded state, error and warning codes, cached: they rarely change."""
    return (
        frozenset(_state_code(code) for code in states),  # type: ignore[arg-type]
        frozenset(_error_name(code) for code in errors),  # type: ignore[arg-type]
        frozenset(_error_name(code) for code in warnings),  # type: ignore[arg-type]
    )


class TelemetryDecoder:
    """Decodes one component's stream into snapshots, field by field.

    Args:
        component_id: The component.
        battery: Whether it is a battery (else an inverter).
        max_data_age_s: How long a field keeps its value when later samples omit it.
    """

    def __init__(self, component_id: int, *, battery: bool, max_data_age_s: float) -> None:
        self.component_id = component_id
        self.battery = battery
        self.max_data_age_s = max_data_age_s
        self._power_metric = _DC_POWER if battery else _AC_POWER
        # Field name to (value, when it was received).
        self._fields: dict[str, tuple[Any, float]] = {}
        self._sampled_at = math.nan
        self.notes: set[Note] = set()
        """Notes raised by the last :meth:`decode` (the caller logs new ones)."""

    def decode(
        self, data: ComponentData, *, received_at: float
    ) -> BatterySnapshot | InverterSnapshot:
        """The snapshot after ``data`` arrived at ``received_at`` (monotonic seconds)."""
        notes: set[Note] = set()
        newest = -math.inf
        fields = self._fields
        for sample in data.metric_samples:
            if sample.HasField("sampled_at"):
                newest = max(newest, _seconds(sample.sampled_at))
            value = (
                sample.value.simple_metric.value
                if sample.value.HasField("simple_metric")
                else math.nan
            )
            metric = sample.metric
            if metric == self._power_metric:
                fields["power"] = (value, received_at)
                bounds, lossy = _convert(tuple(_range(b) for b in sample.bounds))
                if lossy:
                    notes.add(Note.LOSSY_BOUNDS)
                fields["bounds"] = (bounds, received_at)
            elif self.battery and metric == _SOC:
                fields["soc"] = (value, received_at)
                low, high = math.nan, math.nan
                if sample.bounds:
                    lower, upper = _range(sample.bounds[0])
                    low = math.nan if lower is None else lower
                    high = math.nan if upper is None else upper
                    if low > high:
                        notes.add(Note.INVERTED_SOC_BOUNDS)
                        low = high = math.nan
                fields["soc_bounds"] = ((low, high), received_at)
            elif self.battery and metric == _CAPACITY:
                fields["capacity"] = (value, received_at)
        if data.states:
            state = (
                data.states[-1]
                if len(data.states) == 1
                else max(data.states, key=lambda s: _seconds(s.sampled_at))
            )
            if state.HasField("sampled_at"):
                newest = max(newest, _seconds(state.sampled_at))
            fields["states"] = (
                _states(tuple(state.states), tuple(state.errors), tuple(state.warnings)),
                received_at,
            )
        if newest > -math.inf:
            self._sampled_at = newest
        self.notes = notes
        return self._snapshot(received_at)

    def _get(self, name: str, now: float, default: Any) -> Any:
        field = self._fields.get(name)
        if field is None or now - field[1] > self.max_data_age_s:
            return default
        return field[0]

    def _snapshot(self, now: float) -> BatterySnapshot | InverterSnapshot:
        nan = math.nan
        get = self._get
        states, errors, warnings = get("states", now, _NO_STATES)
        if not self.battery:
            return InverterSnapshot(
                component_id=self.component_id,
                sampled_at=self._sampled_at,
                received_at=now,
                active_power_w=get("power", now, nan),
                bounds=get("bounds", now, _UNKNOWN_BOUNDS),
                states=states,
                errors=errors,
                warnings=warnings,
            )
        soc_lower, soc_upper = get("soc_bounds", now, (nan, nan))
        return BatterySnapshot(
            component_id=self.component_id,
            sampled_at=self._sampled_at,
            received_at=now,
            soc_pct=get("soc", now, nan),
            soc_lower_pct=soc_lower,
            soc_upper_pct=soc_upper,
            capacity_wh=get("capacity", now, nan),
            power_w=get("power", now, nan),
            bounds=get("bounds", now, _UNKNOWN_BOUNDS),
            states=states,
            errors=errors,
            warnings=warnings,
        )


def _range(bounds: bounds_pb2.Bounds) -> Range:
    lower = bounds.lower if bounds.HasField("lower") else None
    upper = bounds.upper if bounds.HasField("upper") else None
    return lower, upper


def _state_code(code: components_pb2.ComponentStateCode.ValueType) -> StateCode:
    try:  # protobuf enums are open: a newer server may send a code we do not know
        name = components_pb2.ComponentStateCode.Name(code)
        return StateCode(name.removeprefix(_STATE_PREFIX).lower())
    except ValueError:
        return StateCode.UNKNOWN


def _error_name(code: components_pb2.ComponentErrorCode.ValueType) -> str:
    try:
        name = components_pb2.ComponentErrorCode.Name(code)
    except ValueError:
        return f"unknown_{code}"
    return name.removeprefix(_ERROR_PREFIX).lower()


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return float(ts.seconds) + ts.nanos / 1e9


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    # Split first: nanoseconds since 1970 exceed a double's exact range (2^53 ns is 104 days).
    whole = math.floor(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return timestamp_pb2.Timestamp(seconds=whole, nanos=nanos)


def _sample(
    metric: metric_sample_pb2.Metric.ValueType,
    sampled_at: float,
    value: float | None,
    ranges: Sequence[Range] | None,
) -> metric_sample_pb2.MetricSample:
    sample = metric_sample_pb2.MetricSample(sampled_at=_timestamp(sampled_at), metric=metric)
    if value is not None:
        sample.value.simple_metric.value = value
    for lower, upper in ranges or ():
        bounds = sample.bounds.add()
        if lower is not None:
            bounds.lower = lower
        if upper is not None:
            bounds.upper = upper
    return sample


def _state(
    sampled_at: float, states: Iterable[StateCode], errors: Iterable[str], warnings: Iterable[str]
) -> components_pb2.ComponentState:
    return components_pb2.ComponentState(
        sampled_at=_timestamp(sampled_at),
        states=[components_pb2.ComponentStateCode.Value(_STATE_PREFIX + s.name) for s in states],
        errors=[components_pb2.ComponentErrorCode.Value(_ERROR_PREFIX + e.upper()) for e in errors],
        warnings=[
            components_pb2.ComponentErrorCode.Value(_ERROR_PREFIX + w.upper()) for w in warnings
        ],
    )


def battery_data(
    component_id: int,
    *,
    sampled_at: float,
    soc_pct: float | None,
    soc_bounds: Range | None,
    capacity_wh: float | None,
    power_w: float | None,
    power_ranges: Sequence[Range] | None,
    states: Iterable[StateCode],
    errors: Iterable[str] = (),
    warnings: Iterable[str] = (),
) -> StreamResponse:
    """A battery's stream message (for the simulator). ``None`` leaves a value or bounds out.

    Error and warning names are ``ComponentErrorCode`` names without their prefix, in any case
    (``"overcurrent"``).
    """
    samples = []
    if soc_pct is not None or soc_bounds is not None:
        samples.append(
            _sample(
                Metric.METRIC_BATTERY_SOC_PCT,
                sampled_at,
                soc_pct,
                [soc_bounds] if soc_bounds else None,
            )
        )
    if capacity_wh is not None:
        samples.append(_sample(Metric.METRIC_BATTERY_CAPACITY, sampled_at, capacity_wh, None))
    if power_w is not None or power_ranges:
        samples.append(_sample(Metric.METRIC_DC_POWER, sampled_at, power_w, power_ranges))
    return microgrid_pb2.ReceiveComponentDataStreamResponse(
        data=components_pb2.ComponentData(
            component_id=component_id,
            metric_samples=samples,
            states=[_state(sampled_at, states, errors, warnings)],
        )
    )


def inverter_data(
    component_id: int,
    *,
    sampled_at: float,
    active_power_w: float | None,
    power_ranges: Sequence[Range] | None,
    states: Iterable[StateCode],
    errors: Iterable[str] = (),
    warnings: Iterable[str] = (),
) -> StreamResponse:
    """An inverter's stream message (for the simulator). ``None`` leaves a value or bounds out."""
    samples = []
    if active_power_w is not None or power_ranges:
        samples.append(
            _sample(Metric.METRIC_AC_ACTIVE_POWER, sampled_at, active_power_w, power_ranges)
        )
    return microgrid_pb2.ReceiveComponentDataStreamResponse(
        data=components_pb2.ComponentData(
            component_id=component_id,
            metric_samples=samples,
            states=[_state(sampled_at, states, errors, warnings)],
        )
    )


# --- gRPC service glue (imports grpc; for the IO shell and the simulator only) ---------------


def microgrid_stub(channel: Any) -> Any:
    """A ``Microgrid`` stub on a grpc.aio channel."""
    from frequenz.api.microgrid.v1 import microgrid_pb2_grpc

    return microgrid_pb2_grpc.MicrogridStub(channel)


def servicer_base() -> type:
    """The generated ``MicrogridServicer`` base class (for the simulator)."""
    from frequenz.api.microgrid.v1 import microgrid_pb2_grpc

    return microgrid_pb2_grpc.MicrogridServicer


def add_servicer(servicer: Any, server: Any) -> None:
    """Register a ``Microgrid`` servicer on a gRPC server (for the simulator)."""
    from frequenz.api.microgrid.v1 import microgrid_pb2_grpc

    microgrid_pb2_grpc.add_MicrogridServicer_to_server(servicer, server)
