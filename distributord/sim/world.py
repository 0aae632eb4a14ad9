"""The simulator's physics: state of charge, power bounds, setpoints and their lifetimes.

Theory of operation
-------------------
:class:`World` holds the mutable state (each battery's SoC, each inverter's setpoint and when
it expires) and changes it only through :meth:`World.advance` and :meth:`World.command`, both of
which take ``now`` (monotonic seconds) as an argument. Nothing here reads a clock, so tests can
assert exact numbers.

* **Power flows from inverter setpoints**, in any N:M group (``sim.scenario``). A battery's
  requested power is the sum of the shares of its inverters' applied power (one string on a
  shared DC bus takes what each of its inverters puts in), limited to the battery's power
  limit. It is *held at 0* when it would push the SoC past the bound in that direction (or
  while the battery is stopped). An inverter with several batteries splits what it applies
  among them **in proportion to their capacities** (a fixed fraction each, 1 for a single
  battery): batteries at one SoC then stay at one SoC, as parallel strings at one voltage do.
  A battery that cannot take its share (its power limit, a SoC bound) takes what it can and
  the rest is *not carried*: it does not flow to the inverter's other batteries. That is the
  shortfall, as for a single battery: an inverter's AC power (:meth:`World.inverter_power`,
  its telemetry) is the sum of its shares that its batteries actually take (a battery that
  takes less than it is asked takes from each of its inverters in proportion), so power is
  conserved, and :meth:`World.applied_power` minus it is what was not carried. A command is
  judged against what its batteries take together (the sum of their bounds; one battery:
  its own), so a group command the daemon may send is not refused for one full battery.
* **SoC integrates power exactly.** Between two instants power is piecewise constant: it
  changes only when a setpoint expires (a known instant) or when the SoC reaches a bound (where
  it is clamped exactly to the bound, after which the power is held at 0). :meth:`World.advance`
  therefore cuts each battery's interval at its inverters' expiry instants and is exact however
  rarely it is called: ``dSoC/dt = P / capacity_wh * 100 / 3600 * speed`` % per second.
* **Ramping inverters** (``ramp_w_per_s`` in the scenario; ``spec/plant.md``, "Ramp rates"):
  such an inverter's *applied* power moves from what it applies toward its setpoint at that
  rate, linearly (:func:`~distributord.sim.record.ramped`), and toward 0 the same way once the
  setpoint expires. Everything that reads applied power (the inverter's AC power, its
  battery's DC power, the SoC integration, the meters) sees the ramped value. Its state is an
  anchor: the power applied at one instant (:attr:`_Inverter.applied_w` at ``applied_at``),
  moved whenever its setpoint changes or expires; the applied power at any later instant
  follows from it, the setpoint and the expiry. The SoC stays exact: :meth:`World._sync`
  cuts a ramping battery's interval also where a ramp reaches its target and where the
  requested power crosses 0 or the battery's limit, so that on each piece the power is linear
  with one sign, and integrates it with the trapezoid (exact for a linear power); a SoC bound
  reached inside a piece is exact too, as the power cannot change sign before the piece ends.
  A start, standby or stop opens the inverter's relays: its power is 0 at once (recorded as
  a change ``at_once``). Without a ramp rate nothing of this runs: the power steps as above.
  :meth:`World.applied_power` and :meth:`World.settles_at` give the ramp now, the record
  (:meth:`~distributord.sim.record.Record.applied_at`) over time.
* **Bounds shrink at the SoC bounds.** A battery allows ``[-limit, +limit]``; the upper end is 0
  once ``soc >= soc_upper`` and the lower end 0 once ``soc <= soc_lower``. An inverter allows
  ``[[-limit, -excl], [excl, limit]]`` (``[[-limit, limit]]`` without an exclusion zone).
* **Commands are checked in the API's order**: unknown component, not an inverter, lifetime,
  then power against the inverter's ranges and its batteries' current bounds (0 W is always
  allowed). An accepted setpoint holds for ``lifetime × lifetime_scale`` seconds of ``now``;
  ``lifetime_scale`` is a test knob that makes lifetimes expire quickly. :meth:`World.check`
  judges a command without applying it (one accepted, then not carried out).
* **Everything that changes what an inverter holds is recorded** in :attr:`World.record` (a
  :class:`~distributord.sim.record.Recorder`), on the world's own clock: each command once its
  fate is known (:meth:`World.command`, and :meth:`World.record_command` for the fates the
  server decides: cancelled, failed by a fault), each change of a setpoint, and each expiry at
  the instant the lifetime ended. Each is written with the world advanced to its instant, so
  an inverter's events are in time order.
* **Limits** (a scenario's ``[[limits]]``: a feeder, a fuse, the grid connection point) bind
  the sum of the power a set of inverters *holds* (their setpoints while they hold, what the
  record's timelines show; a ramp moves toward it at its inverter's rate) to
  ``[-max_discharge_w, +max_charge_w]``, as a site controller does. PV inverters are left
  out: their production is not commanded (a limit over one sums its other inverters). Every
  change of what a bound inverter holds (a command, an expiry, added bounds, a start,
  standby or stop) is judged first: each limit it would take beyond a bound (by more than
  :data:`LIMIT_TOLERANCE_W`) is recorded as a
  :class:`~distributord.sim.record.LimitViolation` with what was asked. Then the limit is
  enforced: a command is **curtailed** (accepted, and held at the room the limit's other
  inverters leave it in that direction, never past 0 W nor above what was asked: recorded as
  the change it makes); what that cannot fix (a change that is not a command, or others that
  carried more than the limit beside it) **scales down in proportion** the power of the
  limit's inverters on the side beyond it, each recorded as a change, nested limits in turn.
  So the held sums stay within every limit (:meth:`World.limit_sums`), and the record tells
  what the commands would have done.
* **Reactive power is commanded apart** (:meth:`World.command_reactive`): a setpoint within
  the inverter's reactive limit (``[-limit, +limit]`` var; 0 var always) holds for its
  lifetime, as an active one does, then reverts to 0 var; it moves no energy, so it touches
  neither the batteries nor :attr:`World.record` (which is the active power's). A meter and
  a line report the reactive power of the inverters behind them.
* **An apparent-power limit** ``S`` (the scenario's ``apparent_limit_va``) keeps
  ``P² + Q² <= S²``: a command whose own value exceeds ``S`` (``|P| > S``, ``|Q| > S``) is
  refused ``OUT_OF_RANGE``, as one outside its ranges is; when an accepted pair exceeds it,
  the inverter curtails its reactive power to ``√(S² − P²)`` (active power first, as most
  inverters do) and reports that (:meth:`World.reactive_power`), the setpoint itself kept:
  when the active power falls, the reactive power comes back. ``[0, S]`` is reported as
  its apparent-power bounds.
* **The rest of a reading is physics of a few numbers**: the AC frequency and phase voltage
  are the scenario's; a battery's DC voltage falls linearly with its SoC from its full
  voltage to 90 % of it; a component carrying power is warmer than the ambient temperature,
  by up to :data:`HEATING_C` at its power limit. The per-phase samples are the adapters'
  (``api.common``): a reading carries only these quantities, so that a tick stays cheap.
* **Added bounds restrict an inverter's own** (``AugmentElectricalComponentBounds``, v1
  ``AddComponentBounds``; :meth:`World.add_bounds`). A client adds inclusion bounds for an
  inverter's AC active power: its ranges, overlapping ones merged into one (the proto's
  ``[[0, 10], [5, 15], [20, 30]]`` → ``[[0, 15], [20, 30]]``), are one *contribution*, kept
  under the request's token (a later request with the same token replaces it at once) or
  under none (each request its own), until its lifetime (5..900 s, default 5 s, ×
  ``lifetime_scale``) ends. The inverter then allows what its own ranges **and every
  contribution** allow (an intersection: a client narrows what a component does, it never
  widens its hardware's limits), and 0 W always. Those ranges are the ones its telemetry
  reports and its commands are judged against; a setpoint held outside them is brought to
  the nearest allowed power at once ("the system will try to bring it back within the
  bounds"), and stays there when the bounds go. Contributions expire in :meth:`World.advance`
  like setpoints; clearing (:meth:`World.clear_bounds`) removes one at once.
* **Readings apply telemetry faults** (NaN metrics, missing bounds, error state), so what a
  component reports is decided here, and testable, while the wire encoding is the adapters'.
  A pass-through component (breaker, precharger, ...), and an inverter's own meter, report
  the power its inverter passes. A battery that works reports ``RELAY_CLOSED`` among its
  states (it is connected), as a real battery does and the Frequenz SDK requires.
* **PV produces on its own.** A PV inverter's power is its PV's production, ``-pv_power_w``,
  or less where a setpoint limits it (``max(setpoint, -pv_power_w)`` while one holds); it
  allows ``[-limit, 0]`` and refuses to consume. A hybrid inverter's power is its battery's
  minus its PV's production. So the site meter sees the PV whether anyone commands it or not.

* **Inverters and batteries start, stand by and stop** (``StartElectricalComponent``,
  ``PutElectricalComponentInStandby``, ``StopElectricalComponent``, v1 ``StartComponent`` ...;
  :meth:`World.control`), as the proto describes, in a simple :class:`Mode`: an inverter that
  starts, stands by or stops drops its setpoints (0 W, recorded as a change, and 0 var); in
  standby it reports ``STANDBY`` and the next command brings it back (as the proto says a
  set-power call may); stopped it reports ``OFF`` with bounds ``[0, 0]`` and refuses every
  command, active or reactive (``FAILED_PRECONDITION``), until it is started. Standby needs
  a running inverter (its relays closed), else ``FAILED_PRECONDITION``. A battery stops only
  at 0 W (else
  ``FAILED_PRECONDITION``): then its DC relay is open (``OFF``, ``RELAY_OPEN``, bounds
  ``[0, 0]``: it takes no power) until it is started. A battery has no standby, and the
  simulator switches no other component (``INVALID_ARGUMENT``). Acknowledging an error
  (:meth:`World.acknowledge`) brings an inverter or battery that had one to stopped.

Pure: no IO, no clock, no grpc.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Sequence

import attrs

from distributord.core.bounds import Range
from distributord.core.model import StateCode
from distributord.core.topology import InverterType
from distributord.sim.record import (
    Command,
    LimitViolation,
    Outcome,
    Record,
    Recorder,
    ramp_end,
    ramped,
)
from distributord.sim.scenario import (
    GRID_ID,
    METER_ID,
    BatterySpec,
    Faults,
    InverterSpec,
    LimitSpec,
    Scenario,
)

DEFAULT_LIFETIME_S = 60
"""The API's default ``request_lifetime`` when a request leaves it out."""

