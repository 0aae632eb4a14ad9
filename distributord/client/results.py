"""What the daemon answers, as typed values: one frozen attrs class per result and notification.

Theory of operation
-------------------
The protocol's results are JSON objects (``spec/protocol.md``, ``spec/arbitration.md``); each
has a class here whose docstring documents every field, and a ``from_json`` that reads one. The
reason values are the daemon's own enums, not a second list of strings:

* a battery's :class:`~distributord.core.status.Status` and why it is not working,
  :class:`~distributord.core.status.Reason`;
* why a battery got the power it got in a ``set_power`` or ``propose`` result,
  :class:`~distributord.core.distribution.rows.Allotment`, and the reactive power it got,
  :class:`~distributord.core.distribution.reactive.ReactiveAllotment`;
* why a proposal got what it got, :class:`~distributord.core.arbitration.merge.Reason`;
* why a proposal ended, :class:`~distributord.core.arbitration.holdings.Why`.

A reason the enum does not know (a newer daemon, or a sentence: ``"held by program fcr
(priority 90)"``) is kept as the plain string the daemon sent, so a client never fails on one.
A field the daemon leaves out (it sends no placeholders: ``spec/protocol.md``) is ``None``;
a power that is not known (``null`` on the wire) is ``None`` too. Powers are watts, floats,
positive charges the battery and negative discharges it.

Reading is strict about types and lenient about additions: a field of the wrong type, or a
required field missing, is a :class:`~distributord.core.errors.BadReplyError` naming the field
(something other than distributord answered); a field this module does not know is ignored.

Pure: the standard library, attrs and ``distributord.core`` only.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

# The daemon's own enums and values (``X as X``: re-exported, a client names them from here).
from distributord.core.arbitration import merge
from distributord.core.arbitration.holdings import Why as Why
from distributord.core.arbitration.merge import Limiter as Limiter
from distributord.core.arbitration.programs import Acting as Acting
from distributord.core.arbitration.programs import Limits as Limits
from distributord.core.distribution.reactive import ReactiveAllotment as ReactiveAllotment
from distributord.core.distribution.rows import Allotment as Allotment
from distributord.core.errors import BadReplyError
from distributord.core.status import Reason as Reason
from distributord.core.status import Status as Status

GrantReason = merge.Reason
"""Why a proposal got what it got (``arbitration.md``): the merge's reasons, by another name
beside :class:`~distributord.core.status.Reason` (why a battery is not working)."""

_E = TypeVar("_E", bound=enum.Enum)
_T = TypeVar("_T")

JsonObject = Mapping[str, Any]


class MicrogridState(enum.StrEnum):
    """How the daemon stands with the microgrid (``ping``'s and ``get_status``'s ``microgrid``)."""

    CONNECTING = "connecting"
    """Not reached yet, and no failure yet: commands get -32004 until discovery completes."""
    CONNECTED = "connected"
    """Discovery completed and telemetry flows."""
    UNREACHABLE = "unreachable"
    """Discovery fails, or every telemetry stream is broken (``unreachable_for_s`` says how
    long); the daemon retries."""


class Outcome(enum.StrEnum):
    """How a ``set_power`` or ``propose`` ended (``spec/protocol.md``)."""

    SUCCESS = "success"
    """Every command went out and succeeded; ``excess_power_w`` is what could not be placed."""
    PARTIAL_FAILURE = "partial_failure"
    """Some inverters' commands failed or timed out (``failed_batteries``); those batteries are
    blocked for a while."""
    OUT_OF_BOUNDS = "out_of_bounds"
    """The power is outside what the batteries can take, and ``adjust_power`` was false (or a
    program pinned its bounds); ``bounds`` says what they can; nothing was commanded."""
    ERROR = "error"
    """Refused: unknown ids, no usable battery, zero capacity, a program's limits, the drain
    at shutdown; ``message`` names why; nothing was commanded."""
    IGNORED = "ignored"
    """A newer request for the same batteries replaced this one before it ran (``message``)."""


# --- reading JSON ------------------------------------------------------------------------------


def _bad(what: str, field: str, expected: str, value: object) -> BadReplyError:
    return BadReplyError(f"distributord sent a {what} whose {field} is not {expected}: {value!r}")


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


class _Reader:
    """Typed access to one JSON object, naming the object and the field in every error."""

    def __init__(self, what: str, value: object) -> None:
        if not isinstance(value, Mapping):
            raise BadReplyError(f"distributord sent a {what} that is not an object: {value!r}")
        self.what = what
        self.obj: JsonObject = value

    def _get(self, field: str, check: Callable[[object], bool], expected: str) -> Any:
        if field not in self.obj:
            raise BadReplyError(f"distributord sent a {self.what} without {field}")
        value = self.obj[field]
        if not check(value):
            raise _bad(self.what, field, expected, value)
        return value

    def has(self, field: str) -> bool:
        return self.obj.get(field) is not None

    def text(self, field: str) -> str:
        value: str = self._get(field, lambda v: isinstance(v, str), "a string")
        return value

    def integer(self, field: str) -> int:
        value: int = self._get(field, _is_int, "an integer")
        return value

    def flag(self, field: str) -> bool:
        value: bool = self._get(field, lambda v: isinstance(v, bool), "true or false")
        return value

    def number(self, field: str) -> float:
        return float(self._get(field, _is_number, "a number"))

    def optional_number(self, field: str) -> float | None:
        """A number, or ``None`` when absent or ``null``."""
        return self.number(field) if self.has(field) else None

    def optional_text(self, field: str) -> str | None:
        return self.text(field) if self.has(field) else None

    def ids(self, field: str) -> frozenset[int]:
        value = self._get(field, _is_ids, "an array of battery ids")
        return frozenset(value)

    def optional_ids(self, field: str) -> frozenset[int] | None:
        return self.ids(field) if self.has(field) else None

    def names(self, field: str) -> tuple[str, ...]:
        """A list of strings."""
        return tuple(self._get(field, _strings, "a list of strings"))

    def child(self, field: str) -> _Reader:
        return _Reader(f"{self.what}'s {field}", self._get(field, _is_object, "an object"))

    def array(self, field: str) -> list[Any]:
        value: list[Any] = self._get(field, lambda v: isinstance(v, list), "an array")
        return value

    def reasons(self, field: str, kind: type[_E]) -> tuple[_E | str, ...]:
        """An array of reasons, each the enum's member when it is one of its values."""
        values = self._get(field, _is_strings, "an array of strings")
        return tuple(_reason(kind, value) for value in values)

    def by_battery(self, field: str, read: Callable[[object], _T | None]) -> dict[int, _T]:
        """``{"<battery id>": value}`` as ``{id: value}``."""
        out: dict[int, _T] = {}
        for key, value in self.child(field).obj.items():
            read_value = read(value)
            if not (key.isascii() and key.isdecimal()) or read_value is None:
                raise _bad(self.what, field, "a map of battery ids", {key: value})
            out[int(key)] = read_value
        return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """A JSON number that is a finite float (an integer of 400 digits is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _is_ids(value: object) -> bool:
    return isinstance(value, list) and all(_is_int(item) and item >= 0 for item in value)


def _is_strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_object(value: object) -> bool:
    return isinstance(value, Mapping)


def _reason(kind: type[_E], value: str) -> _E | str:
    try:
        return kind(value)
    except ValueError:
        return value


def _watts(value: object) -> float | None:
    return float(value) if _is_number(value) else None  # type: ignore[arg-type]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


_A = TypeVar("_A", bound=attrs.AttrsInstance)

_BY_ANNOTATION: Mapping[str, Callable[[_Reader, str], Any]] = {
    "float": _Reader.number,
    "float | None": _Reader.optional_number,
    "int": _Reader.integer,
    "str": _Reader.text,
    "str | None": _Reader.optional_text,
    "bool": _Reader.flag,
    "frozenset[int]": _Reader.ids,
    "frozenset[int] | None": _Reader.optional_ids,
}
"""How a field of each plain type is read (the annotations are strings here: ``annotations``)."""


def _read(cls: type[_A], r: _Reader, **given: Any) -> _A:
    """An instance of the attrs class ``cls`` from ``r``.

    Each field not ``given`` is read under its own name by its annotation
    (:data:`_BY_ANNOTATION`); a field with a default that ``r`` lacks (or has as ``null``)
    keeps its default.
    """
    values = dict(given)
    for field in attrs.fields(cls):
        if field.name in values:
            continue
        if field.default is not attrs.NOTHING and not r.has(field.name):
            continue
        values[field.name] = _BY_ANNOTATION[field.type](r, field.name)
    return cls(**values)


# --- results -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Ping:
    """``ping``'s result: the daemon is alive, and how it stands with the microgrid.

    Attributes:
        version: The daemon's version (``distributord.__version__``).
        uptime_s: Seconds since the daemon's process started.
        microgrid: Whether it has reached the microgrid.
        microgrid_api: The Microgrid API version it speaks (``"v1alpha18"``, ``"v1alpha19"``,
            ``"v1"``), once negotiated; ``None`` before.
        unreachable_for_s: How long the microgrid has been unreachable, when it is.
    """

    version: str
    uptime_s: float
    microgrid: MicrogridState | str
    microgrid_api: str | None = None
    unreachable_for_s: float | None = None

    @classmethod
    def from_json(cls, value: object) -> Ping:
        """Read ``ping``'s result."""
        r = _Reader("ping result", value)
        return _read(cls, r, microgrid=_microgrid(r))


