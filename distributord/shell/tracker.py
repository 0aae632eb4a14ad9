"""The status tracker: the one task that owns every battery's status machine.

Theory of operation
-------------------
Inputs come from many tasks and must never wait: telemetry tasks call :meth:`StatusTracker.
snapshot` and :meth:`~StatusTracker.gap` (the tracker is their
:class:`~distributord.shell.link.TelemetrySink`), the request loop calls
:meth:`~StatusTracker.record_outcomes`. Each input updates its battery's machine and
re-evaluates that battery at once, so the request loop always selects batteries on the current
status (:meth:`~StatusTracker.state`). The usual sample, which only moves its side's times
(:meth:`~distributord.core.status.StatusMachine.unchanged`), is not evaluated: the evaluation
would say the same, and the timer already set fires first.

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

* **The link.** When every component's stream is broken at once (the microgrid is down, or
  unreachable), the link is one fact: one warning, every battery ``not_working`` with the one
  reason ``microgrid_unreachable`` at once (:attr:`StatusTracker.unreachable_since`), and one
  line when a stream delivers again. A component's own break is logged after
  :data:`LOG_SETTLE_S` (so an outage, whose streams break within moments of each other, is not
  logged once per stream), several at once in one line.
* **Clocks.** Freshness is judged on the trio clock at receipt; ``sampled_at`` (Unix time,
  from the microgrid) only decides whether a sample is new, and gives each component's clock
  offset (our wall clock at receipt minus ``sampled_at``). A component whose offset exceeds
  ``max_data_age_s`` is logged once when it starts and once when it ends (several in one line),
  and its battery carries the reason ``clock_skew``.
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
    Evaluation,
    Reason,
    Status,
    StatusMachine,
    skewed,
)
from distributord.shell.live import Live

logger = logging.getLogger(__name__)

LOG_SETTLE_S = 1.0
"""A component's broken stream is logged this long after it broke, unless the whole link went
down meanwhile (then the link's one line says it): an outage breaks every stream within moments
and must not be logged once per stream. Clock skew that begins or ends is logged as late, so
that a whole site's clock (every stream opening within a second or two) is one line or few."""

NAMED_IN_ONE_LINE = 10
"""A line about several components names at most this many (and counts the rest)."""


def _components(ids: Iterable[int]) -> str:
    """``1001, 1002, 2001`` (at most :data:`NAMED_IN_ONE_LINE`, then ``and N more``)."""
    ordered = sorted(ids)
    named = ", ".join(str(i) for i in ordered[:NAMED_IN_ONE_LINE])
    rest = len(ordered) - NAMED_IN_ONE_LINE
    return named if rest <= 0 else f"{named} and {rest} more"


def _transition(old: Status, new: Evaluation) -> str:
    """``working -> not_working (stale_battery_data)``."""
    reasons = f" ({', '.join(sorted(new.reasons))})" if new.reasons else ""
    return f"{old.value} -> {new.status.value}{reasons}"


def _offsets_text(offsets: list[float]) -> str:
    """``30.0 s behind``, ``2.5 to 3.0 s ahead of``, or ``-5.0 to +30.0 s off`` (mixed)."""
    low, high = min(offsets), max(offsets)
    size = (
        f"{abs(low):.1f}"
        if low == high
        else f"{min(abs(low), abs(high)):.1f} to " + (f"{max(abs(low), abs(high)):.1f}")
    )
    if low > 0:
        return f"{size} s behind"
    if high < 0:
        return f"{size} s ahead of"
    return f"{low:+.1f} to {high:+.1f} s off"


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
        repeated: Samples dropped because they were not newer than the one before.
        unreachable_since: Since when (trio clock) every stream has been broken, if it is.
        clock_offsets: Component id to its clock offset, s (our wall clock at receipt minus
            the latest new sample's ``sampled_at``), for components that gave one.
    """

    gaps: Mapping[int, tuple[str, float]]
    breaks: Mapping[str, int]
    reconnects: Mapping[str, int]
    repeated: int = 0
    unreachable_since: float | None = None
    clock_offsets: Mapping[int, float] = attrs.field(factory=dict)


class StatusTracker:
    """Owns the status machines (see the module docstring).

    Args:
        pairs: Battery id to the id of its inverter.
        hybrid: The hybrid inverters among them (their measured power is not their battery's).
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
        hybrid: Iterable[int] = (),
    ) -> None:
        self._config = config
        self.fleet = Fleet(pairs, hybrid)
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
        # Component id to (battery id, whether it is the battery).
        self._sides: dict[int, tuple[int, bool]] = {
            **{battery: (battery, True) for battery in pairs},
            **{inverter: (battery, False) for battery, inverter in pairs.items()},
        }
        self._gaps: dict[int, tuple[str, float]] = {}
        self._broken: set[int] = set()  # components whose stream broke and has not delivered since
        self._overridden: set[int] = set()  # batteries whose inverter someone else commands
        self._breaks = {"battery": 0, "inverter": 0}
        self._reconnects = {"battery": 0, "inverter": 0}
        self._repeated = 0
        self.unreachable_since: float | None = None
        """Since when (trio clock) every stream has been broken (None while any delivers)."""
        self._unsaid: dict[int, tuple[str, float]] = {}  # breaks not logged yet: reason, when
        self._said: dict[int, float] = {}  # breaks logged one by one: when they broke
        self._skewed: set[int] = set()  # components logged as skewed (not logged as cleared)
        self._skew_news: dict[int, bool] = {}  # components whose skew began (True) or ended
        self._skew_news_at = math.inf  # when the oldest of them came
        self._transitions: list[tuple[int, Status, Evaluation]] = []  # to log: id, from, to
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
        """A component's new snapshot (from its telemetry task).

        One that is not newer than the component's sample before it counts as no sample: it
        is dropped (and counted).
        """
        component_id = snapshot.component_id
        side = self._sides.get(component_id)
        if side is None:
            return
        battery_id, is_battery = side
        now = trio.current_time()
        offset = self._wall_clock() - now + snapshot.received_at - snapshot.sampled_at
        machine = self._machines[battery_id]
        if is_battery:
            assert isinstance(snapshot, BatterySnapshot)
            new = machine.battery_sample(snapshot, received_at=snapshot.received_at, offset=offset)
        else:
            assert isinstance(snapshot, InverterSnapshot)
            new = machine.inverter_sample(snapshot, received_at=snapshot.received_at, offset=offset)
        if not new:
            self.count_repeat()
            return
        self.fleet.update(snapshot)
        if self._broken and component_id in self._broken:
            self._delivered(component_id, now)
        if offset == offset and (  # not nan: the sample said when it was taken
            skewed(offset, self._config.value) is not (component_id in self._skewed)
        ):
            self._skew_changed(component_id)
        if machine.unchanged(now):
            return  # only its times moved: evaluated, it would say the same; the timer stands
        self._evaluate(battery_id, now)

    def gap(self, component_id: int, reason: str) -> None:
        """A component's stream broke (from its telemetry task).

        Its status follows when its data goes stale; when every component's stream is broken,
        the link is down and every battery follows at once.
        """
        now = trio.current_time()
        self._gaps[component_id] = (reason, now)
        self._breaks[self._kind(component_id)] += 1
        if component_id in self._broken:
            return
        self._broken.add(component_id)
        if self.unreachable_since is not None:
            return
        if len(self._broken) < len(self._sides):
            if component_id not in self._said:
                self._unsaid[component_id] = (reason, now)
                self._wakeup.value = True
            return
        self.unreachable_since = now
        logger.warning(
            "microgrid unreachable: every telemetry stream is broken (the last: %s %d, %s); "
            "every battery is not working until it returns",
            self._kind(component_id),
            component_id,
            reason,
        )
        self._unsaid.clear()
        self._said.clear()
        self._link_changed(unreachable=True, now=now)

    def _delivered(self, component_id: int, now: float) -> None:
        """A component whose stream was broken delivered a new sample."""
        self._broken.discard(component_id)
        self._reconnects[self._kind(component_id)] += 1
        if self.unreachable_since is not None:
            logger.info(
                "microgrid reachable again after %.1f s: telemetry flows (%s %d first)",
                now - self.unreachable_since,
                self._kind(component_id),
                component_id,
            )
            self.unreachable_since = None
            self._link_changed(unreachable=False, now=now)
        elif (broke := self._said.pop(component_id, None)) is not None:
            logger.info(
                "%s %d: telemetry back after %.1f s",
                self._kind(component_id),
                component_id,
                now - broke,
            )
        elif component_id in self._unsaid:  # back before its break was logged: say both now
            reason, broke = self._unsaid.pop(component_id)
            logger.info(
                "%s %d: telemetry stream %s; back after %.1f s",
                self._kind(component_id),
                component_id,
                reason,
                now - broke,
            )

    def _link_changed(self, *, unreachable: bool, now: float) -> None:
        for battery_id, machine in self._machines.items():
            machine.unreachable = unreachable
            self._evaluate(battery_id, now, told=unreachable)  # the link's line said it

    def _skew_changed(self, component_id: int) -> None:
        if component_id in self._skewed:
            self._skewed.discard(component_id)
        else:
            self._skewed.add(component_id)
        if self._skew_news.pop(component_id, None) is None:  # a change undone is no news
            self._skew_news[component_id] = component_id in self._skewed
            self._skew_news_at = min(self._skew_news_at, trio.current_time())
        self._wakeup.value = True

    def _offset(self, component_id: int) -> float:
        """A component's clock offset, as its battery's machine keeps it (``nan``: none yet)."""
        battery_id, is_battery = self._sides[component_id]
        return self._machines[battery_id].side_offset(is_battery)

    def _kind(self, component_id: int) -> str:
        return "battery" if component_id in self._machines else "inverter"

    def _say_breaks(self, now: float) -> float:
        """Log the breaks older than :data:`LOG_SETTLE_S`; when the next is due (or ``inf``)."""
        due = {c: why for c, why in self._unsaid.items() if why[1] + LOG_SETTLE_S <= now}
        for component_id in due:
            del self._unsaid[component_id]
        if len(due) == 1:
            [(component_id, (reason, _))] = due.items()
            logger.warning(
                "%s %d: telemetry stream %s; reconnecting",
                self._kind(component_id),
                component_id,
                reason,
            )
        elif due:
            reasons = sorted({reason for reason, _ in due.values()})
            logger.warning(
                "%d telemetry streams broke (%s): components %s; reconnecting",
                len(due),
                "; ".join(reasons),
                _components(due),
            )
        self._said.update((c, broke) for c, (_, broke) in due.items())
        return min((broke + LOG_SETTLE_S for _, broke in self._unsaid.values()), default=math.inf)

    def _say_skews(self) -> None:
        news, self._skew_news, self._skew_news_at = self._skew_news, {}, math.inf
        began = sorted(c for c, skew in news.items() if skew)
        if began:
            logger.warning(
                "clock skew on %s: sampled_at %s our clock (more than max_data_age_s, %g s); "
                "freshness is judged on receipt",
                self._naming(began),
                _offsets_text([self._offset(c) for c in began]),
                self._config.value.max_data_age_s,
            )
        ended = sorted(c for c, skew in news.items() if not skew)
        if ended:
            logger.info("clock skew ended on %s", self._naming(ended))

    def _say_transitions(self) -> None:
        """Log the changes of status since the last wake-up: one line each, or per kind."""
        transitions, self._transitions = self._transitions, []
        if len(transitions) <= NAMED_IN_ONE_LINE:
            for battery_id, old, new in transitions:
                logger.info("battery %d: %s", battery_id, _transition(old, new))
            return
        kinds: dict[str, list[int]] = {}
        for battery_id, old, new in transitions:
            kinds.setdefault(_transition(old, new), []).append(battery_id)
        for kind, batteries in kinds.items():
            logger.info("%d batteries: %s: %s", len(batteries), kind, _components(batteries))

    def _naming(self, components: list[int]) -> str:
        """``battery 1001``, or ``3 components (1001, 1002, 2001)``."""
        if len(components) == 1:
            return f"{self._kind(components[0])} {components[0]}"
        return f"{len(components)} components ({_components(components)})"

    def record_outcomes(
        self, *, succeeded: Iterable[int], failed: Iterable[int], final: bool = True
    ) -> None:
        """Command outcomes of one request, by battery id.

        Args:
            succeeded: Batteries whose command succeeded (0 W included).
            failed: Batteries whose command failed in a way that blocks (not refusals).
            final: Whether the successes are final (not an ``ACCEPTED`` whose final reply is
                still to come: that unblocks, but keeps the blocking window's length).
        """
        now = trio.current_time()
        for battery_id in succeeded:
            if battery_id in self._machines:
                self._machines[battery_id].command_succeeded(final=final)
                self._evaluate(battery_id, now)
        for battery_id in failed:
            if battery_id in self._machines:
                self._machines[battery_id].command_failed(now=now)
                self._evaluate(battery_id, now)

    def count_repeat(self) -> None:
        """Count a sample dropped as not newer than its component's sample before it.

        A pair's is counted here; a group member's by the group sink, which drops it
        (:attr:`TrackerStatistics.repeated`).
        """
        self._repeated += 1

    def command_overridden(self, battery_id: int, overridden: bool) -> bool:
        """Whether someone else commands the battery's inverter (reason ``overridden``).

        Set when a command of ours was overridden by a command that was not ours, cleared when
        a later one of ours succeeded to the end. It never changes the status (not a failure of
        the battery). Returns whether it changed.
        """
        if battery_id not in self._machines or (battery_id in self._overridden) == overridden:
            return False
        if overridden:
            self._overridden.add(battery_id)
        else:
            self._overridden.discard(battery_id)
        self._evaluate(battery_id, trio.current_time())
        return True

    # -- queries -----------------------------------------------------------------------------

    def statistics(self) -> TrackerStatistics:
        """A snapshot of the tracker's bookkeeping."""
        return TrackerStatistics(
            gaps=MappingProxyType(dict(self._gaps)),
            breaks=MappingProxyType(dict(self._breaks)),
            reconnects=MappingProxyType(dict(self._reconnects)),
            repeated=self._repeated,
            unreachable_since=self.unreachable_since,
            clock_offsets=MappingProxyType(
                {c: o for c in self._sides if (o := self._offset(c)) == o}  # not nan
            ),
        )

    def heard(self) -> dict[int, tuple[float | None, float]]:
        """Per battery: when the older side's latest new sample arrived, and the clock offset.

        The time is on the trio clock (None until both sides reported); the offset, s, is the
        two sides' of the larger magnitude (``nan`` if neither said when it sampled).
        """
        return {b: (m.heard_at(), m.clock_offset) for b, m in self._machines.items()}

    def state(self, battery_id: int) -> BatteryState:
        """A battery's current state."""
        return self._current[battery_id]

    @property
    def states(self) -> Mapping[int, BatteryState]:
        """Every battery's current state (read-only view)."""
        return MappingProxyType(self._current)

    # -- the task ----------------------------------------------------------------------------

    def _evaluate(self, battery_id: int, now: float, *, told: bool = False) -> None:
        """Evaluate a battery now; a change of status is logged (unless ``told`` already)."""
        machine = self._machines[battery_id]
        evaluation = machine.evaluate(now)
        if self._overridden and battery_id in self._overridden:
            evaluation = attrs.evolve(evaluation, reasons=evaluation.reasons | {Reason.OVERRIDDEN})
        old = self._current[battery_id]
        # Field by field, cheapest first (no tuples built): asked on every sample.
        if (
            evaluation.status is not old.status
            or evaluation.blocked_until != old.blocked_until
            or evaluation.reasons != old.reasons
        ):
            if evaluation.status is not old.status and not told:
                self._transitions.append((battery_id, old.status, evaluation))
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
        say_at = math.inf  # when the next break is due to be logged
        while True:
            if not self._changed:
                deadline = min(self._heap[0][0] if self._heap else math.inf, say_at)
                with trio.move_on_at(deadline):
                    await self._wakeup.wait_value(True)
            self._wakeup.value = False
            now = trio.current_time()
            say_at = self._say_breaks(now) if self._unsaid else math.inf
            if self._skew_news:
                if self._skew_news_at + LOG_SETTLE_S <= now:
                    self._say_skews()
                else:
                    say_at = min(say_at, self._skew_news_at + LOG_SETTLE_S)
            if self._transitions:
                self._say_transitions()
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
