"""Battery status: working, uncertain or not working, and why (a pure state machine).

Theory of operation
-------------------
Each battery (with its inverter) has one :class:`StatusMachine`. It is fed the two sides'
snapshots and the outcomes of commands, and asked to :meth:`~StatusMachine.evaluate` at a time
``now``; it never reads a clock. Evaluation follows ``spec/status.md`` in this order:

1. if either side is missing, stale or unhealthy → ``not_working`` (with every reason);
2. if the previous status was ``not_working`` → unblock, ``working`` (a recovery resets the
   blocking window to its minimum);
3. if blocked (``now`` before the window's end) → ``uncertain``;
4. otherwise → ``working``.

The ages and windows are the ``[status]`` table's keys
(:class:`~distributord.core.config.StatusConfig`), asked for where they are used.

A side is *fresh* until ``max_data_age_s`` after the receipt (monotonic clock) of its latest
*new* sample: one whose ``sampled_at`` is later than the previous sample's, or that gives no
time at all. A sample that is not newer counts as no sample (:meth:`StatusMachine.
battery_sample` says so, and the caller drops it). So a silent stream goes stale on time, and
so does a stream that keeps re-sending an old sample; and samples alternately far in the past
and far in the future keep a battery fresh (every other one is new), never flapping.

**Clock skew is not staleness.** The microgrid's clock may differ from ours. Each side's
offset (our wall clock at receipt minus ``sampled_at``, of its latest new sample) is kept;
when either side's exceeds ``max_data_age_s`` in magnitude the battery keeps its status and
carries the reason ``clock_skew`` (:func:`skewed`).

**The link is one fact.** While the microgrid is unreachable (:attr:`StatusMachine.
unreachable`, set by the caller for every battery at once) a battery is ``not_working`` with
the one reason ``microgrid_unreachable``, whatever its data's age; a blocking window ending
cannot make it ``working`` then.

Healthy battery: SoC, SoC bounds and capacity finite; state codes all in {READY, CHARGING,
DISCHARGING, RELAY_CLOSED} with at least one of READY/CHARGING/DISCHARGING; no error codes.
Healthy inverter: state codes all in {READY, STANDBY, CHARGING, DISCHARGING}, at least one
present; no error codes. Warnings never count. The pair also needs power bounds from at least
one side (the distribution replaces one side's unknown bounds by the other's).

Blocking windows (after a failed command): the first lasts ``min_blocking_s``; a failure inside
a window changes nothing; a failure after a window ran out with no success in between doubles
the previous length, capped at ``max_blocking_s`` (1, 2, 4, 8, 16, 30, 30 s with the defaults);
a success, or a recovery from ``not_working``, resets the next length to the minimum (an
``ACCEPTED`` whose final reply is still to come unblocks but does not reset it). Failures
while ``not_working`` are ignored. Refusals (out of range, invalid) do not block: the caller
does not report them as failures.

:meth:`~StatusMachine.next_change` says when the evaluation could change with no new input
(a side going stale, a window ending), so the task that owns the machines can set one timer
and have ``uncertain → working`` and ``working → not_working`` happen on time.

:class:`BatteryState` is what the shell publishes of one battery's evaluation: a plain value,
so that reports (``distributord.core.reports``) are built from it without the shell.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from math import isfinite, isnan
from typing import TypeVar

import attrs

from distributord.core.config import StatusConfig
from distributord.core.model import BatterySnapshot, InverterSnapshot, StateCode

_S = TypeVar("_S", BatterySnapshot, InverterSnapshot)


class Status(enum.StrEnum):
    """A battery's usability."""

    WORKING = "working"
    UNCERTAIN = "uncertain"
    NOT_WORKING = "not_working"


