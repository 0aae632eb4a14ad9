"""The simulator's record of what every inverter was commanded and held, on its own clock.

Theory of operation
-------------------
The simulator is the judge of control safety: whether a standing setpoint lapsed, whether the
site ever held more than was asked. It can judge because it decides what each inverter holds,
so it writes down each decision as it makes it, in its own time (the ``now`` the world is
advanced to, monotonic seconds), not as a client saw it. Per inverter, in order:

* a :class:`Command` for every set-power call to it, once its fate is decided: when the
  simulator handles it (after its latency), or when the client cancels it first. Its
  :class:`Outcome` says whether the setpoint was applied;
* a :class:`Change` whenever a command changes the power the inverter holds (a refresh of the
  same power is a :class:`Command`, not a change);
* an :class:`Expiry` whenever a setpoint's lifetime ends, at the instant it ends (not when the
  world noticed): the power falls to 0 W. One of a non-zero setpoint is a **lapse**.

The world appends changes and expiries (its physics makes them) and commands (the server tells
it what happened to each call); every append happens with the world advanced to that instant,
so each inverter's events are in time order.

**Bounded.** Each inverter keeps its last ``maxlen`` events. An event pushed out is folded into
the inverter's *base*: from then on the log knows the power held at :attr:`InverterLog.start`
instead of how it got there, so the held power stays exactly known from ``start`` on, and the
:class:`Counts` never forget. Nothing here runs on telemetry: an event costs one append.

**Queries on a snapshot.** :meth:`Recorder.snapshot` copies the logs into a frozen
:class:`Record` whose helpers a test calls at leisure (on any thread): :meth:`Record.lapses`,
:meth:`Record.held_at`, :meth:`Record.timeline`, :meth:`Record.max_total` and
:meth:`Record.min_total`. The power they speak of is the setpoint an inverter *holds* (what it
was commanded and applied, until it expires), not the power its battery takes, which a SoC
bound may cut further: "never more than asked" is judged on what was commanded.

**Applied power.** An inverter with a ramp rate (``ramp_w_per_s`` in the scenario) does not
apply what it holds at once: its applied power moves from what it applies toward what it holds
at that rate, linearly (:func:`ramped`), toward 0 after an expiry too. The world and the record
compute it with the same function, from the same events: :meth:`Record.applied_at` and
:meth:`InverterLog.applied` give it at any instant, and as the corners of a piecewise linear
curve, for a test that measures a ramp. A start, standby or stop opens the inverter's relays
and cuts its power at once: the world records that as a :class:`Change` with ``at_once``.
Without a ramp rate the applied power is the held power.

**Limits** (a scenario's ``[[limits]]``: a feeder, a fuse, the grid connection point). The
world judges each change of what an inverter holds against the limits that bind it and writes
down a :class:`LimitViolation` for each limit the change would have broken, before it enforces
the limit (``sim.world``): what a command *asked for*, not what the site then held. They are
kept apart from the inverters' logs (the last :data:`MAX_VIOLATIONS`; their count per limit
never forgotten): :attr:`Record.violations`, :meth:`Record.limit_violations`,
:attr:`Record.violation_counts`. What the limit's inverters then held, enforcement included,
is :meth:`Record.limit_timeline`; the sums at the snapshot's instant :attr:`Record.limit_sums`.

Pure: no IO, no clock, no grpc.
"""

from __future__ import annotations

import collections
import enum
import math
from collections.abc import Iterable, Mapping

import attrs

DEFAULT_EVENTS = 300_000
"""Events the record keeps over all inverters (some 300 bytes each: about 100 MB when full).
A 10-minute soak commanding 10 inverters at 10 Hz makes some 12,000-18,000 per inverter
(commands, changes, expiries): 30,000 each leaves room to spare."""

MAX_VIOLATIONS = 10_000
"""Limit violations the record keeps (the oldest are forgotten; their counts are not)."""

MIN_EVENTS_PER_INVERTER = 256
"""However large the fleet, each inverter keeps at least this many (the last few minutes of a
busy one), so that a 1000-inverter benchmark still has a usable record."""


