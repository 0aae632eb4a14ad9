"""The simulator's IO shell: a grpc.aio ``Microgrid`` server around a :class:`~.world.World`.

Theory of operation
-------------------
One asyncio loop serves gRPC; it runs in a thread of its own (:class:`Simulator` as a context
manager, for tests) or in the main thread (:meth:`Simulator.serve_until_signal`, for
``distributord sim``). All simulated state (the world, the faults, the command record, the set
of open streams) lives behind one lock, the :class:`threading.Condition` that
:meth:`Simulator.wait_for` waits on; every change made under it ends with ``notify_all``, so a
test thread sees each state change without polling. Time is ``time.monotonic()``, read under
the lock and passed into the world, so the world only ever moves forward.

* **Telemetry is one ticker, not a sleep per stream.** Every ``1/telemetry_hz`` seconds one task
  advances the world, builds each streamed component's message once, and offers it to all of
  that component's open streams. A stream keeps only the newest message it has not written yet
  (a slot, not a queue), so a slow client gets the latest sample, never a backlog.
* **Setpoints expire on a timer.** An accepted command schedules a wake-up at its expiry so the
  world drops the setpoint (and waiters hear of it) on time, not at the next tick.
* **Commands are recorded whatever happens**, including when the client cancels the call while
  it hangs: grpc.aio cancels the handler's task, the ``CancelledError`` is recorded as
  ``"cancelled"`` and re-raised.
* **Faults are read when a command or a stream arrives**; the telemetry faults are applied by the
  world's readings at every tick.

The v1 messages are built and parsed by :mod:`distributord.api.v1` only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import attrs
import grpc

from distributord.api import v1
from distributord.core.errors import ScenarioError
from distributord.core.topology import Category
from distributord.sim.scenario import MAX_TELEMETRY_HZ, Faults, Scenario, parse_scenario
from distributord.sim.world import Accepted, BatteryReading, InverterReading, Rejected, World

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
"""The simulator serves on loopback only: it is a test and demo fixture, not a site."""

DEFAULT_PORT = 50051
"""The conventional Microgrid API port, and ``microgrid.address``'s default in the config."""

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


@attrs.frozen(kw_only=True)
class CommandRecord:
    """One ``SetComponentPowerActive`` call, as the simulator saw it.

    Attributes:
        component_id: The component commanded.
        power_w: The requested power, W.
        lifetime_s: The request's lifetime, s; ``None`` when the request left it out.
        received_at: When the call arrived (monotonic seconds).
        finished_at: When it was answered or cancelled (monotonic seconds).
        outcome: ``"ok"``, ``"cancelled"`` (the client cancelled it, or its deadline ran out,
            while it was pending; or the simulator stopped), or the gRPC status code's name it
            failed with (``"OUT_OF_RANGE"``, ...).
    """

    component_id: int
    power_w: float
    lifetime_s: int | None
    received_at: float
    finished_at: float
    outcome: str


class _Stream:
    """One open telemetry stream: the newest message it has not written yet, and its wake-up.

    Touched only on the loop's thread, except ``dropped``, which is set under the lock.
    """

    __slots__ = ("dropped", "latest", "wake")

    def __init__(self) -> None:
        self.latest: v1.StreamResponse | None = None
        self.dropped = False
        self.wake = asyncio.Event()

    def offer(self, message: v1.StreamResponse) -> None:
        self.latest = message
        self.wake.set()


