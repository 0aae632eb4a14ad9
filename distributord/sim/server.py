"""The simulator's IO shell: one grpc.aio server around a :class:`~.world.World`, every version.

Theory of operation
-------------------
One asyncio loop serves gRPC; it runs in a thread of its own (:class:`Simulator` as a context
manager, for tests) or in the main thread (:meth:`Simulator.serve_until_signal`, for
``distributord sim``). All simulated state (the world, the faults, the command record, the set
of open streams) lives behind one lock, the :class:`threading.Condition` that
:meth:`Simulator.wait_for` waits on; every change made under it ends with ``notify_all``, so a
test thread sees each state change without polling. Time is ``time.monotonic()``, read under
the lock and passed into the world, so the world only ever moves forward.

* **One simulator, every version.** The simulator answers the version-neutral
  :class:`~distributord.api.adapter.SimHandler` questions (components, connections, a command,
  a telemetry stream, the microgrid itself, its sensors, added bounds, starting and stopping)
  once; each served version's adapter translates requests, filters and
  messages, and :func:`~distributord.sim.servicer.add_servicer` puts its ``Microgrid`` service
  on the one server. A version not served is not registered, so gRPC answers
  ``UNIMPLEMENTED``. Each version gets its own handler object only so that a command knows
  which version it came through: v1 has no reply stream, so the ``final_reply`` fault applies
  to v1alpha18/19 only.
* **Telemetry is one ticker, not a sleep per stream.** Every ``1/telemetry_hz`` seconds one task
  advances the world, builds each streamed component's version-neutral reading once, and
  offers that same object to all of the component's open streams, whatever their version (an
  adapter therefore encodes it once per tick and metric filter, keyed on the object; see
  ``api.common.TelemetryServing``). A stream keeps only the
  newest reading it has not written yet (a slot, not a queue), so a slow client gets the latest
  sample, never a backlog.
* **Setpoints expire on a timer**, and so do bounds a client added. An accepted command (or
  added bounds) schedules a wake-up at its expiry so the world drops it (and waiters hear of
  it) on time, not at the next tick.
* **Reactive power** (v1alpha18/19 ``SetElectricalComponentPower`` with ``POWER_TYPE_REACTIVE``,
  v1 ``SetComponentPowerReactive``) is judged by the world at once, refused as active power is
  (v1: the status; v1alpha18/19: ``REJECTED``; beyond an inverter's apparent-power limit too),
  and expires on a timer too. It is kept out of
  :meth:`Simulator.commands` and :meth:`Simulator.record`, which count the active commands a
  daemon sends; :meth:`Simulator.reactive_setpoint` reads it.
* **A method an adapter does not serve** answers ``UNIMPLEMENTED`` with ``"<method> is not
  simulated by distributord sim"`` (``sim/servicer.py``; ``tests/sim/test_rpcs.py`` probes
  every method of every version and lists those). The microgrid is the scenario's
  ``[microgrid]``; there are no sensors (``ListSensors`` lists none; a sensor stream ends
  ``NOT_FOUND``); added bounds, starting, standby, stopping and acknowledging are the world's
  (:mod:`distributord.sim.world`).
* **Commands are recorded whatever happens**, including when the client cancels the call while
  it hangs: grpc.aio cancels the handler's task, the ``CancelledError`` is recorded as
  ``"cancelled"`` and re-raised. A command accepted without a final reply (``final_reply =
  "NONE"``) is recorded when its call ends, as ``"cancelled"``: only the client ends it (with
  ``"APPLIED_NONE"``, as ``"ok"``: it was applied). That is :meth:`Simulator.commands`, every
  call as it ended; :meth:`Simulator.record` is the world's record of what each inverter was
  commanded and held (:mod:`distributord.sim.record`), written when each command is decided;
  with the limit violations (a scenario's ``[[limits]]``), while :meth:`Simulator.limit_sums`
  gives each limit's sum now.
* **A command is decided after its latency**, in one step under the lock: judged, applied or
  not, recorded. A command cancelled before that is recorded cancelled and never applied. The
  latency is the next of ``command_latencies_s`` (taken from the faults as the call arrives),
  else ``command_latency_s``.
* **Inverters ramp** where the ``ramp_s`` fault says so (v1alpha18/19): ``ACCEPTED`` at once,
  the final reply (``final_reply``: ``SUCCESS``, ``FAILED`` or ``OVERRIDDEN``) after the ramp.
  An inverter with a ramp rate (``ramp_w_per_s``) answers an applied command's final reply
  when its applied power reaches the setpoint (:meth:`~distributord.sim.world.World.settles_at`),
  or after ``ramp_s`` if that is later.
  A newer command the inverter accepts meanwhile, from anyone, ends the older ramp at once with
  ``OVERRIDDEN``, as the API says. Every ramp's end (its final reply, or the client's cancel)
  is recorded (:meth:`Simulator.ramps`).
* **Hostile telemetry is a test hook, not a fault.** :meth:`Simulator.rewrite_readings`
  replaces a component's version-neutral reading by whatever a function makes of it (any
  value, any timestamp, another id, nothing at all), before the adapters encode it;
  :meth:`Simulator.rewrite_messages` rewrites the encoded stream responses of every version
  (a server interceptor swaps the response serializer), for what a neutral reading cannot
  say, such as enum numbers no version defines. Neither knows any version's messages: the
  functions, which a test supplies, do.
* **Faults are read when a command or a stream arrives**; the telemetry faults are applied by the
  world's readings at every tick. An injected ``command_error`` that judges the request
  (``OUT_OF_RANGE``, ``INVALID_ARGUMENT``) is a refusal, as the world's own refusals are
  (v1: that status; v1alpha18/19: ``REJECTED``); any other code is a server failure and ends
  the call with that gRPC status in every version.

Messages are built and parsed by the adapters in :mod:`distributord.api` only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import attrs
import grpc

from distributord.api.adapter import (
    REJECTING_CODES,
    Adapter,
    BatteryTelemetry,
    FinalReply,
    InverterTelemetry,
    MicrogridInfo,
    SetPowerOutcome,
    SimAbort,
    Telemetry,
)
from distributord.core.bounds import Range
from distributord.core.errors import ScenarioError
from distributord.core.topology import Category, Component
from distributord.sim.record import Outcome, Record
from distributord.sim.scenario import MAX_TELEMETRY_HZ, Faults, Scenario, parse_scenario
from distributord.sim.servicer import add_servicer
from distributord.sim.world import (
    BOUNDED_METRIC,
    Accepted,
    BatteryReading,
    InverterReading,
    Rejected,
    World,
)

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
"""The simulator serves on loopback only: it is a test and demo fixture, not a site."""

DEFAULT_PORT = 50051
"""The conventional Microgrid API port, and ``microgrid.address``'s default in the config."""

