"""The daemon's connection to the Microgrid API: discovery, telemetry, commands.

Theory of operation
-------------------
One gRPC channel, hosted on the bridge's asyncio loop (``distributord.shell.bridge``);
everything the microgrid says is turned into distributord's own types by the adapter of the
API version spoken (``distributord.api.adapter``: ``api.v1``, ``api.v1alpha``) before it
reaches trio code, and gRPC status codes into ``distributord.core.errors``. Nothing here knows
a version's messages.

* **Negotiation**: the first discovery finds the version. With ``api="auto"`` it asks for the
  component graph in v1alpha18, then v1alpha19, then v1, moving on only when the server answers
  ``UNIMPLEMENTED``; a pinned version is the only one tried. The version that answers is kept
  (:attr:`MicrogridLink.version`) for everything after. A server that serves none of them is
  :class:`~distributord.core.errors.NoApiVersionError` ("no supported Microgrid API version
  at ADDRESS: tried …"), never "unreachable". When negotiating, a stream or command that gets
  ``UNIMPLEMENTED`` in the version spoken means the server changed (restarted with another
  version): the link says so once and negotiates again at the next stream or command.
* **Discovery** (:func:`discover`) asks for the component graph until the API answers,
  waiting between attempts with capped exponential backoff, and logs once per change of state
  (unreachable / reachable, or no version served), never once per attempt.
* **Telemetry** (:class:`Telemetry`): one trio task per
  component keeps a stream open, decodes each message into a snapshot and hands it to a
  :class:`TelemetrySink`. When the stream fails, ends, or stays silent longer than a bound, the
  task tells the sink about the gap, waits (backoff with jitter, 0.1 s doubling to 5 s, reset
  by a snapshot) and opens a new stream: ``OPENING → STREAMING → WAITING``
  (:class:`StreamState`). It never gives up and never raises. Silence is watched for every
  stream by one task (:class:`SilenceWatch`): a stream that keeps talking wakes no task at all,
  and a silent one is still dropped ``silence_s`` after its last message, to the tick.
* **Commands** go out as one batch (:meth:`MicrogridLink.set_active_powers`, and
  :meth:`MicrogridLink.set_reactive_powers` for reactive power, var: the same code with
  another power type, :class:`~distributord.api.adapter.PowerType`): one crossing
  into the asyncio loop for the lot, each outcome handed back as it arrives, so a deadline
  keeps what finished and cancels the rest. Per-call crossings took about 30 % longer at 500
  inverters. Cancel the calling task and the RPCs still running are cancelled (the server sees
  it); a refusal lands as :class:`~distributord.core.errors.CommandRejectedError`, any other
  failure as :class:`~distributord.core.errors.CommandFailedError`. Where the version answers
  with a stream of replies (v1alpha18/19), a command lands on ``ACCEPTED`` and the rest of its
  stream is read on the loop as a task of its own, outside the batch (a deadline that ends the
  batch does not end it), until the commander's :class:`Tail` is abandoned or the stream ends;
  how it ended goes to the tail in trio.
* **Two connections**: telemetry and discovery share one HTTP/2 connection, commands have
  their own, so a thousand streams' traffic never queues ahead of a command.

:class:`MicrogridClient` is the protocol the rest of the daemon uses, so tests of other layers
can use a fake. :class:`ReactiveSide` is a client whose active power is another client's
reactive power: the commander that keeps active setpoints keeps reactive ones through it.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import heapq
import itertools
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import attrs
import grpc
import trio

from distributord.api.adapter import (
    Adapter,
    Decoder,
    FinalReply,
    Follow,
    Note,
    PowerType,
    Rest,
    Snapshot,
    command_error,
)
from distributord.core.config import API_VERSIONS
from distributord.core.errors import (
    CommandError,
    CommandFailedError,
    LinkDownError,
    NoApiVersionError,
    StreamBrokenError,
)
from distributord.core.topology import Topology, pair_batteries
from distributord.shell.bridge import Bridge, Stream, open_bridge

logger = logging.getLogger(__name__)

MAX_OPENING_STREAMS = 256
"""Streams being opened at once (from the call until its first message). A grpc server holds at
most ``grpc.server.max_pending_requests`` calls (default 1,000) that its application has not
taken yet and cancels new calls beyond that: measured here, ~200 of a burst of 2,000 streams
ended CANCELLED against a server with the default. The Microgrid API may well keep the default,
so the link takes turns; 2,000 streams still open in about 2.4 s."""

M = TypeVar("M")
M_co = TypeVar("M_co", covariant=True)


class MessageStream(Protocol[M_co]):
    """The receiving end of a server stream (a :class:`~distributord.shell.bridge.Stream`)."""

    async def receive(self) -> M_co:
        """The next message (``trio.EndOfChannel`` when the server ended the stream)."""
        ...

    def deliver_to(self, handler: Callable[[M_co], None]) -> None:
        """Hand each message to ``handler`` as it arrives, with no task woken per message."""
        ...

    async def ended(self) -> NoReturn:
        """Wait for the end: ``trio.EndOfChannel``, the stream's error or the handler's."""
        ...


class _Opening(Generic[M]):
    """A stream that gives back its opening slot once its first message (or end) arrives."""

    def __init__(self, stream: Stream[M], release: Callable[[], None]) -> None:
        self._stream = stream
        self._release = release

    async def receive(self) -> M:
        try:
            return await self._stream.receive()
        finally:
            self._release()

    def deliver_to(self, handler: Callable[[M], None]) -> None:
        release, stream = self._release, self._stream

        def releasing(message: M) -> None:
            release()
            stream.deliver_to(handler)  # the first message only: then straight to the handler
            handler(message)

        stream.deliver_to(releasing)

    async def ended(self) -> NoReturn:
        try:
            await self._stream.ended()
        finally:
            self._release()


@attrs.frozen(kw_only=True)
class Backoff:
    """Capped exponential backoff with jitter.

    Attributes:
        first_s: The first wait.
        cap_s: The longest wait.
        jitter: Each wait is drawn uniformly from ``[(1 - jitter)·d, d]``, so that thousands of
            streams broken at once do not all come back at the same instant.
    """

    first_s: float = 0.1
    cap_s: float = 5.0
    jitter: float = 0.5

    def delays(self, rng: random.Random) -> tuple[Callable[[], float], Callable[[], None]]:
        """``(next_delay, reset)``: the next wait, and a reset to call after a success."""
        state = {"next": self.first_s}

        def next_delay() -> float:
            delay = state["next"]
            state["next"] = min(delay * 2.0, self.cap_s)
            return delay * (1.0 - self.jitter * rng.random())

        def reset() -> None:
            state["next"] = self.first_s

        return next_delay, reset


class TelemetrySink(Protocol):
    """Where a component's telemetry goes. Both methods must return at once."""

    def snapshot(self, snapshot: Snapshot) -> None:
        """A new snapshot of a component."""

    def gap(self, component_id: int, reason: str) -> None:
        """The component's stream broke, ended or went silent; a new one is being opened."""