def _standing(r: _Reader) -> dict[str, Any]:
    """A battery's ``status`` and ``reasons`` (``get_status``'s and ``status_changed``'s)."""
    return {
        "status": _reason(Status, r.text("status")),
        "reasons": frozenset(r.reasons("reasons", Reason)),
    }


def _microgrid(r: _Reader) -> MicrogridState | str:
    return _reason(MicrogridState, r.text("microgrid"))


@attrs.frozen(kw_only=True)
class Bounds:
    """Power bounds of a battery or a set, in watts (``null`` on the wire, ``None`` here: unknown).

    A power ``p`` is allowed when ``inclusion_lower_w <= p <= inclusion_upper_w`` and ``p`` is
    not strictly inside the exclusion zone ``(exclusion_lower_w, exclusion_upper_w)``, except
    0 W, which is always allowed (``spec/distribution.md``).

    Attributes:
        inclusion_lower_w: The most negative power (the largest discharge).
        exclusion_lower_w: The upper end of the discharge side: a discharge must reach at least
            this magnitude (0 when there is no minimum).
        exclusion_upper_w: The lower end of the charge side: a charge must reach at least this.
        inclusion_upper_w: The largest charge.
    """

    inclusion_lower_w: float | None
    exclusion_lower_w: float | None
    exclusion_upper_w: float | None
    inclusion_upper_w: float | None

    @classmethod
    def from_json(cls, r: _Reader) -> Bounds:
        """Read the four bounds from an object that has them (``null`` for unknown)."""
        return _read(cls, r)