API_VERSIONS = ("v1alpha18", "v1alpha19", "v1")
"""Every version the simulator can serve, in the daemon's order of negotiation; all by default."""

DEFAULT_APIS = API_VERSIONS
"""What a simulator serves unless told otherwise: every version, on one port."""

REPLY_STREAM_VERSIONS = frozenset({"v1alpha18", "v1alpha19"})
"""Versions whose set-power call answers with a reply stream, where ``final_reply`` applies."""

REPLY_FAULTS: Mapping[str, tuple[FinalReply, bool]] = {
    "SUCCESS": (FinalReply.SUCCESS, True),
    "FAILED": (FinalReply.FAILED, False),
    "OVERRIDDEN": (FinalReply.OVERRIDDEN, False),
    "NONE": (FinalReply.NONE, False),
    "APPLIED_NONE": (FinalReply.NONE, True),
    "APPLIED_END": (FinalReply.END, True),
}
"""Each ``final_reply`` fault: how the reply stream goes on after ``ACCEPTED``, and whether the
setpoint is applied (see :class:`~distributord.sim.scenario.Faults`)."""

RAMP_REPLIES = frozenset({FinalReply.SUCCESS, FinalReply.FAILED, FinalReply.OVERRIDDEN})
"""The final replies a ramp (the ``ramp_s`` fault) delays; the others have no final reply."""

MAX_RECORDS = 100_000
"""Commands the simulator remembers; older ones are forgotten (a long run stays bounded)."""

_EXPIRY_MARGIN_S = 0.001
"""Expiry wake-ups run this much late: asyncio may run a timer up to its clock resolution early,
and a wake-up before the expiry instant would find the setpoint still valid."""

_SERVER_OPTIONS = [
    # Without SO_REUSEPORT (grpc's default on Linux) a busy port is an error, not a second
    # server silently sharing it.
    ("grpc.so_reuseport", 0),
    # A daemon opens every component's stream at once (2000 for 1000 batteries). grpc.aio takes
    # new calls one at a time; past 1000 calls waiting (the default) C-core starts cancelling
    # new ones at random, a fault nobody asked for. Room for a 5000-battery burst instead.
    ("grpc.server.max_pending_requests", 10_000),
    ("grpc.server.max_pending_requests_hard_limit", 20_000),
]

_NO_FAULTS = Faults()

Reading = BatteryReading | InverterReading

ReadingRewrite = Callable[[Telemetry], Telemetry]
"""A component's reading as it should be sent instead (see :meth:`Simulator.rewrite_readings`)."""

MessageRewrite = Callable[[str, Any], Any]
"""``(version, stream response)`` to the response to send (:meth:`Simulator.rewrite_messages`)."""


def adapter(api: str) -> Adapter:
    """The adapter of a version the simulator serves (imported on first use).

    Raises:
        ValueError: Not one of :data:`API_VERSIONS`.
    """
    match api:
        case "v1":
            from distributord.api.v1 import V1

            return V1
        case "v1alpha18":
            from distributord.api.v1alpha import V1ALPHA18

            return V1ALPHA18
        case "v1alpha19":
            from distributord.api.v1alpha import V1ALPHA19

            return V1ALPHA19
    raise ValueError(f"unknown Microgrid API version {api!r}; known: {', '.join(API_VERSIONS)}")


def parse_apis(text: str) -> tuple[str, ...]:
    """``--api``'s value: a comma-separated subset of :data:`API_VERSIONS`, in that order.

    Raises:
        ValueError: Empty, or naming a version that is not one of them (the message names it).
    """
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in API_VERSIONS:
            raise ValueError(
                f"unknown version {name!r}; choose from {', '.join(API_VERSIONS)}, comma-separated"
            )
    return tuple(api for api in API_VERSIONS if api in names)


@attrs.frozen(kw_only=True)
class CommandRecord:
    """One set-power call, as the simulator saw it, whichever version it came through.

    Attributes:
        component_id: The component commanded.
        power_w: The requested power, W.
        lifetime_s: The request's lifetime, s; ``None`` when the request left it out.
        received_at: When the call arrived (monotonic seconds).
        finished_at: When it was answered or cancelled (monotonic seconds).
        outcome: ``"ok"`` (applied, whatever the reply stream said after ``ACCEPTED``),
            ``"cancelled"`` (the client cancelled it, or its deadline ran out, while it was
            pending or waiting for a final reply that never came, not applied; or the
            simulator stopped), ``"FAILED"`` or ``"OVERRIDDEN"`` (accepted, then that final
            reply; not applied), or the gRPC status code's name it was refused with
            (``"OUT_OF_RANGE"``, ...; v1alpha18/19 answer those ``REJECTED``).
        api: The version it came through (``"v1"``, ``"v1alpha18"``, ...).
    """

    component_id: int
    power_w: float
    lifetime_s: int | None
    received_at: float
    finished_at: float
    outcome: str
    api: str


@attrs.frozen(kw_only=True)
class RampRecord:
    """One accepted v1alpha18/19 command that ramped (the ``ramp_s`` fault), as it ended.

    Attributes:
        component_id: The inverter.
        power_w: The setpoint, W.
        accepted_at: When ``ACCEPTED`` was decided (monotonic seconds).
        ended_at: When the ramp ended (monotonic seconds).
        reply: The final reply sent (``"SUCCESS"``, ``"FAILED"``, ``"OVERRIDDEN"``), or
            ``"cancelled"`` when the client cancelled the call during the ramp.
    """

    component_id: int
    power_w: float
    accepted_at: float
    ended_at: float
    reply: str


class _Stream:
    """One open telemetry stream: the newest reading it has not written yet, and its wake-up.

    Touched only on the loop's thread, except ``dropped``, which is set under the lock.
    """

    __slots__ = ("dropped", "latest", "wake")

    def __init__(self) -> None:
        self.latest: Telemetry | None = None
        self.dropped = False
        self.wake = asyncio.Event()

    def offer(self, telemetry: Telemetry) -> None:
        self.latest = telemetry
        self.wake.set()


