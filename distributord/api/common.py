"""What the version adapters share: the telemetry rules, written once.

Theory of operation
-------------------
The versions' telemetry messages have the same shape under different names: a message with a
component id, metric samples (a time, a metric number, a simple or aggregated value, allowed
ranges) and state snapshots (a time, state codes, errors, warnings). The rules for judging one
are the same for every version, so they are written once, here: :class:`TelemetryDecoder`
reads a message through a :class:`Dialect`, a handful of accessors and metric numbers that a
version module fills in. This module imports no generated code: it only reads attributes of the
messages it is handed (and protobuf's ``message_factory``, to find a method's message classes).

The versions also share how a service is called and served, and none of it needs grpc:
:class:`Stub` makes the daemon's calls on the channel the shell hands in (the generated
``*_pb2_grpc`` modules would import grpc), and :class:`TelemetryServing` is the simulator's
side of a telemetry stream. The grpc glue of the simulator's servicers is
``distributord.sim.servicer``'s.

The rules (``spec/microgrid-api.md``, "Telemetry"):

* **Another component's message** is ignored, counted in ``ignored``, noted
  (:attr:`Note.FOREIGN_ID`) and changes nothing.
* **A timestamp** outside what protobuf's ``Timestamp`` allows (years 1 to 9999, nanos in
  ``[0, 1e9)``) is ignored (:attr:`Note.BAD_TIMESTAMP`); its sample's value is still used.
* **A value** is ``simple_metric.value`` or ``aggregated_metric.avg_value``; one that is
  ``nan``, infinite or beyond :data:`~distributord.core.model.PLAUSIBLE_LIMIT` is unknown
  (:attr:`Note.BAD_VALUE`). A range with such an end makes the power bounds unknown
  (:attr:`Note.BAD_VALUE`), as does an inverted range (:attr:`Note.INVERTED_BOUNDS`): a server
  that sends one is not to be trusted with the rest. Inverted SoC bounds are unknown
  (:attr:`Note.INVERTED_SOC_BOUNDS`). Nothing reaches :class:`~distributord.core.model.PowerBounds`
  or :class:`~distributord.core.model.BatterySnapshot` that their validators would refuse.
* **Unknown enum numbers** (from a newer server): a state reads as ``StateCode.UNKNOWN``, an
  error as ``"unknown_<n>"``, a metric is not one we read.
* **Duplicates**: of several samples of one metric in a message, the newest by sample time
  counts (ties: the last); likewise of several state snapshots.
* **A metric missing** from a message keeps its previous value while it is fresher than
  ``max_data_age_s`` (which the caller may change between messages), then reads as unknown.

Decoding is on the hot path (thousands of components, several messages a second each): metric
numbers are plain ints resolved by name once at import, the ranges→bounds conversion and the
state codes are cached, and the loops touch each message field once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import attrs
from google.protobuf import message_factory

from distributord.api.adapter import (
    BatteryTelemetry,
    Note,
    Rpc,
    SimAbort,
    SimHandler,
    Snapshot,
    Telemetry,
)
from distributord.core.bounds import Range, bounds_from_ranges
from distributord.core.model import (
    PLAUSIBLE_LIMIT,
    BatterySnapshot,
    InverterSnapshot,
    PowerBounds,
    StateCode,
)
from distributord.core.topology import Category, InverterType

MIN_TIMESTAMP_S = -62_135_596_800
"""0001-01-01T00:00:00Z: the earliest ``google.protobuf.Timestamp`` (its documented range)."""

MAX_TIMESTAMP_S = 253_402_300_799
"""9999-12-31T23:59:59Z: the latest ``google.protobuf.Timestamp``."""

States = tuple[frozenset[StateCode], frozenset[str], frozenset[str]]
"""Decoded state codes, error names and warning names of one state snapshot."""

NO_STATES: States = (frozenset(), frozenset(), frozenset())
UNKNOWN_BOUNDS = PowerBounds.unknown()
_NAN = math.nan
_NEG_INF = -math.inf


# --- enums by name ------------------------------------------------------------------------------


CATEGORY_ALIASES = {"GRID_CONNECTION_POINT": Category.GRID}
"""Version category names (prefix dropped) that mean one of ours under another name."""

INVERTER_TYPES = {
    "BATTERY": InverterType.BATTERY,
    "HYBRID": InverterType.HYBRID,
    "PV": InverterType.PV,
    "SOLAR": InverterType.PV,  # v1's name
}
"""Version inverter type names (prefix dropped) to ours; any other is unspecified."""


def category_from_name(name: str) -> Category:
    """Our category for a version's category name with its prefix dropped (``"RELAY"``)."""
    alias = CATEGORY_ALIASES.get(name)
    if alias is not None:
        return alias
    member = Category.__members__.get(name)
    return Category.OTHER if member is None else member


