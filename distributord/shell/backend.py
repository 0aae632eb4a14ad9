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

import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

import attrs
import trio

from distributord import STARTED_MONOTONIC, __version__
from distributord.core.config import Config
from distributord.core.model import Request
from distributord.core.reports import components_report, status_changes, status_report
from distributord.core.session import Reply, Verdict
from distributord.core.status import BatteryState
from distributord.core.topology import Topology
from distributord.shell.live import Live
from distributord.shell.metrics import Reading
from distributord.shell.requestloop import RequestLoop
from distributord.shell.tracker import StatusTracker


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

    def submit(self, request: Request, reply: Reply) -> Verdict:
        """Offer ``request`` to the request loop."""
        match self.state:
            case Connected(loop=loop):
                if loop.closed:
                    return Verdict.STOPPING
                return Verdict.TAKEN if loop.submit(request, reply) else Verdict.QUEUE_FULL
            case Connecting():
                return Verdict.STOPPING  # a session asks only when connected

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

    def reading(self, clients: int) -> Reading:
        """The daemon's state for a metrics scrape (``clients``: control connections open)."""
        match self.state:
            case Connecting():
                return Reading(api=self._api(), clients=clients)
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
                )

    def _microgrid(self) -> dict[str, Any]:
        """``ping``'s and ``get_status``'s microgrid fields: reached or not, and the version."""
        if not self.connected:
            return {"microgrid": "connecting"}
        state: dict[str, Any] = {"microgrid": "connected"}
        if (api := self._api()) is not None:
            state["microgrid_api"] = api
        return state


def _status(parts: Connected) -> dict[str, Any]:
    """The ``get_status`` result now."""
    tracker, setpoints = parts.tracker, parts.loop.statistics().setpoints
    return status_report(tracker.states, tracker.fleet, setpoints, now=trio.current_time())