def adapters(api: str) -> list[Adapter]:
    """The adapters to try, in order, for ``microgrid.api`` (``"auto"`` or one version)."""
    from distributord.api.v1 import V1
    from distributord.api.v1alpha import V1ALPHA18, V1ALPHA19

    known: dict[str, Adapter] = {a.name: a for a in (V1ALPHA18, V1ALPHA19, V1)}
    assert tuple(known) == API_VERSIONS, "the adapters and the configuration disagree"
    if api == "auto":
        return list(known.values())
    return [known[api]]


class TelemetrySource(Protocol):
    """What a :class:`Telemetry` needs from the microgrid: a component's streams, decoded."""

    def telemetry(self, component_id: int) -> AbstractAsyncContextManager[MessageStream[Any]]:
        """A stream of a component's raw messages (for :meth:`decoder`'s decoder)."""

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> Decoder:
        """A decoder for the messages of :meth:`telemetry`."""


Late = FinalReply | CommandError
"""How the rest of an accepted command's reply stream ended: its final reply (``END`` when the
stream ended without one), or the error that broke it."""


class Tail:
    """The rest of one command's reply stream, read in the background once it is accepted.

    The commander makes one per command (in trio) and hands it to the client with the command.
    Where the version answers with a stream of replies (v1alpha18/19), the command lands on
    ``ACCEPTED`` and the client goes on reading the stream: :attr:`following` is set before the
    landing, and ``ended`` is called in trio with how the stream ended (:data:`Late`), unless
    the tail was abandoned first. :meth:`abandon` stops reading and cancels the call at the
    RPC (a newer command to the inverter, the command's lifetime ended, the command was
    cancelled); nothing is delivered after it.

    Args:
        ended: Called in trio with how the stream ended, at most once.

    Attributes:
        following: Whether the stream goes on after the command landed (set by the client).
        abandoned: Whether nothing more is wanted of it (set by :meth:`abandon`, or when it
            ended).
        finished: Set when it ended or was abandoned.
    """

    def __init__(self, ended: Callable[[Late], None]) -> None:
        self.following = False
        self.abandoned = False
        self.finished = trio.Event()
        self._ended = ended
        self._cancel: Callable[[], None] | None = None  # set by the client that follows it

    def abandon(self) -> None:
        """Stop reading the stream and cancel its call; nothing is delivered after this."""
        if self.abandoned:
            return
        self.abandoned = True
        self.finished.set()
        # The client sets ``following`` before it looks at ``abandoned``, and this sets
        # ``abandoned`` before it looks at ``following``: one of the two sees the other.
        if self.following and self._cancel is not None:
            self._cancel()

    def end(self, outcome: Late) -> None:
        """The stream ended (called in trio by the client, or by a fake in tests)."""
        if self.abandoned:
            return
        self.abandoned = True
        self.finished.set()
        self._ended(outcome)


