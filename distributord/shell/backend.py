"""What the control socket and the metrics read of the daemon, before and after discovery.

Theory of operation
-------------------
The control socket serves from start-up, before the microgrid is reached; the request loop, the
status tracker and the topology exist only once discovery completes. :class:`DaemonBackend` is
that one fact made explicit: it is :class:`Connecting` until the composition root
(``distributord.shell.daemon``) hands it the parts it made (:meth:`DaemonBackend.reached`),
then :class:`Connected`. It answers a control session's questions
(:class:`~distributord.core.session.Backend`) and builds the metrics' :class:`Reading`, each
according to that state, so neither the control server nor the metrics know the daemon's parts.
"""

from __future__ import annotations

import grp
import logging
import pwd
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

import attrs
import trio

from distributord import STARTED_MONOTONIC, __version__
from distributord.core.arbitration import programs, wire
from distributord.core.arbitration.arbiter import Ask, Origin
from distributord.core.arbitration.holdings import Batteries
from distributord.core.config import Config
from distributord.core.model import Request
from distributord.core.reports import components_report, status_changes, status_report
from distributord.core.session import Caller, Reply, Session, Verdict
from distributord.core.status import BatteryState
from distributord.core.topology import Topology
from distributord.shell.live import Live
from distributord.shell.metrics import Reading
from distributord.shell.requestloop import RequestLoop
from distributord.shell.tracker import StatusTracker

logger = logging.getLogger(__name__)


@attrs.frozen
class Connecting:
    """Discovery has not completed: no request loop, no tracker, no topology yet."""


@attrs.frozen(kw_only=True)
class Connected:
    """The microgrid is reached: the parts the daemon serves with.

    Attributes:
        loop: Where ``set_power`` goes.
        tracker: The batteries' states and telemetry.
        topology: The managed pairs.
    """

    loop: RequestLoop
    tracker: StatusTracker
    topology: Topology