def ramped(start_w: float, target_w: float, rate_w_per_s: float, since: float, at: float) -> float:
    """The power applied at ``at`` by a ramp from ``start_w`` (at ``since``) toward ``target_w``.

    Linear at ``rate_w_per_s`` (positive, finite), then ``target_w`` from the instant
    :func:`ramp_end` gives on, exactly: the world cuts its SoC integration there, so the power
    is linear on either side of it.
    """
    if at >= ramp_end(start_w, target_w, rate_w_per_s, since):
        return target_w
    moved = rate_w_per_s * (at - since)
    # Never past the target, whatever the rounding of the product.
    if target_w > start_w:
        return min(start_w + moved, target_w)
    return max(start_w - moved, target_w)


def ramp_end(start_w: float, target_w: float, rate_w_per_s: float, since: float) -> float:
    """The instant a ramp from ``start_w`` at ``since`` reaches ``target_w``.

    ``since`` when it is there already.
    """
    if start_w == target_w:
        return since
    return since + abs(target_w - start_w) / rate_w_per_s


def _add(points: list[tuple[float, float]], point: tuple[float, float]) -> None:
    """Append a corner of an applied-power curve unless it repeats the last one."""
    if points[-1] != point:
        points.append(point)


class Outcome(enum.StrEnum):
    """What became of one command, as the simulator decided it."""

    APPLIED = "applied"
    """Accepted and applied, whatever the reply stream says afterwards (its ``final``)."""

    REJECTED = "rejected"
    """Refused (``code``: ``OUT_OF_RANGE``, ``INVALID_ARGUMENT``); nothing applied."""

    ERROR = "error"
    """The call ended with a gRPC status (``code``: an injected failure); nothing applied."""

    NOT_APPLIED = "not_applied"
    """Accepted, then not carried out (``final``: ``FAILED``, ``OVERRIDDEN`` or ``NONE``)."""

    CANCELLED = "cancelled"
    """The client cancelled it (or its deadline ran out) before it was answered: not applied."""


@attrs.frozen(kw_only=True)
class Command:
    """One set-power call to an inverter, once decided.

    Attributes:
        inverter_id: The inverter commanded.
        at: When its fate was decided: handled (after its latency), or cancelled.
        received_at: When the call arrived.
        power_w: The power asked for, W.
        lifetime_s: The request's lifetime, s; ``None`` when the request left it out.
        outcome: What became of it.
        code: The gRPC status code name, for :attr:`Outcome.REJECTED` and :attr:`Outcome.ERROR`.
        final: The ``final_reply`` fault it was answered under (v1alpha18/19, accepted only).
        until: When an applied setpoint expires (the simulator's clock), else ``None``.
        api: The version it came through (``"v1"``, ``"v1alpha18"``, ...).
    """

    inverter_id: int
    at: float
    received_at: float
    power_w: float
    lifetime_s: int | None
    outcome: Outcome
    code: str | None = None
    final: str | None = None
    until: float | None = None
    api: str = ""


@attrs.frozen(kw_only=True)
class Change:
    """A command changed the power an inverter holds.

    Attributes:
        inverter_id: The inverter.
        at: When.
        from_w: The power held before, W.
        to_w: The power held from now on, W.
        until: When the new setpoint expires.
        at_once: The applied power jumps to ``to_w`` at once, even on an inverter that ramps
            (its relays opened: a start, standby or stop).
    """

    inverter_id: int
    at: float
    from_w: float
    to_w: float
    until: float
    at_once: bool = False


@attrs.frozen(kw_only=True)
class Expiry:
    """A setpoint's lifetime ended: the inverter falls back to 0 W.

    Attributes:
        inverter_id: The inverter.
        at: The instant the lifetime ended.
        power_w: The power that expired, W (non-zero: a lapse).
    """

    inverter_id: int
    at: float
    power_w: float

    @property
    def lapse(self) -> bool:
        """Whether power was lost (a non-zero setpoint expired)."""
        return self.power_w != 0.0


Event = Command | Change | Expiry


