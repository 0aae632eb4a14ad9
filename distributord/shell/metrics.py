"""Prometheus metrics: what an operator watches the daemon by (``metrics.listen``).

Theory of operation
-------------------
Two kinds of figures, gathered in two ways so that serving them never slows the request loop:

* **Events** (requests answered, commands sent, their latencies) are counted where they happen,
  in the daemon's trio thread, into ``prometheus_client``'s counters and histograms: a lock and
  an addition, about a microsecond each, a few per request.
* **State** (battery status, SoC, setpoints, telemetry age, queue depth, clients, stream breaks)
  is read only when somebody scrapes. The scrape runs on the library's HTTP thread; it asks the
  trio thread for one consistent reading (:class:`Reading`, built by the same
  :func:`~distributord.core.reports.status_report` that answers ``get_status``) and turns it
  into gauges there. Nothing is polled while nobody scrapes, and no trio-owned structure is
  touched from another thread. A trio thread that does not answer within
  :data:`READ_TIMEOUT_S` leaves the scrape with the event figures and
  ``distributord_up 0``.

The HTTP server is ``prometheus_client``'s own (a thread per scrape, daemon threads): a client
that connects and sends nothing holds one thread of it, never the daemon. One registry per
daemon: tests run many daemons in one process.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import prometheus_client
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from distributord import __version__
from distributord.core.errors import CommandError, CommandOverriddenError, CommandRejectedError
from distributord.core.protocol import METHODS, Code
from distributord.core.reports import status_report
from distributord.core.status import Status

if TYPE_CHECKING:  # control imports this module
    from distributord.shell.control import ControlServer

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

INVALID = "invalid"
"""The method label of a line that is not a request for one of our methods (the method name a
client sent is never a label: a hostile client could make any number of series)."""


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


def error_outcome(code: Code) -> str:
    """The ``outcome`` label of a request answered with a JSON-RPC error."""
    return code.name.lower()


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
    """

    api: str | None
    clients: int
    report: Mapping[str, Any] | None = None
    queued: int = 0
    running: int = 0
    standing: int = 0
    breaks: Mapping[str, int] = attrs.field(factory=dict)
    reconnects: Mapping[str, int] = attrs.field(factory=dict)


def read_daemon(control: ControlServer, api: Callable[[], str | None]) -> Reading:
    """Read the daemon's state from its control server (which holds every part once attached).

    Args:
        control: The :class:`~distributord.shell.control.ControlServer`.
        api: The API version spoken now.
    """
    clients = control.statistics().connections
    loop, tracker = control.loop, control.tracker
    if loop is None or tracker is None:
        return Reading(api=api(), clients=clients)
    loops = loop.statistics()
    streams = tracker.statistics()
    return Reading(
        api=api(),
        clients=clients,
        report=status_report(
            tracker.states, tracker.fleet, loops.setpoints, now=trio.current_time()
        ),
        queued=loops.queued + loops.waiting,
        running=loops.running,
        standing=loops.standing,
        breaks=streams.breaks,
        reconnects=streams.reconnects,
    )


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
        self.registry.register(_StateCollector(self))

    # -- events (the daemon's trio thread) -----------------------------------------------------

    def request(self, method: str, outcome: str) -> None:
        """One request handled: ``method`` as the client named it (unknown ones are folded)."""
        self._requests.labels(method if method in METHODS else INVALID, outcome).inc()

    def set_power_done(self, seconds: float) -> None:
        """A set_power's time from arrival to result."""
        self._latency.observe(seconds)

    def commands(self, outcomes: Iterable[CommandError | None]) -> None:
        """Commands answered (or run out of time): each one's outcome."""
        api = self._api() or "unknown"
        # One increment per result, not per command: a fan-out to 500 inverters is 1 to 5 here.
        for result, count in collections.Counter(map(command_result, outcomes)).items():
            self._commands.labels(result, api).inc(count)

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
            "1 once the component graph was read (the daemon manages batteries)",
            1.0 if reading.report is not None else 0.0,
        )
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
        if reading.report is not None:
            yield from _batteries(reading.report)


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
        "data_age_s": GaugeMetricFamily(
            "distributord_battery_telemetry_age_seconds",
            "Age of the older of the battery's and its inverter's latest telemetry",
            labels=["battery"],
        ),
    }
    tally = dict.fromkeys(statuses, 0)
    for entry in report["batteries"]:
        battery = str(entry["id"])
        tally[entry["status"]] += 1
        for one in statuses:
            status.add_metric([battery, one], 1.0 if entry["status"] == one else 0.0)
        for key, family in fields.items():
            if key in entry:
                family.add_metric([battery], entry[key])
    for one in statuses:
        counts.add_metric([one], tally[one])
    yield counts
    yield status
    yield from fields.values()


@attrs.define(eq=False)
class MetricsServer:
    """``/metrics`` served over HTTP from threads of its own (:func:`serve_metrics`).

    Attributes:
        url: Where the metrics are, with the port bound (``http://HOST:PORT/metrics``).
    """

    url: str
    _server: Any
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve_metrics(metrics: Metrics, listen: str) -> MetricsServer:
    """Serve ``metrics`` at ``/metrics`` on ``listen`` (``HOST:PORT``; port 0 picks one).

    Raises:
        OSError: The address cannot be bound (in use, not this machine's).
    """
    host, _, port = listen.rpartition(":")
    server, thread = prometheus_client.start_http_server(
        int(port), addr=host.strip("[]"), registry=metrics.registry
    )
    bound = server.server_address[1]
    url = f"http://{host}:{bound}/metrics"
    logger.info("metrics: serving %s", url)
    return MetricsServer(url=url, server=server, thread=thread)