class MicrogridClient(TelemetrySource, Protocol):
    """What the daemon needs from the microgrid (the real link, or a fake in tests)."""

    async def topology(self) -> Topology:
        """The batteries and their inverters."""

    async def set_active_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Command inverters at once; ``land`` gets each one's valid-until or error.

        A command with a :class:`Tail` in ``tails`` whose version answers with a stream of
        replies lands on ``ACCEPTED``; the rest of its stream goes to the tail.
        """

    async def set_reactive_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """:meth:`set_active_powers` of reactive power: inverter id → var, the same semantics.

        The sign is the API's: positive is inductive (the current lags the voltage).
        """


class Forwarding:
    """A :class:`MicrogridClient` that forwards the topology and the telemetry to another.

    What it does with commands is a subclass's (:class:`ReactiveSide`,
    :class:`~distributord.shell.groups.GroupSide`).

    Args:
        client: The microgrid.
    """

    def __init__(self, client: MicrogridClient) -> None:
        self._client = client

    async def topology(self) -> Topology:
        """The client's topology."""
        return await self._client.topology()

    def telemetry(self, component_id: int) -> AbstractAsyncContextManager[MessageStream[Any]]:
        """The client's stream of a component."""
        return self._client.telemetry(component_id)

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> Decoder:
        """The client's decoder."""
        return self._client.decoder(component_id, battery=battery, max_data_age_s=max_data_age_s)


class ReactiveSide(Forwarding):
    """A :class:`MicrogridClient` whose active power is another client's reactive power.

    It forwards the topology and the telemetry and sends :meth:`set_active_powers` as
    ``client.set_reactive_powers``: a second commander driven through it keeps the reactive
    setpoints (var) with every rule it keeps for active ones (lifetimes, refreshes, tails).

    Args:
        client: The microgrid.
    """

    async def set_active_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Reactive commands (inverter id → var), as ``client.set_reactive_powers`` sends them."""
        await self._client.set_reactive_powers(setpoints, lifetime_s, land, tails)

    set_reactive_powers = set_active_powers
    """The client's reactive commands too: this side has no other power."""


def _translate(error: BaseException) -> BaseException | None:
    """GRPC errors raised on the loop, as distributord's own."""
    if isinstance(error, grpc.aio.AioRpcError):
        return StreamBrokenError(error.code().name, error.details() or "")
    return None