class Reason(enum.StrEnum):
    """Why a battery is not working (or uncertain)."""

    NO_BATTERY_DATA = "no_battery_data"
    """No telemetry from the battery yet."""

    NO_INVERTER_DATA = "no_inverter_data"
    """No telemetry from its inverter yet."""

    STALE_BATTERY_DATA = "stale_battery_data"
    """The battery's telemetry is older than ``status.max_data_age_s``."""

    STALE_INVERTER_DATA = "stale_inverter_data"
    """The inverter's telemetry is older than ``status.max_data_age_s``."""

    BATTERY_ERROR_STATE = "battery_error_state"
    """The battery reports a state it cannot be commanded in (error, off, not ready...)."""

    INVERTER_ERROR_STATE = "inverter_error_state"
    """The inverter reports a state it cannot be commanded in."""

    BATTERY_ERROR_CODE = "battery_error_code"
    """The battery reports an error."""

    INVERTER_ERROR_CODE = "inverter_error_code"
    """The inverter reports an error."""

    NAN_SOC = "nan_soc"
    """The battery's state of charge is unknown (NaN)."""

    NAN_SOC_BOUNDS = "nan_soc_bounds"
    """The battery's SoC bounds are unknown (NaN)."""

    NAN_CAPACITY = "nan_capacity"
    """The battery's capacity is unknown (NaN)."""

    MISSING_BOUNDS = "missing_bounds"
    """Neither the battery nor the inverter reports usable power bounds."""

    BLOCKED_AFTER_FAILURE = "blocked_after_failure"
    """A command failed: it is uncertain until its blocking window ends
    (``status.min_blocking_s`` .. ``status.max_blocking_s``)."""

    CLOCK_SKEW = "clock_skew"
    """Its telemetry's timestamps differ from the daemon's clock by more than
    ``status.max_data_age_s``: its age is judged by when it arrived."""

    MICROGRID_UNREACHABLE = "microgrid_unreachable"
    """The microgrid is unreachable: nothing is known about any battery."""

    OVERRIDDEN = "overridden"
    """Someone else commands its inverter: a command of ours was ``OVERRIDDEN`` by a command
    that was not ours (v1alpha18/19). It does not change the status."""


BATTERY_HEALTHY_STATES = frozenset(
    {StateCode.READY, StateCode.CHARGING, StateCode.DISCHARGING, StateCode.RELAY_CLOSED}
)
BATTERY_READY_STATES = frozenset({StateCode.READY, StateCode.CHARGING, StateCode.DISCHARGING})
INVERTER_HEALTHY_STATES = frozenset(
    {StateCode.READY, StateCode.STANDBY, StateCode.CHARGING, StateCode.DISCHARGING}
)


@attrs.frozen(kw_only=True)
class Evaluation:
    """A battery's status at one time.

    Attributes:
        status: Working, uncertain or not working.
        reasons: Why it is not working or uncertain (empty when working).
        blocked_until: End of the current blocking window, if blocked.
    """

    status: Status
    reasons: frozenset[Reason] = frozenset()
    blocked_until: float | None = None


@attrs.frozen(kw_only=True)
class BatteryState:
    """One battery's status, as published.

    Attributes:
        battery_id: The battery.
        inverter_id: Its inverter.
        status: Working, uncertain or not working.
        reasons: Why it is not working or uncertain.
        blocked_until: End of its blocking window (the caller's monotonic clock), if blocked.
        since: When it entered this status (the caller's monotonic clock).
    """

    battery_id: int
    inverter_id: int
    status: Status
    reasons: frozenset[Reason] = frozenset()
    blocked_until: float | None = None
    since: float = 0.0


def battery_problems(snapshot: BatterySnapshot) -> set[Reason]:
    """Why a battery sample is unhealthy (empty if healthy); freshness is not judged here.

    Of the shared rule for a battery's values (:func:`bad_battery_values`) only values that
    are not finite count here: an implausible value or a negative capacity leaves the battery
    working, and the distribution excludes its pair instead, naming the field. Asked of every
    sample, so the four values are tested directly, not through the list of bad values
    (``tests/core/test_status.py`` holds the two to the same answer).
    """
    problems: set[Reason] = set()
    if not isfinite(snapshot.soc_pct):
        problems.add(Reason.NAN_SOC)
    if not (isfinite(snapshot.soc_lower_pct) and isfinite(snapshot.soc_upper_pct)):
        problems.add(Reason.NAN_SOC_BOUNDS)
    if not isfinite(snapshot.capacity_wh):
        problems.add(Reason.NAN_CAPACITY)
    states = snapshot.states
    if not (states <= BATTERY_HEALTHY_STATES and states & BATTERY_READY_STATES):
        problems.add(Reason.BATTERY_ERROR_STATE)
    if snapshot.errors:
        problems.add(Reason.BATTERY_ERROR_CODE)
    return problems


