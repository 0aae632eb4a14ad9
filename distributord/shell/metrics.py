"""Prometheus metrics: what an operator watches the daemon by (``metrics.listen``).

Theory of operation
-------------------
Two kinds of figures, gathered in two ways so that serving them never slows the request loop:

* **Events** (requests answered, commands sent, their latencies) are counted where they happen,
  in the daemon's trio thread, into ``prometheus_client``'s counters and histograms: a lock and
  an addition, about a microsecond each, a few per request.
* **State** (battery status, SoC, setpoints and their lapses, telemetry age, queue depth,
  clients, stream breaks)
  is read only when somebody scrapes. The scrape runs on the library's HTTP thread; it asks the
  trio thread for one consistent reading (:class:`Reading`, built by the same
  :func:`~distributord.core.reports.status_report` that answers ``get_status``) and turns it
  into gauges there. Nothing is polled while nobody scrapes, and no trio-owned structure is
  touched from another thread. A trio thread that does not answer within
  :data:`READ_TIMEOUT_S` leaves the scrape with the event figures and
  ``distributord_up 0``.

The HTTP server is the standard library's threaded WSGI server serving ``prometheus_client``'s
WSGI app (the text, its content negotiation and gzip are the library's), with three bounds the
library's own ``start_http_server`` lacks, so that the endpoint cannot take the daemon's file
descriptors or threads (without them, about 1,000 idle TCP connections left control clients
and gRPC unable to connect, and of 1,000 scrapes at once 456 were not answered within 60 s):

* **a real listen backlog** (:data:`LISTEN_BACKLOG`, not the library's 5): a burst of scrapes
  waits in the kernel instead of having its handshakes dropped and retried seconds later;
* **a connection limit** (:data:`MAX_CONNECTIONS`). A connection is *idle* when it has sent
  nothing for :data:`IDLE_AFTER_S` since it was set up (a scrape sends its request at once).
  With every place taken, an idle new connection is closed at once; any other takes the place
  of the idlest connection held, or, if none is idle, waits in the backlog (the server stops
  accepting) until a place is free. So a flood of idle connections costs the daemon at most
  the limit's descriptors and is drained as fast as it is accepted, a scrape gets through it,
  and a burst of real scrapes is served in turn, none refused. (Closing every connection past
  the limit would let idle ones shut scrapes out; letting every one wait in the backlog would
  put a scrape behind all the idle ones, a deadline each.)
* **a request deadline** (:data:`REQUEST_TIMEOUT_S`): a client that has not sent its whole
  request by then (nothing, or half a request, or a byte at a time) is disconnected, and no
  single read or write of an answer waits longer.

One registry per daemon: tests run many daemons in one process.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import attrs
import prometheus_client
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from distributord import __version__
from distributord.core.errors import CommandError, CommandOverriddenError, CommandRejectedError
from distributord.core.session import method_label
from distributord.core.status import Status

logger = logging.getLogger(__name__)

READING_REUSE_S = 1.0
"""A reading this recent serves another scrape as it is (Prometheus scrapes every 15 s by
default; a client looping on /metrics must not make the daemon build a reading per request)."""

READ_TIMEOUT_S = 2.0
"""How long a scrape waits for the trio thread's reading (Prometheus' own default timeout is
10 s; a loop that cannot answer in 2 s is in trouble, and the scrape says so)."""

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""From a loopback command (about a millisecond) to the longest request timeout (60 s is the
protocol's limit; anything past 10 s is in +Inf)."""

LISTEN_BACKLOG = 1024
"""Connections the kernel holds for the server before it accepts them. The library's server
listens with 5: a burst of scrapes overflows that, and every handshake or first segment
dropped is resent by the client's kernel 0.2 s to 7 s later (a client whose request comes
that late even looks idle). A connection waiting here costs the daemon no descriptor, only
kernel memory, so the backlog is sized for the issue's benchmark, 1,000 scrapes at once
(``tests/shell/test_metrics.py``, ``-m slow``): p99 1.5 to 1.9 s with 1024; with 128, 4.5 s,
and a few scrapes closed as idle. The kernel caps it at ``net.core.somaxconn`` (4096 since
Linux 5.4)."""

MAX_CONNECTIONS = 16
"""Connections served at once: a Prometheus server or two, a curl, with room to spare. Each
costs a descriptor and a thread; the daemon's own connections (control clients, gRPC) need
descriptors more."""

