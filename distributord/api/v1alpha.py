"""The one module that speaks ``frequenz.api.microgrid.v1alpha18`` and ``v1alpha19``.

Theory of operation
-------------------
:data:`V1ALPHA18` and :data:`V1ALPHA19` are these versions'
:class:`~distributord.api.adapter.Adapter` objects; nothing else in distributord imports their
generated code. Both use the common types of ``frequenz.api.common.v1alpha8`` and have the same
fields; what differs is in :data:`VERSIONS`:

================  ==============================  ==========================================
version           generated package               the stream request's filter message
================  ==============================  ==========================================
``v1alpha18``     ``microgrid.v1alpha18``         ``ComponentTelemetryStreamFilter``
``v1alpha19``     ``microgrid.v1alpha19``         ``ElectricalComponentTelemetryStreamFilter``
================  ==============================  ==========================================

(and so the service name, and the classes of every request and response, which are the
generated package's own). Telemetry is judged by the rules shared by every version
(``distributord.api``); :data:`DIALECT` says how these versions spell it: samples have
``sample_time``, state snapshots ``origin_time`` and errors as diagnostics
(``{diagnostic_code, ...}``); metrics ``METRIC_BATTERY_SOC_PCT`` (101),
``METRIC_BATTERY_CAPACITY`` (100), ``METRIC_DC_POWER``, ``METRIC_AC_POWER_ACTIVE``.

Components: an inverter's type is in ``category_specific_info.inverter`` (``INVERTER_TYPE_PV``
and so on). These versions call the grid ``GRID_CONNECTION_POINT`` and have breakers and
prechargers but no relay and no fuse: the simulator sends both as breakers
(:data:`CATEGORY_SUBSTITUTES`; all of them pass through when pairing batteries).

Commands (``SetElectricalComponentPower``, of ``POWER_TYPE_ACTIVE`` or ``POWER_TYPE_REACTIVE``:
the daemon sends both, through one code path, and the simulator serves both and answers any
other type ``REJECTED``) answer with a **stream** of replies
(``spec/microgrid-api.md``): ``ACCEPTED`` (with ``valid_until_time``) or ``REJECTED``, then,
after ``ACCEPTED``, one final reply, which may come long after: the inverter ramps first.
:meth:`AlphaAdapter.set_power` judges it. The daemon passes ``follow`` (issue 21): the command
**succeeds on ACCEPTED**, with its ``valid_until_time``, and the rest of the stream is handed
to ``follow`` (:meth:`AlphaAdapter._rest`, read by the link in the background): it returns the
final reply (``SUCCESS``, ``FAILED``, ``OVERRIDDEN``; ``REJECTED`` after ``ACCEPTED`` counts
as ``FAILED``), or ``END`` when the stream ends without one. ``REJECTED`` (a
:class:`~distributord.core.errors.CommandRejectedError`) and a final reply before any
``ACCEPTED`` are judged at once, as below.

Without ``follow`` (a caller that cannot read on) it waits for the final reply:

* ``SUCCESS``: the setpoint holds until its ``valid_until_time`` (``ACCEPTED``'s if absent);
* ``OVERRIDDEN``: :class:`~distributord.core.errors.CommandOverriddenError`, which does not
  block the battery (it is not the battery's failure);
* ``FAILED``: :class:`~distributord.core.errors.CommandFailedError` ``"FAILED"``;
* ``REJECTED``: :class:`~distributord.core.errors.CommandRejectedError` ``"REJECTED"``;
* the stream ends with no final reply: :class:`~distributord.core.errors.CommandFailedError`
  ``"NO_FINAL_REPLY"``.

A status this module does not know (a newer server's) is skipped: the next reply decides. After
the final reply the server ends the stream; the adapter waits for that (at most
:data:`END_GRACE_S`), so that a completed command ends as completed at the server, not as
cancelled by us. The caller's deadline cancels the RPC (for the rest of a followed stream:
cancelling :meth:`AlphaAdapter._rest`); gRPC errors pass through.

This module imports protobuf and these versions' generated messages, never grpc: the stub is
built on the channel the shell hands in (``api.common.Stub``), and ``distributord.sim.servicer``
puts the served methods (:meth:`AlphaAdapter.serve`) on the simulator's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import operator
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import attrs
from frequenz.api.common.v1alpha8.metrics import metrics_pb2
from frequenz.api.common.v1alpha8.microgrid.electrical_components import (
    electrical_components_pb2 as components_pb2,
)
from frequenz.api.common.v1alpha8.microgrid.sensors import sensors_pb2
from frequenz.api.microgrid.v1alpha18 import microgrid_pb2 as v1alpha18_pb2
from frequenz.api.microgrid.v1alpha19 import microgrid_pb2 as v1alpha19_pb2
from google.protobuf import empty_pb2, timestamp_pb2

from distributord.api.adapter import (
    Adapter,
    Decoder,
    FinalReply,
    Follow,
    PowerType,
    Rpc,
    Served,
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
    end_call,
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
from distributord.core.errors import (
    CommandFailedError,
    CommandOverriddenError,
    CommandRejectedError,
)
from distributord.core.model import StateCode
from distributord.core.topology import Category, Component, Components, InverterType

__all__ = [
    "CATEGORY_SUBSTITUTES",
    "DIALECT",
    "V1ALPHA18",
    "V1ALPHA19",
    "VERSIONS",
    "AlphaAdapter",
    "Version",
    "encode_component",
    "encode_telemetry",
]


@attrs.frozen(kw_only=True)
class Version:
    """What differs between v1alpha18 and v1alpha19.

    Attributes:
        name: The version, as the configuration spells it.
        pb2: The generated ``microgrid_pb2`` module.
        stream_filter: The name of the telemetry stream request's nested filter message.
    """

    name: str
    pb2: Any
    stream_filter: str

    @property
    def service(self) -> str:
        """The full gRPC service name."""
        return str(self.pb2.DESCRIPTOR.services_by_name["Microgrid"].full_name)

    @property
    def rpcs(self) -> tuple[Rpc, ...]:
        """Every method of the version's ``Microgrid`` service."""
        return rpcs(self.pb2.DESCRIPTOR.services_by_name["Microgrid"])


