"""The simulator's physics: state of charge, power bounds, setpoints and their lifetimes.

Theory of operation
-------------------
:class:`World` holds the mutable state (each battery's SoC, each inverter's setpoint and when
it expires) and changes it only through :meth:`World.advance` and :meth:`World.command`, both of
which take ``now`` (monotonic seconds) as an argument. Nothing here reads a clock, so tests can
assert exact numbers.

* **Power flows from inverter setpoints.** A battery's requested power is the sum of the shares
  of its inverters' setpoints (an inverter splits its setpoint equally among its batteries; in
  the supported shape that is simply "its inverter's setpoint"), limited to the battery's power
  limit. It is *held at 0* when it would push the SoC past the bound in that direction. An
  inverter's applied power is the sum of its shares that its batteries actually take, so power
  is conserved.
* **SoC integrates power exactly.** Between two instants power is piecewise constant: it
  changes only when a setpoint expires (a known instant) or when the SoC reaches a bound (where
  it is clamped exactly to the bound, after which the power is held at 0). :meth:`World.advance`
  therefore cuts each battery's interval at its inverters' expiry instants and is exact however
  rarely it is called: ``dSoC/dt = P / capacity_wh * 100 / 3600 * speed`` % per second.
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
* **Reactive power is commanded apart** (:meth:`World.command_reactive`): a setpoint within
  the inverter's reactive limit (``[-limit, +limit]`` var; 0 var always) holds for its
  lifetime, as an active one does, then reverts to 0 var; it moves no energy, so it touches
  neither the batteries nor :attr:`World.record` (which is the active power's). A meter and
  a line report the reactive power of the inverters behind them.
* **The rest of a reading is physics of a few numbers**: the AC frequency and phase voltage
  are the scenario's; a battery's DC voltage falls linearly with its SoC from its full
  voltage to 90 % of it; a component carrying power is warmer than the ambient temperature,
  by up to :data:`HEATING_C` at its power limit. The per-phase samples are the adapters'
  (``api.common``): a reading carries only these quantities, so that a tick stays cheap.
* **Readings apply telemetry faults** (NaN metrics, missing bounds, error state), so what a
  component reports is decided here, and testable, while the wire encoding is the adapters'.
  A pass-through component (breaker, precharger, ...), and an inverter's own meter, report
  the power its inverter passes. A battery that works reports ``RELAY_CLOSED`` among its
  states (it is connected), as a real battery does and the Frequenz SDK requires.
* **PV produces on its own.** A PV inverter's power is its PV's production, ``-pv_power_w``,
  or less where a setpoint limits it (``max(setpoint, -pv_power_w)`` while one holds); it
  allows ``[-limit, 0]`` and refuses to consume. A hybrid inverter's power is its battery's
  minus its PV's production. So the site meter sees the PV whether anyone commands it or not.

Pure: no IO, no clock, no grpc.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

from distributord.core.bounds import Range
from distributord.core.model import StateCode
from distributord.core.topology import InverterType
from distributord.sim.record import Command, Outcome, Record, Recorder
from distributord.sim.scenario import (
    GRID_ID,
    METER_ID,
    BatterySpec,
    Faults,
    InverterSpec,
    Scenario,
)

DEFAULT_LIFETIME_S = 60
"""The API's default ``request_lifetime`` when a request leaves it out."""

MIN_LIFETIME_S = 10
"""The shortest ``request_lifetime`` the API accepts."""

MAX_LIFETIME_S = 900
"""The longest ``request_lifetime`` the API accepts."""

_PCT_PER_WS = 100.0 / 3600.0
"""SoC % per second for 1 W into 1 Wh of capacity."""

HEATING_C = 10.0
"""How much warmer than the ambient a battery or inverter is at its power limit, °C (in
proportion below it): enough to see in a plot, far from any thermal limit."""

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
    frequency_hz: float | None = None
    voltage_v: float | None = None
    temperature_c: float | None = None


@attrs.define
class _Battery:
    spec: BatterySpec
    soc: float
    time: float
    """The instant :attr:`soc` describes (at most :attr:`World.time`; see ``World._sync``)."""
    inverters: list[_Inverter] = attrs.field(factory=list)


