"""The values that cross distributord's boundaries.

Theory of operation
-------------------
Everything here is a frozen, keyword-only attrs class: telemetry snapshots, power bounds, a
client's request and the closed union of results. Nothing here reads a clock or does IO.

* **Unknown is NaN.** Telemetry that did not arrive, or arrived without a value, is ``nan``,
  never ``None`` and never a guess; the distribution algorithm and the status tracker decide what
  an unknown value means. Validators therefore only reject values that no telemetry could mean
  (inverted SoC bounds, misordered power bounds, negative ids); they pass ``nan`` through.
* **One rule for a battery's values.** :func:`bad_battery_values` judges SoC, SoC bounds and
  capacity for every user, and says what is wrong with each (not finite, implausible, a
  negative capacity). The users differ only in which faults disqualify: the distribution
  excludes a pair for any of them, while the status tracker (its ``nan_*`` reasons) and the
  fleet's cache of last valid snapshots only ask for finite values.
* **Sign convention.** Watts, passive sign convention: positive charges the battery, negative
  discharges it.
* **Requests are validated where they enter.** A :class:`Request` cannot hold a non-finite
  power, an empty or oversized battery set, or a timeout outside ``(0, 60]`` s; the error names
  the field. Code behind this boundary does not re-check.
* **Results are values.** ``Success | PartialFailure | OutOfBounds | Error | Ignored`` is a
  closed union, handled with ``match`` and ``assert_never``; a failed request is a result, not
  an exception.
"""

from __future__ import annotations

import enum
import itertools
import math
import sys
from collections.abc import Mapping
from typing import Any, TypeAlias

import attrs

from distributord.core.values import is_component_id, is_number

MAX_BATTERIES_PER_REQUEST = 1024
"""The protocol's cap on one request's battery set; keeps one request's work bounded."""

MAX_REQUEST_TIMEOUT_S = 60.0
"""The protocol's cap on a request's deadline: longer than any sane inverter round trip."""

PLAUSIBLE_LIMIT = 1e15
"""Largest magnitude of any telemetry value we believe (W, Wh or %). A petawatt is beyond any
site; the limit keeps every sum over a fleet finite, so no arithmetic can overflow."""


def is_finite_power(value: object) -> bool:
    """Whether ``value`` can be a request's power: a finite number (not a bool), W.

    An integer beyond a float's range (JSON allows ``1`` followed by 309 zeros) is not: it
    could not be commanded, and ``math.isfinite`` would raise on it.
    """
    if not is_number(value):
        return False
    if isinstance(value, int):
        return abs(value) <= sys.float_info.max
    return math.isfinite(value)


def is_request_timeout(value: object) -> bool:
    """Whether ``value`` can be a request's deadline: a number in (0, 60] s."""
    return is_number(value) and 0.0 < value <= MAX_REQUEST_TIMEOUT_S


class StateCode(enum.StrEnum):
    """A component's state code, as the Microgrid API v1 reports it (prefix dropped)."""

    UNSPECIFIED = "unspecified"
    UNKNOWN = "unknown"
    UNAVAILABLE = "unavailable"
    SWITCHING_OFF = "switching_off"
    OFF = "off"
    SWITCHING_ON = "switching_on"
    STANDBY = "standby"
    READY = "ready"
    CHARGING = "charging"
    DISCHARGING = "discharging"
    ERROR = "error"
    EV_CHARGING_CABLE_UNPLUGGED = "ev_charging_cable_unplugged"
    EV_CHARGING_CABLE_PLUGGED_AT_STATION = "ev_charging_cable_plugged_at_station"
    EV_CHARGING_CABLE_PLUGGED_AT_EV = "ev_charging_cable_plugged_at_ev"
    EV_CHARGING_CABLE_LOCKED_AT_STATION = "ev_charging_cable_locked_at_station"
    EV_CHARGING_CABLE_LOCKED_AT_EV = "ev_charging_cable_locked_at_ev"
    RELAY_OPEN = "relay_open"
    RELAY_CLOSED = "relay_closed"
    PRECHARGER_OPEN = "precharger_open"
    PRECHARGER_PRECHARGING = "precharger_precharging"
    PRECHARGER_CLOSED = "precharger_closed"


