"""N:M groups: one battery-inverter unit out of its members' telemetry, and its share divided.

Theory of operation
-------------------
A group (``spec/plant.md``, :class:`~distributord.core.topology.Group`) is one unit for the
split. Everything above this module sees it as one pair: its lead battery and its lead inverter,
with snapshots merged from its members' (:class:`GroupMerger`), and commands to the lead
inverter that :func:`divide` shares among the group's inverters.

* **The battery side** is usable only when every battery is: its states are the union of the
  members' (one battery in error puts the group in error, since its inverters share the DC bus)
  and its errors name the battery they came from. Capacity and power are sums; SoC and the SoC
  bounds are capacity-weighted, so the group's available SoC is its batteries'
  capacity-weighted headroom; the power bounds are the sums of the inclusion bounds and the
  widest exclusion bound (no battery may be asked for less than its own minimum). Until every
  battery has reported there is no group battery snapshot.
* **The inverter side** is the usable inverters': those whose latest sample has no problem
  (:func:`~distributord.core.status.inverter_problems`) and is not older than the newest by more
  than ``max_age_s``. Their inclusion bounds, reactive bounds and apparent-power limits sum;
  the exclusion bound is the smallest minimum among them (the smallest magnitude the group can
  take through one inverter). The measured power is the sum over every inverter that reported.
  With no usable inverter the snapshot is all of them, states and errors included, so the
  status machine says why.
* **Times.** A merged snapshot was sampled when its newest member was and received when its
  oldest member was (so one silent member makes the group's data stale). Each member's new
  sample is a new sample of the group: when members' samples interleave, a merged one that
  would not be later than the group's last is taken as one ulp after it. A member's sample
  that is not later than its own last is no news at all (dropped here; the daemon counts it
  as a repeated sample, as the tracker counts a pair's).
* **Division** (:func:`divide`): a group's share goes to its usable inverters in proportion to
  their caps in the share's direction, exactly: never over the share, never over a cap. A
  proportional share below an inverter's minimum makes the division use fewer inverters (the
  largest caps first, ties by id), then a single inverter whose bounds take the share; what no
  choice can take exactly is placed as closely as possible below it, and the caller reports the
  shortfall. Each inverter's setpoint is a float32 rounded toward zero, as the wire carries it
  (a bound from telemetry is a float32, so a setpoint at a bound stays at it), and the division
  says exactly what it placed: their sum.

Pure: no IO, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction

import attrs

from distributord.core.model import (
    UNKNOWN_POWER_BOUNDS,
    BatterySnapshot,
    InverterSnapshot,
    PowerBounds,
)
from distributord.core.status import inverter_problems
from distributord.core.topology import Group
from distributord.core.values import floats32_toward_zero


def _sum(values: Iterable[float]) -> float:
    """The exact sum rounded once; ``nan`` if any value is ``nan``."""
    values = list(values)
    return math.nan if any(v != v for v in values) else math.fsum(values)


def _pick(values: Iterable[float], choose: Callable[[Iterable[float]], float]) -> float:
    values = list(values)
    return math.nan if any(v != v for v in values) else choose(values)


def merged_battery(lead: int, batteries: Sequence[BatterySnapshot]) -> BatterySnapshot:
    """One battery snapshot, as ``lead``, for a group's batteries (see the theory of operation)."""
    capacity = _sum(b.capacity_wh for b in batteries)

    def weighted(value: Callable[[BatterySnapshot], float]) -> float:
        if not capacity > 0.0:  # zero (or unknown) capacity: a plain mean says as much
            return _sum(value(b) for b in batteries) / len(batteries)
        return _sum(b.capacity_wh * value(b) for b in batteries) / capacity

    bounds = [b.bounds for b in batteries]
    return BatterySnapshot(
        component_id=lead,
        sampled_at=max(b.sampled_at for b in batteries),
        received_at=min(b.received_at for b in batteries),
        soc_pct=weighted(lambda b: b.soc_pct),
        soc_lower_pct=weighted(lambda b: b.soc_lower_pct),
        soc_upper_pct=weighted(lambda b: b.soc_upper_pct),
        capacity_wh=capacity,
        power_w=_sum(b.power_w for b in batteries),
        bounds=PowerBounds(
            inclusion_lower=_sum(b.inclusion_lower for b in bounds),
            exclusion_lower=_pick((b.exclusion_lower for b in bounds), min),
            exclusion_upper=_pick((b.exclusion_upper for b in bounds), max),
            inclusion_upper=_sum(b.inclusion_upper for b in bounds),
        ),
        states=frozenset().union(*(b.states for b in batteries)),
        errors=frozenset(f"battery {b.component_id}: {e}" for b in batteries for e in b.errors),
        warnings=frozenset(f"battery {b.component_id}: {w}" for b in batteries for w in b.warnings),
    )