@attrs.frozen(kw_only=True)
class ReactiveBounds:
    """An inverter's reactive-power bounds, var (``None``: that side is not known).

    Attributes:
        lower_var: The most capacitive (negative) reactive power it takes.
        upper_var: The most inductive (positive) reactive power it takes.
    """

    lower_var: float | None
    upper_var: float | None


@attrs.frozen(kw_only=True)
class BatteryStatus:
    """One battery in ``get_status``'s result. Fields that are not known are ``None``.

    Attributes:
        id: The battery's component id.
        inverter_id: The inverter that commands it.
        status: Working, uncertain (just failed: blocked for a while) or not working.
        reasons: Why it is not working or uncertain (empty when working), and
            :attr:`Reason.OVERRIDDEN <distributord.core.status.Reason.OVERRIDDEN>` when someone
            else commands its inverter.
        blocked_until_s: Seconds until its blocking window after a failure ends.
        soc_pct: Its state of charge, %.
        capacity_wh: Its capacity, Wh.
        bounds: What battery and inverter together allow now.
        setpoint_w: The setpoint last commanded to its inverter and accepted.
        reactive_setpoint_var: The reactive setpoint its inverter is believed to hold, var
            (+ inductive, − capacitive: the Microgrid API's sign), when it may hold one.
        reactive_bounds: Its inverter's reactive-power bounds, when telemetry reports them.
        apparent_limit_va: Its inverter's apparent-power limit ``S``, VA, when it reports one.
        data_age_s: Age of the older of its battery's and inverter's latest new samples.
        clock_offset_s: The microgrid's clock offset (our clock at receipt minus the sample's
            timestamp), once a sample said when it was taken.
        group: For the lead of an N:M group, its members (the entry is the group's).
    """

    id: int
    inverter_id: int
    status: Status | str
    reasons: frozenset[Reason | str]
    blocked_until_s: float | None = None
    soc_pct: float | None = None
    capacity_wh: float | None = None
    bounds: Bounds | None = None
    setpoint_w: float | None = None
    reactive_setpoint_var: float | None = None
    reactive_bounds: ReactiveBounds | None = None
    apparent_limit_va: float | None = None
    data_age_s: float | None = None
    clock_offset_s: float | None = None
    group: Members | None = None

    @classmethod
    def from_json(cls, value: object) -> BatteryStatus:
        """Read one entry of ``get_status``'s ``batteries``."""
        r = _Reader("battery status", value)
        bounds = Bounds.from_json(r.child("bounds")) if r.has("bounds") else None
        reactive_bounds = (
            _read(ReactiveBounds, r.child("reactive_bounds")) if r.has("reactive_bounds") else None
        )
        return _read(
            cls,
            r,
            bounds=bounds,
            reactive_bounds=reactive_bounds,
            group=Members.read(r),
            **_standing(r),
        )


