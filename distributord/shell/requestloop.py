"""The request loop: schedules requests by battery set, applies them, holds standing setpoints.

Theory of operation
-------------------
The socket listener hands each ``set_power`` request to :meth:`RequestLoop.submit`, which puts
it on a bounded trio memory channel; a full channel is an answer (the listener replies
"overloaded"), never an unbounded buffer. The loop's task takes requests off the channel and
schedules them by their battery set (``spec/protocol.md``):

* **Same set**: at most one is applied at a time; while it runs only the newest waiting request
  is kept, and each one it replaces is answered ``ignored``.
* **Disjoint sets** run concurrently: a hanging inverter in one set never delays another.
* **Overlapping, different sets** run one after another in arrival order, with a warning.

Applying a request: choose its batteries and plan it (``distributord.core.planning``: working,
else uncertain; with ``include_broken_batteries`` also the others, from cached telemetry), then
command every involved inverter concurrently inside ``trio.move_on_after(request_timeout)``.
Commands still running at the deadline are cancelled at the RPC and count as failed. Outcomes go
to the status tracker (refusals do not block), the result goes back to the client.

**Standing setpoints.** A successful request leaves a standing setpoint for its set: the API
drops a setpoint after its lifetime, so the loop re-distributes the same request with fresh
telemetry and re-sends it every ``lifetime/3``, and at once when a battery of the set changes
status (so it is re-distributed after a battery drops out or comes back), until a new request
for those batteries replaces it; ``power_w: 0`` releases it. A refresh is scheduled like a
request, so two never run at once for one set; it never delays a client: a client request
cancels a running refresh it overlaps, and a waiting refresh never blocks one. A request for an
overlapping, different set ends the standing setpoint it overlaps (logged).

A battery that leaves a set's distribution (it stopped working) after it was given a non-zero
setpoint is sent 0 W, best effort, so it does not keep its old setpoint until the lifetime ends.

No request can take the loop down: an unexpected exception while applying one becomes an
``error`` result (and a logged traceback).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

import attrs
import trio
import trio_util

from distributord.core.distribution import (
    DEFAULT_SEARCH_BUDGET_S,
    ZERO_POWER_W,
    Distribution,
    SearchBudget,
)
from distributord.core.errors import CommandError
from distributord.core.model import (
    Error,
    Ignored,
    Request,
    Result,
)
from distributord.core.planning import as_sent, choose, plan, summarize, unknown_batteries
from distributord.core.status import Status
from distributord.core.topology import Topology
from distributord.core.values import ids_text
from distributord.shell.link import MicrogridClient
from distributord.shell.live import Live
from distributord.shell.metrics import Metrics
from distributord.shell.tracker import StatusTracker

logger = logging.getLogger(__name__)

CUT_OFF = (
    "cut off: the daemon is shutting down and its drain deadline ended this request; "
    "commands still running were cancelled"
)
NOT_APPLIED = "not applied: the daemon is shutting down and this request never started"


def _cancelled_from_outside() -> bool:
    """Whether the calling task is being cancelled by a scope around it (the shutdown)."""
    return trio.current_effective_deadline() == -math.inf


@attrs.frozen(kw_only=True)
class Timing:
    """Where a request's time went inside the daemon.

    Attributes:
        total_s: From the request's arrival at the loop to its result.
        commands_s: The inverter commands' fan-out (0 when nothing was commanded).
    """

    total_s: float
    commands_s: float


Reply = Callable[[Result, Timing], None]


@attrs.frozen(kw_only=True)
class LoopSettings:
    """The request loop's settings.

    Attributes:
        exponent: The distribution exponent.
        lifetime_s: Sent as each command's ``request_lifetime`` (10..900 s).
        queue_size: Requests that may wait in the channel.
        broken_cache_ttl_s: How old cached telemetry may be for ``include_broken_batteries``.
        refresh_every_s: How often standing setpoints are re-sent; ``lifetime_s / 3`` if None.
        search_budget_s: How long the search over exclusion minimums may take, on the
            process's CPU-independent monotonic clock (``time.perf_counter``).
    """

    exponent: float = 1.0
    search_budget_s: float = DEFAULT_SEARCH_BUDGET_S
    lifetime_s: int = 60
    queue_size: int = 64
    broken_cache_ttl_s: float = 9000.0
    refresh_every_s: float | None = None

    @property
    def refresh_interval_s(self) -> float:
        """The standing setpoints' refresh period."""
        return self.refresh_every_s if self.refresh_every_s is not None else self.lifetime_s / 3.0


