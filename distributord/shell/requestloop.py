"""The request loop: schedules requests by battery set, applies them, holds standing setpoints.

Theory of operation
-------------------
The socket listener hands each ``set_power`` request to :meth:`RequestLoop.submit`, which puts
it on a bounded trio memory channel; a full channel is an answer (the listener replies
"overloaded"), never an unbounded buffer. The loop's task takes requests off the channel and
schedules them by their battery set (``spec/protocol.md``); the rules are kept by the pure
:class:`distributord.core.scheduling.Scheduler`, and this loop executes its decisions:

* **Same set**: at most one is applied at a time; while it runs only the newest waiting request
  is kept, and each one it replaces is answered ``ignored``.
* **Disjoint sets** run concurrently: a hanging inverter in one set never delays another.
* **Overlapping, different sets** run one after another in arrival order, with a warning.

Applying a request: choose its batteries and plan it (``distributord.core.planning``: working,
else uncertain; with ``include_broken_batteries`` also the others, from cached telemetry), then
command every involved inverter concurrently inside ``trio.move_on_after(request_timeout)``.
Commands still running at the deadline are cancelled at the RPC and count as failed. Outcomes go
to the status tracker (refusals do not block), the result goes back to the client. On
v1alpha18/19 a command's outcome is its ``ACCEPTED``; how its reply stream ends later (a
``FAILED`` that blocks, an ``OVERRIDDEN`` by someone else) reaches the tracker, the metrics, the
log and the status subscribers (``command_failed``, :attr:`RequestLoop.notices`) afterwards.

**Standing setpoints.** A request that was planned leaves a standing setpoint for its set,
until a new request for those batteries replaces it; ``power_w: 0`` releases it. The loop does
not send standing setpoints itself: it tells the commander (:mod:`distributord.shell.commander`)
what each inverter is *wanted* at, and the setpoint ledger (:mod:`distributord.core.ledger`)
decides, per inverter, when it must be sent again (before *its own* command's lifetime runs out)
and when power nobody wants must be released. The loop re-plans each standing set with fresh
telemetry every ``lifetime/3`` and at once when one of its batteries changes status, unless a
client request for its batteries runs or waits (``distributord.core.scheduling`` decides when).
A re-plan only changes what is wanted: a hanging inverter never holds up another's refresh, and
a client request touches only the inverters it commands.

A request changes the ledger only once it is planned: one refused (unknown ids, out of bounds,
no usable battery) changes nothing. A planned request for an overlapping, different set ends
the standing setpoints it overlaps (logged); the batteries they held and it does not command are
released in the same round, as are its own batteries that get no share.

**Power it does not command.** Each plan, a client request's or a re-plan's, takes the fresh
measured power of the set's batteries that it does not use (blocked, not working) off the power
it splits (``distribution.compensate_unused``, :mod:`distributord.core.compensation`): an
inverter whose command failed keeps its old setpoint until that command's lifetime ends, and the
site must not deliver it on top of the request. Only the batteries of the bucket's application
count: those another program holds are commanded for that program, not left unused. A 0 W share
is sent once, when the share becomes 0 (:meth:`~distributord.core.ledger.Ledger.zero_stands`),
not again with every request that keeps it at 0.

**Release is absolute.** ``power_w: 0`` ends the standing setpoints of its batteries and sends
0 W to every inverter among them that is usable or may hold power (one the ledger has never
seen may: a restarted daemon does not know what its predecessor left), whatever their status.

No request can take the loop down: an unexpected exception while applying one becomes an
``error`` result (and a logged traceback).
"""

from __future__ import annotations

import functools
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, assert_never

import attrs
import trio
import trio_util

from distributord.api.adapter import FinalReply
from distributord.core.arbitration import wire
from distributord.core.arbitration.arbiter import (
    Arbiter,
    Ask,
    Listener,
    Origin,
    Trial,
    accepted_line,
    answer_for,
    held_elsewhere,
    refused_line,
    refused_message,
    window_bounds,
)
from distributord.core.arbitration.holdings import (
    Bucket,
    Event,
    Proposal,
    Refused,
)
from distributord.core.arbitration.merge import Grant, Merge, Mode, merge
from distributord.core.arbitration.programs import acting_as
from distributord.core.config import DEFAULT_PROGRAM, Config
from distributord.core.distribution import (
    Distribution,
    Limit,
    LimitOverlapError,
    SearchBudget,
    aggregate_bounds,
    limit_tree,
)
from distributord.core.distribution.placement import check_power
from distributord.core.distribution.reactive import (
    ReactiveLimits,
    ReactiveSplit,
    capped_active_bounds,
    headroom,
    reactive_as_sent,
    reactive_rooms,
    split_reactive,
)
from distributord.core.distribution.rows import Allotment, Pair
from distributord.core.errors import CommandError
from distributord.core.ledger import REFRESH_AT
from distributord.core.model import (
    Error,
    Ignored,
    InverterSnapshot,
    OutOfBounds,
    PartialFailure,
    PowerBounds,
    Request,
    Result,
    Success,
    Timing,
)
from distributord.core.planning import (
    Choice,
    Uncommanded,
    as_sent,
    choose,
    plan,
    summarize,
    uncommanded,
    unknown_batteries,
)
from distributord.core.ramp import Ramp, Step, reachable, start_from
from distributord.core.ramp import apply as ramp_apply
from distributord.core.scheduling import Scheduler, next_replan, replans_due
from distributord.core.session import Reply
from distributord.core.status import Status
from distributord.core.topology import Topology
from distributord.core.values import floats32_toward_zero, ids_text
from distributord.shell.commander import Commander, Flight
from distributord.shell.link import Late, MicrogridClient, ReactiveSide
from distributord.shell.live import Live
from distributord.shell.metrics import Metrics
from distributord.shell.notices import Notices
from distributord.shell.tracker import StatusTracker

logger = logging.getLogger(__name__)

CUT_OFF = (
    "cut off: the daemon is shutting down and its drain deadline ended this request; "
    "commands still running were cancelled"
)
NOT_APPLIED = "not applied: the daemon is shutting down and this request never started"
TAKEN_BACK = "withdrawn before it was applied: its program withdrew from these batteries"


def _request_text(job: _Job) -> str:
    """A client's request as the log names it."""
    return (
        f"request {job.ask.call_id!r} of program {job.owner} "
        f"({job.request.power_w:.0f} W for batteries [{ids_text(job.request.batteries)}])"
    )


def _cancelled_from_outside() -> bool:
    """Whether the calling task is being cancelled by a scope around it (the shutdown)."""
    return trio.current_effective_deadline() == -math.inf


def held_s(config: Config, lifetime_scale: float) -> float:
    """How long a command sent now holds, once applied: its lifetime, in clock seconds.

    ``lifetime_scale`` is 1 on a site; a test simulator's lifetimes may run faster.
    """
    return config.setpoints.lifetime_s * lifetime_scale


GROUP_REPLANS = 2
"""How many times a plan is made again when an N:M group's inverters could not divide its
share (``_held_to``): each time the group is held to what they placed, so the rest can go to
pairs that take it; what still falls short after that is reported as not placed."""

HELD_BACK_S = 1.0
"""How soon a set whose plan was held back by the other kind of power still standing (its
apparent-power limit) is planned again: the other kind's change has landed by then."""

HELD_BACK_REACTIVE = "held back: active power it may still hold leaves no more within S"

FLOAT32_SHORTFALL = 2.0**-22
"""What the setpoints' float32 rounding toward zero may leave of a split, relative to it: a ramp
that placed all but this reached its target."""

UNKNOWN_BOUNDS = PowerBounds(
    inclusion_lower=math.nan,
    exclusion_lower=math.nan,
    exclusion_upper=math.nan,
    inclusion_upper=math.nan,
)
"""The bounds of a set with no usable battery: the merge grants nothing on them."""


class _Nobody:
    """The connection of a request submitted without one (tests, the demo): told nothing."""

    def notify(self, method: str, params: Mapping[str, Any]) -> None:
        del method, params


NOBODY = Origin(program=DEFAULT_PROGRAM, connection=_Nobody(), uid=-1, pid=0)
"""Who asks when a bare :class:`Request` is submitted: the ``default`` program."""


@attrs.define(eq=False)
class _Job:
    """A client request (``set_power`` or ``propose``) being scheduled."""

    ask: Ask
    reply: Reply
    arrived: float
    commands_s: float = 0.0
    committed: bool = False  # its proposal was kept

    @property
    def request(self) -> Request:
        """The request as the distribution and the reply see it."""
        return self.ask.request

    @property
    def owner(self) -> str:
        """Its scheduling slot's owner: the program that asks."""
        return self.ask.origin.program


@attrs.define
class _Standing:
    """A bucket's standing setpoint.

    When it was last planned, and its batteries' statuses then (a change triggers a re-plan);
    its ramp as last applied, and when its next step is due (``math.inf``: not ramping).
    """

    planned_at: float
    statuses: dict[int, Status]
    ramp: Ramp | None = None
    ramp_key: tuple[frozenset[int], frozenset[str]] | None = None
    held_at_zero: bool = False
    step_due: float = math.inf


@attrs.frozen
class _Step:
    """A ramp's step as applied.

    The ramp's own step, what the ramp was made for (the batteries the bucket held, its exempt
    programs), and whether the step was held at 0 W in the exclusion zone.
    """

    step: Step
    key: tuple[frozenset[int], frozenset[str]]
    held_at_zero: bool = False


@attrs.frozen(kw_only=True)
class LoopStatistics:
    """A snapshot of the loop's state.

    Attributes:
        queued: Requests waiting in the channel.
        waiting: Requests waiting for their batteries.
        running: Requests being applied.
        standing: Standing setpoints held.
        last_latency_s: Time from arrival to result of the last client request.
        setpoints: Battery id to the setpoint its inverter is believed to hold, W (the ledger's
            belief; a copy).
        lapses: Non-zero setpoints that ran out before a refresh or release of theirs was
            confirmed, since the start (:meth:`~distributord.core.ledger.Ledger.lapses`).
    """

    queued: int
    waiting: int
    running: int
    standing: int
    last_latency_s: float | None
    setpoints: Mapping[int, float]
    lapses: int = 0