@attrs.frozen(kw_only=True)
class StatusReport:
    """``get_status``'s result: every battery the daemon manages, and the microgrid's state.

    Attributes:
        batteries: Every managed battery, by id.
        working: The ids of the working batteries.
        uncertain: The ids of the uncertain ones (the rest are not working).
        microgrid: Whether the daemon has reached the microgrid (no batteries before).
        microgrid_api: The Microgrid API version spoken, once negotiated.
        unreachable_for_s: How long the microgrid has been unreachable, when it is.
    """

    batteries: Mapping[int, BatteryStatus]
    working: frozenset[int]
    uncertain: frozenset[int]
    microgrid: MicrogridState | str
    microgrid_api: str | None = None
    unreachable_for_s: float | None = None

    @classmethod
    def from_json(cls, value: object) -> StatusReport:
        """Read ``get_status``'s result."""
        r = _Reader("status", value)
        entries = [BatteryStatus.from_json(entry) for entry in r.array("batteries")]
        return _read(
            cls, r, batteries={entry.id: entry for entry in entries}, microgrid=_microgrid(r)
        )


@attrs.frozen(kw_only=True)
class Members:
    """The batteries and inverters of an N:M group (``spec/plant.md``).

    A group is one unit: it goes by its lead battery (the smallest id) and lead inverter in
    results, statuses and setpoints, and a request names all its batteries or none.

    Attributes:
        batteries: Its batteries' ids.
        inverters: Its inverters' ids.
    """

    batteries: frozenset[int]
    inverters: frozenset[int]

    @classmethod
    def read(cls, r: _Reader) -> Members | None:
        """The ``group`` object of ``r``, if it has one."""
        return _read(cls, r.child("group")) if r.has("group") else None


@attrs.frozen(kw_only=True)
class Pair:
    """A battery and the inverter the daemon commands it through.

    Attributes:
        battery_id: The battery (a group's lead).
        inverter_id: Its inverter (a group's lead inverter).
        group: For an N:M group, its members; ``None`` for one battery on one inverter.
    """

    battery_id: int
    inverter_id: int
    group: Members | None = None


