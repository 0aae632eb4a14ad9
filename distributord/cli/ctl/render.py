"""``distributorctl``'s output for people: tables and one-line summaries of the daemon's results.

Theory of operation
-------------------
Pure functions of a result, one per method (:data:`RENDERERS`), each returning the lines to
print. A missing required field raises :class:`KeyError` (and a value of the wrong type
:class:`TypeError` or :class:`ValueError`), which the caller reports as an unusable reply;
optional fields show as :data:`NO_VALUE`. Numbers align right, and a column of powers uses one
unit (:data:`POWER_COLUMN_UNIT`) so that rows compare at a glance. A battery set is written
with runs as ranges (:func:`format_battery_set`), so that a set of hundreds stays one cell; a
power edge the daemon sends as ``null`` (infinite: JSON has none) reads as "no limit".
Reactive power reads as power does, in var (:func:`format_reactive`): a ``set_power`` result's
``reactive`` part has its own summary and table, and ``ramping`` its own line.
``--json`` does not come here: it prints the daemon's result as it is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from distributord.core.units import format_power

POWER_COLUMN_UNIT = "kW"
"""Table columns use one unit so that rows compare at a glance."""

REACTIVE_COLUMN_UNIT = "kvar"
"""The reactive power columns' unit (:data:`POWER_COLUMN_UNIT`'s, in var)."""

NO_VALUE = "-"
"""Shown in a table cell for a value the daemon did not send."""

FLOAT32_ROUNDING = 2.0**-22
"""The share of the commanded power that the API's float32 setpoints may lose, which the
daemon reports as excess: each setpoint is rounded toward zero to float32, losing less than
2**-23 of it; twice that, for margin. Less than this is no power that could not be placed."""


def unplaced_power(result: Mapping[str, Any]) -> float:
    """The power a ``set_power`` or ``propose`` result could not place; 0 when there is none.

    ``excess_power_w``, unless it is no more than the float32 rounding of the setpoints
    (:data:`FLOAT32_ROUNDING` of the power commanded): ``-4 kW`` asked and ``-3999.9995 W``
    commanded is all of it placed.

    Raises:
        TypeError: ``excess_power_w`` or the distribution's powers are not numbers.
    """
    return _beyond_rounding(result.get("excess_power_w", 0.0), result.get("distribution", {}))


def _beyond_rounding(excess: Any, distribution: Mapping[str, Any]) -> float:
    """``excess`` (W or var), or 0 if it is no more than the float32 rounding of ``distribution``.

    Raises:
        TypeError: ``excess`` or the distribution's values are not numbers.
    """
    commanded = sum(abs(_number(value)) for value in distribution.values())
    return 0.0 if abs(_number(excess)) <= FLOAT32_ROUNDING * commanded else float(excess)


def format_reactive(var: float, unit: str | None = None) -> str:
    """Reactive power for people: ``1.50 kvar``, ``-300.00 var``; :func:`format_power`'s rules.

    Args:
        var: The reactive power, var.
        unit: ``"var"``, ``"kvar"`` or ``"Mvar"`` to fix the unit; ``None`` to pick one.
    """
    watts_unit = None if unit is None else unit.removesuffix("var") + "W"
    return format_power(var, watts_unit).removesuffix("W") + "var"


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def format_duration(seconds: float) -> str:
    """``12.3 s``, ``5 min 07 s``, ``2 h 05 min``, ``3 d 04 h``."""
    if not math.isfinite(seconds) or seconds < 0:
        return f"{seconds} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int]) -> list[str]:
    """Lay out columns two spaces apart; columns whose index is in ``right`` align right."""
    widths = [max([len(cell) for cell in column]) for column in zip(header, *rows, strict=True)]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def render_ping(result: Mapping[str, Any], path: str) -> list[str]:
    """``distributord 0.1.0 at PATH, up 1 h 02 min`` (and whether the microgrid is reached)."""
    line = f"distributord {result['version']} at {path}, up {format_duration(result['uptime_s'])}"
    if result.get("microgrid") == "connecting":
        line += "; the microgrid is not connected yet"
    elif result.get("microgrid") == "unreachable":
        line += "; the microgrid is UNREACHABLE"
        if "unreachable_for_s" in result:
            line += f" for {format_duration(result['unreachable_for_s'])}"
    elif "microgrid_api" in result:
        line += f"; Microgrid API {result['microgrid_api']}"
    return [line]


def render_status(result: Mapping[str, Any], path: str) -> list[str]:
    """One row per battery, then the counts per status (or that the microgrid is not reached)."""
    del path  # the same signature as the other renderers
    batteries = result["batteries"]
    if result.get("microgrid") == "connecting":
        return ["no batteries yet: the microgrid is not connected"]
    if result.get("microgrid") == "unreachable" and not batteries:
        return ["no batteries yet: the microgrid is unreachable"]
    if not batteries:
        return ["no batteries"]
    rows = []
    counts = {"working": 0, "uncertain": 0, "not_working": 0}
    for battery in batteries:
        status = str(battery["status"])
        counts[status] = counts.get(status, 0) + 1
        soc = battery.get("soc_pct")
        setpoint = battery.get("setpoint_w")
        reactive = battery.get("reactive_setpoint_var")
        age = battery.get("data_age_s")
        reasons = ", ".join(battery["reasons"])
        blocked = battery.get("blocked_until_s")  # seconds left in the blocking window
        if blocked is not None:
            reasons += f" ({format_duration(blocked)} left)"
        rows.append(
            [
                str(battery["id"]),
                str(battery["inverter_id"]),
                status,
                NO_VALUE if soc is None else f"{soc:.1f} %",
                NO_VALUE if setpoint is None else format_power(setpoint, POWER_COLUMN_UNIT),
                NO_VALUE if reactive is None else format_reactive(reactive, REACTIVE_COLUMN_UNIT),
                NO_VALUE if age is None else format_duration(age),
                reasons,
            ]
        )
    header = ["BATTERY", "INVERTER", "STATUS", "SOC", "SETPOINT", "REACTIVE", "DATA AGE", "REASONS"]
    right: tuple[int, ...] = (0, 1, 3, 4, 5, 6)
    if not any("reactive_setpoint_var" in battery for battery in batteries):
        # No inverter holds reactive power: the column would only say "-".
        rows = [row[:5] + row[6:] for row in rows]
        header.remove("REACTIVE")
        right = (0, 1, 3, 4, 5)
    summary = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())
    if "microgrid_api" in result:
        summary += f" (Microgrid API {result['microgrid_api']})"
    lines = [*table(header, rows, right=right), f"{len(batteries)} batteries: {summary}"]
    if result.get("microgrid") == "unreachable":
        lines.append("the microgrid is UNREACHABLE: every telemetry stream is broken")
    return lines


def _members(group: Mapping[str, Any] | None) -> str:
    """``batteries 1004, 1005 on inverter 2004`` for a group; empty for a plain pair."""
    if group is None:
        return ""

    def named(one: str, many: str, ids: list[int]) -> str:
        return f"{one if len(ids) == 1 else many} {', '.join(str(i) for i in ids)}"

    return (
        f"{named('battery', 'batteries', group['batteries'])} on"
        f" {named('inverter', 'inverters', group['inverters'])}"
    )


def render_components(result: Mapping[str, Any], path: str) -> list[str]:
    """The managed pairs, then what was left out and why."""
    del path
    pairs = result["pairs"]
    left_out = result["left_out"]
    lines = [f"{len(pairs)} battery/inverter pairs managed"]
    if any("group" in pair for pair in pairs):  # N:M groups: each under its lead, members named
        lines[0] += " (an N:M group counts as one, under its lead battery and inverter)"
        rows = [
            [str(pair["battery_id"]), str(pair["inverter_id"]), _members(pair.get("group"))]
            for pair in pairs
        ]
        lines += table(["BATTERY", "INVERTER", "GROUP"], rows, right=(0, 1))
    elif pairs:
        rows = [[str(pair["battery_id"]), str(pair["inverter_id"])] for pair in pairs]
        lines += table(["BATTERY", "INVERTER"], rows, right=(0, 1))
    if left_out:
        lines.append(f"{len(left_out)} batteries left out")
        rows = [[str(item["battery_id"]), str(item["reason"])] for item in left_out]
        lines += table(["BATTERY", "REASON"], rows, right=(0,))
    else:
        lines.append("no batteries left out")
    return lines


def render_set_power(result: Mapping[str, Any], path: str) -> list[str]:
    """The outcome in one line, then one row per battery when power was commanded."""
    del path
    requested = format_power(result["power_w"]) if "power_w" in result else "power"
    return _outcome_lines(result, requested)


def render_propose(result: Mapping[str, Any], path: str) -> list[str]:
    """``set-power``'s lines, then what arbitration granted the proposal, and why.

    A proposal without a power (a limiter) is shown as requesting ``bounds only``, whether the
    daemon leaves ``power_w`` out or sends ``null``. The ``arbitration`` object is shown when
    the daemon sends one (an outcome decided before arbitration may have none).
    """
    del path
    power = result.get("power_w")
    requested = "bounds only" if power is None else format_power(power)
    lines = _outcome_lines(result, requested)
    if "arbitration" in result:
        lines += _arbitration_lines(result["arbitration"])
    return lines


def _arbitration_lines(arbitration: Mapping[str, Any]) -> list[str]:
    """Who was granted what in which window, the set's target, who limited it and why."""
    lo, hi = arbitration["window_w"]
    lines = [
        f"program {arbitration['program']} (priority {arbitration['priority']}): granted "
        f"{_optional_power(arbitration['granted_w'])} in the window "
        f"{_edge(lo, 'lower')} to {_edge(hi, 'upper')}",
        f"target of the battery set: {_optional_power(arbitration['target_w'])}",
    ]
    limited_by = arbitration["limited_by"]
    if limited_by:
        names = ", ".join(f"{p['program']} (priority {p['priority']})" for p in limited_by)
        lines.append(f"limited by {names}")
    reasons = arbitration["reasons"]
    if reasons:
        lines.append(f"reasons: {', '.join(map(str, reasons))}")
    return lines


