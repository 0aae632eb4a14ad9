"""``distributord run``: the daemon under a service manager (signals, systemd, reloads).

Theory of operation
-------------------
:func:`run` holds the running configuration, takes the control socket (from systemd's
socket activation, else binds it), and runs :func:`~distributord.shell.daemon.serve_daemon` next to
three housekeeping tasks:

* **signals**: SIGTERM or SIGINT → ``STOPPING=1`` and the graceful stop (no new connections or
  requests; those in hand get ``requests.drain_timeout_s``; exit 0). SIGHUP → ``RELOADING=1``
  with ``MONOTONIC_USEC=``, re-read the configuration file, apply what can change live (and say
  what needs a restart), ``READY=1``. A bad new configuration is logged and the old one kept.
  Signals are read until the daemon has finished, not until the stop begins: during the drain a
  SIGHUP is no reload (there is nothing left to apply it to) and a second SIGTERM or SIGINT
  does not shorten the drain (it is bounded already, and cutting requests off early would only
  answer more of them "cut off"; SIGKILL, or systemd's ``TimeoutStopSec=``, is for that); each
  is logged once and the exit is still 0. (Unread, they used to wait in trio's receiver, which
  raises them again when it closes: the process then died by SIGHUP.) Underneath the receiver
  the three are ignored, so that one arriving as it closes is dropped, not fatal.
  The running configuration is one :class:`~distributord.shell.live.LiveValue` held here; a
  reload is one assignment to it, read by every part where it uses a key, from start-up on (a
  reload while the microgrid is still unreachable applies too).
* **the status line**: ``STATUS=`` with the battery counts and the last request's latency,
  whenever the board changes (at most once a second).
* **the watchdog**: when systemd asks for one (``WATCHDOG_USEC``), ``WATCHDOG=1`` at half its
  period, and only when the request loop has just proved it is alive by taking a probe off its
  own queue: a loop that is stuck, or whose queue no longer drains, stops the pings and systemd
  restarts the daemon.

``READY=1`` is sent as soon as the control socket serves, before the microgrid is reached:
until discovery completes, ``STATUS=`` says "waiting for the microgrid", ``ping`` answers, and
``set_power`` gets −32004 (the daemon keeps retrying the microgrid).

Once ready, the daemon tunes Python's garbage collector (:func:`tune_gc`). A request to 500
batteries creates and drops tens of thousands of objects, and with the default thresholds
that set off a collection every few hundred; each full collection walked the whole heap
(1,000 open streams and their state) for up to 140 ms. In the daemon benchmark (500 batteries,
telemetry at 1 Hz, 200 requests) collections took 7.3 s of 90 s, and the reply's p50 was 1.34×
the bare fan-out's; with the same tuning applied by hand, none ran and it was 1.17×. What
exists at start is frozen (never walked again) and collections start only after 50,000 more
objects are alive; memory is still freed by reference counting, and cycles wait for the next
collection.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from distributord.core import config as configuration
from distributord.core.errors import ConfigError
from distributord.shell.daemon import Daemon, describe, serve_daemon
from distributord.shell.live import LiveValue
from distributord.shell.metrics import Metrics
from distributord.shell.systemd import Notifier, configure_logging, watchdog_interval

logger = logging.getLogger(__name__)

STATUS_EVERY_S = 1.0
"""The status line is updated at most this often (systemd keeps only the last one)."""

STATUS_REFRESH_S = 30.0
"""...and at least this often, for the latency of the last request."""


def status_line(daemon: Daemon) -> str:
    """``STATUS=`` text: battery counts, the last request's latency, the API version."""
    counts = describe(daemon)
    latency = counts["latency_s"]
    last = "no request yet" if latency is None else f"last request {latency * 1e3:.1f} ms"
    since = daemon.tracker.unreachable_since
    down = (
        "" if since is None else f"microgrid UNREACHABLE for {trio.current_time() - since:.0f} s; "
    )
    return (
        f"{down}{counts['working']} working, {counts['uncertain']} uncertain, "
        f"{counts['not_working']} not working; {last}; API {daemon.link.version}"
    )


async def _report_status(daemon: Daemon, notifier: Notifier) -> None:
    board = daemon.tracker.board
    while True:
        reported = board.value
        notifier.status(status_line(daemon))
        await trio.sleep(STATUS_EVERY_S)
        # A change during the pause is reported now, not at the next change or in 30 s.
        if board.value is reported:
            with trio.move_on_after(STATUS_REFRESH_S):  # the latency changes without the board
                await board.wait_transition()


async def _watchdog(daemon: Daemon, notifier: Notifier, interval_s: float) -> None:
    while True:
        answer = trio.Event()
        if daemon.loop.probe(answer):
            with trio.move_on_after(interval_s):
                await answer.wait()
        if answer.is_set():
            notifier.watchdog()
        else:
            logger.error("watchdog: the request loop did not answer within %.1f s", interval_s)
        await trio.sleep(interval_s)


