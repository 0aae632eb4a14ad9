"""What the simulator simulates: components, their limits, their faults; and the TOML parser.

Theory of operation
-------------------
A :class:`Scenario` is a frozen value: batteries, inverters (each naming the batteries it
feeds), per-component :class:`Faults`, limits over sets of inverters, a speed factor and a
telemetry rate. The topology is derived from it: grid (id 1) → meter (id 2) → every inverter →
its pass-through chain, if any → its batteries; a battery that no inverter names hangs off the
meter directly, so the graph stays connected and the daemon sees "no inverter". An inverter's
``type`` (battery, hybrid, pv) gives the shapes the daemon must treat apart.

**N:M groups** (``spec/plant.md``, "Real topologies"). One battery and one inverter is the
default, but an inverter may name several batteries (a hybrid or multi-input inverter) and a
battery may be named by several inverters (one string on a shared DC bus), or both: the
connected components of the battery–inverter graph are the site's groups
(:meth:`Scenario.groups`). Each inverter that names a battery gets an edge to it (from the end
of its pass-through chain, if it has one), so a battery on two inverters has two parents in
the graph. What power does in such a group is ``sim.world``'s.

**Limits** (``[[limits]]``, :class:`LimitSpec`; ``spec/plant.md``, "Group limits"): a feeder,
a fuse or the grid connection point binds the sum of the power of a set of inverters
(``grid = true``: every inverter) to ``[-max_discharge_w, +max_charge_w]``. The simulator
enforces them as a site controller would and records what commands would have broken them
(``sim.world``, ``sim.record``).

**Named scenarios** (:data:`NAMED_SCENARIOS`, :func:`named_scenario`), for the daemon's tests
and the demo:

* ``"shared-dc-bus"``: battery 1001 (20 kWh, 10 kW) on a DC bus shared by inverters 2001 and
  2002, beside two 1:1 pairs (1002 → 2003, 1003 → 2004);
* ``"two-on-one"``: batteries 1001 (10 kWh) and 1002 (20 kWh) behind one hybrid-like battery
  inverter 2001 (10 kW), beside a 1:1 pair (1003 → 2002);
* ``"two-on-three"``: batteries 1001 and 1002 on inverters 2001 (→ 1001), 2002 (→ 1001 and
  1002) and 2003 (→ 1002): one group of five, beside a 1:1 pair (1003 → 2004);
* ``"feeder"``: four 1:1 pairs (1001..1004 → 2001..2004) with the limit ``"feeder"`` over
  2001 and 2002 (6 kW either way) and ``"grid"`` over every inverter (15 kW either way).

**Pass-through chains.** An inverter's ``between`` names components that only switch or
protect the line (``"precharger"``, ``"breaker"``, ``"relay"``, ``"fuse"``), in order from the
inverter towards its batteries: ``between = ("precharger", "breaker")`` makes inverter →
precharger → breaker → battery. They get generated ids that cannot collide with any battery's
or inverter's: with ``base`` the smallest power of ten above every battery and inverter id
(at least 10), the k-th component (from 1) of inverter ``i``'s chain is ``k × base + i``.
For the fleet (inverters 2001..) that is 12001, 22001, ...: the inverter's id after the
position's digit. The simulator streams the power passing through them (an inverter's AC
power); they take no commands and no faults.

**Meters in front of inverters.** An inverter with ``meter = true`` is measured by a meter of
its own, between the site meter and the inverter (site meter → its meter → inverter → chain →
batteries), as on real sites and in the Frequenz SDK's own test microgrid. Its id is
``9 × base + i`` (92001 for the fleet's inverter 2001), so a chain before it is at most 8
long. It streams what its inverter passes, like a pass-through component, and takes no
commands.

**PV.** A ``"pv"`` inverter converts only PV: it produces ``pv_power_w`` (its panels' output
now) unless a setpoint limits it (a setpoint of −3000 W: at most 3000 W), and it refuses to
consume. A ``"hybrid"`` inverter's AC power is its battery's minus its PV production: its
setpoint commands the battery, its measured power includes the PV, as the spec says a hybrid
inverter's does. Production is negative power (the API's passive sign convention).

**The site itself** (``[microgrid]``, :class:`MicrogridSpec`) is what ``GetMicrogrid`` /
``GetMicrogridMetadata`` answer: the microgrid's id, enterprise, name, location, delivery area,
status and creation time. Every field has a default, so every scenario answers.

Every key has one name, its TOML path (``battery[0].soc_pct``, ``faults.2001.command_error``),
and every invariant is checked by the value types themselves, so a scenario built in Python and
one read from a file fail the same way: a :class:`ScenarioError` that names the key (and the file,
when there is one). The parser only adds what a file can get wrong on top: unknown keys and wrong
types.

Components come from exactly one source: explicit ``[[battery]]``/``[[inverter]]`` tables, or a
uniform fleet (``[fleet]``, ``--batteries N``; see :func:`uniform_fleet`), never both, so that
every key in an error message points into the file.

Pure: no IO (the caller reads the file), no clock, no grpc.
"""

from __future__ import annotations

import datetime
import itertools
import math
import random
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from distributord.core.errors import ScenarioError
from distributord.core.topology import PASS_THROUGH, Category, Component, InverterType
from distributord.core.values import is_integer, is_number

GRID_ID = 1
"""The grid connection point: the root of the component graph."""

METER_ID = 2
"""The site meter, between the grid and every inverter."""

FLEET_BATTERY_BASE = 1000
"""Fleet batteries are 1001..1000+n: four digits, so ids line up in the demo's tables."""

FLEET_INVERTER_BASE = 2000
"""Fleet inverters are 2001..2000+n: battery id + 1000, easy to pair by eye."""

MAX_FLEET = FLEET_INVERTER_BASE - FLEET_BATTERY_BASE
"""Beyond 1000 batteries the battery ids would run into the inverter ids."""

DEFAULT_FLEET = 4
"""Batteries in the fleet when nothing says how many: enough for convergence to show."""

FLEET_SOC_RANGE = (20.0, 80.0)
"""Fleet SoCs are spread (by the seed) inside this range, well inside the default SoC bounds."""

DEFAULT_SPEED = 1.0
"""Real time. The demo uses e.g. 60 so that SoC moves visibly within minutes."""

DEFAULT_TELEMETRY_HZ = 10.0
"""The spec's default telemetry rate."""

MAX_TELEMETRY_HZ = 100.0
"""Faster than any daemon needs; keeps the tick period (10 ms) above the cost of one tick."""

DEFAULT_AC_FREQUENCY_HZ = 50.0
"""The grid's frequency unless the scenario says otherwise (Europe's, where the API is used)."""

DEFAULT_AC_VOLTAGE_V = 230.0
"""Each phase's voltage to neutral unless the scenario says otherwise (a European low-voltage
grid)."""