VERSIONS = {
    "v1alpha18": Version(
        name="v1alpha18",
        pb2=v1alpha18_pb2,
        stream_filter="ComponentTelemetryStreamFilter",
    ),
    "v1alpha19": Version(
        name="v1alpha19",
        pb2=v1alpha19_pb2,
        stream_filter="ElectricalComponentTelemetryStreamFilter",
    ),
}
"""The differences, by version (see the module docstring)."""

Metric = metrics_pb2.Metric

_CATEGORY_PREFIX = "ELECTRICAL_COMPONENT_CATEGORY_"
_INVERTER_TYPE_PREFIX = "INVERTER_TYPE_"
_STATE_PREFIX = "ELECTRICAL_COMPONENT_STATE_CODE_"
_DIAGNOSTIC_PREFIX = "ELECTRICAL_COMPONENT_DIAGNOSTIC_CODE_"

_category_name = enum_names(components_pb2.ElectricalComponentCategory, _CATEGORY_PREFIX)
_inverter_type_name = enum_names(components_pb2.InverterType, _INVERTER_TYPE_PREFIX)
_CATEGORY_NAMES = [
    n.removeprefix(_CATEGORY_PREFIX) for n, _ in components_pb2.ElectricalComponentCategory.items()
]
_DIAGNOSTIC_NAMES = frozenset(
    n for n, _ in components_pb2.ElectricalComponentDiagnosticCode.items()
)

CATEGORY_SUBSTITUTES = {
    Category.GRID: "GRID_CONNECTION_POINT",
    Category.RELAY: "BREAKER",
    Category.FUSE: "BREAKER",
}
"""What the simulator sends for a category these versions name differently or not at all: a
relay or a fuse, like a breaker, only switches or protects the line."""

_INVERTER_TYPE_NAMES = {
    InverterType.BATTERY: "BATTERY",
    InverterType.HYBRID: "HYBRID",
    InverterType.PV: "PV",
    InverterType.UNSPECIFIED: "UNSPECIFIED",
}

_states = state_decoder(
    enum_names(components_pb2.ElectricalComponentStateCode, _STATE_PREFIX),
    enum_names(components_pb2.ElectricalComponentDiagnosticCode, _DIAGNOSTIC_PREFIX),
)