class MicrogridLink:
    """The real :class:`MicrogridClient`: one channel to the Microgrid API, over a bridge.

    Create with :func:`open_link`.
    """

    def __init__(self, bridge: Bridge, address: str, *, api: str = "auto") -> None:
        self.address = address
        self._candidates = adapters(api)
        self._negotiating = api == "auto"
        self._spoken = False  # the version spoken was logged
        # Pinned: known now. Negotiated: chosen by the first discovery that is answered.
        self._adapter: Adapter | None = None if self._negotiating else self._candidates[0]
        self._bridge = bridge
        # Telemetry streams and discovery on one connection, commands on another: a thousand
        # streams' traffic never queues ahead of a command.
        self._channel: Any = None
        self._stubs: dict[str, Any] = {}
        self._command_channel: Any = None
        self._command_stubs: dict[str, Any] = {}
        self._opening = trio.Semaphore(MAX_OPENING_STREAMS)

    async def _connect(self) -> None:
        def make(purpose: str) -> tuple[Any, Any]:
            channel = grpc.aio.insecure_channel(
                self.address,
                options=[
                    # Fail fast while the API is down, and come back quickly when it returns.
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 5000),
                    ("grpc.keepalive_time_ms", 30_000),
                    # Channels with equal options share one connection; this keeps them apart.
                    ("grpc.primary_user_agent", f"distributord-{purpose}"),
                ],
            )
            return channel, {a.name: a.stub(channel) for a in self._candidates}

        async def create() -> list[tuple[Any, Any]]:
            return [make("telemetry"), make("commands")]

        (
            (self._channel, self._stubs),
            (self._command_channel, self._command_stubs),
        ) = await self._bridge.call(create)

    async def _close(self) -> None:
        channels = [c for c in (self._channel, self._command_channel) if c is not None]

        async def close() -> None:
            await asyncio.gather(*(channel.close(grace=None) for channel in channels))

        if channels:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await self._bridge.call(close)

    @property
    def version(self) -> str | None:
        """The API version spoken, once a discovery was answered (None before)."""
        return None if self._adapter is None else self._adapter.name

    @property
    def adapter(self) -> Adapter:
        """The adapter of the version spoken (after discovery)."""
        if self._adapter is None:
            raise RuntimeError("the API version is known only once discovery was answered")
        return self._adapter

    async def topology(self) -> Topology:
        """Ask for the component graph and pair batteries with inverters.

        The first answered call settles the API version (see the module docstring).

        Raises:
            LinkDownError: The API did not answer.
            NoApiVersionError: The server serves none of the versions tried.
        """
        tried: list[str] = []
        spoken = self._adapter
        candidates = [spoken] if spoken is not None else self._candidates
        if spoken is not None and self._negotiating:  # it may have changed: the rest follow
            candidates += [a for a in self._candidates if a is not spoken]
        for adapter in candidates:
            stub = self._stubs[adapter.name]

            async def ask(adapter: Adapter = adapter, stub: Any = stub) -> tuple[Any, Any]:
                return await adapter.components(stub), await adapter.connections(stub)

            try:
                components, connections = await self._bridge.call(ask)
            except StreamBrokenError as error:
                if error.code == "UNIMPLEMENTED":
                    tried.append(adapter.name)
                    self._unimplemented(adapter)
                    continue
                raise LinkDownError(str(error)) from None
            if self._adapter is None or not self._spoken:
                self._adapter, self._spoken = adapter, True
                how = "negotiated" if self._negotiating else "pinned"
                logger.info("microgrid at %s speaks API %s (%s)", self.address, adapter.name, how)
            return pair_batteries(components, connections)
        raise NoApiVersionError(self.address, tried)

    async def _speaking(self) -> Adapter:
        """The adapter of the version spoken, negotiating it first if need be."""
        if self._adapter is None:
            await self.topology()  # LinkDownError / NoApiVersionError when it cannot
        assert self._adapter is not None
        return self._adapter

    def _unimplemented(self, adapter: Adapter) -> None:
        """The server answered ``UNIMPLEMENTED`` in ``adapter``'s version (trio thread)."""
        if self._negotiating and self._adapter is adapter:
            self._adapter = None
            logger.error(
                "microgrid at %s no longer serves API %s; negotiating again",
                self.address,
                adapter.name,
            )

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> Decoder:
        """A decoder for :meth:`telemetry`'s messages, in the version spoken."""
        return self.adapter.decoder(component_id, battery=battery, max_data_age_s=max_data_age_s)

    @asynccontextmanager
    async def telemetry(self, component_id: int) -> AsyncIterator[MessageStream[Any]]:
        """A stream of one component's raw messages; leaving it cancels the RPC.

        At most :data:`MAX_OPENING_STREAMS` streams are being opened at any time.
        """
        adapter = await self._speaking()
        stub = self._stubs[adapter.name]

        def messages() -> AsyncIterator[Any]:
            return adapter.telemetry(stub, component_id)

        await self._opening.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._opening.release()

        try:
            async with self._bridge.open_stream(messages) as stream:
                yield _Opening(stream, release)
        except StreamBrokenError as error:
            if error.code == "UNIMPLEMENTED":
                self._unimplemented(adapter)
            raise
        finally:
            release()

    async def set_active_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Command many inverters at once: inverter id → W, each with ``lifetime_s``.

        ``land(inverter, outcome)`` is called as each command finishes, with until when (Unix
        time, s) the setpoint holds, or why it failed: a
        :class:`~distributord.core.errors.CommandRejectedError` when the API refused the
        setpoint (out of range, invalid), a :class:`~distributord.core.errors.CommandFailedError`
        for anything else (unavailable, internal, ...).
        Cancelling the calling task cancels the commands still running, at the RPC; nothing
        lands after that.

        A command with a tail in ``tails`` finishes on ``ACCEPTED`` where the version answers
        with a stream of replies (v1alpha18/19); the rest of the stream is read on the loop,
        outside the calling task (its cancellation does not end it), and its end goes to the
        tail (:class:`Tail`).
        """
        await self._set_powers(PowerType.ACTIVE, setpoints, lifetime_s, land, tails)

    async def set_reactive_powers(
        self,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None = None,
    ) -> None:
        """Command many inverters' reactive power at once: inverter id → var.

        Exactly :meth:`set_active_powers`, with v1alpha18/19's ``POWER_TYPE_REACTIVE`` and
        v1's ``SetComponentPowerReactive``.
        """
        await self._set_powers(PowerType.REACTIVE, setpoints, lifetime_s, land, tails)

    async def _set_powers(
        self,
        power_type: PowerType,
        setpoints: Mapping[int, float],
        lifetime_s: int,
        land: Callable[[int, float | CommandError], None],
        tails: Mapping[int, Tail] | None,
    ) -> None:
        """One batch of commands of ``power_type`` (see :meth:`set_active_powers`)."""
        try:
            adapter = await self._speaking()
        except LinkDownError as error:  # no version to speak now: every command fails
            for inverter_id in setpoints:
                land(inverter_id, CommandFailedError("UNAVAILABLE", str(error)))
            return

        def deliver(inverter_id: int, outcome: float | Exception) -> None:
            if not isinstance(outcome, float | CommandError):  # a bug, not the microgrid
                logger.error("command to inverter %d failed unexpectedly: %r", inverter_id, outcome)
                outcome = CommandFailedError("INTERNAL", repr(outcome))
            elif isinstance(outcome, CommandError) and outcome.code == "UNIMPLEMENTED":
                self._unimplemented(adapter)
            land(inverter_id, outcome)

        tails = tails or {}
        calls = {
            i: self._command(adapter, power_type, i, power, lifetime_s, tails.get(i))
            for i, power in setpoints.items()
        }
        await self._bridge.call_each(calls, deliver)

    def _command(
        self,
        adapter: Adapter,
        power_type: PowerType,
        inverter_id: int,
        power: float,
        lifetime_s: int,
        tail: Tail | None = None,
    ) -> Callable[[], Awaitable[float]]:
        """The coroutine (for the loop) that sends one command in ``adapter``'s version."""
        stub = self._command_stubs[adapter.name]
        follow = None if tail is None else self._follower(tail)

        async def command() -> float:
            try:
                return await adapter.set_power(
                    stub, inverter_id, power, lifetime_s, follow=follow, power_type=power_type
                )
            except grpc.aio.AioRpcError as error:
                raise command_error(error.code().name, error.details() or "") from None

        return command

    def _follower(self, tail: Tail) -> Follow:
        """What takes the rest of a command's reply stream and reads it for ``tail``."""
        bridge = self._bridge
        reading: list[asyncio.Task[FinalReply]] = []  # the loop's task, once it started

        def cancel() -> None:  # loop thread
            if reading:
                reading[0].cancel()

        tail._cancel = functools.partial(bridge.soon, cancel)

        def follow(rest: Rest, stop: Callable[[], None]) -> None:  # loop thread
            tail.following = True
            task = asyncio.get_running_loop().create_task(rest())
            reading.append(task)

            def done(task: asyncio.Task[FinalReply]) -> None:
                if task.cancelled():  # abandoned: perhaps before it ran, so end the call here
                    stop()
                    return
                error = task.exception()
                outcome: Late
                if error is None:
                    outcome = task.result()
                elif isinstance(error, grpc.aio.AioRpcError):
                    outcome = command_error(error.code().name, error.details() or "")
                else:  # a bug, not the microgrid: said as a failure of that stream
                    logger.error("reading a command's replies failed unexpectedly: %r", error)
                    outcome = CommandFailedError("INTERNAL", repr(error))
                bridge.post(functools.partial(tail.end, outcome))

            task.add_done_callback(done)
            if tail.abandoned:  # abandoned before it started: end it once it has begun
                asyncio.get_running_loop().call_soon(task.cancel)

        return follow