@attrs.frozen(kw_only=True)
class LimitViolation:
    """A change of what an inverter holds would have taken a limit's sum beyond it.

    Attributes:
        limit: The limit's name.
        at: When (the simulator's clock).
        inverter_id: The inverter whose change it was.
        cause: What changed it: ``"command"`` (a set-power call), ``"expiry"`` (its setpoint's
            lifetime ended), ``"bounds"`` (added bounds moved it), ``"start"``, ``"standby"``,
            ``"stop"`` (switched; an acknowledged error stops it too).
        power_w: What that inverter would have held, W (a command's value).
        sum_w: The limit's sum with it, W.
        bound_w: The bound that sum is beyond, W: ``+max_charge_w`` or ``-max_discharge_w``.
    """

    limit: str
    at: float
    inverter_id: int
    cause: str
    power_w: float
    sum_w: float
    bound_w: float


@attrs.frozen(kw_only=True)
class Counts:
    """What happened to one inverter since the start; never forgotten.

    Attributes:
        commands: Commands per outcome (outcomes that never happened are absent).
        changes: Changes of the power held.
        expiries: Setpoints that expired, at 0 W or not.
        lapses: Non-zero setpoints that expired.
    """

    commands: Mapping[Outcome, int]
    changes: int
    expiries: int
    lapses: int


@attrs.frozen(kw_only=True)
class InverterLog:
    """One inverter's record.

    Attributes:
        inverter_id: The inverter.
        start: From this instant on the events are complete (the record's start, or the time of
            the last event forgotten).
        start_w: The power held at :attr:`start`, W.
        events: The events after :attr:`start`, in time order.
        counts: Everything since the record's start, forgotten events included.
        ramp_w_per_s: How fast its applied power follows what it holds, W/s; ``None``: at once.
        start_applied_w: The power applied at :attr:`start`, W.
    """

    inverter_id: int
    start: float
    start_w: float
    events: tuple[Event, ...]
    counts: Counts
    ramp_w_per_s: float | None = None
    start_applied_w: float = 0.0

    def applied(self, end: float) -> list[tuple[float, float]]:
        """The power applied from :attr:`start` to ``end``: the corners of a linear curve.

        ``(when, W)`` points, in time order, the first at :attr:`start` and the last at
        ``end``: between two points the applied power is linear; a jump (a change without a
        ramp, or ``at_once``) is two points at one instant. Without a ramp rate the applied
        power is the held power (:meth:`steps`), as steps.
        """
        rate = self.ramp_w_per_s
        points = [(self.start, self.start_applied_w)]
        applied, since, target = self.start_applied_w, self.start, self.start_w
        for event in self.events:
            match event:
                case Change():
                    new, at_once = event.to_w, event.at_once or rate is None
                case Expiry():
                    new, at_once = 0.0, rate is None
                case _:
                    continue
            if event.at > end:
                break
            applied = self._ramp_points(points, applied, target, since, event.at)
            if at_once:
                applied = new
                _add(points, (event.at, new))
            since, target = event.at, new
        self._ramp_points(points, applied, target, since, end)
        return points

    def _ramp_points(
        self,
        points: list[tuple[float, float]],
        applied: float,
        target: float,
        since: float,
        until: float,
    ) -> float:
        """Add the corners of the ramp from ``since`` to ``until``; the power applied then."""
        rate = self.ramp_w_per_s
        if rate is None:  # held steps: the last point is (since, applied) already
            _add(points, (until, applied))
            return applied
        reached = ramp_end(applied, target, rate, since)
        if since < reached < until:
            _add(points, (reached, target))
        now = ramped(applied, target, rate, since, until)
        _add(points, (until, now))
        return now

    def steps(self) -> list[tuple[float, float]]:
        """The power held as ``(from when, power)`` steps, from :attr:`start` on.

        Several events at one instant give one step: what holds after all of them.
        """
        steps = [(self.start, self.start_w)]
        for event in self.events:
            match event:
                case Change():
                    power = event.to_w
                case Expiry():
                    power = 0.0
                case _:
                    continue
            if event.at == steps[-1][0]:
                steps[-1] = (event.at, power)
            elif power != steps[-1][1]:
                steps.append((event.at, power))
        return steps