def _state_codes(snapshot: components_pb2.ElectricalComponentStateSnapshot) -> Any:
    # Errors and warnings are mostly none: an empty field is not iterated.
    errors, warnings = snapshot.errors, snapshot.warnings
    return _states(
        tuple(snapshot.states),
        tuple([d.diagnostic_code for d in errors]) if errors else (),
        tuple([d.diagnostic_code for d in warnings]) if warnings else (),
    )


DIALECT = Dialect(
    component_id=operator.attrgetter("electrical_component_id"),
    metric_samples=operator.attrgetter("metric_samples"),
    sample_time="sample_time",
    state_snapshots=operator.attrgetter("state_snapshots"),
    state_time="origin_time",
    states=_state_codes,
    # Plain ints, resolved by name once (the generated enum's attribute lookup is slow).
    soc=Metric.Value("METRIC_BATTERY_SOC_PCT"),
    capacity=Metric.Value("METRIC_BATTERY_CAPACITY"),
    dc_power=Metric.Value("METRIC_DC_POWER"),
    ac_power=Metric.Value("METRIC_AC_POWER_ACTIVE"),
    ac_reactive=Metric.Value("METRIC_AC_POWER_REACTIVE"),
    ac_apparent=Metric.Value("METRIC_AC_POWER_APPARENT"),
)
"""How v1alpha18 and v1alpha19 spell a telemetry message (``ElectricalComponentTelemetry``)."""

_METRICS = {name: Metric.ValueType(number) for name, number in DIALECT.metrics.items()}

_STREAMED_METRICS = sorted(set(_METRICS.values()))
"""What the daemon asks a stream for: every metric it reads, for batteries and inverters (a
component leaves out what it does not have; the rest of a site's many metrics stay home)."""

_STATUS_PREFIX = "SET_ELECTRICAL_COMPONENT_POWER_REQUEST_STATUS_"

_CONTROLS = {
    "StartElectricalComponent": "start",
    "PutElectricalComponentInStandby": "standby",
    "StopElectricalComponent": "stop",
    "AckElectricalComponentError": "ack",
}
"""The methods that switch a component, and what each asks the simulator to do."""

_BOUNDS_METRICS = {DIALECT.ac_power: "ac_power", DIALECT.dc_power: "dc_power"}
"""The metrics a bounds request may name that we have names for (any other is refused)."""


def _alpha_name(name: str) -> str:
    """A neutral (v1) metric name as these versions spell it: ``AC_POWER_ACTIVE_PHASE_1``."""
    for power in ("ACTIVE", "REACTIVE", "APPARENT"):
        name = name.replace(f"AC_{power}_POWER", f"AC_POWER_{power}")
    return name


SIM_METRIC_NUMBERS = metric_numbers(Metric, "METRIC_", _alpha_name)
"""Each metric the simulator streams (neutral name) to these versions' number."""

_SIM_METRIC_NAMES = {number: name for name, number in SIM_METRIC_NUMBERS.items()}


END_GRACE_S = 1.0
"""After the final reply, how long the adapter waits for the server to end the reply stream
before it cancels the call."""


_LATE_REPLIES = {
    "SUCCESS": FinalReply.SUCCESS,
    "FAILED": FinalReply.FAILED,
    "OVERRIDDEN": FinalReply.OVERRIDDEN,
    "REJECTED": FinalReply.FAILED,
}
"""What a reply after ``ACCEPTED`` says of the command's fate (:meth:`AlphaAdapter._rest`)."""


def _verdict(status: str | None, reply: Any, accepted_until: float) -> float | Exception | None:
    """What a reply other than ``ACCEPTED`` decides while waiting for the final reply.

    Until when the setpoint holds, or the error; None for a status that decides nothing (the
    next reply decides).
    """
    if status == "SUCCESS":
        until = _until(reply)
        return accepted_until if math.isnan(until) else until
    if status == "OVERRIDDEN":
        return CommandOverriddenError(
            "OVERRIDDEN", "another command replaced it before it was applied"
        )
    if status == "FAILED":
        return CommandFailedError("FAILED", "the inverter did not apply the setpoint")
    if status == "REJECTED":
        return CommandRejectedError("REJECTED", "the API refused the setpoint")
    return None  # unspecified, or a newer server's status


async def _drain(replies: AsyncIterator[Any]) -> None:
    """Read what is left of a reply stream (nothing is expected after the final reply)."""
    async for _ in replies:
        pass