@attrs.frozen(kw_only=True)
class LeftOut:
    """A battery the daemon does not manage.

    Attributes:
        battery_id: The battery.
        reason: Why, in a sentence (behind a PV inverter, several inverters, no inverter...).
    """

    battery_id: int
    reason: str


@attrs.frozen(kw_only=True)
class Components:
    """``list_components``'s result.

    Attributes:
        pairs: The battery/inverter pairs the daemon manages, by battery id.
        left_out: The batteries of the component graph it left out, and why.
    """

    pairs: tuple[Pair, ...]
    left_out: tuple[LeftOut, ...]

    @classmethod
    def from_json(cls, value: object) -> Components:
        """Read ``list_components``'s result."""
        r = _Reader("component list", value)
        return cls(
            pairs=tuple(
                _read(Pair, pair, group=Members.read(pair))
                for pair in (_Reader("pair", entry) for entry in r.array("pairs"))
            ),
            left_out=tuple(
                _read(LeftOut, _Reader("left-out battery", entry)) for entry in r.array("left_out")
            ),
        )


def acting_from_json(value: object) -> Acting:
    """Read ``hello``'s result: the program the connection now acts as, and its limits."""
    r = _Reader("hello result", value)
    limits = r.child("limits")
    return Acting(
        program=r.text("program"),
        priority=r.integer("priority"),
        limits=Limits(
            max_discharge_w=limits.optional_number("max_discharge_w"),
            max_charge_w=limits.optional_number("max_charge_w"),
            batteries=limits.optional_ids("batteries"),
        ),
    )


def _limiter(value: object) -> Limiter:
    r = _Reader("limiter", value)
    return Limiter(program=r.text("program"), priority=r.integer("priority"))


@attrs.frozen(kw_only=True)
class RequestTiming:
    """Where a request's time went inside the daemon.

    Attributes:
        total_ms: From when the daemon read the request to its reply, ms.
        commands_ms: The part spent commanding inverters, ms.
    """

    total_ms: float
    commands_ms: float


@attrs.frozen(kw_only=True)
class Arbitration:
    """How a proposal fared among the programs sharing its batteries (``spec/arbitration.md``).

    Attributes:
        program: The program that proposed.
        priority: Its priority.
        granted_w: What it was granted.
        window_w: The window ``(lower, upper)`` it saw, after the higher priorities narrowed it
            (``None``: unbounded or unknown).
        limited_by: The higher-priority programs that narrowed its window.
        target_w: The power the whole set was given.
        reasons: Why it got what it got, then why the target is what it is.
    """

    program: str
    priority: int
    granted_w: float | None
    window_w: tuple[float | None, float | None]
    limited_by: tuple[Limiter, ...]
    target_w: float | None
    reasons: tuple[GrantReason | str, ...]

    @classmethod
    def from_json(cls, r: _Reader) -> Arbitration:
        """Read a result's ``arbitration`` member."""
        window = r.array("window_w")
        if len(window) != 2 or not all(v is None or _is_number(v) for v in window):
            raise _bad(r.what, "window_w", "[lower, upper]", window)
        return _read(
            cls,
            r,
            window_w=(_watts(window[0]), _watts(window[1])),
            limited_by=tuple(_limiter(entry) for entry in r.array("limited_by")),
            reasons=r.reasons("reasons", GrantReason),
        )


@attrs.frozen(kw_only=True)
class ReactiveResult:
    """What became of a request's reactive power (``spec/plant.md``, "Reactive power").

    Reactive power is var, positive inductive (current lagging), negative capacitive: the
    Microgrid API's sign.

    Attributes:
        target_var: The reactive power asked of the set (its merge's, for a proposal).
        distribution: Battery id to the reactive power commanded to its inverter.
        excess_var: What could not be placed, with the target's sign.
        failed_batteries: The batteries whose reactive command failed (the outcome is then
            ``partial_failure``).
        reasons: Battery id to why its inverter got that reactive power, a
            :class:`~distributord.core.distribution.reactive.ReactiveAllotment`, or to why it
            got none or its command failed (a sentence).
    """

    target_var: float
    distribution: Mapping[int, float]
    excess_var: float
    failed_batteries: frozenset[int] = frozenset()
    reasons: Mapping[int, ReactiveAllotment | str] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, r: _Reader) -> ReactiveResult:
        """Read a result's ``reactive`` member."""
        reasons = r.by_battery("reasons", _reactive_allotment) if r.has("reasons") else {}
        return _read(cls, r, distribution=r.by_battery("distribution", _watts), reasons=reasons)