def inverter_problems(snapshot: InverterSnapshot) -> set[Reason]:
    """Why an inverter sample is unhealthy (empty if healthy); freshness is not judged here."""
    problems: set[Reason] = set()
    if not (snapshot.states and snapshot.states <= INVERTER_HEALTHY_STATES):
        problems.add(Reason.INVERTER_ERROR_STATE)
    if snapshot.errors:
        problems.add(Reason.INVERTER_ERROR_CODE)
    return problems


def skewed(offset_s: float, config: StatusConfig) -> bool:
    """Whether a clock offset (our wall clock at receipt minus ``sampled_at``) is clock skew."""
    return abs(offset_s) > config.max_data_age_s


@attrs.define
class _Side:
    """One side's latest new sample: what is wrong with it, and its times.

    ``sampled_at`` is the latest sample's own time (Unix; new or not: a sample is new when it
    is later than the one before), ``heard_at`` the receipt of the latest new one (the
    caller's monotonic clock), and ``offset`` its clock offset (``nan`` when it gave no time).
    """

    problems: set[Reason]
    heard_at: float
    sampled_at: float
    offset: float


class StatusMachine:
    """One battery's status (see the module docstring).

    Args:
        config: The ``[status]`` table (ages and blocking windows), asked for where it is
            used (so a reload applies from the next sample or failure).
    """

    def __init__(self, config: Callable[[], StatusConfig]) -> None:
        self._config = config
        self._battery: _Side | None = None
        self._inverter: _Side | None = None
        self._bounds_known = (False, False)
        self._previous = Status.NOT_WORKING
        self._blocked_until: float | None = None
        self._last_window: float | None = None  # None: the next window is the minimum
        # The side the last new sample refreshed, when it changed nothing but its times (see
        # :meth:`unchanged`), the offset it replaced, and the configuration of the last
        # evaluation.
        self._refreshed: _Side | None = None
        self._replaced_offset = math.nan
        self._evaluated_with: StatusConfig | None = None
        self.unreachable = False
        """Whether the microgrid is unreachable (set by the caller, then :meth:`evaluate`)."""

    @property
    def previous(self) -> Status:
        """The status of the last evaluation."""
        return self._previous

    def battery_sample(
        self, snapshot: BatterySnapshot, *, received_at: float, offset: float
    ) -> bool:
        """A battery sample arrived at ``received_at`` (the caller's monotonic clock).

        Args:
            snapshot: The sample; its ``sampled_at`` (Unix time, ``nan`` if it gave none)
                decides whether it is new.
            received_at: When it arrived.
            offset: Our wall clock at receipt minus its ``sampled_at``.

        Returns:
            Whether it was new (taken); a sample that is not newer than the one before counts
            as no sample, and the caller should drop it.
        """
        side = self._take(self._battery, snapshot, battery_problems, 0, received_at, offset)
        if side is None:
            return False
        self._battery = side
        return True

    def inverter_sample(
        self, snapshot: InverterSnapshot, *, received_at: float, offset: float
    ) -> bool:
        """An inverter sample arrived (see :meth:`battery_sample`)."""
        side = self._take(self._inverter, snapshot, inverter_problems, 1, received_at, offset)
        if side is None:
            return False
        self._inverter = side
        return True

    def _take(
        self,
        side: _Side | None,
        snapshot: _S,
        problems_of: Callable[[_S], set[Reason]],
        index: int,
        received_at: float,
        offset: float,
    ) -> _Side | None:
        """One side's sample: the side after it, or None when it is not new (see above).

        ``index`` is the side's place in the bounds-known flags (0: battery, 1: inverter).
        """
        sampled_at = snapshot.sampled_at
        if side is None:
            side = _Side(problems_of(snapshot), received_at, sampled_at, offset)
            self._refreshed = None
            known = snapshot.bounds.is_known
        elif sampled_at > side.sampled_at or isnan(sampled_at) or isnan(side.sampled_at):
            problems = problems_of(snapshot)
            known = snapshot.bounds.is_known
            self._refreshed = (
                side if problems == side.problems and known is self._bounds_known[index] else None
            )
            self._replaced_offset = side.offset
            side.problems = problems
            side.heard_at, side.sampled_at, side.offset = received_at, sampled_at, offset
        else:
            side.sampled_at = sampled_at
            return None
        battery_known, inverter_known = self._bounds_known
        self._bounds_known = (known, inverter_known) if index == 0 else (battery_known, known)
        return side

    def unchanged(self, now: float) -> bool:
        """Whether :meth:`evaluate` at ``now`` would say ``working`` as it did last time.

        Asked right after a new sample, so that the caller can skip the evaluation and keep its
        timer: true only when the last evaluation said ``working`` with the configuration of
        now, and the sample changed nothing but its side's times (same problems, same bounds
        known, same clock skew), and at ``now`` both sides are fresh and no window blocks. The
        sample only moved its side's staleness later, so the timer set at the last evaluation
        (at the earlier staleness) still fires first, evaluates and sets the next one.
        """
        side = self._refreshed
        if side is None or self._previous is not Status.WORKING or self.unreachable:
            return False
        config = self._config()
        if config is not self._evaluated_with:
            return False  # reloaded since: the last evaluation does not say what this one would
        blocked_until = self._blocked_until
        if blocked_until is not None and now < blocked_until:
            return False
        battery, inverter = self._battery, self._inverter
        max_age = config.max_data_age_s
        return (
            battery is not None
            and inverter is not None
            and now < battery.heard_at + max_age
            and now < inverter.heard_at + max_age
            and skewed(side.offset, config) is skewed(self._replaced_offset, config)
        )

    @property
    def clock_offset(self) -> float:
        """The two sides' clock offset of the larger magnitude, s (``nan`` if neither is known)."""
        offsets = [
            side.offset
            for side in (self._battery, self._inverter)
            if side is not None and not math.isnan(side.offset)
        ]
        return max(offsets, key=abs, default=math.nan)

    def side_offset(self, battery: bool) -> float:
        """One side's clock offset, s (``nan`` until it said when a new sample was taken)."""
        side = self._battery if battery else self._inverter
        return math.nan if side is None else side.offset

    def heard_at(self) -> float | None:
        """Receipt time of the older of the two sides' latest new samples (None until both)."""
        if self._battery is None or self._inverter is None:
            return None
        return min(self._battery.heard_at, self._inverter.heard_at)

    def command_succeeded(self, *, final: bool = True) -> None:
        """A command to this battery's inverter succeeded: unblock, reset the window.

        A success that is not ``final`` (``ACCEPTED``, its final reply still to come) unblocks
        but keeps the window's length: an inverter that accepts and then fails every command
        is blocked 1, 2, 4 … s, not 1 s each time.
        """
        self._blocked_until = None
        if final:
            self._last_window = None

    def command_failed(self, *, now: float) -> None:
        """A command failed (not a refusal): open a blocking window.

        Nothing happens if a window is open already or the battery is not working.
        """
        if self._previous is Status.NOT_WORKING:
            return
        if self._blocked_until is not None and now < self._blocked_until:
            return
        config = self._config()
        if self._last_window is None:
            window = config.min_blocking_s
        else:
            window = min(2.0 * self._last_window, config.max_blocking_s)
        self._last_window = window
        self._blocked_until = now + window

    def problems(self, now: float) -> frozenset[Reason]:
        """Why the battery cannot work at ``now`` (empty when both sides are fine)."""
        return self._problems(now, self._config())

    def _problems(self, now: float, config: StatusConfig) -> frozenset[Reason]:
        if self.unreachable:
            return _UNREACHABLE
        battery, inverter = self._battery, self._inverter
        max_age = config.max_data_age_s
        # The usual case, asked on every sample: both sides fresh and healthy, bounds known.
        if (
            battery is not None
            and inverter is not None
            and not battery.problems
            and not inverter.problems
            and now < battery.heard_at + max_age
            and now < inverter.heard_at + max_age
            and (self._bounds_known[0] or self._bounds_known[1])
        ):
            return _NONE
        reasons: set[Reason] = set()
        for side, missing, stale in (
            (battery, Reason.NO_BATTERY_DATA, Reason.STALE_BATTERY_DATA),
            (inverter, Reason.NO_INVERTER_DATA, Reason.STALE_INVERTER_DATA),
        ):
            if side is None:
                reasons.add(missing)
                continue
            if now >= side.heard_at + max_age:
                reasons.add(stale)
            reasons |= side.problems
        if battery is not None and inverter is not None and not any(self._bounds_known):
            reasons.add(Reason.MISSING_BOUNDS)
        return frozenset(reasons)

    def skewed(self) -> bool:
        """Whether either side's clock offset is clock skew (:func:`skewed`)."""
        return self._skewed(self._config())

    def _skewed(self, config: StatusConfig) -> bool:
        battery, inverter = self._battery, self._inverter
        return (battery is not None and skewed(battery.offset, config)) or (
            inverter is not None and skewed(inverter.offset, config)
        )

    def evaluate(self, now: float) -> Evaluation:
        """The status at ``now``, following the spec's evaluation order.

        ``clock_skew`` is added to the reasons of any status, and changes none.
        """
        config = self._config()  # once: each call reads the live configuration
        self._evaluated_with = config
        problems = self._problems(now, config)
        if problems:
            self._previous = Status.NOT_WORKING
            if self.unreachable:
                return _UNREACHABLE_EVALUATION
            return Evaluation(status=Status.NOT_WORKING, reasons=self._noted(problems, config))
        if self._previous is Status.NOT_WORKING:
            self.command_succeeded()  # a recovery: unblock, reset the window
        if self._blocked_until is not None and now < self._blocked_until:
            self._previous = Status.UNCERTAIN
            return Evaluation(
                status=Status.UNCERTAIN,
                reasons=self._noted(_BLOCKED, config),
                blocked_until=self._blocked_until,
            )
        self._previous = Status.WORKING
        return _WORKING_SKEWED if self._skewed(config) else _WORKING

    def _noted(self, reasons: frozenset[Reason], config: StatusConfig) -> frozenset[Reason]:
        return reasons | _SKEW if self._skewed(config) else reasons

    def next_change(self, now: float) -> float:
        """The earliest time after ``now`` at which :meth:`evaluate` could change by itself.

        That is a fresh side going stale or a blocking window ending (``inf`` if neither).
        """
        if self.unreachable:
            return math.inf  # the caller evaluates again when the link returns
        max_age = self._config().max_data_age_s
        earliest = math.inf
        for side in (self._battery, self._inverter):
            if side is not None:
                stale_at = side.heard_at + max_age
                if now < stale_at < earliest:
                    earliest = stale_at
        blocked_until = self._blocked_until
        if blocked_until is not None and now < blocked_until < earliest:
            earliest = blocked_until
        return earliest


_NONE: frozenset[Reason] = frozenset()
_UNREACHABLE = frozenset({Reason.MICROGRID_UNREACHABLE})
_UNREACHABLE_EVALUATION = Evaluation(status=Status.NOT_WORKING, reasons=_UNREACHABLE)
_BLOCKED = frozenset({Reason.BLOCKED_AFTER_FAILURE})
_SKEW = frozenset({Reason.CLOCK_SKEW})
_WORKING = Evaluation(status=Status.WORKING)
_WORKING_SKEWED = Evaluation(status=Status.WORKING, reasons=_SKEW)


def select(statuses: Mapping[int, Status], batteries: Iterable[int]) -> set[int]:
    """The batteries a request uses: the working ones among ``batteries``, else the uncertain.

    Unknown ids are ignored (the caller reports them).
    """
    wanted = [b for b in batteries if b in statuses]
    working = {b for b in wanted if statuses[b] is Status.WORKING}
    if working:
        return working
    return {b for b in wanted if statuses[b] is Status.UNCERTAIN}