IDLE_AFTER_S = 0.5
"""A connection that has sent nothing for this long is idle: when every place is taken, it
gives its place to a new connection, and a new one idle already is closed. A real client sends
its request at once; this is its grace, for a client or network under load (in the benchmark,
1,000 connections from one process sent their requests up to 0.25 s after connecting)."""

REQUEST_TIMEOUT_S = 5.0
"""A client gets this long to send its whole request, and each read or write of the answer at
most this long (Prometheus sends its request at once, and its own scrape timeout is 10 s)."""


def command_result(outcome: CommandError | None) -> str:
    """The ``result`` label of one command's outcome."""
    if outcome is None:
        return "success"
    if isinstance(outcome, CommandRejectedError):
        return "refused"
    if isinstance(outcome, CommandOverriddenError):
        return "overridden"
    if outcome.code == "DEADLINE":
        return "timed_out"
    return "failed"


@attrs.frozen(kw_only=True)
class Reading:
    """The daemon's state at one moment, taken in its trio thread for a scrape.

    Attributes:
        api: The Microgrid API version spoken, None before discovery.
        clients: Control connections open.
        report: The ``get_status`` result, None before discovery.
        queued: Requests in the queue or waiting for their batteries.
        running: Requests being applied.
        standing: Standing setpoints held.
        breaks: Telemetry streams broken, by component kind (battery, inverter).
        reconnects: Telemetry streams that delivered again after a break, by kind.
        programs: Per configured program: its live proposals, and the sum of their grants in
            their buckets' last merges, W.
        reachable: Discovery completed and some telemetry stream delivers.
        repeated: Telemetry samples dropped as not newer than the one before.
        lapses: Non-zero setpoints that ran out before a refresh or release was confirmed.
    """

    api: str | None
    clients: int
    report: Mapping[str, Any] | None = None
    queued: int = 0
    running: int = 0
    standing: int = 0
    breaks: Mapping[str, int] = attrs.field(factory=dict)
    reconnects: Mapping[str, int] = attrs.field(factory=dict)
    programs: Mapping[str, tuple[int, float]] = attrs.field(factory=dict)
    reachable: bool = False
    repeated: int = 0
    lapses: int = 0


