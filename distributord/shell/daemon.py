"""The composition root: one function wires the daemon's tasks together, in order.

Theory of operation
-------------------
:func:`serve_daemon` opens the root nursery and starts the tasks in dependency order, each
with ``await nursery.start(...)`` so that it reports started only when it is ready:

1. the microgrid link (its bridge thread and channel), then the component graph
   (:func:`~distributord.shell.link.discover` waits, retrying, while the API is unreachable);
2. one telemetry task per component, each started once its stream is open;
3. the status tracker's task;
4. the request loop;
5. the control socket's listener.

Only then is the :class:`Daemon` handle handed to the caller (``distributord run`` sends
``READY=1`` at that point). :meth:`Daemon.stop` shuts down as the spec asks: stop accepting
connections, take no more requests, give the requests in hand ``drain_timeout_s`` to finish,
then cancel everything (commands still running are cancelled at the RPC).
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable
from typing import Any

import attrs
import trio

from distributord.core.config import Config
from distributord.core.status import Status, StatusSettings
from distributord.core.topology import Topology
from distributord.shell.control import ControlServer, ControlSettings
from distributord.shell.link import Backoff, MicrogridLink, discover, open_link, serve_telemetry
from distributord.shell.requestloop import LoopSettings, RequestLoop
from distributord.shell.tracker import StatusTracker

logger = logging.getLogger(__name__)


FLUSH_TIMEOUT_S = 2.0
"""At the end of a stop, how long connections may take to write their last replies."""


@attrs.frozen(kw_only=True)
class DaemonSettings:
    """Everything the daemon's tasks need (built from the configuration).

    Attributes:
        address: The Microgrid API endpoint, ``HOST:PORT``.
        stream_silence_s: A telemetry stream silent this long is replaced.
        status: Status tracking settings.
        loop: Request loop settings.
        control: Control socket settings.
        drain_timeout_s: On stop, how long requests in hand may take to finish.
    """

    address: str
    stream_silence_s: float = 5.0
    status: StatusSettings = attrs.field(factory=StatusSettings)
    loop: LoopSettings = attrs.field(factory=LoopSettings)
    control: ControlSettings = attrs.field(factory=ControlSettings)
    drain_timeout_s: float = 10.0


@attrs.define(eq=False)
class Daemon:
    """A running daemon's parts (what ``serve_daemon`` hands back once ready)."""

    settings: DaemonSettings
    link: MicrogridLink
    topology: Topology
    tracker: StatusTracker
    loop: RequestLoop
    control: ControlServer
    _stop: trio.Event = attrs.field(factory=trio.Event)

    def stop(self) -> None:
        """Begin the graceful shutdown (see the module docstring)."""
        self._stop.set()


async def serve_daemon(
    settings: DaemonSettings,
    sock: socket.socket,
    *,
    on_serving: Callable[[], None] = lambda: None,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon on a listening control socket until :meth:`Daemon.stop`.

    The control socket serves from the start (``on_serving`` is called then: systemd's
    ``READY=1``), before the microgrid is reached; the daemon is handed back once it is.
    """
    async with open_link(settings.address) as link, trio.open_nursery() as nursery:
        control = ControlServer(settings=settings.control)
        control_done = trio.Event()

        async def run_control(*, task_status: trio.TaskStatus[None]) -> None:
            try:
                await control.serve(sock, task_status=task_status)
            finally:
                control_done.set()

        await nursery.start(run_control)
        on_serving()
        topology = await discover(link)
        tracker = StatusTracker(topology.pairs, settings.status)
        components: list[tuple[int, bool]] = [
            *((battery, True) for battery in topology.pairs),
            *((inverter, False) for inverter in topology.pairs.values()),
        ]
        for component, battery in components:
            await nursery.start(
                functools.partial(
                    serve_telemetry,
                    link,
                    component,
                    battery=battery,
                    sink=tracker,
                    # Read on every message from the tracker's settings, which a reload
                    # changes: one source of truth for status.max_data_age_s.
                    max_data_age_s=lambda: tracker.settings.max_data_age_s,
                    silence_s=settings.stream_silence_s,
                    backoff=Backoff(),
                )
            )
        logger.info("telemetry: %d streams open", len(components))
        await nursery.start(tracker.serve)
        loop = RequestLoop(link, tracker, topology, settings.loop)
        loop_done, loop_scope = trio.Event(), trio.CancelScope()

        async def run_loop(*, task_status: trio.TaskStatus[None]) -> None:
            try:
                with loop_scope:
                    await loop.serve(task_status=task_status)
            finally:
                loop_done.set()

        await nursery.start(run_loop)
        control.attach(loop=loop, tracker=tracker, topology=topology)
        daemon = Daemon(
            settings=settings,
            link=link,
            topology=topology,
            tracker=tracker,
            loop=loop,
            control=control,
        )
        task_status.started(daemon)
        await daemon._stop.wait()
        logger.info("stopping: no new connections or requests; finishing those in hand")
        control.stop_accepting()
        loop.close()
        drain_timeout_s = daemon.settings.drain_timeout_s  # as reloaded, not as started
        with trio.move_on_after(drain_timeout_s) as drain:
            await loop_done.wait()
        if drain.cancelled_caught:
            logger.warning(
                "stopping: requests still running after %.0f s are cancelled",
                drain_timeout_s,
            )
            loop_scope.cancel()  # the loop answers what it cuts off, then returns
            await loop_done.wait()
        # Every reply is written before its connection closes (bounded: a client that does
        # not read its socket cannot hold the stop up).
        control.close_sessions()
        with trio.move_on_after(FLUSH_TIMEOUT_S):
            await control_done.wait()
        nursery.cancel_scope.cancel()


def settings_from_config(config: Config) -> DaemonSettings:
    """The daemon's settings from the configuration."""
    return DaemonSettings(
        address=config.microgrid.address,
        stream_silence_s=config.microgrid.stream_silence_s,
        status=config.status.settings,
        loop=LoopSettings(
            exponent=config.distribution.exponent,
            search_budget_s=config.distribution.search_budget_ms / 1000.0,
            lifetime_s=config.setpoints.lifetime_s,
            queue_size=config.requests.queue_size,
            broken_cache_ttl_s=config.status.broken_cache_ttl_s,
        ),
        control=ControlSettings(
            allowed_uids=frozenset(config.control.allowed_uids),
            allowed_gids=frozenset(config.control.allowed_gids),
            max_connections=config.control.max_connections,
            default_timeout_s=config.requests.default_timeout_s,
        ),
        drain_timeout_s=config.requests.drain_timeout_s,
    )


def apply_settings(daemon: Daemon, settings: DaemonSettings) -> None:
    """Apply what can change while running (``core.config.LIVE_KEYS``, declared per field)."""
    daemon.settings = attrs.evolve(
        daemon.settings,
        status=settings.status,
        loop=attrs.evolve(settings.loop, queue_size=daemon.settings.loop.queue_size),
        control=settings.control,
        drain_timeout_s=settings.drain_timeout_s,
    )
    daemon.loop.set_settings(settings.loop)
    daemon.control.set_settings(settings.control)
    daemon.tracker.set_settings(settings.status)


def describe(daemon: Daemon) -> dict[str, Any]:
    """Counts for the systemd status line."""
    board = daemon.tracker.board.value
    return {
        "working": board.count(Status.WORKING),
        "uncertain": board.count(Status.UNCERTAIN),
        "not_working": board.count(Status.NOT_WORKING),
        "latency_s": daemon.loop.statistics().last_latency_s,
    }