def _reactive_allotment(value: object) -> ReactiveAllotment | str | None:
    text = _text(value)
    return None if text is None else _reason(ReactiveAllotment, text)


@attrs.frozen(kw_only=True)
class Ramping:
    """How far a ramping set's target has got (``spec/plant.md``, "Ramp rates").

    What was not applied yet is on its way, not ``excess_power_w``.

    Attributes:
        target_w: The set's whole target.
        applied_w: What was applied now.
        eta_s: The time until the target is reached, s (a step every ``ramp.step_s``).
    """

    target_w: float
    applied_w: float
    eta_s: float


@attrs.frozen(kw_only=True)
class PowerResult:
    """The result of ``set_power`` and ``propose`` (domain outcomes are results, not errors).

    Which fields are set depends on the outcome; the others are ``None`` or empty.

    Attributes:
        outcome: How it ended.
        power_w: The power requested (echo).
        batteries: The batteries requested (echo).
        succeeded_power_w: Power commanded to batteries whose command succeeded (success,
            partial_failure).
        succeeded_batteries: Those batteries.
        failed_power_w: Power commanded to batteries whose command failed or timed out
            (partial_failure).
        failed_batteries: Those batteries; they are blocked for a while.
        excess_power_w: Requested power that could not be placed, with the request's sign
            (success, partial_failure).
        distribution: Battery id to the power commanded (success, partial_failure).
        reasons: Battery id to why it got that power, an
            :class:`~distributord.core.distribution.rows.Allotment`, or to why it got none (a
            sentence: not working, blocked, held by another program, ...); every requested
            battery that got no power has one, whatever the outcome.
        unused_power_w: Battery id to the measured power of a requested battery the daemon
            could not command (``spec/distribution.md``).
        compensated_power_w: The part of that power the others made up for.
        uncompensated_power_w: The part they could not.
        bounds: What the batteries can take (out_of_bounds).
        message: Why, naming the offending ids (error, ignored).
        timing: Where the time went in the daemon.
        arbitration: How the proposal fared among the programs (``propose``; ``set_power`` too
            when others share the batteries).
        reactive: What became of the reactive power, when some was asked (``reactive_var``, or
            a proposal's merge has some).
        ramping: How far the set's target has got, while it ramps (``[ramp] max_w_per_s``).
        bound_limits: The group limits (``[[limits]]``: feeders, fuses, the grid connection)
            that held the split back, by name (success, partial_failure).
    """

    outcome: Outcome | str
    power_w: float | None
    batteries: frozenset[int]
    succeeded_power_w: float | None = None
    succeeded_batteries: frozenset[int] = frozenset()
    failed_power_w: float | None = None
    failed_batteries: frozenset[int] = frozenset()
    excess_power_w: float | None = None
    distribution: Mapping[int, float] = attrs.field(factory=dict)
    reasons: Mapping[int, Allotment | str] = attrs.field(factory=dict)
    unused_power_w: Mapping[int, float] = attrs.field(factory=dict)
    compensated_power_w: float | None = None
    uncompensated_power_w: float | None = None
    bounds: Bounds | None = None
    message: str | None = None
    timing: RequestTiming | None = None
    arbitration: Arbitration | None = None
    reactive: ReactiveResult | None = None
    ramping: Ramping | None = None
    bound_limits: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the outcome is a success."""
        return self.outcome == Outcome.SUCCESS

    @classmethod
    def from_json(cls, value: object) -> PowerResult:
        """Read a ``set_power`` or ``propose`` result."""
        r = _Reader("power result", value)
        given: dict[str, Any] = {
            name: r.by_battery(name, read)
            for name, read in (
                ("distribution", _watts),
                ("reasons", _allotment),
                ("unused_power_w", _watts),
            )
            if r.has(name)
        }
        if r.has("timing"):
            given["timing"] = _read(RequestTiming, r.child("timing"))
        if r.has("bounds"):
            given["bounds"] = Bounds.from_json(r.child("bounds"))
        if r.has("arbitration"):
            given["arbitration"] = Arbitration.from_json(r.child("arbitration"))
        if r.has("reactive"):
            given["reactive"] = ReactiveResult.from_json(r.child("reactive"))
        if r.has("ramping"):
            given["ramping"] = _read(Ramping, r.child("ramping"))
        if r.has("bound_limits"):
            given["bound_limits"] = r.names("bound_limits")
        return _read(cls, r, outcome=_reason(Outcome, r.text("outcome")), **given)


def _allotment(value: object) -> Allotment | str | None:
    text = _text(value)
    return None if text is None else _reason(Allotment, text)


@attrs.frozen(kw_only=True)
class ProposalInfo:
    """One live proposal in ``get_proposals``' result.

    Attributes:
        program: The program that made it.
        priority: Its priority.
        batteries: Its battery set.
        power_w: What it asks for the set (``None``: a limiter, bounds only).
        lower_w: The lower limit it imposes on every lower priority, if any.
        upper_w: The upper limit it imposes on every lower priority, if any.
        age_s: Seconds since it was made.
        ttl_s: Its lifetime, if it has one (``None``: standing).
        until_disconnect: Whether it ends when its connection closes.
        granted_w: Its grant in its set's last merge (``None``: not merged yet).
        held_batteries: The batteries of its set it holds (a higher priority may hold others).
    """

    program: str
    priority: int
    batteries: frozenset[int]
    power_w: float | None
    lower_w: float | None
    upper_w: float | None
    age_s: float | None
    ttl_s: float | None
    until_disconnect: bool
    granted_w: float | None
    held_batteries: frozenset[int]

    @classmethod
    def from_json(cls, value: object) -> ProposalInfo:
        """Read one entry of ``get_proposals``' ``proposals``."""
        return _read(cls, _Reader("proposal", value))