@asynccontextmanager
async def open_link(address: str, *, api: str = "auto") -> AsyncIterator[MicrogridLink]:
    """A link to the Microgrid API at ``address`` (``HOST:PORT``), with its own bridge.

    ``api`` is ``"auto"`` (negotiate) or the one version to speak. The channel connects
    lazily: opening the link succeeds even while the API is down.
    """
    async with open_bridge(_translate) as bridge:
        link = MicrogridLink(bridge, address, api=api)
        await link._connect()
        try:
            yield link
        finally:
            await link._close()


async def discover(
    client: MicrogridClient,
    *,
    backoff: Backoff = Backoff(first_s=0.5, cap_s=10.0),
    rng: random.Random | None = None,
    unreachable: Callable[[bool], None] = lambda _: None,
) -> Topology:
    """Ask for the topology until the API answers; log once per change of state.

    ``unreachable(True)`` is called when an attempt found the API unreachable, and
    ``unreachable(False)`` when it answered (also after a server that serves no version).

    Returns:
        The topology (its batteries left out are logged, one line each).
    """
    next_delay, _ = backoff.delays(rng or random.Random())
    attempts = 0
    said: str | None = None  # what was logged last: each state of the API is logged once
    while True:
        attempts += 1
        try:
            topology = await client.topology()
        except NoApiVersionError as error:
            unreachable(False)
            if said != "no version":
                said = "no version"
                logger.error("%s; retrying with backoff", error)
            await trio.sleep(next_delay())
            continue
        except LinkDownError as error:
            unreachable(True)
            if said != "unreachable":
                said = "unreachable"
                logger.warning("microgrid unreachable (%s); retrying with backoff", error)
            await trio.sleep(next_delay())
            continue
        unreachable(False)
        if attempts > 1:
            logger.info("microgrid reachable again after %d attempts", attempts)
        for line in topology.describe():
            (logger.warning if line.startswith("left out") else logger.info)("%s", line)
        return topology