MIN_LIFETIME_S = 10
"""The shortest ``request_lifetime`` the API accepts."""

MAX_LIFETIME_S = 900
"""The longest ``request_lifetime`` the API accepts."""

DEFAULT_BOUNDS_LIFETIME_S = 5
"""How long added bounds hold when the request does not say (the proto's default)."""

MIN_BOUNDS_LIFETIME_S = 5
"""The shortest lifetime of added bounds the API accepts."""

MAX_BOUNDS_LIFETIME_S = 900
"""The longest lifetime of added bounds the API accepts (15 minutes)."""

MAX_BOUNDS_RANGES = 64
"""Ranges one request may add: more is refused (a client's mistake, not a site's bounds)."""

MAX_CONTRIBUTIONS = 256
"""Added bounds one inverter holds at once: more is refused until some expire or are cleared.
Every reading of the inverter intersects them all, so a client adding bounds in a loop
without a token must not be able to slow the simulator down without end."""

BOUNDED_METRIC = "ac_power"
"""The one metric whose bounds a client can add: an inverter's AC active power."""

_PCT_PER_WS = 100.0 / 3600.0
"""SoC % per second for 1 W into 1 Wh of capacity."""

HEATING_C = 10.0
"""How much warmer than the ambient a battery or inverter is at its power limit, °C (in
proportion below it): enough to see in a plot, far from any thermal limit."""

LIMIT_TOLERANCE_W = 1e-3
"""A limit's sum may exceed it by this much (a milliwatt) before it counts as broken: shares
that add up to the limit in a client's arithmetic may add up a few ulps above it in ours."""

MAX_ENFORCE_ROUNDS = 64
"""Nested limits are enforced in turn; after this many rounds the side still beyond a limit
is cut to 0 W (which every limit allows), so enforcement always ends."""

EMPTY_VOLTAGE_FRACTION = 0.9
"""A battery's DC voltage when empty, as a fraction of its voltage when full."""


@attrs.frozen(kw_only=True)
class Accepted:
    """A command was accepted.

    Attributes:
        lifetime_s: The lifetime granted (the request's, or the default), unscaled.
        until: When the setpoint expires (``now`` + lifetime × ``lifetime_scale``).
    """

    lifetime_s: int
    until: float


@attrs.frozen(kw_only=True)
class Rejected:
    """A command was refused.

    Attributes:
        code: The gRPC status code's name (``"OUT_OF_RANGE"``, ...).
        details: Why, for the error's details.
    """

    code: str
    details: str


@attrs.frozen(kw_only=True)
class BatteryReading:
    """What a battery reports, faults applied (``None`` leaves bounds out).

    Attributes:
        soc_pct: State of charge, %.
        soc_bounds: ``(lower, upper)`` SoC bounds, %.
        capacity_wh: Capacity, Wh.
        power_w: DC power, W (the applied power).
        power_ranges: Allowed power ranges, W.
        states: State codes.
        errors: Error code names.
        dc_voltage_v: DC voltage, V.
        temperature_c: Temperature, °C.
    """

    soc_pct: float
    soc_bounds: Range | None
    capacity_wh: float
    power_w: float
    power_ranges: tuple[Range, ...] | None
    states: tuple[StateCode, ...]
    errors: tuple[str, ...]
    dc_voltage_v: float | None = None
    temperature_c: float | None = None


@attrs.frozen(kw_only=True)
class InverterReading:
    """What an inverter (or the meter, or the grid) reports, faults applied.

    Attributes:
        power_w: AC active power, W (the applied power).
        power_ranges: Allowed power ranges, W; ``None`` leaves them out.
        states: State codes.
        errors: Error code names.
        reactive_power_var: AC reactive power, var.
        reactive_ranges: Allowed reactive power ranges, var; ``None`` leaves them out.
        apparent_ranges: Allowed apparent power, VA (``[0, S]``); ``None`` leaves it out.
        frequency_hz: AC frequency, Hz.
        voltage_v: Each phase's voltage to neutral, V.
        temperature_c: An inverter's temperature, °C (None for a meter or a line).
    """

    power_w: float
    power_ranges: tuple[Range, ...] | None
    states: tuple[StateCode, ...]
    errors: tuple[str, ...]
    reactive_power_var: float | None = None
    reactive_ranges: tuple[Range, ...] | None = None
    apparent_ranges: tuple[Range, ...] | None = None
    frequency_hz: float | None = None
    voltage_v: float | None = None
    temperature_c: float | None = None


@attrs.frozen(kw_only=True)
class Contribution:
    """Bounds a client added to an inverter's AC active power.

    Attributes:
        ranges: The allowed ranges, merged, ascending (``±inf`` for an open end).
        until: When they expire (the world's clock).
    """

    ranges: tuple[tuple[float, float], ...]
    until: float


class Mode(enum.StrEnum):
    """How far an inverter or a battery is switched on (see the module docstring)."""

    RUNNING = "running"
    """Relays closed: it takes setpoints (an inverter) or power (a battery)."""
    STANDBY = "standby"
    """An inverter's AC relays open, at 0 W; a start or the next command brings it back."""
    STOPPED = "stopped"
    """DC relays open (cold standby): it takes nothing until it is started."""


_RUNNING, _STOPPED = Mode.RUNNING, Mode.STOPPED  # plain globals: the enum's lookups are slow

CONTROLS = frozenset({"start", "standby", "stop"})
"""What :meth:`World.control` does: the proto's start, put in standby and stop."""


@attrs.define
class _Battery:
    spec: BatterySpec
    soc: float
    time: float
    """The instant :attr:`soc` describes (at most :attr:`World.time`; see ``World._sync``)."""
    inverters: list[_Inverter] = attrs.field(factory=list)
    mode: Mode = Mode.RUNNING
    ramped: bool = False
    """Whether one of its inverters ramps (its SoC is integrated piece by piece)."""


