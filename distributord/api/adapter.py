"""What the rest of distributord needs from one version of the Microgrid API.

Theory of operation
-------------------
Each version has one adapter module (``api.v1``; ``api.v1alpha`` for v1alpha18 and v1alpha19,
which differ in a small table) that exports one object implementing :class:`Adapter`. The
adapter is the only code that touches that version's generated messages:

* **the daemon's side**: it makes the stub, asks for the component graph, opens a component's
  telemetry stream, decodes its messages into the core's snapshots (:class:`Decoder`), and
  sends a command of active or reactive power (:class:`PowerType`: one code path, the
  version's request for that type), turning the version's outcome into a valid-until time or a
  :class:`~distributord.core.errors.CommandError`. Where the version answers a command with a
  stream of replies (v1alpha18/19), the command succeeds on ``ACCEPTED`` and the rest of the
  stream (:data:`Rest`) is handed to the caller to read in the background (``follow``). The
  IO shell (``shell.link``) runs these coroutines on the bridge's asyncio loop; gRPC errors
  (``grpc.aio.AioRpcError``) pass through unchanged, and the link maps their status codes
  with :func:`command_error`.
* **the simulator's side**: :meth:`Adapter.serve` gives the methods of the version's
  ``Microgrid`` service, served from a version-neutral :class:`SimHandler` (the simulator
  implements that once, for all versions), as plain async functions of the request message.
  The adapter translates requests (filters included) and encodes :class:`BatteryTelemetry` /
  :class:`InverterTelemetry` and :class:`SetPowerOutcome` into the version's messages;
  ``distributord.sim.servicer`` puts the methods (:attr:`Adapter.rpcs`) on a gRPC server.

Enums are matched by name, never by number: the numbering differs between versions.
Adapters import protobuf and the generated message modules, never trio or grpc, lazily or not:
grpc comes with the channel the shell hands :meth:`Adapter.stub` and with the simulator's
server.
"""

from __future__ import annotations

import enum
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, Protocol

import attrs

from distributord.core.bounds import Range
from distributord.core.errors import (
    CommandError,
    CommandFailedError,
    CommandRejectedError,
    SimAbort,
)
from distributord.core.model import BatterySnapshot, InverterSnapshot, StateCode
from distributord.core.topology import Component, Components

Snapshot = BatterySnapshot | InverterSnapshot
"""What a decoder makes of a component's telemetry message."""

__all__ = ["SimAbort"]  # re-exported: the served methods raise it, the simulator catches it

REJECTING_CODES = frozenset({"OUT_OF_RANGE", "INVALID_ARGUMENT"})
"""gRPC status codes that mean "this setpoint is not acceptable", not "something broke"."""


def command_error(code: str, details: str = "") -> CommandError:
    """The domain error for a gRPC status code name (``"OUT_OF_RANGE"``, ...), any version."""
    if code in REJECTING_CODES:
        return CommandRejectedError(code, details)
    return CommandFailedError(code, details)


class PowerType(enum.StrEnum):
    """What a command sets: active power (W) or reactive power (var).

    Reactive power's sign is the API's (IEEE 1459-2010, ``tests/api/test_sign.py``): positive
    is inductive (the current lags the voltage), negative capacitive (it leads).
    """

    ACTIVE = "active"
    REACTIVE = "reactive"


class Note(enum.StrEnum):
    """Something in a message the caller should log (once per stream and kind)."""

    LOSSY_BOUNDS = "power ranges that cannot be represented were left out"
    INVERTED_SOC_BOUNDS = "SoC bounds are inverted; treated as unknown"
    INVERTED_BOUNDS = "power bounds are inverted or empty; treated as unknown"
    FOREIGN_ID = "a message carried another component's id; ignored"
    BAD_TIMESTAMP = "a timestamp outside what can be represented; ignored"
    BAD_VALUE = "a value that is not a finite plausible number; treated as unknown"