def _non_negative_id(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if type(value) is int and value >= 0:  # the usual case first: every snapshot is checked
        return
    if not is_component_id(value):
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


@attrs.frozen(kw_only=True)
class PowerBounds:
    """Allowed active power of one component or of a set, in W (or reactive power, in var).

    Allowed values are ``0``, ``[inclusion_lower, exclusion_lower]`` and
    ``[exclusion_upper, inclusion_upper]``. Finite values must be ordered
    ``inclusion_lower <= exclusion_lower <= 0 <= exclusion_upper <= inclusion_upper``;
    ``nan`` means unknown.
    """

    inclusion_lower: float
    exclusion_lower: float
    exclusion_upper: float
    inclusion_upper: float

    def __attrs_post_init__(self) -> None:
        chain = (
            ("inclusion_lower", self.inclusion_lower),
            ("exclusion_lower", self.exclusion_lower),
            ("zero", 0.0),
            ("exclusion_upper", self.exclusion_upper),
            ("inclusion_upper", self.inclusion_upper),
        )
        known = [(name, value) for name, value in chain if not math.isnan(value)]
        for (low_name, low), (high_name, high) in itertools.pairwise(known):
            if low > high:
                raise ValueError(
                    f"power bounds out of order: {low_name} ({low}) > {high_name} ({high}); "
                    "expected inclusion_lower <= exclusion_lower <= 0 <= exclusion_upper "
                    "<= inclusion_upper"
                )

    @classmethod
    def unknown(cls) -> PowerBounds:
        """Bounds that were not reported (all four ``nan``)."""
        nan = math.nan
        return cls(
            inclusion_lower=nan, exclusion_lower=nan, exclusion_upper=nan, inclusion_upper=nan
        )

    @classmethod
    def symmetric(cls, limit_w: float, minimum_w: float = 0.0) -> PowerBounds:
        """``[-limit, -minimum] ∪ {0} ∪ [minimum, limit]``."""
        return cls(
            inclusion_lower=-limit_w,
            exclusion_lower=-minimum_w,
            exclusion_upper=minimum_w,
            inclusion_upper=limit_w,
        )

    @property
    def is_known(self) -> bool:
        """Whether all four values are known (not ``nan``)."""
        # Written out, not a generator: asked of every sample.
        isnan = math.isnan
        return not (
            isnan(self.inclusion_lower)
            or isnan(self.exclusion_lower)
            or isnan(self.exclusion_upper)
            or isnan(self.inclusion_upper)
        )


UNKNOWN_POWER_BOUNDS = PowerBounds.unknown()
"""Bounds that were not reported, shared (they are frozen): a default that costs nothing."""


@attrs.frozen(kw_only=True)
class BatterySnapshot:
    """The latest telemetry of one battery.

    Attributes:
        component_id: The battery's component id.
        sampled_at: When the newest of its samples was taken, in seconds since the Unix epoch
            (UTC), as the microgrid reports it.
        received_at: When the link received it, on the daemon's monotonic clock (seconds).
        soc_pct: State of charge, %.
        soc_lower_pct: Lowest SoC the battery may be discharged to, %.
        soc_upper_pct: Highest SoC the battery may be charged to, %.
        capacity_wh: Usable capacity, Wh.
        power_w: Measured DC power, W.
        bounds: The battery's own power bounds.
        states: State codes.
        errors: Error codes (names); any error makes the battery unhealthy.
        warnings: Warning codes (names); they never change status.
    """

    component_id: int = attrs.field(validator=_non_negative_id)
    sampled_at: float
    received_at: float
    soc_pct: float
    soc_lower_pct: float
    soc_upper_pct: float
    capacity_wh: float
    power_w: float = math.nan
    bounds: PowerBounds
    states: frozenset[StateCode] = frozenset()
    errors: frozenset[str] = frozenset()
    warnings: frozenset[str] = frozenset()

    def __attrs_post_init__(self) -> None:
        if self.soc_lower_pct > self.soc_upper_pct:  # False when either is nan
            raise ValueError(
                f"battery {self.component_id}: soc_lower_pct ({self.soc_lower_pct}) > "
                f"soc_upper_pct ({self.soc_upper_pct})"
            )


class ValueFault(enum.Enum):
    """What is wrong with one of a battery's values (see :func:`bad_battery_values`)."""

    NOT_FINITE = "not_finite"
    """``nan`` (unknown) or infinite."""
    IMPLAUSIBLE = "implausible"
    """Finite, but larger in magnitude than :data:`PLAUSIBLE_LIMIT`."""
    NEGATIVE = "negative"
    """A negative capacity (finite and plausible otherwise)."""


@attrs.frozen(kw_only=True)
class BadValue:
    """One of a battery's values that cannot be used as it is.

    Attributes:
        field: The :class:`BatterySnapshot` field, e.g. ``"soc_pct"``.
        value: Its value.
        fault: What is wrong with it.
    """

    field: str
    value: float
    fault: ValueFault


def bad_battery_values(snapshot: BatterySnapshot) -> list[BadValue]:
    """The battery's SoC, SoC bounds and capacity that cannot be used, and why (empty if none).

    In field order (``soc_pct``, ``soc_lower_pct``, ``soc_upper_pct``, ``capacity_wh``), with
    one fault per value: not finite, else implausible, else (capacity only) negative. The
    first is the one to name when only one is reported.
    """
    bad: list[BadValue] = []
    for field, value in (
        ("soc_pct", snapshot.soc_pct),
        ("soc_lower_pct", snapshot.soc_lower_pct),
        ("soc_upper_pct", snapshot.soc_upper_pct),
        ("capacity_wh", snapshot.capacity_wh),
    ):
        if not math.isfinite(value):
            bad.append(BadValue(field=field, value=value, fault=ValueFault.NOT_FINITE))
        elif abs(value) > PLAUSIBLE_LIMIT:
            bad.append(BadValue(field=field, value=value, fault=ValueFault.IMPLAUSIBLE))
        elif field == "capacity_wh" and value < 0.0:
            bad.append(BadValue(field=field, value=value, fault=ValueFault.NEGATIVE))
    return bad


@attrs.frozen(kw_only=True)
class InverterSnapshot:
    """The latest telemetry of one inverter.

    Attributes:
        component_id: The inverter's component id.
        sampled_at: When the newest of its samples was taken, in seconds since the Unix epoch.
        received_at: When the link received it, on the daemon's monotonic clock (seconds).
        active_power_w: Measured AC active power, W.
        bounds: The inverter's active power bounds.
        states: State codes.
        errors: Error codes (names).
        warnings: Warning codes (names).
        reactive_bounds: The inverter's reactive power bounds, var (the same four numbers as
            :attr:`bounds`; sign as the Microgrid API defines it: + inductive, the current
            lagging the voltage; - capacitive). Unknown (``nan``) when not reported.
        apparent_limit_va: The most apparent power it carries, VA (``|P|² + |Q|² <= S²``),
            from its apparent-power bounds; ``nan`` when not reported, ``inf`` when they have
            no upper end.
    """

    component_id: int = attrs.field(validator=_non_negative_id)
    sampled_at: float
    received_at: float
    active_power_w: float = math.nan
    bounds: PowerBounds
    states: frozenset[StateCode] = frozenset()
    errors: frozenset[str] = frozenset()
    warnings: frozenset[str] = frozenset()
    reactive_bounds: PowerBounds = UNKNOWN_POWER_BOUNDS
    apparent_limit_va: float = math.nan


def _finite_power(_: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if not is_finite_power(value):
        raise ValueError(f"{attribute.name} must be a finite number of watts, got {value!r}")


def _battery_set(_: Any, attribute: attrs.Attribute[frozenset[int]], value: frozenset[int]) -> None:
    if not isinstance(value, frozenset):
        raise TypeError(f"{attribute.name} must be a frozenset of battery ids, got {value!r}")
    if not value:
        raise ValueError(f"{attribute.name} must name at least one battery")
    if len(value) > MAX_BATTERIES_PER_REQUEST:
        raise ValueError(
            f"{attribute.name} names {len(value)} batteries; "
            f"at most {MAX_BATTERIES_PER_REQUEST} are allowed"
        )
    bad = sorted((b for b in value if not is_component_id(b)), key=repr)
    if bad:
        raise ValueError(f"{attribute.name} must hold non-negative integer ids, got {bad!r}")


def _timeout(_: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if not is_request_timeout(value):
        raise ValueError(
            f"{attribute.name} must be a number in (0, {MAX_REQUEST_TIMEOUT_S:g}] s, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class Request:
    """A client's request: charge (+) or discharge (-) a set of batteries with a total power.

    Attributes:
        power_w: Total active power for the set, W. Finite.
        batteries: Battery component ids (1 to 1024 of them).
        request_timeout_s: Deadline for all inverter commands of this request, s.
        adjust_power: Whether power beyond the set's bounds is trimmed (``True``) or the request
            is refused as out of bounds (``False``).
        include_broken_batteries: Whether batteries that are not working take part anyway.
        reactive_var: Total reactive power for the set's inverters, var (the Microgrid API's
            sign: + inductive), or ``None``: the request asks for none (0 var stands).
    """

    power_w: float = attrs.field(validator=_finite_power)
    batteries: frozenset[int] = attrs.field(validator=_battery_set)
    request_timeout_s: float = attrs.field(default=5.0, validator=_timeout)
    adjust_power: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    include_broken_batteries: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    reactive_var: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_finite_power)
    )


@attrs.frozen(kw_only=True)
class Success:
    """Every commanded inverter accepted its setpoint.

    Attributes:
        request: The request this answers.
        succeeded_power_w: Total power commanded to batteries whose command succeeded.
        succeeded_batteries: Batteries whose command succeeded.
        excess_power_w: Requested power that could not be placed (same sign as the request).
        distribution: Battery id to commanded power, W.
        reasons: Battery id to why it got that power (see ``distribution.Allotment``), or
            why it got none.
        unused_power_w: Battery id to the fresh measured power of each requested battery
            that was not used (``spec/distribution.md``, "Power the daemon cannot command").
        compensated_power_w: What that power took off the request before the split.
        uncompensated_power_w: What the unused batteries deliver that was not taken off:
            beyond the request (its sign) or against it.
        arbitration: How the bucket's proposals merged (``propose``).
        ramping: While the bucket's target ramps (``spec/plant.md``): ``target_w`` (the whole
            target), ``applied_w`` (what was applied now) and ``eta_s`` (the time until the
            target is reached); ``None`` once it is reached or when nothing ramps.
        bound_limits: The group limits (``[[limits]]``) that bound the split, by name.
    """

    request: Request
    succeeded_power_w: float
    succeeded_batteries: frozenset[int]
    excess_power_w: float
    distribution: Mapping[int, float]
    reasons: Mapping[int, str] = attrs.field(factory=dict)
    unused_power_w: Mapping[int, float] = attrs.field(factory=dict)
    compensated_power_w: float = 0.0
    uncompensated_power_w: float = 0.0
    arbitration: Mapping[str, Any] | None = None
    ramping: Mapping[str, float] | None = None
    reactive: Mapping[str, Any] | None = None
    bound_limits: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class PartialFailure:
    """Some inverter commands failed or timed out.

    Attributes:
        request: The request this answers.
        succeeded_power_w: Total power commanded to batteries whose command succeeded
            (the reference design counted failed power here too; we do not).
        succeeded_batteries: Batteries whose command succeeded.
        failed_power_w: Total power commanded to batteries whose command failed.
        failed_batteries: Batteries whose command failed or timed out.
        excess_power_w: Requested power that could not be placed (same sign as the request).
        distribution: Battery id to commanded power, W.
        reasons: Battery id to why it got that power, or why it got none.
        unused_power_w: As :class:`Success`'s.
        compensated_power_w: As :class:`Success`'s.
        uncompensated_power_w: As :class:`Success`'s.
        arbitration: As :class:`Success`'s.
        ramping: As :class:`Success`'s.
        reactive: As :class:`Success`'s.
        bound_limits: As :class:`Success`'s.
    """

    request: Request
    succeeded_power_w: float
    succeeded_batteries: frozenset[int]
    failed_power_w: float
    failed_batteries: frozenset[int]
    excess_power_w: float
    distribution: Mapping[int, float]
    reasons: Mapping[int, str] = attrs.field(factory=dict)
    unused_power_w: Mapping[int, float] = attrs.field(factory=dict)
    compensated_power_w: float = 0.0
    uncompensated_power_w: float = 0.0
    arbitration: Mapping[str, Any] | None = None
    ramping: Mapping[str, float] | None = None
    reactive: Mapping[str, Any] | None = None
    bound_limits: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class OutOfBounds:
    """The request lies outside what the usable batteries can take; nothing was commanded.

    Attributes:
        request: The request this answers.
        bounds: The aggregate bounds of the usable batteries.
        reasons: Battery id to why a requested battery was not among them.
    """

    request: Request
    bounds: PowerBounds
    reasons: Mapping[int, str] = attrs.field(factory=dict)
    arbitration: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Error:
    """The request could not be served at all; nothing was commanded.

    Attributes:
        request: The request this answers.
        message: Why, naming the offending battery ids.
        reasons: Battery id to why a requested battery could not be used, where the request
            was planned (none when it was refused before: unknown ids, a program's limits).
    """

    request: Request
    message: str
    reasons: Mapping[int, str] = attrs.field(factory=dict)
    arbitration: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Ignored:
    """A newer request for the same batteries replaced this one before it ran.

    Attributes:
        request: The request this answers.
        message: Why it was ignored.
    """

    request: Request
    message: str
    arbitration: Mapping[str, Any] | None = None


Result: TypeAlias = Success | PartialFailure | OutOfBounds | Error | Ignored
"""The closed union of outcomes of a :class:`Request`.

Each carries ``arbitration``: for a ``propose``, the reply's ``arbitration`` object
(``spec/arbitration.md``: the program's grant in its bucket, and why); ``None`` for ``set_power``.
"""


@attrs.frozen(kw_only=True)
class Timing:
    """Where a request's time went inside the daemon (sent back with its result).

    Attributes:
        total_s: From the request's arrival at the loop to its result.
        commands_s: The inverter commands' fan-out (0 when nothing was commanded).
    """

    total_s: float
    commands_s: float