@attrs.define
class _Inverter:
    spec: InverterSpec
    batteries: list[_Battery] = attrs.field(factory=list)
    weights: dict[int, float] = attrs.field(factory=dict)
    """Battery id to the fraction of the inverter's power it gets (by capacity; sum 1)."""
    limits: list[_Limit] = attrs.field(factory=list)
    """The limits that bind it (none for a PV inverter: see the module docstring)."""
    setpoint_w: float = 0.0
    until: float = math.inf
    reactive_var: float = 0.0
    reactive_until: float = math.inf
    mode: Mode = Mode.RUNNING
    applied_w: float = 0.0
    """A ramping inverter's applied power at :attr:`applied_at` (its anchor), W."""
    applied_at: float = -math.inf
    """Since then, the applied power ramps toward the setpoint, and toward 0 after ``until``."""


@attrs.define(eq=False)
class _Limit:
    spec: LimitSpec
    members: list[_Inverter]
    """The inverters it binds (its PV inverters left out: see the module docstring)."""


class World:
    """The simulated components' state, advanced in time by the caller.

    Args:
        scenario: What is simulated.
        now: The current time (monotonic seconds).
        lifetime_scale: A setpoint holds for its lifetime × this, in seconds of ``now``.
        record_maxlen: Events :attr:`record` keeps per inverter (``None``: its default).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        now: float,
        lifetime_scale: float = 1.0,
        record_maxlen: int | None = None,
    ) -> None:
        if not 0.0 < lifetime_scale < math.inf:
            raise ValueError(f"lifetime_scale must be positive and finite, got {lifetime_scale}")
        self.record = Recorder(
            (i.id for i in scenario.inverters),
            now=now,
            maxlen=record_maxlen,
            ramps={i.id: i.ramp_w_per_s for i in scenario.inverters if i.ramp_w_per_s is not None},
            limits=scenario.limit_members(),
        )
        """What every inverter was commanded and held (read it with ``record.snapshot``)."""
        self.speed = scenario.speed
        self.frequency_hz = scenario.ac_frequency_hz
        self.voltage_v = scenario.ac_voltage_v
        self.ambient_c = scenario.ambient_temperature_c
        self.lifetime_scale = lifetime_scale
        self.time = now
        """The instant the state describes."""
        self._batteries = {
            b.id: _Battery(spec=b, soc=b.soc_pct, time=now) for b in scenario.batteries
        }
        self._inverters = {i.id: _Inverter(spec=i, applied_at=now) for i in scenario.inverters}
        self._others = {
            GRID_ID,
            METER_ID,
            *scenario.meters(),
            *(cid for cid, _, _ in scenario.pass_through()),
        }
        for inverter in self._inverters.values():
            for battery_id in inverter.spec.batteries:
                battery = self._batteries[battery_id]
                inverter.batteries.append(battery)
                battery.inverters.append(inverter)
                if inverter.spec.ramp_w_per_s is not None:
                    battery.ramped = True
            inverter.weights = _weights(inverter.batteries)
        members = scenario.limit_members()
        self._limits = {
            limit.name: _Limit(
                spec=limit,
                members=[
                    self._inverters[iid]
                    for iid in members[limit.name]
                    if self._inverters[iid].spec.type is not InverterType.PV
                ],
            )
            for limit in scenario.limits
        }
        for limit in self._limits.values():
            for member in limit.members:
                member.limits.append(limit)
        # Inverters with a setpoint: only their batteries can change. Keeps advancing an idle
        # fleet cheap (a stream opens with an advance; a daemon opens 2000 at once).
        self._holding: dict[int, _Inverter] = {}
        self._next_expiry = math.inf  # the earliest ``until`` in _holding
        # Ramping inverters once commanded: they may carry power after their setpoint ends.
        self._ramping: dict[int, _Inverter] = {}
        # Inverters with PV that produces: they carry power without any setpoint.
        self._producing = [i for i in self._inverters.values() if i.spec.pv_power_w > 0]
        self._producer_ids = frozenset(i.spec.id for i in self._producing)
        # Inverters with a reactive setpoint that may still hold (dropped when read expired).
        self._reactive: dict[int, _Inverter] = {}
        # Added bounds: inverter id -> token (an int for a request without one) -> bounds.
        self._added: dict[int, dict[str | int, Contribution]] = {}
        self._anonymous = 0  # the last key given to a contribution without a token
        self._next_bounds_expiry = math.inf  # the earliest ``until`` in _added

    # --- time -------------------------------------------------------------------------------

    def advance(self, now: float) -> list[int]:
        """Move the state to ``now``: integrate SoC, expire setpoints.

        A ``now`` before :attr:`time` is ignored (the state never goes back). Cheap however often
        it is called: a battery is integrated only when it is read or its power is about to
        change (see :meth:`_sync`), so a fan-out of n commands costs O(n), not O(n²).

        Returns:
            The inverters whose setpoint expired on the way.
        """
        if now <= self.time:
            return []
        self.time = now
        if now >= self._next_bounds_expiry:
            self._expire_bounds(now)
        if now < self._next_expiry:
            return []
        expired = [iid for iid, inverter in self._holding.items() if inverter.until <= now]
        # In time order, each at its own instant: a limit enforced after one expiry changes
        # other inverters' setpoints then, not now.
        for iid in sorted(expired, key=lambda iid: self._holding[iid].until):
            inverter = self._holding.pop(iid)
            at = self.time = inverter.until
            for battery in inverter.batteries:
                self._sync(battery)  # up to the expiry, before the setpoint goes
            self.record.expiry(iid, at=at, power_w=inverter.setpoint_w)
            _anchor(inverter, at)
            inverter.setpoint_w, inverter.until = 0.0, math.inf
            if inverter.limits:
                self._after_change(inverter, "expiry", at)
        self.time = now
        self._next_expiry = self.next_expiry()
        return expired

    def _sync(self, battery: _Battery) -> _Battery:
        """Integrate one battery's SoC from its own last instant up to :attr:`time`.

        Exact: the interval is cut at its inverters' expiry instants, where its power changes.
        Every read of a battery, and every change of an inverter's setpoint, syncs first.
        """
        start, now = battery.time, self.time
        if start < now and battery.ramped:
            self._sync_ramped(battery, start, now)
            battery.time = now
        elif start < now:
            cuts = sorted({i.until for i in battery.inverters if start < i.until < now})
            t = start
            for cut in (*cuts, now):
                self._integrate(battery, t, cut)
                t = cut
            battery.time = now
        return battery

    def _sync_ramped(self, battery: _Battery, start: float, now: float) -> None:
        """:meth:`_sync` for a battery one of whose inverters ramps (see the module docstring).

        Cut at every instant its power stops being linear (expiries, ramps reaching their
        targets) and, within each such piece, where the requested power crosses 0 or the
        battery's limit; each piece is then integrated with the trapezoid.
        """
        cuts = sorted(
            {
                cut
                for inverter in battery.inverters
                for cut in _corners(inverter)
                if start < cut < now
            }
        )
        t = start
        for cut in (*cuts, now):
            self._integrate_linear(battery, t, cut)
            t = cut

    def _integrate_linear(self, battery: _Battery, start: float, end: float) -> None:
        """Integrate a piece on which each inverter's share is linear (or constant)."""
        if battery.mode is _STOPPED or end <= start:
            return
        # The requested power at both ends, from inside the piece: a share that steps at
        # ``end`` (an expiry without a ramp) counts with its value before the step.
        first = last = 0.0
        for inverter in battery.inverters:
            share = self._share(inverter, battery, start)
            first += share
            ramps = inverter.spec.ramp_w_per_s is not None
            last += self._share(inverter, battery, end) if ramps else share
        limit = battery.spec.power_limit_w
        # Where the requested power crosses -limit, 0 or +limit inside the piece.
        inner = sorted(
            start + (level - first) / (last - first) * (end - start)
            for level in (-limit, 0.0, limit)
            if min(first, last) < level < max(first, last)
        )
        points = [(start, first)]
        points += [(t, first + (last - first) * (t - start) / (end - start)) for t in inner]
        points.append((end, last))
        spec = battery.spec
        for (t0, p0), (t1, p1) in itertools.pairwise(points):
            mean = (min(max(p0, -limit), limit) + min(max(p1, -limit), limit)) / 2.0
            if mean > 0.0 and battery.soc < spec.soc_upper_pct:
                soc = battery.soc + mean / spec.capacity_wh * _PCT_PER_WS * self.speed * (t1 - t0)
                battery.soc = min(soc, spec.soc_upper_pct)
            elif mean < 0.0 and battery.soc > spec.soc_lower_pct:
                soc = battery.soc + mean / spec.capacity_wh * _PCT_PER_WS * self.speed * (t1 - t0)
                battery.soc = max(soc, spec.soc_lower_pct)

    def next_expiry(self) -> float:
        """The earliest instant a setpoint expires (``inf`` when none will)."""
        return min((i.until for i in self._holding.values()), default=math.inf)

    def _integrate(self, battery: _Battery, start: float, end: float) -> None:
        power = self._battery_power(battery, at=start)
        if power == 0.0:
            return
        spec = battery.spec
        soc = battery.soc + power / spec.capacity_wh * _PCT_PER_WS * self.speed * (end - start)
        # Reaching a bound stops the flow there (the power is held at 0 from then on).
        battery.soc = min(soc, spec.soc_upper_pct) if power > 0 else max(soc, spec.soc_lower_pct)

    # --- power ------------------------------------------------------------------------------

    @staticmethod
    def _share(inverter: _Inverter, battery: _Battery, at: float) -> float:
        """The part of what an inverter applies at ``at`` that goes to one of its batteries."""
        if _is_pv(inverter):
            return 0.0
        if inverter.spec.ramp_w_per_s is not None:
            return _applied(inverter, at) * inverter.weights[battery.spec.id]
        if inverter.until <= at:
            return 0.0
        return inverter.setpoint_w * inverter.weights[battery.spec.id]

    def _requested(self, battery: _Battery, at: float) -> float:
        return sum(self._share(inverter, battery, at) for inverter in battery.inverters)

    def _battery_power(self, battery: _Battery, at: float) -> float:
        if battery.mode is _STOPPED:  # its DC relay is open
            return 0.0
        spec = battery.spec
        limit = spec.power_limit_w
        power = min(max(self._requested(battery, at), -limit), limit)
        if (power > 0 and battery.soc >= spec.soc_upper_pct) or (
            power < 0 and battery.soc <= spec.soc_lower_pct
        ):
            return 0.0
        return power

    def battery_power(self, battery_id: int) -> float:
        """The power a battery takes at :attr:`time`, W."""
        return self._battery_power(self._sync(self._batteries[battery_id]), at=self.time)

    def inverter_power(self, inverter_id: int, *, with_pv: bool = True) -> float:
        """The power an inverter passes at :attr:`time`, W (0 when none or expired).

        PV production is negative: a PV inverter's power is its production (limited by a
        setpoint that holds), a hybrid inverter's its battery's minus its production
        (``with_pv=False``: its battery's only, the part its setpoint governs).
        """
        inverter = self._inverters[inverter_id]
        if inverter.mode is not _RUNNING:  # its relays are open
            return 0.0
        produced = inverter.spec.pv_power_w
        if _is_pv(inverter):
            holds = self.time < inverter.until < math.inf  # a setpoint given and not expired
            return max(inverter.setpoint_w, -produced) if holds else -produced
        total = -produced if with_pv else 0.0
        for battery in inverter.batteries:
            self._sync(battery)
            share = self._share(inverter, battery, self.time)
            requested = self._requested(battery, self.time)
            if requested != 0.0:
                # The battery takes each inverter's share in the proportion it accepts in all.
                total += share * self._battery_power(battery, at=self.time) / requested
        return total

    def site_power(self) -> float:
        """The sum of all inverters' power, W (what the meter measures)."""
        # No set is built for a fleet without PV: this runs for every meter on every tick.
        producers = self._producer_ids
        carrying = self._holding.keys() | producers if producers else self._holding
        if self._ramping:
            carrying = carrying | self._ramping.keys()
        return sum(self.inverter_power(inverter_id) for inverter_id in carrying)

    def applied_power(self, inverter_id: int) -> float:
        """The power an inverter applies at :attr:`time`, W, before its batteries' limits.

        For an inverter that ramps, its setpoint ramped at its rate (the record's
        :meth:`~distributord.sim.record.Record.applied_at` at this instant); for one that does
        not, its setpoint while it holds, else 0. What its batteries take of it (a SoC bound,
        a battery's limit) is :meth:`inverter_power`.
        """
        inverter = self._inverters[inverter_id]
        if inverter.spec.ramp_w_per_s is not None:
            return _applied(inverter, self.time)
        return inverter.setpoint_w if inverter.until > self.time else 0.0

    def settles_at(self, inverter_id: int) -> float:
        """When the power an inverter applies reaches what it holds now (:attr:`time` if it has).

        A setpoint that expires first ends its ramp early; this is when the ramp toward it
        would end.
        """
        inverter = self._inverters[inverter_id]
        rate = inverter.spec.ramp_w_per_s
        if rate is None:
            return self.time
        target = inverter.setpoint_w if inverter.until > self.time else 0.0
        return ramp_end(_applied(inverter, self.time), target, rate, self.time)

    def soc(self, battery_id: int) -> float:
        """A battery's SoC at :attr:`time`, %."""
        return self._sync(self._batteries[battery_id]).soc

    def battery_bounds(self, battery_id: int) -> tuple[float, float]:
        """``(lower, upper)`` power a battery allows at :attr:`time`, W."""
        battery = self._sync(self._batteries[battery_id])
        if battery.mode is _STOPPED:
            return 0.0, 0.0
        spec = battery.spec
        lower = 0.0 if battery.soc <= spec.soc_lower_pct else -spec.power_limit_w
        upper = 0.0 if battery.soc >= spec.soc_upper_pct else spec.power_limit_w
        return lower, upper

    def inverter_ranges(self, inverter_id: int) -> tuple[tuple[float, float], ...]:
        """The power ranges an inverter allows, W (0 W is always allowed too)."""
        spec = self._inverters[inverter_id].spec
        limit, exclusion = spec.power_limit_w, spec.exclusion_w
        if spec.type is InverterType.PV:  # it produces, never consumes
            return ((-limit, -exclusion),) if exclusion > 0 else ((-limit, 0.0),)
        if exclusion > 0:
            return ((-limit, -exclusion), (exclusion, limit))
        return ((-limit, limit),)

    def allowed_ranges(self, inverter_id: int) -> tuple[tuple[float, float], ...]:
        """The power ranges an inverter allows now: its own and every added bounds', W.

        Ascending and disjoint; empty when they have nothing in common (0 W is allowed even
        then). Without added bounds, :meth:`inverter_ranges`.
        """
        own = self.inverter_ranges(inverter_id)
        added = self._added.get(inverter_id)
        if not added:
            return own
        allowed = own
        for contribution in added.values():
            allowed = intersect(allowed, contribution.ranges)
        return allowed

    # --- added bounds -------------------------------------------------------------------------

    def add_bounds(
        self,
        component_id: int,
        metric: str,
        ranges: Sequence[Range],
        lifetime_s: int | None,
        token: str | None,
        *,
        now: float,
        metric_name: str = "",
    ) -> Accepted | Rejected:
        """Add bounds to a component's metric at ``now`` (see the module docstring).

        Judged in this order: unknown component (``NOT_FOUND``), a metric other than an
        inverter's AC active power, a lifetime outside 5..900 s, no ranges or more than
        :data:`MAX_BOUNDS_RANGES`, a range with a nan end or inverted (each
        ``INVALID_ARGUMENT``), then an inverter that holds :data:`MAX_CONTRIBUTIONS` already
        (``RESOURCE_EXHAUSTED``, unless the token replaces one of them).

        Args:
            component_id: The component.
            metric: Our name of the metric (:data:`BOUNDED_METRIC` is the one accepted).
            ranges: The inclusion ranges (``None``: an open end).
            lifetime_s: How long they hold, s; ``None`` when the request left it out (5 s).
            token: The request's bounds token: replaces the contribution under the same token
                for this component; ``None`` (or empty): a contribution of its own.
            now: The current time.
            metric_name: How the request's version names the metric, for the refusal's text.

        Returns:
            Until when they hold (``now`` + lifetime × ``lifetime_scale``), or why not.
        """
        self.advance(now)
        name = metric_name or metric
        inverter = self._inverters.get(component_id)
        if inverter is None:
            if component_id in self._batteries or component_id in self._others:
                return Rejected(
                    code="INVALID_ARGUMENT",
                    details=f"bounds of {name} of component {component_id} are not simulated: "
                    "only an inverter's AC active power takes added bounds",
                )
            return Rejected(code="NOT_FOUND", details=f"no component {component_id}")
        if metric != BOUNDED_METRIC:
            return Rejected(
                code="INVALID_ARGUMENT",
                details=f"bounds of {name} of inverter {component_id} are not simulated: only "
                "its AC active power takes added bounds",
            )
        lifetime = DEFAULT_BOUNDS_LIFETIME_S if lifetime_s is None else lifetime_s
        if not MIN_BOUNDS_LIFETIME_S <= lifetime <= MAX_BOUNDS_LIFETIME_S:
            return Rejected(
                code="INVALID_ARGUMENT",
                details=f"request_lifetime must be {MIN_BOUNDS_LIFETIME_S}.."
                f"{MAX_BOUNDS_LIFETIME_S} s, got {lifetime}",
            )
        if not ranges:
            return Rejected(code="INVALID_ARGUMENT", details="no bounds given")
        if len(ranges) > MAX_BOUNDS_RANGES:
            return Rejected(
                code="INVALID_ARGUMENT",
                details=f"{len(ranges)} bounds given; at most {MAX_BOUNDS_RANGES} are simulated",
            )
        closed: list[tuple[float, float]] = []
        for index, (lower, upper) in enumerate(ranges):
            low = -math.inf if lower is None else lower
            high = math.inf if upper is None else upper
            if (
                math.isnan(low)
                or math.isnan(high)
                or low > high
                or low == math.inf
                or (high == -math.inf)
            ):
                return Rejected(
                    code="INVALID_ARGUMENT",
                    details=f"bounds[{index}] is not a range: lower {lower!r}, upper {upper!r}",
                )
            closed.append((low, high))
        until = now + lifetime * self.lifetime_scale
        added = self._added.setdefault(component_id, {})
        if len(added) >= MAX_CONTRIBUTIONS and not (token and token in added):
            return Rejected(
                code="RESOURCE_EXHAUSTED",
                details=f"inverter {component_id} holds {len(added)} added bounds already; "
                "clear some or let them expire",
            )
        if token:
            key: str | int = token
        else:
            self._anonymous += 1
            key = self._anonymous
        added[key] = Contribution(ranges=merge(closed), until=until)
        self._next_bounds_expiry = min(self._next_bounds_expiry, until)
        self._bring_within(inverter, now)
        return Accepted(lifetime_s=lifetime, until=until)

    def clear_bounds(
        self, component_id: int, metric: str, token: str, *, now: float, metric_name: str = ""
    ) -> Rejected | None:
        """Remove the bounds added under ``token`` to a component's metric, at ``now``.

        Bounds that do not exist (another token, expired, never added) are no error: nothing
        changes, as the proto says.

        Returns:
            ``None``, or ``NOT_FOUND`` for an unknown component.
        """
        self.advance(now)
        if component_id not in self._inverters:
            if component_id in self._batteries or component_id in self._others:
                return None  # no component but an inverter has added bounds: nothing to clear
            return Rejected(code="NOT_FOUND", details=f"no component {component_id}")
        added = self._added.get(component_id)
        if metric == BOUNDED_METRIC and added is not None and token in added:
            del added[token]
            if not added:
                del self._added[component_id]
            self._next_bounds_expiry = self._earliest_bounds_expiry()
        return None

    def added_bounds(self, component_id: int) -> list[Contribution]:
        """The bounds added to a component that hold at :attr:`time`, oldest first."""
        return list(self._added.get(component_id, {}).values())

    def _expire_bounds(self, now: float) -> None:
        for inverter_id in list(self._added):
            added = self._added[inverter_id]
            for key in [k for k, c in added.items() if c.until <= now]:
                del added[key]
            if not added:
                del self._added[inverter_id]
        self._next_bounds_expiry = self._earliest_bounds_expiry()

    def _earliest_bounds_expiry(self) -> float:
        return min(
            (c.until for added in self._added.values() for c in added.values()), default=math.inf
        )

    def next_bounds_expiry(self) -> float:
        """The earliest instant added bounds expire (``inf`` when none will)."""
        return self._next_bounds_expiry

    def _bring_within(self, inverter: _Inverter, now: float) -> None:
        """Move a held setpoint outside the allowed ranges to the nearest allowed power."""
        power = inverter.setpoint_w
        if power == 0.0 or inverter.spec.id not in self._holding:
            return
        ranges = self.allowed_ranges(inverter.spec.id)
        if _inside(power, ranges):
            return
        nearest = min(
            (min(max(power, low), high) for low, high in ranges),
            key=lambda allowed: abs(allowed - power),
            default=0.0,
        )
        if abs(nearest) > abs(power) or (nearest > 0) != (power > 0):
            nearest = 0.0  # never more power, nor the other way, than was asked for
        self._hold(inverter, nearest, now)
        if inverter.limits:
            self._after_change(inverter, "bounds", now)

    def _hold(self, inverter: _Inverter, power_w: float, at: float) -> None:
        """Change the power an inverter holds at ``at`` (:attr:`time`), its expiry kept."""
        for battery in inverter.batteries:
            self._sync(battery)  # the power changes now: integrate the old power up to here
        self.record.change(inverter.spec.id, at=at, to_w=power_w, until=inverter.until)
        _anchor(inverter, at)
        inverter.setpoint_w = power_w

    # --- limits -------------------------------------------------------------------------------

    def limit_sum(self, name: str) -> float:
        """The sum of the power a limit's inverters hold at :attr:`time`, W.

        Raises:
            KeyError: No such limit.
        """
        try:
            limit = self._limits[name]
        except KeyError:
            raise KeyError(f"no limit {name!r}") from None
        return self._held_sum(limit)

    def limit_sums(self) -> dict[str, float]:
        """Each limit's name to the sum of the power its inverters hold at :attr:`time`, W."""
        return {name: self._held_sum(limit) for name, limit in self._limits.items()}

    def _held_sum(self, limit: _Limit, besides: _Inverter | None = None) -> float:
        """What a limit's inverters (but ``besides``) hold at :attr:`time`, W."""
        now = self.time
        return math.fsum(m.setpoint_w for m in limit.members if m is not besides and m.until > now)

    def _within_limits(self, inverter: _Inverter, power_w: float, cause: str, at: float) -> float:
        """Record the limits ``power_w`` held by ``inverter`` would break; what it may hold.

        That is ``power_w`` curtailed toward 0 W (never past it, never above it) as far as
        each limit it breaks in its own direction needs, given what the others hold.
        """
        allowed = power_w
        for limit in inverter.limits:
            others = self._held_sum(limit, inverter)
            total = others + power_w
            bound = _beyond(limit.spec, total)
            if bound is None:
                continue
            self.record.violation(
                LimitViolation(
                    limit=limit.spec.name,
                    at=at,
                    inverter_id=inverter.spec.id,
                    cause=cause,
                    power_w=power_w,
                    sum_w=total,
                    bound_w=bound,
                )
            )
            room = bound - others
            if total > bound and allowed > 0.0:  # beyond its charge bound (which may be 0)
                allowed = min(allowed, max(room, 0.0))
            elif total < bound and allowed < 0.0:
                allowed = max(allowed, min(room, 0.0))
        return allowed

    def _after_change(self, inverter: _Inverter, cause: str, at: float) -> None:
        """An inverter's setpoint changed at ``at``: record broken limits, then enforce them."""
        held = inverter.setpoint_w if inverter.until > self.time else 0.0
        self._within_limits(inverter, held, cause, at)
        self._enforce(inverter, at)

    def _enforce(self, changed: _Inverter, at: float) -> None:
        """Bring every limit within bounds after ``changed`` changed, nested ones too.

        A limit still beyond a bound (what curtailing the changed inverter could not fix)
        scales down the power of its inverters on that side, in proportion, until its sum is
        at the bound; that may take another limit of theirs beyond its other bound, which is
        enforced in turn (see :data:`MAX_ENFORCE_ROUNDS`).
        """
        pending = list(changed.limits)
        rounds = 0
        while pending:
            limit = pending.pop()
            spec = limit.spec
            total = self._held_sum(limit)
            bound = _beyond(spec, total)
            if bound is None:
                continue
            rounds += 1
            side = 1.0 if total > bound else -1.0
            carrying = [m for m in limit.members if m.until > self.time and m.setpoint_w * side > 0]
            held = math.fsum(m.setpoint_w for m in carrying)
            factor = 0.0 if rounds > MAX_ENFORCE_ROUNDS else max(0.0, 1.0 - (total - bound) / held)
            for member in carrying:
                self._hold(member, member.setpoint_w * factor, at)
                pending.extend(
                    other for other in member.limits if other is not limit and other not in pending
                )

    # --- start, standby, stop -------------------------------------------------------------------

    def mode(self, component_id: int) -> Mode:
        """How far an inverter or a battery is switched on.

        Raises:
            KeyError: Not an inverter or a battery.
        """
        switched = self._inverters.get(component_id) or self._batteries.get(component_id)
        if switched is None:
            raise KeyError(f"no inverter or battery {component_id}")
        return switched.mode

    def control(self, component_id: int, action: str, *, now: float) -> Rejected | None:
        """Start, put in standby or stop a component at ``now`` (see the module docstring).

        Args:
            component_id: The component.
            action: One of :data:`CONTROLS`.
            now: The current time.

        Returns:
            ``None`` when done (or already so); else why not: ``NOT_FOUND`` (no such
            component), ``INVALID_ARGUMENT`` (a component the simulator does not switch, a
            battery's standby), ``FAILED_PRECONDITION`` (standby of an inverter that is
            stopped, stopping a battery that carries power).
        """
        if action not in CONTROLS:
            raise ValueError(f"action must be one of {sorted(CONTROLS)}, got {action!r}")
        self.advance(now)
        inverter = self._inverters.get(component_id)
        if inverter is not None:
            if action == "standby" and inverter.mode is Mode.STOPPED:
                return Rejected(
                    code="FAILED_PRECONDITION",
                    details=f"inverter {component_id} is stopped (its relays are open): "
                    "start it before putting it in standby",
                )
            self._drop_setpoint(inverter, now, action)
            inverter.mode = {"start": Mode.RUNNING, "standby": Mode.STANDBY}.get(
                action, Mode.STOPPED
            )
            return None
        battery = self._batteries.get(component_id)
        if battery is not None:
            if action == "standby":
                return Rejected(
                    code="INVALID_ARGUMENT",
                    details=f"battery {component_id} has no standby: stop it instead",
                )
            if action == "stop" and self.battery_power(component_id) != 0.0:
                return Rejected(
                    code="FAILED_PRECONDITION",
                    details=f"battery {component_id} carries "
                    f"{self.battery_power(component_id):g} W: it stops at 0 W only",
                )
            battery.mode = Mode.RUNNING if action == "start" else Mode.STOPPED
            return None
        if component_id in self._others:
            return Rejected(
                code="INVALID_ARGUMENT",
                details=f"component {component_id} is not switched by the simulator: only "
                "inverters and batteries start, stop and stand by",
            )
        return Rejected(code="NOT_FOUND", details=f"no component {component_id}")

    def acknowledge(self, component_id: int, *, error: bool, now: float) -> Rejected | None:
        """Acknowledge a component's error at ``now``: one that had an error is stopped.

        Args:
            component_id: The component.
            error: Whether it reports an error now (the faults' error state is the server's).
            now: The current time.

        Returns:
            ``None``; ``NOT_FOUND`` for no such component.
        """
        if (
            component_id not in self._inverters
            and component_id not in self._batteries
            and component_id not in self._others
        ):
            return Rejected(code="NOT_FOUND", details=f"no component {component_id}")
        if error and component_id not in self._others:
            self.advance(now)
            inverter = self._inverters.get(component_id)
            if inverter is not None:
                self._drop_setpoint(inverter, now, "stop")
                inverter.mode = Mode.STOPPED
            else:
                self._batteries[component_id].mode = Mode.STOPPED
        return None

    def _drop_setpoint(self, inverter: _Inverter, now: float, cause: str) -> None:
        """An inverter's power goes to 0 at ``now`` (recorded when it held a setpoint).

        ``cause`` (``"start"``, ``"standby"``, ``"stop"``) is what a limit violation it causes
        is recorded under.
        """
        for battery in inverter.batteries:
            self._sync(battery)  # the power changes now: integrate the old power up to here
        held = self._holding.pop(inverter.spec.id, None) is not None
        # Its relays open: a ramping inverter's power is cut at once too, not ramped down.
        cut = inverter.spec.ramp_w_per_s is not None and _applied(inverter, now) != 0.0
        if held or cut:
            self.record.change(inverter.spec.id, at=now, to_w=0.0, until=math.inf, at_once=cut)
        if held:
            self._next_expiry = self.next_expiry()
        inverter.setpoint_w, inverter.until = 0.0, math.inf
        inverter.applied_w, inverter.applied_at = 0.0, now
        self._reactive.pop(inverter.spec.id, None)  # its reactive power goes to 0 var too
        inverter.reactive_var, inverter.reactive_until = 0.0, math.inf
        if held and inverter.limits:
            self._after_change(inverter, cause, now)

    # --- commands ---------------------------------------------------------------------------

    def command(
        self,
        component_id: int,
        power_w: float,
        lifetime_s: int | None,
        *,
        now: float,
        apply: bool = True,
        received_at: float | None = None,
        api: str = "",
        final: str | None = None,
    ) -> Accepted | Rejected:
        """Apply ``SetComponentPowerActive`` at ``now`` (the state is advanced to ``now`` first).

        The command is recorded (when to an inverter), then the change of setpoint, if any.

        Args:
            component_id: The component commanded.
            power_w: The setpoint, W.
            lifetime_s: The request's lifetime, s; ``None`` when the request left it out.
            now: The current time.
            apply: ``False`` for a command the inverter accepts and then does not carry out (a
                v1alpha18/19 reply stream ending ``FAILED``): judged like any other, recorded
                :attr:`~Outcome.NOT_APPLIED` when accepted, and nothing changes.
            received_at: When the call arrived, for the record (default ``now``).
            api: The version it came through, for the record.
            final: The ``final_reply`` fault it is answered under, for the record.

        Returns:
            The setpoint accepted, and until when; or why not, as a gRPC status code name.
        """
        result = self.check(component_id, power_w, lifetime_s, now=now)
        until = result.until if isinstance(result, Accepted) and apply else None
        outcome = Outcome.NOT_APPLIED if until is None else Outcome.APPLIED
        if isinstance(result, Rejected):
            outcome, final = Outcome.REJECTED, None
        self.record.command(
            Command(
                inverter_id=component_id,
                at=now,
                received_at=now if received_at is None else received_at,
                power_w=power_w,
                lifetime_s=lifetime_s,
                outcome=outcome,
                code=result.code if isinstance(result, Rejected) else None,
                final=final,
                until=until,
                api=api,
            )
        )
        if not isinstance(result, Accepted) or not apply:
            return result
        inverter = self._inverters[component_id]
        held = power_w
        if inverter.limits:  # curtailed as far as a limit it would break needs
            held = self._within_limits(inverter, power_w, "command", now)
        for battery in inverter.batteries:
            self._sync(battery)  # the power changes now: integrate the old power up to here
        self.record.change(component_id, at=now, to_w=held, until=result.until)
        if inverter.spec.ramp_w_per_s is not None:
            _anchor(inverter, now)
            self._ramping[component_id] = inverter
        inverter.mode = Mode.RUNNING  # a command brings an inverter in standby back
        inverter.setpoint_w = held
        inverter.until = result.until
        self._holding[component_id] = inverter
        self._next_expiry = min(self._next_expiry, inverter.until)
        if inverter.limits:
            self._enforce(inverter, now)
        return result

    def record_command(
        self,
        component_id: int,
        power_w: float,
        lifetime_s: int | None,
        *,
        now: float,
        outcome: Outcome,
        code: str | None = None,
        received_at: float | None = None,
        api: str = "",
    ) -> None:
        """Record a command the world did not judge: cancelled, or ended by an injected fault.

        The state is advanced to ``now`` first, so the record stays in time order.
        """
        self.advance(now)
        self.record.command(
            Command(
                inverter_id=component_id,
                at=now,
                received_at=now if received_at is None else received_at,
                power_w=power_w,
                lifetime_s=lifetime_s,
                outcome=outcome,
                code=code,
                api=api,
            )
        )

    def snapshot_record(self) -> Record:
        """The record up to :attr:`time` (advance first to have it up to now)."""
        return self.record.snapshot(self.time, limit_sums=self.limit_sums())

    def check(
        self, component_id: int, power_w: float, lifetime_s: int | None, *, now: float
    ) -> Accepted | Rejected:
        """What :meth:`command` would answer at ``now``; nothing is applied or recorded."""
        judged = self._check_target(component_id, lifetime_s, power_w, now=now)
        if isinstance(judged, Rejected):
            return judged
        if power_w != 0.0:
            problem = self._out_of_range(self._inverters[component_id], power_w)
            if problem:
                return Rejected(code="OUT_OF_RANGE", details=problem)
        return judged

    def _check_target(
        self, component_id: int, lifetime_s: int | None, power: float, *, now: float
    ) -> Accepted | Rejected:
        """A command's checks before its value's range (advances to ``now`` first).

        Unknown component, not an inverter, lifetime, a value that is not finite; what it
        would be granted if its value is in range.
        """
        self.advance(now)
        inverter = self._inverters.get(component_id)
        if inverter is None:
            if component_id in self._batteries or component_id in self._others:
                return Rejected(
                    code="INVALID_ARGUMENT",
                    details=f"component {component_id} is not an inverter",
                )
            return Rejected(code="NOT_FOUND", details=f"no component {component_id}")
        lifetime = DEFAULT_LIFETIME_S if lifetime_s is None else lifetime_s
        if not MIN_LIFETIME_S <= lifetime <= MAX_LIFETIME_S:
            return Rejected(
                code="INVALID_ARGUMENT",
                details=f"request_lifetime must be {MIN_LIFETIME_S}..{MAX_LIFETIME_S} s, "
                f"got {lifetime}",
            )
        if not math.isfinite(power):
            return Rejected(code="INVALID_ARGUMENT", details=f"power must be finite, got {power}")
        if inverter.mode is Mode.STOPPED:
            return Rejected(
                code="FAILED_PRECONDITION",
                details=f"inverter {component_id} is stopped: start it first",
            )
        return Accepted(lifetime_s=lifetime, until=now + lifetime * self.lifetime_scale)

    def _out_of_range(self, inverter: _Inverter, power_w: float) -> str:
        if _is_pv(inverter) and power_w > 0:
            return f"inverter {inverter.spec.id} is a PV inverter: it cannot consume {power_w:g} W"
        beyond = _beyond_apparent_limit(inverter, power_w, "W")
        if beyond:
            return beyond
        ranges = self.allowed_ranges(inverter.spec.id)
        if not _inside(power_w, ranges):
            return f"{power_w:g} W is outside inverter {inverter.spec.id}'s ranges {list(ranges)}"
        if _is_pv(inverter):
            return ""  # a production limit: no battery takes it
        if not inverter.batteries:
            return f"inverter {inverter.spec.id} has no battery"
        # What its batteries take together (one battery: its own bounds).
        bounds = [self.battery_bounds(battery.spec.id) for battery in inverter.batteries]
        lower, upper = math.fsum(b[0] for b in bounds), math.fsum(b[1] for b in bounds)
        if not lower <= power_w <= upper:
            if len(bounds) == 1:
                whose = f"battery {inverter.batteries[0].spec.id}'s bounds"
            else:
                ids = ", ".join(str(battery.spec.id) for battery in inverter.batteries)
                whose = f"the bounds of its batteries {ids} together"
            return f"{power_w:g} W is outside {whose} [{lower:g}, {upper:g}]"
        return ""

    # --- reactive power -----------------------------------------------------------------------

    def reactive_power(self, inverter_id: int) -> float:
        """The reactive power an inverter carries at :attr:`time`, var (0 when none or expired).

        Its setpoint, curtailed to ``√(S² − P²)`` where its apparent-power limit ``S`` leaves
        less beside the active power ``P`` it carries (the module docstring).
        """
        inverter = self._inverters[inverter_id]
        if inverter.reactive_until <= self.time:
            if inverter.reactive_var != 0.0:
                inverter.reactive_var, inverter.reactive_until = 0.0, math.inf
                self._reactive.pop(inverter_id, None)
            return 0.0
        reactive = inverter.reactive_var
        limit = inverter.spec.apparent_limit_va
        if limit is None or reactive == 0.0:
            return reactive
        active = self.inverter_power(inverter_id)
        room = math.sqrt(max(limit * limit - active * active, 0.0))
        return reactive if abs(reactive) <= room else math.copysign(room, reactive)

    def site_reactive_power(self) -> float:
        """The sum of all inverters' reactive power, var (what the meter measures)."""
        return sum(self.reactive_power(iid) for iid in tuple(self._reactive))

    def reactive_ranges(self, inverter_id: int) -> tuple[Range, ...]:
        """The reactive power an inverter allows, var: ``[-limit, +limit]``."""
        limit = self._inverters[inverter_id].spec.reactive_limit
        return ((-limit, limit),)

    def apparent_ranges(self, inverter_id: int) -> tuple[Range, ...] | None:
        """The apparent power an inverter allows, VA: ``[0, S]``; None without a limit."""
        limit = self._inverters[inverter_id].spec.apparent_limit_va
        return None if limit is None else ((0.0, limit),)

    def check_reactive(
        self, component_id: int, power_var: float, lifetime_s: int | None, *, now: float
    ) -> Accepted | Rejected:
        """What :meth:`command_reactive` would answer at ``now``; nothing is applied.

        In the order active commands are judged: unknown component, not an inverter, lifetime,
        a value that is not finite, then outside the reactive limit (``OUT_OF_RANGE``; 0 var is
        always allowed).
        """
        judged = self._check_target(component_id, lifetime_s, power_var, now=now)
        if isinstance(judged, Rejected):
            return judged
        inverter = self._inverters[component_id]
        limit = inverter.spec.reactive_limit
        if power_var != 0.0 and not -limit <= power_var <= limit:
            return Rejected(
                code="OUT_OF_RANGE",
                details=f"{power_var:g} var is outside inverter {component_id}'s reactive "
                f"range [{-limit:g}, {limit:g}]",
            )
        beyond = _beyond_apparent_limit(inverter, power_var, "var")
        if beyond:
            return Rejected(code="OUT_OF_RANGE", details=beyond)
        return judged

    def command_reactive(
        self, component_id: int, power_var: float, lifetime_s: int | None, *, now: float
    ) -> Accepted | Rejected:
        """Apply a reactive-power command at ``now`` (the state is advanced to ``now`` first).

        Returns:
            The setpoint accepted, and until when; or why not, as a gRPC status code name.
        """
        result = self.check_reactive(component_id, power_var, lifetime_s, now=now)
        if isinstance(result, Accepted):
            inverter = self._inverters[component_id]
            inverter.mode = Mode.RUNNING  # a command brings an inverter in standby back
            inverter.reactive_var, inverter.reactive_until = power_var, result.until
            self._reactive[component_id] = inverter
        return result

    def next_reactive_expiry(self) -> float:
        """The earliest instant a reactive setpoint expires (``inf`` when none will)."""
        return min((i.reactive_until for i in self._reactive.values()), default=math.inf)

    # --- telemetry --------------------------------------------------------------------------

    def battery_reading(self, battery_id: int, faults: Faults) -> BatteryReading:
        """What a battery reports at :attr:`time`."""
        battery = self._batteries[battery_id]
        spec = battery.spec
        power = self.battery_power(battery_id)
        nan = faults.nan_metrics
        states = _battery_states(power, faults)
        if battery.mode is not _RUNNING:
            states = _switched(battery.mode, faults, states)
        capacity = (
            spec.capacity_wh if faults.reported_capacity_wh is None else faults.reported_capacity_wh
        )
        soc = self.soc(battery_id)
        return BatteryReading(
            soc_pct=math.nan if "soc" in nan else soc,
            soc_bounds=None if faults.missing_bounds else (spec.soc_lower_pct, spec.soc_upper_pct),
            capacity_wh=math.nan if "capacity" in nan else capacity,
            power_w=math.nan if "power" in nan else power,
            power_ranges=None if faults.missing_bounds else (self.battery_bounds(battery_id),),
            states=states,
            errors=_errors(faults),
            dc_voltage_v=battery_voltage(spec.dc_voltage_v, soc),
            temperature_c=self._temperature(power, spec.power_limit_w),
        )

    def inverter_reading(self, inverter_id: int, faults: Faults) -> InverterReading:
        """What an inverter reports at :attr:`time`."""
        power = self.inverter_power(inverter_id)
        inverter = self._inverters[inverter_id]
        mode = inverter.mode
        missing = faults.missing_bounds
        ranges: tuple[Range, ...] | None = None
        if missing:
            pass
        elif mode is _STOPPED:
            ranges = ((0.0, 0.0),)
        elif inverter_id in self._added:
            # Nothing in common: 0 W is all it allows (an empty list would say "unknown").
            ranges = self.allowed_ranges(inverter_id) or ((0.0, 0.0),)
        else:
            ranges = self.inverter_ranges(inverter_id)
        states = _states(power, faults)
        return InverterReading(
            power_w=math.nan if "power" in faults.nan_metrics else power + faults.power_offset_w,
            power_ranges=ranges,
            states=states if mode is _RUNNING else _switched(mode, faults, states),
            errors=_errors(faults),
            reactive_power_var=self.reactive_power(inverter_id),
            reactive_ranges=None if missing else self.reactive_ranges(inverter_id),
            apparent_ranges=None if missing else self.apparent_ranges(inverter_id),
            frequency_hz=self.frequency_hz,
            voltage_v=self.voltage_v,
            temperature_c=self._temperature(power, inverter.spec.power_limit_w),
        )

    def line_reading(self, inverter_id: int) -> InverterReading:
        """What a pass-through component in an inverter's chain reports: the power it passes."""
        return InverterReading(
            power_w=self.inverter_power(inverter_id),
            power_ranges=None,
            states=(StateCode.READY,),
            errors=(),
            reactive_power_var=self.reactive_power(inverter_id),
            frequency_hz=self.frequency_hz,
            voltage_v=self.voltage_v,
        )

    def meter_reading(self) -> InverterReading:
        """What the meter (and the grid connection) reports: the site's total power."""
        return InverterReading(
            power_w=self.site_power(),
            power_ranges=None,
            states=(StateCode.READY,),
            errors=(),
            reactive_power_var=self.site_reactive_power(),
            frequency_hz=self.frequency_hz,
            voltage_v=self.voltage_v,
        )

    def _temperature(self, power: float, limit: float) -> float:
        """A component's temperature carrying ``power`` with power limit ``limit``, °C."""
        if limit <= 0.0 or not math.isfinite(power):
            return self.ambient_c
        return self.ambient_c + HEATING_C * min(abs(power) / limit, 1.0)