def _optional_power(watts: float | None) -> str:
    return "none" if watts is None else format_power(watts)


def _edge(watts: float | None, side: str) -> str:
    # The daemon sends an infinite (or unknown) edge as null: JSON has no infinities.
    return f"no {side} limit" if watts is None else format_power(watts)


def _outcome_lines(result: Mapping[str, Any], requested: str) -> list[str]:
    """A ``set_power``-shaped result: the outcome's line and, with power, the batteries."""
    outcome = result["outcome"]
    match outcome:
        case "success" | "partial_failure":
            headline = (
                f"{outcome}: {requested} requested, {format_power(result['succeeded_power_w'])} "
                f"commanded to {_count(result['succeeded_batteries'])}"
            )
            # A partial_failure whose only failures are reactive commands names them in the
            # reactive part (the daemon sends failed_batteries empty): no "failed on 0".
            if outcome == "partial_failure" and result["failed_batteries"]:
                headline += (
                    f", {format_power(result['failed_power_w'])} failed on "
                    f"{_count(result['failed_batteries'])} "
                    f"({', '.join(map(str, result['failed_batteries']))})"
                )
            excess = unplaced_power(result)
            if excess:
                headline += f", {format_power(excess)} could not be placed"
            lines = [headline]
            if result.get("bound_limits"):
                names = ", ".join(str(name) for name in result["bound_limits"])
                lines.append(f"held back by the group limits {names}")
            if "ramping" in result:
                lines.append(_ramping_line(result["ramping"]))
            lines += _distribution_table(result, result.get("batteries", []))
            if "reactive" in result:
                lines += _reactive_lines(result["reactive"], result.get("batteries", []))
            return lines
        case "out_of_bounds":
            return [
                f"out_of_bounds: {requested} requested, the batteries allow "
                f"{_format_bounds(result['bounds'])}; nothing was commanded"
            ]
        case _:  # error, ignored, and any outcome a newer daemon may add
            message = result.get("message")
            return [f"{outcome}: {message}" if message else str(outcome)]