class DaemonBackend:
    """The daemon as its control sessions and metrics see it (see the module docstring).

    Args:
        config: The running configuration (``requests.default_timeout_s`` is read per request).
        api: The Microgrid API version spoken now (it may change: renegotiation).
    """

    def __init__(self, config: Live[Config], *, api: Callable[[], str | None]) -> None:
        self._config = config
        self._api = api
        self.state: Connecting | Connected = Connecting()
        self._reached = trio.Event()  # one-shot: discovery completes once
        self._unreachable_since: float | None = None  # before discovery: since it failed

    def discovering(self, unreachable: bool) -> None:
        """A discovery attempt found the microgrid unreachable, or answered."""
        if not unreachable:
            self._unreachable_since = None
        elif self._unreachable_since is None:
            self._unreachable_since = trio.current_time()

    def unreachable_since(self) -> float | None:
        """Since when (trio clock) the microgrid has been unreachable, if it is now.

        Before discovery: since an attempt failed; after: since every stream broke.
        """
        match self.state:
            case Connected(tracker=tracker):
                return tracker.unreachable_since
            case Connecting():
                return self._unreachable_since

    def reached(self, parts: Connected) -> None:
        """Discovery completed: serve requests with ``parts`` from now on."""
        self.state = parts
        self._reached.set()

    async def wait_connected(self) -> Connected:
        """Wait until discovery has completed; the parts."""
        while not isinstance(state := self.state, Connected):
            await self._reached.wait()
        return state

    # --- core.session.Backend ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the microgrid has been reached."""
        return isinstance(self.state, Connected)

    def default_timeout_s(self) -> float:
        """``requests.default_timeout_s`` as it is now."""
        return self._config.value.requests.default_timeout_s

    def submit(self, ask: Ask, reply: Reply) -> Verdict:
        """Offer a ``set_power`` or ``propose`` to the request loop."""
        match self.state:
            case Connected(loop=loop):
                if loop.closed:
                    return Verdict.STOPPING
                return Verdict.TAKEN if loop.submit(ask, reply) else Verdict.QUEUE_FULL
            case Connecting():
                return Verdict.STOPPING  # a session asks only when connected

    def hello(self, caller: Caller, program: str) -> programs.Acting | programs.NotAllowed:
        """Whether the peer may act as ``program`` (its user and group names looked up)."""
        gids = {caller.gid, *caller.groups}
        return programs.hello(
            program,
            uid=caller.uid,
            user_name=_user_name(caller.uid),
            gids=gids,
            group_names=[name for gid in gids if (name := _group_name(gid)) is not None],
            config=self._config.value,
        )

    def withdraw_proposals(self, origin: Origin, batteries: Batteries | None) -> Mapping[str, Any]:
        """``withdraw``: the program's proposals on ``batteries`` (all when ``None``) end."""
        match self.state:
            case Connected(loop=loop):
                return wire.withdrawn_object(loop.withdraw_proposals(origin, batteries))
            case Connecting():
                return wire.withdrawn_object(())

    def refused_notification(self, method: str) -> None:
        """A command sent as a notification: not carried out, said in the log."""
        logger.warning(
            "control socket: %s sent as a notification (no id) was not carried out: nobody "
            "could read its result",
            method,
        )

    def disconnected(self, session: Session) -> None:
        """A connection ended: its ``until_disconnect`` proposals end."""
        if isinstance(self.state, Connected):
            self.state.loop.disconnect(session)

    def bounds(self, program: str, batteries: frozenset[int]) -> dict[str, Any] | None:
        """``bounds_changed``'s params for ``program`` on ``batteries`` (None before discovery)."""
        match self.state:
            case Connected(loop=loop):
                return loop.bounds(program, batteries)
            case Connecting():
                return None

    def leads(self, batteries: Batteries) -> tuple[Mapping[int, int], list[str]]:
        """Each of ``batteries`` to its group's lead, and the groups named in part."""
        match self.state:
            case Connected(topology=topology):
                return topology.leads(batteries)
            case Connecting():
                return {battery: battery for battery in batteries}, []

    def withdraw(self, request: Request) -> bool:
        """Take back ``request`` if it has not started."""
        match self.state:
            case Connected(loop=loop):
                return loop.withdraw(request)
            case Connecting():
                return False

    def query(self, method: str) -> Mapping[str, Any]:
        """The result of ``ping``, ``get_status`` or ``list_components``."""
        if method == "ping":
            return {
                "version": __version__,
                "uptime_s": time.monotonic() - STARTED_MONOTONIC,
                **self._microgrid(),
            }
        match self.state:
            case Connected(topology=topology) if method == "list_components":
                return components_report(topology)
            case Connected(loop=loop) if method == "get_proposals":
                return {"proposals": loop.proposals()}
            case Connected():
                return {**_status(self.state), **self._microgrid()}
            case Connecting():
                return {"batteries": [], "working": [], "uncertain": [], **self._microgrid()}

    # --- what else reads the daemon ------------------------------------------------------------

    async def status_changes(self) -> AsyncGenerator[list[tuple[int, dict[str, Any]]], None]:
        """Every change of the batteries' statuses, as ``status_changed`` notifications.

        The first batch, once the microgrid is reached, names every battery if it was not
        reached when this began (every battery is news then); after that, each batch is what
        changed since the board this iterator saw last (boards in between may be skipped: the
        newest is what counts).
        """
        before: Mapping[int, BatteryState] = {}
        if isinstance(self.state, Connected):
            before = self.state.tracker.board.value.states
        parts = await self.wait_connected()
        async with aclosing(parts.tracker.board.eventual_values()) as boards:
            async for board in boards:
                changes = status_changes(before, board.states)
                before = board.states
                if changes:
                    yield changes

    async def notices(self) -> AsyncGenerator[list[tuple[str, Mapping[str, Any]]], None]:
        """Every announcement that is an event (``command_failed``), once the microgrid is reached.

        Batches of ``(method, params)``, oldest first, from when this began.
        """
        parts = await self.wait_connected()
        async with aclosing(parts.loop.notices.follow()) as batches:
            async for batch in batches:
                yield [(notice.method, notice.params) for notice in batch]

    def reading(self, clients: int) -> Reading:
        """The daemon's state for a metrics scrape (``clients``: control connections open)."""
        match self.state:
            case Connecting():
                return Reading(api=self._api(), clients=clients, reachable=False)
            case Connected(loop=loop, tracker=tracker):
                loops = loop.statistics()
                streams = tracker.statistics()
                return Reading(
                    api=self._api(),
                    clients=clients,
                    report=_status(self.state),
                    queued=loops.queued + loops.waiting,
                    running=loops.running,
                    standing=loops.standing,
                    breaks=streams.breaks,
                    reconnects=streams.reconnects,
                    programs=loop.programs(),
                    reachable=streams.unreachable_since is None,
                    repeated=streams.repeated,
                    lapses=loops.lapses,
                )

    def _microgrid(self) -> dict[str, Any]:
        """``ping``'s and ``get_status``'s microgrid fields: its state, and the version.

        ``connecting`` (no answer yet, no failure yet), ``unreachable`` (with
        ``unreachable_for_s``: discovery fails, or every telemetry stream is broken) or
        ``connected``.
        """
        since = self.unreachable_since()
        if since is not None:
            state: dict[str, Any] = {
                "microgrid": "unreachable",
                "unreachable_for_s": trio.current_time() - since,
            }
        elif not self.connected:
            return {"microgrid": "connecting"}
        else:
            state = {"microgrid": "connected"}
        if (api := self._api()) is not None:
            state["microgrid_api"] = api
        return state


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return None


def _status(parts: Connected) -> dict[str, Any]:
    """The ``get_status`` result now."""
    tracker, setpoints = parts.tracker, parts.loop.statistics().setpoints
    return status_report(
        tracker.states,
        tracker.fleet,
        setpoints,
        now=trio.current_time(),
        heard=tracker.heard(),
        reactive=parts.loop.reactive_setpoints(),
        groups=parts.topology.groups,
    )