class Decoder(Protocol):
    """Decodes one component's telemetry stream, message by message, into snapshots."""

    max_data_age_s: float
    """How long a field keeps its value when later messages omit it (settable: a reload)."""

    notes: set[Note]
    """What the last :meth:`decode` found worth logging."""

    ignored: int
    """Messages ignored so far (another component's id, or nothing usable in them)."""

    def decode(self, data: Any, *, received_at: float) -> Snapshot | None:
        """The snapshot after ``data`` (one stream message) arrived at ``received_at``.

        ``received_at`` is monotonic seconds. None when the message is ignored (counted in
        :attr:`ignored`). Never raises, whatever the message holds.
        """
        ...


# --- what the simulator hands the adapters -----------------------------------------------------


@attrs.frozen(kw_only=True)
class BatteryTelemetry:
    """A battery's reading, version-neutral (``None`` leaves a value or bounds out).

    The DC current is not carried: the encoders derive it (``power_w / dc_voltage_v``) when
    a stream asks for it, so that a tick builds only what someone reads.
    """

    component_id: int
    sampled_at: float
    soc_pct: float | None
    soc_bounds: Range | None
    capacity_wh: float | None
    power_w: float | None
    power_ranges: Sequence[Range] | None
    states: Iterable[StateCode]
    errors: Iterable[str] = ()
    warnings: Iterable[str] = ()
    dc_voltage_v: float | None = None
    temperature_c: float | None = None


@attrs.frozen(kw_only=True)
class InverterTelemetry:
    """An inverter's (or a meter's, or a line's) reading, version-neutral: the AC side.

    A few physical quantities of a balanced three-phase connection; the per-phase samples
    (active and reactive power, current, phase-to-neutral voltage) are derived from them by
    the encoders, and only for a stream that asks for them (see ``api.common``).

    Attributes:
        active_power_w: AC active power, W (passive sign convention: + is consumption).
        power_ranges: Its allowed ranges, W.
        reactive_power_var: AC reactive power, var (+ inductive, - capacitive).
        reactive_ranges: Its allowed ranges, var.
        apparent_ranges: Its allowed apparent power, VA (an inverter with an apparent-power
            limit ``S``: ``[0, S]``); given, the apparent power ``hypot(P, Q)`` is streamed
            with them.
        frequency_hz: The AC frequency, Hz.
        voltage_v: Each phase's voltage to neutral, V.
        temperature_c: An inverter's temperature, °C (meters and lines have none).
    """

    component_id: int
    sampled_at: float
    active_power_w: float | None
    power_ranges: Sequence[Range] | None
    states: Iterable[StateCode]
    errors: Iterable[str] = ()
    warnings: Iterable[str] = ()
    reactive_power_var: float | None = None
    reactive_ranges: Sequence[Range] | None = None
    apparent_ranges: Sequence[Range] | None = None
    frequency_hz: float | None = None
    voltage_v: float | None = None
    temperature_c: float | None = None


Telemetry = BatteryTelemetry | InverterTelemetry


class FinalReply(enum.StrEnum):
    """How a v1alpha18/19 set-power reply stream ends after ``ACCEPTED`` (v1 has no stream)."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    OVERRIDDEN = "OVERRIDDEN"
    NONE = "NONE"  # no final reply: the stream stays open until the client cancels it
    END = "END"  # no final reply: the stream ends right after ACCEPTED


Rest = Callable[[], Coroutine[Any, Any, FinalReply]]
"""The rest of an accepted command's reply stream (v1alpha18/19), to read in the background.