def state_from_name(name: str) -> StateCode:
    """Our state code for a version's state name with its prefix dropped."""
    member = StateCode.__members__.get(name)
    return StateCode.UNKNOWN if member is None else member


def enum_names(enum: Any, prefix: str) -> Callable[[int], str | None]:
    """A lookup from a generated enum's numbers to its names without ``prefix`` (None if unknown).

    Built once per enum: the generated ``Name()`` raises for unknown numbers, and a dict is
    faster than a ``try`` on the hot path.
    """
    table = {number: name.removeprefix(prefix) for name, number in enum.items()}
    return table.get


def state_decoder(
    state_name: Callable[[int], str | None], error_name: Callable[[int], str | None]
) -> Callable[[tuple[int, ...], tuple[int, ...], tuple[int, ...]], States]:
    """A cached decoder of a state snapshot's state, error and warning numbers (one version)."""

    def error(code: int) -> str:
        name = error_name(code)
        return f"unknown_{code}" if name is None else name.lower()

    def state(code: int) -> StateCode:
        name = state_name(code)
        return StateCode.UNKNOWN if name is None else state_from_name(name)

    @functools.lru_cache(maxsize=4096)
    def decode(
        states: tuple[int, ...], errors: tuple[int, ...], warnings: tuple[int, ...]
    ) -> States:
        # Cached: a component's codes rarely change.
        return (
            frozenset(map(state, states)),
            frozenset(map(error, errors)),
            frozenset(map(error, warnings)),
        )

    return decode


# --- values, times, ranges ----------------------------------------------------------------------


def seconds(timestamp: Any) -> float | None:
    """A ``Timestamp`` as Unix seconds; None when outside what a ``Timestamp`` may hold."""
    whole = timestamp.seconds
    nanos = timestamp.nanos
    if MIN_TIMESTAMP_S <= whole <= MAX_TIMESTAMP_S and 0 <= nanos <= 999_999_999:
        value: float = whole + nanos / 1e9
        return value
    return None


