"""Every protocol method and notification once, for both faces: what a connection does, not how.

Theory of operation
-------------------
:class:`Connection` is the library's one client: each protocol method is a coroutine here that
builds the request, awaits its result and reads it into a typed value
(:mod:`distributord.client.results`). It does no IO itself: a face (asyncio in
:mod:`distributord.client.aio`, trio in :mod:`distributord.client.trio`) subclasses it and gives
three things: how to write a line, how to read some bytes, and a lock of its event loop. The
coroutines run on either loop since they only await those. Every rule of the wire (ids,
framing, which reply is whose, what is kept) is :class:`~distributord.core.rpcclient.RpcClient`'s.

* **Many tasks, one connection.** Calls may run concurrently from several tasks (pipelining):
  one task at a time reads (the read lock); after each read every waiter looks for its own
  message again, so a reply read by one task is taken by the task that waits for it.
* **Errors.** A JSON-RPC error is a :class:`~distributord.core.errors.DaemonError` carrying the
  protocol's ``code`` (:class:`~distributord.core.protocol.Code`), ``message`` and ``data``
  (for -32602, the field and what was expected); ``hello`` refused is its subclass
  :class:`~distributord.core.errors.HelloRefusedError`. The daemon closing the connection, or the
  connection breaking, is :class:`~distributord.core.errors.UnreachableError`; a reply of the
  wrong shape is :class:`~distributord.core.errors.BadReplyError`. Domain outcomes
  (``partial_failure``, ``out_of_bounds``...) are results, not exceptions. A power that is not
  finite cannot be written as JSON: it is refused here with the -32602 the daemon would give.
* **Cancellation: the connection stays usable.** A call cancelled while it waits for its reply
  abandons the request (:meth:`~distributord.core.rpcclient.RpcClient.abandon`): its reply is
  dropped when it comes, and later calls go on. The request itself may still be carried out by
  the daemon (a ``set_power`` already sent is applied). The one exception is a cancel that cuts
  a request line short while it is being written, which only happens when the daemon has
  stopped reading: the trio face then closes the connection (later calls raise
  :class:`~distributord.core.errors.UnreachableError`); asyncio writes a line whole or not at
  all.
* **Notifications** are async iterators (:class:`Follow`): ``async for change in
  client.status_changes()``. An iterator subscribes (``subscribe_status``,
  ``subscribe_bounds``) when first awaited, and from its creation until it is closed (``break``
  out of the loop, :meth:`Follow.aclose`, or the iterator is dropped) the notifications it wants
  are kept for it; notifications nobody follows are dropped as they are read, so a program that
  never reads, say, ``proposal_changed`` does not keep them. Each notification goes to one
  iterator: follow a method with one iterator at a time. The daemon sends only changes after
  the subscription: ask :meth:`Connection.get_status` for the state now.

Pure: the standard library, attrs and ``distributord.core`` only (no asyncio, no trio).
"""

from __future__ import annotations

import abc
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

from distributord.core.errors import DaemonError, HelloRefusedError, UnreachableError
from distributord.core.protocol import Code, JsonId, power_problem
from distributord.core.rpcclient import Message, RpcClient, result_of

from . import results
from .results import (
    Acting,
    BoundsChange,
    CommandFailure,
    Components,
    Event,
    Ping,
    PowerResult,
    ProposalChange,
    ProposalEnd,
    ProposalInfo,
    StatusChange,
    StatusReport,
)

_T = TypeVar("_T")

PROPOSAL_EVENTS = ("proposal_changed", "proposal_ended")