# --- topology -----------------------------------------------------------------------------------


def component_of(component: components_pb2.ElectricalComponent) -> Component:
    """Our view of an ``ElectricalComponent``: category and an inverter's type, by name."""
    name = _category_name(component.category)
    category = Category.OTHER if name is None else category_from_name(name)
    if category is not Category.INVERTER:
        return Component(category)
    inverter_type = InverterType.UNSPECIFIED
    if component.category_specific_info.WhichOneof("kind") == "inverter":
        type_name = _inverter_type_name(component.category_specific_info.inverter.type)
        if type_name is not None:
            inverter_type = INVERTER_TYPES.get(type_name, InverterType.UNSPECIFIED)
    return Component(category, inverter_type)


def encode_component(component_id: int, component: Component) -> components_pb2.ElectricalComponent:
    """An ``ElectricalComponent`` (for the simulator), with what the official client checks.

    An inverter carries its type, a battery the type lithium-ion, a grid connection point its
    (unknown: 0) fuse rating: the official client reports a missing one as a major issue.
    """
    name = category_name(component.category, _CATEGORY_NAMES, CATEGORY_SUBSTITUTES)
    message = components_pb2.ElectricalComponent(
        id=component_id,
        name=f"{component.category.value}-{component_id}",
        manufacturer="distributord",
        model_name="simulator",
        category=components_pb2.ElectricalComponentCategory.Value(_CATEGORY_PREFIX + name),
    )
    info = message.category_specific_info
    if component.category is Category.INVERTER:
        inverter_type = component.inverter_type or InverterType.UNSPECIFIED
        info.inverter.type = components_pb2.InverterType.Value(
            _INVERTER_TYPE_PREFIX + _INVERTER_TYPE_NAMES[inverter_type]
        )
    elif component.category is Category.BATTERY:
        info.battery.type = components_pb2.BatteryType.Value("BATTERY_TYPE_LI_ION")
    elif component.category is Category.GRID:
        info.grid_connection_point.SetInParent()
    return message


# --- telemetry ----------------------------------------------------------------------------------


def _timestamp(value: float) -> timestamp_pb2.Timestamp:
    whole, nanos = split_seconds(value)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=nanos)


def _diagnostic(name: str) -> components_pb2.ElectricalComponentDiagnostic:
    full = _DIAGNOSTIC_PREFIX + name.upper()
    if full in _DIAGNOSTIC_NAMES:
        return components_pb2.ElectricalComponentDiagnostic(
            diagnostic_code=components_pb2.ElectricalComponentDiagnosticCode.Value(full)
        )
    return components_pb2.ElectricalComponentDiagnostic(
        diagnostic_code=components_pb2.ElectricalComponentDiagnosticCode.Value(
            _DIAGNOSTIC_PREFIX + "UNKNOWN"
        ),
        message=name,
    )


_STATE_NUMBERS = {
    code: components_pb2.ElectricalComponentStateCode.Value(_STATE_PREFIX + code.name)
    for code in StateCode
}
"""Our state codes to these versions' numbers, by name (once: ``Value`` is slow)."""


def _fill_snapshot(
    snapshot: components_pb2.ElectricalComponentStateSnapshot,
    states: Iterable[StateCode],
    errors: Iterable[str],
    warnings: Iterable[str],
) -> None:
    snapshot.states.extend([_STATE_NUMBERS[s] for s in states])
    if errors:
        snapshot.errors.extend([_diagnostic(e) for e in errors])
    if warnings:
        snapshot.warnings.extend([_diagnostic(w) for w in warnings])


def encode_telemetry(
    telemetry: Telemetry, wanted: frozenset[str] | None = None
) -> components_pb2.ElectricalComponentTelemetry:
    """A reading as ``ElectricalComponentTelemetry`` (both versions; what the adapters decode).

    Args:
        telemetry: The reading.
        wanted: The metrics to send, by neutral name (``api.common.SIM_METRICS``); None:
            every metric the reading has.

    Error and warning names are ``ElectricalComponentDiagnosticCode`` names without their
    prefix, in any case (``"overcurrent"``); another name is sent as ``unknown`` with the name
    as its message.
    """
    # Built in place (``add``): a sub-message handed to a constructor is copied.
    whole, nanos = split_seconds(telemetry.sampled_at)
    message = components_pb2.ElectricalComponentTelemetry(
        electrical_component_id=telemetry.component_id
    )
    add = message.metric_samples.add
    numbers = SIM_METRIC_NUMBERS
    for name, value, ranges in samples(telemetry, wanted):
        sample = add(metric=Metric.ValueType(numbers[name]))
        when = sample.sample_time
        when.seconds, when.nanos = whole, nanos
        fill_sample(sample, value, ranges)
    snapshot = message.state_snapshots.add()
    when = snapshot.origin_time
    when.seconds, when.nanos = whole, nanos
    _fill_snapshot(snapshot, telemetry.states, telemetry.errors, telemetry.warnings)
    return message


