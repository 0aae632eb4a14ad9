"""The latest telemetry of every managed battery/inverter pair.

Theory of operation
-------------------
Telemetry arrives far more often than requests (2,000 components at 10 Hz is 20,000 samples a
second; requests come a few times a second), so a :class:`~distributord.core.distribution.Pair` is
built from the latest snapshots only when a request asks for it, and kept until a newer
snapshot of either side arrives. A request therefore pays for the pairs whose telemetry changed
since the last request, about 4 µs each.

For ``include_broken_batteries`` each side also keeps its last *valid* snapshot (battery: SoC,
SoC bounds and capacity finite): a battery that went quiet or started reporting nonsense can
still take part on the values it last reported sensibly, as long as they are younger than the
cache's time to live.

For power the daemon cannot command (``spec/distribution.md``) it answers the fresh measured AC
power of a battery's inverter (:meth:`Fleet.measured_power_w`).

Pure: times come in as arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from math import isfinite

from distributord.core.distribution import Pair
from distributord.core.model import PLAUSIBLE_LIMIT, BatterySnapshot, InverterSnapshot


def _valid_battery(snapshot: BatterySnapshot) -> bool:
    """Whether its values are finite, as the status tracker asks (:func:`bad_battery_values`).

    Implausible values and a negative capacity still count as valid here: such a snapshot
    replaces the last valid one, and :meth:`Fleet.cached_pair` then finds its pair unusable.
    Asked of every battery sample: the four tests are made directly, not through the list of
    :func:`bad_battery_values` (``tests/core/test_fleet.py`` holds the two to the same answer).
    """
    return (
        isfinite(snapshot.soc_pct)
        and isfinite(snapshot.soc_lower_pct)
        and isfinite(snapshot.soc_upper_pct)
        and isfinite(snapshot.capacity_wh)
    )


class Fleet:
    """Latest snapshots, and pairs built from them on demand.

    Args:
        pairs: Battery id to the id of its inverter.
        hybrid: The inverters among them that are hybrid: their measured AC power includes
            their PV's, so it is never taken as their battery's (:meth:`measured_power_w`).
    """

    def __init__(self, pairs: Mapping[int, int], hybrid: Iterable[int] = ()) -> None:
        self.inverter_of: dict[int, int] = dict(pairs)
        self.hybrid = frozenset(hybrid)
        self.battery_of: dict[int, int] = {inv: bat for bat, inv in pairs.items()}
        self.batteries: dict[int, BatterySnapshot] = {}
        self.inverters: dict[int, InverterSnapshot] = {}
        self._valid_batteries: dict[int, BatterySnapshot] = {}
        self._valid_inverters: dict[int, InverterSnapshot] = {}
        self._pairs: dict[int, Pair] = {}

    def update(self, snapshot: BatterySnapshot | InverterSnapshot) -> int | None:
        """Take a new snapshot; returns the battery it concerns (None if not managed)."""
        if isinstance(snapshot, BatterySnapshot):
            battery_id: int | None = snapshot.component_id
            if battery_id not in self.inverter_of:
                return None
            self.batteries[battery_id] = snapshot
            if _valid_battery(snapshot):
                self._valid_batteries[battery_id] = snapshot
        else:
            battery_id = self.battery_of.get(snapshot.component_id)
            if battery_id is None:
                return None
            self.inverters[snapshot.component_id] = snapshot
            self._valid_inverters[snapshot.component_id] = snapshot
        self._pairs.pop(battery_id, None)
        return battery_id

    def pair(self, battery_id: int) -> Pair | None:
        """The pair from the latest snapshots (None while either side has sent nothing)."""
        cached = self._pairs.get(battery_id)
        if cached is not None:
            return cached
        battery = self.batteries.get(battery_id)
        inverter = self.inverters.get(self.inverter_of.get(battery_id, -1))
        if battery is None or inverter is None:
            return None
        pair = Pair(battery=battery, inverter=inverter)
        self._pairs[battery_id] = pair
        return pair

    def cached_pair(self, battery_id: int, *, now: float, ttl_s: float) -> Pair | None:
        """A usable pair from the last valid snapshots, if both are younger than ``ttl_s``."""
        battery = self._valid_batteries.get(battery_id)
        inverter = self._valid_inverters.get(self.inverter_of.get(battery_id, -1))
        if battery is None or inverter is None:
            return None
        if now - min(battery.received_at, inverter.received_at) > ttl_s:
            return None
        pair = Pair(battery=battery, inverter=inverter)
        return pair if pair.problem is None else None

    def measured_power_w(self, battery_id: int, *, now: float, max_age_s: float) -> float | None:
        """The measured AC power of ``battery_id``'s inverter, if fresh; else None.

        Fresh: received less than ``max_age_s`` before ``now`` (by receipt, on the daemon's
        clock: a microgrid clock that is off does not make a measurement stale). A value that
        is not finite or not plausible (beyond :data:`PLAUSIBLE_LIMIT`) is no measurement, and
        neither is a hybrid inverter's (it includes its PV's power; ``spec/microgrid-api.md``).
        """
        inverter_id = self.inverter_of.get(battery_id, -1)
        inverter = self.inverters.get(inverter_id)
        if (
            inverter is None
            or inverter_id in self.hybrid
            or not now - inverter.received_at < max_age_s
        ):
            return None
        power = inverter.active_power_w
        if not (isfinite(power) and abs(power) <= PLAUSIBLE_LIMIT):
            return None
        return power + 0.0