def usable_inverters(
    inverters: Sequence[InverterSnapshot], max_age_s: float
) -> list[InverterSnapshot]:
    """The inverters a group's share may go to: healthy, and not stale beside the newest."""
    if not inverters:
        return []
    newest = max(i.received_at for i in inverters)
    return [
        i for i in inverters if not inverter_problems(i) and newest - i.received_at <= max_age_s
    ]


def merged_inverter(
    lead: int, inverters: Sequence[InverterSnapshot], max_age_s: float
) -> InverterSnapshot:
    """One inverter snapshot, as ``lead``, for a group's inverters (see the theory of operation)."""
    usable = usable_inverters(inverters, max_age_s) or list(inverters)
    bounds = [i.bounds for i in usable]
    reactive = [i.reactive_bounds for i in usable]
    return InverterSnapshot(
        component_id=lead,
        sampled_at=max(i.sampled_at for i in usable),
        received_at=min(i.received_at for i in usable),
        active_power_w=_sum(i.active_power_w for i in inverters),
        bounds=_sum_bounds(bounds),
        states=frozenset().union(*(i.states for i in usable)),
        errors=frozenset(f"inverter {i.component_id}: {e}" for i in usable for e in i.errors),
        warnings=frozenset(f"inverter {i.component_id}: {w}" for i in usable for w in i.warnings),
        reactive_bounds=UNKNOWN_POWER_BOUNDS
        if any(r is UNKNOWN_POWER_BOUNDS for r in reactive)
        else _sum_bounds(reactive),
        apparent_limit_va=_sum(i.apparent_limit_va for i in usable),
    )


def _sum_bounds(bounds: Sequence[PowerBounds]) -> PowerBounds:
    """Inclusion bounds summed, the exclusion bound of the smallest minimum."""
    return PowerBounds(
        inclusion_lower=_sum(b.inclusion_lower for b in bounds),
        exclusion_lower=_pick((b.exclusion_lower for b in bounds), max),
        exclusion_upper=_pick((b.exclusion_upper for b in bounds), min),
        inclusion_upper=_sum(b.inclusion_upper for b in bounds),
    )


class GroupMerger:
    """Members' snapshots in, the group's merged snapshots out (see the theory of operation).

    Args:
        groups: Lead battery to its group (only the groups of several members).
        max_age_s: How much older than the newest an inverter's sample may be and still count
            (``status.max_data_age_s``; read on every sample, so a reload takes effect).
    """

    def __init__(self, groups: Mapping[int, Group], max_age_s: Callable[[], float]) -> None:
        self._max_age_s = max_age_s
        self._group_of: dict[int, Group] = {}
        for group in groups.values():
            self._group_of.update(dict.fromkeys((*group.batteries, *group.inverters), group))
        self.batteries: dict[int, BatterySnapshot] = {}
        self.inverters: dict[int, InverterSnapshot] = {}
        self._last_sampled: dict[int, float] = {}  # lead battery/inverter: last merged sample

    def __contains__(self, component_id: int) -> bool:
        return component_id in self._group_of

    def group(self, component_id: int) -> Group | None:
        """The group ``component_id`` is a member of, if any."""
        return self._group_of.get(component_id)

    def is_news(self, snapshot: BatterySnapshot | InverterSnapshot) -> bool:
        """Whether ``snapshot`` is later than its member's sample before it (or no member's)."""
        seen = self.batteries if isinstance(snapshot, BatterySnapshot) else self.inverters
        before = seen.get(snapshot.component_id)
        return before is None or snapshot.sampled_at > before.sampled_at

    def take(
        self, snapshot: BatterySnapshot | InverterSnapshot
    ) -> BatterySnapshot | InverterSnapshot | None:
        """A member's new snapshot: the group's merged one on that side, if there is one yet.

        A snapshot of a component that is no member is handed back as it is.
        """
        group = self._group_of.get(snapshot.component_id)
        if group is None:
            return snapshot
        if not self.is_news(snapshot):
            return None  # not a new sample of this member: nothing new of the group
        merged: BatterySnapshot | InverterSnapshot
        if isinstance(snapshot, BatterySnapshot):
            self.batteries[snapshot.component_id] = snapshot
            batteries = [self.batteries.get(b) for b in group.batteries]
            if any(b is None for b in batteries):
                return None
            merged = merged_battery(group.battery, [b for b in batteries if b is not None])
        else:
            self.inverters[snapshot.component_id] = snapshot
            merged = merged_inverter(group.inverter, self.members(group), self._max_age_s())
        # Each member's new sample is a new sample of the group: one sampled before the newest
        # member's is taken as one ulp after the group's last.
        last = self._last_sampled.get(merged.component_id, -math.inf)
        if not merged.sampled_at > last:
            merged = attrs.evolve(merged, sampled_at=math.nextafter(last, math.inf))
        self._last_sampled[merged.component_id] = merged.sampled_at
        return merged

    def members(self, group: Group) -> list[InverterSnapshot]:
        """The latest snapshot of each of ``group``'s inverters that has reported."""
        return [self.inverters[i] for i in group.inverters if i in self.inverters]

    def usable(self, group: Group) -> list[InverterSnapshot]:
        """``group``'s inverters its share may go to now."""
        return usable_inverters(self.members(group), self._max_age_s())