def split_seconds(value: float) -> tuple[int, int]:
    """Unix seconds as a ``Timestamp``'s ``(seconds, nanos)``.

    Split first: nanoseconds since 1970 exceed a double's exact range (2^53 ns is 104 days).
    """
    whole = math.floor(value)
    nanos = round((value - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    return whole, nanos


def plausible(value: float) -> bool:
    """Whether a telemetry value is a finite number the core believes (False for nan)."""
    return -PLAUSIBLE_LIMIT <= value <= PLAUSIBLE_LIMIT


@functools.lru_cache(maxsize=4096)
def bounds_of(ranges: tuple[Range, ...]) -> tuple[PowerBounds, frozenset[Note]]:
    """The power bounds of a metric's ranges, and what to note; cached (they rarely change).

    A range with an end that is not plausible, or an inverted range, makes the bounds unknown.
    """
    for lower, upper in ranges:
        if (lower is not None and not plausible(lower)) or (
            upper is not None and not plausible(upper)
        ):
            return UNKNOWN_BOUNDS, frozenset({Note.BAD_VALUE})
        if lower is not None and upper is not None and lower > upper:
            return UNKNOWN_BOUNDS, frozenset({Note.INVERTED_BOUNDS})
    conversion = bounds_from_ranges(ranges)
    return conversion.bounds, frozenset({Note.LOSSY_BOUNDS}) if conversion.lossy else frozenset()


def _range(bounds: Any) -> Range:
    return (
        bounds.lower if bounds.HasField("lower") else None,
        bounds.upper if bounds.HasField("upper") else None,
    )


# --- the decoder --------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Dialect:
    """How one version spells its telemetry message (see the module docstring).

    Attributes:
        component_id: The message's component id.
        metric_samples: The message's samples.
        sample_time: The name of a sample's timestamp field.
        state_snapshots: The message's state snapshots.
        state_time: The name of a state snapshot's timestamp field.
        states: A state snapshot's decoded codes (cached by the version).
        soc: The number of the SoC metric.
        capacity: The number of the capacity metric.
        dc_power: The number of the DC power metric (a battery's power).
        ac_power: The number of the AC active power metric (an inverter's power).
    """

    component_id: Callable[[Any], int]
    metric_samples: Callable[[Any], Sequence[Any]]
    sample_time: str
    state_snapshots: Callable[[Any], Sequence[Any]]
    state_time: str
    states: Callable[[Any], States]
    soc: int
    capacity: int
    dc_power: int
    ac_power: int

    @property
    def metrics(self) -> dict[str, int]:
        """Metric name (as the encoders' specs say it) to the version's number."""
        return {
            "soc": self.soc,
            "capacity": self.capacity,
            "dc_power": self.dc_power,
            "ac_power": self.ac_power,
        }


class TelemetryDecoder:
    """Decodes one component's stream into snapshots, field by field (any version).

    Implements :class:`~distributord.api.adapter.Decoder`; the rules are in the module
    docstring.

    Args:
        dialect: The version's spelling.
        component_id: The stream's component.
        battery: Whether it is a battery (else an inverter).
        max_data_age_s: How long a field keeps its value when later messages omit it.
    """

    __slots__ = (
        "_converted",
        "_fields",
        "_id_of",
        "_raw_bounds",
        "_sample_time",
        "_sampled_at",
        "_samples_of",
        "_snapshots_of",
        "_state_time",
        "_states_of",
        "_wanted",
        "battery",
        "component_id",
        "ignored",
        "max_data_age_s",
        "notes",
    )

    def __init__(
        self, dialect: Dialect, component_id: int, *, battery: bool, max_data_age_s: float
    ) -> None:
        self.component_id = component_id
        self.battery = battery
        self.max_data_age_s = max_data_age_s
        self.notes: set[Note] = set()
        self.ignored = 0
        # The dialect's accessors, copied: an instance slot is the cheapest lookup.
        self._id_of = dialect.component_id
        self._samples_of = dialect.metric_samples
        self._sample_time = dialect.sample_time
        self._snapshots_of = dialect.state_snapshots
        self._state_time = dialect.state_time
        self._states_of = dialect.states
        self._wanted: dict[int, str] = (
            {dialect.soc: "soc", dialect.capacity: "capacity", dialect.dc_power: "power"}
            if battery
            else {dialect.ac_power: "power"}
        )
        # Field name to (value, when it was received).
        self._fields: dict[str, tuple[Any, float]] = {}
        self._sampled_at = _NAN
        # The power sample's last ranges (a copy) and what they became.
        self._raw_bounds: Any = ()
        self._converted: tuple[PowerBounds, frozenset[Note]] = (UNKNOWN_BOUNDS, frozenset())

    def decode(self, data: Any, *, received_at: float) -> Snapshot | None:
        """The snapshot after ``data`` arrived at ``received_at``; None if it was ignored.

        Never raises, whatever the message holds.
        """
        if self._id_of(data) != self.component_id:
            self.ignored += 1
            self.notes = {Note.FOREIGN_ID}
            return None
        notes: set[Note] = set()
        newest = _NEG_INF
        wanted = self._wanted
        fields = self._fields
        time_field = self._sample_time
        # The time of the sample each field was taken from in this message: of duplicates, the
        # newest counts (ties: the last). A sample without a usable time is older than any.
        taken_at: dict[str, float] = {}
        # Inlined (timestamps, values, SoC bounds): this loop is the daemon's hottest code.
        for sample in self._samples_of(data):
            at = _NEG_INF
            timestamp = getattr(sample, time_field)
            whole = timestamp.seconds
            nanos = timestamp.nanos
            # An absent time reads as 0, 0: only then is presence asked (the rarer call).
            if (whole or nanos) or sample.HasField(time_field):
                if MIN_TIMESTAMP_S <= whole <= MAX_TIMESTAMP_S and 0 <= nanos <= 999_999_999:
                    at = whole + nanos / 1e9
                    if at > newest:
                        newest = at
                else:
                    notes.add(Note.BAD_TIMESTAMP)
            name = wanted.get(sample.metric)
            if name is None or at < taken_at.get(name, _NEG_INF):
                continue
            taken_at[name] = at
            variant = sample.value
            kind = variant.WhichOneof("metric_value_variant")
            if kind == "simple_metric":
                value = variant.simple_metric.value
            elif kind == "aggregated_metric":
                value = variant.aggregated_metric.avg_value
            else:
                value = _NAN
            if kind is not None and not -PLAUSIBLE_LIMIT <= value <= PLAUSIBLE_LIMIT:
                notes.add(Note.BAD_VALUE)
                value = _NAN
            fields[name] = (value, received_at)
            if name == "power":
                raw = sample.bounds
                if raw == self._raw_bounds:  # as last time: the common case, and 1 µs cheaper
                    bounds, found = self._converted
                else:
                    bounds, found = self._converted = bounds_of(tuple(map(_range, raw)))
                    # A copy: the caller may reuse and change its message.
                    self._raw_bounds = type(sample)(bounds=raw).bounds
                if found:
                    notes.update(found)
                fields["bounds"] = (bounds, received_at)
            elif name == "soc":
                low = high = _NAN
                if sample.bounds:
                    first = sample.bounds[0]
                    if first.HasField("lower"):
                        low = first.lower
                        if not -PLAUSIBLE_LIMIT <= low <= PLAUSIBLE_LIMIT:
                            notes.add(Note.BAD_VALUE)
                            low = _NAN
                    if first.HasField("upper"):
                        high = first.upper
                        if not -PLAUSIBLE_LIMIT <= high <= PLAUSIBLE_LIMIT:
                            notes.add(Note.BAD_VALUE)
                            high = _NAN
                    if low > high:
                        notes.add(Note.INVERTED_SOC_BOUNDS)
                        low = high = _NAN
                fields["soc_bounds"] = ((low, high), received_at)
        snapshots = self._snapshots_of(data)
        if snapshots:
            state_field = self._state_time
            best = snapshots[-1]
            best_at = _NEG_INF
            for snapshot in snapshots:
                at = _NEG_INF
                if snapshot.HasField(state_field):  # one snapshot a message: no need to inline
                    valid = seconds(getattr(snapshot, state_field))
                    if valid is None:
                        notes.add(Note.BAD_TIMESTAMP)
                    else:
                        at = valid
                        newest = max(newest, at)
                if at >= best_at:
                    best, best_at = snapshot, at
            fields["states"] = (self._states_of(best), received_at)
        if newest > _NEG_INF:
            self._sampled_at = newest
        self.notes = notes
        return self._snapshot(received_at)

    def _snapshot(self, now: float) -> Snapshot:
        # A field counts while ``now - received <= max_data_age_s``; written out per field
        # rather than in a helper: a call per field was a fifth of this method's time.
        fields = self._fields
        age = self.max_data_age_s
        field = fields.get("states")
        states, errors, warnings = NO_STATES if field is None or now - field[1] > age else field[0]
        field = fields.get("power")
        power = _NAN if field is None or now - field[1] > age else field[0]
        field = fields.get("bounds")
        bounds = UNKNOWN_BOUNDS if field is None or now - field[1] > age else field[0]
        if not self.battery:
            return InverterSnapshot(
                component_id=self.component_id,
                sampled_at=self._sampled_at,
                received_at=now,
                active_power_w=power,
                bounds=bounds,
                states=states,
                errors=errors,
                warnings=warnings,
            )
        field = fields.get("soc_bounds")
        soc_lower, soc_upper = (_NAN, _NAN) if field is None or now - field[1] > age else field[0]
        field = fields.get("soc")
        soc = _NAN if field is None or now - field[1] > age else field[0]
        field = fields.get("capacity")
        capacity = _NAN if field is None or now - field[1] > age else field[0]
        return BatterySnapshot(
            component_id=self.component_id,
            sampled_at=self._sampled_at,
            received_at=now,
            soc_pct=soc,
            soc_lower_pct=soc_lower,
            soc_upper_pct=soc_upper,
            capacity_wh=capacity,
            power_w=power,
            bounds=bounds,
            states=states,
            errors=errors,
            warnings=warnings,
        )


# --- encoding (the simulator's side) ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SampleSpec:
    """One metric sample to encode, version-neutral.

    Attributes:
        metric: Which of our metrics: ``"soc"``, ``"capacity"``, ``"dc_power"``, ``"ac_power"``.
        value: The value, or None to leave it out.
        ranges: The allowed ranges, or None for none.
    """

    metric: str
    value: float | None
    ranges: Sequence[Range] | None


def sample_specs(telemetry: Telemetry) -> list[SampleSpec]:
    """The samples a reading becomes, in every version (a metric with nothing is left out)."""
    if isinstance(telemetry, BatteryTelemetry):
        specs = []
        if telemetry.soc_pct is not None or telemetry.soc_bounds is not None:
            specs.append(
                SampleSpec(
                    metric="soc",
                    value=telemetry.soc_pct,
                    ranges=None if telemetry.soc_bounds is None else [telemetry.soc_bounds],
                )
            )
        if telemetry.capacity_wh is not None:
            specs.append(SampleSpec(metric="capacity", value=telemetry.capacity_wh, ranges=None))
        if telemetry.power_w is not None or telemetry.power_ranges:
            specs.append(
                SampleSpec(
                    metric="dc_power", value=telemetry.power_w, ranges=telemetry.power_ranges
                )
            )
        return specs
    if telemetry.active_power_w is not None or telemetry.power_ranges:
        return [
            SampleSpec(
                metric="ac_power", value=telemetry.active_power_w, ranges=telemetry.power_ranges
            )
        ]
    return []


def fill_sample(sample: Any, value: float | None, ranges: Iterable[Range] | None) -> Any:
    """Set a generated ``MetricSample``'s value and bounds (the same fields in every version)."""
    if value is not None:
        sample.value.simple_metric.value = value
    for lower, upper in ranges or ():
        bounds = sample.bounds.add()
        if lower is not None:
            bounds.lower = lower
        if upper is not None:
            bounds.upper = upper
    return sample


def category_name(
    category: Category, names: Iterable[str], substitutes: dict[Category, str]
) -> str:
    """A version's category name (prefix dropped) for ours: its substitute, else by name.

    Args:
        category: Ours.
        names: The version's names, prefix dropped.
        substitutes: What to send for a category the version names differently or not at all.

    Returns:
        The name to send; ``"UNSPECIFIED"`` for :attr:`Category.OTHER` and any other we cannot
        name.
    """
    if category in substitutes:
        return substitutes[category]
    return category.name if category.name in names else "UNSPECIFIED"


def filtered(message: Any, metrics: frozenset[int]) -> Any:
    """A telemetry message with only the samples of ``metrics`` (a stream's metric filter).

    ``message`` is the version's inner message (``ComponentData``,
    ``ElectricalComponentTelemetry``); both hold ``metric_samples``. Unchanged if nothing goes.
    """
    samples = message.metric_samples
    if all(s.metric in metrics for s in samples):
        return message
    copy = type(message)()
    copy.CopyFrom(message)
    del copy.metric_samples[:]
    copy.metric_samples.extend(s for s in samples if s.metric in metrics)
    return copy


# --- the daemon's side of a streaming call -----------------------------------------------------


async def end_call(call: Any, responses: Any) -> None:
    """End a streaming call the daemon stops reading: cancel it at the RPC, close its iterator.

    A call still running is cancelled, so that the server sees it cancelled, not merely
    abandoned; one the server has ended is left as it ended. Closing the iterator (grpc.aio's is
    an async generator) finalizes it now rather than at garbage collection. Fakes without
    ``done``, ``cancel`` or ``aclose`` are fine (no ``done``: treated as running).
    """
    done = getattr(call, "done", None)
    cancel = getattr(call, "cancel", None)
    if cancel is not None and not (done is not None and done()):
        cancel()
    aclose = getattr(responses, "aclose", None)
    if aclose is not None:
        await aclose()


async def unwrapped(call: Any, field: str) -> AsyncIterator[Any]:
    """Each response's ``field`` of a server stream; closing the iterator ends the call."""
    responses = aiter(call)
    try:
        async for response in responses:
            yield getattr(response, field)
    finally:
        await end_call(call, responses)


def time_of(message: Any, field: str) -> float:
    """A message's timestamp ``field`` as Unix seconds; nan when absent or not a valid time."""
    if not message.HasField(field):
        return math.nan
    value = seconds(getattr(message, field))
    return math.nan if value is None else value


def wanted(value: int, among: Iterable[int]) -> bool:
    """A request filter's test: an empty filter lets everything through."""
    chosen = frozenset(among)
    return not chosen or value in chosen


# --- the service's methods: the stub's and the servicer's ---------------------------------------


def rpcs(service: Any) -> tuple[Rpc, ...]:
    """Every method of a protobuf ``ServiceDescriptor``, in the order the proto declares them."""
    methods = []
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        sends = "stream" if method.client_streaming else "unary"
        answers = "stream" if method.server_streaming else "unary"
        methods.append(
            Rpc(
                name=method.name,
                path=f"/{service.full_name}/{method.name}",
                request=request,
                response=response,
                kind=f"{sends}_{answers}",
            )
        )
    return tuple(methods)


class Stub:
    """A client stub of a service on a grpc channel: one callable per method, by its name.

    What a generated ``*_pb2_grpc`` module's stub does, built from :func:`rpcs` instead: the
    channel brings grpc, so the adapters need not import it (a generated ``*_pb2_grpc`` module
    imports grpc). Works on a grpc.aio channel and on a blocking one alike.
    """

    def __init__(self, channel: Any, methods: Iterable[Rpc]) -> None:
        for rpc in methods:
            open_call = getattr(channel, rpc.kind)  # channel.unary_unary, ...
            setattr(
                self,
                rpc.name,
                open_call(
                    rpc.path,
                    request_serializer=rpc.request.SerializeToString,
                    response_deserializer=rpc.response.FromString,
                    _registered_method=True,  # as the generated stubs ask (grpc's fast path)
                ),
            )


# --- the simulator's side of a service ----------------------------------------------------------


class TelemetryServing:
    """Serves telemetry streams from a handler, for one version's servicer.

    Encodes each reading once even when several streams carry it (the handler may hand the
    same :class:`~distributord.api.adapter.Telemetry` object to each of a component's streams).

    Args:
        handler: The simulator.
        encode: A reading as the version's inner message.
        wrap: The inner message as the version's stream response.
    """

    def __init__(
        self,
        handler: SimHandler,
        encode: Callable[[Telemetry], Any],
        wrap: Callable[[Any], Any],
    ) -> None:
        self._handler = handler
        self._encode = encode
        self._wrap = wrap
        self._last: dict[int, tuple[Telemetry, Any]] = {}

    def encoded(self, reading: Telemetry) -> Any:
        """``reading`` encoded, reusing the encoding of the same object."""
        last = self._last.get(reading.component_id)
        if last is not None and last[0] is reading:
            return last[1]
        message = self._encode(reading)
        self._last[reading.component_id] = (reading, message)
        return message

    async def replies(self, component_id: int, metrics: Sequence[int] | None) -> AsyncIterator[Any]:
        """A stream's responses; ``metrics`` is the request's filter (None: no filter).

        Raises:
            SimAbort: The filter names no metric (``INVALID_ARGUMENT``, as the proto says), or
                the handler ended the stream with a status.
        """
        if metrics is not None and not metrics:
            raise SimAbort("INVALID_ARGUMENT", "the metric filter names no metric")
        allowed = None if metrics is None else frozenset(metrics)
        readings = self._handler.telemetry(component_id)
        try:
            async for reading in readings:
                message = self.encoded(reading)
                if allowed is not None:
                    message = filtered(message, allowed)
                yield self._wrap(message)
        finally:
            aclose = getattr(readings, "aclose", None)
            if aclose is not None:
                await aclose()