def proposals_from_json(value: object) -> tuple[ProposalInfo, ...]:
    """Read ``get_proposals``' result."""
    return tuple(
        ProposalInfo.from_json(entry) for entry in _Reader("proposals", value).array("proposals")
    )


def withdrawn_from_json(value: object) -> tuple[frozenset[int], ...]:
    """Read ``withdraw``'s result: the battery sets whose proposals ended."""
    sets = _Reader("withdraw result", value).array("withdrawn")
    if not all(_is_ids(entry) for entry in sets):
        raise _bad("withdraw result", "withdrawn", "an array of battery sets", sets)
    return tuple(frozenset(entry) for entry in sets)


# --- notifications -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StatusChange:
    """``status_changed``: a battery's status or reasons changed (after ``subscribe_status``).

    Attributes:
        id: The battery.
        status: Its status now.
        reasons: Why it is not working or uncertain now (empty when working).
    """

    id: int
    status: Status | str
    reasons: frozenset[Reason | str]

    @classmethod
    def from_json(cls, value: object) -> StatusChange:
        """Read ``status_changed``'s params."""
        r = _Reader("status_changed", value)
        return _read(cls, r, **_standing(r))


@attrs.frozen(kw_only=True)
class CommandFailure:
    """``command_failed``: an inverter's command failed after it was accepted.

    Sent to status subscribers; the battery is blocked for a while.

    Attributes:
        battery: The battery.
        inverter: Its inverter.
        power_w: The power that was commanded.
        reply: The inverter's final reply (``"FAILED"``).
        request_id: The id of the request the command belonged to, if known (on the
            connection that sent it).
        program: The program that made that request, if known.
    """

    battery: int
    inverter: int
    power_w: float | None
    reply: str
    request_id: int | str | None = None
    program: str | None = None

    @classmethod
    def from_json(cls, value: object) -> CommandFailure:
        """Read ``command_failed``'s params."""
        r = _Reader("command_failed", value)
        request_id = program = None
        if r.has("request"):
            request = r.child("request")
            raw_id = request.obj.get("id")
            request_id = raw_id if isinstance(raw_id, int | str) else None
            program = request.optional_text("program")
        return _read(cls, r, request_id=request_id, program=program)