class _Handler:
    """The simulator as one version's servicer sees it (:class:`~.adapter.SimHandler`)."""

    def __init__(self, sim: Simulator, api: str) -> None:
        self._sim = sim
        self._api = api

    def components(self) -> Sequence[tuple[int, Component]]:
        self._sim._reachable()
        return self._sim._components

    def connections(self) -> Sequence[tuple[int, int]]:
        self._sim._reachable()
        return self._sim._connections

    async def set_power(
        self, component_id: int, power_w: float, lifetime_s: int | None
    ) -> SetPowerOutcome:
        self._sim._reachable()
        return await self._sim._set_power(self._api, component_id, power_w, lifetime_s)

    async def set_reactive_power(
        self, component_id: int, power_var: float, lifetime_s: int | None
    ) -> SetPowerOutcome:
        self._sim._reachable()
        return self._sim._set_reactive_power(component_id, power_var, lifetime_s)

    def telemetry(self, component_id: int) -> AsyncIterator[Telemetry]:
        self._sim._reachable()
        return self._sim._telemetry(component_id)

    def microgrid(self) -> MicrogridInfo:
        self._sim._reachable()
        return self._sim._microgrid

    def sensors(self) -> Sequence[int]:
        self._sim._reachable()
        return ()  # the simulated microgrid has none

    def add_bounds(
        self,
        component_id: int,
        metric: str,
        ranges: Sequence[Range],
        lifetime_s: int | None,
        token: str | None,
    ) -> float:
        self._sim._reachable()
        return self._sim._add_bounds(component_id, metric, ranges, lifetime_s, token)

    def clear_bounds(self, component_id: int, metric: str, token: str) -> None:
        self._sim._reachable()
        self._sim._clear_bounds(component_id, metric, token)

    def control(self, component_id: int, action: str) -> None:
        self._sim._reachable()
        self._sim._control(component_id, action)


