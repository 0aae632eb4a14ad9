"""The status tracker: the one task that owns every battery's status machine.

Theory of operation
-------------------
Inputs come from many tasks and must never wait: telemetry tasks call :meth:`StatusTracker.
snapshot` and :meth:`~StatusTracker.gap` (the tracker is their
:class:`~distributord.shell.link.TelemetrySink`), the request loop calls
:meth:`~StatusTracker.record_outcomes`. Each input updates its battery's machine and
re-evaluates that battery at once, so the request loop always selects batteries on the current
status (:meth:`~StatusTracker.state`).

The tracker's own task (:meth:`~StatusTracker.serve`) does the rest:

* **Timers.** Every machine says when its status could next change by itself (a side going
  stale, a blocking window ending). A heap holds at most one pending deadline per battery (a
  new one is pushed only if it is earlier), and the task sleeps until the earliest, so
  ``working → not_working`` on silence and ``uncertain → working`` at the end of a window
  happen exactly on time, not at the next sample.
* **Publishing.** Changes are collected and published once per wake-up as a new
  :class:`Board` in an :class:`trio_util.AsyncValue`. Subscribers (the socket's
  ``subscribe_status``, the systemd status line) read it at their own pace; a slow one simply
  sees the latest board, so no subscriber can slow the tracker down.

``sampled_at`` (Unix time, from the microgrid) is converted to the trio clock with the current
offset between the wall clock and the trio clock, so that one clock judges freshness.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import NoReturn

import attrs
import trio
import trio_util

from distributord.core.config import StatusConfig
from distributord.core.fleet import Fleet
from distributord.core.model import BatterySnapshot, InverterSnapshot
from distributord.core.status import (
    BatteryState,
    Reason,
    Status,
    StatusMachine,
)
from distributord.shell.live import Live

logger = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class Board:
    """Every battery's state at one moment.

    Attributes:
        version: Increases with every publication.
        states: Battery id to its state.
    """

    version: int
    states: Mapping[int, BatteryState]

    def count(self, status: Status) -> int:
        """How many batteries have ``status``."""
        return sum(1 for state in self.states.values() if state.status is status)


@attrs.frozen(kw_only=True)
class TrackerStatistics:
    """A snapshot of the tracker's bookkeeping.

    Attributes:
        gaps: Component id to the reason and time (trio clock) of its last telemetry gap.
        breaks: Telemetry gaps so far, by component kind (``battery``, ``inverter``).
        reconnects: Streams that delivered again after a gap, by component kind.
    """

    gaps: Mapping[int, tuple[str, float]]
    breaks: Mapping[str, int]
    reconnects: Mapping[str, int]


class StatusTracker:
    """Owns the status machines (see the module docstring).

    Args:
        pairs: Battery id to the id of its inverter.
        config: The ``[status]`` table, read where it is used (ages from the next sample,
            windows from the next failure).
        wall_clock: Unix time now (tests pass one tied to the trio clock).
    """

    def __init__(
        self,
        pairs: Mapping[int, int],
        config: Live[StatusConfig],
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self.fleet = Fleet(pairs)
        self._wall_clock = wall_clock
        self._machines = {battery: StatusMachine(lambda: config.value) for battery in pairs}
        start = trio.current_time()
        initial = frozenset({Reason.NO_BATTERY_DATA, Reason.NO_INVERTER_DATA})
        self._current: dict[int, BatteryState] = {
            battery: BatteryState(
                battery_id=battery,
                inverter_id=inverter,
                status=Status.NOT_WORKING,
                reasons=initial,
                since=start,
            )
            for battery, inverter in pairs.items()
        }
        self._gaps: dict[int, tuple[str, float]] = {}
        self._broken: set[int] = set()  # components whose stream broke and has not delivered since
        self._breaks = {"battery": 0, "inverter": 0}
        self._reconnects = {"battery": 0, "inverter": 0}
        self.board = trio_util.AsyncValue(
            Board(version=0, states=MappingProxyType(dict(self._current)))
        )
        self._heap: list[tuple[float, int]] = []
        self._scheduled: dict[int, float] = {}
        self._changed = False
        # Set when a change waits to be published or a timer came due sooner than the one
        # waited for; cleared by serve. A level, not an edge: a set while serve works is kept.
        self._wakeup = trio_util.AsyncBool(False)

    @property
    def config(self) -> StatusConfig:
        """The ``[status]`` table in force now."""
        return self._config.value

    # -- inputs (never block) ----------------------------------------------------------------

    def snapshot(self, snapshot: BatterySnapshot | InverterSnapshot) -> None:
        """A component's new snapshot (from its telemetry task)."""
        battery_id = self.fleet.update(snapshot)
        if battery_id is None:
            return
        if self._broken and snapshot.component_id in self._broken:
            self._broken.discard(snapshot.component_id)
            self._reconnects[self._kind(snapshot.component_id)] += 1
        now = trio.current_time()
        sampled = snapshot.sampled_at - (self._wall_clock() - now)
        machine = self._machines[battery_id]
        if isinstance(snapshot, BatterySnapshot):
            machine.battery_sample(snapshot, received_at=snapshot.received_at, sampled_at=sampled)
        else:
            machine.inverter_sample(snapshot, received_at=snapshot.received_at, sampled_at=sampled)
        self._evaluate(battery_id, now)

    def gap(self, component_id: int, reason: str) -> None:
        """A component's stream broke; the status follows when its data goes stale."""
        self._gaps[component_id] = (reason, trio.current_time())
        self._broken.add(component_id)
        self._breaks[self._kind(component_id)] += 1

    def _kind(self, component_id: int) -> str:
        return "battery" if component_id in self._machines else "inverter"

    def record_outcomes(self, *, succeeded: Iterable[int], failed: Iterable[int]) -> None:
        """Command outcomes of one request, by battery id.

        Args:
            succeeded: Batteries whose command succeeded (0 W included).
            failed: Batteries whose command failed in a way that blocks (not refusals).
        """
        now = trio.current_time()
        for battery_id in succeeded:
            if battery_id in self._machines:
                self._machines[battery_id].command_succeeded()
                self._evaluate(battery_id, now)
        for battery_id in failed:
            if battery_id in self._machines:
                self._machines[battery_id].command_failed(now=now)
                self._evaluate(battery_id, now)

    # -- queries -----------------------------------------------------------------------------

    def statistics(self) -> TrackerStatistics:
        """A snapshot of the tracker's bookkeeping."""
        return TrackerStatistics(
            gaps=MappingProxyType(dict(self._gaps)),
            breaks=MappingProxyType(dict(self._breaks)),
            reconnects=MappingProxyType(dict(self._reconnects)),
        )

    def state(self, battery_id: int) -> BatteryState:
        """A battery's current state."""
        return self._current[battery_id]

    @property
    def states(self) -> Mapping[int, BatteryState]:
        """Every battery's current state (read-only view)."""
        return MappingProxyType(self._current)

    # -- the task ----------------------------------------------------------------------------

    def _evaluate(self, battery_id: int, now: float) -> None:
        machine = self._machines[battery_id]
        evaluation = machine.evaluate(now)
        old = self._current[battery_id]
        if (evaluation.status, evaluation.reasons, evaluation.blocked_until) != (
            old.status,
            old.reasons,
            old.blocked_until,
        ):
            if evaluation.status is not old.status:
                logger.info(
                    "battery %d: %s -> %s%s",
                    battery_id,
                    old.status.value,
                    evaluation.status.value,
                    f" ({', '.join(sorted(evaluation.reasons))})" if evaluation.reasons else "",
                )
            self._current[battery_id] = attrs.evolve(
                old,
                status=evaluation.status,
                reasons=evaluation.reasons,
                blocked_until=evaluation.blocked_until,
                since=now if evaluation.status is not old.status else old.since,
            )
            self._changed = True
            self._wakeup.value = True
        at = machine.next_change(now)
        if math.isfinite(at):
            scheduled = self._scheduled.get(battery_id)
            if scheduled is None or at < scheduled:
                self._scheduled[battery_id] = at
                heapq.heappush(self._heap, (at, battery_id))
                if self._heap[0] == (at, battery_id):
                    self._wakeup.value = True

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Fire timers and publish changes, forever."""
        task_status.started()
        while True:
            if not self._changed:
                deadline = self._heap[0][0] if self._heap else math.inf
                with trio.move_on_at(deadline):
                    await self._wakeup.wait_value(True)
            self._wakeup.value = False
            now = trio.current_time()
            heap, scheduled = self._heap, self._scheduled
            while heap and heap[0][0] <= now:
                at, battery_id = heapq.heappop(heap)
                if scheduled.get(battery_id) == at:
                    del scheduled[battery_id]
                    self._evaluate(battery_id, now)
            if self._changed:
                self._changed = False
                board = self.board.value
                self.board.value = Board(
                    version=board.version + 1, states=MappingProxyType(dict(self._current))
                )