class Connection(abc.ABC):
    """One connection to the daemon, on any event loop (see the module docstring).

    Args:
        peer: How errors name the daemon (``distributord at /run/distributord/control.sock``).
        keep_all_notifications: Keep every notification for :meth:`receive`, followed or not
            (for code that reads raw messages, as the tests and the demo do).
    """

    def __init__(self, *, peer: str = "distributord", keep_all_notifications: bool = False) -> None:
        self._followed: Counter[str] = Counter()
        self._following_all = 0
        self._rpc = RpcClient(
            peer=peer,
            follows=None if keep_all_notifications else self._follows,
            drop_strays=not keep_all_notifications,
        )
        self._read_lock = self._new_lock()
        self._status_subscribed = False
        self._bounds_subscribed: set[frozenset[int]] = set()

    # --- what a face gives ------------------------------------------------------------------

    @abc.abstractmethod
    def _new_lock(self) -> AbstractAsyncContextManager[Any]:
        """A lock of the face's event loop."""

    @abc.abstractmethod
    async def _write(self, line: bytes) -> None:
        """Write a request line whole, one writer at a time (the module docstring on cancels).

        A face takes no schedule point before the line goes out unless it must wait for
        another writer: a deadline that passes meanwhile would otherwise cancel a request that
        was ready to go.
        """

    @abc.abstractmethod
    async def _read(self) -> bytes:
        """Some bytes from the daemon; ``b""`` when it closed the connection."""

    @abc.abstractmethod
    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are: not a request RpcClient knows of (tests send garbage)."""

    async def start(self, program: str | None) -> None:
        """What ``open_client`` does once connected: ``hello`` as ``program``, if one is given."""
        if program is not None:
            await self.hello(program)

    # --- messages ----------------------------------------------------------------------------

    async def send(self, method: str, params: Mapping[str, Any] | None = None) -> int:
        """Send a request without waiting for its reply; returns its id (for :meth:`reply_to`)."""
        request_id, line = self._rpc.request(method, params)
        try:
            await self._write(line)
        except BaseException:
            self._rpc.abandon(request_id)  # not sent, or not whole: no reply to wait for
            raise
        return request_id

    async def receive(self) -> Message:
        """The next message not taken yet, a reply or a notification, in arrival order.

        Raises:
            UnreachableError: The daemon closed the connection and all it sent has been taken.
            BadReplyError: The next line is not a JSON object, or is too long.
        """
        return await self._wait(self._rpc.next_message)

    def receive_nowait(self) -> Message | None:
        """The next message already received and not taken yet, or ``None``: it never waits.

        Raises:
            UnreachableError: The daemon closed the connection and all it sent has been taken.
            BadReplyError: The next line is not a JSON object, or is too long.
        """
        return self._rpc.next_message()

    async def reply_to(self, request_id: JsonId) -> Message:
        """The whole reply to ``request_id``; what arrived before it is kept for later.

        Raises:
            UnreachableError: The daemon closed the connection without replying.
            BadReplyError: A line before the reply is not a JSON object, or is too long.
        """
        return await self._wait(lambda: self._rpc.reply_to(request_id))

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Message:
        """Send a request and return its whole reply, an error reply included.

        Cancelled, it abandons the request: its reply is dropped when it comes.
        """
        request_id = await self.send(method, params)
        try:
            return await self.reply_to(request_id)
        except BaseException:
            self._rpc.abandon(request_id)
            raise

    async def result(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send a request and return its result.

        Raises:
            DaemonError: The reply is a JSON-RPC error.
        """
        return result_of(await self.call(method, params))

    async def _wait(self, take: Callable[[], Message | None]) -> Message:
        """Read until ``take`` has a message; one task reads at a time."""
        while (message := take()) is None:
            async with self._read_lock:
                if (message := take()) is not None:  # another task read it while we queued
                    return message
                self._rpc.receive_data(await self._read())
        return message

    # --- the protocol's methods ---------------------------------------------------------------

    async def ping(self) -> Ping:
        """``ping``: the daemon's version and uptime, and how it stands with the microgrid."""
        return Ping.from_json(await self.result("ping"))

    async def hello(self, program: str) -> Acting:
        """``hello``: act as ``program`` on this connection (before its first proposal).

        Returns:
            The program, its priority and the operator's limits on it.

        Raises:
            HelloRefusedError: The program is not configured, or this user may not act as it
                (-32003); a malformed name is a ``DaemonError`` -32602.
        """
        try:
            return results.acting_from_json(await self.result("hello", {"program": program}))
        except DaemonError as error:
            if error.code == Code.NOT_AUTHORISED:
                raise HelloRefusedError(program, error) from None
            raise

    async def get_status(self) -> StatusReport:
        """``get_status``: every battery's status, reasons, SoC, bounds and setpoint now."""
        return StatusReport.from_json(await self.result("get_status"))

    async def list_components(self) -> Components:
        """``list_components``: the battery/inverter pairs managed, and the batteries left out.

        Raises:
            DaemonError: -32004 while the microgrid is not reached.
        """
        return Components.from_json(await self.result("list_components"))

    async def set_power(
        self,
        power_w: float,
        batteries: Iterable[int],
        *,
        request_timeout_s: float | None = None,
        adjust_power: bool | None = None,
        include_broken_batteries: bool | None = None,
        reactive_var: float | None = None,
    ) -> PowerResult:
        """``set_power``: split ``power_w`` (+ charge, − discharge) across ``batteries``.

        The power stands (refreshed by the daemon) until a new request for those batteries
        replaces it; 0 W releases them. The reply comes once the inverters answered.

        Args:
            power_w: The total power for the set, W.
            batteries: The battery ids (1 to 1,024, unique).
            request_timeout_s: The deadline for the inverters' commands (the daemon's
                configured default when ``None``).
            adjust_power: Whether a power the batteries cannot take is adjusted to what they
                can (the daemon's default, true, when ``None``); false gives ``out_of_bounds``.
            include_broken_batteries: Whether batteries that are not working get an equal share.
            reactive_var: The total reactive power for the set's inverters, var: positive
                inductive, negative capacitive (the Microgrid API's sign); sent only when given
                (none, 0 var, when ``None``). :attr:`PowerResult.reactive` says where it went.

        Returns:
            The result; :attr:`PowerResult.ramping` is set while the set's target ramps.

        Raises:
            DaemonError: Bad arguments (-32602, ``data`` names the field), the daemon is
                overloaded (-32001), shutting down (-32002), or not connected yet (-32004).
        """
        params: dict[str, Any] = {"power_w": power_w, "batteries": list(batteries)}
        _put_optional(
            params,
            request_timeout_s=request_timeout_s,
            adjust_power=adjust_power,
            include_broken_batteries=include_broken_batteries,
            reactive_var=reactive_var,
        )
        return PowerResult.from_json(await self._command("set_power", params))

    async def propose(
        self,
        batteries: Iterable[int],
        *,
        power_w: float | None = None,
        lower_w: float | None = None,
        upper_w: float | None = None,
        ttl_s: float | None = None,
        until_disconnect: bool | None = None,
        request_timeout_s: float | None = None,
        reactive_var: float | None = None,
    ) -> PowerResult:
        """``propose``: what this connection's program wants for ``batteries`` (``arbitration.md``).

        Give at least one of ``power_w``, ``lower_w`` and ``upper_w`` (bounds only: a limiter
        on every lower priority). A new proposal on the same set replaces the program's last.

        Args:
            batteries: The exact battery set.
            power_w: The power wanted, W.
            lower_w: The lower limit imposed on every lower priority, W.
            upper_w: The upper limit imposed on every lower priority, W.
            ttl_s: Its lifetime, s (standing when ``None``).
            until_disconnect: Whether it ends when this connection closes.
            request_timeout_s: The deadline of the reply's commands.
            reactive_var: The reactive power wanted for the set, var (as :meth:`set_power`'s),
                merged by priority apart from the active powers; sent only when given.

        Returns:
            The result, with :attr:`PowerResult.arbitration` saying what it was granted and why.

        Raises:
            DaemonError: As :meth:`set_power`'s; -32003 if the program may no longer propose.
        """
        params: dict[str, Any] = {"batteries": list(batteries)}
        _put_optional(
            params,
            power_w=power_w,
            lower_w=lower_w,
            upper_w=upper_w,
            ttl_s=ttl_s,
            until_disconnect=until_disconnect,
            request_timeout_s=request_timeout_s,
            reactive_var=reactive_var,
        )
        return PowerResult.from_json(await self._command("propose", params))

    async def withdraw(self, batteries: Iterable[int] | None = None) -> tuple[frozenset[int], ...]:
        """``withdraw``: end this program's proposal on ``batteries`` (all of them when ``None``).

        Batteries no proposal holds any more get 0 W.

        Returns:
            The battery sets whose proposals ended.
        """
        params = None if batteries is None else {"batteries": list(batteries)}
        return results.withdrawn_from_json(await self.result("withdraw", params))

    async def get_proposals(self) -> tuple[ProposalInfo, ...]:
        """``get_proposals``: every live proposal of every program, and what it has."""
        return results.proposals_from_json(await self.result("get_proposals"))

    async def subscribe_status(self) -> None:
        """``subscribe_status``: ``status_changed`` and ``command_failed`` from now on.

        :meth:`status_changes` and :meth:`command_failures` call it for you.
        """
        await self.result("subscribe_status")
        self._status_subscribed = True

    async def subscribe_bounds(self, batteries: Iterable[int]) -> None:
        """``subscribe_bounds``: ``bounds_changed`` for this set from now on.

        :meth:`bounds_changes` calls it for you.

        Raises:
            DaemonError: -32602 if a battery is not one the daemon manages.
        """
        batteries = list(batteries)
        await self.result("subscribe_bounds", {"batteries": batteries})
        self._bounds_subscribed.add(frozenset(batteries))

    async def _command(self, method: str, params: Mapping[str, Any]) -> Any:
        for field, value in params.items():
            if isinstance(value, float) and not math.isfinite(value):
                # JSON cannot carry it: refuse it as the daemon would (same code and data).
                if field in ("power_w", "lower_w", "upper_w", "reactive_var"):
                    expected = power_problem(value)
                else:  # ttl_s, request_timeout_s
                    expected = f"a finite number, got {value!r}"
                raise DaemonError(
                    int(Code.INVALID_PARAMS),
                    f"invalid params: {field} must be {expected}",
                    {"field": field, "expected": expected},
                )
        return await self.result(method, params)

    # --- notifications ------------------------------------------------------------------------

    def status_changes(self) -> Follow[StatusChange]:
        """``status_changed`` notifications: a battery's status or reasons changed.

        Subscribes when first awaited. A subscriber that reads always ends with the true state
        of every battery (changes of one battery are coalesced to the latest).
        """
        return Follow(
            self, ("status_changed",), StatusChange.from_json, subscribe=self._subscribe_status
        )

    def command_failures(self) -> Follow[CommandFailure]:
        """``command_failed`` notifications: an accepted command failed at an inverter."""
        return Follow(
            self, ("command_failed",), CommandFailure.from_json, subscribe=self._subscribe_status
        )

    def bounds_changes(self, batteries: Iterable[int]) -> Follow[BoundsChange]:
        """``bounds_changed`` for ``batteries``: what this program may still ask of the set.

        Subscribes when first awaited; at most 10 a second, coalesced to the latest.
        """
        wanted = frozenset(batteries)

        async def subscribe() -> None:
            if wanted not in self._bounds_subscribed:
                await self.subscribe_bounds(sorted(wanted))

        def for_this_set(params: Any) -> bool:
            return isinstance(params, Mapping) and params.get("batteries") == sorted(wanted)

        return Follow(
            self,
            ("bounds_changed",),
            BoundsChange.from_json,
            subscribe=subscribe,
            where=for_this_set,
        )

    def proposal_events(self) -> Follow[ProposalChange | ProposalEnd]:
        """``proposal_changed`` and ``proposal_ended`` for this connection's proposals.

        The daemon sends them to a proposal's owner without a subscription.
        """
        return Follow(self, PROPOSAL_EVENTS, _read_proposal_event, by_message=True)

    def notifications(self) -> Follow[Event]:
        """Every notification, typed (:data:`~distributord.client.results.Event`).

        Subscribes to nothing: call :meth:`subscribe_status` or :meth:`subscribe_bounds`.
        """
        return Follow(self, None, results.event_from_json, by_message=True)

    async def _subscribe_status(self) -> None:
        if not self._status_subscribed:
            await self.subscribe_status()

    def _follows(self, method: str) -> bool:
        return self._following_all > 0 or self._followed[method] > 0