@attrs.define(eq=False)
class _Job:
    """A request being scheduled; ``reply`` is None for a standing setpoint's refresh."""

    request: Request
    reply: Reply | None
    arrived: float
    scope: trio.CancelScope | None = None
    warned: bool = False
    commands_s: float = 0.0

    @property
    def refresh(self) -> bool:
        return self.reply is None


@attrs.define
class _Standing:
    """A standing setpoint.

    The request that set it, when it was last sent, and the statuses of its batteries then (a
    change triggers a refresh).
    """

    request: Request
    sent_at: float
    statuses: dict[int, Status]


@attrs.frozen(kw_only=True)
class LoopStatistics:
    """A snapshot of the loop's state.

    Attributes:
        queued: Requests waiting in the channel.
        waiting: Requests waiting for their batteries.
        running: Requests being applied.
        standing: Standing setpoints held.
        last_latency_s: Time from arrival to result of the last client request.
        setpoints: Battery id to its last successfully commanded setpoint, W (a copy).
    """

    queued: int
    waiting: int
    running: int
    standing: int
    last_latency_s: float | None
    setpoints: Mapping[int, float]


class RequestLoop:
    """Schedules and applies requests (see the module docstring).

    Args:
        client: The microgrid.
        tracker: The status tracker (and its telemetry store).
        topology: The managed pairs.
        settings: The loop's settings, read where they are used (a reload changes them; the
            queue's size is fixed at start, and the reload keeps it).
        metrics: Where commands and request latencies are counted.
    """

    def __init__(
        self,
        client: MicrogridClient,
        tracker: StatusTracker,
        topology: Topology,
        settings: Live[LoopSettings],
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = client
        self._metrics = metrics or Metrics()
        self._tracker = tracker
        self._topology = topology
        self._settings = settings
        self._queue_size = settings.value.queue_size
        self._send, self._receive = trio.open_memory_channel[_Job](self._queue_size)
        self._probes: list[trio.Event] | None = None  # a list while serve() runs
        self._probe_wanted = trio.Event()
        self._waiting: dict[frozenset[int], _Job] = {}
        # Requests withdrawn while still in the channel, by id (the object is kept, so the id
        # cannot be reused before the loop takes it).
        self._withdrawn: dict[int, Request] = {}
        self._running: dict[frozenset[int], _Job] = {}
        self._standing: dict[frozenset[int], _Standing] = {}
        self._standing_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._setpoints: dict[int, float] = {}
        self._last_latency_s: float | None = None
        self._closed = False

    # -- the public side ---------------------------------------------------------------------

    @property
    def settings(self) -> LoopSettings:
        """The settings in force now."""
        return self._settings.value

    def submit(self, request: Request, reply: Reply) -> bool:
        """Queue a client request; False when the queue is full (the client is told to retry).

        The bound (``queue_size``) counts the requests in the channel and the client requests
        waiting for their batteries: a request that waits has not been served either. A
        request for a set whose request is already waiting is always taken: it replaces that
        one and adds nothing.
        """
        waiting = self._waiting.get(request.batteries)
        if waiting is None or waiting.refresh:
            queued = self._receive.statistics().current_buffer_used
            clients = sum(not job.refresh for job in self._waiting.values())
            if queued + clients >= self._queue_size:
                return False
        try:
            self._send.send_nowait(_Job(request=request, reply=reply, arrived=trio.current_time()))
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
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
        self._probe_wanted.set()
        return True

    def withdraw(self, request: Request) -> bool:
        """Drop ``request`` if it has not started (its client went away).

        A request already applying completes; one not yet started, whether it waits for its
        batteries or is still in the queue, is not applied (the protocol's rule for client
        departures). True if it was withdrawn; it gets no reply. Only for a request that was
        taken (:meth:`submit`) and not answered yet.
        """
        running = self._running.get(request.batteries)
        if running is not None and running.request is request:
            return False
        job = self._waiting.get(request.batteries)
        if job is not None and not job.refresh and job.request is request:
            del self._waiting[request.batteries]
        else:  # still in the queue: dropped when the loop takes it
            self._withdrawn[id(request)] = request
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

    def statistics(self) -> LoopStatistics:
        """A snapshot of the loop's state (the setpoints are copied once per call)."""
        return LoopStatistics(
            queued=self._receive.statistics().current_buffer_used,
            waiting=len(self._waiting),
            running=len(self._running),
            standing=len(self._standing),
            last_latency_s=self._last_latency_s,
            setpoints=MappingProxyType(dict(self._setpoints)),
        )

    def standing(self) -> dict[frozenset[int], Request]:
        """The standing setpoints: battery set to the request that set it."""
        return {batteries: standing.request for batteries, standing in self._standing.items()}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take requests until :meth:`close`; return when the last one is done.

        Cancelled (the drain deadline at shutdown), it still answers every client request it
        took: those running with "cut off", those waiting with "not applied".
        """
        try:
            await self._serve(task_status)
        finally:
            for batteries, job in list(self._waiting.items()):
                del self._waiting[batteries]
                self._answer(job, Error(request=job.request, message=NOT_APPLIED))

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            refreshes = trio.CancelScope()

            async def refresh_forever() -> None:
                with refreshes:
                    await self._serve_refreshes()

            nursery.start_soon(refresh_forever)
            probes = trio.CancelScope()

            async def answer_probes() -> None:
                with probes:
                    await self._serve_probes()

            self._probes = []
            nursery.start_soon(answer_probes)
            task_status.started()
            async for job in self._receive:
                self._arrive(job)
            refreshes.cancel()
            probes.cancel()
            self._probes = None
            # Client requests already taken run to completion (the nursery waits for them);
            # refreshes that have not started are dropped.
            for batteries in [b for b, job in self._waiting.items() if job.refresh]:
                del self._waiting[batteries]

    # -- scheduling ----------------------------------------------------------------------------

    def _arrive(self, job: _Job) -> None:
        if self._withdrawn.pop(id(job.request), None) is job.request:
            return  # its client went away while it was queued (see withdraw)
        batteries = job.request.batteries
        if job.refresh:
            if batteries in self._waiting or batteries in self._running:
                return  # a request or refresh for these batteries is under way already
            self._waiting[batteries] = job
        else:
            replaced = self._waiting.get(batteries)
            if replaced is not None and replaced.reply is not None:
                self._answer(
                    replaced,
                    Ignored(
                        request=replaced.request,
                        message="superseded by a newer request for the same batteries",
                    ),
                )
            elif replaced is not None:
                # A waiting refresh holds no client's place: the request queues at the end,
                # behind the client requests that arrived before it.
                del self._waiting[batteries]
            self._waiting[batteries] = job  # a replaced client request's place is kept
            for running in self._running.values():
                if (
                    running.refresh
                    and running.scope is not None
                    and not batteries.isdisjoint(running.request.batteries)
                ):
                    running.scope.cancel()  # a client never waits for a refresh
        self._dispatch()

    def _dispatch(self) -> None:
        assert self._nursery is not None
        ahead: list[frozenset[int]] = []  # client requests that could not start yet
        for batteries, job in list(self._waiting.items()):
            blocker = next(
                (r for r in self._running if not batteries.isdisjoint(r)),
                None,
            ) or next((a for a in ahead if not batteries.isdisjoint(a)), None)
            if blocker is None and job.refresh:
                # A refresh never delays a client: it waits while a client request it overlaps
                # waits too, wherever that one stands in the queue.
                blocker = next(
                    (
                        other
                        for other, waiting in self._waiting.items()
                        if not waiting.refresh and not batteries.isdisjoint(other)
                    ),
                    None,
                )
            if blocker is not None:
                if not job.refresh:
                    ahead.append(batteries)
                    if blocker != batteries and not job.warned:
                        job.warned = True
                        logger.warning(
                            "request for batteries [%s] overlaps the request for [%s]; it waits",
                            ids_text(batteries),
                            ids_text(blocker),
                        )
                continue
            del self._waiting[batteries]
            self._running[batteries] = job
            self._nursery.start_soon(self._run, job)

    async def _run(self, job: _Job) -> None:
        batteries = job.request.batteries
        result: Result | None = None
        try:
            with trio.CancelScope() as scope:
                job.scope = scope
                if job.refresh and not self._is_current_refresh(job):
                    return
                result = await self._apply(job)
        except Exception as error:  # a bug must not take the daemon down
            logger.exception("request for batteries [%s] failed", ids_text(batteries))
            result = Error(request=job.request, message=f"internal error: {error!r}")
        finally:
            del self._running[batteries]
            stopping = _cancelled_from_outside()
            if job.reply is not None and result is None and stopping:
                result = Error(request=job.request, message=CUT_OFF)
            if result is not None:
                self._answer(job, result)
            if not stopping:  # nothing new starts while the loop is being cancelled
                self._dispatch()

    async def _serve_probes(self) -> None:
        """Answer the watchdog's probes, each after a turn of the scheduler."""
        while True:
            await self._probe_wanted.wait()
            self._probe_wanted = trio.Event()
            self._dispatch()  # a scheduler that cannot run a turn answers nobody
            waiting, self._probes = self._probes or [], []
            for answer in waiting:
                answer.set()

    def _answer(self, job: _Job, result: Result) -> None:
        """Reply to a client's request (a refresh has nobody to answer): its one result."""
        if job.reply is None:
            return
        self._last_latency_s = trio.current_time() - job.arrived
        self._metrics.set_power_done(self._last_latency_s)
        job.reply(result, Timing(total_s=self._last_latency_s, commands_s=job.commands_s))

    def _is_current_refresh(self, job: _Job) -> bool:
        standing = self._standing.get(job.request.batteries)
        return standing is not None and standing.request is job.request

    # -- applying ------------------------------------------------------------------------------

    async def _apply(self, job: _Job) -> Result:
        request = job.request
        unknown = unknown_batteries(request, self._topology.pairs, self._topology.left_out)
        if unknown is not None:
            return unknown
        statuses = {b: self._tracker.state(b).status for b in request.batteries}
        chosen = choose(
            request,
            statuses,
            self._tracker.fleet,
            now=trio.current_time(),
            cache_ttl_s=self.settings.broken_cache_ttl_s,
        )
        planned = plan(
            request,
            chosen.pairs,
            exponent=self.settings.exponent,
            broken=chosen.broken,
            search_budget=SearchBudget(
                clock=time.perf_counter, seconds=self.settings.search_budget_s
            ),
        )
        if not isinstance(planned, Distribution):
            if job.refresh:
                logger.warning(
                    "standing setpoint for batteries [%s] not refreshed: %s",
                    ids_text(request.batteries),
                    planned.message if isinstance(planned, Error) else "out of bounds",
                )
            return planned
        planned = as_sent(planned)  # float32 on the wire, never more than planned
        stopping = {
            b: 0.0
            for b in request.batteries
            if b not in planned.setpoints and self._setpoints.get(b, 0.0) != 0.0
        }
        sent = trio.current_time()
        outcomes = await self._command({**planned.setpoints, **stopping}, request.request_timeout_s)
        job.commands_s = trio.current_time() - sent
        failed = {
            b for b, outcome in outcomes.items() if outcome is not None and b in planned.setpoints
        }
        result = summarize(request, planned, failed)
        self._log(request, result, outcomes, refresh=job.refresh)
        if not job.refresh:
            self._hold(request, statuses)
        return result

    async def _command(
        self, setpoints: Mapping[int, float], timeout_s: float
    ) -> dict[int, CommandError | None]:
        """Send every setpoint concurrently; battery id to None (done) or why it failed."""
        outcomes: dict[int, CommandError | None] = {}
        inverter_of = self._topology.pairs
        battery_of = {inverter_of[b]: b for b in setpoints}

        def land(inverter: int, outcome: float | CommandError) -> None:
            outcomes[battery_of[inverter]] = outcome if isinstance(outcome, CommandError) else None

        done = False
        sent = trio.current_time()
        try:
            with trio.move_on_after(timeout_s):
                await self._client.set_active_powers(
                    {inverter_of[b]: power for b, power in setpoints.items()},
                    self.settings.lifetime_s,
                    land,
                )
            done = True
        finally:
            if not done:
                # Cancelled from outside (a client request took over from a refresh; it may
                # arrive wrapped in a group): what landed did land, and the next request must
                # know it (say, to send 0 W to a battery that left the set); what did not
                # answer is nobody's failure.
                self._record(setpoints, outcomes)
        for battery in setpoints:
            if battery not in outcomes:
                outcomes[battery] = CommandError("DEADLINE", f"no answer within {timeout_s:g} s")
        self._record(setpoints, outcomes)
        self._metrics.fanout(trio.current_time() - sent)
        return outcomes

    def _record(
        self, setpoints: Mapping[int, float], outcomes: Mapping[int, CommandError | None]
    ) -> None:
        """The commands that answered: setpoints that hold, and the tracker's outcomes."""
        self._metrics.commands(outcomes.values())
        succeeded = [b for b, outcome in outcomes.items() if outcome is None]
        blocking = [b for b, outcome in outcomes.items() if outcome is not None and outcome.blocks]
        self._tracker.record_outcomes(succeeded=succeeded, failed=blocking)
        for battery in succeeded:
            self._setpoints[battery] = setpoints[battery]

    def _log(
        self,
        request: Request,
        result: Result,
        outcomes: Mapping[int, CommandError | None],
        *,
        refresh: bool,
    ) -> None:
        what = "refresh of" if refresh else "request for"
        failures = {b: e for b, e in outcomes.items() if e is not None}
        if failures:
            logger.warning(
                "%s batteries [%s] at %.0f W: %d of %d commands failed: %s",
                what,
                ids_text(request.batteries),
                request.power_w,
                len(failures),
                len(outcomes),
                ", ".join(f"{b} ({e.code})" for b, e in sorted(failures.items())),
            )
        else:
            logger.debug(
                "%s batteries [%s] at %.0f W: %s",
                what,
                ids_text(request.batteries),
                request.power_w,
                type(result).__name__,
            )

    # -- standing setpoints --------------------------------------------------------------------

    def _hold(self, request: Request, statuses: dict[int, Status]) -> None:
        """A client request was applied: it replaces the standing setpoints it overlaps."""
        batteries = request.batteries
        for other in [s for s in self._standing if s != batteries and not s.isdisjoint(batteries)]:
            logger.warning(
                "standing setpoint for batteries [%s] ended: batteries [%s] now follow a "
                "request for [%s]",
                ids_text(other),
                ids_text(other & batteries),
                ids_text(batteries),
            )
            del self._standing[other]
        if abs(request.power_w) <= ZERO_POWER_W:
            if self._standing.pop(batteries, None) is not None:
                logger.info(
                    "standing setpoint for batteries [%s] released (0 W)", ids_text(batteries)
                )
        else:
            self._standing[batteries] = _Standing(
                request=request, sent_at=trio.current_time(), statuses=statuses
            )
        self._standing_changed.set()

    async def _serve_refreshes(self) -> None:
        board = self._tracker.board
        while True:
            every = self.settings.refresh_interval_s  # read on every turn: a reload may change it
            due = min((s.sent_at + every for s in self._standing.values()), default=math.inf)
            self._standing_changed = trio.Event()
            with trio.move_on_at(due):
                await trio_util.wait_any(
                    board.wait_transition,
                    self._standing_changed.wait,
                    self._settings.changed,  # a reload re-times them at once
                )
            every = self.settings.refresh_interval_s
            now = trio.current_time()
            for standing in list(self._standing.values()):
                statuses = {b: self._tracker.state(b).status for b in standing.statuses}
                if statuses != standing.statuses or now >= standing.sent_at + every:
                    # Marked at the attempt, not when it is done: the next is a full period
                    # away, and the loop does not spin while this one runs.
                    standing.sent_at, standing.statuses = now, statuses
                    self._arrive(_Job(request=standing.request, reply=None, arrived=now))