class Metrics:
    """The daemon's metrics and their registry (see the module docstring).

    Args:
        reading_reuse_s: How old a reading may be and still serve a scrape
            (:data:`READING_REUSE_S`; tests that scrape twice in a row pass 0).
    """

    def __init__(self, *, reading_reuse_s: float = READING_REUSE_S) -> None:
        self._reading_reuse_s = reading_reuse_s
        self.registry = CollectorRegistry(auto_describe=True)
        self._read: Callable[[], Reading] | None = None
        self._reading_lock = threading.Lock()
        self._last_reading: Reading | None = None
        self._last_reading_at = -math.inf
        self._api: Callable[[], str | None] = lambda: None
        self._token: trio.lowlevel.TrioToken | None = None
        self._requests = prometheus_client.Counter(
            "distributord_requests",
            "Requests answered (or, for notifications, handled), by method and outcome: a "
            "set_power result's outcome, 'ok', or the JSON-RPC error's name",
            ["method", "outcome"],
            registry=self.registry,
        )
        self._latency = prometheus_client.Histogram(
            "distributord_request_duration_seconds",
            "set_power: from the request loop taking it to its result",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._fanout = prometheus_client.Histogram(
            "distributord_command_fanout_duration_seconds",
            "One request's (or refresh's) inverter commands, sent at once, until the last answered",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._commands = prometheus_client.Counter(
            "distributord_commands",
            "Inverter commands by result (success, failed, refused, overridden, timed_out) and "
            "Microgrid API version",
            ["result", "api"],
            registry=self.registry,
        )
        self._final_replies = prometheus_client.Counter(
            "distributord_command_final_replies",
            "How accepted commands' reply streams ended, read in the background (v1alpha18/19): "
            "success, failed (the battery is blocked), overridden (by a command that was not "
            "ours), none (no final reply within the command's lifetime, or the stream ended "
            "without one), broken (a gRPC error)",
            ["reply", "api"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))

    # -- events (the daemon's trio thread) -----------------------------------------------------

    def request(self, method: str, outcome: str) -> None:
        """One request handled: ``method`` as the client named it (unknown ones are folded)."""
        self._requests.labels(method_label(method), outcome).inc()

    def set_power_done(self, seconds: float) -> None:
        """A set_power's time from arrival to result."""
        self._latency.observe(seconds)

    def commands(self, outcomes: Iterable[CommandError | None]) -> None:
        """Commands answered (or run out of time): each one's outcome."""
        api = self._api() or "unknown"
        # One increment per result, not per command: a fan-out to 500 inverters is 1 to 5 here.
        for result, count in collections.Counter(map(command_result, outcomes)).items():
            self._commands.labels(result, api).inc(count)

    def final_reply(self, reply: str) -> None:
        """An accepted command's reply stream ended so (``success``, ``failed``, ...)."""
        self._final_replies.labels(reply, self._api() or "unknown").inc()

    def fanout(self, seconds: float) -> None:
        """One fan-out's time, from sending its commands until the last answered."""
        self._fanout.observe(seconds)

    def watch(self, read: Callable[[], Reading], *, api: Callable[[], str | None]) -> None:
        """Read the daemon's state with ``read`` on scrapes (called in the daemon's trio run).

        ``api`` gives the Microgrid API version spoken now, which commands are counted under.
        """
        self._read, self._api = read, api
        self._token = trio.lowlevel.current_trio_token()

    # -- scrapes (the HTTP thread) -------------------------------------------------------------

    def reading(self, timeout_s: float = READ_TIMEOUT_S) -> Reading | None:
        """The daemon's state, read in its trio thread; None if it cannot answer in time.

        Scrapes share readings: one at a time is taken, and one taken less than
        ``reading_reuse_s`` ago is served again, so that however many clients scrape, however
        often, the daemon builds at most about one reading a second.
        """
        with self._reading_lock:
            if (
                self._last_reading is not None
                and time.monotonic() - self._last_reading_at < self._reading_reuse_s
            ):
                return self._last_reading
            reading = self._take_reading(timeout_s)
            if reading is not None:
                self._last_reading, self._last_reading_at = reading, time.monotonic()
            return reading

    def _take_reading(self, timeout_s: float) -> Reading | None:
        read, token = self._read, self._token
        if read is None or token is None:
            return None
        box: list[Reading] = []
        failed: list[BaseException] = []
        done = threading.Event()

        def take() -> None:
            try:
                box.append(read())
            except Exception as error:  # handed to the scrape, which logs it
                failed.append(error)
            finally:
                done.set()

        try:
            token.run_sync_soon(take)
        except trio.RunFinishedError:
            return None
        if not done.wait(timeout_s):
            logger.warning("metrics: the daemon did not answer a scrape within %g s", timeout_s)
            return None
        if failed:
            logger.error("metrics: reading the daemon's state failed", exc_info=failed[0])
            return None
        return box[0]


class _StateCollector(Collector):
    """The gauges read at scrape time (see :meth:`Metrics.reading`)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Any]:
        return []  # collected only when scraped (describing must not read the daemon)

    def collect(self) -> Iterator[Any]:
        reading = self._metrics.reading()
        up = GaugeMetricFamily(
            "distributord_up", "1 when the daemon answered this scrape with its state"
        )
        up.add_metric([], 0.0 if reading is None else 1.0)
        yield up
        info = GaugeMetricFamily(
            "distributord_build_info",
            "The running version and the Microgrid API version spoken ('none' before it is known)",
            labels=["version", "microgrid_api"],
        )
        api = reading.api if reading is not None else None
        info.add_metric([__version__, api or "none"], 1.0)
        yield info
        if reading is None:
            return
        yield _gauge(
            "distributord_microgrid_connected",
            "1 while the microgrid is reachable: the component graph was read and some telemetry "
            "stream delivers (0 while every stream is broken)",
            1.0 if reading.reachable else 0.0,
        )
        repeated = CounterMetricFamily(
            "distributord_telemetry_samples_repeated",
            "Telemetry samples dropped because they were not newer than the one before",
        )
        repeated.add_metric([], reading.repeated)
        yield repeated
        lapses = CounterMetricFamily(
            "distributord_setpoint_lapses",
            "Non-zero setpoints whose lifetime ran out before a refresh or release of theirs was "
            "confirmed (the inverter may have fallen back to 0 W on its own)",
        )
        lapses.add_metric([], reading.lapses)
        yield lapses
        yield _gauge("distributord_connected_clients", "Control connections open", reading.clients)
        yield _gauge(
            "distributord_queue_depth",
            "Client requests queued or waiting for their batteries",
            reading.queued,
        )
        yield _gauge("distributord_requests_running", "Requests being applied", reading.running)
        yield _gauge(
            "distributord_standing_setpoints",
            "Setpoints held and refreshed until a newer request or 0 W",
            reading.standing,
        )
        for name, text, counts in (
            ("breaks", "broke, ended or went silent", reading.breaks),
            ("reconnects", "delivered again after a break", reading.reconnects),
        ):
            family = CounterMetricFamily(
                f"distributord_telemetry_stream_{name}",
                f"Telemetry streams that {text}, by component kind",
                labels=["kind"],
            )
            for kind in ("battery", "inverter"):
                family.add_metric([kind], counts.get(kind, 0))
            yield family
        yield from _programs(reading.programs)
        if reading.report is not None:
            yield from _batteries(reading.report)


def _programs(programs: Mapping[str, tuple[int, float]]) -> Iterator[GaugeMetricFamily]:
    """Per program: live proposals and granted power (the configured programs: a bounded set)."""
    proposals = GaugeMetricFamily(
        "distributord_program_proposals", "Live proposals of each program", labels=["program"]
    )
    granted = GaugeMetricFamily(
        "distributord_program_granted_watts",
        "Power granted to each program's live proposals in their buckets' last merges, W",
        labels=["program"],
    )
    for program, (count, watts) in sorted(programs.items()):
        proposals.add_metric([program], count)
        granted.add_metric([program], watts)
    yield proposals
    yield granted


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text)
    family.add_metric([], value)
    return family


def _batteries(report: Mapping[str, Any]) -> Iterator[GaugeMetricFamily]:
    """The per-battery gauges from a ``get_status`` result."""
    statuses = [status.value for status in Status]
    counts = GaugeMetricFamily(
        "distributord_batteries", "Managed batteries by status", labels=["status"]
    )
    status = GaugeMetricFamily(
        "distributord_battery_status",
        "1 for the battery's current status, 0 for the others",
        labels=["battery", "status"],
    )
    fields = {
        "soc_pct": GaugeMetricFamily(
            "distributord_battery_soc_percent", "State of charge, %", labels=["battery"]
        ),
        "setpoint_w": GaugeMetricFamily(
            "distributord_battery_setpoint_watts",
            "The last setpoint commanded successfully, W (positive charges)",
            labels=["battery"],
        ),
        "reactive_setpoint_var": GaugeMetricFamily(
            "distributord_battery_reactive_setpoint_var",
            "The reactive setpoint its inverter is believed to hold, var (positive inductive)",
            labels=["battery"],
        ),
        "data_age_s": GaugeMetricFamily(
            "distributord_battery_telemetry_age_seconds",
            "Age of the older of the battery's and its inverter's latest new telemetry sample",
            labels=["battery"],
        ),
        "clock_offset_s": GaugeMetricFamily(
            "distributord_battery_clock_offset_seconds",
            "The microgrid's clock offset for the battery: our clock at receipt minus the "
            "sample's time (of the side with the larger magnitude); beyond max_data_age_s it "
            "is clock skew",
            labels=["battery"],
        ),
    }
    members = GaugeMetricFamily(
        "distributord_battery_group_member",
        "1 for each battery and inverter of an N:M group, labelled by the group's lead battery"
        " (the id its status, setpoint and other gauges go by)",
        labels=["battery", "member", "kind"],
    )
    tally = dict.fromkeys(statuses, 0)
    for entry in report["batteries"]:
        battery = str(entry["id"])
        tally[entry["status"]] += 1
        group = entry.get("group")
        if group is not None:
            for key, kind in (("batteries", "battery"), ("inverters", "inverter")):
                for member in group[key]:
                    members.add_metric([battery, str(member), kind], 1.0)
        for one in statuses:
            status.add_metric([battery, one], 1.0 if entry["status"] == one else 0.0)
        for key, family in fields.items():
            if key in entry:
                family.add_metric([battery], entry[key])
    for one in statuses:
        counts.add_metric([one], tally[one])
    yield counts
    yield status
    yield members
    yield from fields.values()


@attrs.frozen(kw_only=True)
class MetricsServerStatistics:
    """A snapshot of the metrics server's connections.

    Attributes:
        held: Connections open and counted against the limit (at most ``max_connections``).
        answering: Those whose whole request has been read.
        refused: Connections closed, idle, when every place was taken (since the start).
    """

    held: int
    answering: int
    refused: int


@attrs.define(eq=False)
class _Connection:
    """One accepted connection, as the server's bounds see it."""

    sock: socket.socket
    accepted_at: float
    spoke: bool = False  # its request line has been read
    answering: bool = False  # its whole request has been read
    ended: bool = False  # shut down (idle, or past its deadline); its thread closes it


_TCP_INFO_LAST_DATA_RECV = 52
"""Offset of ``tcpi_last_data_recv`` (ms, u32) in Linux's ``struct tcp_info``: after 8 bytes of
u8 fields and nine u32s, a layout unchanged since Linux 2.6."""


def _silent_for(sock: socket.socket, accepted_at: float, now: float) -> float:
    """How long the client has sent nothing we have not read, in seconds (0: something waits).

    The kernel's count starts when the connection was set up, so the time a connection waited
    in the backlog counts too (an idle connection is idle at once when accepted); where it
    cannot tell (not Linux), the time since it was accepted is taken.
    """
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    if poller.poll(0):
        return 0.0  # its request waits unread (or it has closed: it is leaving by itself)
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 64)
        (milliseconds,) = struct.unpack_from("I", info, _TCP_INFO_LAST_DATA_RECV)
    except (AttributeError, OSError, struct.error):
        return now - accepted_at
    return float(milliseconds) / 1e3


class _BoundedServer(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per connection, with the bounds of the module docstring.

    The bookkeeping is shared by the accepting thread and the connections' threads under one
    lock; a socket is shut down (to make room, or past its deadline) only while registered, and
    it is unregistered before its thread closes it, so a descriptor number reused meanwhile is
    never touched. The deadline is enforced by the accepting thread, between accepts and at
    least every ``poll_s``, also while it waits for room.
    """

    daemon_threads = True  # a stuck connection never holds up the daemon's exit
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        *,
        max_connections: int,
        request_timeout_s: float,
    ) -> None:
        self.address_family = family
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.poll_s = min(0.5, request_timeout_s / 4)
        self._lock = threading.Condition()
        self._open: dict[socket.socket, _Connection] = {}
        self._closing = False
        self.refused = 0  # idle newcomers closed at the limit
        handler = type("_Handler", (_Handler,), {"timeout": request_timeout_s})
        super().__init__(address, handler)

    def statistics(self) -> MetricsServerStatistics:
        """A snapshot of the connections."""
        with self._lock:
            return MetricsServerStatistics(
                held=self._holding(),
                answering=sum(c.answering and not c.ended for c in self._open.values()),
                refused=self.refused,
            )

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the new connection once there is room for it; close it if it is idle.

        See the module docstring: with every place taken, an idle newcomer is closed at once,
        and any other takes the place of an idle connection, or waits for one to be done.
        """
        accepted_at = time.monotonic()
        with self._lock:
            admitted = self._make_room(request, accepted_at)
            if admitted:
                self._open[request] = _Connection(sock=request, accepted_at=accepted_at)
            else:
                self.refused += 1
        if admitted:
            super().process_request(request, client_address)
        else:
            logger.debug("metrics: every place taken; closing a new connection that is idle")
            self.shutdown_request(request)

    def _make_room(self, request: socket.socket, accepted_at: float) -> bool:
        """Make room for ``request``: end an idle connection, or wait for one to be done.

        Returns:
            True once there is room; False if ``request`` is idle itself.
        """
        while self._holding() >= self.max_connections and not self._closing:
            now = time.monotonic()
            if _silent_for(request, accepted_at, now) >= IDLE_AFTER_S:
                return False
            self._end_late(now)
            idle = self._idlest(now)
            if idle is not None:
                self._end(idle)
            elif self._holding() >= self.max_connections:
                # Every place is taken by a client that has spoken (or spoke a moment ago):
                # the next one to finish, or to run out of time, makes room. The new ones
                # wait in the backlog meanwhile.
                self._lock.wait(self.poll_s)
        return True

    def spoke(self, request: Any, *, whole: bool) -> None:
        """The connection's request line (``whole``: its headers too) has been read."""
        with self._lock:
            connection = self._open.get(request)
            if connection is not None:
                connection.spoke = True
                connection.answering = whole

    def service_actions(self) -> None:
        """Between accepts, and at least every ``poll_s``: end connections past the deadline."""
        super().service_actions()
        with self._lock:
            self._end_late(time.monotonic())

    def shutdown_request(self, request: Any) -> None:
        """Unregister the connection (so it is not shut down from elsewhere), then close it."""
        with self._lock:
            self._open.pop(request, None)
            self._lock.notify_all()
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection failed (the client left, timed out, sent nonsense): not the daemon's."""
        logger.debug("metrics: a connection from %s failed", client_address, exc_info=True)

    def close(self) -> None:
        """Stop accepting, release a wait for room, end every connection, close the socket."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self.shutdown()
        with self._lock:
            for connection in list(self._open.values()):
                self._end(connection)
        self.server_close()

    # -- under the lock ------------------------------------------------------------------------

    def _holding(self) -> int:
        return sum(not c.ended for c in self._open.values())

    def _idlest(self, now: float) -> _Connection | None:
        """The connection silent longest, if silent for :data:`IDLE_AFTER_S` at least.

        Silent: no request line read, and nothing waiting unread (a client that sent its
        request a moment ago, whose thread has not run yet, is not idle).
        """
        silences = [
            (_silent_for(c.sock, c.accepted_at, now), c)
            for c in self._open.values()
            if not (c.spoke or c.ended)
        ]
        silence, idlest = max(silences, key=lambda pair: pair[0], default=(0.0, None))
        return idlest if silence >= IDLE_AFTER_S else None

    def _end_late(self, now: float) -> None:
        """End the connections whose whole request has not come within the deadline."""
        for connection in list(self._open.values()):
            late = now - connection.accepted_at > self.request_timeout_s
            if late and not (connection.answering or connection.ended):
                logger.debug(
                    "metrics: no whole request within %g s; closing the connection",
                    self.request_timeout_s,
                )
                self._end(connection)

    def _end(self, connection: _Connection) -> None:
        """Wake the connection's thread with EOF (only while it is registered)."""
        connection.ended = True
        with contextlib.suppress(OSError):  # the peer has gone already: its thread sees it too
            connection.sock.shutdown(socket.SHUT_RDWR)


class _Handler(WSGIRequestHandler):
    """One connection's request (``timeout`` is set per server: each read and write's bound)."""

    server: _BoundedServer

    def parse_request(self) -> bool:
        """Read the request's headers (its line is read); once read, it is being answered."""
        self.server.spoke(self.request, whole=False)
        parsed = super().parse_request()
        if parsed:
            self.server.spoke(self.request, whole=True)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: a scrape is not news (failures go to :meth:`_BoundedServer.handle_error`)."""


@attrs.define(eq=False)
class MetricsServer:
    """``/metrics`` served over HTTP from threads of its own (:func:`serve_metrics`).

    Attributes:
        url: Where the metrics are, with the port bound (``http://HOST:PORT/metrics``).
    """

    url: str
    _server: _BoundedServer
    _thread: threading.Thread

    def statistics(self) -> MetricsServerStatistics:
        """A snapshot of the connections."""
        return self._server.statistics()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.close()
        self._thread.join()


def serve_metrics(
    metrics: Metrics,
    listen: str,
    *,
    max_connections: int = MAX_CONNECTIONS,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
) -> MetricsServer:
    """Serve ``metrics`` at ``/metrics`` on ``listen`` (``HOST:PORT``; port 0 picks one).

    Args:
        metrics: What is served.
        listen: Where.
        max_connections: Connections served at once (:data:`MAX_CONNECTIONS`).
        request_timeout_s: A client's time to send its request (:data:`REQUEST_TIMEOUT_S`).

    Raises:
        OSError: The address cannot be bound (in use, not this machine's).
        UnicodeError: The host is a name IDNA refuses.
    """
    host, _, port = listen.rpartition(":")
    # As the library does: the address family of the host (an IPv6 literal needs AF_INET6).
    family, _, _, _, address = socket.getaddrinfo(
        host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    server = _BoundedServer(
        (str(address[0]), int(port)),
        family,
        max_connections=max_connections,
        request_timeout_s=request_timeout_s,
    )
    server.set_app(prometheus_client.make_wsgi_app(metrics.registry))
    thread = threading.Thread(
        target=server.serve_forever, args=(server.poll_s,), name="metrics", daemon=True
    )
    thread.start()
    bound = server.server_address[1]
    url = f"http://{host}:{bound}/metrics"
    logger.info("metrics: serving %s", url)
    return MetricsServer(url=url, server=server, thread=thread)