class _Watched:
    """One stream under a :class:`SilenceWatch`: whose, how long it may be silent, its scope."""

    __slots__ = ("done", "scope", "silence_s", "telemetry")

    def __init__(self, telemetry: Telemetry, silence_s: float, scope: trio.CancelScope) -> None:
        self.telemetry = telemetry
        self.silence_s = silence_s
        self.scope = scope
        self.done = False


class SilenceWatch:
    """Drops silent streams, for many :class:`Telemetry` tasks at once (run :meth:`serve`).

    A deadline per stream woke each telemetry task every few seconds to move its deadline on
    (2,000 streams at 1 Hz: about 450 wake-ups a second, each a cancellation). Here a heap holds
    one entry per open stream, keyed by a time at or before the stream could fall silent (its
    last message then, plus ``silence_s``), and one task sleeps until the earliest. When it
    wakes it takes every entry due within :attr:`slack_s`: a stream that spoke since is put
    back at its new time (early, which is harmless: it is only looked at), a silent one is
    dropped (the scope it waits in is cancelled), and one that is quiet but not yet silent is put
    back as it was, so that it is dropped exactly on time. Streams that keep talking cost one
    wake-up per ``slack_s`` in all, and no telemetry task is woken.

    Args:
        slack_s: How far ahead of their times entries are looked at together.

    Attributes:
        wakeups: How often the watch woke.
    """

    def __init__(self, *, slack_s: float = 1.0) -> None:
        self.slack_s = slack_s
        self.wakeups = 0
        self._heap: list[tuple[float, int, _Watched]] = []
        self._order = itertools.count()  # ties: never compare entries
        self._sleeping_until = math.inf
        self._wake = trio.Event()

    async def until_silent(
        self, telemetry: Telemetry, silence_s: float, stream: MessageStream[Any]
    ) -> None:
        """Return once ``telemetry`` has heard nothing for ``silence_s``; raise as ``stream`` ends.

        The time of the last message is ``telemetry.heard`` (trio time), which its handler
        moves on as messages arrive.
        """
        with trio.CancelScope() as scope:
            watched = _Watched(telemetry, silence_s, scope)
            try:
                self._push(telemetry.heard + silence_s, watched)
                await stream.ended()
            finally:
                watched.done = True

    def _push(self, at: float, watched: _Watched) -> None:
        heapq.heappush(self._heap, (at, next(self._order), watched))
        if at < self._sleeping_until:
            self._wake.set()

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Watch every stream handed to :meth:`until_silent`, forever."""
        task_status.started()
        heap = self._heap
        while True:
            self._sleeping_until = heap[0][0] if heap else math.inf
            with trio.move_on_at(self._sleeping_until):
                await self._wake.wait()
            self._wake = trio.Event()
            self.wakeups += 1
            now = trio.current_time()
            horizon = now + self.slack_s
            back: list[tuple[float, int, _Watched]] = []
            while heap and heap[0][0] <= horizon:
                _, order, watched = heapq.heappop(heap)
                if watched.done:
                    continue  # the stream ended otherwise
                silent_at = watched.telemetry.heard + watched.silence_s
                if silent_at <= now:
                    watched.done = True
                    watched.scope.cancel()
                else:
                    back.append((silent_at, order, watched))
            for entry in back:
                heapq.heappush(heap, entry)


class StreamState(enum.Enum):
    """What a component's telemetry task is doing (:attr:`Telemetry.state`)."""

    OPENING = "opening"
    """Asking for a stream: for a turn among :data:`MAX_OPENING_STREAMS`, or for the version."""

    STREAMING = "streaming"
    """A stream is open: its messages go to the sink as they arrive; silence is watched."""

    WAITING = "waiting"
    """The stream failed, ended or went silent: backing off before opening the next."""


