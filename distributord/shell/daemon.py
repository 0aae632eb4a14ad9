"""The composition root: one function wires the daemon's tasks together, in order.

Theory of operation
-------------------
:func:`serve_daemon` opens the root nursery and starts the tasks in dependency order, each
with ``await nursery.start(...)`` so that it reports started only when it is ready:

1. the microgrid link (its bridge thread and channel);
2. the control socket's listener, which serves from here on (``set_power`` gets −32004
   "microgrid not connected" until step 6; ``distributord run`` sends ``READY=1`` now, with
   ``STATUS=`` waiting for the microgrid);
3. the component graph (:func:`~distributord.shell.link.discover` waits, retrying, while the
   API is unreachable), then one telemetry task per component, each started once its stream
   is open;
4. the status tracker's task;
5. the request loop;
6. the control sessions' backend (:class:`~distributord.shell.backend.DaemonBackend`) is
   handed the loop, the tracker and the topology, and the :class:`Daemon` handle is handed to
   the caller.

The parts are wired here, where they are made: the control server knows the daemon only as
the backend its sessions ask, and counts requests through a function it is given; the
metrics read the daemon through the backend too. So no part holds another late.

The running configuration (:class:`~distributord.core.config.Config`, as parsed) is one
:class:`~distributord.shell.live.Live` value: each part gets a view of the tables it needs and
reads a key where it uses it, so a reload (one assignment, by the caller who holds the
:class:`~distributord.shell.live.LiveValue`) acts everywhere at once, also while discovery
still waits for the microgrid.

:meth:`Daemon.stop` shuts down as the spec asks: stop accepting connections, answer arrivals
with −32002, give the requests in hand ``drain_timeout_s`` (as it is then) to finish, answer
the ones cut off, flush every reply, then cancel everything.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import attrs
import trio

from distributord.core.config import Config
from distributord.core.groups import GroupMerger
from distributord.core.status import Status
from distributord.core.topology import Topology
from distributord.shell.backend import Connected, DaemonBackend
from distributord.shell.control import ControlServer
from distributord.shell.groups import GroupSide, GroupSink, telemetry_components
from distributord.shell.link import MicrogridLink, SilenceWatch, Telemetry, discover, open_link
from distributord.shell.live import Live
from distributord.shell.metrics import Metrics
from distributord.shell.requestloop import RequestLoop
from distributord.shell.tracker import StatusTracker

logger = logging.getLogger(__name__)


FLUSH_TIMEOUT_S = 2.0
"""At the end of a stop, how long connections may take to write their last replies."""


@attrs.define(eq=False)
class Daemon:
    """A running daemon's parts (what ``serve_daemon`` hands back once ready)."""

    config: Live[Config]
    link: MicrogridLink
    topology: Topology
    tracker: StatusTracker
    loop: RequestLoop
    control: ControlServer
    metrics: Metrics
    _stop: trio.Event = attrs.field(factory=trio.Event)

    def stop(self) -> None:
        """Begin the graceful shutdown (see the module docstring)."""
        self._stop.set()


async def serve_daemon(
    config: Live[Config],
    sock: socket.socket,
    *,
    lifetime_scale: float = 1.0,
    on_serving: Callable[[], None] = lambda: None,
    on_discovery: Callable[[bool], None] = lambda _: None,
    metrics: Metrics | None = None,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon on a listening control socket until :meth:`Daemon.stop`.

    The control socket serves from the start (``on_serving`` is called then: systemd's
    ``READY=1``), before the microgrid is reached; the daemon is handed back once it is.
    Keys are read from ``config`` where they are used (a reload may change them). Requests,
    commands and state are counted into ``metrics`` (a fresh one if not given), which a scrape
    may read from the start. ``lifetime_scale`` is how much faster than the clock the
    microgrid's lifetimes run: 1 on a site, a test simulator's own (see
    :class:`~distributord.shell.requestloop.RequestLoop`).
    """
    started = config.value.microgrid  # only a restart changes it (the reload keeps it so)
    async with open_link(started.address, api=started.api) as link, trio.open_nursery() as nursery:
        metrics = metrics or Metrics()
        backend = DaemonBackend(config, api=lambda: link.version)  # renegotiation may change it
        control = ControlServer(backend, config=config, count=metrics.request)
        metrics.watch(
            lambda: backend.reading(control.statistics().connections),
            api=lambda: link.version,
        )
        control_done = trio.Event()

        async def run_control(*, task_status: trio.TaskStatus[None]) -> None:
            try:
                await control.serve(sock, task_status=task_status)
            finally:
                control_done.set()

        await nursery.start(run_control)
        on_serving()

        def discovering(unreachable: bool) -> None:
            backend.discovering(unreachable)
            on_discovery(unreachable)

        topology = await discover(link, unreachable=discovering)
        status = config.view(lambda c: c.status)
        tracker = StatusTracker(topology.pairs, status, hybrid=topology.hybrid)
        # A group's members feed the tracker as one pair; its commands go to every member.
        merger = GroupMerger(topology.groups, lambda: status.value.max_data_age_s)
        sink = GroupSink(tracker, merger, tracker.count_repeat)
        components = telemetry_components(topology)
        watch = SilenceWatch()  # one task watches every stream's silence
        await nursery.start(watch.serve)
        for component, battery in components:
            telemetry = Telemetry(
                link,
                component,
                battery=battery,
                sink=sink,
                max_data_age_s=lambda: status.value.max_data_age_s,  # on every message
                silence_s=started.stream_silence_s,
                watch=watch,
            )
            await nursery.start(telemetry.serve)
        logger.info("telemetry: %d streams open", len(components))
        await nursery.start(tracker.serve)
        side = GroupSide(link, topology.groups, merger, lifetime_scale=lifetime_scale)
        loop = RequestLoop(
            side,
            tracker,
            topology,
            config,
            lifetime_scale=lifetime_scale,
            metrics=metrics,
            placed=side.placed,
            group_held=side.held,
        )
        loop_done, loop_scope = trio.Event(), trio.CancelScope()

        async def run_loop(*, task_status: trio.TaskStatus[None]) -> None:
            try:
                with loop_scope:
                    await loop.serve(task_status=task_status)
            finally:
                loop_done.set()

        await nursery.start(run_loop)
        backend.reached(Connected(loop=loop, tracker=tracker, topology=topology))
        daemon = Daemon(
            config=config,
            link=link,
            topology=topology,
            tracker=tracker,
            loop=loop,
            control=control,
            metrics=metrics,
        )
        task_status.started(daemon)
        await daemon._stop.wait()
        logger.info("stopping: no new connections or requests; finishing those in hand")
        control.stop_accepting()
        loop.close()
        drain_timeout_s = config.value.requests.drain_timeout_s  # as reloaded, not as started
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


def describe(daemon: Daemon) -> dict[str, Any]:
    """Counts for the systemd status line."""
    board = daemon.tracker.board.value
    return {
        "working": board.count(Status.WORKING),
        "uncertain": board.count(Status.UNCERTAIN),
        "not_working": board.count(Status.NOT_WORKING),
        "latency_s": daemon.loop.statistics().last_latency_s,
    }
