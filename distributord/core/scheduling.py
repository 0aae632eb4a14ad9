"""Scheduling rules of the request loop: when a client request runs, when a standing set re-plans.

Theory of operation
-------------------
The request loop (:mod:`distributord.shell.requestloop`) takes client requests off its queue and
applies them; which one may start, which one is dropped and which one waits is decided here.
Every request is a *job* scheduled by its battery set (``spec/protocol.md``); what a job is does
not matter here (:class:`Scheduler` is generic in it), only its set and when it came. It is
pure: time is passed in, nothing here sleeps, logs, answers or reads a clock. The loop executes
its decisions: it starts the jobs :meth:`Scheduler.dispatch` names, answers those it hands back,
and logs the waits it reports.

The rules it keeps, and why:

1. **Same set: one at a time, the newest wins.** At most one job per battery set is applied at
   a time; while it runs only the newest waiting job for that set is kept. The one it replaces
   is handed back, to be answered ``ignored``: a client that sent a newer setpoint for the same
   batteries no longer wants the older one, and applying it in between would only move power
   twice. The replacing job keeps the replaced one's place in the order, so a client that keeps
   updating its setpoint is not sent behind requests that came after its first one.
2. **Disjoint sets run concurrently**: a hanging inverter in one set never delays another.
3. **Overlapping, different sets run one after another, in arrival order.** A job starts only
   when no running job and no job waiting ahead of it shares a battery with it: two requests
   never command one inverter at once, and a later one never overtakes an earlier one it
   overlaps (which would let the older power win). Each waiting job is reported once, with the
   set it waits for, so the loop logs one warning per job, not one per turn.
4. **A job withdrawn before it starts is not applied** (its client went away: the protocol's
   rule for departures). One already running completes. One still in the loop's queue is
   remembered and dropped when it arrives.
5. **The queue is bounded by what is not served yet.** The bound (``queue_size``) counts the
   jobs still in the queue and those waiting for their batteries: a job that waits has not been
   served either. A request for a set whose job already waits is always taken: it replaces that
   job (rule 1) and adds nothing.
6. **Standing sets are re-planned when due, unless a client request decides.** A standing set
   is due a re-plan once ``planned_at + every`` has passed, once its ramp's next step is due
   (``step_due``: a ramping target is re-applied every ``ramp.step_s``), or at once when one of
   its batteries changed status since it was planned. A set that overlaps a running or waiting job
   is skipped: that job replaces or ends it, and its end wakes the re-plans again.
   :func:`next_replan` is the time to wake for the earliest of the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType
from typing import Generic, Protocol, TypeVar

import attrs

from distributord.core.status import Status

J = TypeVar("J")

BatterySet = frozenset[int]

Slot = tuple[Hashable, BatterySet]
"""Where a job waits and runs: its owner and its battery set (:class:`Scheduler`)."""


@attrs.frozen(kw_only=True)
class Arrival(Generic[J]):
    """What became of a job taken off the queue.

    Attributes:
        withdrawn: It was withdrawn while it was queued: it is dropped, not scheduled.
        replaced: The job waiting for the same set that it replaced, to be answered ``ignored``
            (rule 1); None if there was none.
    """

    withdrawn: bool
    replaced: J | None


@attrs.frozen(kw_only=True)
class Wait:
    """A waiting job's set, reported once: it waits for another, overlapping set (rule 3).

    Attributes:
        batteries: The waiting job's set.
        behind: The set it waits for: one running, or one waiting ahead of it.
    """

    batteries: BatterySet
    behind: BatterySet


@attrs.frozen(kw_only=True)
class Turn(Generic[J]):
    """What one turn of the scheduler decided.

    Attributes:
        started: The jobs to start now, in arrival order (they now count as running).
        waits: Jobs that wait for another set, each reported only in the first turn it waits.
    """

    started: tuple[J, ...]
    waits: tuple[Wait, ...]


class Scheduler(Generic[J]):
    """Schedules jobs by battery set (see the module docstring, rules 1 to 5).

    A job's *slot* is its owner and its set (:data:`Slot`): the newest job wins within a slot
    (rule 1); jobs of different slots wait for each other when their sets overlap (rule 3), also
    two owners' jobs on one set. The request loop's owner is the program that asks (``None``
    for a caller that names none).

    Args:
        queue_size: The bound on jobs queued and waiting (rule 5).
        key: What identifies a job to :meth:`withdraw` it, compared by identity (the request
            loop's jobs are identified by their request, all a departing client names).
    """

    def __init__(self, *, queue_size: int, key: Callable[[J], object]) -> None:
        self._queue_size = queue_size
        self._key = key
        # Insertion order is arrival order; a replacing job takes the replaced one's entry.
        self._waiting: dict[Slot, J] = {}
        self._warned: set[Slot] = set()  # slots whose waiting job was reported (rule 3)
        self._running: dict[Slot, J] = {}
        # Jobs withdrawn while still queued, by the id of their key (the key is kept, so that its
        # id cannot be reused before the job arrives).
        self._withdrawn: dict[int, object] = {}

    @property
    def waiting(self) -> Mapping[Slot, J]:
        """The jobs waiting for their batteries, by slot, in arrival order (read-only view)."""
        return MappingProxyType(self._waiting)

    @property
    def running(self) -> Mapping[Slot, J]:
        """The jobs started and not finished, by slot (read-only view)."""
        return MappingProxyType(self._running)

    def admits(self, batteries: BatterySet, *, queued: int, owner: Hashable = None) -> bool:
        """Whether a new job for ``batteries`` may be queued, ``queued`` being queued (rule 5)."""
        slot = (owner, batteries)
        return slot in self._waiting or queued + len(self._waiting) < self._queue_size

    def arrive(self, batteries: BatterySet, job: J, *, owner: Hashable = None) -> Arrival[J]:
        """A job came off the queue: it waits, replacing its slot's waiting job (rule 1).

        Nothing starts here: :meth:`dispatch` decides that.
        """
        key = self._key(job)
        if self._withdrawn.pop(id(key), None) is key:
            return Arrival(withdrawn=True, replaced=None)  # rule 4
        slot = (owner, batteries)
        replaced = self._waiting.get(slot)
        self._waiting[slot] = job  # an existing slot keeps its place in the order
        self._warned.discard(slot)  # a new job: it is reported on its own
        return Arrival(withdrawn=False, replaced=replaced)

    def dispatch(self) -> Turn[J]:
        """Start every waiting job that nothing running or waiting ahead of it overlaps (rule 3)."""
        started: list[J] = []
        waits: list[Wait] = []
        ahead: list[Slot] = []  # slots of the jobs that could not start in this turn
        for slot, job in list(self._waiting.items()):
            batteries = slot[1]
            behind = next(
                (r for r in self._running if not batteries.isdisjoint(r[1])),
                None,
            ) or next((a for a in ahead if not batteries.isdisjoint(a[1])), None)
            if behind is not None:
                ahead.append(slot)
                # Behind its own set it is its slot's newest waiting (rule 1), or another
                # owner's proposal for the same bucket: nothing to report.
                if behind[1] != batteries and slot not in self._warned:
                    self._warned.add(slot)
                    waits.append(Wait(batteries=batteries, behind=behind[1]))
                continue
            del self._waiting[slot]
            self._warned.discard(slot)
            self._running[slot] = job
            started.append(job)
        return Turn(started=tuple(started), waits=tuple(waits))

    def finish(self, batteries: BatterySet, *, owner: Hashable = None) -> None:
        """The running job of a slot ended (call :meth:`dispatch` for what may start)."""
        del self._running[(owner, batteries)]

    def withdraw(self, batteries: BatterySet, key: object, *, owner: Hashable = None) -> bool:
        """Withdraw the job identified by ``key`` for ``batteries``, unless it runs (rule 4).

        True if it was withdrawn: it waited, or it is still queued and is dropped when it
        arrives. Only for a job that was queued and is not finished.
        """
        slot = (owner, batteries)
        running = self._running.get(slot)
        if running is not None and self._key(running) is key:
            return False
        waiting = self._waiting.get(slot)
        if waiting is not None and self._key(waiting) is key:
            del self._waiting[slot]
            self._warned.discard(slot)
        else:
            self._withdrawn[id(key)] = key
        return True

    def drain(self) -> list[J]:
        """Take every waiting job out, in arrival order: they will not be applied (shutdown)."""
        jobs = list(self._waiting.values())
        self._waiting.clear()
        self._warned.clear()
        return jobs

    def busy(self, batteries: BatterySet) -> bool:
        """Whether a running or waiting job shares a battery with ``batteries`` (rule 6)."""
        return any(not batteries.isdisjoint(s[1]) for s in (*self._running, *self._waiting))


class Planned(Protocol):
    """A standing set's last plan: when it was made, and its batteries' statuses then."""

    @property
    def planned_at(self) -> float:
        """When it was last planned."""
        ...

    @property
    def statuses(self) -> Mapping[int, Status]:
        """Its batteries' statuses then."""
        ...

    @property
    def step_due(self) -> float:
        """When its ramp takes its next step (``spec/plant.md``); ``math.inf``: not ramping."""
        ...


def replans_due(
    standing: Mapping[BatterySet, Planned],
    *,
    now: float,
    every: float,
    status: Callable[[int], Status],
    busy: Callable[[BatterySet], bool],
) -> list[BatterySet]:
    """The standing sets to re-plan now, in their order (rule 6).

    Args:
        standing: The standing sets and their last plans.
        now: The time now.
        every: How often a standing set is re-planned.
        status: A battery's status now.
        busy: Whether a client job running or waiting overlaps a set (:meth:`Scheduler.busy`).
    """
    due = []
    for batteries, planned in standing.items():
        if busy(batteries):
            continue  # a client request for these batteries decides
        statuses = {b: status(b) for b in planned.statuses}
        if (
            statuses != dict(planned.statuses)
            or now >= planned.planned_at + every
            or now >= planned.step_due
        ):
            due.append(batteries)
    return due


def next_replan(
    standing: Mapping[BatterySet, Planned],
    *,
    every: float,
    busy: Callable[[BatterySet], bool],
) -> float:
    """When the next standing set is due a re-plan by time; ``math.inf`` if none is (rule 6).

    By time: ``every`` after its last plan, or its ramp's next step, whichever is first.

    A status change makes a set due earlier: the caller also wakes on those.
    """
    due: Iterable[float] = (
        min(p.planned_at + every, p.step_due) for b, p in standing.items() if not busy(b)
    )
    return min(due, default=math.inf)