def _weights(batteries: Sequence[_Battery]) -> dict[int, float]:
    """How an inverter splits its power among its batteries: by capacity (one battery: all)."""
    if len(batteries) == 1:
        return {batteries[0].spec.id: 1.0}
    total = math.fsum(b.spec.capacity_wh for b in batteries)
    return {b.spec.id: b.spec.capacity_wh / total for b in batteries}


def _beyond(limit: LimitSpec, total: float) -> float | None:
    """The bound of ``limit`` that ``total`` is beyond (see :data:`LIMIT_TOLERANCE_W`), if any.

    ``+max_charge_w`` or ``-max_discharge_w``; ``None`` when it is within.
    """
    if total > limit.max_charge_w + LIMIT_TOLERANCE_W:
        return limit.max_charge_w
    if total < -limit.max_discharge_w - LIMIT_TOLERANCE_W:
        return -limit.max_discharge_w
    return None


def battery_voltage(full_v: float, soc_pct: float) -> float:
    """A battery's DC voltage at ``soc_pct``: linear from 90 % of ``full_v`` empty to it full."""
    empty = full_v * EMPTY_VOLTAGE_FRACTION
    return empty + (full_v - empty) * soc_pct / 100.0


def merge(ranges: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Closed ranges as a union: ascending, overlapping or touching ones merged into one."""
    merged: list[tuple[float, float]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def intersect(
    first: Iterable[tuple[float, float]], second: Iterable[tuple[float, float]]
) -> tuple[tuple[float, float], ...]:
    """What two unions of closed ranges both allow, merged (empty when nothing)."""
    second = tuple(second)
    return merge(
        (max(a_low, b_low), min(a_high, b_high))
        for a_low, a_high in first
        for b_low, b_high in second
        if max(a_low, b_low) <= min(a_high, b_high)
    )


def _inside(power_w: float, ranges: Sequence[Range]) -> bool:
    return any(
        (lower is None or lower <= power_w) and (upper is None or power_w <= upper)
        for lower, upper in ranges
    )


def _switched(mode: Mode, faults: Faults, states: tuple[StateCode, ...]) -> tuple[StateCode, ...]:
    """A running component's states as its mode changes them (an error state stays)."""
    if mode is Mode.RUNNING or faults.error_state:
        return states
    if mode is Mode.STANDBY:
        return (StateCode.STANDBY,)
    if StateCode.RELAY_CLOSED in states:  # a battery: its DC relay is open
        return (StateCode.OFF, StateCode.RELAY_OPEN)
    return (StateCode.OFF,)


def _beyond_apparent_limit(inverter: _Inverter, power: float, unit: str) -> str:
    """Why ``power`` (W or var) alone exceeds an inverter's apparent-power limit; "" if not."""
    limit = inverter.spec.apparent_limit_va
    if limit is None or abs(power) <= limit:
        return ""
    return (
        f"{power:g} {unit} is beyond inverter {inverter.spec.id}'s apparent-power limit "
        f"{limit:g} VA"
    )


def _applied(inverter: _Inverter, at: float) -> float:
    """A ramping inverter's applied power at ``at`` (at or after its anchor), W.

    From the anchor toward the setpoint; if the setpoint expires on the way, from the expiry
    on toward 0.
    """
    rate = inverter.spec.ramp_w_per_s
    assert rate is not None
    applied, since, until = inverter.applied_w, inverter.applied_at, inverter.until
    if since < until <= at:
        applied = ramped(applied, inverter.setpoint_w, rate, since, until)
        return ramped(applied, 0.0, rate, until, at)
    target = inverter.setpoint_w if at < until else 0.0
    return ramped(applied, target, rate, since, at)


def _anchor(inverter: _Inverter, at: float) -> None:
    """Move a ramping inverter's anchor to ``at``, before its setpoint or expiry changes."""
    if inverter.spec.ramp_w_per_s is not None:
        inverter.applied_w = _applied(inverter, at)
        inverter.applied_at = at


def _corners(inverter: _Inverter) -> tuple[float, ...]:
    """The instants after its anchor where an inverter's applied power stops being linear.

    Its expiry, where its ramp reaches the setpoint and, after an expiry, where it reaches 0.
    """
    until = inverter.until
    rate = inverter.spec.ramp_w_per_s
    if rate is None:
        return (until,)
    applied, since = inverter.applied_w, inverter.applied_at
    if since < until < math.inf:
        reached = ramp_end(applied, inverter.setpoint_w, rate, since)
        at_expiry = ramped(applied, inverter.setpoint_w, rate, since, until)
        return (reached, until, ramp_end(at_expiry, 0.0, rate, until))
    target = inverter.setpoint_w if since < until else 0.0
    return (ramp_end(applied, target, rate, since),)


def _is_pv(inverter: _Inverter) -> bool:
    return inverter.spec.type is InverterType.PV


def _battery_states(power_w: float, faults: Faults) -> tuple[StateCode, ...]:
    """A battery's states: an inverter's, and its relay closed while it works (connected)."""
    states = _states(power_w, faults)
    return states if faults.error_state else (*states, StateCode.RELAY_CLOSED)


def _states(power_w: float, faults: Faults) -> tuple[StateCode, ...]:
    if faults.error_state:
        return (StateCode.ERROR,)
    if power_w > 0:
        return (StateCode.READY, StateCode.CHARGING)
    if power_w < 0:
        return (StateCode.READY, StateCode.DISCHARGING)
    # READY, not STANDBY, at 0 W: an idle inverter is ready to take a setpoint at once.
    return (StateCode.READY,)


def _errors(faults: Faults) -> tuple[str, ...]:
    return ("internal",) if faults.error_state else ()