class Telemetry:
    """One component's telemetry, kept flowing into a sink (run :meth:`serve` as a task).

    It goes round ``OPENING → STREAMING → WAITING → OPENING …`` (:class:`StreamState`); a
    stream that cannot be opened goes from ``OPENING`` straight to ``WAITING``. A stream is
    left when it fails, when the server ends it, or when it sends nothing for ``silence_s``;
    each time the sink hears of the gap (and logs it: the sink sees every stream, so it can
    tell one stream's break from the whole microgrid's). From the first gap until a message
    gives a snapshot again the component is *down* (:attr:`down_since`), and the waits between
    attempts double (see :class:`Backoff`) until the first snapshot resets them.

    Args:
        client: The microgrid.
        component_id: The component.
        battery: Whether it is a battery (else an inverter).
        sink: Receives snapshots and gaps.
        max_data_age_s: How long a field keeps its value when later samples omit it; or where
            to read it on every message (the status settings, which a reload changes).
        silence_s: A stream that sends nothing for this long is replaced.
        backoff: Waits between attempts.
        rng: For the jitter (tests pass a seeded one).
        watch: Watches the stream's silence, shared with other components' tasks (its
            :meth:`~SilenceWatch.serve` run by the caller); if None, the task runs its own.

    Attributes:
        state: What the task is doing.
        down_since: Trio time of the first gap since the last snapshot (None while up).
        heard: Trio time the open stream last sent anything.
    """

    def __init__(
        self,
        client: TelemetrySource,
        component_id: int,
        *,
        battery: bool,
        sink: TelemetrySink,
        max_data_age_s: float | Callable[[], float],
        silence_s: float,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
        watch: SilenceWatch | None = None,
    ) -> None:
        self.component_id = component_id
        self.state = StreamState.OPENING
        self.down_since: float | None = None
        self._client = client
        self._battery = battery
        self._kind = "battery" if battery else "inverter"
        self._sink = sink
        self._max_age = max_data_age_s if callable(max_data_age_s) else lambda: max_data_age_s
        self._silence_s = silence_s
        self._next_delay, self._reset_delay = backoff.delays(rng or random.Random())
        self._decoder: Decoder | None = None  # one per stream: the version may change between
        self.heard = 0.0
        self._watch = watch
        self._logged_notes: set[Note] = set()
        self._failures: set[str] = set()  # kinds of message that could not be handled
        self._starting: trio.TaskStatus[None] | None = None

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Keep the telemetry flowing, forever; never raises.

        Started once the first stream is open, or has failed once.
        """
        self._starting = task_status
        if self._watch is not None:
            await self._serve(self._watch)
        else:
            async with trio.open_nursery() as nursery:
                watch = SilenceWatch()
                await nursery.start(watch.serve)
                await self._serve(watch)

    async def _serve(self, watch: SilenceWatch) -> NoReturn:
        while True:
            self.state = StreamState.OPENING
            reason = await self._stream(watch)
            self.state = StreamState.WAITING
            self._started()
            self._gap(reason)
            await trio.sleep(self._next_delay())

    def _started(self) -> None:
        if self._starting is not None:
            self._starting.started()
            self._starting = None

    async def _stream(self, watch: SilenceWatch) -> str:
        """Open a stream and feed the sink from it until it ends; why it ended."""
        try:
            async with self._client.telemetry(self.component_id) as stream:
                self._decoder = self._client.decoder(
                    self.component_id, battery=self._battery, max_data_age_s=self._max_age()
                )
                self.state = StreamState.STREAMING
                self._started()
                self.heard = trio.current_time()
                stream.deliver_to(self._arrived)
                # Messages are handled as they arrive (:meth:`_arrived`), waking no task.
                await watch.until_silent(self, self._silence_s, stream)
                return f"silent for {self._silence_s:g} s"
        except trio.EndOfChannel:
            return "ended by the server"
        except LinkDownError as error:
            return f"broken ({error})"

    def _gap(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = trio.current_time()
        self._sink.gap(self.component_id, reason)

    def _arrived(self, data: Any) -> None:
        """A message, handed over by the stream as it arrives (outside any task).

        This is the stream's fault barrier: a message that cannot be handled (a bug in
        decoding or in the sink) is logged, once per kind of failure, and dropped; the stream
        and every other task go on.
        """
        now = self.heard = trio.current_time()
        try:
            decoder = self._decoder
            assert decoder is not None
            decoder.max_data_age_s = self._max_age()
            snapshot = decoder.decode(data, received_at=now)
            if decoder.notes:
                self._note(decoder.notes)
            if snapshot is not None:  # None: ignored (counted by the decoder); not a sign of life
                if self.down_since is not None:
                    self._back()
                self._sink.snapshot(snapshot)
        except Exception as error:
            if type(error).__name__ not in self._failures:
                self._failures.add(type(error).__name__)
                logger.exception(
                    "%s %d: a telemetry message could not be handled; dropped (logged once)",
                    self._kind,
                    self.component_id,
                )

    def _note(self, notes: set[Note]) -> None:
        for note in notes - self._logged_notes:
            logger.warning("%s %d: %s (logged once)", self._kind, self.component_id, note.value)
            self._logged_notes.add(note)

    def _back(self) -> None:
        self.down_since = None
        self._reset_delay()