def _ramping_line(ramping: Mapping[str, Any]) -> str:
    """``ramping to -40.00 kW, -10.00 kW applied, 3.0 s to go``."""
    return (
        f"ramping to {format_power(ramping['target_w'])}, "
        f"{format_power(ramping['applied_w'])} applied, "
        f"{format_duration(ramping['eta_s'])} to go"
    )


def _reactive_lines(reactive: Mapping[str, Any], batteries: Sequence[Any]) -> list[str]:
    """The reactive part: what was asked, commanded, failed and not placed; then per battery."""
    distribution: Mapping[str, Any] = reactive["distribution"]
    failed = [str(b) for b in reactive.get("failed_batteries", [])]
    succeeded = [b for b in distribution if b not in failed]
    line = (
        f"reactive: {format_reactive(reactive['target_var'])} requested, "
        f"{format_reactive(math.fsum(_number(distribution[b]) for b in succeeded))} "
        f"commanded to {_count(succeeded)}"
    )
    if failed:
        lost = math.fsum(_number(distribution.get(b, 0.0)) for b in failed)
        line += f", {format_reactive(lost)} failed on {_count(failed)} ({', '.join(failed)})"
    excess = _beyond_rounding(reactive["excess_var"], distribution)
    if excess:
        line += f", {format_reactive(excess)} could not be placed"
    return [line, *_distribution_table(reactive, batteries, reactive=True)]