Awaited, it reads until the final reply and returns it (``SUCCESS``, ``FAILED``,
``OVERRIDDEN``; ``END`` when the stream ends without one), and ends the call; cancelling it
cancels the call at the RPC. gRPC errors pass through."""

Follow = Callable[[Rest, Callable[[], None]], None]
"""Takes the :data:`Rest` of an accepted command's stream (:meth:`Adapter.set_power`), and a
function that cancels the call at once, for a :data:`Rest` that is never run (or is cancelled
before it starts)."""


@attrs.frozen(kw_only=True)
class SetPowerOutcome:
    """What the simulator decided about one command.

    Attributes:
        valid_until: Unix time the setpoint holds until, when accepted; None when refused.
        code: The gRPC status code name of a refusal (``"OUT_OF_RANGE"``, ...), else None.
            v1 aborts the call with it; v1alpha18/19 answer ``REJECTED`` and end the stream.
        details: The refusal's text.
        final: How an accepted command's reply stream ends (v1alpha18/19 only).
        ramp: When the inverter ramps (v1alpha18/19 only): awaited after ``ACCEPTED`` is sent,
            it returns the final reply to send then (``final``, or ``OVERRIDDEN`` when a newer
            command replaced this one meanwhile); None: ``final`` follows at once.
    """

    valid_until: float | None
    code: str | None = None
    details: str = ""
    final: FinalReply = FinalReply.SUCCESS
    ramp: Callable[[], Awaitable[FinalReply]] | None = None


@attrs.frozen(kw_only=True)
class MicrogridInfo:
    """The microgrid as a whole, version-neutral: what ``GetMicrogrid`` answers.

    Attributes:
        id: The microgrid's id.
        enterprise_id: Its enterprise account's id.
        name: Its name (``""``: none).
        latitude: Degrees north.
        longitude: Degrees east.
        country_code: ISO 3166-1 alpha-2.
        delivery_area_code: Its delivery area's code; ``""``: none (the field is left out).
        delivery_area_code_type: How that code is written, the API's
            ``ENERGY_MARKET_CODE_TYPE_*`` name without the prefix, any case (``"europe_eic"``).
        status: The API's ``MICROGRID_STATUS_*`` name without the prefix, any case
            (``"active"``).
        created_at: When it was created, Unix seconds.
    """

    id: int
    enterprise_id: int
    name: str
    latitude: float
    longitude: float
    country_code: str
    delivery_area_code: str
    delivery_area_code_type: str
    status: str
    created_at: float


BOUNDS_METRICS = frozenset({"ac_power", "dc_power"})
"""Our names of the metrics an adapter names when a client adds or clears bounds (the
version's name of any other metric is passed as it is)."""


class SimHandler(Protocol):
    """The simulator as every version's servicer sees it (it implements this once).

    Each method may raise :class:`SimAbort` to end the call with a gRPC status code.
    """

    def microgrid(self) -> MicrogridInfo:
        """The microgrid as a whole (``GetMicrogrid``, v1 ``GetMicrogridMetadata``)."""
        ...

    def sensors(self) -> Sequence[int]:
        """Every sensor's id."""
        ...

    def add_bounds(
        self,
        component_id: int,
        metric: str,
        ranges: Sequence[Range],
        lifetime_s: int | None,
        token: str | None,
    ) -> float:
        """Add inclusion bounds to a component's metric; until when (Unix time, s) they hold.

        Args:
            component_id: The component.
            metric: ``"ac_power"`` or ``"dc_power"`` (:data:`BOUNDS_METRICS`), else the
                version's name of the metric (``"METRIC_AC_FREQUENCY"``), for the refusal.
            ranges: The ranges (``None``: an open end).
            lifetime_s: How long they hold, s; ``None`` when the request left it out.
            token: The request's bounds token, if any.
        """
        ...

    def clear_bounds(self, component_id: int, metric: str, token: str) -> None:
        """Remove the bounds added under ``token`` (none such: nothing happens)."""
        ...

    def control(self, component_id: int, action: str) -> None:
        """Switch a component: ``"start"``, ``"standby"``, ``"stop"``, or ``"ack"`` its error."""
        ...

    def components(self) -> Sequence[tuple[int, Component]]:
        """Every component: id and what it is."""
        ...

    def connections(self) -> Sequence[tuple[int, int]]:
        """Every ``(source, destination)`` edge, directed away from the grid."""
        ...

    async def set_power(
        self, component_id: int, power_w: float, lifetime_s: int | None
    ) -> SetPowerOutcome:
        """Handle one command (may wait, hang until cancelled, or raise :class:`SimAbort`)."""
        ...

    async def set_reactive_power(
        self, component_id: int, power_var: float, lifetime_s: int | None
    ) -> SetPowerOutcome:
        """Handle one reactive-power command, var (may raise :class:`SimAbort`).

        Decided at once: the outcome's ``final`` is ``SUCCESS`` and it has no ramp.
        """
        ...

    def telemetry(self, component_id: int) -> AsyncIterator[Telemetry]:
        """A component's readings as they come, until the call ends (or :class:`SimAbort`)."""
        ...


Served = Callable[[Any], Any]
"""One method the simulator serves (:meth:`Adapter.serve`). It takes the request message; a unary
method's is a coroutine function that returns the response, a server-streaming method's an async
generator function of the responses. Raising :class:`SimAbort` ends the call with that status."""


@attrs.frozen(kw_only=True)
class Rpc:
    """One method of a version's gRPC service, as the service's descriptor says.

    Attributes:
        name: The method's name (``"ListComponents"``).
        path: The method's path on the wire (``"/frequenz.api.microgrid.v1.Microgrid/..."``).
        request: The request message class.
        response: The response message class.
        kind: How many messages go each way, as grpc names its factories: ``"unary_unary"``,
            ``"unary_stream"``, ``"stream_unary"`` or ``"stream_stream"``.
    """

    name: str
    path: str
    request: Any
    response: Any
    kind: str


# --- the adapter ------------------------------------------------------------------------------


class Adapter(Protocol):
    """One version of the Microgrid API (see the module docstring)."""

    name: str
    """The version, as the configuration and ``ping`` spell it: ``"v1alpha18"``."""

    service: str
    """The full gRPC service name, e.g. ``"frequenz.api.microgrid.v1alpha18.Microgrid"``."""

    rpcs: tuple[Rpc, ...]
    """Every method of the service, served or not (the stub has them all)."""

    # -- the daemon's side --------------------------------------------------------------------

    def stub(self, channel: Any) -> Any:
        """The version's ``Microgrid`` stub on a grpc channel (one callable per method)."""
        ...

    async def components(self, stub: Any) -> Components:
        """Every component (one call; gRPC errors pass through), ids listed twice remembered."""
        ...

    async def connections(self, stub: Any) -> list[tuple[int, int]]:
        """Every ``(source, destination)`` edge (one call; gRPC errors pass through)."""
        ...

    def telemetry(self, stub: Any, component_id: int) -> AsyncIterator[Any]:
        """A component's stream, message by message (what :meth:`Decoder.decode` takes)."""
        ...

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> Decoder:
        """A decoder for one component's stream."""
        ...

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
        """Command an inverter's ``power``: active (W) or reactive (var); until when it holds.

        ``power_type`` says which: v1alpha18/19 send ``SetElectricalComponentPower`` with
        ``POWER_TYPE_ACTIVE`` or ``POWER_TYPE_REACTIVE``, v1 ``SetComponentPowerActive`` or
        ``SetComponentPowerReactive``; the replies are judged alike. ``follow`` given, a
        version with a reply stream (v1alpha18/19) succeeds on ``ACCEPTED`` and hands
        ``follow`` the rest of the stream (:data:`Rest`) before it returns; without it, it
        waits for the final reply. v1 (one reply) ignores it.

        Returns:
            Until when (Unix time, s) the setpoint holds; nan if no reply says.

        Raises:
            CommandRejectedError: The version's refusal (v1alpha18/19: ``REJECTED``).
            CommandOverriddenError: v1alpha18/19's ``OVERRIDDEN`` while waiting for the final
                reply.
            CommandFailedError: The version's failure (v1alpha18/19: ``FAILED``, or the reply
                stream ended without a final reply, while waiting for it).
        """
        ...

    # -- the simulator's side -----------------------------------------------------------------

    def serve(self, handler: SimHandler) -> Mapping[str, Served]:
        """The methods of the service that the simulator serves from ``handler``, by name.

        Each is a :data:`Served`; a method of :attr:`rpcs` left out answers ``UNIMPLEMENTED``.
        """
        ...