DEFAULT_AMBIENT_C = 25.0
"""The temperature of an idle battery or inverter unless the scenario says otherwise."""

DEFAULT_DC_VOLTAGE_V = 800.0
"""A battery's DC voltage when full unless it says otherwise (a utility-scale string)."""

STATUS_CODES = frozenset(
    {
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
"""gRPC status code names a command can fail with (``grpc.StatusCode`` without ``OK``, spelled
out so that this module need not import grpc)."""

NAN_METRICS = frozenset({"soc", "capacity", "power"})
"""The metrics a fault can turn into NaN (an inverter has only ``power``)."""

MAX_COMPONENT_ID = 2**64 - 1
"""Component ids are ``uint64`` on the wire, in every version."""

FINAL_REPLIES = frozenset(
    {"SUCCESS", "FAILED", "OVERRIDDEN", "NONE", "APPLIED_NONE", "APPLIED_END"}
)
"""How a v1alpha18/19 set-power reply stream may go on after ``ACCEPTED`` (see
:attr:`Faults.final_reply`; the server maps each to ``api.adapter``'s ``FinalReply`` and
whether the setpoint is applied, so that this module need not import the API layer)."""

METER_DIGIT = 9
"""An inverter's own meter has id ``METER_DIGIT × base + inverter id`` (see the module)."""

MAX_RAMP_S = 86_400.0
"""The longest ramp a scenario may give an inverter (a day: longer than any lifetime)."""

INVERTER_TYPES = frozenset({InverterType.BATTERY, InverterType.HYBRID, InverterType.PV})
"""What a simulated inverter can be; ``unspecified`` is what a version without types reports,
not something an inverter is."""

_PASS_THROUGH_NAMES = ", ".join(sorted(PASS_THROUGH))

MICROGRID_STATUSES = frozenset({"active", "inactive"})
"""What ``microgrid.status`` may say (the API's ``MICROGRID_STATUS_*`` names, lower case)."""

CODE_TYPES = frozenset({"europe_eic", "us_nerc"})
"""How ``microgrid.delivery_area_code`` may be written (the API's ``ENERGY_MARKET_CODE_TYPE_*``
names, lower case)."""

DEFAULT_CREATED_AT = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
"""When the simulated microgrid was created, unless the scenario says: a fixed instant, so that
two runs of one scenario answer alike."""

_COUNTRY_CODE = re.compile(r"[A-Z]{2}")


def _require(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ScenarioError(problem, key=key)


def _check_between(key: str, value: float, low: float, high: float) -> None:
    # `not (low <= value <= high)` also rejects nan.
    _require(low <= value <= high, key, f"must be between {low:g} and {high:g}, got {value!r}")


def _check_id(key: str, value: int) -> None:
    _require(
        0 < value <= MAX_COMPONENT_ID, key, f"must be a positive 64-bit integer, got {value!r}"
    )


def _strings(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _latencies(values: Iterable[float]) -> tuple[float, ...]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ScenarioError(f"must be a list of seconds, got {values!r}", key="command_latencies_s")
    latencies = []
    for value in values:
        # `not (0 <= value)` also rejects nan; inf is a hang.
        _require(
            is_number(value) and value >= 0,
            "command_latencies_s",
            f"must be seconds, 0 or more (inf: hang), got {value!r}",
        )
        try:
            latencies.append(float(value))
        except OverflowError:  # an int too large for a float: as good as a hang
            latencies.append(math.inf)
    return tuple(latencies)


def _inverter_type(value: str) -> InverterType:
    if value not in INVERTER_TYPES:
        known = ", ".join(repr(t.value) for t in sorted(INVERTER_TYPES))
        raise ScenarioError(f"must be one of {known}, got {value!r}", key="type")
    return InverterType(value)


def _pass_through(values: Iterable[str]) -> tuple[Category, ...]:
    if isinstance(values, str):  # a bare string is a sequence of letters, not of names
        raise ScenarioError(f"must be a list of categories, got {values!r}", key="between")
    chain = tuple(values)
    for value in chain:
        if value not in PASS_THROUGH:
            raise ScenarioError(
                f"{value!r} is not a pass-through category; known: {_PASS_THROUGH_NAMES}",
                key="between",
            )
    return tuple(Category(value) for value in chain)


@attrs.frozen(kw_only=True)
class Faults:
    """What goes wrong with one component. The default is nothing.

    Attributes:
        command_latency_s: Each command waits this long before it is handled.
        command_latencies_s: The latencies of the next commands, one each, in order, before
            :attr:`command_latency_s` takes over again: ``(0, 30, 0)`` answers the next command
            at once, the one after 30 s later, and so on. Each command that arrives takes the
            first (the simulator's faults then hold the rest), whichever version it came
            through. ``math.inf`` (TOML ``inf``) makes that command hang until the client
            cancels it. Handled means decided: an applied setpoint is applied after its
            latency, and a command cancelled during it is not applied.
        command_error: Each command fails with this gRPC status code name (after the latency).
            ``"OUT_OF_RANGE"`` and ``"INVALID_ARGUMENT"`` are refusals (v1alpha18/19 answer
            ``REJECTED``); any other code ends the call with that status in every version.
        command_hang: Each command waits until the client cancels it (after the latency).
        nan_metrics: These metrics (``"soc"``, ``"capacity"``, ``"power"``) are sent as NaN.
        missing_bounds: The power metric is sent without bounds; a battery's SoC too.
        error_state: States are ``[ERROR]`` and errors ``["internal"]``.
        stream_silence: Streams stay open but nothing is sent on them.
        refuse_streams: New streams fail with ``UNAVAILABLE`` at once.
        reported_capacity_wh: A battery reports this capacity instead of its own (the physics
            keeps its own); lets a test show a battery that claims 0 Wh.
        power_offset_w: An inverter reports this much more AC power than its setpoint makes it
            apply (the physics keeps its own); lets a test show measured power that no command
            of the daemon explains, such as an inverter in an error state that still carries
            power.
        final_reply: How an inverter's v1alpha18/19 set-power reply stream goes on after
            ``ACCEPTED``, and whether the setpoint is applied:

            * ``"SUCCESS"``: applied; the final reply ``SUCCESS``, then the stream ends;
            * ``"FAILED"``, ``"OVERRIDDEN"``: not applied; that final reply, then the end;
            * ``"NONE"``: not applied; no final reply, the stream stays open until the client
              cancels it;
            * ``"APPLIED_NONE"``: applied (what a real inverter may do); no final reply, the
              stream stays open until the client cancels it;
            * ``"APPLIED_END"``: applied; no final reply, the stream ends right after
              ``ACCEPTED``.

            Only commands the inverter accepts get that far; v1 has no reply stream and
            ignores this fault (its commands are applied).
        clock_offset_s: The component's clock is this far ahead of the true time (negative:
            behind): its samples' ``sampled_at`` is shifted by it. ``-30`` is a microgrid
            clock 30 s behind.
        ramp_s: How long an inverter ramps: its v1alpha18/19 reply stream answers ``ACCEPTED``
            at once and its final reply (``final_reply``: ``SUCCESS``, ``FAILED`` or
            ``OVERRIDDEN``) this many seconds later. A newer command accepted by the inverter
            meanwhile ends the ramp at once with ``OVERRIDDEN``, as a real inverter does. 0 (the
            default): the final reply follows ``ACCEPTED`` at once. v1 ignores it.
    """

    command_latency_s: float = 0.0
    command_latencies_s: tuple[float, ...] = attrs.field(default=(), converter=_latencies)
    command_error: str | None = None
    command_hang: bool = False
    nan_metrics: frozenset[str] = attrs.field(default=frozenset(), converter=_strings)
    missing_bounds: bool = False
    error_state: bool = False
    stream_silence: bool = False
    refuse_streams: bool = False
    reported_capacity_wh: float | None = None
    power_offset_w: float = 0.0
    final_reply: str = "SUCCESS"
    clock_offset_s: float = 0.0
    ramp_s: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.reported_capacity_wh is not None:
            _check_between("reported_capacity_wh", self.reported_capacity_wh, 0.0, math.inf)
        _require(math.isfinite(self.clock_offset_s), "clock_offset_s", "must be finite")
        _check_between("command_latency_s", self.command_latency_s, 0.0, math.inf)
        _check_between("ramp_s", self.ramp_s, 0.0, MAX_RAMP_S)
        _require(
            math.isfinite(self.power_offset_w),
            "power_offset_w",
            f"must be a finite number of watts, got {self.power_offset_w!r}",
        )
        _require(
            self.command_latency_s != math.inf, "command_latency_s", "must be finite (use hang)"
        )
        _require(
            self.command_error is None or self.command_error in STATUS_CODES,
            "command_error",
            f"must be a gRPC status code name such as 'UNAVAILABLE', got {self.command_error!r}",
        )
        unknown = self.nan_metrics - NAN_METRICS
        _require(
            not unknown,
            "nan_metrics",
            f"unknown metrics {sorted(unknown)}; known: {sorted(NAN_METRICS)}",
        )
        _require(
            self.final_reply in FINAL_REPLIES,
            "final_reply",
            f"must be one of {', '.join(sorted(FINAL_REPLIES))}, got {self.final_reply!r}",
        )


@attrs.frozen(kw_only=True)
class BatterySpec:
    """One battery.

    Attributes:
        id: Component id.
        soc_pct: State of charge at start, %.
        soc_lower_pct: Below or at this SoC it cannot discharge, %.
        soc_upper_pct: Above or at this SoC it cannot charge, %.
        capacity_wh: Usable capacity, Wh.
        power_limit_w: It takes at most this much power either way, W.
        dc_voltage_v: Its DC voltage when full, V; it falls linearly with the SoC to 90 % of
            this when empty (the simulator streams voltage and current = power / voltage).
    """

    id: int
    soc_pct: float
    soc_lower_pct: float = 10.0
    soc_upper_pct: float = 90.0
    capacity_wh: float = 10_000.0
    power_limit_w: float = 5_000.0
    dc_voltage_v: float = DEFAULT_DC_VOLTAGE_V

    def __attrs_post_init__(self) -> None:
        _check_id("id", self.id)
        _check_between("soc_pct", self.soc_pct, 0.0, 100.0)
        _check_between("soc_lower_pct", self.soc_lower_pct, 0.0, 100.0)
        _check_between("soc_upper_pct", self.soc_upper_pct, 0.0, 100.0)
        _require(
            self.soc_lower_pct < self.soc_upper_pct,
            "soc_upper_pct",
            f"must be above soc_lower_pct ({self.soc_lower_pct:g}), got {self.soc_upper_pct:g}",
        )
        _require(
            0.0 < self.capacity_wh < math.inf,
            "capacity_wh",
            f"must be positive and finite, got {self.capacity_wh!r}",
        )
        _check_between("power_limit_w", self.power_limit_w, 0.0, math.inf)
        _require(self.power_limit_w != math.inf, "power_limit_w", "must be finite")
        _require(
            0.0 < self.dc_voltage_v < math.inf,
            "dc_voltage_v",
            f"must be positive and finite, got {self.dc_voltage_v!r}",
        )


@attrs.frozen(kw_only=True)
class InverterSpec:
    """One inverter.

    Attributes:
        id: Component id.
        batteries: The batteries it feeds: one (a 1:1 pair), several (a hybrid or
            multi-input inverter: it splits its power among them by capacity, see
            ``sim.world``), or none (to test the daemon's topology checks). A battery that
            several inverters name shares their DC bus.
        power_limit_w: It takes at most this much power either way, W.
        exclusion_w: Between 0 and this much power either way is not allowed (0 W itself is),
            W; 0 for none.
        type: What it converts: ``"battery"`` (the default), ``"hybrid"`` (battery and PV) or
            ``"pv"`` (PV only; its batteries, if any, take nothing from it). See the
            module's docstring for what PV changes.
        between: Pass-through components (``"precharger"``, ``"breaker"``, ``"relay"``,
            ``"fuse"``) between it and its batteries, from the inverter's side; their ids are
            generated (see the module's docstring).
        meter: A meter of its own in front of it (see the module's docstring).
        pv_power_w: What its PV produces when nothing limits it, W, 0 or more (``"pv"`` and
            ``"hybrid"`` inverters only).
        reactive_limit_var: It takes reactive-power commands within ``[-this, +this]``, var;
            None (the default): its :attr:`power_limit_w`.
        apparent_limit_va: Its apparent-power limit ``S``, VA: it keeps ``P² + Q² <= S²``
            (refuses a command beyond ``S`` on its own, curtails its reactive power to
            ``√(S² − P²)``) and reports the apparent-power bounds ``[0, S]``; None (the
            default): no limit beyond its active and reactive ones, none reported.
        ramp_w_per_s: How fast the power it applies follows its setpoint, W/s, positive:
            linearly from what it applies toward what it holds (toward 0 after an expiry),
            as a real inverter ramps (``spec/plant.md``, "Ramp rates"). None (the default):
            at once. Not for a ``"pv"`` inverter, whose production limit applies at once.
    """

    id: int
    batteries: tuple[int, ...]
    power_limit_w: float = 5_000.0
    exclusion_w: float = 0.0
    type: InverterType = attrs.field(default=InverterType.BATTERY, converter=_inverter_type)
    between: tuple[Category, ...] = attrs.field(default=(), converter=_pass_through)
    meter: bool = False
    pv_power_w: float = 0.0
    reactive_limit_var: float | None = None
    apparent_limit_va: float | None = None
    ramp_w_per_s: float | None = None

    @property
    def reactive_limit(self) -> float:
        """The reactive-power limit in effect, var (:attr:`reactive_limit_var` or its default)."""
        return self.power_limit_w if self.reactive_limit_var is None else self.reactive_limit_var

    def __attrs_post_init__(self) -> None:
        _check_id("id", self.id)
        if self.reactive_limit_var is not None:
            _check_between("reactive_limit_var", self.reactive_limit_var, 0.0, math.inf)
            _require(self.reactive_limit_var != math.inf, "reactive_limit_var", "must be finite")
        if self.apparent_limit_va is not None:
            _check_between("apparent_limit_va", self.apparent_limit_va, 0.0, math.inf)
            _require(self.apparent_limit_va != math.inf, "apparent_limit_va", "must be finite")
        _require(
            self.meter is True or self.meter is False,
            "meter",
            f"must be true or false, got {self.meter!r}",
        )
        _require(
            not self.meter or len(self.between) < METER_DIGIT,
            "between",
            f"at most {METER_DIGIT - 1} components in front of a metered inverter",
        )
        _check_ramp_rate("ramp_w_per_s", self.ramp_w_per_s)
        _require(
            self.ramp_w_per_s is None or self.type is not InverterType.PV,
            "ramp_w_per_s",
            "a 'pv' inverter does not ramp: its production limit applies at once",
        )
        _check_between("pv_power_w", self.pv_power_w, 0.0, math.inf)
        _require(self.pv_power_w != math.inf, "pv_power_w", "must be finite")
        _require(
            self.pv_power_w == 0.0 or self.type is not InverterType.BATTERY,
            "pv_power_w",
            "only a 'pv' or 'hybrid' inverter has PV",
        )
        _require(
            len(set(self.batteries)) == len(self.batteries),
            "batteries",
            f"names a battery twice: {list(self.batteries)}",
        )
        _check_between("power_limit_w", self.power_limit_w, 0.0, math.inf)
        _require(self.power_limit_w != math.inf, "power_limit_w", "must be finite")
        _check_between("exclusion_w", self.exclusion_w, 0.0, self.power_limit_w)


def _check_ramp_rate(key: str, rate: float | None) -> None:
    """A ramp rate is ``None`` (no ramp) or a positive, finite number of W/s."""
    _require(
        rate is None or (is_number(rate) and 0.0 < rate < math.inf),
        key,
        f"must be a positive, finite number of W/s, got {rate!r}",
    )


def _ids(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(values)


def _limit_specs(values: Iterable[LimitSpec]) -> tuple[LimitSpec, ...]:
    return tuple(values)


LIMIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
"""What a limit's name may be: a letter or digit, then up to 63 of those or ``_.:-``, so that
it can stand in a log line, a metric label or a test's assertion as it is."""


@attrs.frozen(kw_only=True)
class LimitSpec:
    """A limit over a set of inverters: a feeder, a fuse, the grid connection point.

    The sum of the power its inverters hold must stay within ``[-max_discharge_w,
    +max_charge_w]`` (positive charges, as everywhere); ``sim.world`` enforces it and
    ``sim.record`` records what would have broken it. A direction left out is not limited.

    Attributes:
        name: Its name, unique in the scenario (see :data:`LIMIT_NAME`).
        inverters: The inverters it binds (none when :attr:`grid`).
        grid: It binds every inverter: the grid connection point.
        max_charge_w: The most their sum may charge, W, 0 or more (``inf``: not limited).
        max_discharge_w: The most their sum may discharge, W, 0 or more (``inf``: not limited).
    """

    name: str
    inverters: tuple[int, ...] = attrs.field(default=(), converter=_ids)
    grid: bool = False
    max_charge_w: float = math.inf
    max_discharge_w: float = math.inf

    def __attrs_post_init__(self) -> None:
        _require(
            isinstance(self.name, str) and LIMIT_NAME.fullmatch(self.name) is not None,
            "name",
            "must be 1 to 64 letters, digits or _.:- (starting with a letter or digit), "
            f"got {self.name!r}",
        )
        _require(self.grid is True or self.grid is False, "grid", "must be true or false")
        for inverter in self.inverters:
            _require(is_integer(inverter), "inverters", f"must be inverter ids, got {inverter!r}")
        _require(
            len(set(self.inverters)) == len(self.inverters),
            "inverters",
            f"names an inverter twice: {list(self.inverters)}",
        )
        if self.grid:
            _require(
                not self.inverters,
                "inverters",
                "a grid limit binds every inverter: name none (or leave grid out)",
            )
        else:
            _require(
                bool(self.inverters),
                "inverters",
                "must name one or more inverters (or say grid = true)",
            )
        _check_between("max_charge_w", self.max_charge_w, 0.0, math.inf)
        _check_between("max_discharge_w", self.max_discharge_w, 0.0, math.inf)
        _require(
            self.max_charge_w < math.inf or self.max_discharge_w < math.inf,
            "max_charge_w",
            "a limit must limit something: give max_charge_w, max_discharge_w or both",
        )


@attrs.frozen(kw_only=True)
class MicrogridSpec:
    """The microgrid as a whole: what ``GetMicrogrid`` (v1: ``GetMicrogridMetadata``) answers.

    The defaults are a plausible German site (near Berlin), so that a client that checks every
    field (the official client logs a missing location or delivery area as a major issue)
    finds one.

    Attributes:
        id: The microgrid's id, a positive 64-bit integer.
        enterprise_id: The enterprise account it belongs to, a positive 64-bit integer.
        name: Its name (``""``: none, as the API allows).
        latitude: Where it is, degrees north, -90..90. The API carries it as a 32-bit float:
            a client reads the nearest one (the defaults are exact in 32 bits).
        longitude: Where it is, degrees east, -180..180 (a 32-bit float too).
        country_code: Its country, ISO 3166-1 alpha-2 (two capital letters).
        delivery_area_code: The delivery area it is in (the default is the German-Luxembourg
            bidding zone's EIC); ``""`` for none: an island, which belongs to no delivery area,
            and the API then leaves the field out.
        delivery_area_code_type: How that code is written: ``"europe_eic"`` or ``"us_nerc"``.
        status: ``"active"`` or ``"inactive"``.
        created_at: When it was created (a time zone is required; TOML: an offset date-time
            such as ``2024-01-01T00:00:00Z``).
    """

    id: int = 1
    enterprise_id: int = 1
    name: str = "distributord sim"
    latitude: float = 52.5
    longitude: float = 13.5
    country_code: str = "DE"
    delivery_area_code: str = "10Y1001A1001A82H"
    delivery_area_code_type: str = "europe_eic"
    status: str = "active"
    created_at: datetime.datetime = DEFAULT_CREATED_AT

    def __attrs_post_init__(self) -> None:
        _check_id("id", self.id)
        _check_id("enterprise_id", self.enterprise_id)
        _require(isinstance(self.name, str), "name", f"must be a string, got {self.name!r}")
        _check_between("latitude", self.latitude, -90.0, 90.0)
        _check_between("longitude", self.longitude, -180.0, 180.0)
        _require(
            isinstance(self.country_code, str)
            and _COUNTRY_CODE.fullmatch(self.country_code) is not None,
            "country_code",
            f"must be two capital letters (ISO 3166-1 alpha-2), got {self.country_code!r}",
        )
        _require(
            isinstance(self.delivery_area_code, str),
            "delivery_area_code",
            f"must be a string, got {self.delivery_area_code!r}",
        )
        _require(
            self.delivery_area_code_type in CODE_TYPES,
            "delivery_area_code_type",
            f"must be one of {', '.join(sorted(CODE_TYPES))}, got {self.delivery_area_code_type!r}",
        )
        _require(
            self.status in MICROGRID_STATUSES,
            "status",
            f"must be one of {', '.join(sorted(MICROGRID_STATUSES))}, got {self.status!r}",
        )
        _require(
            isinstance(self.created_at, datetime.datetime)
            and self.created_at.utcoffset() is not None,
            "created_at",
            f"must be a date-time with a time zone, got {self.created_at!r}",
        )


def _faults_map(faults: Mapping[int, Faults]) -> dict[int, Faults]:
    return dict(faults)


@attrs.frozen(kw_only=True)
class Scenario:
    """A simulated microgrid.

    Attributes:
        batteries: The batteries.
        inverters: The inverters, each naming the batteries it feeds.
        faults: Component id (battery or inverter) to its faults at start.
        speed: SoC moves this many times faster than real time.
        telemetry_hz: Telemetry messages per second on each stream.
        ac_frequency_hz: The grid's frequency, Hz, as every AC component streams it.
        ac_voltage_v: Each phase's voltage to neutral, V, as every AC component streams it.
        ambient_temperature_c: The temperature of an idle battery or inverter, °C; one
            carrying power is warmer (see ``sim.world``).
        microgrid: The site as a whole (``[microgrid]``): id, name, location, ...
        limits: Limits over sets of inverters (``[[limits]]``), in the scenario's order.
    """

    batteries: tuple[BatterySpec, ...]
    inverters: tuple[InverterSpec, ...]
    faults: Mapping[int, Faults] = attrs.field(factory=dict, converter=_faults_map)
    speed: float = DEFAULT_SPEED
    telemetry_hz: float = DEFAULT_TELEMETRY_HZ
    ac_frequency_hz: float = DEFAULT_AC_FREQUENCY_HZ
    ac_voltage_v: float = DEFAULT_AC_VOLTAGE_V
    ambient_temperature_c: float = DEFAULT_AMBIENT_C
    microgrid: MicrogridSpec = attrs.field(factory=MicrogridSpec)
    limits: tuple[LimitSpec, ...] = attrs.field(default=(), converter=_limit_specs)

    def __attrs_post_init__(self) -> None:
        _require(
            0.0 < self.ac_frequency_hz < math.inf,
            "simulation.ac_frequency_hz",
            f"must be positive and finite, got {self.ac_frequency_hz!r}",
        )
        _require(
            0.0 < self.ac_voltage_v < math.inf,
            "simulation.ac_voltage_v",
            f"must be positive and finite, got {self.ac_voltage_v!r}",
        )
        _check_between("simulation.ambient_temperature_c", self.ambient_temperature_c, -100, 100)
        _require(
            0.0 < self.speed < math.inf,
            "simulation.speed",
            f"must be positive and finite, got {self.speed!r}",
        )
        _require(
            0.0 < self.telemetry_hz <= MAX_TELEMETRY_HZ,
            "simulation.telemetry_hz",
            f"must be above 0 and at most {MAX_TELEMETRY_HZ:g}, got {self.telemetry_hz!r}",
        )
        seen = {GRID_ID: "the grid", METER_ID: "the meter"}
        ids = [(f"battery[{i}].id", b.id) for i, b in enumerate(self.batteries)]
        ids += [(f"inverter[{i}].id", inv.id) for i, inv in enumerate(self.inverters)]
        for key, cid in ids:
            _require(cid not in seen, key, f"{cid} is taken by {seen.get(cid)}")
            seen[cid] = key
        batteries = {b.id for b in self.batteries}
        for index, inverter in enumerate(self.inverters):
            missing = sorted(set(inverter.batteries) - batteries)
            _require(
                not missing,
                f"inverter[{index}].batteries",
                f"names batteries that do not exist: {missing}",
            )
        base = self._chain_base()
        for index, inverter in enumerate(self.inverters):
            top = base * (METER_DIGIT if inverter.meter else len(inverter.between))
            _require(
                top == 0 or top + inverter.id <= MAX_COMPONENT_ID,
                f"inverter[{index}].{'meter' if inverter.meter else 'between'}",
                "the generated ids would not fit in 64 bits; use smaller battery and inverter ids",
            )
        inverters = {i.id for i in self.inverters}
        names: set[str] = set()
        for index, limit in enumerate(self.limits):
            _require(
                limit.name not in names,
                f"limits[{index}].name",
                f"{limit.name!r} names another limit already",
            )
            names.add(limit.name)
            unknown = sorted(set(limit.inverters) - inverters)
            _require(
                not unknown,
                f"limits[{index}].inverters",
                f"names inverters that do not exist: {unknown}",
            )
        for component in self.faults:
            _require(
                component in batteries or component in inverters,
                f"faults.{component}",
                "faults can only be given for a battery or an inverter of the scenario",
            )

    def components(self) -> list[tuple[int, Component]]:
        """Every component: grid and meters first, then inverters, pass-through, batteries."""
        return [
            (GRID_ID, Component(Category.GRID)),
            (METER_ID, Component(Category.METER)),
            *((cid, Component(Category.METER)) for cid in self.meters()),
            *((i.id, Component(Category.INVERTER, i.type)) for i in self.inverters),
            *((cid, Component(category)) for cid, category, _ in self.pass_through()),
            *((b.id, Component(Category.BATTERY)) for b in self.batteries),
        ]

    def connections(self) -> list[tuple[int, int]]:
        """``(source, destination)`` edges, directed away from the grid."""
        fed = {battery for inverter in self.inverters for battery in inverter.batteries}
        chains = self.chains()
        meters = {inverter: meter for meter, inverter in self.meters().items()}
        edges = [(GRID_ID, METER_ID)]
        for inverter in self.inverters:
            front = (meters[inverter.id],) if inverter.meter else ()
            path = (METER_ID, *front, inverter.id, *chains[inverter.id])
            edges.extend(itertools.pairwise(path))
            edges.extend((path[-1], battery) for battery in inverter.batteries)
        # A battery no inverter feeds hangs off the meter: connected, but not commandable.
        edges.extend((METER_ID, b.id) for b in self.batteries if b.id not in fed)
        return edges

    def groups(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """The connected components of the battery–inverter graph (see the module).

        Returns:
            ``(batteries, inverters)`` per group, each sorted, groups in the order of their
            smallest battery (then inverter) id. A battery no inverter names is a group
            without inverters; an inverter that names no battery one without batteries.
        """
        parent: dict[tuple[str, int], tuple[str, int]] = {}

        def root(node: tuple[str, int]) -> tuple[str, int]:
            while parent.setdefault(node, node) != node:
                parent[node] = parent[parent[node]]  # halve the path
                node = parent[node]
            return node

        for battery in self.batteries:
            root(("b", battery.id))
        for inverter in self.inverters:
            mine = root(("i", inverter.id))
            for battery_id in inverter.batteries:
                parent[root(("b", battery_id))] = mine
                mine = root(mine)
        members: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        for node in parent:
            batteries, inverters = members.setdefault(root(node), ([], []))
            (batteries if node[0] == "b" else inverters).append(node[1])
        groups = [(tuple(sorted(b)), tuple(sorted(i))) for b, i in members.values()]
        return sorted(groups, key=lambda group: (group[0] or (math.inf,), group[1]))

    def limit_members(self) -> dict[str, tuple[int, ...]]:
        """Each limit's name to the inverters it binds (every inverter for a grid limit)."""
        every = tuple(i.id for i in self.inverters)
        return {limit.name: every if limit.grid else limit.inverters for limit in self.limits}

    def chains(self) -> dict[int, tuple[int, ...]]:
        """Inverter id to the ids of its pass-through chain, from the inverter's side."""
        base = self._chain_base()
        return {
            inverter.id: tuple(k * base + inverter.id for k in range(1, len(inverter.between) + 1))
            for inverter in self.inverters
        }

    def meters(self) -> dict[int, int]:
        """Each inverter's own meter (see the module's docstring): meter id to inverter id."""
        base = self._chain_base()
        return {METER_DIGIT * base + i.id: i.id for i in self.inverters if i.meter}

    def pass_through(self) -> list[tuple[int, Category, int]]:
        """Every pass-through component: ``(id, category, the inverter whose chain it is in)``."""
        chains = self.chains()
        return [
            (cid, category, inverter.id)
            for inverter in self.inverters
            for cid, category in zip(chains[inverter.id], inverter.between, strict=True)
        ]

    def _chain_base(self) -> int:
        """The smallest power of ten above every battery and inverter id (at least 10)."""
        ids = itertools.chain((b.id for b in self.batteries), (i.id for i in self.inverters))
        top = max(ids, default=METER_ID)
        base = 10
        while base <= top:
            base *= 10
        return base


def uniform_fleet(
    n: int,
    *,
    seed: int,
    between: Iterable[str] = (),
    meters: bool = False,
    ramp_w_per_s: float | None = None,
) -> Scenario:
    """``n`` batteries, each with its own inverter, default limits, SoCs spread by ``seed``.

    Batteries are 1001..1000+n, inverters 2001..2000+n (inverter = battery + 1000). The SoC of
    each is drawn uniformly from 20..80 % (rounded to 0.1 %) by a generator seeded with
    ``seed``, so the same seed gives the same fleet. ``between`` puts the same pass-through
    chain between every inverter and its battery (ids 12001.., 22001..; see the module);
    ``meters`` a meter in front of every inverter (ids 92001..); ``ramp_w_per_s`` the same
    ramp rate on every inverter (:attr:`InverterSpec.ramp_w_per_s`).

    Raises:
        ScenarioError: ``n`` is not in 1..1000 (key ``batteries``), ``between`` names
            something that is not a pass-through category (key ``between``), or the ramp
            rate is not a positive, finite number (key ``ramp_w_per_s``).
    """
    chain = _pass_through(between)
    _check_ramp_rate("ramp_w_per_s", ramp_w_per_s)
    _require(
        isinstance(n, int) and 1 <= n <= MAX_FLEET,
        "batteries",
        f"must be between 1 and {MAX_FLEET}, got {n!r}",
    )
    rng = random.Random(seed)
    low, high = FLEET_SOC_RANGE
    batteries = tuple(
        BatterySpec(id=FLEET_BATTERY_BASE + k, soc_pct=round(rng.uniform(low, high), 1))
        for k in range(1, n + 1)
    )
    inverters = tuple(
        InverterSpec(
            id=FLEET_INVERTER_BASE + k,
            batteries=(FLEET_BATTERY_BASE + k,),
            between=chain,
            meter=meters,
            ramp_w_per_s=ramp_w_per_s,
        )
        for k in range(1, n + 1)
    )
    return Scenario(batteries=batteries, inverters=inverters)


def _pairs(
    ids: Iterable[tuple[int, int]],
) -> tuple[tuple[BatterySpec, ...], tuple[InverterSpec, ...]]:
    """1:1 pairs with default limits, ``(battery id, inverter id)`` each, SoCs 40, 50, 60, ..."""
    pairs = tuple(ids)
    batteries = tuple(
        BatterySpec(id=battery, soc_pct=40.0 + 10.0 * (k % 5))
        for k, (battery, _) in enumerate(pairs)
    )
    inverters = tuple(
        InverterSpec(id=inverter, batteries=(battery,)) for battery, inverter in pairs
    )
    return batteries, inverters


def shared_dc_bus() -> Scenario:
    """``"shared-dc-bus"``: battery 1001 on inverters 2001 and 2002, and two 1:1 pairs.

    Battery 1001 (20 kWh, 10 kW, SoC 50 %) is one string on a DC bus that inverters 2001 and
    2002 (5 kW each) share; batteries 1002 and 1003 (10 kWh, 5 kW) have inverters 2003 and 2004
    of their own.
    """
    batteries, inverters = _pairs(((1002, 2003), (1003, 2004)))
    return Scenario(
        batteries=(
            BatterySpec(id=1001, soc_pct=50.0, capacity_wh=20_000.0, power_limit_w=10_000.0),
            *batteries,
        ),
        inverters=(
            InverterSpec(id=2001, batteries=(1001,)),
            InverterSpec(id=2002, batteries=(1001,)),
            *inverters,
        ),
    )


def two_on_one() -> Scenario:
    """``"two-on-one"``: batteries 1001 and 1002 behind inverter 2001, and a 1:1 pair.

    Inverter 2001 (10 kW) feeds battery 1001 (10 kWh, 5 kW, SoC 40 %) and battery 1002
    (20 kWh, 10 kW, SoC 60 %): it splits its power 1:2 between them. Battery 1003 (10 kWh,
    5 kW) has inverter 2002 of its own.
    """
    batteries, inverters = _pairs(((1003, 2002),))
    return Scenario(
        batteries=(
            BatterySpec(id=1001, soc_pct=40.0),
            BatterySpec(id=1002, soc_pct=60.0, capacity_wh=20_000.0, power_limit_w=10_000.0),
            *batteries,
        ),
        inverters=(
            InverterSpec(id=2001, batteries=(1001, 1002), power_limit_w=10_000.0),
            *inverters,
        ),
    )


def two_on_three() -> Scenario:
    """``"two-on-three"``: batteries 1001 and 1002 on inverters 2001..2003, and a 1:1 pair.

    Inverter 2001 feeds battery 1001, 2003 battery 1002, and 2002 both: one group of two
    batteries (10 kWh, 5 kW each; SoC 40 and 60 %) and three inverters (5 kW each). Battery
    1003 has inverter 2004 of its own.
    """
    batteries, inverters = _pairs(((1003, 2004),))
    return Scenario(
        batteries=(
            BatterySpec(id=1001, soc_pct=40.0),
            BatterySpec(id=1002, soc_pct=60.0),
            *batteries,
        ),
        inverters=(
            InverterSpec(id=2001, batteries=(1001,)),
            InverterSpec(id=2002, batteries=(1001, 1002)),
            InverterSpec(id=2003, batteries=(1002,)),
            *inverters,
        ),
    )


def feeder() -> Scenario:
    """``"feeder"``: four 1:1 pairs, a feeder limit over two of them and a grid limit.

    Batteries 1001..1004 (10 kWh, 5 kW) on inverters 2001..2004 (5 kW). The limit
    ``"feeder"`` binds 2001 and 2002 to 6 kW either way (less than their 10 kW), the limit
    ``"grid"`` every inverter to 15 kW either way (less than their 20 kW).
    """
    batteries, inverters = _pairs((1000 + k, 2000 + k) for k in range(1, 5))
    return Scenario(
        batteries=batteries,
        inverters=inverters,
        limits=(
            LimitSpec(
                name="feeder", inverters=(2001, 2002), max_charge_w=6000.0, max_discharge_w=6000.0
            ),
            LimitSpec(name="grid", grid=True, max_charge_w=15_000.0, max_discharge_w=15_000.0),
        ),
    )


NAMED_SCENARIOS: Mapping[str, Callable[[], Scenario]] = {
    "shared-dc-bus": shared_dc_bus,
    "two-on-one": two_on_one,
    "two-on-three": two_on_three,
    "feeder": feeder,
}
"""The named N:M and limit scenarios (see the module's docstring), by name."""


def named_scenario(name: str) -> Scenario:
    """One of :data:`NAMED_SCENARIOS`.

    Raises:
        ScenarioError: No scenario has that name (the message lists those that do).
    """
    try:
        make = NAMED_SCENARIOS[name]
    except KeyError:
        known = ", ".join(repr(n) for n in NAMED_SCENARIOS)
        raise ScenarioError(f"no scenario is named {name!r}; known: {known}") from None
    return make()


# --- the TOML format ------------------------------------------------------------------------

_T = TypeVar("_T")

_TOP_KEYS = frozenset(
    {"simulation", "fleet", "battery", "inverter", "faults", "microgrid", "limits"}
)
_LIMIT_KEYS = frozenset({"name", "inverters", "grid", "max_charge_w", "max_discharge_w"})
_SIMULATION_KEYS = frozenset(
    {"speed", "telemetry_hz", "seed", "ac_frequency_hz", "ac_voltage_v", "ambient_temperature_c"}
)
_FLEET_KEYS = frozenset({"batteries", "between", "meters", "ramp_w_per_s"})


def parse_scenario(
    data: bytes,
    *,
    source: str = "<scenario>",
    batteries: int | None = None,
    seed: int | None = None,
) -> Scenario:
    """Parse a scenario file (the format is documented in ``config/sim-scenario.toml``).

    Args:
        data: The file's contents.
        source: The file's name, for error messages.
        batteries: ``--batteries``: the fleet's size, overriding ``fleet.batteries``.
        seed: ``--seed``: overrides ``simulation.seed``.

    Returns:
        The scenario. Without ``[[battery]]``/``[[inverter]]`` tables the components are a
        uniform fleet of ``batteries`` (or ``fleet.batteries``, or 4) batteries.

    Raises:
        ScenarioError: The file is not TOML, has an unknown key, a value of the wrong type or out
            of range, or contradicts itself; the message names the file and the key.
    """
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ScenarioError(f"not a valid TOML file: {error}", source=source) from None
    try:
        return _scenario(doc, batteries=batteries, seed=seed)
    except ScenarioError as error:
        raise error.within(source=source) from None


def _scenario(doc: dict[str, Any], *, batteries: int | None, seed: int | None) -> Scenario:
    _known(doc, _TOP_KEYS, "")
    simulation = _table(doc, "simulation")
    _known(simulation, _SIMULATION_KEYS, "simulation")
    fleet = _table(doc, "fleet")
    _known(fleet, _FLEET_KEYS, "fleet")
    settings: dict[str, Any] = {}
    for key in _SIMULATION_KEYS - {"seed"}:
        if key in simulation:
            settings[key] = _float(simulation[key], f"simulation.{key}")
    if seed is None:
        seed = _int(simulation.get("seed", 0), "simulation.seed")
    settings["microgrid"] = _microgrid(doc.get("microgrid", {}), "microgrid")
    settings["limits"] = tuple(
        _limit(table, f"limits[{i}]") for i, table in enumerate(_array_of_tables(doc, "limits"))
    )
    faults = {
        _component_id(key): _build(Faults, _faults_fields(table, f"faults.{key}"), f"faults.{key}")
        for key, table in _table(doc, "faults").items()
    }
    battery_tables = _array_of_tables(doc, "battery")
    inverter_tables = _array_of_tables(doc, "inverter")
    if battery_tables or inverter_tables:
        if fleet:
            raise ScenarioError(
                "cannot be combined with [[battery]]/[[inverter]] tables", key="fleet"
            )
        if batteries is not None:
            raise ScenarioError(
                "the scenario lists its batteries; --batteries cannot be combined with it",
                key="battery",
            )
        return _build(
            Scenario,
            {
                "batteries": tuple(
                    _battery(table, f"battery[{i}]") for i, table in enumerate(battery_tables)
                ),
                "inverters": tuple(
                    _inverter(table, f"inverter[{i}]") for i, table in enumerate(inverter_tables)
                ),
                "faults": faults,
                **settings,
            },
            "",
        )
    if batteries is None:
        size = _int(fleet.get("batteries", DEFAULT_FLEET), "fleet.batteries")
    else:
        size = batteries
    between = _strings_list(fleet.get("between", []), "fleet.between")
    try:
        chain = _pass_through(between)
    except ScenarioError as error:
        raise error.within("fleet") from None
    meters = _bool(fleet.get("meters", False), "fleet.meters")
    ramp = fleet.get("ramp_w_per_s")
    ramp = None if ramp is None else _float(ramp, "fleet.ramp_w_per_s")
    _check_ramp_rate("fleet.ramp_w_per_s", ramp)  # here, not blamed on --batteries below
    try:
        base = uniform_fleet(size, seed=seed, between=chain, meters=meters, ramp_w_per_s=ramp)
    except ScenarioError as error:
        if batteries is not None:  # blame whichever gave the size: the flag beats the file
            raise ScenarioError(error.problem, source="--batteries") from None
        raise error.within("fleet") from None
    return _build(Scenario, {**attrs.asdict(base, recurse=False), **settings, "faults": faults}, "")


def _battery(table: Any, path: str) -> BatterySpec:
    if not isinstance(table, dict):
        raise ScenarioError("must be a table", key=path)
    fields: dict[str, Any] = {}
    for key, value in table.items():
        if key == "id":
            fields[key] = _int(value, f"{path}.{key}")
        elif key in {
            "soc_pct",
            "soc_lower_pct",
            "soc_upper_pct",
            "capacity_wh",
            "power_limit_w",
            "dc_voltage_v",
        }:
            fields[key] = _float(value, f"{path}.{key}")
        else:
            raise ScenarioError("unknown key", key=f"{path}.{key}")
    for required in ("id", "soc_pct"):
        if required not in fields:
            raise ScenarioError("is required", key=f"{path}.{required}")
    return _build(BatterySpec, fields, path)


def _inverter(table: Any, path: str) -> InverterSpec:
    if not isinstance(table, dict):
        raise ScenarioError("must be a table", key=path)
    fields: dict[str, Any] = {}
    for key, value in table.items():
        if key == "id":
            fields[key] = _int(value, f"{path}.{key}")
        elif key == "batteries":
            if not isinstance(value, list):
                raise ScenarioError("must be a list of battery ids", key=f"{path}.{key}")
            fields[key] = tuple(_int(item, f"{path}.{key}") for item in value)
        elif key in {
            "power_limit_w",
            "exclusion_w",
            "pv_power_w",
            "reactive_limit_var",
            "apparent_limit_va",
            "ramp_w_per_s",
        }:
            fields[key] = _float(value, f"{path}.{key}")
        elif key == "meter":
            fields[key] = _bool(value, f"{path}.{key}")
        elif key == "type":
            fields[key] = _string(value, f"{path}.{key}")
        elif key == "between":
            fields[key] = _strings_list(value, f"{path}.{key}")
        else:
            raise ScenarioError("unknown key", key=f"{path}.{key}")
    for required in ("id", "batteries"):
        if required not in fields:
            raise ScenarioError("is required", key=f"{path}.{required}")
    return _build(InverterSpec, fields, path)


def _limit(table: Any, path: str) -> LimitSpec:
    if not isinstance(table, dict):
        raise ScenarioError("must be a table", key=path)
    _known(table, _LIMIT_KEYS, path)
    fields: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}.{key}"
        if key == "name":
            fields[key] = _string(value, where)
        elif key == "inverters":
            if not isinstance(value, list):
                raise ScenarioError("must be a list of inverter ids", key=where)
            fields[key] = tuple(_int(item, where) for item in value)
        elif key == "grid":
            fields[key] = _bool(value, where)
        else:  # max_charge_w, max_discharge_w: inf (not limited) is allowed
            if not is_number(value) or math.isnan(value):
                raise ScenarioError(f"must be a number, got {value!r}", key=where)
            fields[key] = float(value)
    if "name" not in fields:
        raise ScenarioError("is required", key=f"{path}.name")
    return _build(LimitSpec, fields, path)


def _microgrid(table: Any, path: str) -> MicrogridSpec:
    if not isinstance(table, dict):
        raise ScenarioError("must be a table ([microgrid])", key=path)
    fields: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}.{key}"
        if key in {"id", "enterprise_id"}:
            fields[key] = _int(value, where)
        elif key in {"latitude", "longitude"}:
            fields[key] = _float(value, where)
        elif key in {
            "name",
            "country_code",
            "delivery_area_code",
            "delivery_area_code_type",
            "status",
        }:
            fields[key] = _string(value, where)
        elif key == "created_at":
            if not isinstance(value, datetime.datetime):
                raise ScenarioError(
                    f"must be an offset date-time such as 2024-01-01T00:00:00Z, got {value!r}",
                    key=where,
                )
            fields[key] = value
        else:
            raise ScenarioError("unknown key", key=where)
    return _build(MicrogridSpec, fields, path)


def _faults_fields(table: Any, path: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ScenarioError("must be a table", key=path)
    fields: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}.{key}"
        if key in {
            "command_latency_s",
            "reported_capacity_wh",
            "clock_offset_s",
            "ramp_s",
            "power_offset_w",
        }:
            fields[key] = _float(value, where)
        elif key == "command_latencies_s":
            if not isinstance(value, list):
                raise ScenarioError(f"must be a list of seconds, got {value!r}", key=where)
            fields[key] = value  # each checked by Faults itself
        elif key in {"command_error", "final_reply"}:
            fields[key] = _string(value, where)
        elif key == "nan_metrics":
            fields[key] = frozenset(_strings_list(value, where))
        elif key in {
            "command_hang",
            "missing_bounds",
            "error_state",
            "stream_silence",
            "refuse_streams",
        }:
            fields[key] = _bool(value, where)
        else:
            raise ScenarioError("unknown key", key=where)
    return fields


def _build(cls: type[_T], fields: dict[str, Any], path: str) -> _T:
    try:
        return cls(**fields)
    except ScenarioError as error:
        raise error.within(path) from None


def _known(table: dict[str, Any], keys: frozenset[str], path: str) -> None:
    for key in table:
        if key not in keys:
            raise ScenarioError("unknown key", key=f"{path}.{key}" if path else key)


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ScenarioError(f"must be a table ([{key}])", key=key)
    return value


def _array_of_tables(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ScenarioError(f"must be an array of tables ([[{key}]])", key=key)
    return value


def _component_id(key: str) -> int:
    if not key.isdigit() or int(key) <= 0:
        raise ScenarioError("must be a component id, as in [faults.2001]", key=f"faults.{key}")
    return int(key)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"must be true or false, got {value!r}", key=key)
    return value


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ScenarioError(f"must be a string, got {value!r}", key=key)
    return value


def _strings_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScenarioError(f"must be a list of strings, got {value!r}", key=key)
    return tuple(value)


def _int(value: Any, key: str) -> int:
    if not is_integer(value):
        raise ScenarioError(f"must be an integer, got {value!r}", key=key)
    return value


def _float(value: Any, key: str) -> float:
    if not is_number(value):
        raise ScenarioError(f"must be a number, got {value!r}", key=key)
    if not math.isfinite(value):
        raise ScenarioError(f"must be finite, got {value!r}", key=key)
    return float(value)