@attrs.define
class _Inverter:
    spec: InverterSpec
    batteries: list[_Battery] = attrs.field(factory=list)
    setpoint_w: float = 0.0
    until: float = math.inf
    reactive_var: float = 0.0
    reactive_until: float = math.inf


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
        self.record = Recorder((i.id for i in scenario.inverters), now=now, maxlen=record_maxlen)
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
        self._inverters = {i.id: _Inverter(spec=i) for i in scenario.inverters}
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
        # Inverters with a setpoint: only their batteries can change. Keeps advancing an idle
        # fleet cheap (a stream opens with an advance; a daemon opens 2000 at once).
        self._holding: dict[int, _Inverter] = {}
        self._next_expiry = math.inf  # the earliest ``until`` in _holding
        # Inverters with PV that produces: they carry power without any setpoint.
        self._producing = [i for i in self._inverters.values() if i.spec.pv_power_w > 0]
        # Inverters with a reactive setpoint that may still hold (dropped when read expired).
        self._reactive: dict[int, _Inverter] = {}

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
        if now < self._next_expiry:
            return []
        expired = [iid for iid, inverter in self._holding.items() if inverter.until <= now]
        for iid in expired:
            inverter = self._holding.pop(iid)
            for battery in inverter.batteries:
                self._sync(battery)  # up to now, cut at the expiry, before the setpoint goes
            self.record.expiry(iid, at=inverter.until, power_w=inverter.setpoint_w)
            inverter.setpoint_w, inverter.until = 0.0, math.inf
        self._next_expiry = self.next_expiry()
        return expired

    def _sync(self, battery: _Battery) -> _Battery:
        """Integrate one battery's SoC from its own last instant up to :attr:`time`.

        Exact: the interval is cut at its inverters' expiry instants, where its power changes.
        Every read of a battery, and every change of an inverter's setpoint, syncs first.
        """
        start, now = battery.time, self.time
        if start < now:
            cuts = sorted({i.until for i in battery.inverters if start < i.until < now})
            t = start
            for cut in (*cuts, now):
                self._integrate(battery, t, cut)
                t = cut
            battery.time = now
        return battery

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
    def _share(inverter: _Inverter, at: float) -> float:
        if inverter.until <= at or not inverter.batteries or _is_pv(inverter):
            return 0.0
        return inverter.setpoint_w / len(inverter.batteries)

    def _requested(self, battery: _Battery, at: float) -> float:
        return sum(self._share(inverter, at) for inverter in battery.inverters)

    def _battery_power(self, battery: _Battery, at: float) -> float:
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
        produced = inverter.spec.pv_power_w
        if _is_pv(inverter):
            holds = self.time < inverter.until < math.inf  # a setpoint given and not expired
            return max(inverter.setpoint_w, -produced) if holds else -produced
        share = self._share(inverter, self.time)
        total = -produced if with_pv else 0.0
        for battery in inverter.batteries:
            self._sync(battery)
            requested = self._requested(battery, self.time)
            if requested != 0.0:
                # The battery takes each inverter's share in the proportion it accepts in all.
                total += share * self._battery_power(battery, at=self.time) / requested
        return total

    def site_power(self) -> float:
        """The sum of all inverters' power, W (what the meter measures)."""
        carrying = self._holding.keys() | {i.spec.id for i in self._producing}
        return sum(self.inverter_power(inverter_id) for inverter_id in carrying)

    def soc(self, battery_id: int) -> float:
        """A battery's SoC at :attr:`time`, %."""
        return self._sync(self._batteries[battery_id]).soc

    def battery_bounds(self, battery_id: int) -> tuple[float, float]:
        """``(lower, upper)`` power a battery allows at :attr:`time`, W."""
        battery = self._sync(self._batteries[battery_id])
        spec = battery.spec
        lower = 0.0 if battery.soc <= spec.soc_lower_pct else -spec.power_limit_w
        upper = 0.0 if battery.soc >= spec.soc_upper_pct else spec.power_limit_w
        return lower, upper

    def inverter_ranges(self, inverter_id: int) -> tuple[Range, ...]:
        """The power ranges an inverter allows, W (0 W is always allowed too)."""
        spec = self._inverters[inverter_id].spec
        limit, exclusion = spec.power_limit_w, spec.exclusion_w
        if spec.type is InverterType.PV:  # it produces, never consumes
            return ((-limit, -exclusion),) if exclusion > 0 else ((-limit, 0.0),)
        if exclusion > 0:
            return ((-limit, -exclusion), (exclusion, limit))
        return ((-limit, limit),)

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
        for battery in inverter.batteries:
            self._sync(battery)  # the power changes now: integrate the old power up to here
        self.record.change(component_id, at=now, to_w=power_w, until=result.until)
        inverter.setpoint_w = power_w
        inverter.until = result.until
        self._holding[component_id] = inverter
        self._next_expiry = min(self._next_expiry, inverter.until)
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
        return self.record.snapshot(self.time)

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
        return Accepted(lifetime_s=lifetime, until=now + lifetime * self.lifetime_scale)

    def _out_of_range(self, inverter: _Inverter, power_w: float) -> str:
        if _is_pv(inverter) and power_w > 0:
            return f"inverter {inverter.spec.id} is a PV inverter: it cannot consume {power_w:g} W"
        ranges = self.inverter_ranges(inverter.spec.id)
        if not _inside(power_w, ranges):
            return f"{power_w:g} W is outside inverter {inverter.spec.id}'s ranges {list(ranges)}"
        if _is_pv(inverter):
            return ""  # a production limit: no battery takes it
        if not inverter.batteries:
            return f"inverter {inverter.spec.id} has no battery"
        share = power_w / len(inverter.batteries)
        for battery in inverter.batteries:
            lower, upper = self.battery_bounds(battery.spec.id)
            if not lower <= share <= upper:
                return (
                    f"{share:g} W is outside battery {battery.spec.id}'s bounds "
                    f"[{lower:g}, {upper:g}]"
                )
        return ""

    # --- reactive power -----------------------------------------------------------------------

    def reactive_power(self, inverter_id: int) -> float:
        """The reactive power an inverter holds at :attr:`time`, var (0 when none or expired)."""
        inverter = self._inverters[inverter_id]
        if inverter.reactive_until <= self.time:
            if inverter.reactive_var != 0.0:
                inverter.reactive_var, inverter.reactive_until = 0.0, math.inf
                self._reactive.pop(inverter_id, None)
            return 0.0
        return inverter.reactive_var

    def site_reactive_power(self) -> float:
        """The sum of all inverters' reactive power, var (what the meter measures)."""
        return sum(self.reactive_power(iid) for iid in tuple(self._reactive))

    def reactive_ranges(self, inverter_id: int) -> tuple[Range, ...]:
        """The reactive power an inverter allows, var: ``[-limit, +limit]``."""
        limit = self._inverters[inverter_id].spec.reactive_limit
        return ((-limit, limit),)

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
        limit = self._inverters[component_id].spec.reactive_limit
        if power_var != 0.0 and not -limit <= power_var <= limit:
            return Rejected(
                code="OUT_OF_RANGE",
                details=f"{power_var:g} var is outside inverter {component_id}'s reactive "
                f"range [{-limit:g}, {limit:g}]",
            )
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
            inverter.reactive_var, inverter.reactive_until = power_var, result.until
            self._reactive[component_id] = inverter
        return result

    def next_reactive_expiry(self) -> float:
        """The earliest instant a reactive setpoint expires (``inf`` when none will)."""
        return min((i.reactive_until for i in self._reactive.values()), default=math.inf)

    # --- telemetry --------------------------------------------------------------------------

    def battery_reading(self, battery_id: int, faults: Faults) -> BatteryReading:
        """What a battery reports at :attr:`time`."""
        spec = self._batteries[battery_id].spec
        power = self.battery_power(battery_id)
        nan = faults.nan_metrics
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
            states=_battery_states(power, faults),
            errors=_errors(faults),
            dc_voltage_v=battery_voltage(spec.dc_voltage_v, soc),
            temperature_c=self._temperature(power, spec.power_limit_w),
        )

    def inverter_reading(self, inverter_id: int, faults: Faults) -> InverterReading:
        """What an inverter reports at :attr:`time`."""
        power = self.inverter_power(inverter_id)
        missing = faults.missing_bounds
        return InverterReading(
            power_w=math.nan if "power" in faults.nan_metrics else power + faults.power_offset_w,
            power_ranges=None if missing else self.inverter_ranges(inverter_id),
            states=_states(power, faults),
            errors=_errors(faults),
            reactive_power_var=self.reactive_power(inverter_id),
            reactive_ranges=None if missing else self.reactive_ranges(inverter_id),
            frequency_hz=self.frequency_hz,
            voltage_v=self.voltage_v,
            temperature_c=self._temperature(power, self._inverters[inverter_id].spec.power_limit_w),
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


def battery_voltage(full_v: float, soc_pct: float) -> float:
    """A battery's DC voltage at ``soc_pct``: linear from 90 % of ``full_v`` empty to it full."""
    empty = full_v * EMPTY_VOLTAGE_FRACTION
    return empty + (full_v - empty) * soc_pct / 100.0


def _inside(power_w: float, ranges: Sequence[Range]) -> bool:
    return any(
        (lower is None or lower <= power_w) and (upper is None or power_w <= upper)
        for lower, upper in ranges
    )


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