def _count(batteries: Sequence[Any]) -> str:
    return f"{len(batteries)} battery" if len(batteries) == 1 else f"{len(batteries)} batteries"


def _format_bounds(bounds: Mapping[str, float | None]) -> str:
    """``-20.00 kW to 20.00 kW``, or with an exclusion zone ``0 W, A to B or C to D``."""

    def bound(name: str) -> str:
        value = bounds[name]
        return "unknown" if value is None else format_power(value)  # the protocol's null

    inclusion = (bound("inclusion_lower_w"), bound("inclusion_upper_w"))
    if bounds["exclusion_lower_w"] == 0 and bounds["exclusion_upper_w"] == 0:
        return f"{inclusion[0]} to {inclusion[1]}"
    return (
        f"0 W, {inclusion[0]} to {bound('exclusion_lower_w')} or "
        f"{bound('exclusion_upper_w')} to {inclusion[1]}"
    )


def _distribution_table(
    part: Mapping[str, Any], batteries: Sequence[Any], *, reactive: bool = False
) -> list[str]:
    """Requested batteries in request order, then any others the distribution names.

    Args:
        part: The result, or its ``reactive`` part: ``distribution``, ``reasons`` (an
            extension; may be absent) and ``failed_batteries``.
        batteries: The batteries requested.
        reactive: Whether ``part`` is the reactive part (var, and a ``REACTIVE`` column).
    """
    distribution: Mapping[str, float] = part.get("distribution", {})
    reasons: Mapping[str, str] = part.get("reasons", {})
    failed = {str(b) for b in part.get("failed_batteries", [])}
    order = [str(b) for b in batteries]
    order += sorted(set(distribution) - set(order), key=lambda b: (len(b), b))
    rows = []
    for battery in order:
        power = distribution.get(battery)
        state = "not used" if power is None else "failed" if battery in failed else "ok"
        if power is None:
            cell = NO_VALUE
        elif reactive:
            cell = format_reactive(power, REACTIVE_COLUMN_UNIT)
        else:
            cell = format_power(power, POWER_COLUMN_UNIT)
        rows.append([battery, cell, state, str(reasons.get(battery, ""))])
    if not rows:
        return []
    header = ["BATTERY", "REACTIVE" if reactive else "POWER", "RESULT", "REASON"]
    return table(header, rows, right=(0, 1))