def _reload(
    running: LiveValue[configuration.Config],
    config_path: Path | None,
    notifier: Notifier,
    overrides: dict[str, str | None],
    status: Callable[[], str],
) -> None:
    """SIGHUP: re-read the configuration and put its live keys in force in ``running``."""
    current = running.value
    notifier.reloading(monotonic_usec=math.floor(time.monotonic() * 1e6))
    try:
        loaded = configuration.load_config(config_path) if config_path else configuration.Config()
        new = configuration.with_overrides(loaded, **overrides)
    except ConfigError as error:
        logger.error("reload: %s; keeping the running configuration", error)
        notifier.ready(status=status())
        return
    changed = configuration.differences(current, new)
    later = [key for key in changed if not configuration.is_live(key)]
    if later:
        logger.warning("reload: %s change only with a restart", ", ".join(later))
    applied = configuration.reloaded(current, new)
    running.value = applied
    if applied.logging != current.logging:
        configure_logging(applied.logging.level, libraries=applied.logging.libraries)
    logger.info(
        "reload: applied %s",
        ", ".join(k for k in changed if configuration.is_live(k)) or "nothing new",
    )
    notifier.ready(status=status())


GC_THRESHOLD = (50_000, 20, 20)
"""The collector's thresholds once the daemon is ready (Python's default is 700, 10, 10)."""


def tune_gc() -> Callable[[], None]:
    """Freeze what exists now and let the collector run rarely; returns how to undo it."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    logger.debug(
        "garbage collector: %d objects frozen, thresholds %s", gc.get_freeze_count(), GC_THRESHOLD
    )

    def undo() -> None:
        gc.set_threshold(*old)
        gc.unfreeze()

    return undo


@contextlib.contextmanager
def _ignoring(signums: tuple[signal.Signals, ...]) -> Iterator[dict[int, Any]]:
    """Ignore ``signums`` within; yields their former handlers, by signal.

    Each is restored on the way out, except those the caller deleted from the mapping: they
    stay ignored.
    """
    former: dict[int, Any] = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield former
    finally:
        for signum, handler in former.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


async def run(
    config: configuration.Config,
    sock: socket.socket,
    *,
    config_path: Path | None,
    overrides: dict[str, str | None],
    notifier: Notifier | None = None,
    metrics: Metrics | None = None,
) -> int:
    """Run the daemon until SIGTERM or SIGINT; returns the exit code.

    ``metrics`` is what ``/metrics`` serves, if it is served (:func:`serve_metrics`).
    """
    notifier = notifier or Notifier()
    running = LiveValue(config)
    waiting = f"waiting for the microgrid at {config.microgrid.address}"
    signals_to_take = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    with (
        _ignoring(signals_to_take) as former,
        trio.open_signal_receiver(*signals_to_take) as signals,
        contextlib.ExitStack() as undo,
    ):
        async with trio.open_nursery() as nursery:
            housekeeping = trio.CancelScope()
            listening = trio.CancelScope()  # reading signals, until the daemon has finished
            started: list[Daemon] = []
            ready = trio.Event()

            before = [waiting]  # the STATUS= line before discovery completes

            def current_status() -> str:
                return status_line(started[0]) if started else before[0]

            async def daemon_task() -> None:
                notifier.status(waiting)

                def serving() -> None:  # the socket serves (-32004 for set_power until ready)
                    notifier.ready(status=waiting)
                    logger.info("control socket open; %s", waiting)

                def discovering(unreachable: bool) -> None:  # STATUS= once per change
                    text = f"{waiting}: UNREACHABLE, retrying" if unreachable else waiting
                    if text != before[0]:
                        before[0] = text
                        notifier.status(text)

                async def serve(*, task_status: trio.TaskStatus[Daemon]) -> None:
                    try:
                        await serve_daemon(
                            running,
                            sock,
                            on_serving=serving,
                            on_discovery=discovering,
                            metrics=metrics,
                            task_status=task_status,
                        )
                    finally:
                        listening.cancel()

                daemon: Daemon = await nursery.start(serve)
                started.append(daemon)
                ready.set()
                undo.callback(tune_gc())
                notifier.ready(status=status_line(daemon))
                logger.info(
                    "ready: the microgrid is connected, %d batteries", len(daemon.topology.pairs)
                )

            async def housekeeping_task() -> None:
                with housekeeping:
                    await ready.wait()
                    daemon = started[0]
                    async with trio.open_nursery() as tasks:
                        tasks.start_soon(_report_status, daemon, notifier)
                        interval = watchdog_interval()
                        if interval is not None:
                            tasks.start_soon(_watchdog, daemon, notifier, interval)

            nursery.start_soon(daemon_task)
            nursery.start_soon(housekeeping_task)
            stopping = False
            said: set[str] = set()  # what was said about a signal while stopping (once each)
            with listening:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if stopping:
                        if name not in said:
                            said.add(name)
                            logger.info(
                                "%s while stopping: %s",
                                name,
                                "not reloading"
                                if signum == signal.SIGHUP
                                else "already stopping; requests in hand keep the rest of"
                                " requests.drain_timeout_s",
                            )
                        continue
                    if signum == signal.SIGHUP:
                        _reload(running, config_path, notifier, overrides, current_status)
                        continue
                    logger.info("%s: stopping", name)
                    stopping = True
                    # The process is on its way out: a SIGHUP from now to its end is dropped.
                    del former[signal.SIGHUP]
                    notifier.stopping()
                    housekeeping.cancel()
                    if started:
                        started[0].stop()  # serve_daemon drains, returns, and ends this loop
                    else:
                        nursery.cancel_scope.cancel()
    return 0
