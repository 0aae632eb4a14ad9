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

The simulator's side encodes a version-neutral reading into a version's message
(:func:`samples`): a battery streams SoC, capacity, DC power, voltage and current (``power /
voltage``) and its temperature; an inverter, a meter and a line stream the AC side of a
balanced three-phase connection, from a few quantities the reading carries: active and reactive
power in total and per phase (a third each; the three add up to the total exactly, see
:func:`thirds`), the apparent power ``hypot(P, Q)`` with its bounds where the reading has
them (an inverter with an apparent-power limit), the frequency, each phase's voltage to
neutral, each phase's current (its apparent power over its voltage, signed as its active power:
the passive sign convention), and an inverter's temperature. A stream's metric filter decides
what is built at all, and each reading is encoded once per filter (:class:`TelemetryServing`).

Decoding is on the hot path (thousands of components, several messages a second each): metric
numbers are plain ints resolved by name once at import, the ranges→bounds conversion and the
state codes are cached, and the loops touch each message field once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Callable, Container, Iterable, Mapping, Sequence
from typing import Any

import attrs
from google.protobuf import empty_pb2, message_factory

from distributord.api.adapter import (
    BatteryTelemetry,
    InverterTelemetry,
    MicrogridInfo,
    Note,
    Rpc,
    SimAbort,
    SimHandler,
    Snapshot,
    Telemetry,
)
from distributord.core.bounds import Range, apparent_limit, bounds_from_ranges
from distributord.core.model import (
    PLAUSIBLE_LIMIT,
    UNKNOWN_POWER_BOUNDS,
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
UNKNOWN_BOUNDS = UNKNOWN_POWER_BOUNDS
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
        ac_reactive: The number of the AC reactive power metric (its bounds: an inverter's
            reactive bounds).
        ac_apparent: The number of the AC apparent power metric (its bounds: an inverter's
            apparent-power limit).
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
    ac_reactive: int
    ac_apparent: int

    @property
    def metrics(self) -> dict[str, int]:
        """Metric name (as the encoders' specs say it) to the version's number."""
        return {
            "soc": self.soc,
            "capacity": self.capacity,
            "dc_power": self.dc_power,
            "ac_power": self.ac_power,
            "ac_reactive": self.ac_reactive,
            "ac_apparent": self.ac_apparent,
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
            else {
                dialect.ac_power: "power",
                dialect.ac_reactive: "reactive",
                dialect.ac_apparent: "apparent",
            }
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
            elif name != "capacity":  # an inverter's reactive or apparent power: their bounds
                bounds, found = bounds_of(tuple(map(_range, sample.bounds)))
                if found:
                    notes.update(found)
                if name == "reactive":
                    fields["reactive_bounds"] = (bounds, received_at)
                else:
                    fields["apparent_limit"] = (apparent_limit(bounds), received_at)
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
            field = fields.get("reactive_bounds")
            reactive = UNKNOWN_BOUNDS if field is None or now - field[1] > age else field[0]
            field = fields.get("apparent_limit")
            apparent = _NAN if field is None or now - field[1] > age else field[0]
            return InverterSnapshot(
                component_id=self.component_id,
                sampled_at=self._sampled_at,
                received_at=now,
                active_power_w=power,
                bounds=bounds,
                states=states,
                errors=errors,
                warnings=warnings,
                reactive_bounds=reactive,
                apparent_limit_va=apparent,
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


SIM_METRICS = (
    "BATTERY_SOC_PCT",
    "BATTERY_CAPACITY",
    "BATTERY_TEMPERATURE",
    "DC_POWER",
    "DC_VOLTAGE",
    "DC_CURRENT",
    "AC_APPARENT_POWER",
    "AC_ACTIVE_POWER",
    "AC_ACTIVE_POWER_PHASE_1",
    "AC_ACTIVE_POWER_PHASE_2",
    "AC_ACTIVE_POWER_PHASE_3",
    "AC_REACTIVE_POWER",
    "AC_REACTIVE_POWER_PHASE_1",
    "AC_REACTIVE_POWER_PHASE_2",
    "AC_REACTIVE_POWER_PHASE_3",
    "AC_FREQUENCY",
    "AC_VOLTAGE_PHASE_1_N",
    "AC_VOLTAGE_PHASE_2_N",
    "AC_VOLTAGE_PHASE_3_N",
    "AC_CURRENT_PHASE_1",
    "AC_CURRENT_PHASE_2",
    "AC_CURRENT_PHASE_3",
    "INVERTER_TEMPERATURE",
)
"""Every metric the simulator streams, by its v1 name without ``METRIC_`` (the neutral names;
v1alpha18/19 spell the power metrics ``AC_POWER_ACTIVE...``: see :func:`metric_numbers`)."""

PHASES = (1, 2, 3)

Sample = tuple[str, float | None, Sequence[Range] | None]
"""One sample to encode: the neutral metric name, the value (None: none), the ranges (None:
none)."""


def metric_numbers(
    enum: Any, prefix: str, rename: Callable[[str], str] = lambda name: name
) -> dict[str, int]:
    """Each of :data:`SIM_METRICS` to a version's metric number, by name.

    Args:
        enum: The version's generated ``Metric`` enum.
        prefix: Its names' prefix (``"METRIC_"``).
        rename: A neutral name as the version spells it (without the prefix).
    """
    return {name: int(enum.Value(prefix + rename(name))) for name in SIM_METRICS}


def thirds(total: float) -> tuple[float, float, float]:
    """A balanced three-phase total as its phases, which add up to it exactly.

    The third phase takes the rounding: ``(p1 + p2) + p3 == total`` for every finite total
    (``total - (p1 + p2)`` is exact, the two being within a factor of two of each other).
    """
    third = total / 3.0
    return third, third, total - (third + third)


def _current(power: float, reactive: float, voltage: float) -> float:
    """A phase's current, A: its apparent power over its voltage, signed as its active power.

    The passive sign convention: current into the component (consumption) is positive. With no
    reactive power it is exactly ``power / voltage``.
    """
    return math.copysign(math.hypot(power, reactive), power) / voltage


class _Every:
    """The filter of a stream without one: it holds every metric."""

    def __contains__(self, name: object) -> bool:
        return True

    def isdisjoint(self, names: Iterable[str]) -> bool:
        return not any(True for _ in names)


EVERY: Container[str] = _Every()
"""Every metric (a stream without a filter)."""

_AC_DETAILS = frozenset(name for name in SIM_METRICS if name.startswith(("AC_", "INVERTER_"))) - {
    "AC_ACTIVE_POWER"
}
"""The AC metrics beside the total active power: of them, a daemon's stream asks for the reactive
and the apparent power only (their bounds)."""


def samples(telemetry: Telemetry, wanted: frozenset[str] | None) -> list[Sample]:
    """The samples of a reading that a stream's filter lets through, in every version.

    Only what ``wanted`` (neutral names; None: every metric) names is built: a daemon's stream
    asks for a few metrics of the many a reading can become. A metric the reading has no value
    or ranges for is left out, as the API says of a metric a component does not support.
    """
    asked: Container[str] = EVERY if wanted is None else wanted
    out: list[Sample] = []
    add = out.append
    if isinstance(telemetry, BatteryTelemetry):
        if "BATTERY_SOC_PCT" in asked and (
            telemetry.soc_pct is not None or telemetry.soc_bounds is not None
        ):
            bounds = telemetry.soc_bounds
            add(("BATTERY_SOC_PCT", telemetry.soc_pct, None if bounds is None else (bounds,)))
        if "BATTERY_CAPACITY" in asked and telemetry.capacity_wh is not None:
            add(("BATTERY_CAPACITY", telemetry.capacity_wh, None))
        power = telemetry.power_w
        if "DC_POWER" in asked and (power is not None or telemetry.power_ranges):
            add(("DC_POWER", power, telemetry.power_ranges))
        voltage = telemetry.dc_voltage_v
        if voltage is not None:
            if "DC_VOLTAGE" in asked:
                add(("DC_VOLTAGE", voltage, None))
            if "DC_CURRENT" in asked and power is not None and voltage != 0.0:
                add(("DC_CURRENT", power / voltage, None))
        if telemetry.temperature_c is not None and "BATTERY_TEMPERATURE" in asked:
            add(("BATTERY_TEMPERATURE", telemetry.temperature_c, None))
        return out
    power = telemetry.active_power_w
    if "AC_ACTIVE_POWER" in asked and (power is not None or telemetry.power_ranges):
        add(("AC_ACTIVE_POWER", power, telemetry.power_ranges))
    if wanted is None or not wanted.isdisjoint(_AC_DETAILS):
        _ac_details(telemetry, asked, add)
    return out


def _ac_details(
    telemetry: InverterTelemetry, asked: Container[str], add: Callable[[Sample], None]
) -> None:
    """The AC samples beside the total active power (:func:`samples`)."""
    power = telemetry.active_power_w
    reactive = telemetry.reactive_power_var
    if (reactive is not None or telemetry.reactive_ranges) and "AC_REACTIVE_POWER" in asked:
        add(("AC_REACTIVE_POWER", reactive, telemetry.reactive_ranges))
    if telemetry.apparent_ranges is not None and "AC_APPARENT_POWER" in asked:
        apparent = None if power is None else math.hypot(power, reactive or 0.0)
        add(("AC_APPARENT_POWER", apparent, telemetry.apparent_ranges))
    if power is not None:
        for phase, value in zip(PHASES, thirds(power), strict=True):
            name = f"AC_ACTIVE_POWER_PHASE_{phase}"
            if name in asked:
                add((name, value, None))
    if reactive is not None:
        for phase, value in zip(PHASES, thirds(reactive), strict=True):
            name = f"AC_REACTIVE_POWER_PHASE_{phase}"
            if name in asked:
                add((name, value, None))
    if telemetry.frequency_hz is not None and "AC_FREQUENCY" in asked:
        add(("AC_FREQUENCY", telemetry.frequency_hz, None))
    voltage = telemetry.voltage_v
    if voltage is not None:
        for phase in PHASES:
            name = f"AC_VOLTAGE_PHASE_{phase}_N"
            if name in asked:
                add((name, voltage, None))
        if power is not None and voltage != 0.0:
            phase_reactive = thirds(0.0 if reactive is None else reactive)
            for phase, value, var in zip(PHASES, thirds(power), phase_reactive, strict=True):
                name = f"AC_CURRENT_PHASE_{phase}"
                if name in asked:
                    add((name, _current(value, var, voltage), None))
    if telemetry.temperature_c is not None and "INVERTER_TEMPERATURE" in asked:
        add(("INVERTER_TEMPERATURE", telemetry.temperature_c, None))


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


MAX_FILTERS_PER_COMPONENT = 8
"""Distinct metric filters whose last encoding :class:`TelemetryServing` keeps per component:
the daemon's streams share one, a few clients more; a client that makes up new filters
forever only costs encodings, not memory."""


class TelemetryServing:
    """Serves telemetry streams from a handler, for one version's servicer.

    Encodes each reading once per metric filter, and only the samples that filter lets
    through, even when several streams carry it: the handler hands the same
    :class:`~distributord.api.adapter.Telemetry` object to each of a component's streams, and
    streams with the same filter (a daemon's all have one) share the one encoded message.

    Args:
        handler: The simulator.
        encode: A reading as the version's inner message, with the samples of the neutral
            metrics given (None: every metric).
        wrap: The inner message as the version's stream response.
        names: The version's metric numbers to the neutral names (:data:`SIM_METRICS`); a
            number not in it names a metric the simulator does not have.
    """

    def __init__(
        self,
        handler: SimHandler,
        encode: Callable[[Telemetry, frozenset[str] | None], Any],
        wrap: Callable[[Any], Any],
        names: Mapping[int, str],
    ) -> None:
        self._handler = handler
        self._encode = encode
        self._wrap = wrap
        self._names = names
        self._last: dict[int, dict[frozenset[str] | None, tuple[Telemetry, Any]]] = {}

    def wanted(self, metrics: Iterable[int] | None) -> frozenset[str] | None:
        """A request's filter (None: none) as the neutral names it lets through."""
        if metrics is None:
            return None
        names = self._names
        return frozenset(names[m] for m in metrics if m in names)

    def message(self, reading: Telemetry, wanted: frozenset[str] | None) -> Any:
        """``reading`` encoded for the filter ``wanted`` (:meth:`wanted`), encoded once."""
        by_filter = self._last.get(reading.component_id)
        if by_filter is None:
            by_filter = self._last[reading.component_id] = {}
        last = by_filter.get(wanted)
        if last is not None and last[0] is reading:
            return last[1]
        message = self._encode(reading, wanted)
        if last is None and len(by_filter) >= MAX_FILTERS_PER_COMPONENT:
            by_filter.clear()
        by_filter[wanted] = (reading, message)
        return message

    async def replies(self, component_id: int, metrics: Sequence[int] | None) -> AsyncIterator[Any]:
        """A stream's responses; ``metrics`` is the request's filter (None: no filter).

        Raises:
            SimAbort: The filter names no metric (``INVALID_ARGUMENT``, as the proto says), or
                the handler ended the stream with a status.
        """
        if metrics is not None and not metrics:
            raise SimAbort("INVALID_ARGUMENT", "the metric filter names no metric")
        wanted = self.wanted(metrics)
        readings = self._handler.telemetry(component_id)
        try:
            async for reading in readings:
                yield self._wrap(self.message(reading, wanted))
        finally:
            aclose = getattr(readings, "aclose", None)
            if aclose is not None:
                await aclose()


# --- the site, sensors and added bounds (the simulator's side) ----------------------------------


def enum_value(message: Any, field: str, name: str) -> int:
    """The number of the enum value ``name`` of a message's enum ``field`` (enums by name)."""
    number: int = message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_name[name].number
    return number


def fill_microgrid(message: Any, info: MicrogridInfo) -> Any:
    """Fill a generated ``Microgrid`` (the same fields in every version) from ``info``.

    The delivery area is left out when ``info`` has none (an island, as the proto says).
    """
    message.id = info.id
    message.enterprise_id = info.enterprise_id
    message.name = info.name
    message.location.latitude = info.latitude
    message.location.longitude = info.longitude
    message.location.country_code = info.country_code
    if info.delivery_area_code:
        area = message.delivery_area
        area.code = info.delivery_area_code
        area.code_type = enum_value(
            area, "code_type", "ENERGY_MARKET_CODE_TYPE_" + info.delivery_area_code_type.upper()
        )
    message.status = enum_value(message, "status", "MICROGRID_STATUS_" + info.status.upper())
    whole, nanos = split_seconds(info.created_at)
    message.create_timestamp.seconds = whole
    message.create_timestamp.nanos = nanos
    return message


def bounds_metric(number: int, ours: Mapping[int, str], enum: Any) -> str:
    """A bounds request's metric: our name (``"ac_power"``), else the version's own name.

    Args:
        number: The request's ``target_metric``.
        ours: The version's numbers of the metrics we name (``{26: "ac_power", ...}``).
        enum: The version's generated ``Metric`` enum, to name any other metric.
    """
    name = ours.get(number)
    if name is not None:
        return name
    for known, value in enum.items():
        if value == number:
            return str(known)
    return f"metric {number}"


def ranges_of(bounds: Iterable[Any]) -> list[Range]:
    """A request's ``Bounds`` as ranges (``None`` for an absent end)."""
    return [_range(b) for b in bounds]


def control(handler: SimHandler, action: str) -> Callable[[Any], Any]:
    """A served method that switches the component its request names; it answers ``Empty``.

    ``action`` is ``"start"``, ``"standby"``, ``"stop"`` or ``"ack"``. Every version's request
    names the component in its one field (``electrical_component_id`` or ``component_id``).
    """

    async def switch(request: Any) -> Any:
        [field] = request.DESCRIPTOR.fields
        handler.control(getattr(request, field.name), action)
        return empty_pb2.Empty()

    return switch


def sensors_wanted(handler: SimHandler, ids: Iterable[int]) -> list[int]:
    """The simulator's sensors a ``ListSensors`` request's id filter lets through."""
    return [sensor for sensor in handler.sensors() if wanted(sensor, ids)]


async def sensor_stream(
    handler: SimHandler, sensor_id: int, metrics: Sequence[int] | None
) -> AsyncIterator[Any]:
    """A sensor's telemetry stream, as the simulator serves it: it has no sensors to stream.

    Raises:
        SimAbort: ``INVALID_ARGUMENT`` when the filter names no metric (as the proto says);
            ``NOT_FOUND`` for an id that is not a sensor; ``UNIMPLEMENTED`` for one that is
            (sensor telemetry is not simulated).
    """
    if metrics is not None and not metrics:
        raise SimAbort("INVALID_ARGUMENT", "the metric filter names no metric")
    if sensor_id not in handler.sensors():
        raise SimAbort("NOT_FOUND", f"no sensor {sensor_id}: the simulated microgrid has none")
    raise SimAbort("UNIMPLEMENTED", "sensor telemetry is not simulated")
    yield  # an async generator, as a served stream is