class Simulator:
    """A simulated microgrid on the ``Microgrid`` API, with a thread-safe API for tests.

    ``with Simulator(scenario) as sim:`` serves in a thread of its own until the block ends;
    :meth:`serve_until_signal` serves in the calling thread instead. The query and fault
    methods may be called from any thread.

    Args:
        scenario: What is simulated.
        telemetry_hz: Telemetry messages per second per stream; ``None`` for the scenario's.
        port: TCP port on 127.0.0.1; 0 picks a free one (see :attr:`address`).
        lifetime_scale: A setpoint expires after its lifetime × this many real seconds (a test
            knob: 0.01 makes a 10 s lifetime run out in 0.1 s). ``valid_until`` in responses
            stays unscaled.
        record_maxlen: Events :meth:`record` keeps per inverter (``None``: the default of
            :class:`~distributord.sim.record.Recorder`).
        server_options: gRPC server options over the simulator's own (a test knob: a real
            Microgrid API server may keep grpc's defaults, such as 1,000 pending calls).
        apis: The versions served, a subset of :data:`API_VERSIONS` (all by default); the
            others answer ``UNIMPLEMENTED``.

    Raises:
        ValueError: A bad ``telemetry_hz``, or ``apis`` empty or naming an unknown version.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        telemetry_hz: float | None = None,
        port: int = 0,
        lifetime_scale: float = 1.0,
        server_options: Mapping[str, int | str] | None = None,
        apis: Iterable[str] = DEFAULT_APIS,
        record_maxlen: int | None = None,
    ) -> None:
        hz = scenario.telemetry_hz if telemetry_hz is None else telemetry_hz
        if not 0.0 < hz <= MAX_TELEMETRY_HZ:
            raise ValueError(f"telemetry_hz must be in (0, {MAX_TELEMETRY_HZ:g}], got {hz}")
        if isinstance(apis, str):  # "v1" would otherwise be the versions "v" and "1"
            apis = (apis,)
        wanted = set(apis)
        unknown = sorted(wanted - set(API_VERSIONS))
        if unknown:
            raise ValueError(
                f"unknown Microgrid API versions {unknown}; known: {', '.join(API_VERSIONS)}"
            )
        if not wanted:
            raise ValueError(f"apis must name one or more of {', '.join(API_VERSIONS)}")
        self.apis = tuple(api for api in API_VERSIONS if api in wanted)
        """The versions served, in :data:`API_VERSIONS`' order."""
        self._adapters = [adapter(api) for api in self.apis]
        self.scenario = scenario
        self.telemetry_hz = hz
        self.battery_ids = tuple(b.id for b in scenario.batteries)
        self.inverter_ids = tuple(i.id for i in scenario.inverters)
        self.pass_through_ids = tuple(cid for cid, _, _ in scenario.pass_through())
        self.meter_ids = tuple(scenario.meters())
        """Each inverter's own meter (the site meter, id 2, is not among them)."""
        self._microgrid = _microgrid_info(scenario)
        self._components = tuple(scenario.components())
        self._connections = tuple(scenario.connections())
        self._categories = {cid: component.category for cid, component in self._components}
        # What each pass-through component and each inverter's own meter measures: its inverter.
        self._lines = {
            **{cid: inverter for cid, _, inverter in scenario.pass_through()},
            **scenario.meters(),
        }
        self._port = port
        self._server_options = {**dict(_SERVER_OPTIONS), **(server_options or {})}
        self._changed = threading.Condition(threading.RLock())
        # Guarded by _changed:
        self._world = World(
            scenario,
            now=time.monotonic(),
            lifetime_scale=lifetime_scale,
            record_maxlen=record_maxlen,
        )
        self._faults = {
            cid: scenario.faults.get(cid, _NO_FAULTS)
            for cid in (*self.battery_ids, *self.inverter_ids)
        }
        self._commands: collections.deque[CommandRecord] = collections.deque(maxlen=MAX_RECORDS)
        self._pending: collections.Counter[int] = collections.Counter()
        # Per inverter, the ramp under way (set when a newer accepted command overrides it).
        self._ramping: dict[int, asyncio.Event] = {}
        self._ramps: collections.deque[RampRecord] = collections.deque(maxlen=MAX_RECORDS)
        self._streams: dict[int, set[_Stream]] = {cid: set() for cid in self._categories}
        self._rewrites: dict[int, ReadingRewrite] = {}
        self._down = False  # a simulated outage (:meth:`outage`)
        self._message_rewrite: MessageRewrite | None = None  # read without the lock: one load
        # Set once serving (before __enter__ returns):
        self._bound_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    # --- serving ----------------------------------------------------------------------------

    def __enter__(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        serving = threading.Event()

        def main() -> None:
            try:
                asyncio.run(self._serve(serving.set))
            except BaseException as error:  # handed to the thread that started us
                self._failure = error
            finally:
                serving.set()

        self._thread = threading.Thread(target=main, name="distributord-sim", daemon=True)
        self._thread.start()
        serving.wait()
        if self._failure is not None:
            self._thread.join()
            self._thread = None
            raise self._failure
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed on its own (a crash)
                self._loop.call_soon_threadsafe(self._stop.set)
        thread.join()
        if self._failure is not None and exc is None:
            raise self._failure

    def serve_until_signal(self, serving: Callable[[Simulator], None]) -> None:
        """Serve in the calling (main) thread until SIGINT or SIGTERM.

        Args:
            serving: Called once the server is accepting calls.
        """

        async def main() -> None:
            def on_ready() -> None:
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    assert self._stop is not None
                    loop.add_signal_handler(signum, self._stop.set)
                serving(self)

            await self._serve(on_ready)

        asyncio.run(main())

    async def _serve(self, serving: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = grpc.aio.server(
            options=list(self._server_options.items()),
            interceptors=[_RewriteInterceptor(self, {a.service: a.name for a in self._adapters})],
        )
        for version in self._adapters:
            add_servicer(version, _Handler(self, version.name), server)
        try:
            self._bound_port = server.add_insecure_port(f"{HOST}:{self._port}")
        except RuntimeError as error:
            raise OSError(f"cannot listen on {HOST}:{self._port}: {error}") from None
        await server.start()
        ticker = asyncio.create_task(self._tick_forever())
        try:
            serving()
            await self._stop.wait()
        finally:
            ticker.cancel()
            # No grace: pending calls (hanging commands, streams) are cancelled at once.
            await server.stop(None)
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the port actually bound."""
        if self._bound_port is None:
            raise RuntimeError("the simulator is not serving")
        return f"{HOST}:{self._bound_port}"

    # --- the test API -----------------------------------------------------------------------

    def inverter_of(self, battery_id: int) -> int:
        """The inverter that feeds a battery (of a 1:1 pair; :meth:`inverters_of` for any).

        Raises:
            KeyError: No such battery.
            LookupError: The battery has no inverter, or several.
        """
        inverters = self.inverters_of(battery_id)
        if len(inverters) != 1:
            raise LookupError(f"battery {battery_id} has {len(inverters)} inverters: {inverters}")
        return inverters[0]

    def inverters_of(self, battery_id: int) -> tuple[int, ...]:
        """The inverters that feed a battery, in the scenario's order (several: a shared bus).

        Raises:
            KeyError: No such battery.
        """
        if battery_id not in self.battery_ids:
            raise KeyError(f"no battery {battery_id}")
        return tuple(i.id for i in self.scenario.inverters if battery_id in i.batteries)

    def limit_sums(self) -> dict[str, float]:
        """Each limit's name to the sum of the power its inverters hold now, W.

        Within every limit: the simulator enforces them (``sim.world``); what commands would
        have done beyond them is in :meth:`record` (``violations``, ``limit_violations``).
        """
        with self._changed:
            self._advance()
            return self._world.limit_sums()

    def faults(self, component_id: int) -> Faults:
        """A battery's or inverter's faults now."""
        with self._changed:
            return self._faults_of(component_id)

    def set_fault(self, component_id: int, **fields: Any) -> None:
        """Change some of a component's faults (the fields of :class:`Faults`).

        Command faults act on the commands that arrive from then on: ``set_fault(2001,
        command_latencies_s=[20, 0])`` makes the next command to 2001 take 20 s and the one
        after answer at once (``math.inf``: hang until cancelled); ``command_latency_s``
        applies again after them.

        Raises:
            KeyError: No such battery or inverter.
            TypeError: A field that :class:`Faults` does not have.
            ScenarioError: A value out of range.
        """
        with self._changed:
            self._faults[component_id] = attrs.evolve(self._faults_of(component_id), **fields)
            logger.info("faults of %d: %s", component_id, self._faults[component_id])
            self._changed.notify_all()

    def clear_faults(self, component_id: int | None = None) -> None:
        """Remove one component's faults, or everyone's."""
        with self._changed:
            for cid in self._faults if component_id is None else (component_id,):
                self._faults_of(cid)  # KeyError for an unknown component
                self._faults[cid] = _NO_FAULTS
            self._changed.notify_all()

    def drop_streams(self, component_id: int) -> None:
        """End every open stream of a component now, with ``UNAVAILABLE``.

        Streams opened afterwards work.

        Raises:
            KeyError: No such component.
        """
        with self._changed:
            streams = tuple(self._streams_of(component_id))
            for stream in streams:
                stream.dropped = True
        if streams and self._loop is not None:
            self._loop.call_soon_threadsafe(_wake, streams)

    def outage(self, down: bool = True) -> None:
        """Make the microgrid unreachable (``down``), or reachable again.

        While it is down every open stream ends with ``UNAVAILABLE`` and every call (streams,
        commands, the component graph) fails with it, as a site whose API cannot be reached;
        the world goes on (setpoints run out at their ``valid_until``). It comes back with its
        state, as a site after a network outage.
        """
        with self._changed:
            self._down = down
            streams = tuple(s for each in self._streams.values() for s in each) if down else ()
            for stream in streams:
                stream.dropped = True
            self._changed.notify_all()
        if streams and self._loop is not None:
            self._loop.call_soon_threadsafe(_wake, streams)

    def _reachable(self) -> None:
        """Raise the outage's ``UNAVAILABLE`` while the microgrid is down (:meth:`outage`)."""
        if self._down:
            raise SimAbort("UNAVAILABLE", "the microgrid is unreachable (simulated outage)")

    def rewrite_readings(self, component_id: int, rewrite: ReadingRewrite | None) -> None:
        """Send ``rewrite(reading)`` instead of each reading of a component (``None``: stop).

        A test hook for hostile telemetry: the function gets the version-neutral reading the
        world made (faults applied) and returns what is sent, on every stream of the component,
        from the next tick (and on streams opened later) until it is removed. It may return
        anything a :class:`~distributord.api.adapter.Telemetry` can hold: values no battery
        has (1e38, inf, nan), inverted bounds, timestamps outside years 1..9999, another
        component's id, ``None`` everywhere (a message with no samples). It runs on the
        simulator's thread with the lock held: keep it quick, and let it not raise.

        Raises:
            KeyError: No such component.
        """
        with self._changed:
            self._streams_of(component_id)  # KeyError for an unknown component
            if rewrite is None:
                self._rewrites.pop(component_id, None)
            else:
                self._rewrites[component_id] = rewrite
            self._changed.notify_all()

    def rewrite_messages(self, rewrite: MessageRewrite | None) -> None:
        """Send ``rewrite(version, response)`` instead of each server-streaming response.

        A test hook for what a neutral reading cannot express (enum numbers no version
        defines, fields a version has and the others lack). It gets every response of every
        server-streaming call (telemetry, and v1alpha18/19's set-power replies) of every
        served version, already encoded, with the version's name (``"v1"``, ...), and returns
        the message to serialize: the same one, or a changed copy (never change the one
        given: the adapters share it between streams). ``None`` stops. It runs on the
        simulator's loop; let it not raise.
        """
        self._message_rewrite = rewrite

    def commands(self) -> list[CommandRecord]:
        """The commands received so far, oldest first (a copy; the last :data:`MAX_RECORDS`)."""
        with self._changed:
            return list(self._commands)

    def ramps(self) -> list[RampRecord]:
        """The ramps that ended so far, oldest first (a copy; the last :data:`MAX_RECORDS`)."""
        with self._changed:
            return list(self._ramps)

    def ramping(self, component_id: int) -> bool:
        """Whether a command to the inverter is ramping now (accepted, no final reply yet)."""
        with self._changed:
            return component_id in self._ramping

    def record(self) -> Record:
        """What every inverter was commanded and held up to now, on the simulator's clock.

        A frozen snapshot (see :mod:`distributord.sim.record`): per inverter, each command once
        decided (applied, rejected, failed by a fault, accepted and not applied, cancelled),
        each change of the power held, each expiry; with helpers for lapses and the total
        held by a set of inverters over time. Its times are ``time.monotonic()`` of this
        process, the clock a test reads too.
        """
        with self._changed:
            self._advance()
            return self._world.snapshot_record()

    def now(self) -> float:
        """The simulator's clock: ``time.monotonic()`` (what :meth:`record` times are in)."""
        return time.monotonic()

    def pending_commands(self, component_id: int | None = None) -> int:
        """How many commands (to one component, or to any) are being handled now.

        A test waits for this before cancelling a hanging command: a call the server never
        received cannot be recorded as cancelled.
        """
        with self._changed:
            if component_id is None:
                return self._pending.total()
            return self._pending[component_id]

    def open_streams(self, component_id: int) -> int:
        """How many telemetry streams of a component are open."""
        with self._changed:
            return len(self._streams_of(component_id))

    def setpoint(self, inverter_id: int) -> float:
        """The power an inverter applies now, W (0 when it has no setpoint or it expired).

        A hybrid inverter's battery power, without its PV's production (its AC power is that
        less the production); a PV inverter's production (its AC power).
        """
        with self._changed:
            self._advance()
            return self._world.inverter_power(inverter_id, with_pv=False)

    def reactive_setpoint(self, inverter_id: int) -> float:
        """The reactive power an inverter holds now, var (0 when none or expired).

        Its setpoint, curtailed where its apparent-power limit leaves less beside its active
        power (``sim.world``): what its telemetry reports.

        Raises:
            KeyError: No such inverter.
        """
        with self._changed:
            self._advance()
            return self._world.reactive_power(inverter_id)

    def soc(self, battery_id: int) -> float:
        """A battery's state of charge now, %."""
        with self._changed:
            self._advance()
            return self._world.soc(battery_id)

    def allowed_ranges(self, inverter_id: int) -> tuple[tuple[float, float], ...]:
        """The power ranges an inverter allows now, its own and added bounds', W.

        Empty when they have nothing in common (0 W is allowed even then); see
        :meth:`~distributord.sim.world.World.allowed_ranges`.
        """
        with self._changed:
            self._advance()
            return self._world.allowed_ranges(inverter_id)

    def add_bounds(
        self,
        inverter_id: int,
        ranges: Sequence[Range],
        lifetime_s: int | None = None,
        token: str | None = None,
    ) -> float:
        """Add bounds to an inverter's AC active power, as a client's request would.

        Args:
            inverter_id: The inverter.
            ranges: The inclusion ranges, W (``None``: an open end).
            lifetime_s: How long they hold, 5..900 s (× the lifetime scale); default 5 s.
            token: Replaces the bounds added under the same token.

        Returns:
            Until when they hold, Unix time (unscaled, as the API's reply says).

        Raises:
            ValueError: Refused (the message starts with the gRPC status code's name).
        """
        try:
            return self._add_bounds(inverter_id, "ac_power", ranges, lifetime_s, token)
        except SimAbort as error:
            raise ValueError(str(error)) from None

    def control(self, component_id: int, action: str) -> None:
        """Switch an inverter or a battery as a client's call would.

        ``action``: ``"start"``, ``"standby"``, ``"stop"``, or ``"ack"`` (its error).

        Raises:
            ValueError: Refused (the message starts with the gRPC status code's name).
        """
        try:
            self._control(component_id, action)
        except SimAbort as error:
            raise ValueError(str(error)) from None

    def added_bounds(self, inverter_id: int) -> int:
        """How many added bounds hold on an inverter now."""
        with self._changed:
            self._advance()
            return len(self._world.added_bounds(inverter_id))

    def wait_for(self, predicate: Callable[[Simulator], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds, re-checking after every state change.

        Args:
            predicate: Called with the lock held; it may call this simulator's methods.
            timeout: Give up after this many seconds.

        Returns:
            Whether the predicate held (``False``: the timeout ran out first).
        """
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    # --- internals (the lock held where noted) ------------------------------------------------

    def _faults_of(self, component_id: int) -> Faults:
        try:
            return self._faults[component_id]
        except KeyError:
            raise KeyError(f"no battery or inverter {component_id}") from None

    def _streams_of(self, component_id: int) -> set[_Stream]:
        try:
            return self._streams[component_id]
        except KeyError:
            raise KeyError(f"no component {component_id}") from None

    def _advance(self) -> None:
        """Bring the world to now (lock held)."""
        self._world.advance(time.monotonic())

    def _reading(self, component_id: int, sampled_at: float) -> Telemetry:
        """A component's reading now, version-neutral (lock held, world advanced)."""
        faults = self._faults.get(component_id, _NO_FAULTS)
        rewrite = self._rewrites.get(component_id)
        reading: Reading
        line = self._lines.get(component_id)
        match self._categories[component_id]:
            case Category.BATTERY:
                reading = self._world.battery_reading(component_id, faults)
            case Category.INVERTER:
                reading = self._world.inverter_reading(component_id, faults)
            case _ if line is not None:  # a pass-through component, an inverter's own meter
                reading = self._world.line_reading(line)
            case _:  # the grid connection and the site meter
                reading = self._world.meter_reading()
        neutral = _neutral(component_id, reading, sampled_at + faults.clock_offset_s)
        return neutral if rewrite is None else rewrite(neutral)

    def _add_bounds(
        self,
        component_id: int,
        metric: str,
        ranges: Sequence[Range],
        lifetime_s: int | None,
        token: str | None,
    ) -> float:
        """Add bounds (on the loop's thread): until when they hold, Unix time (unscaled)."""
        with self._changed:
            result = self._world.add_bounds(
                component_id,
                _WORLD_METRICS.get(metric, metric),
                ranges,
                lifetime_s,
                token,
                now=time.monotonic(),
                metric_name=_METRIC_NAMES.get(metric, metric),
            )
            self._changed.notify_all()
        if isinstance(result, Rejected):
            raise SimAbort(result.code, result.details)
        if self._loop is not None:  # wake waiters when they expire, not at the next tick
            self._loop.call_soon_threadsafe(self._expire_at, result.until)
        logger.info(
            "bounds added to %d: %s for %d s", component_id, list(ranges), result.lifetime_s
        )
        return time.time() + result.lifetime_s

    def _expire_at(self, until: float) -> None:
        """Advance the world (and wake waiters) at ``until`` (on the loop's thread)."""
        delay = max(0.0, until - time.monotonic()) + _EXPIRY_MARGIN_S
        asyncio.get_running_loop().call_later(delay, self._on_expiry)

    def _clear_bounds(self, component_id: int, metric: str, token: str) -> None:
        with self._changed:
            refused = self._world.clear_bounds(
                component_id, _WORLD_METRICS.get(metric, metric), token, now=time.monotonic()
            )
            self._changed.notify_all()
        if refused is not None:
            raise SimAbort(refused.code, refused.details)

    def _control(self, component_id: int, action: str) -> None:
        """Start, put in standby, stop a component or acknowledge its error (any thread)."""
        with self._changed:
            now = time.monotonic()
            if action == "ack":
                faults = self._faults.get(component_id, _NO_FAULTS)
                refused = self._world.acknowledge(component_id, error=faults.error_state, now=now)
                if refused is None and faults.error_state:
                    self._faults[component_id] = attrs.evolve(faults, error_state=False)
            else:
                refused = self._world.control(component_id, action, now=now)
            self._changed.notify_all()
        if refused is not None:
            raise SimAbort(refused.code, refused.details)
        logger.info("component %d: %s", component_id, action)

    def mode(self, component_id: int) -> str:
        """How far an inverter or a battery is switched on (:class:`~.world.Mode`'s value).

        Raises:
            KeyError: Not an inverter or a battery.
        """
        with self._changed:
            return self._world.mode(component_id).value

    def _on_expiry(self) -> None:
        with self._changed:
            self._advance()
            self._changed.notify_all()

    async def _tick_forever(self) -> NoReturn:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.telemetry_hz
        deadline = loop.time()
        while True:
            deadline += period
            delay = deadline - loop.time()
            if delay < 0:  # fell behind (a loaded machine): skip the missed ticks, no burst
                deadline, delay = loop.time(), 0.0
            await asyncio.sleep(delay)
            self._tick()

    def _tick(self) -> None:
        sampled_at = time.time()
        batch: list[tuple[Telemetry, tuple[_Stream, ...]]] = []
        with self._changed:
            self._advance()
            for cid, streams in self._streams.items():
                if streams and not self._faults.get(cid, _NO_FAULTS).stream_silence:
                    batch.append((self._reading(cid, sampled_at), tuple(streams)))
            self._changed.notify_all()
        for reading, receivers in batch:
            for stream in receivers:
                stream.offer(reading)  # one object for all: the adapters may encode it once

    def _record(self, record: CommandRecord) -> None:
        with self._changed:
            self._commands.append(record)
            self._pending[record.component_id] -= 1
            self._changed.notify_all()

    async def _set_power(
        self, api: str, component_id: int, power_w: float, lifetime_s: int | None
    ) -> SetPowerOutcome:
        received_at = time.monotonic()
        outcome = "UNKNOWN"  # what is recorded if this handler fails unexpectedly
        recorded_later = False
        decided = False  # whether the world's record has this command's fate yet
        with self._changed:
            self._pending[component_id] += 1
            faults = self._faults.get(component_id, _NO_FAULTS)
            latency = faults.command_latency_s
            if faults.command_latencies_s:  # the next command's own latency: take it
                latency = faults.command_latencies_s[0]
                self._faults[component_id] = attrs.evolve(
                    faults, command_latencies_s=faults.command_latencies_s[1:]
                )
            self._changed.notify_all()

        def record(outcome: str) -> None:
            self._record(
                CommandRecord(
                    component_id=component_id,
                    power_w=power_w,
                    lifetime_s=lifetime_s,
                    received_at=received_at,
                    finished_at=time.monotonic(),
                    outcome=outcome,
                    api=api,
                )
            )

        def decide(outcome: Outcome, code: str | None = None) -> None:
            # A fate the world does not judge (a cancel, an injected error): into its record.
            with self._changed:
                self._world.record_command(
                    component_id,
                    power_w,
                    lifetime_s,
                    now=time.monotonic(),
                    outcome=outcome,
                    code=code,
                    received_at=received_at,
                    api=api,
                )
                self._changed.notify_all()

        try:
            if latency == math.inf or faults.command_hang:
                if 0 < latency < math.inf:
                    await asyncio.sleep(latency)
                await asyncio.get_running_loop().create_future()  # until the call is cancelled
            if latency > 0:
                await asyncio.sleep(latency)
            if faults.command_error is not None:
                outcome = faults.command_error
                rejecting = outcome in REJECTING_CODES
                decided = True
                decide(Outcome.REJECTED if rejecting else Outcome.ERROR, outcome)
                if not rejecting:
                    # A server failure, not a judgement of the request: a gRPC status in every
                    # version (v1alpha18/19 would otherwise say REJECTED, "invalid input").
                    raise SimAbort(outcome, "injected fault")
                return SetPowerOutcome(valid_until=None, code=outcome, details="injected fault")
            reply = faults.final_reply if api in REPLY_STREAM_VERSIONS else None
            final, applied = REPLY_FAULTS[reply or "SUCCESS"]
            result: Accepted | Rejected
            with self._changed:
                # Judged, applied (or not) and recorded in one step, at the moment it is handled.
                result = self._world.command(
                    component_id,
                    power_w,
                    lifetime_s,
                    now=time.monotonic(),
                    apply=applied,
                    received_at=received_at,
                    api=api,
                    final=reply,
                )
                # A ramping inverter's applied power reaches the setpoint this much later.
                settle_s = 0.0
                if isinstance(result, Accepted):
                    settle_s = self._world.settles_at(component_id) - self._world.time
                decided = True
                self._changed.notify_all()
            if isinstance(result, Rejected):
                outcome = result.code
                logger.debug(
                    "command to %d refused: %s %s", component_id, result.code, result.details
                )
                return SetPowerOutcome(valid_until=None, code=result.code, details=result.details)
            if applied:
                delay = max(0.0, result.until - time.monotonic()) + _EXPIRY_MARGIN_S
                asyncio.get_running_loop().call_later(delay, self._on_expiry)
            ramp_s = faults.ramp_s if reply else 0.0
            if reply and applied and settle_s > 0.0:
                # The final reply once the ramp is done (a hair after: see _EXPIRY_MARGIN_S).
                ramp_s = max(ramp_s, settle_s + _EXPIRY_MARGIN_S)
            ramp = self._ramp(component_id, power_w, ramp_s, final)
            if final is FinalReply.NONE:
                # The servicer now waits for the client to cancel the call; record it then.
                task = asyncio.current_task()
                assert task is not None
                ended = "ok" if applied else "cancelled"
                task.add_done_callback(lambda _: record(ended))
                recorded_later = True
            else:
                outcome = "ok" if applied else final.value
            return SetPowerOutcome(
                valid_until=time.time() + result.lifetime_s,
                final=final,
                details="" if reply in {None, "SUCCESS"} else "injected fault",
                ramp=ramp,
            )
        except asyncio.CancelledError:
            outcome = "cancelled"
            if not decided:
                decide(Outcome.CANCELLED)
            raise
        finally:
            if not recorded_later:
                record(outcome)

    def _set_reactive_power(
        self, component_id: int, power_var: float, lifetime_s: int | None
    ) -> SetPowerOutcome:
        """A reactive-power command, decided at once (called on the loop's thread).

        Not in :meth:`commands` or :meth:`record` (those are the active power's, which the
        daemon sends); the command faults do not apply to it.
        """
        with self._changed:
            result = self._world.command_reactive(
                component_id, power_var, lifetime_s, now=time.monotonic()
            )
            self._changed.notify_all()
        if isinstance(result, Rejected):
            logger.debug(
                "reactive command to %d refused: %s %s", component_id, result.code, result.details
            )
            return SetPowerOutcome(valid_until=None, code=result.code, details=result.details)
        delay = max(0.0, result.until - time.monotonic()) + _EXPIRY_MARGIN_S
        asyncio.get_running_loop().call_later(delay, self._on_expiry)
        return SetPowerOutcome(valid_until=time.time() + result.lifetime_s)

    def _ramp(
        self, component_id: int, power_w: float, ramp_s: float, final: FinalReply
    ) -> Callable[[], Awaitable[FinalReply]] | None:
        """A command to ``component_id`` was accepted: the ramp before its final reply, if any.

        The ramp under way to that inverter (an older command) is overridden now, whether or
        not this one ramps. Called on the loop's thread.
        """
        accepted_at = time.monotonic()
        overridden = asyncio.Event()
        with self._changed:
            older = self._ramping.pop(component_id, None)
            if older is not None:
                older.set()
            ramps = ramp_s > 0 and final in RAMP_REPLIES
            if ramps:
                self._ramping[component_id] = overridden
            self._changed.notify_all()
        if not ramps:
            return None

        def ended(reply: str) -> None:
            with self._changed:
                if self._ramping.get(component_id) is overridden:
                    del self._ramping[component_id]
                self._ramps.append(
                    RampRecord(
                        component_id=component_id,
                        power_w=power_w,
                        accepted_at=accepted_at,
                        ended_at=time.monotonic(),
                        reply=reply,
                    )
                )
                self._changed.notify_all()

        async def ramp() -> FinalReply:
            try:
                await asyncio.wait_for(overridden.wait(), ramp_s)
            except TimeoutError:
                ended(final.value)
                return final
            except asyncio.CancelledError:
                ended("cancelled")
                raise
            ended(FinalReply.OVERRIDDEN.value)
            return FinalReply.OVERRIDDEN

        return ramp

    async def _telemetry(self, component_id: int) -> AsyncIterator[Telemetry]:
        if component_id not in self._streams:
            raise SimAbort("NOT_FOUND", f"no component {component_id}")
        stream = _Stream()
        first: Telemetry | None = None
        with self._changed:
            faults = self._faults.get(component_id, _NO_FAULTS)
            if not faults.refuse_streams:
                self._streams[component_id].add(stream)
                if not faults.stream_silence:
                    self._advance()
                    first = self._reading(component_id, time.time())
                self._changed.notify_all()
        if faults.refuse_streams:
            raise SimAbort("UNAVAILABLE", "stream refused (injected fault)")
        try:
            if first is not None:
                stream.offer(first)
            while True:
                await stream.wake.wait()
                stream.wake.clear()
                if stream.dropped:
                    raise SimAbort("UNAVAILABLE", "stream dropped (injected fault)")
                reading, stream.latest = stream.latest, None
                if reading is not None:
                    yield reading
        finally:
            with self._changed:
                self._streams[component_id].discard(stream)
                self._changed.notify_all()


class _RewriteInterceptor(grpc.aio.ServerInterceptor):
    """Passes server-streaming responses through :meth:`Simulator.rewrite_messages`' function.

    It swaps the response serializer of the simulator's own services' streaming methods; a
    response pays one check of the hook while none is set.
    """

    def __init__(self, sim: Simulator, versions: Mapping[str, str]) -> None:
        self._sim = sim
        self._versions = versions  # full service name -> version name

    async def intercept_service(
        self,
        continuation: Callable[[Any], Any],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        service = str(handler_call_details.method).lstrip("/").split("/", 1)[0]
        version = self._versions.get(service)
        if handler is None or version is None or not handler.response_streaming:
            return handler
        serialize = handler.response_serializer
        sim = self._sim

        def rewritten(response: Any) -> Any:
            rewrite = sim._message_rewrite
            return serialize(response if rewrite is None else rewrite(version, response))

        return handler._replace(response_serializer=rewritten)


_WORLD_METRICS = {"ac_power": BOUNDED_METRIC}
"""The adapters' names of metrics (``api.adapter.BOUNDS_METRICS``) as the world's."""

_METRIC_NAMES = {"ac_power": "AC active power", "dc_power": "DC power"}
"""How a refusal names the metrics the adapters name for us."""


def _microgrid_info(scenario: Scenario) -> MicrogridInfo:
    spec = scenario.microgrid
    return MicrogridInfo(
        id=spec.id,
        enterprise_id=spec.enterprise_id,
        name=spec.name,
        latitude=spec.latitude,
        longitude=spec.longitude,
        country_code=spec.country_code,
        delivery_area_code=spec.delivery_area_code,
        delivery_area_code_type=spec.delivery_area_code_type,
        status=spec.status,
        created_at=spec.created_at.timestamp(),
    )


def _wake(streams: Iterable[_Stream]) -> None:
    for stream in streams:
        stream.wake.set()


def _neutral(component_id: int, reading: Reading, sampled_at: float) -> Telemetry:
    if isinstance(reading, BatteryReading):
        return BatteryTelemetry(
            component_id=component_id,
            sampled_at=sampled_at,
            soc_pct=reading.soc_pct,
            soc_bounds=reading.soc_bounds,
            capacity_wh=reading.capacity_wh,
            power_w=reading.power_w,
            power_ranges=reading.power_ranges,
            states=reading.states,
            errors=reading.errors,
            dc_voltage_v=reading.dc_voltage_v,
            temperature_c=reading.temperature_c,
        )
    # The meter's, the grid's and a pass-through component's readings have an inverter's
    # shape: the AC side.
    return InverterTelemetry(
        component_id=component_id,
        sampled_at=sampled_at,
        active_power_w=reading.power_w,
        power_ranges=reading.power_ranges,
        states=reading.states,
        errors=reading.errors,
        reactive_power_var=reading.reactive_power_var,
        reactive_ranges=reading.reactive_ranges,
        apparent_ranges=reading.apparent_ranges,
        frequency_hz=reading.frequency_hz,
        voltage_v=reading.voltage_v,
        temperature_c=reading.temperature_c,
    )


# --- distributord sim ------------------------------------------------------------------------


def main(
    *,
    port: int | None,
    batteries: int | None,
    scenario: str | None,
    seed: int | None,
    api: str | None = None,
) -> int:
    """``distributord sim``: serve in the foreground until SIGINT or SIGTERM.

    Args:
        port: ``--port`` (default 50051).
        batteries: ``--batteries``: a uniform fleet of this many.
        scenario: ``--scenario``: a scenario file.
        seed: ``--seed``.
        api: ``--api``: the versions to serve, comma-separated (default all).

    Returns:
        The exit status: 0 after a signal, 2 for a bad scenario or flag, 1 if it cannot listen.
    """
    port = DEFAULT_PORT if port is None else port
    if not 0 <= port <= 65535:
        print(f"distributord sim: --port: must be 0..65535, got {port}", file=sys.stderr)
        return 2
    try:
        apis = DEFAULT_APIS if api is None else parse_apis(api)
    except ValueError as error:
        print(f"distributord sim: --api: {error}", file=sys.stderr)
        return 2
    try:
        data = Path(scenario).read_bytes() if scenario is not None else b""
        parsed = parse_scenario(
            data, source=scenario or "<default>", batteries=batteries, seed=seed
        )
    except OSError as error:
        print(f"distributord sim: cannot read {scenario}: {error.strerror}", file=sys.stderr)
        return 2
    except ScenarioError as error:
        print(f"distributord sim: {error}", file=sys.stderr)
        return 2
    sim = Simulator(parsed, port=port, apis=apis)
    try:
        _probe(port)
        sim.serve_until_signal(_announce)
    except OSError as error:
        print(f"distributord sim: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        pass
    print("distributord sim: stopped", file=sys.stderr)
    return 0


def _probe(port: int) -> None:
    """Fail with the OS's words if the port is taken (grpc's own message is a C-core log line).

    SO_REUSEADDR, as grpc sets it, so that only a listening socket makes the port busy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            raise OSError(f"cannot listen on {HOST}:{port}: {error.strerror}") from None


def _announce(sim: Simulator) -> None:
    scenario = sim.scenario
    lines = [
        f"distributord sim: serving the Microgrid API {', '.join(sim.apis)} on {sim.address}",
        f"  grid 1, meter 2, {scenario.telemetry_hz:g} Hz telemetry, speed x{scenario.speed:g}",
        f"  inverters {_spans(sim.inverter_ids)}",
        f"  batteries {_spans(sim.battery_ids)}",
    ]
    if sim.pass_through_ids:
        lines.append(f"  pass-through {_spans(sim.pass_through_ids)}")
    if sim.meter_ids:
        lines.append(f"  inverter meters {_spans(sim.meter_ids)}")
    lines.extend(
        f"  group: batteries {_spans(batteries)} on inverters {_spans(inverters)}"
        for batteries, inverters in scenario.groups()
        if len(batteries) > 1 or len(inverters) > 1
    )
    lines.extend(
        f"  limit {limit.name!r} over "
        f"{'every inverter' if limit.grid else 'inverters ' + _spans(limit.inverters)}: "
        f"charge {limit.max_charge_w:g} W, discharge {limit.max_discharge_w:g} W"
        for limit in scenario.limits
    )
    producing = [i for i in scenario.inverters if i.pv_power_w > 0]
    lines.extend(f"  PV of {i.type} inverter {i.id}: {i.pv_power_w:g} W" for i in producing)
    lines.extend(
        f"  faults of {cid}: {faults}"
        for cid, faults in sorted(scenario.faults.items())
        if faults != _NO_FAULTS
    )
    print("\n".join(lines), flush=True)


def _spans(ids: Iterable[int]) -> str:
    """``1001-1004, 1007``: a long fleet in one line."""
    spans: list[list[int]] = []
    for cid in sorted(ids):
        if spans and cid == spans[-1][1] + 1:
            spans[-1][1] = cid
        else:
            spans.append([cid, cid])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans) or "none"