def render_proposals(result: Mapping[str, Any], path: str) -> list[str]:
    """Every live proposal, highest priority first: what it asks, gets and holds.

    ``HELD`` is ``all`` when the proposal's bucket holds its whole set, ``none`` when a higher
    priority holds all of it, else the batteries it still holds. ``LIFETIME`` is ``standing``,
    the ttl with the time left, or ``until disconnect``.
    """
    del path
    proposals = result["proposals"]
    if not proposals:
        return ["no proposals"]
    rows = []
    # Stable: the daemon's order within a priority.
    for entry in sorted(proposals, key=lambda entry: -entry["priority"]):
        batteries = entry["batteries"]
        held = entry["held_batteries"]
        rows.append(
            [
                str(entry["program"]),
                str(entry["priority"]),
                format_battery_set(batteries),
                _cell_power(entry["power_w"]),
                _cell_power(entry["lower_w"]),
                _cell_power(entry["upper_w"]),
                _cell_power(entry["granted_w"]),
                "all" if set(held) == set(batteries) else format_battery_set(held) or "none",
                format_duration(entry["age_s"]),
                _lifetime(entry),
            ]
        )
    header = [
        "PROGRAM",
        "PRIORITY",
        "BATTERIES",
        "POWER",
        "LOWER",
        "UPPER",
        "GRANTED",
        "HELD",
        "AGE",
        "LIFETIME",
    ]
    programs = {entry["program"] for entry in proposals}
    count = "1 proposal" if len(proposals) == 1 else f"{len(proposals)} proposals"
    of = "1 program" if len(programs) == 1 else f"{len(programs)} programs"
    return [*table(header, rows, right=(1, 3, 4, 5, 6, 8)), f"{count} of {of}"]


def _cell_power(watts: float | None) -> str:
    return NO_VALUE if watts is None else format_power(watts, POWER_COLUMN_UNIT)


def _lifetime(entry: Mapping[str, Any]) -> str:
    ttl = entry["ttl_s"]
    if ttl is None:
        text = "standing"
    else:
        left = max(0.0, ttl - entry["age_s"])
        text = f"ttl {format_duration(ttl)} ({format_duration(left)} left)"
    if entry["until_disconnect"]:
        text = "until disconnect" if ttl is None else f"{text}, until disconnect"
    return text


def render_withdraw(result: Mapping[str, Any], path: str) -> list[str]:
    """The battery sets whose proposals ended, one a line, or that there were none."""
    del path
    withdrawn = result["withdrawn"]
    if not withdrawn:
        return ["nothing withdrawn"]
    count = "1 proposal" if len(withdrawn) == 1 else f"{len(withdrawn)} proposals"
    return [
        f"withdrew {count}; batteries no proposal holds any more get 0 W",
        *(f"  batteries {format_battery_set(batteries)}" for batteries in withdrawn),
    ]


def format_battery_set(batteries: Sequence[int]) -> str:
    """``1001-1004,1007,1009,1010``: ascending, runs of three or more ids as ranges.

    A set of hundreds of consecutive batteries stays one short cell. Empty: ``""``.
    """
    ids = sorted({int(battery) for battery in batteries})
    parts: list[str] = []
    start = 0
    while start < len(ids):
        end = start
        while end + 1 < len(ids) and ids[end + 1] == ids[end] + 1:
            end += 1
        if end - start >= 2:
            parts.append(f"{ids[start]}-{ids[end]}")
        else:
            parts.extend(str(battery) for battery in ids[start : end + 1])
        start = end + 1
    return ",".join(parts)


def format_status_change(params: Mapping[str, Any], when: time.struct_time) -> str:
    """One ``watch`` line: ``12:03:04 battery 1001: not_working (stale_battery_data)``."""
    line = f"{time.strftime('%H:%M:%S', when)} battery {params['id']}: {params['status']}"
    reasons = params.get("reasons") or []
    if reasons:
        line += f" ({', '.join(reasons)})"
    return line


RENDERERS: Mapping[str, Callable[[Any, str], list[str]]] = {
    "ping": render_ping,
    "get_status": render_status,
    "list_components": render_components,
    "set_power": render_set_power,
    "propose": render_propose,
    "withdraw": render_withdraw,
    "get_proposals": render_proposals,
}
"""Each method's renderer; it takes the result and the socket path (which ``ping`` names)."""