@attrs.frozen(kw_only=True)
class Record:
    """A snapshot of the record, up to :attr:`time`. Its helpers never change it.

    Attributes:
        time: The instant the snapshot describes (the simulator's clock).
        logs: Inverter id to its log.
        limits: Each limit's name to the inverters it binds (a grid limit: every one).
        violations: The limit violations, in time order (the last :data:`MAX_VIOLATIONS`).
        violation_counts: Each limit's name to its violations since the start (never
            forgotten; 0 for a limit never broken).
        limit_sums: Each limit's name to the sum its inverters held at :attr:`time`, W.
    """

    time: float
    logs: Mapping[int, InverterLog]
    limits: Mapping[str, tuple[int, ...]] = attrs.field(factory=dict)
    violations: tuple[LimitViolation, ...] = ()
    violation_counts: Mapping[str, int] = attrs.field(factory=dict)
    limit_sums: Mapping[str, float] = attrs.field(factory=dict)

    def limit_violations(
        self, limit: str | None = None, *, since: float = -math.inf
    ) -> list[LimitViolation]:
        """The violations of one limit (all by default) at or after ``since``, in time order.

        Raises:
            KeyError: No such limit.
        """
        if limit is not None and limit not in self.limits:
            raise KeyError(f"no limit {limit!r}")
        return [v for v in self.violations if (limit is None or v.limit == limit) and v.at >= since]

    def limit_timeline(
        self, limit: str, *, start: float, end: float | None = None
    ) -> list[tuple[float, float]]:
        """The sum a limit's inverters held from ``start`` to ``end``, as steps (:meth:`timeline`).

        What they held after the simulator enforced the limit: within it throughout.

        Raises:
            KeyError: No such limit.
            ValueError: As :meth:`timeline`.
        """
        try:
            members = self.limits[limit]
        except KeyError:
            raise KeyError(f"no limit {limit!r}") from None
        return self.timeline(members, start=start, end=end)

    def log(self, inverter_id: int) -> InverterLog:
        """One inverter's log.

        Raises:
            KeyError: No such inverter.
        """
        try:
            return self.logs[inverter_id]
        except KeyError:
            raise KeyError(f"no inverter {inverter_id}") from None

    def events(
        self, inverters: Iterable[int] | None = None, *, since: float = -math.inf
    ) -> list[Event]:
        """The events of some inverters (all by default) at or after ``since``, in time order."""
        chosen = self._chosen(inverters)
        found = [e for log in chosen for e in log.events if e.at >= since]
        found.sort(key=lambda e: e.at)  # stable: one inverter's order is kept
        return found

    def commands(
        self, inverters: Iterable[int] | None = None, *, since: float = -math.inf
    ) -> list[Command]:
        """The commands of some inverters (all by default) decided at or after ``since``."""
        return [e for e in self.events(inverters, since=since) if isinstance(e, Command)]

    def changes(
        self, inverters: Iterable[int] | None = None, *, since: float = -math.inf
    ) -> list[Change]:
        """The changes of the power held, of some inverters (all by default), since ``since``."""
        return [e for e in self.events(inverters, since=since) if isinstance(e, Change)]

    def expiries(
        self, inverters: Iterable[int] | None = None, *, since: float = -math.inf
    ) -> list[Expiry]:
        """The expiries, at 0 W or not, of some inverters (all by default), since ``since``."""
        return [e for e in self.events(inverters, since=since) if isinstance(e, Expiry)]

    def lapses(
        self, inverters: Iterable[int] | None = None, *, since: float = -math.inf
    ) -> list[Expiry]:
        """The expiries of non-zero setpoints, of some inverters (all by default), since ``since``.

        Only those still kept; :meth:`counts` has every one.
        """
        return [e for e in self.expiries(inverters, since=since) if e.lapse]

    def counts(self, inverter_id: int) -> Counts:
        """What happened to one inverter since the start (never forgotten)."""
        return self.log(inverter_id).counts

    def applied_at(self, inverter_id: int, at: float) -> float:
        """The power an inverter applied at ``at``, W: what it held, ramped at its rate.

        Without a ramp rate, :meth:`held_at`. Like it, the power before a SoC bound cuts it.

        Raises:
            KeyError: No such inverter.
            ValueError: ``at`` is before its log is complete, or after :attr:`time`.
        """
        log = self.log(inverter_id)
        self._check_window(log, at, at)
        return log.applied(at)[-1][1]

    def held_at(self, inverter_id: int, at: float) -> float:
        """The power an inverter held at ``at``, W (after everything that happened at ``at``).

        Raises:
            KeyError: No such inverter.
            ValueError: ``at`` is before its log is complete, or after :attr:`time`.
        """
        log = self.log(inverter_id)
        self._check_window(log, at, at)
        power = log.start_w
        for step_at, step_w in log.steps():
            if step_at > at:
                break
            power = step_w
        return power

    def timeline(
        self, inverters: Iterable[int], *, start: float, end: float | None = None
    ) -> list[tuple[float, float]]:
        """The total power some inverters held from ``start`` to ``end``, as steps.

        Costs O(changes × inverters): meant for tests, not for a loop.

        Returns:
            ``(from when, total W)`` pairs: the first at ``start``, then one at each instant in
            ``(start, end]`` where the total changes. ``end`` defaults to :attr:`time`.

        Raises:
            KeyError: No such inverter.
            ValueError: The window is not inside what every chosen log knows.
        """
        end = self.time if end is None else end
        chosen = self._chosen(inverters)
        held: dict[int, float] = {}
        changes: list[tuple[float, int, float]] = []  # (when, inverter, power)
        for log in chosen:
            self._check_window(log, start, end)
            held[log.inverter_id] = log.start_w
            for at, power in log.steps():
                if at <= start:
                    held[log.inverter_id] = power
                elif at <= end:
                    changes.append((at, log.inverter_id, power))
        changes.sort(key=lambda c: c[0])
        steps = [(start, math.fsum(held.values()))]
        i = 0
        while i < len(changes):
            at = changes[i][0]
            while i < len(changes) and changes[i][0] == at:  # one instant, one step
                held[changes[i][1]] = changes[i][2]
                i += 1
            total = math.fsum(held.values())  # exact, whatever the order of the changes
            if total != steps[-1][1]:
                steps.append((at, total))
        return steps

    def max_total(
        self, inverters: Iterable[int], *, start: float, end: float | None = None
    ) -> float:
        """The largest total power some inverters held at once between ``start`` and ``end``.

        For "never more than asked" when charging; :meth:`min_total` when discharging.
        """
        return max(total for _, total in self.timeline(inverters, start=start, end=end))

    def min_total(
        self, inverters: Iterable[int], *, start: float, end: float | None = None
    ) -> float:
        """The smallest total power some inverters held at once between ``start`` and ``end``."""
        return min(total for _, total in self.timeline(inverters, start=start, end=end))

    def _chosen(self, inverters: Iterable[int] | None) -> list[InverterLog]:
        if inverters is None:
            return list(self.logs.values())
        return [self.log(inverter_id) for inverter_id in inverters]

    def _check_window(self, log: InverterLog, start: float, end: float) -> None:
        if start < log.start:
            raise ValueError(
                f"inverter {log.inverter_id}'s record is complete only from {log.start} "
                f"(older events were forgotten), asked from {start}"
            )
        if end > self.time:
            raise ValueError(f"the record describes up to {self.time}, asked up to {end}")


