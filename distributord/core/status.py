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

A side is *fresh* until ``max_data_age_s`` after the earlier of two times: when its latest
sample arrived (monotonic clock at receipt) and when that sample says it was taken (its
``sampled_at``, converted to the same clock by the caller). So a silent stream goes stale on
time, and so does a stream that keeps re-sending an old sample.

Healthy battery: SoC, SoC bounds and capacity finite; state codes all in {READY, CHARGING,
DISCHARGING, RELAY_CLOSED} with at least one of READY/CHARGING/DISCHARGING; no error codes.
Healthy inverter: state codes all in {READY, STANDBY, CHARGING, DISCHARGING}, at least one
present; no error codes. Warnings never count. The pair also needs power bounds from at least
one side (the distribution replaces one side's unknown bounds by the other's).

Blocking windows (after a failed command): the first lasts ``min_blocking_s``; a failure inside
a window changes nothing; a failure after a window ran out with no success in between doubles
the previous length, capped at ``max_blocking_s`` (1, 2, 4, 8, 16, 30, 30 s with the defaults);
a success, or a recovery from ``not_working``, resets the next length to the minimum. Failures
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

import attrs

from distributord.core.config import StatusConfig
from distributord.core.model import (
    BatterySnapshot,
    InverterSnapshot,
    StateCode,
    ValueFault,
    bad_battery_values,
)


class Status(enum.StrEnum):
    """A battery's usability."""

    WORKING = "working"
    UNCERTAIN = "uncertain"
    NOT_WORKING = "not_working"


class Reason(enum.StrEnum):
    """Why a battery is not working (or uncertain)."""

    NO_BATTERY_DATA = "no_battery_data"
    NO_INVERTER_DATA = "no_inverter_data"
    STALE_BATTERY_DATA = "stale_battery_data"
    STALE_INVERTER_DATA = "stale_inverter_data"
    BATTERY_ERROR_STATE = "battery_error_state"
    INVERTER_ERROR_STATE = "inverter_error_state"
    BATTERY_ERROR_CODE = "battery_error_code"
    INVERTER_ERROR_CODE = "inverter_error_code"
    NAN_SOC = "nan_soc"
    NAN_SOC_BOUNDS = "nan_soc_bounds"
    NAN_CAPACITY = "nan_capacity"
    MISSING_BOUNDS = "missing_bounds"
    BLOCKED_AFTER_FAILURE = "blocked_after_failure"


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


_NOT_FINITE_REASONS = {
    "soc_pct": Reason.NAN_SOC,
    "soc_lower_pct": Reason.NAN_SOC_BOUNDS,
    "soc_upper_pct": Reason.NAN_SOC_BOUNDS,
    "capacity_wh": Reason.NAN_CAPACITY,
}
"""The reason for each battery value that is not finite."""


def battery_problems(snapshot: BatterySnapshot) -> set[Reason]:
    """Why a battery sample is unhealthy (empty if healthy); freshness is not judged here.

    Of the shared rule for a battery's values (:func:`bad_battery_values`) only values that
    are not finite count here: an implausible value or a negative capacity leaves the battery
    working, and the distribution excludes its pair instead, naming the field.
    """
    problems = {
        _NOT_FINITE_REASONS[bad.field]
        for bad in bad_battery_values(snapshot)
        if bad.fault is ValueFault.NOT_FINITE
    }
    if not (snapshot.states <= BATTERY_HEALTHY_STATES and snapshot.states & BATTERY_READY_STATES):
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


@attrs.define
class _Side:
    """One side's latest sample: what is wrong with it, and until when it is fresh."""

    problems: set[Reason]
    fresh_until: float


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

    @property
    def previous(self) -> Status:
        """The status of the last evaluation."""
        return self._previous

    def battery_sample(
        self, snapshot: BatterySnapshot, *, received_at: float, sampled_at: float
    ) -> None:
        """A battery sample arrived at ``received_at``; it was taken at ``sampled_at``.

        Both are on the caller's monotonic clock (``sampled_at`` converted from Unix time;
        ``nan`` when the sample did not say).
        """
        self._battery = _Side(
            battery_problems(snapshot), self._fresh_until(received_at, sampled_at)
        )
        self._bounds_known = (snapshot.bounds.is_known, self._bounds_known[1])

    def inverter_sample(
        self, snapshot: InverterSnapshot, *, received_at: float, sampled_at: float
    ) -> None:
        """An inverter sample arrived (see :meth:`battery_sample`)."""
        self._inverter = _Side(
            inverter_problems(snapshot), self._fresh_until(received_at, sampled_at)
        )
        self._bounds_known = (self._bounds_known[0], snapshot.bounds.is_known)

    def _fresh_until(self, received_at: float, sampled_at: float) -> float:
        taken = received_at if math.isnan(sampled_at) else min(received_at, sampled_at)
        return taken + self._config().max_data_age_s

    def command_succeeded(self) -> None:
        """A command to this battery's inverter succeeded: unblock, reset the window."""
        self._blocked_until = None
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
        reasons: set[Reason] = set()
        for side, missing, stale in (
            (self._battery, Reason.NO_BATTERY_DATA, Reason.STALE_BATTERY_DATA),
            (self._inverter, Reason.NO_INVERTER_DATA, Reason.STALE_INVERTER_DATA),
        ):
            if side is None:
                reasons.add(missing)
                continue
            if now >= side.fresh_until:
                reasons.add(stale)
            reasons |= side.problems
        if self._battery is not None and self._inverter is not None and not any(self._bounds_known):
            reasons.add(Reason.MISSING_BOUNDS)
        return frozenset(reasons)

    def evaluate(self, now: float) -> Evaluation:
        """The status at ``now``, following the spec's evaluation order."""
        problems = self.problems(now)
        if problems:
            self._previous = Status.NOT_WORKING
            return Evaluation(status=Status.NOT_WORKING, reasons=problems)
        if self._previous is Status.NOT_WORKING:
            self.command_succeeded()  # a recovery: unblock, reset the window
            self._previous = Status.WORKING
            return Evaluation(status=Status.WORKING)
        if self._blocked_until is not None and now < self._blocked_until:
            self._previous = Status.UNCERTAIN
            return Evaluation(
                status=Status.UNCERTAIN,
                reasons=frozenset({Reason.BLOCKED_AFTER_FAILURE}),
                blocked_until=self._blocked_until,
            )
        self._previous = Status.WORKING
        return Evaluation(status=Status.WORKING)

    def next_change(self, now: float) -> float:
        """The earliest time after ``now`` at which :meth:`evaluate` could change by itself.

        That is a fresh side going stale or a blocking window ending (``inf`` if neither).
        """
        times = [
            side.fresh_until
            for side in (self._battery, self._inverter)
            if side is not None and side.fresh_until > now
        ]
        if self._blocked_until is not None and self._blocked_until > now:
            times.append(self._blocked_until)
        return min(times, default=math.inf)


def select(statuses: Mapping[int, Status], batteries: Iterable[int]) -> set[int]:
    """The batteries a request uses: the working ones among ``batteries``, else the uncertain.

    Unknown ids are ignored (the caller reports them).
    """
    wanted = [b for b in batteries if b in statuses]
    working = {b for b in wanted if statuses[b] is Status.WORKING}
    if working:
        return working
    return {b for b in wanted if statuses[b] is Status.UNCERTAIN}