@attrs.frozen
class Division:
    """A group's share divided among its inverters.

    Attributes:
        setpoints: Inverter id to W; exactly ``0.0`` for the usable inverters left idle.
        placed_w: Their sum (exact): the share, less what rounding each setpoint toward zero
            to a float32 took, and less what no choice of inverters could take.
        whole: Whether a choice of inverters took the whole share (before the rounding).
    """

    setpoints: Mapping[int, float]
    placed_w: float
    whole: bool = True


def _cap(bounds: PowerBounds, sign: float) -> float:
    value = bounds.inclusion_upper if sign > 0 else -bounds.inclusion_lower
    return value if value == value and value > 0.0 else 0.0


def _minimum(bounds: PowerBounds, sign: float) -> float:
    value = bounds.exclusion_upper if sign > 0 else -bounds.exclusion_lower
    return value if value == value and value > 0.0 else 0.0


def _proportional(magnitude: float, caps: Sequence[float]) -> list[float]:
    """``magnitude`` over ``caps`` in proportion to them, never over a cap or ``magnitude``.

    Each share is rounded toward zero; what that leaves of ``magnitude`` goes, in order, to
    those with room.
    """
    total = Fraction(0)
    for cap in caps:
        total += Fraction(cap)
    exact = Fraction(magnitude)
    shares = [min(cap, _down(exact * Fraction(cap) / total)) if total else 0.0 for cap in caps]
    rest = exact - sum((Fraction(s) for s in shares), Fraction(0))
    for index, cap in enumerate(caps):
        if rest <= 0:
            break
        room = Fraction(cap) - Fraction(shares[index])
        if room > 0:
            more = _down(min(room, rest))
            shares[index] = _down(Fraction(shares[index]) + Fraction(more))
            rest = exact - sum((Fraction(s) for s in shares), Fraction(0))
    return shares


def _down(value: Fraction) -> float:
    """The largest float not above ``value`` (``value`` >= 0)."""
    rounded = float(value)
    return math.nextafter(rounded, 0.0) if Fraction(rounded) > value else rounded


def divide(share_w: float, inverters: Sequence[tuple[int, PowerBounds]]) -> Division:
    """Divide a group's ``share_w`` among its usable ``inverters`` (id, bounds).

    See the theory of operation. ``0`` W (or no inverter) gives every inverter exactly ``0``.
    """
    idle = {inverter: 0.0 for inverter, _ in inverters}
    if share_w == 0.0 or not inverters or share_w != share_w:
        return Division(idle, 0.0, share_w == 0.0)
    sign = 1.0 if share_w > 0 else -1.0
    magnitude = abs(share_w)
    rows = sorted(
        ((_cap(b, sign), _minimum(b, sign), i) for i, b in inverters),
        key=lambda row: (-row[0], row[2]),
    )
    rows = [row for row in rows if row[0] > 0.0 and row[1] <= row[0]]
    choices = [rows[:count] for count in range(len(rows), 0, -1)]
    choices += [[row] for row in sorted(rows, key=lambda row: (row[1], row[2]))]
    best: tuple[float, dict[int, float]] = (0.0, {})
    for choice in choices:
        shares = _proportional(magnitude, [row[0] for row in choice])
        if all(s == 0.0 or s >= row[1] for s, row in zip(shares, choice, strict=True)):
            placed = math.fsum(shares)
            if placed > best[0]:
                best = (placed, {row[2]: s for s, row in zip(shares, choice, strict=True)})
            if placed >= magnitude:
                break
    sent = floats32_toward_zero([sign * best[1].get(i, 0.0) for i in idle])
    setpoints = {i: value + 0.0 for i, value in zip(idle, sent, strict=True)}
    return Division(setpoints, math.fsum(setpoints.values()) + 0.0, best[0] >= magnitude)