def _read_proposal_event(message: Mapping[str, Any]) -> ProposalChange | ProposalEnd:
    event = results.event_from_json(message)
    assert isinstance(event, ProposalChange | ProposalEnd)  # Follow asked for these methods only
    return event


def _put_optional(params: dict[str, Any], **values: object) -> None:
    """Put the values that are not ``None`` (the daemon then uses its defaults for the rest)."""
    params.update({key: value for key, value in values.items() if value is not None})


class Follow(Generic[_T]):
    """An async iterator of notifications (see the module docstring).

    Use ``async for``; ``break`` ends it, as does :meth:`aclose` or ``async with``.

    Raises:
        UnreachableError: The daemon closed the connection.
    """

    def __init__(
        self,
        connection: Connection,
        methods: Collection[str] | None,
        read: Callable[[Any], _T],
        *,
        subscribe: Callable[[], Awaitable[None]] | None = None,
        where: Callable[[Any], bool] | None = None,
        by_message: bool = False,
    ) -> None:
        self._connection = connection
        self._methods = methods
        self._read = read
        self._subscribe = subscribe
        self._where = where
        self._by_message = by_message
        self._open = True
        if methods is None:
            connection._following_all += 1
        else:
            connection._followed.update(methods)

    def __aiter__(self) -> Follow[_T]:
        return self

    async def __anext__(self) -> _T:
        if not self._open:
            raise StopAsyncIteration
        if self._subscribe is not None:
            await self._subscribe()
            self._subscribe = None
        rpc = self._connection._rpc
        message = await self._connection._wait(lambda: rpc.notification(self._wanted))
        return self._read(message if self._by_message else message.get("params", {}))

    def _wanted(self, message: Mapping[str, Any]) -> bool:
        if self._methods is not None and message.get("method") not in self._methods:
            return False
        return self._where is None or self._where(message.get("params"))

    def close(self) -> None:
        """Stop following: what it wanted is no longer kept (unless another iterator wants it)."""
        if not self._open:
            return
        self._open = False
        if self._methods is None:
            self._connection._following_all -= 1
        else:
            self._connection._followed.subtract(self._methods)

    async def aclose(self) -> None:
        """:meth:`close`, as an async generator's ``aclose``."""
        self.close()

    async def __aenter__(self) -> Follow[_T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def peer_name(path: object) -> str:
    """How errors name the daemon at the socket ``path``."""
    return f"distributord at {path}"


def cannot_connect(peer: str, error: OSError) -> UnreachableError:
    """The error for a socket nobody listens on, or that refused us."""
    return UnreachableError(f"cannot connect to {peer}: {error.strerror or error}")