@attrs.frozen(kw_only=True)
class BoundsChange:
    """``bounds_changed``: what a program may still ask of a set (after ``subscribe_bounds``).

    Coalesced to the latest value, at most 10 per second.

    Attributes:
        batteries: The battery set.
        program: The program these bounds are for (the connection's).
        priority: Its priority.
        bounds: What it may still ask: the window left by the higher priorities, with the
            set's exclusion zone.
        target_w: The power the set is given now.
    """

    batteries: frozenset[int]
    program: str
    priority: int
    bounds: Bounds
    target_w: float | None

    @classmethod
    def from_json(cls, value: object) -> BoundsChange:
        """Read ``bounds_changed``'s params."""
        r = _Reader("bounds_changed", value)
        return _read(cls, r, bounds=Bounds.from_json(r))


@attrs.frozen(kw_only=True)
class ProposalChange:
    """``proposal_changed``: others changed what a proposal of this connection is granted.

    Attributes:
        batteries: The proposal's set.
        granted_w: What it is granted now.
        reasons: Why: the merge's reasons, or ``"preempted_by"`` (a higher priority took
            batteries) and ``"returned"`` (they came back).
        held_batteries: The batteries of its set it holds now, when that changed.
        preempted_by: The program that took batteries from it, if one did.
    """

    batteries: frozenset[int]
    granted_w: float | None
    reasons: tuple[GrantReason | str, ...]
    held_batteries: frozenset[int] | None = None
    preempted_by: Limiter | None = None

    @classmethod
    def from_json(cls, value: object) -> ProposalChange:
        """Read ``proposal_changed``'s params."""
        r = _Reader("proposal_changed", value)
        preempted_by = _limiter(r.obj["preempted_by"]) if r.has("preempted_by") else None
        return _read(cls, r, reasons=r.reasons("reasons", GrantReason), preempted_by=preempted_by)


@attrs.frozen(kw_only=True)
class ProposalEnd:
    """``proposal_ended``: a proposal of this connection ended.

    Attributes:
        batteries: The proposal's set.
        why: Why it ended (replaced, superseded, withdrawn, expired, disconnected).
    """

    batteries: frozenset[int]
    why: Why | str

    @classmethod
    def from_json(cls, value: object) -> ProposalEnd:
        """Read ``proposal_ended``'s params."""
        r = _Reader("proposal_ended", value)
        return _read(cls, r, why=_reason(Why, r.text("why")))


@attrs.frozen(kw_only=True)
class Notification:
    """A notification this library has no class for (a newer daemon's), as it came.

    Attributes:
        method: Its method.
        params: Its params.
    """

    method: str
    params: Mapping[str, Any]


Event = StatusChange | CommandFailure | BoundsChange | ProposalChange | ProposalEnd | Notification
"""Any notification, typed."""

READERS: Mapping[str, Callable[[object], Event]] = {
    "status_changed": StatusChange.from_json,
    "command_failed": CommandFailure.from_json,
    "bounds_changed": BoundsChange.from_json,
    "proposal_changed": ProposalChange.from_json,
    "proposal_ended": ProposalEnd.from_json,
}
"""The notifications the daemon sends, by method, and how each is read."""


def event_from_json(message: Mapping[str, Any]) -> Event:
    """A notification message (``{"method", "params"}``) as its typed value."""
    method = message.get("method")
    params = message.get("params", {})
    if not isinstance(method, str):
        raise BadReplyError(f"distributord sent a notification without a method: {message!r}")
    reader = READERS.get(method)
    if reader is None:
        return Notification(method=method, params=params if isinstance(params, Mapping) else {})
    return reader(params)