class _Log:
    """One inverter's live log (the :class:`Recorder`'s, mutable)."""

    __slots__ = (
        "changes",
        "commands",
        "events",
        "expiries",
        "held_w",
        "lapses",
        "maxlen",
        "ramp_w_per_s",
        "start",
        "start_applied_w",
        "start_w",
    )

    def __init__(self, *, start: float, maxlen: int, ramp_w_per_s: float | None = None) -> None:
        self.maxlen = maxlen
        self.ramp_w_per_s = ramp_w_per_s
        self.events: collections.deque[Event] = collections.deque()
        self.start = start
        self.start_w = 0.0
        self.start_applied_w = 0.0
        self.held_w = 0.0
        self.commands: collections.Counter[Outcome] = collections.Counter()
        self.changes = 0
        self.expiries = 0
        self.lapses = 0

    def append(self, event: Event) -> None:
        if len(self.events) >= self.maxlen:
            old = self.events.popleft()  # folded into the base: the held power stays known
            if self.ramp_w_per_s is not None:
                # The applied power too: ramped from the base to the event's instant.
                self.start_applied_w = ramped(
                    self.start_applied_w, self.start_w, self.ramp_w_per_s, self.start, old.at
                )
                if isinstance(old, Change) and old.at_once:
                    self.start_applied_w = old.to_w
            self.start = old.at
            if isinstance(old, Change):
                self.start_w = old.to_w
                if self.ramp_w_per_s is None:
                    self.start_applied_w = old.to_w
            elif isinstance(old, Expiry):
                self.start_w = 0.0
                if self.ramp_w_per_s is None:
                    self.start_applied_w = 0.0
        self.events.append(event)