class RequestLoop:
    """Schedules and applies requests (see the module docstring).

    Args:
        client: The microgrid.
        tracker: The status tracker (and its telemetry store).
        topology: The managed pairs.
        config: The configuration, read where it is used: ``distribution.*``,
            ``setpoints.lifetime_s``, ``requests.queue_size`` and ``default_timeout_s`` (the
            deadline of a command no client waits for: a refresh, a release, a retry) and
            ``status.broken_cache_ttl_s``. A reload changes them; the queue's size is fixed at
            start, and the reload keeps it.
        lifetime_scale: How much faster than the clock the microgrid's lifetimes run: 1 on a
            site; a test simulator's ``lifetime_scale`` (its setpoints hold ``lifetime_s ×
            lifetime_scale`` seconds), which the ledger then takes a command to hold.
        metrics: Where commands and request latencies are counted.
        placed: What a command of a kind ("active", "reactive") and power to an inverter
            places, and whether its inverters took all of it: less than the power only for an
            N:M group's lead inverter, by the wire's rounding of its division among the group's
            inverters, or by what no choice of them could take (:meth:`GroupSide.placed
            <distributord.shell.groups.GroupSide.placed>`); None: every command places its
            power.
        group_held: For an N:M group's lead inverter, the most its inverters may hold
            together (charging, discharging), which a limit counts when it is more than the
            lead's command (:meth:`GroupSide.held <distributord.shell.groups.GroupSide.held>`).
    """

    def __init__(
        self,
        client: MicrogridClient,
        tracker: StatusTracker,
        topology: Topology,
        config: Live[Config],
        *,
        lifetime_scale: float = 1.0,
        metrics: Metrics | None = None,
        placed: Callable[[Literal["active", "reactive"], int, float], tuple[float, bool]]
        | None = None,
        group_held: Callable[[int], tuple[float, float] | None] | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._placed = placed
        self._group_held = group_held
        self._tracker = tracker
        self._topology = topology
        self._battery_of = {inverter: battery for battery, inverter in topology.pairs.items()}
        self._lead_inverter = {  # every managed inverter to its group's lead inverter
            inverter: lead
            for battery, lead in topology.pairs.items()
            for inverter in topology.group(battery).inverters
        }
        self._limits_cache: tuple[object, tuple[Limit, ...]] | None = None
        self._held_memo: dict[int, tuple[float, float]] | None = None  # within one plan
        self._config = config
        self._commander = Commander(
            client,
            lifetime_s=lambda: self.config.setpoints.lifetime_s,
            held_s=lambda: held_s(self.config, lifetime_scale),
            background_timeout_s=lambda: self.config.requests.default_timeout_s,
            on_fate=self._fate,
            on_late=self._late,
        )
        self._reactive = Commander(
            ReactiveSide(client),
            lifetime_s=lambda: self.config.setpoints.lifetime_s,
            held_s=lambda: held_s(self.config, lifetime_scale),
            background_timeout_s=lambda: self.config.requests.default_timeout_s,
            on_fate=self._reactive_fate,
            on_late=self._reactive_late,
        )
        """Reactive power's commands and ledger (``spec/plant.md``): apart from active power's,
        by the same rules (refreshed before their lifetime, released when nobody wants them)."""
        self.notices = Notices()
        """Events for status subscribers: ``command_failed``."""
        # How often a standing set is re-planned: a third of what a command holds. A reload that
        # changes it re-times the re-plans at once.
        self._refresh_interval = config.view(lambda c: held_s(c, lifetime_scale) * REFRESH_AT)
        queue_size = config.value.requests.queue_size
        self._send, self._receive = trio.open_memory_channel[_Job](queue_size)
        self._probes: list[trio.Event] | None = None  # a list while serve() runs
        self._probe_wanted = trio_util.AsyncBool(False)  # a level: the probes wait in _probes
        # A departing client names its request: that identifies its job.
        self._scheduler = Scheduler[_Job](queue_size=queue_size, key=lambda job: job.request)
        self._standing: dict[frozenset[int], _Standing] = {}  # by bucket
        self._standing_changed = trio_util.AsyncBool(False)  # a standing set came or went
        self._arbiter = Arbiter()
        self._proposals_changed = trio_util.AsyncBool(False)  # wakes the expiry task
        self._asked: dict[int, Ask] = {}  # by id of a taken request not answered yet
        # Connections that closed: an until_disconnect ask of theirs still on its way is not kept.
        self._gone: weakref.WeakSet[Listener] = weakref.WeakSet()
        # Requests (by id) a withdrawal of their program took back before they were applied.
        self._taken_back: set[int] = set()
        self._nursery: trio.Nursery | None = None
        self._last_latency_s: float | None = None
        self._closed = False
        self._held_back = False  # the last plan held power back for S (see _fit_standing)

    # The scheduler's views by set, by their old names (the stateful test reads them; several
    # programs' requests for one set show as one).

    @property
    def _waiting(self) -> Mapping[frozenset[int], _Job]:
        """The requests waiting for their batteries, by set (a copy)."""
        return {batteries: job for (_, batteries), job in self._scheduler.waiting.items()}

    @property
    def _running(self) -> Mapping[frozenset[int], _Job]:
        """The requests being applied, by set (a copy)."""
        return {batteries: job for (_, batteries), job in self._scheduler.running.items()}

    # -- the public side ---------------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The configuration in force now."""
        return self._config.value

    @property
    def commander(self) -> Commander:
        """What sends the commands, and the ledger of what each inverter holds."""
        return self._commander

    def submit(self, ask: Ask | Request, reply: Reply) -> bool:
        """Queue a client request; False when the queue is full (the client is told to retry).

        ``ask`` is a ``set_power`` or ``propose`` with who asked; a bare :class:`Request` is a
        ``set_power`` of program ``default``. The bound (``queue_size``) counts the requests in
        the channel and the client requests waiting for their batteries: a request that waits
        has not been served either. A request of a program for a set whose request of that
        program is already waiting is always taken: it replaces that one and adds nothing.
        """
        if isinstance(ask, Request):
            ask = Ask.set_power(ask, NOBODY)
        queued = self._receive.statistics().current_buffer_used
        program = ask.origin.program
        if not self._scheduler.admits(ask.batteries, queued=queued, owner=program):
            return False
        try:
            self._send.send_nowait(_Job(ask=ask, reply=reply, arrived=trio.current_time()))
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        self._asked[id(ask.request)] = ask
        return True

    def probe(self, answer: trio.Event) -> bool:
        """Ask the loop to set ``answer`` once its scheduler has run a turn.

        The watchdog's proof that the loop is alive. It does not go through the request queue:
        a full queue is a busy daemon, not a dead one, and must not stop the watchdog. False
        once the loop is closed or not serving.
        """
        if self._closed or self._probes is None:
            return False
        self._probes.append(answer)
        self._probe_wanted.value = True
        return True

    def withdraw(self, request: Request) -> bool:
        """Drop ``request`` if it has not started (its client went away).

        A request already applying completes; one not yet started, whether it waits for its
        batteries or is still in the queue, is not applied (the protocol's rule for client
        departures). True if it was withdrawn; it gets no reply. Only for a request that was
        taken (:meth:`submit`) and not answered yet.
        """
        ask = self._asked.get(id(request))
        owner = DEFAULT_PROGRAM if ask is None else ask.origin.program
        if not self._scheduler.withdraw(request.batteries, request, owner=owner):
            return False
        self._asked.pop(id(request), None)
        logger.info(
            "request for batteries [%s] withdrawn before it started: its client went away",
            ids_text(request.batteries),
        )
        return True

    def close(self) -> None:
        """Take no more requests; :meth:`serve` returns once those in hand are done."""
        self._closed = True
        self._send.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: the daemon is shutting down."""
        return self._closed

    def setpoints(self) -> dict[int, float]:
        """Battery id to the setpoint its inverter is believed to hold now (the ledger's)."""
        return self._beliefs(self._commander)

    def reactive_setpoints(self) -> dict[int, float]:
        """Battery id to the reactive setpoint its inverter is believed to hold now, var."""
        return self._beliefs(self._reactive)

    def _beliefs(self, commander: Commander) -> dict[int, float]:
        """Battery id to what ``commander``'s ledger believes its inverter holds now."""
        now = trio.current_time()
        ledger = commander.ledger
        beliefs = {b: ledger.belief(i, now) for b, i in self._topology.pairs.items()}
        return {b: v for b, v in beliefs.items() if v is not None}

    def statistics(self) -> LoopStatistics:
        """A snapshot of the loop's state (the setpoints are read once per call)."""
        return LoopStatistics(
            queued=self._receive.statistics().current_buffer_used,
            waiting=len(self._scheduler.waiting),
            running=len(self._scheduler.running),
            standing=len(self._standing),
            last_latency_s=self._last_latency_s,
            setpoints=MappingProxyType(self.setpoints()),
            lapses=self._commander.ledger.lapses(trio.current_time()),
        )

    def standing(self) -> dict[frozenset[int], Request]:
        """The standing setpoints: bucket (battery set) to the newest request kept for it."""
        standing = {}
        for batteries in self._standing:
            bucket = self._arbiter.registry.holdings().bucket(batteries)
            if bucket is None:
                continue
            newest = max(bucket.proposals, key=lambda p: p.sequence)
            ask = self._arbiter.ask(newest)
            if ask is not None:
                standing[batteries] = ask.request
        return standing

    # -- arbitration's public side ---------------------------------------------------------

    def withdraw_proposals(
        self, origin: Origin, batteries: frozenset[int] | None
    ) -> list[frozenset[int]]:
        """``withdraw``: end the program's proposals on ``batteries`` (all when ``None``).

        Returns the sets withdrawn. Their batteries that nobody holds any more are released at
        once (an explicit 0 W); those others hold follow them.
        """
        # The program's proposals not applied yet (queued, waiting, about to start) are taken
        # back too: a withdrawal is not overtaken by a proposal sent before it. They are
        # answered ignored when their turn comes.
        for key, ask in self._asked.items():
            ours = ask.origin.program == origin.program and not ask.releases
            if ours and batteries in (None, ask.batteries):
                self._taken_back.add(key)
        change = self._arbiter.withdraw(origin.program, batteries)
        self._after(change.events, by=origin)
        return [p.batteries for p in change.ended]

    def disconnect(self, connection: Listener) -> None:
        """A connection closed: its ``until_disconnect`` proposals end.

        One of its ``until_disconnect`` asks still on its way (taken, not yet applied) is
        refused when it comes to be applied: the connection it was to end with has gone.
        """
        self._gone.add(connection)
        change = self._arbiter.disconnect(connection)
        if change.ended:
            self._after(change.events)

    def proposals(self) -> list[dict[str, Any]]:
        """``get_proposals``: every live proposal, what it was granted, what its bucket holds."""
        holdings = self._arbiter.registry.holdings()
        now = trio.current_time()
        entries = []
        for proposal in self._arbiter.registry.proposals():
            bucket = holdings.bucket(proposal.batteries)
            entries.append(
                wire.proposal_entry(
                    proposal,
                    now=now,
                    granted_w=self._arbiter.granted(proposal),
                    held=frozenset() if bucket is None else bucket.held,
                )
            )
        return entries

    def bounds(self, program: str, batteries: frozenset[int]) -> dict[str, Any] | None:
        """``bounds_changed``'s params: what ``program`` may still ask of ``batteries`` now.

        The walk over the bucket's proposals of strictly higher priority, over the batteries of
        the set that a proposal of this program would hold (those no higher bucket holds).
        ``None`` when a battery is unknown or the program is not configured.
        """
        try:
            return self._bounds_params(program, batteries)
        except Exception:  # a bug must not end the caller's connection: said, and nothing sent
            logger.exception(
                "bounds of batteries [%s] for program %s failed unexpectedly",
                ids_text(batteries),
                program,
            )
            return None

    def _bounds_params(self, program: str, batteries: frozenset[int]) -> dict[str, Any] | None:
        """:meth:`bounds`, which answers its exceptions."""
        if not batteries <= self._topology.pairs.keys():
            return None
        acting = acting_as(program, self.config)
        if acting is None:
            return None
        bucket = self._arbiter.registry.holdings().bucket(batteries)
        available = self._arbiter.available(batteries, acting.priority)
        if bucket is not None and bucket.held == available:
            merged, _ = self._merge(self._arbiter, bucket, record=False)
        else:
            merged = merge(self._bounds(available), [], Mode(self.config.arbitration.merge))
        headroom = merged.headroom(acting.priority)
        ramp = self.config.ramp
        if ramp.enabled and not self._exempt(program):
            # What the bucket's target can reach by its next step (spec/plant.md).
            standing = self._standing.get(batteries) if bucket is not None else None
            exempt_w = 0.0 if bucket is None else self._exempt_w(bucket, merged, merged.target_w)
            low, high = reachable(
                None if standing is None else standing.ramp,
                exempt_w=exempt_w,
                rate_w_per_s=ramp.max_w_per_s,
                step_s=ramp.step_s,
            )
            headroom = attrs.evolve(
                headroom,
                inclusion_lower_w=max(headroom.inclusion_lower_w, low),
                inclusion_upper_w=min(headroom.inclusion_upper_w, high),
            )
        return wire.bounds_changed_params(batteries, program, headroom, merged.target_w)

    def programs(self) -> dict[str, tuple[int, float]]:
        """Per configured program (and any with live proposals): live proposals, granted W."""
        figures = dict.fromkeys(self.config.programs, (0, 0.0))
        figures.update(self._arbiter.figures())
        return figures

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take requests until :meth:`close`; return when the last one is done.

        Cancelled (the drain deadline at shutdown), it still answers every client request it
        took: those running with "cut off", those waiting with "not applied".
        """
        self._mapped_limits()  # what an operator should know of the limits is said at start
        try:
            await self._serve(task_status)
        finally:
            for job in self._scheduler.drain():
                self._answer(job, Error(request=job.request, message=NOT_APPLIED))

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as background:
            await background.start(self._commander.serve)
            await background.start(self._reactive.serve)
            background.start_soon(self._serve_replans)
            background.start_soon(self._serve_expiry)
            background.start_soon(self._serve_programs)
            background.start_soon(self._serve_probes)
            self._probes = []
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                async for job in self._receive:
                    self._arrive(job)
                # Client requests already taken run to completion (the nursery waits for them).
            self._probes = None
            background.cancel_scope.cancel()

    # -- scheduling ----------------------------------------------------------------------------

    def _arrive(self, job: _Job) -> None:
        arrival = self._scheduler.arrive(job.request.batteries, job, owner=job.owner)
        if arrival.withdrawn:
            return  # its client went away while it was queued (see withdraw)
        if arrival.replaced is not None:
            self._answer(
                arrival.replaced,
                Ignored(
                    request=arrival.replaced.request,
                    message="superseded by a newer request for the same batteries",
                ),
            )
        self._dispatch()

    def _dispatch(self) -> None:
        assert self._nursery is not None
        turn = self._scheduler.dispatch()
        for wait in turn.waits:
            logger.warning(
                "request for batteries [%s] overlaps the request for [%s]; it waits",
                ids_text(wait.batteries),
                ids_text(wait.behind),
            )
        for job in turn.started:
            self._nursery.start_soon(self._run, job)

    async def _run(self, job: _Job) -> None:
        batteries = job.request.batteries
        result: Result | None = None
        try:
            result = await self._apply(job)
        except Exception as error:  # a bug must not take the daemon down
            logger.exception("request for batteries [%s] failed", ids_text(batteries))
            result = Error(request=job.request, message=f"internal error: {error!r}")
            # Its client is told it failed: nothing of it may stand (what it may have sent is
            # released by the ledger).
            if job.committed:
                change = self._arbiter.withdraw(job.owner, batteries)
                self._after(change.events, by=job.ask.origin)
        finally:
            self._scheduler.finish(batteries, owner=job.owner)
            self._standing_changed.value = True  # its sets' re-plans may be due now
            stopping = _cancelled_from_outside()
            if result is None and stopping:
                result = Error(request=job.request, message=CUT_OFF)
            if result is not None:
                self._answer(job, result)
            if not stopping:  # nothing new starts while the loop is being cancelled
                self._dispatch()

    async def _serve_probes(self) -> None:
        """Answer the watchdog's probes, each after a turn of the scheduler."""
        while True:
            await self._probe_wanted.wait_value(True)
            self._probe_wanted.value = False
            if self._nursery is not None:
                self._dispatch()  # a scheduler that cannot run a turn answers nobody
            waiting, self._probes = self._probes or [], []
            for answer in waiting:
                answer.set()

    def _answer(self, job: _Job, result: Result) -> None:
        """Reply to a client's request: its one result."""
        self._asked.pop(id(job.request), None)
        self._taken_back.discard(id(job.request))
        self._last_latency_s = trio.current_time() - job.arrived
        self._metrics.set_power_done(self._last_latency_s)
        job.reply(result, Timing(total_s=self._last_latency_s, commands_s=job.commands_s))

    # -- applying ------------------------------------------------------------------------------

    def _choose(
        self, batteries: frozenset[int], *, include_broken: bool = False
    ) -> tuple[Choice, dict[int, Status]]:
        """The pairs ``batteries`` offer now (:func:`choose`), and their statuses."""
        statuses = {b: self._tracker.state(b).status for b in batteries}
        chosen = choose(
            Request(power_w=0.0, batteries=batteries, include_broken_batteries=include_broken),
            statuses,
            self._tracker.fleet,
            now=trio.current_time(),
            cache_ttl_s=self.config.status.broken_cache_ttl_s,
        )
        # No inverter is asked more active power than its apparent-power limit allows.
        pairs = _within_apparent(chosen.pairs, {})
        if pairs is not chosen.pairs:
            chosen = attrs.evolve(chosen, pairs=pairs)
        return chosen, statuses

    def _plan(
        self, request: Request, chosen: tuple[Choice, dict[int, Status]] | None = None
    ) -> tuple[Result | Distribution, dict[int, Status], Uncommanded, ReactiveSplit | None]:
        """Plan ``request`` on the batteries' state now (as sent on the wire).

        ``chosen`` is what :meth:`_choose` gave for its batteries (without broken ones), if the
        caller has it: it is chosen again only where it does not fit the request. The power
        of its batteries that are not used, measured fresh now, is taken off the request
        (``distribution.compensate_unused``): on every request and every re-plan.

        With ``reactive_var``, the reactive split too (``spec/plant.md``): after the active
        one, in the room each inverter's apparent-power limit leaves it (``plant.pq_priority =
        "active"``), or first, the active caps then shrinking to what it leaves (``"reactive"``).
        """
        # What each inverter may hold is read once per plan: nothing changes it meanwhile.
        self._held_memo = {}
        try:
            return self._planned(request, chosen)
        finally:
            self._held_memo = None

    def _planned(
        self, request: Request, chosen: tuple[Choice, dict[int, Status]] | None
    ) -> tuple[Result | Distribution, dict[int, Status], Uncommanded, ReactiveSplit | None]:
        """:meth:`_plan`'s work."""
        config = self.config
        self._held_back = False
        if chosen is None or request.include_broken_batteries:
            chosen = self._choose(
                request.batteries, include_broken=request.include_broken_batteries
            )
        choice, statuses = chosen
        unused = uncommanded(
            request,
            choice,
            statuses,
            self._tracker.fleet,
            status_reasons={
                b: self._tracker.state(b).reasons
                for b, s in statuses.items()
                if s is not Status.WORKING
            },
            now=trio.current_time(),
            max_age_s=config.status.max_data_age_s,
            enabled=config.distribution.compensate_unused,
        )
        pairs = choice.pairs
        first: ReactiveSplit | None = None
        if request.reactive_var is not None and config.plant.pq_priority == "reactive":
            first = reactive_split(request.reactive_var, pairs, {})
            pairs = _within_apparent(pairs, first.setpoints)
        best: tuple[Result | Distribution, ReactiveSplit | None] | None = None
        limits = self._limits(pairs)
        broken = choice.broken
        if limits and broken:
            # An equal share for a battery whose telemetry is not trusted would not be held
            # within its limit: a battery under one gets none.
            under = frozenset().union(*(limit.inverters for limit in self._mapped_limits()))
            inverter_of = self._topology.pairs
            broken = {b: v for b, v in broken.items() if inverter_of[b] not in under}
        for _ in range(1 + GROUP_REPLANS):
            planned = plan(
                request,
                pairs,
                exponent=config.distribution.exponent,
                derate_band_pct=config.distribution.derate_band_pct,
                broken=broken,
                limits=limits,
                search_budget=SearchBudget(
                    clock=time.perf_counter, seconds=config.distribution.search_budget_s
                ),
                split_w=unused.compensation.target_w,
            )
            if not isinstance(planned, Distribution):
                if best is None:
                    best = (planned, first)
                break
            planned = as_sent(planned)  # float32 on the wire, never more than planned
            reactive = first
            if request.reactive_var is not None and reactive is None:
                inverter_of = self._topology.pairs
                active = {inverter_of[b]: p for b, p in planned.setpoints.items()}
                reactive = reactive_split(request.reactive_var, pairs, active)
            planned, reactive = self._fit_standing(planned, reactive, pairs)
            planned = self._fit_limits(planned)
            planned, reactive, short = self._divided(planned, reactive)
            kept = None if best is None else best[0]
            if not isinstance(kept, Distribution) or abs(planned.remaining_w) < abs(
                kept.remaining_w
            ):
                best = (planned, reactive)  # the plan that places the most
            if not short:
                break
            # A group's inverters could not divide its share: re-plan with the group held to
            # what they can take, so the rest goes to pairs that can take it.
            pairs = _held_to(pairs, short)
        assert best is not None
        return best[0], statuses, unused, best[1]

    def _mapped_limits(self) -> tuple[Limit, ...]:
        """The configured group limits over the managed pairs' inverters (spec/plant.md).

        A limit's inverters become the pairs' (a group's lead inverter stands for all of its
        inverters: a limit over part of a group holds the whole group); ``grid = true`` holds
        every managed inverter. Worked out once per configuration; what an operator should
        know (inverters not managed, groups held whole) is logged then.
        """
        configured = self.config.limits
        cached = self._limits_cache
        if cached is not None and cached[0] is configured:
            return cached[1]
        lead_of = self._lead_inverter
        everything = frozenset(self._topology.pairs.values())
        mapped = []
        for limit_config in configured:
            named = everything if limit_config.grid else frozenset(limit_config.inverters or ())
            unknown = sorted(i for i in named if i not in lead_of)
            if unknown:
                logger.warning(
                    "limit %s: inverters [%s] are not managed: their power is not counted",
                    limit_config.name,
                    ids_text(unknown),
                )
            leads = frozenset(lead_of[i] for i in named if i in lead_of)
            widened = sorted(
                lead
                for lead in leads
                if not set(self._topology.group(self._battery_of[lead]).inverters) <= named
            )
            if widened and not limit_config.grid:
                logger.warning(
                    "limit %s: it holds part of the groups led by inverters [%s]; their whole"
                    " power counts against it",
                    limit_config.name,
                    ids_text(widened),
                )
            mapped.append(attrs.evolve(limit_config.limit(), inverters=leads))
        nested = _nested(mapped)
        self._limits_cache = (configured, nested)
        return nested

    def _limits(self, pairs: Sequence[Pair]) -> list[Limit]:
        """The group limits over ``pairs`` for a split, each less what the rest may hold.

        A limit's inverters outside ``pairs`` (another set's, or nobody's) may hold power, or
        be about to: what each may hold, or is wanted of it, at the most in each direction,
        comes off that direction's maximum (never below 0). Limits touching none of ``pairs``
        are left out.
        """
        mapped = self._mapped_limits()
        if not mapped:
            return []
        requested = frozenset(p.inverter_id for p in pairs)
        limits = []
        for limit in mapped:
            inside = limit.inverters & requested
            if not inside:
                continue
            charge, discharge = self._outside(limit.inverters - requested)
            limits.append(
                attrs.evolve(
                    limit,
                    inverters=inside,
                    max_charge_w=max(0.0, limit.max_charge_w - charge),
                    max_discharge_w=max(0.0, limit.max_discharge_w - discharge),
                )
            )
        return limits

    def _held(self, inverter: int, now: float) -> tuple[float, float]:
        """The most ``inverter`` may hold or is wanted to hold: (charging, discharging) W."""
        memo = self._held_memo
        if memo is not None and inverter in memo:
            return memo[inverter]
        ledger = self._commander.ledger
        values = ledger.possible(inverter, now)
        wanted = ledger.wanted(inverter)
        if wanted is not None:
            values.add(wanted)
        charge, discharge = max(0.0, *values), max(0.0, *(-v for v in values))
        members = None if self._group_held is None else self._group_held(inverter)
        if members is not None:  # a group's inverters may hold more than its command
            charge, discharge = max(charge, members[0]), max(discharge, members[1])
        if memo is not None:
            memo[inverter] = (charge, discharge)
        return charge, discharge

    def _outside(self, inverters: Iterable[int]) -> tuple[float, float]:
        """What ``inverters`` may hold at the most, together: (charging, discharging) W."""
        now = trio.current_time()
        held = [self._held(i, now) for i in inverters]
        return math.fsum(c for c, _ in held), math.fsum(d for _, d in held)

    def _fit_limits(self, planned: Distribution) -> Distribution:
        """The plan with every limit kept whatever order its commands land in.

        Commands fly apart: an inverter whose power goes up may land before one whose power
        goes down. For each limit (the innermost first) and direction, the worst case is what
        the rest of the site may hold, plus, for each of its inverters in the plan, the larger
        of its new setpoint and what it may still hold. Where that exceeds the maximum, the
        increases are held back in proportion (toward zero; to 0 below a minimum) and reported
        as not placed, and the set is planned again shortly (:data:`HELD_BACK_S`), once the
        decreases have landed: the plan is reached in two rounds, never through a moment
        beyond a limit.
        """
        mapped = self._mapped_limits()
        if not mapped or not planned.setpoints:
            return planned
        inverter_of = self._topology.pairs
        battery_of = {inverter_of[b]: b for b in planned.setpoints}
        now = trio.current_time()
        setpoints = dict(planned.setpoints)
        reasons = dict(planned.reasons)
        held_back: list[float] = []
        bound = set(planned.bound_limits)
        for limit in sorted(mapped, key=lambda limit: len(limit.inverters)):
            inside = [i for i in limit.inverters if i in battery_of]
            if not inside:
                continue
            outside = self._outside(limit.inverters - set(inside))
            for sign, maximum, rest in (
                (1.0, limit.max_charge_w, outside[0]),
                (-1.0, limit.max_discharge_w, outside[1]),
            ):
                old = {i: self._held(i, now)[0 if sign > 0 else 1] for i in inside}
                wanted = {i: setpoints[battery_of[i]] for i in inside}
                fitted = _fit_side(wanted, old, sign=sign, room=maximum - rest)
                if fitted:
                    bound.add(limit.name)
                for inverter, value in fitted.items():
                    battery = battery_of[inverter]
                    if value != 0.0 and abs(value) < self._minimum(battery, sign):
                        value = 0.0
                    held_back.extend((setpoints[battery], -value))
                    setpoints[battery] = value
                    reasons[battery] = Allotment.LIMITED
        if not held_back:
            return planned
        self._held_back = True
        return attrs.evolve(
            planned,
            setpoints=setpoints,
            reasons=reasons,
            remaining_w=math.fsum([planned.remaining_w, *held_back]),
            bound_limits=tuple(sorted(bound)),
        )

    def _minimum(self, battery: int, sign: float) -> float:
        """The smallest magnitude ``battery``'s pair takes in a direction (0 if unknown)."""
        pair = self._tracker.fleet.pair(battery)
        if pair is None:
            return 0.0
        row = pair.charge_row if sign > 0 else pair.discharge_row
        return row.min_w

    def _divided(
        self, planned: Distribution, reactive: ReactiveSplit | None
    ) -> tuple[Distribution, ReactiveSplit | None, dict[int, tuple[float, bool]]]:
        """The plan with each N:M group's setpoint what its inverters can take of it.

        A group's share is divided among its inverters when it is sent (``spec/plant.md``);
        where no division places all of it, the plan says what is placed and the rest is
        reported as not placed (active first: the reactive division fits beside it). Also
        returns the groups whose inverters could not take their whole active share (more than
        the wire's rounding): lead battery to what was placed and whether it charges.
        """
        placed, groups = self._placed, self._topology.groups
        if placed is None or not groups:
            return planned, reactive, {}
        inverter_of = self._topology.pairs
        setpoints, reasons = dict(planned.setpoints), dict(planned.reasons)
        short: list[float] = []
        held: dict[int, tuple[float, bool]] = {}
        for battery, power in planned.setpoints.items():
            if battery in groups and power != 0.0:
                got, whole = placed("active", inverter_of[battery], power)
                if got != power:
                    setpoints[battery] = got
                    short.extend((power, -got))
                if not whole:
                    reasons[battery] = Allotment.CAPPED  # by its inverters' bounds
                    held[battery] = (got, power > 0.0)
        if short:
            planned = attrs.evolve(
                planned,
                setpoints=setpoints,
                reasons=reasons,
                remaining_w=math.fsum([planned.remaining_w, *short]),
            )
        if reactive is None:
            return planned, None, held
        q_setpoints = dict(reactive.setpoints)
        q_short: list[float] = []
        for inverter, q in reactive.setpoints.items():
            if self._battery_of.get(inverter) in groups and q != 0.0:
                got, _ = placed("reactive", inverter, q)
                if got != q:
                    q_setpoints[inverter] = got
                    q_short.extend((q, -got))
        if q_short:
            reactive = attrs.evolve(
                reactive,
                setpoints=q_setpoints,
                remaining_var=math.fsum([reactive.remaining_var, *q_short]),
            )
        return planned, reactive, held

    def _bounds(self, batteries: frozenset[int]) -> PowerBounds:
        """The aggregate bounds of the usable batteries among ``batteries`` now (NaN: none)."""
        if not batteries:
            return UNKNOWN_BOUNDS
        return self._bounds_of(self._choose(batteries)[0])

    def _bounds_of(self, choice: Choice) -> PowerBounds:
        """The aggregate bounds of a choice's usable pairs (NaN: none), as the split sees them.

        Derated, and within the group limits beside what the rest of the site may hold.
        """
        usable = [p for p in choice.pairs if p.problem is None]
        if not usable:
            return UNKNOWN_BOUNDS
        return aggregate_bounds(
            usable,
            derate_band_pct=self.config.distribution.derate_band_pct,
            limits=self._limits(usable),
        )

    def _merge(
        self, arbiter: Arbiter, bucket: Bucket, *, record: bool = True
    ) -> tuple[Merge, tuple[Choice, dict[int, Status]] | None]:
        """The merge of ``bucket`` over what it holds now, and the pairs chosen for it.

        The choice serves the bucket's plan too (:meth:`_plan`): one choice per application.
        """
        if not bucket.held:
            return arbiter.merge(bucket, UNKNOWN_BOUNDS, self.config, record=record), None
        chosen = self._choose(bucket.held)
        bounds = self._bounds_of(chosen[0])
        return arbiter.merge(bucket, bounds, self.config, record=record), chosen

    def _fit_standing(
        self, planned: Distribution, reactive: ReactiveSplit | None, pairs: Sequence[Pair]
    ) -> tuple[Distribution, ReactiveSplit | None]:
        """The plan with each command within S beside what the other kind may still hold.

        Active and reactive commands fly apart and may land in any order, or one may fail: an
        inverter's new active setpoint must fit its apparent-power limit beside any reactive
        setpoint it may still hold, and the reverse. What does not fit is held back (toward
        zero, to 0 below a minimum) and reported as not placed, and the set is re-planned
        shortly (:data:`HELD_BACK_S`), once the other kind's change has landed: the plan the
        priority asks for is reached in two rounds, never through a moment beyond S.
        """
        standing_q = self._may_hold(self._reactive, pairs)
        standing_p = self._may_hold(self._commander, pairs)
        if not standing_q and not standing_p:
            return planned, reactive
        inverter_of = self._topology.pairs
        by_battery = {p.battery_id: p for p in pairs}
        setpoints = dict(planned.setpoints)
        reasons = dict(planned.reasons)
        held_back = 0.0
        for battery, power in planned.setpoints.items():
            pair = by_battery.get(battery)
            q = standing_q.get(inverter_of[battery])
            if pair is None or q is None or power == 0.0:
                continue
            fitted = _fitted(power, pair.inverter.apparent_limit_va, q)
            if fitted is None:
                continue
            row = pair.charge_row if power > 0.0 else pair.discharge_row
            if abs(fitted) < row.min_w:
                fitted = 0.0
            setpoints[battery] = fitted
            held_back += power - fitted
            reasons[battery] = Allotment.CAPPED  # by S beside the reactive power it may hold
        if held_back:
            self._held_back = True
            planned = attrs.evolve(
                planned,
                setpoints=setpoints,
                reasons=reasons,
                remaining_w=math.fsum([planned.remaining_w, held_back]),
            )
        if reactive is None:
            return planned, None
        q_setpoints = dict(reactive.setpoints)
        q_reasons = dict(reactive.reasons)
        q_held = 0.0
        for inverter, q in reactive.setpoints.items():
            battery = self._battery_of[inverter]
            pair = by_battery.get(battery)
            if pair is None or q == 0.0:
                continue
            p = max(abs(setpoints.get(battery, 0.0)), standing_p.get(inverter, 0.0))
            fitted = _fitted(q, pair.inverter.apparent_limit_va, p)
            if fitted is None:
                continue
            q_setpoints[inverter] = fitted
            q_held += q - fitted
            q_reasons[inverter] = HELD_BACK_REACTIVE
        if q_held:
            self._held_back = True
            reactive = attrs.evolve(
                reactive,
                setpoints=q_setpoints,
                reasons=q_reasons,
                remaining_var=math.fsum([reactive.remaining_var, q_held]),
            )
        return planned, reactive

    @staticmethod
    def _may_hold(commander: Commander, pairs: Sequence[Pair]) -> dict[int, float]:
        """The largest magnitude of ``commander``'s power each S-limited inverter may hold now.

        From the ledger's :meth:`~distributord.core.ledger.Ledger.possible`.

        Active and reactive commands fly apart: whatever one of them sends must fit within S
        beside what the other may still hold, whatever order they land in.
        """
        now = trio.current_time()
        ledger = commander.ledger
        held: dict[int, float] = {}
        for pair in pairs:
            if math.isnan(pair.inverter.apparent_limit_va):
                continue
            possible = ledger.possible(pair.inverter_id, now)
            if possible:
                held[pair.inverter_id] = max(abs(v) for v in possible)
        return held

    def _wants(self, batteries: frozenset[int], planned: Distribution) -> dict[int, float]:
        """Inverter → W for a set: its planned setpoints, 0 W for its batteries without one."""
        inverter_of = self._topology.pairs
        wants = {inverter_of[b]: 0.0 for b in batteries}
        wants.update({inverter_of[b]: p for b, p in planned.setpoints.items()})
        return wants

    def _want(
        self,
        bucket: frozenset[int],
        held: frozenset[int],
        planned: Distribution | None,
        reactive: ReactiveSplit | None,
    ) -> None:
        """What ``bucket`` wants of the inverters of the batteries it holds, active and reactive.

        ``planned`` ``None``: 0 W on each (nothing can be placed now); ``reactive`` ``None``:
        0 var on each (none asked: what stands is released).
        """
        inverter_of = self._topology.pairs
        if planned is None:
            self._commander.want(bucket, {inverter_of[b]: 0.0 for b in held})
        else:
            self._commander.want(bucket, self._wants(held, planned))
        vars_ = {inverter_of[b]: 0.0 for b in held}
        if reactive is not None:
            vars_.update({i: q for i, q in reactive.setpoints.items() if i in vars_})
        self._reactive.want(bucket, vars_)

    def _drop(self, bucket: frozenset[int]) -> None:
        """``bucket`` wants nothing any more: what it held is released, active and reactive."""
        self._commander.drop(bucket)
        self._reactive.drop(bucket)

    def _refusal(self, ask: Ask) -> Error | None:
        """Why ``ask`` may not be made at all (unknown ids, the program's limits), if it may not.

        A release (``set_power`` at 0 W) is never refused for its program: letting go of power
        is always allowed, also to a program a reload removed or took the peer out of.
        """
        request = ask.request
        unknown = unknown_batteries(request, self._topology.pairs, self._topology.left_out)
        if unknown is not None:
            return unknown
        if ask.releases:
            return None
        if ask.until_disconnect and ask.origin.connection in self._gone:
            return Error(
                request=request,
                message="its connection closed before it was applied (until_disconnect); "
                "nothing was commanded",
            )
        program = ask.origin.program
        acting = acting_as(program, self.config)
        if acting is None:
            return Error(
                request=request,
                message=f"program {program!r} is no longer configured; nothing was commanded",
            )
        outside = acting.limits.batteries_outside(request.batteries)
        if outside:
            return Error(
                request=request,
                message=f"program {program} may not propose for batteries [{ids_text(outside)}]"
                f" (its batteries: [{ids_text(acting.limits.batteries or ())}])",
            )
        return None

    async def _apply(self, job: _Job) -> Result:
        ask, request = job.ask, job.request
        if id(request) in self._taken_back:
            return Ignored(request=request, message=TAKEN_BACK)
        refusal = self._refusal(ask)
        if refusal is not None:
            return refusal
        if ask.releases:
            return await self._release(job)
        acting = acting_as(ask.origin.program, self.config)
        assert acting is not None  # _refusal checked it
        now = trio.current_time()
        trial = self._arbiter.trial(ask, priority=acting.priority, now=now)
        if isinstance(trial, Refused):
            holder = trial.holder
            holder_ask = self._arbiter.ask(holder)
            logger.info(
                refused_line(ask, holder, None if holder_ask is None else holder_ask.origin)
            )
            return Error(request=request, message=refused_message(holder))
        bucket = trial.bucket
        proposal = trial.accepted.proposal
        merged, chosen = self._merge(trial.arbiter, bucket)
        grant = trial.arbiter.grant_of(merged, proposal)
        application = trial.arbiter.application(
            bucket, merged, trial.arbiter.reactive_target(bucket, self.config)
        )
        planned: Result | Distribution
        step: _Step | None = None
        if application is not None:
            if not application.adjust_power and chosen is not None and self.config.ramp.enabled:
                # Exactly that power or out of bounds: judged on the target, not on a step of
                # the ramp toward it (the steps are applied adjusted).
                bounds = self._bounds_of(chosen[0])
                if bounds.is_known and not check_power(
                    application.power_w, bounds, adjust_power=False
                ):
                    return _as_asked(OutOfBounds(request=application, bounds=bounds), ask)
            application, step = self._ramped(
                bucket, application, merged, self._standing.get(bucket.batteries), now
            )
        if application is None:  # preempted on every battery: it holds none
            # Nothing of it was placed: all of it is the shortfall.
            planned = Distribution(
                power_w=request.power_w, setpoints={}, reasons={}, remaining_w=request.power_w
            )
            statuses: dict[int, Status] = {}
            unused: Uncommanded | None = None
            reactive: ReactiveSplit | None = None
        else:
            planned, statuses, unused, reactive = self._plan(application, chosen)
            if not isinstance(planned, Distribution):
                if isinstance(planned, Error | OutOfBounds) and unused.unused:
                    # Whatever the outcome, the batteries left out say why.
                    planned = attrs.evolve(planned, reasons=unused.reasons())
                if ask.proposed and isinstance(planned, Error):
                    return self._keep_unplaced(trial, planned, statuses, merged, grant)
                return _as_asked(planned, ask)  # nothing was commanded, nothing changed
        lone = len(bucket.proposals) == 1 and not ask.proposed  # applied as set_power was
        if (
            not lone
            and not request.adjust_power
            and grant is not None
            and (grant.granted_w != request.power_w)
        ):
            # set_power without adjustment: exactly that, or out of bounds (nothing changes).
            return OutOfBounds(request=request, bounds=window_bounds(grant.window, merged.bounds))
        ended = self._keep(trial)
        job.committed = True
        batteries = bucket.batteries
        self._standing[batteries] = _Standing(planned_at=now, statuses=statuses)
        self._step_after(self._standing[batteries], step, application, planned, now)
        self._soon_if_held_back(self._standing[batteries], now)
        self._standing_changed.value = True
        inverter_of = self._topology.pairs
        self._want(batteries, bucket.held, planned, reactive)
        # A 0 W share goes out once, when the share becomes 0: not again while it stays 0
        # (repeated 0 W commands disturb a battery management system recovering at 0 % SoC).
        ledger = self._commander.ledger
        sends = {
            inverter_of[b]: p
            for b, p in planned.setpoints.items()
            if p != 0.0 or not ledger.zero_stands(inverter_of[b], now)
        }
        # Released in the same round: its batteries without a share, and those of the
        # proposals it ended that nobody holds any more.
        freed = {inverter_of[b] for b in batteries.union(*ended)}
        for due in self._commander.due(freed - sends.keys()):
            sends[due.inverter] = due.power_w
        # Reactive power as the ledger says: what is wanted and not in force, and the release
        # of what may stand and is no longer wanted.
        held = {inverter_of[b] for b in bucket.held}
        vars_ = {due.inverter: due.power_w for due in self._reactive.due(held | freed)}
        outcomes, var_outcomes = await self._command(job, sends, vars_)
        failed = {
            b for b, outcome in outcomes.items() if outcome is not None and b in planned.setpoints
        }
        result = summarize(application or request, planned, failed, unused)
        if reactive is not None:
            result = self._with_reactive(result, reactive, var_outcomes)
        self._log(request, outcomes)
        if unused is not None and unused.compensation.measured_w:
            self._log_uncommanded(request, unused)
        granted = None if grant is None else grant.granted_w
        self._arbiter.heard(proposal, granted)
        logger.info(accepted_line(proposal, ask.origin, granted, bucket.held))
        answer = answer_for(
            result,
            ask,
            merged=merged,
            grant=grant,
            lone=lone,
            elsewhere=held_elsewhere(bucket, self._holders()),
        )
        if step is not None and step.step.ramping and isinstance(answer, Success | PartialFailure):
            answer = attrs.evolve(
                answer,
                ramping={
                    "target_w": step.step.target_w,
                    "applied_w": step.step.applied_w,
                    "eta_s": step.step.eta_s,
                },
            )
        return answer

    # -- ramps (spec/plant.md, "Ramp rates") --------------------------------------------------

    def _ramped(
        self,
        bucket: Bucket,
        application: Request,
        merged: Merge,
        standing: _Standing | None,
        now: float,
    ) -> tuple[Request, _Step | None]:
        """``application`` as far as the bucket's ramp lets its target move now.

        The grants of ``ramp_exempt`` programs move at once; the rest moves at most
        ``ramp.max_w_per_s`` from where it stands, one step's worth at the most. A ramp starts
        afresh (from the power the bucket's inverters are believed to hold) for a new bucket,
        and whenever what it holds or which of its programs are exempt changed: its old state
        describes other batteries or another split of the power. ``None`` for the step when
        ramps are off.
        """
        config = self.config
        if not config.ramp.enabled:
            return application, None
        exempt_w = self._exempt_w(bucket, merged, application.power_w)
        key = (
            bucket.held,
            frozenset(p.program for p in bucket.proposals if self._exempt(p.program)),
        )
        ramp = None if standing is None or standing.ramp_key != key else standing.ramp
        if ramp is None:
            ledger = self._commander.ledger
            inverter_of = self._topology.pairs
            held = math.fsum(ledger.belief(inverter_of[b], now) or 0.0 for b in bucket.held)
            # The ramped part stands where the power is, less what the exempt programs take at
            # once: between 0 and the power held, never of the other sign.
            low, high = min(0.0, held), max(0.0, held)
            ramp = Ramp(ramped_w=min(max(held - exempt_w, low), high), at=now)
        step = ramp_apply(
            ramp,
            target_w=application.power_w,
            exempt_w=exempt_w,
            now=now,
            rate_w_per_s=config.ramp.max_w_per_s,
            step_s=config.ramp.step_s,
        )
        if not step.ramping:
            return attrs.evolve(application, power_w=step.applied_w), _Step(step, key)
        # A step on the way is what the ramp allows now, not what was asked: it is placed as
        # well as it can be (adjusted). Within the set's exclusion zone (below the smallest
        # power a battery can take) it is 0 W while the ramp goes on; the first step past it is
        # the zone's edge: a jump to the smallest power the hardware takes, never beyond.
        power = step.applied_w
        bounds = merged.bounds
        held_at_zero = False
        if bounds.is_known:
            if bounds.exclusion_lower < power < bounds.exclusion_upper and power != 0.0:
                power, held_at_zero = 0.0, True
            elif standing is not None and standing.held_at_zero and power != 0.0:
                edge = bounds.exclusion_upper if power > 0.0 else bounds.exclusion_lower
                if abs(power) > abs(edge):
                    power = edge
        application = attrs.evolve(application, power_w=power, adjust_power=True)
        return application, _Step(step, key, held_at_zero=held_at_zero)

    def _exempt(self, program: str) -> bool:
        """Whether ``program``'s grants move at once, outside the ramp."""
        acting = self.config.programs.get(program)
        return acting is not None and acting.ramp_exempt

    def _exempt_w(self, bucket: Bucket, merged: Merge, target_w: float) -> float:
        """The part of ``bucket``'s target that its ``ramp_exempt`` programs were granted."""
        exempts = [self._exempt(p.program) for p in bucket.proposals]
        if exempts and all(exempts):
            return target_w
        if not any(exempts):
            return 0.0
        return math.fsum(g.granted_w for g in merged.grants if self._exempt(g.bid.program))

    def _soon_if_held_back(self, standing: _Standing, now: float) -> None:
        """A plan held back for S (:meth:`_fit_standing`) is planned again shortly."""
        if self._held_back:
            standing.step_due = min(standing.step_due, now + HELD_BACK_S)

    def _step_after(
        self,
        standing: _Standing,
        step: _Step | None,
        application: Request | None,
        planned: Result | Distribution,
        now: float,
    ) -> None:
        """Keep the ramp's state after a plan, and when its next step is due.

        What was not applied is taken off the ramp (:func:`~distributord.core.ramp.start_from`):
        what the step's application left out (the zone's edge) and what the plan could not
        place, so the ramp goes on from where the power is. A step held at 0 W in the
        exclusion zone keeps the ramp's course. It steps on until it reaches its target.
        """
        if step is None:
            standing.ramp, standing.ramp_key, standing.step_due = None, None, math.inf
            standing.held_at_zero = False
            return
        ramped = step.step.ramp.ramped_w
        if not step.held_at_zero:
            asked = step.step.applied_w
            given = asked if application is None else application.power_w
            if isinstance(planned, Distribution):
                shortfall = (asked - given) + planned.remaining_w
                if abs(shortfall) <= abs(asked) * FLOAT32_SHORTFALL:
                    shortfall = 0.0  # the wire's rounding, not power left out
            else:
                shortfall = asked  # nothing was placed
            ramped = start_from(ramped, shortfall)
        standing.ramp = Ramp(ramped_w=ramped, at=step.step.ramp.at)
        standing.ramp_key = step.key
        standing.held_at_zero = step.held_at_zero
        goal = step.step.target_w - (step.step.applied_w - step.step.ramp.ramped_w)
        moving = step.step.ramping or ramped != goal
        standing.step_due = now + self.config.ramp.step_s if moving else math.inf

    def _keep_unplaced(
        self,
        trial: Trial,
        refused: Error,
        statuses: dict[int, Status],
        merged: Merge,
        grant: Grant | None,
    ) -> Result:
        """A ``propose`` that nothing can be placed for now (no usable battery yet): it stands.

        It is kept, its batteries are wanted at 0 W, and it is applied when a battery's status
        changes (the standing re-plan): a proposal made before the first telemetry is not lost.
        """
        ask = trial.arbiter.ask(trial.accepted.proposal)
        assert ask is not None
        self._keep(trial)
        bucket = trial.bucket
        self._standing[bucket.batteries] = _Standing(
            planned_at=trio.current_time(), statuses=statuses
        )
        self._standing_changed.value = True
        self._want(bucket.batteries, bucket.held, None, None)
        logger.info(accepted_line(trial.accepted.proposal, ask.origin, None, bucket.held))
        arbitration = wire.arbitration_object(grant, merged) if grant is not None else None
        return Error(
            request=ask.request,
            message=f"{refused.message}; the proposal stands and is applied when they can "
            "take power",
            reasons=refused.reasons,
            arbitration=arbitration,
        )

    async def _release(self, job: _Job) -> Result:
        """``set_power`` at 0 W: the program lets go; 0 W wherever power may stand unheld."""
        ask, request = job.ask, job.request
        now = trio.current_time()
        statuses = {b: self._tracker.state(b).status for b in request.batteries}
        change = self._arbiter.withdraw(ask.origin.program, request.batteries, overlapping=True)
        ended = self._after(change.events, by=ask.origin)
        if change.ended:
            logger.info(
                "standing setpoint for batteries [%s] released (0 W)", ids_text(request.batteries)
            )
        ledger = self._commander.ledger
        inverter_of = self._topology.pairs
        holders = self._holders()
        targets = sorted(
            b
            for b in request.batteries
            if b not in holders
            and (
                statuses[b] is not Status.NOT_WORKING or not ledger.known_idle(inverter_of[b], now)
            )
        )
        sends = {inverter_of[b]: 0.0 for b in targets}
        freed = {inverter_of[b] for b in frozenset().union(*ended)} - sends.keys()
        for due in self._commander.due(freed):
            sends[due.inverter] = due.power_w
        # Reactive power that may stand on them and nobody wants: released in the same round.
        unheld = {inverter_of[b] for b in request.batteries if b not in holders} | freed
        vars_ = {due.inverter: due.power_w for due in self._reactive.due(unheld)}
        outcomes, _ = await self._command(job, sends, vars_)
        released = Distribution(
            power_w=request.power_w,
            setpoints=dict.fromkeys(targets, 0.0),
            reasons={},
            remaining_w=request.power_w,  # a non-zero power this small is not placed
        )
        failed = {b for b, outcome in outcomes.items() if outcome is not None and b in targets}
        self._log(request, outcomes)
        result = summarize(request, released, failed)
        reasons = {
            b: f"held by program {h.top.program} (priority {h.priority})"
            for b, h in holders.items()
            if b in request.batteries
        }
        # Not working, and known to hold nothing: nothing to release, and nothing is sent.
        for b in sorted(request.batteries - reasons.keys() - set(targets)):
            listed = ", ".join(sorted(self._tracker.state(b).reasons))
            reasons[b] = f"not_working ({listed}); holds no power: no command sent"
        if reasons:
            result = attrs.evolve(result, reasons={**result.reasons, **reasons})
        return result

    async def _command(
        self, job: _Job, powers: Mapping[int, float], vars_: Mapping[int, float]
    ) -> tuple[dict[int, CommandError | None], dict[int, CommandError | None]]:
        """Send a request's commands and wait for them: battery id to None (done) or why not.

        ``powers`` are active (W), ``vars_`` reactive (var) commands, by inverter; both fly at
        once, under the request's one deadline. Returns the outcomes of each kind.
        """
        sent = trio.current_time()
        deadline = sent + job.request.request_timeout_s
        flights = self._commander.send(powers, deadline=deadline)
        var_flights = self._reactive.send(vars_, deadline=deadline) if vars_ else {}
        every = [*flights.values(), *var_flights.values()]
        for flight in every:
            flight.tag = job  # named if it fails after it was accepted
        try:
            await Commander.wait(every, deadline=deadline)
            # Past the deadline: those still flying are being cancelled; let them end, so that
            # the next request for these inverters never has a command of this one beside it.
            await Commander.cancel(every)
        finally:
            job.commands_s = trio.current_time() - sent
        bug = next((f.last().bug for f in every if f.last().bug is not None), None)
        if bug is not None:
            raise bug
        outcomes, var_outcomes = self._outcomes(flights), self._outcomes(var_flights)
        self._metrics.commands([*outcomes.values(), *var_outcomes.values()])
        self._metrics.fanout(job.commands_s)
        return outcomes, var_outcomes

    def _outcomes(self, flights: Mapping[int, Flight]) -> dict[int, CommandError | None]:
        """Battery id to its command's outcome (None: done).

        A command another request's newer one replaced (a release of a freed battery that a
        request for it overtook) is neither this request's success nor its failure.
        """
        return {
            self._battery_of[i]: last.error
            for i, flight in flights.items()
            if not ((last := flight.last()).superseded and last.successor is None)
        }

    def _with_reactive(
        self,
        result: Success | PartialFailure,
        reactive: ReactiveSplit,
        outcomes: Mapping[int, CommandError | None],
    ) -> Success | PartialFailure:
        """``result`` with what became of its reactive power (``spec/plant.md``).

        A reactive command that failed makes the outcome ``partial_failure`` (its active
        figures unchanged); the battery is named in the reactive part's ``failed_batteries``.
        """
        battery_of = self._battery_of
        # Only the split's own commands: a release of another inverter's reactive power in the
        # same round is not this request's success or failure.
        ours = {battery_of[i] for i in reactive.setpoints}
        outcomes = {b: e for b, e in outcomes.items() if b in ours}
        failed = sorted(b for b, outcome in outcomes.items() if outcome is not None)
        part = wire_reactive(
            reactive,
            battery_of=battery_of,
            failed=failed,
            errors={b: str(e) for b, e in outcomes.items() if e is not None},
        )
        if failed and isinstance(result, Success):
            return PartialFailure(
                request=result.request,
                succeeded_power_w=result.succeeded_power_w,
                succeeded_batteries=result.succeeded_batteries,
                failed_power_w=0.0,
                failed_batteries=frozenset(),
                excess_power_w=result.excess_power_w,
                distribution=result.distribution,
                reasons=result.reasons,
                unused_power_w=result.unused_power_w,
                compensated_power_w=result.compensated_power_w,
                uncompensated_power_w=result.uncompensated_power_w,
                reactive=part,
            )
        return attrs.evolve(result, reactive=part)

    def _reactive_fate(self, flight: Flight) -> None:
        """A reactive command ended: counted and, failed in the background, logged.

        Its outcome does not move the battery's status: the status tracker judges a battery by
        its active commands (a reactive refresh that lands must not unblock a battery whose
        active commands fail, nor a refused reactive command block its active power).
        """
        error = flight.error
        if flight.superseded or error is None:
            if flight.background:
                self._metrics.commands([None])
            return
        if flight.background:
            self._metrics.commands([error])
            if self._tracker.unreachable_since is None:
                logger.warning(
                    "reactive command to inverter %d at %.0f var failed: %s",
                    flight.inverter,
                    flight.power_w,
                    error,
                )

    def _reactive_late(self, flight: Flight, late: Late) -> None:
        """An accepted reactive command's reply stream ended: counted, and a failure logged."""
        if isinstance(late, FinalReply):
            self._metrics.final_reply(late.value.lower())
            if late in (FinalReply.FAILED, FinalReply.OVERRIDDEN):
                logger.warning(
                    "reactive command to inverter %d at %.0f var ended %s after it was accepted",
                    flight.inverter,
                    flight.power_w,
                    late.value,
                )

    def _fate(self, flight: Flight) -> None:
        """A command ended: the status tracker learns the battery's outcome."""
        battery = self._battery_of.get(flight.inverter)
        if battery is None or flight.superseded:
            return  # replaced by our own newer command: not the battery's doing
        error = flight.error
        if flight.background:
            self._metrics.commands([error])
        if error is None:  # ACCEPTED with its final reply to come (followed) is not final
            final = not self._commander.following(flight.inverter)
            self._tracker.record_outcomes(succeeded=[battery], failed=[], final=final)
            return
        if error.blocks:
            self._tracker.record_outcomes(succeeded=[], failed=[battery])
        if flight.background and self._tracker.unreachable_since is None:  # else: one fact
            logger.warning(
                "command to inverter %d (battery %d) at %.0f W failed: %s",
                flight.inverter,
                battery,
                flight.power_w,
                error,
            )

    def _late(self, flight: Flight, late: Late) -> None:
        """An accepted command's reply stream ended (``spec/microgrid-api.md``).

        ``FAILED``: the battery fails as for any failure (blocked), logged, counted, and
        announced (``command_failed``). ``OVERRIDDEN`` (our own newer commands abandon the
        older streams first, so this is someone else's): the battery gets the reason
        ``overridden``, warned once, counted, not blocked. ``SUCCESS``: counted, and the
        reason ``overridden`` ends.
        """
        battery = self._battery_of.get(flight.inverter)
        match late:
            case FinalReply.SUCCESS:
                self._metrics.final_reply("success")
                if battery is not None:  # the final success: the blocking window resets
                    self._tracker.record_outcomes(succeeded=[battery], failed=[])
                if battery is not None and self._tracker.command_overridden(battery, False):
                    logger.info(
                        "inverter %d (battery %d) holds our setpoint again",
                        flight.inverter,
                        battery,
                    )
            case FinalReply.FAILED:
                self._metrics.final_reply("failed")
                job = flight.tag if isinstance(flight.tag, _Job) else None
                logger.warning(
                    "command to inverter %d (battery %s) at %.0f W failed after it was "
                    "accepted (FAILED)%s",
                    flight.inverter,
                    battery,
                    flight.power_w,
                    "" if job is None else f"; it belonged to {_request_text(job)}",
                )
                if battery is None:
                    return
                self._tracker.record_outcomes(succeeded=[], failed=[battery])
                self.notices.announce(
                    "command_failed",
                    {
                        "battery": battery,
                        "inverter": flight.inverter,
                        "power_w": flight.power_w,
                        "reply": "FAILED",
                        "request": None
                        if job is None
                        else {"id": job.ask.call_id, "program": job.owner},
                    },
                )
            case FinalReply.OVERRIDDEN:
                self._metrics.final_reply("overridden")
                if battery is not None and self._tracker.command_overridden(battery, True):
                    logger.warning(
                        "inverter %d (battery %d): our setpoint was overridden by a command "
                        "that was not ours; someone else commands this inverter",
                        flight.inverter,
                        battery,
                    )
            case FinalReply.END | FinalReply.NONE:
                self._metrics.final_reply("none")
            case CommandError():
                self._metrics.final_reply("broken")
                logger.debug(
                    "inverter %d: the replies to an accepted command broke off: %s",
                    flight.inverter,
                    late,
                )
            case _:
                assert_never(late)

    def _log(self, request: Request, outcomes: Mapping[int, CommandError | None]) -> None:
        failures = {b: e for b, e in outcomes.items() if e is not None}
        if failures:
            logger.warning(
                "request for batteries [%s] at %.0f W: %d of %d commands failed: %s",
                ids_text(request.batteries),
                request.power_w,
                len(failures),
                len(outcomes),
                ", ".join(f"{b} ({e.code})" for b, e in sorted(failures.items())),
            )
        else:
            logger.debug(
                "request for batteries [%s] at %.0f W: %d commands sent",
                ids_text(request.batteries),
                request.power_w,
                len(outcomes),
            )

    @staticmethod
    def _log_uncommanded(request: Request, unused: Uncommanded) -> None:
        """One line: power measured on batteries of the request that it does not command."""
        compensation = unused.compensation
        logger.info(
            "request for batteries [%s] at %.0f W: batteries [%s] not used still carry %.0f W; "
            "%.0f W taken off the request, %.0f W beyond or against it%s",
            ids_text(request.batteries),
            request.power_w,
            ids_text(compensation.measured_w),
            math.fsum(compensation.measured_w.values()),
            compensation.compensated_w,
            compensation.uncompensated_w,
            "" if unused.enabled else " (distribution.compensate_unused is off)",
        )

    # -- arbitration: what changes do to the standing buckets ----------------------------------

    def _holders(self) -> dict[int, Bucket]:
        """Battery to the bucket that holds it now."""
        return {
            b: bucket for bucket in self._arbiter.registry.holdings().buckets for b in bucket.held
        }

    def _keep(self, trial: Trial) -> tuple[frozenset[int], ...]:
        """Keep a planned proposal: the others' buckets follow. Returns the sets it ended."""
        self._arbiter.commit(trial)
        accepted = trial.accepted
        for ended in (accepted.replaced, *accepted.superseded):
            if ended is not None and ended.batteries != accepted.proposal.batteries:
                logger.warning(
                    "standing setpoint for batteries [%s] ended: batteries [%s] now follow a "
                    "request for [%s]",
                    ids_text(ended.batteries),
                    ids_text(ended.batteries & accepted.proposal.batteries),
                    ids_text(accepted.proposal.batteries),
                )
        return self._after(
            accepted.events, by=trial.arbiter.ask(accepted.proposal), new=accepted.proposal
        )

    def _after(
        self,
        events: Iterable[Event],
        *,
        by: Ask | Origin | None = None,
        new: Proposal | None = None,
    ) -> tuple[frozenset[int], ...]:
        """Carry out what a change means (:meth:`Arbiter.consequences` decides).

        The audit lines are written; the owners of ended proposals are told; buckets that ended
        are dropped (the ledger then releases what nobody wants, at once: an explicit 0 W);
        buckets that lost or regained batteries or a proposal re-plan now, then the owners
        whose grant moved are told. Returns the sets of the proposals that ended.
        """
        self._proposals_changed.value = True
        origin = by.origin if isinstance(by, Ask) else by
        consequences = self._arbiter.consequences(
            events, causer=None if origin is None else origin.connection, new=new
        )
        for line in consequences.lines:
            logger.info("%s", line)
        for batteries in consequences.dropped:
            if self._standing.pop(batteries, None) is not None:
                self._standing_changed.value = True
            self._drop(batteries)
        for batteries in consequences.replanned:
            standing = self._standing.setdefault(
                batteries, _Standing(planned_at=trio.current_time(), statuses={})
            )
            self._replan(batteries, standing)
        for notice in (*consequences.ended, *self._arbiter.changed_notices(consequences, skip=new)):
            notice.connection.notify(notice.method, notice.params)
        return consequences.ended_sets

    def _replan(self, batteries: frozenset[int], standing: _Standing) -> None:
        """Re-plan a bucket with fresh telemetry and proposals: only what is wanted changes."""
        bucket = self._arbiter.registry.holdings().bucket(batteries)
        if bucket is None:  # it ended meanwhile
            del self._standing[batteries]
            self._drop(batteries)
            return
        merged, chosen = self._merge(self._arbiter, bucket)
        application = self._arbiter.application(
            bucket, merged, self._arbiter.reactive_target(bucket, self.config)
        )
        now = standing.planned_at = trio.current_time()
        if application is None:  # it holds nothing now
            standing.statuses = {}
            standing.ramp, standing.step_due = None, math.inf
            self._drop(batteries)
            return
        application, step = self._ramped(bucket, application, merged, standing, now)
        planned, standing.statuses, _, reactive = self._plan(application, chosen)
        self._step_after(standing, step, application, planned, now)
        self._soon_if_held_back(standing, now)
        if isinstance(planned, Distribution):
            self._want(batteries, bucket.held, planned, reactive)
            return
        # Nothing can be placed now (no usable battery, out of bounds): release what stands, and
        # keep the setpoint, to be re-planned when a battery changes status.
        logger.warning(
            "standing setpoint for batteries [%s] not refreshed: %s",
            ids_text(batteries),
            planned.message if isinstance(planned, Error) else "out of bounds",
        )
        self._want(batteries, bucket.held, None, None)

    async def _serve_replans(self) -> None:
        board = self._tracker.board
        limits = self._config.view(lambda c: c.limits)
        limits_in_force = limits.value
        while True:
            # A set with a client request running or waiting is left to that request; the end
            # of a request wakes this task (``_standing_changed``). The interval is read on
            # every turn: a reload may change it.
            due = next_replan(
                self._standing, every=self._refresh_interval.value, busy=self._scheduler.busy
            )
            self._standing_changed.value = False
            with trio.move_on_at(due):
                await trio_util.wait_any(
                    board.wait_transition,
                    functools.partial(self._standing_changed.wait_value, True),
                    self._refresh_interval.changed,  # a reload re-times them at once
                    limits.changed,
                )
            if limits.value != limits_in_force:  # a reload changed the group limits: at once
                limits_in_force = limits.value
                for standing in self._standing.values():
                    standing.planned_at = -math.inf
            for batteries in replans_due(
                self._standing,
                now=trio.current_time(),
                every=self._refresh_interval.value,
                status=lambda b: self._tracker.state(b).status,
                busy=self._scheduler.busy,
            ):
                if batteries in self._standing:  # a re-plan before it may have ended it
                    try:
                        self._replan(batteries, self._standing[batteries])
                    except Exception:  # a bug: said, and the other sets are re-planned still
                        logger.exception(
                            "re-plan of batteries [%s] failed unexpectedly; it keeps what it"
                            " holds until its next re-plan",
                            ids_text(batteries),
                        )

    async def _serve_programs(self) -> None:
        """A reload that removes a program ends its proposals (audited; what is freed gets 0 W).

        Nothing may act as it any more, nor withdraw for it, and its limits are gone with it:
        its power must not stand unbounded and unowned.
        """
        programs = self._config.view(lambda c: frozenset(c.programs))
        while True:
            configured = await programs.changed()
            for program in sorted({p.program for p in self._arbiter.registry.proposals()}):
                if program not in configured:
                    logger.info("program %s was removed by a reload: its proposals end", program)
                    self._after(self._arbiter.withdraw(program).events)

    async def _serve_expiry(self) -> None:
        """End proposals whose ``ttl_s`` ran out, when it runs out."""
        while True:
            self._proposals_changed.value = False
            expiry = self._arbiter.registry.next_expiry()
            with trio.move_on_at(math.inf if expiry is None else expiry):
                await self._proposals_changed.wait_value(True)
            change = self._arbiter.expire(trio.current_time())
            if change.ended:
                self._after(change.events)


def _as_asked(result: Result, ask: Ask) -> Result:
    """A refusal of the application, answering the ask (its own request echoed)."""
    return attrs.evolve(result, request=ask.request)


def _fitted(value: float, apparent_va: float, other: float) -> float | None:
    """``value`` brought within S beside ``other`` (toward zero, a float32); None if it fits."""
    cap = headroom(apparent_va, other)
    if abs(value) <= cap:
        return None
    return floats32_toward_zero([math.copysign(cap, value)])[0] + 0.0


def reactive_split(
    target_var: float, pairs: Sequence[Pair], active_w: Mapping[int, float]
) -> ReactiveSplit:
    """The reactive split over the usable pairs' inverters, with their active setpoints."""
    limits = {p.inverter_id: _limits_of(p.inverter) for p in pairs if p.problem is None}
    # float32 on the wire, toward zero: never out of a room, never past S.
    return reactive_as_sent(split_reactive(target_var, reactive_rooms(limits, active_w)))


_LIMITS: dict[int, tuple[InverterSnapshot, ReactiveLimits]] = {}
"""Each inverter's reactive limits and the snapshot they were worked out from: once per
snapshot, not per request (one entry per inverter id)."""


def _limits_of(inverter: InverterSnapshot) -> ReactiveLimits:
    cached = _LIMITS.get(inverter.component_id)
    if cached is not None and cached[0] is inverter:
        return cached[1]
    limits = ReactiveLimits.of(inverter)
    _LIMITS[inverter.component_id] = (inverter, limits)
    return limits


def _nested(limits: list[Limit]) -> tuple[Limit, ...]:
    """``limits`` made to nest, by joining each two that overlap into one, never looser.

    Held whole, the groups a limit holds in part can make two limits overlap that nested as
    configured (a DC bus whose two inverters sit on two feeders). The two become one over
    both, with the smaller maximum each way: keeping it keeps both. Logged as a warning.
    """
    limits = list(limits)
    while True:
        try:
            limit_tree(limits)
        except LimitOverlapError as overlap:
            first, second = overlap.first, overlap.second
            joined = Limit(
                name=f"{first.name}+{second.name}",
                inverters=first.inverters | second.inverters,
                max_charge_w=min(first.max_charge_w, second.max_charge_w),
                max_discharge_w=min(first.max_discharge_w, second.max_discharge_w),
            )
            logger.warning(
                "limits %s and %s overlap once the groups they hold in part are held whole"
                " (inverter %d): they are kept as one limit %s over both, with the smaller"
                " maximum each way",
                first.name,
                second.name,
                overlap.inverter,
                joined.name,
            )
            limits = [limit for limit in limits if limit is not first and limit is not second] + [
                joined
            ]
            continue
        return tuple(limits)


def _fit_side(
    wanted: Mapping[int, float], old: Mapping[int, float], *, sign: float, room: float
) -> dict[int, float]:
    """New setpoints within ``room`` one way whatever order they land in; those changed.

    ``wanted``: inverter to its new setpoint (W, signed); ``old``: what it may still hold that
    way at the most (a magnitude). The worst case is the sum of the larger of the two per
    inverter; while it exceeds ``room`` (a magnitude: the maximum less what the rest may
    hold), the rises are cut in proportion, then the largest rise by what rounding leaves over
    it, never below what the inverter held (lowering further would not help the worst case),
    each a float32 toward zero. Returns the inverters whose setpoint was cut, with the new one.
    """

    def excess() -> float:
        worst = (max(sign * value, old[i]) for i, value in now.items())
        return math.fsum([*worst, -room])

    now = dict(wanted)
    over = excess()
    if over <= 0.0:
        return {}
    rises = {i: sign * v - old[i] for i, v in now.items() if sign * v > old[i]}
    total = math.fsum(rises.values())
    for inverter, rise in sorted(rises.items()):
        lowered = max(old[inverter], sign * now[inverter] - min(rise, over * (rise / total)))
        now[inverter] = floats32_toward_zero([sign * lowered])[0] + 0.0
    while (still := excess()) > 0.0:
        rising = [i for i in rises if sign * now[i] > old[i]]
        if not rising:
            break  # nothing rises any more: the rest was held already
        inverter = max(rising, key=lambda i: (sign * now[i], i))
        lowered = max(old[inverter], sign * now[inverter] - still)
        now[inverter] = floats32_toward_zero([sign * lowered])[0] + 0.0
    return {i: v for i, v in now.items() if v != wanted[i]}


def _held_to(pairs: Sequence[Pair], held: Mapping[int, tuple[float, bool]]) -> Sequence[Pair]:
    """``pairs`` with each battery in ``held`` able to take at most its magnitude, its way.

    ``held``: battery to (W, whether it charges). A group whose inverters could divide only
    part of its share (``RequestLoop._divided``) is re-planned at most at what they placed:
    its cap that way becomes that magnitude, its minimum kept (the way closed, 0 to 0, when
    the cap falls below it).
    """
    capped = list(pairs)
    for index, pair in enumerate(pairs):
        if pair.battery_id not in held:
            continue
        power, charging = held[pair.battery_id]
        bounds = pair.inverter.bounds
        if charging:
            cap = min(bounds.inclusion_upper, abs(power))
            open_ = cap >= bounds.exclusion_upper
            bounds = attrs.evolve(
                bounds,
                inclusion_upper=cap if open_ else 0.0,
                exclusion_upper=bounds.exclusion_upper if open_ else 0.0,
            )
        else:
            cap = max(bounds.inclusion_lower, -abs(power))
            open_ = cap <= bounds.exclusion_lower
            bounds = attrs.evolve(
                bounds,
                inclusion_lower=cap if open_ else 0.0,
                exclusion_lower=bounds.exclusion_lower if open_ else 0.0,
            )
        inverter = attrs.evolve(pair.inverter, bounds=bounds)
        capped[index] = Pair(battery=pair.battery, inverter=inverter)
    return tuple(capped)


def _within_apparent(pairs: Sequence[Pair], reactive_var: Mapping[int, float]) -> Sequence[Pair]:
    """``pairs`` with each inverter's active bounds within its apparent-power limit.

    With ``reactive_var`` (inverter → var) the limit is what that reactive power leaves
    (``√(S² − Q²)``); without, ``|P| ≤ S``. ``pairs`` itself when no inverter has a limit that
    binds.
    """
    capped: list[Pair] | None = None
    for index, pair in enumerate(pairs):
        inverter = pair.inverter
        if math.isnan(inverter.apparent_limit_va):
            continue
        bounds = capped_active_bounds(
            inverter.bounds,
            inverter.apparent_limit_va,
            reactive_var.get(inverter.component_id, 0.0),
        )
        if bounds is inverter.bounds:
            continue
        if capped is None:
            capped = list(pairs)
        capped[index] = Pair(battery=pair.battery, inverter=attrs.evolve(inverter, bounds=bounds))
    return pairs if capped is None else tuple(capped)


def wire_reactive(
    reactive: ReactiveSplit,
    *,
    battery_of: Mapping[int, int],
    failed: Sequence[int],
    errors: Mapping[int, str],
) -> dict[str, Any]:
    """The result's ``reactive`` object (``spec/plant.md``), by battery, as the protocol has it."""
    reasons = {str(battery_of[i]): str(r) for i, r in sorted(reactive.reasons.items())}
    reasons.update({str(b): f"command failed: {e}" for b, e in errors.items()})
    return {
        "target_var": reactive.target_var,
        "distribution": {
            str(battery_of[i]): q
            for i, q in sorted(reactive.setpoints.items(), key=lambda x: battery_of[x[0]])
        },
        "excess_var": reactive.remaining_var,
        "failed_batteries": list(failed),
        "reasons": dict(sorted(reasons.items(), key=lambda x: int(x[0]))),
    }