def _until(reply: Any) -> float:
    """A reply's ``valid_until_time``; nan when absent or not a valid timestamp."""
    return time_of(reply, "valid_until_time")


# --- the adapter --------------------------------------------------------------------------------


class AlphaAdapter:
    """The :class:`~distributord.api.adapter.Adapter` of one of v1alpha18 / v1alpha19.

    Args:
        version: Which (see :data:`VERSIONS`).
    """

    def __init__(self, version: Version) -> None:
        self.version = version
        self.name = version.name
        self.service = version.service
        self.rpcs = version.rpcs
        self._filter = getattr(
            version.pb2.ReceiveElectricalComponentTelemetryStreamRequest, version.stream_filter
        )
        statuses = version.pb2.SetElectricalComponentPowerRequestStatus
        self._status_name = enum_names(statuses, _STATUS_PREFIX)
        self._status = {name.removeprefix(_STATUS_PREFIX): n for name, n in statuses.items()}
        self._power_types = {
            kind: version.pb2.PowerType.Value(f"POWER_TYPE_{kind.name}") for kind in PowerType
        }

    def __repr__(self) -> str:
        return f"<AlphaAdapter {self.name}>"

    # -- the daemon's side --------------------------------------------------------------------

    def stub(self, channel: Any) -> Any:
        """The version's ``Microgrid`` stub on a grpc channel."""
        return Stub(channel, self.rpcs)

    async def components(self, stub: Any) -> Components:
        """Every component (``ListElectricalComponents``), ids listed twice remembered."""
        response = await stub.ListElectricalComponents(
            self.version.pb2.ListElectricalComponentsRequest()
        )
        return Components((c.id, component_of(c)) for c in response.electrical_components)

    async def connections(self, stub: Any) -> list[tuple[int, int]]:
        """Every edge (``ListElectricalComponentConnections``)."""
        response = await stub.ListElectricalComponentConnections(
            self.version.pb2.ListElectricalComponentConnectionsRequest()
        )
        return [
            (c.source_electrical_component_id, c.destination_electrical_component_id)
            for c in response.electrical_component_connections
        ]

    def stream_request(self, component_id: int) -> Any:
        """``ReceiveElectricalComponentTelemetryStream`` for the metrics the daemon reads."""
        return self.version.pb2.ReceiveElectricalComponentTelemetryStreamRequest(
            electrical_component_id=component_id,
            filter=self._filter(metrics=_STREAMED_METRICS),
        )

    def telemetry(self, stub: Any, component_id: int) -> AsyncIterator[Any]:
        """A component's ``ElectricalComponentTelemetry`` messages; closing cancels the RPC."""
        call = stub.ReceiveElectricalComponentTelemetryStream(self.stream_request(component_id))
        return unwrapped(call, "telemetry")

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> Decoder:
        """A decoder for one component's ``ElectricalComponentTelemetry`` messages."""
        return TelemetryDecoder(
            DIALECT, component_id, battery=battery, max_data_age_s=max_data_age_s
        )

    def set_power_request(
        self,
        inverter_id: int,
        power: float,
        lifetime_s: int,
        power_type: PowerType = PowerType.ACTIVE,
    ) -> Any:
        """``SetElectricalComponentPower`` for an inverter: active (W) or reactive power (var)."""
        return self.version.pb2.SetElectricalComponentPowerRequest(
            electrical_component_id=inverter_id,
            power_type=self._power_types[power_type],
            power=power,
            request_lifetime=lifetime_s,
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
        """Command an inverter and judge the reply stream (see the module docstring).

        Args:
            stub: The version's stub.
            inverter_id: The inverter.
            power: Its active power, W, or its reactive power, var (``power_type``).
            lifetime_s: The command's ``request_lifetime``, s.
            follow: Given, the command succeeds on ``ACCEPTED``: this gets the rest of the
                stream (:data:`~distributord.api.adapter.Rest`) before this returns, for the
                caller to read in the background. Without it, this waits for the final reply.
            power_type: Which power: the request's ``power_type``; the replies are judged
                alike.

        Returns:
            Until when (Unix time, s) the setpoint holds; nan if no reply says.

        Raises:
            CommandRejectedError: ``REJECTED``.
            CommandOverriddenError: ``OVERRIDDEN`` (waiting for the final reply, or before
                ``ACCEPTED``).
            CommandFailedError: ``FAILED``, or the stream ended without a final reply (waiting
                for it), or without any reply.
        """
        call = stub.SetElectricalComponentPower(
            self.set_power_request(inverter_id, power, lifetime_s, power_type)
        )
        accepted = False
        accepted_until = math.nan
        verdict: float | Exception | None = None
        replies = aiter(call)
        handed = False  # the rest of the stream went to ``follow``: the caller ends the call
        try:
            async for reply in replies:
                status = self._status_name(reply.status)
                if status == "ACCEPTED":
                    accepted, accepted_until = True, _until(reply)
                    if follow is not None:
                        follow(functools.partial(self._rest, call, replies), call.cancel)
                        handed = True
                        return accepted_until
                    continue
                verdict = _verdict(status, reply, accepted_until)
                if verdict is not None:
                    break
            if verdict is not None:
                # The server ends the stream after its final reply: let it, so that the call
                # ends completed rather than cancelled by us (bounded; then it is cancelled).
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_drain(replies), END_GRACE_S)
        finally:
            if not handed:
                await end_call(call, replies)
        if isinstance(verdict, Exception):
            raise verdict
        if verdict is not None:
            return verdict
        raise CommandFailedError(
            "NO_FINAL_REPLY",
            "the reply stream ended "
            + ("after ACCEPTED without a final reply" if accepted else "without any reply"),
        )

    async def _rest(self, call: Any, replies: AsyncIterator[Any]) -> FinalReply:
        """Read an accepted command's stream to its final reply; the call ends with this.

        ``END`` when the stream ends without one. ``REJECTED`` after ``ACCEPTED`` (no server
        should) counts as ``FAILED``: the setpoint is not applied. gRPC errors pass through;
        cancelling this cancels the call.
        """
        try:
            async for reply in replies:
                status = self._status_name(reply.status)
                final = _LATE_REPLIES.get(status or "")
                if final is None:  # ACCEPTED again, unspecified, a newer server's: read on
                    continue
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_drain(replies), END_GRACE_S)
                return final
            return FinalReply.END
        finally:
            await end_call(call, replies)

    # -- the simulator's side -----------------------------------------------------------------

    def serve(self, handler: SimHandler) -> Mapping[str, Served]:
        """The version's ``Microgrid`` methods, served from ``handler`` (the others: unimplemented).

        A refusal is a ``REJECTED`` reply; the handler's :class:`SimAbort` passes through.
        """
        pb2 = self.version.pb2
        reply = pb2.SetElectricalComponentPowerResponse
        status = self._status
        active = self._power_types[PowerType.ACTIVE]
        reactive = self._power_types[PowerType.REACTIVE]
        serving = TelemetryServing(
            handler,
            encode_telemetry,
            lambda t: pb2.ReceiveElectricalComponentTelemetryStreamResponse(telemetry=t),
            _SIM_METRIC_NAMES,
        )

        async def list_electrical_components(request: Any) -> Any:
            ids, categories = (
                request.electrical_component_ids,
                request.electrical_component_categories,
            )
            messages = [encode_component(cid, c) for cid, c in handler.components()]
            return pb2.ListElectricalComponentsResponse(
                electrical_components=[
                    m for m in messages if wanted(m.id, ids) and wanted(m.category, categories)
                ]
            )

        async def list_electrical_component_connections(request: Any) -> Any:
            edges = handler.connections()
            sources = request.source_electrical_component_ids
            destinations = request.destination_electrical_component_ids
            return pb2.ListElectricalComponentConnectionsResponse(
                electrical_component_connections=[
                    components_pb2.ElectricalComponentConnection(
                        source_electrical_component_id=s,
                        destination_electrical_component_id=d,
                    )
                    for s, d in edges
                    if wanted(s, sources) and wanted(d, destinations)
                ]
            )

        async def receive_electrical_component_telemetry_stream(
            request: Any,
        ) -> AsyncIterator[Any]:
            metrics = list(request.filter.metrics) if request.HasField("filter") else None
            async for message in serving.replies(request.electrical_component_id, metrics):
                yield message

        async def set_electrical_component_power(request: Any) -> AsyncIterator[Any]:
            if request.power_type not in (active, reactive):  # unspecified, or a newer type
                yield reply(status=status["REJECTED"])
                return
            lifetime = request.request_lifetime if request.HasField("request_lifetime") else None
            command = (
                handler.set_power if request.power_type == active else (handler.set_reactive_power)
            )
            outcome = await command(request.electrical_component_id, request.power, lifetime)
            if outcome.code is not None or outcome.valid_until is None:
                yield reply(status=status["REJECTED"])
                return
            until = _timestamp(outcome.valid_until)
            yield reply(status=status["ACCEPTED"], valid_until_time=until)
            final = outcome.final
            if final is FinalReply.END:
                return  # no final reply: the stream just ends
            if final is FinalReply.NONE:
                await asyncio.Event().wait()  # until the client cancels the call
            if outcome.ramp is not None:  # the inverter ramps; then its final reply
                final = await outcome.ramp()
            yield reply(
                status=status[final.value],  # SUCCESS, FAILED or OVERRIDDEN: the status names
                valid_until_time=until if final is FinalReply.SUCCESS else None,
            )

        return {
            "ListElectricalComponents": list_electrical_components,
            "ListElectricalComponentConnections": list_electrical_component_connections,
            "ReceiveElectricalComponentTelemetryStream": (
                receive_electrical_component_telemetry_stream
            ),
            "SetElectricalComponentPower": set_electrical_component_power,
            **self._serve_site(handler),
        }

    def _serve_site(self, handler: SimHandler) -> dict[str, Served]:
        """The microgrid, its sensors and added bounds, served from ``handler``."""
        pb2 = self.version.pb2

        async def get_microgrid(request: Any) -> Any:
            response = pb2.GetMicrogridResponse()
            fill_microgrid(response.microgrid, handler.microgrid())
            return response

        async def list_sensors(request: Any) -> Any:
            return pb2.ListSensorsResponse(
                sensors=[
                    sensors_pb2.Sensor(id=sensor)
                    for sensor in sensors_wanted(handler, request.sensor_ids)
                ]
            )

        async def receive_sensor_telemetry_stream(request: Any) -> AsyncIterator[Any]:
            metrics = list(request.filter.metrics) if request.HasField("filter") else None
            async for message in sensor_stream(handler, request.sensor_id, metrics):
                yield message

        async def augment_electrical_component_bounds(request: Any) -> Any:
            until = handler.add_bounds(
                request.electrical_component_id,
                bounds_metric(request.target_metric, _BOUNDS_METRICS, Metric),
                ranges_of(request.bounds),
                request.request_lifetime if request.HasField("request_lifetime") else None,
                request.bounds_token if request.HasField("bounds_token") else None,
            )
            return pb2.AugmentElectricalComponentBoundsResponse(valid_until_time=_timestamp(until))

        async def clear_electrical_component_bounds(request: Any) -> Any:
            handler.clear_bounds(
                request.electrical_component_id,
                bounds_metric(request.target_metric, _BOUNDS_METRICS, Metric),
                request.bounds_token,
            )
            return empty_pb2.Empty()

        return {
            "GetMicrogrid": get_microgrid,
            "ListSensors": list_sensors,
            "ReceiveSensorTelemetryStream": receive_sensor_telemetry_stream,
            "AugmentElectricalComponentBounds": augment_electrical_component_bounds,
            "ClearElectricalComponentBounds": clear_electrical_component_bounds,
            **{name: control(handler, action) for name, action in _CONTROLS.items()},
        }


V1ALPHA18: Adapter = AlphaAdapter(VERSIONS["v1alpha18"])
"""The v1alpha18 adapter: what current sites serve."""

V1ALPHA19: Adapter = AlphaAdapter(VERSIONS["v1alpha19"])
"""The v1alpha19 adapter."""