class Recorder:
    """The live record the world writes (see the module docstring).

    Args:
        inverter_ids: The inverters recorded; commands to anything else are not.
        now: The record's start.
        maxlen: Events kept per inverter; by default :data:`DEFAULT_EVENTS` shared out, and at
            least :data:`MIN_EVENTS_PER_INVERTER`.
        ramps: Inverter id to its ramp rate, W/s, for those that ramp (see the module).
        limits: Each limit's name to the inverters it binds.
    """

    def __init__(
        self,
        inverter_ids: Iterable[int],
        *,
        now: float,
        maxlen: int | None = None,
        ramps: Mapping[int, float] | None = None,
        limits: Mapping[str, tuple[int, ...]] | None = None,
    ):
        ids = tuple(inverter_ids)
        ramps = ramps or {}
        if maxlen is None:
            maxlen = max(MIN_EVENTS_PER_INVERTER, DEFAULT_EVENTS // max(1, len(ids)))
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self._logs = {
            iid: _Log(start=now, maxlen=maxlen, ramp_w_per_s=ramps.get(iid)) for iid in ids
        }
        self._limits = dict(limits or {})
        self._violations: collections.deque[LimitViolation] = collections.deque(
            maxlen=MAX_VIOLATIONS
        )
        self._violation_counts = dict.fromkeys(self._limits, 0)

    def violation(self, violation: LimitViolation) -> None:
        """A change would have broken a limit (see the module)."""
        self._violations.append(violation)
        self._violation_counts[violation.limit] = self._violation_counts.get(violation.limit, 0) + 1

    def command(self, command: Command) -> None:
        """Add a decided command (ignored when not to an inverter)."""
        log = self._logs.get(command.inverter_id)
        if log is not None:
            log.commands[command.outcome] += 1
            log.append(command)

    def change(
        self, inverter_id: int, *, at: float, to_w: float, until: float, at_once: bool = False
    ) -> None:
        """An applied command set an inverter's power (recorded if it differs).

        ``at_once``: the applied power jumps to ``to_w`` (recorded even when the held power
        does not change: an inverter ramping down after an expiry is cut off).
        """
        log = self._logs[inverter_id]
        if to_w != log.held_w or at_once:
            log.changes += 1
            log.append(
                Change(
                    inverter_id=inverter_id,
                    at=at,
                    from_w=log.held_w,
                    to_w=to_w,
                    until=until,
                    at_once=at_once,
                )
            )
            log.held_w = to_w

    def expiry(self, inverter_id: int, *, at: float, power_w: float) -> None:
        """A setpoint's lifetime ended at ``at``."""
        log = self._logs[inverter_id]
        log.expiries += 1
        if power_w != 0.0:
            log.lapses += 1
        log.append(Expiry(inverter_id=inverter_id, at=at, power_w=power_w))
        log.held_w = 0.0

    def snapshot(self, now: float, *, limit_sums: Mapping[str, float] | None = None) -> Record:
        """A frozen copy, describing up to ``now`` (``limit_sums``: the limits' sums then)."""
        return Record(
            time=now,
            limits=dict(self._limits),
            violations=tuple(self._violations),
            violation_counts=dict(self._violation_counts),
            limit_sums=dict(limit_sums or {}),
            logs={
                iid: InverterLog(
                    inverter_id=iid,
                    start=log.start,
                    start_w=log.start_w,
                    events=tuple(log.events),
                    counts=Counts(
                        commands=dict(log.commands),
                        changes=log.changes,
                        expiries=log.expiries,
                        lapses=log.lapses,
                    ),
                    ramp_w_per_s=log.ramp_w_per_s,
                    start_applied_w=log.start_applied_w,
                )
                for iid, log in self._logs.items()
            },
        )