class Simulator:
    """A simulated microgrid on the v1 ``Microgrid`` API, with a thread-safe API for tests.

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
        server_options: gRPC server options over the simulator's own (a test knob: a real
            Microgrid API server may keep grpc's defaults, such as 1,000 pending calls).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        telemetry_hz: float | None = None,
        port: int = 0,
        lifetime_scale: float = 1.0,
        server_options: Mapping[str, int | str] | None = None,
    ) -> None:
        hz = scenario.telemetry_hz if telemetry_hz is None else telemetry_hz
        if not 0.0 < hz <= MAX_TELEMETRY_HZ:
            raise ValueError(f"telemetry_hz must be in (0, {MAX_TELEMETRY_HZ:g}], got {hz}")
        self.scenario = scenario
        self.telemetry_hz = hz
        self.battery_ids = tuple(b.id for b in scenario.batteries)
        self.inverter_ids = tuple(i.id for i in scenario.inverters)
        self._categories = dict(scenario.components())
        self._port = port
        self._server_options = {**dict(_SERVER_OPTIONS), **(server_options or {})}
        self._changed = threading.Condition(threading.RLock())
        # Guarded by _changed:
        self._world = World(scenario, now=time.monotonic(), lifetime_scale=lifetime_scale)
        self._faults = {
            cid: scenario.faults.get(cid, _NO_FAULTS)
            for cid in (*self.battery_ids, *self.inverter_ids)
        }
        self._commands: collections.deque[CommandRecord] = collections.deque(maxlen=MAX_RECORDS)
        self._pending: collections.Counter[int] = collections.Counter()
        self._streams: dict[int, set[_Stream]] = {cid: set() for cid in self._categories}
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
        server = grpc.aio.server(options=list(self._server_options.items()))
        v1.add_servicer(_Servicer(self), server)
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
        """The inverter that feeds a battery.

        Raises:
            KeyError: No such battery.
            LookupError: The battery has no inverter, or several.
        """
        if battery_id not in self.battery_ids:
            raise KeyError(f"no battery {battery_id}")
        inverters = [i.id for i in self.scenario.inverters if battery_id in i.batteries]
        if len(inverters) != 1:
            raise LookupError(f"battery {battery_id} has {len(inverters)} inverters: {inverters}")
        return inverters[0]

    def faults(self, component_id: int) -> Faults:
        """A battery's or inverter's faults now."""
        with self._changed:
            return self._faults_of(component_id)

    def set_fault(self, component_id: int, **fields: Any) -> None:
        """Change some of a component's faults (the fields of :class:`Faults`).

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

    def commands(self) -> list[CommandRecord]:
        """The commands received so far, oldest first (a copy; the last :data:`MAX_RECORDS`)."""
        with self._changed:
            return list(self._commands)

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
        """The power an inverter applies now, W (0 when it has no setpoint or it expired)."""
        with self._changed:
            self._advance()
            return self._world.inverter_power(inverter_id)

    def soc(self, battery_id: int) -> float:
        """A battery's state of charge now, %."""
        with self._changed:
            self._advance()
            return self._world.soc(battery_id)

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

    def _reading(self, component_id: int) -> Reading:
        """A component's reading now (lock held, world advanced)."""
        faults = self._faults.get(component_id, _NO_FAULTS)
        match self._categories[component_id]:
            case Category.BATTERY:
                return self._world.battery_reading(component_id, faults)
            case Category.INVERTER:
                return self._world.inverter_reading(component_id, faults)
            case _:
                return self._world.meter_reading()

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
        batch: list[tuple[int, Reading, tuple[_Stream, ...]]] = []
        with self._changed:
            self._advance()
            for cid, streams in self._streams.items():
                if streams and not self._faults.get(cid, _NO_FAULTS).stream_silence:
                    batch.append((cid, self._reading(cid), tuple(streams)))
            self._changed.notify_all()
        # Encoding happens outside the lock: it is the bulk of a tick's work.
        for cid, reading, receivers in batch:
            message = _encode(cid, reading, sampled_at)
            for stream in receivers:
                stream.offer(message)

    def _record(self, record: CommandRecord) -> None:
        with self._changed:
            self._commands.append(record)
            self._pending[record.component_id] -= 1
            self._changed.notify_all()

    async def _set_power(self, request: v1.SetPowerRequest, context: Any) -> v1.SetPowerResponse:
        received_at = time.monotonic()
        component_id, power_w, lifetime_s = v1.parse_set_power(request)
        outcome = "UNKNOWN"  # what grpc answers if this handler fails unexpectedly
        with self._changed:
            self._pending[component_id] += 1
            faults = self._faults.get(component_id, _NO_FAULTS)
            self._changed.notify_all()
        try:
            if faults.command_latency_s > 0:
                await asyncio.sleep(faults.command_latency_s)
            if faults.command_hang:
                await asyncio.get_running_loop().create_future()  # until the call is cancelled
            result: Accepted | Rejected
            if faults.command_error is not None:
                result = Rejected(code=faults.command_error, details="injected fault")
            else:
                with self._changed:
                    result = self._world.command(
                        component_id, power_w, lifetime_s, now=time.monotonic()
                    )
                if isinstance(result, Accepted):
                    delay = max(0.0, result.until - time.monotonic()) + _EXPIRY_MARGIN_S
                    asyncio.get_running_loop().call_later(delay, self._on_expiry)
            outcome = "ok" if isinstance(result, Accepted) else result.code
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._record(
                CommandRecord(
                    component_id=component_id,
                    power_w=power_w,
                    lifetime_s=lifetime_s,
                    received_at=received_at,
                    finished_at=time.monotonic(),
                    outcome=outcome,
                )
            )
        if isinstance(result, Rejected):
            logger.debug("command to %d refused: %s %s", component_id, result.code, result.details)
            await _abort(context, result.code, result.details)
        return v1.set_power_response(time.time() + result.lifetime_s)

    async def _stream(self, request: v1.StreamRequest, context: Any) -> None:
        component_id = v1.parse_stream_request(request)
        if component_id not in self._streams:
            await _abort(context, "NOT_FOUND", f"no component {component_id}")
        stream = _Stream()
        first: Reading | None = None
        with self._changed:
            faults = self._faults.get(component_id, _NO_FAULTS)
            if not faults.refuse_streams:
                self._streams[component_id].add(stream)
                if not faults.stream_silence:
                    self._advance()
                    first = self._reading(component_id)
                self._changed.notify_all()
        if faults.refuse_streams:
            await _abort(context, "UNAVAILABLE", "stream refused (injected fault)")
        try:
            if first is not None:
                stream.offer(_encode(component_id, first, time.time()))
            while True:
                await stream.wake.wait()
                stream.wake.clear()
                if stream.dropped:
                    await _abort(context, "UNAVAILABLE", "stream dropped (injected fault)")
                message, stream.latest = stream.latest, None
                if message is not None:
                    await context.write(message)
        finally:
            with self._changed:
                self._streams[component_id].discard(stream)
                self._changed.notify_all()


async def _abort(context: Any, code: str, details: str) -> NoReturn:
    """End the call with a status code (by name); grpc.aio's ``abort`` raises to do so."""
    await context.abort(grpc.StatusCode[code], details)
    raise AssertionError("grpc.aio's abort returned")  # pragma: no cover


def _wake(streams: Iterable[_Stream]) -> None:
    for stream in streams:
        stream.wake.set()


def _encode(component_id: int, reading: Reading, sampled_at: float) -> v1.StreamResponse:
    if isinstance(reading, BatteryReading):
        return v1.battery_data(
            component_id,
            sampled_at=sampled_at,
            soc_pct=reading.soc_pct,
            soc_bounds=reading.soc_bounds,
            capacity_wh=reading.capacity_wh,
            power_w=reading.power_w,
            power_ranges=reading.power_ranges,
            states=reading.states,
            errors=reading.errors,
        )
    # The meter's and the grid's messages have the same shape as an inverter's: AC power.
    return v1.inverter_data(
        component_id,
        sampled_at=sampled_at,
        active_power_w=reading.power_w,
        power_ranges=reading.power_ranges,
        states=reading.states,
        errors=reading.errors,
    )


_ServicerBase: Any = v1.servicer_base()


class _Servicer(_ServicerBase):  # type: ignore[misc]  # the generated base class is untyped
    """The v1 ``Microgrid`` service; the other methods answer ``UNIMPLEMENTED`` (the base's)."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim

    # The method names are the service's (PascalCase, as in the .proto).
    async def ListComponents(self, request: Any, context: Any) -> v1.ComponentsResponse:  # noqa: N802
        return v1.components_response(self._sim.scenario.components())

    async def ListConnections(self, request: Any, context: Any) -> v1.ConnectionsResponse:  # noqa: N802
        return v1.connections_response(self._sim.scenario.connections())

    async def SetComponentPowerActive(  # noqa: N802
        self, request: v1.SetPowerRequest, context: Any
    ) -> v1.SetPowerResponse:
        return await self._sim._set_power(request, context)

    async def ReceiveComponentDataStream(  # noqa: N802
        self, request: v1.StreamRequest, context: Any
    ) -> None:
        await self._sim._stream(request, context)


# --- distributord sim ------------------------------------------------------------------------


def main(*, port: int | None, batteries: int | None, scenario: str | None, seed: int | None) -> int:
    """``distributord sim``: serve in the foreground until SIGINT or SIGTERM.

    Args:
        port: ``--port`` (default 50051).
        batteries: ``--batteries``: a uniform fleet of this many.
        scenario: ``--scenario``: a scenario file.
        seed: ``--seed``.

    Returns:
        The exit status: 0 after a signal, 2 for a bad scenario or flag, 1 if it cannot listen.
    """
    port = DEFAULT_PORT if port is None else port
    if not 0 <= port <= 65535:
        print(f"distributord sim: --port: must be 0..65535, got {port}", file=sys.stderr)
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
    sim = Simulator(parsed, port=port)
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
        f"distributord sim: serving the Microgrid API v1 on {sim.address}",
        f"  grid 1, meter 2, {scenario.telemetry_hz:g} Hz telemetry, speed x{scenario.speed:g}",
        f"  inverters {_spans(sim.inverter_ids)}",
        f"  batteries {_spans(sim.battery_ids)}",
    ]
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
