"""The control socket: JSON-RPC 2.0 sessions on a Unix socket, one task per connection.

Theory of operation
-------------------
:class:`ControlServer` accepts connections on a Unix stream socket (bound by
:func:`bind_control_socket`, or passed in by systemd's socket activation) and runs one task per
connection. A connection is checked first: its peer's credentials (``SO_PEERCRED``) must be
root, the daemon's own user, or in the configured ``allowed_uids``/``allowed_gids``; otherwise
it gets error -32003 and is closed. Past ``max_connections`` a new connection gets -32001 and
is closed. A reload that takes a peer's uid or gid out of the allowed ones ends the connections
that peer holds: what it sent that has not started is withdrawn, it gets -32003, and the
connection is closed (a peer once let in is not let in for good).

Within a connection, requests are read line by line (``distributord.core.protocol``) and may be
pipelined: ``set_power`` goes to the request loop's bounded queue (a full queue is -32001) and
its reply comes back whenever it is ready, in any order; the other methods answer at once.
Every reply goes through the connection's bounded outbox, written by the connection's own
writer task: a client that stops reading fills its outbox and is dropped, and nobody else
notices. After the client half-closes (EOF) the connection stays until its pending replies
are written. ``subscribe_status`` adds a task that turns status changes into notifications;
it reads the tracker's board at its own pace (it sees the latest board, never a backlog), and
its notifications are kept apart from the replies, one per battery, the newest replacing an
older one not yet written: a subscriber that reads is never dropped, whatever changes at once,
and ends with the truth.

Nothing a client sends can raise out of a session: malformed input is a protocol error reply,
a broken connection ends that session only.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import socket
import stat
import struct
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import attrs
import trio

from distributord import STARTED_MONOTONIC, __version__
from distributord.core import protocol
from distributord.core.config import Config, ControlConfig
from distributord.core.errors import ControlSocketError
from distributord.core.model import Request, Result
from distributord.core.protocol import TOO_LONG, Call, Code, Failure, LineFramer
from distributord.core.reports import components_report, status_report
from distributord.core.topology import Topology
from distributord.shell.live import Live
from distributord.shell.metrics import INVALID, Metrics, error_outcome
from distributord.shell.requestloop import RequestLoop, Timing
from distributord.shell.tracker import Board, StatusTracker

logger = logging.getLogger(__name__)

OUTBOX_LINES = 64
"""Replies (written or to come) a connection may have waiting: while it has this many, the
daemon reads nothing more from it (back-pressure: a client that pipelines a burst is served at
the pace it reads, and memory per connection stays bounded). Status notifications do not
count: they are kept one per battery, the latest (see ``_Session._change``)."""

WRITE_STALL_S = 30.0
"""A client that takes no reply for this long while replies wait does not read at all: it is
cut off (its connection slot and its memory are freed)."""

SOCKET_MODE = 0o660
"""Owner and group may connect (the spec's mode; the group is how operators are let in)."""

LISTEN_BACKLOG = 128

TRANSIENT_ACCEPT_ERRORS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPROTO}
)
"""accept() failures that pass (resources run short, a peer gave up in the backlog); any other
means the listening socket is broken, and retrying it forever would only fill the log."""

ACCEPT_RETRY_S = 0.1
"""The pause before accepting again after a transient failure: long enough not to spin."""

TOO_LONG_MESSAGE = f"line longer than {protocol.MAX_LINE_BYTES} bytes; discarded"


@attrs.frozen(kw_only=True)
class ControlStatistics:
    """A snapshot of the control server's state.

    Attributes:
        connections: Connections admitted and being served (refused ones not counted).
    """

    connections: int


def bind_control_socket(path: str) -> socket.socket:
    """Bind and listen on a Unix socket at ``path`` with mode 0660.

    A stale socket file (nothing listens on it) from an earlier run is replaced; a live one
    (another daemon answers) or a file that is not a socket is left alone and refused.

    Raises:
        ControlSocketError: Why the socket cannot be bound, in one line.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise ControlSocketError(f"cannot use control socket {path}: {error.strerror}") from None
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlSocketError(f"{path} exists and is not a socket; not replacing it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(path)
            except (ConnectionRefusedError, FileNotFoundError):
                _remove_stale(path, info)
            except OSError as error:
                raise ControlSocketError(
                    f"cannot check control socket {path}: {error.strerror}"
                ) from None
            else:
                raise ControlSocketError(f"another process is listening on {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the socket 0660 from the start: no moment in which others may connect.
    old_umask = os.umask(0o777 & ~SOCKET_MODE)
    try:
        sock.bind(path)
    except OSError as error:
        sock.close()
        reason = "its directory does not exist" if error.errno == errno.ENOENT else error.strerror
        raise ControlSocketError(f"cannot bind control socket {path}: {reason}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, SOCKET_MODE)
    sock.listen(LISTEN_BACKLOG)
    return sock


def _remove_stale(path: str, info: os.stat_result) -> None:
    """Remove the stale socket file at ``path`` (``info`` its ``lstat``).

    Raises:
        ControlSocketError: It cannot be removed, in one line saying why (a stale socket left
            in a sticky directory such as /tmp by another user is the usual case).
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # removed meanwhile: the path is free all the same
    except OSError as error:
        raise ControlSocketError(
            f"cannot remove stale control socket {path}: {error.strerror}"
            f"{_why_not_removable(path, info, error)}"
        ) from None
    logger.info("replacing stale control socket %s", path)


def _why_not_removable(path: str, info: os.stat_result, error: OSError) -> str:
    """What an operator can do about a stale socket that ``unlink`` refused (or nothing)."""
    if error.errno not in (errno.EPERM, errno.EACCES):
        return ""  # a read-only file system, say: its own words are enough
    try:
        directory = os.stat(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return ""
    uid = os.geteuid()
    if directory.st_mode & stat.S_ISVTX and uid not in (info.st_uid, directory.st_uid):
        return (
            f" (it belongs to uid {info.st_uid} in a sticky directory, where only its owner,"
            " the directory's owner or root may remove it; remove it so, or set another"
            " control.socket)"
        )
    return (
        f" (uid {uid} may not remove files from its directory; remove it, or set another"
        " control.socket)"
    )


def is_allowed(uid: int, gid: int, *, owner_uid: int, config: ControlConfig) -> bool:
    """Whether a peer may use the socket: root, the daemon's own user, or a listed user/group."""
    return uid in (0, owner_uid) or uid in config.allowed_uids or gid in config.allowed_gids


Admission = Callable[[int, int], bool]
"""Decides whether a peer ``(uid, gid)`` may use the socket."""


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of a Unix socket's peer."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class ControlServer:
    """Serves the control protocol on a listening socket (see the module docstring).

    It serves from start-up: until the daemon has reached the microgrid (:meth:`attach`),
    ``ping`` and ``get_status`` answer with the microgrid's state and ``set_power`` and
    ``list_components`` get -32004.

    Args:
        loop: The request loop (``set_power`` goes there), or None until :meth:`attach`.
        tracker: The status tracker (``get_status``, ``subscribe_status``), or None.
        topology: The managed pairs (``list_components``), or None.
        config: The configuration: who may connect and how many (``control.*``), and the
            default request timeout (``requests.default_timeout_s``); read when a connection or
            request comes (a reload changes them for those that come after).
        admit: Who may use the socket; by default :func:`is_allowed` with ``control.*`` and the
            daemon's own user.
        metrics: Where requests are counted.
    """

    def __init__(
        self,
        *,
        loop: RequestLoop | None = None,
        tracker: StatusTracker | None = None,
        topology: Topology | None = None,
        config: Live[Config],
        admit: Admission | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self._owner = os.geteuid()
        self._custom_admit = admit
        self._admit_peer: Admission = admit or self._default_admit
        self.loop = loop
        self.tracker = tracker
        self.topology = topology
        self.connected = trio.Event()
        self.api_version: str | None = None
        if loop is not None and tracker is not None and topology is not None:
            self.connected.set()
        self._config = config
        self._connections = 0
        self._sessions: set[_Session] = set()
        self._accepting: trio.CancelScope | None = None
        self._watching = trio.CancelScope()  # the re-check of open connections on a reload

    def _default_admit(self, uid: int, gid: int) -> bool:
        return is_allowed(uid, gid, owner_uid=self._owner, config=self.config.control)

    def attach(
        self,
        *,
        loop: RequestLoop,
        tracker: StatusTracker,
        topology: Topology,
        api_version: str | None = None,
    ) -> None:
        """The microgrid is reached (speaking ``api_version``): serve requests from now on."""
        self.loop, self.tracker, self.topology = loop, tracker, topology
        self.api_version = api_version
        self.connected.set()

    def microgrid_state(self) -> dict[str, Any]:
        """``ping``'s and ``get_status``'s microgrid fields: reached or not, and the version."""
        if not self.connected.is_set():
            return {"microgrid": "connecting"}
        state: dict[str, Any] = {"microgrid": "connected"}
        if self.api_version is not None:
            state["microgrid_api"] = self.api_version
        return state

    @property
    def config(self) -> Config:
        """The configuration in force now."""
        return self._config.value

    def statistics(self) -> ControlStatistics:
        """A snapshot of the server's state."""
        return ControlStatistics(connections=self._connections)

    def stop_accepting(self) -> None:
        """Close the listening socket; connections already open carry on."""
        if self._accepting is not None:
            self._accepting.cancel()
        self._watching.cancel()  # the loop takes no request from now on: nothing to guard

    def close_sessions(self) -> None:
        """End every connection once what it has to write is written (the last of shutdown)."""
        for session in list(self._sessions):
            session.close()

    async def serve(
        self, sock: socket.socket, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept connections until :meth:`stop_accepting`, then wait for open ones to finish."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        async with trio.open_nursery() as sessions:
            sessions.start_soon(self._watch_admission)
            with trio.CancelScope() as accepting:
                self._accepting = accepting
                task_status.started()
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as error:
                        if error.errno not in TRANSIENT_ACCEPT_ERRORS:
                            raise  # the listening socket itself is broken: not ours to mend
                        # Out of descriptors or memory: wait rather than spin, and try again.
                        logger.warning("control socket: accept failed (%s); retrying", error)
                        await trio.sleep(ACCEPT_RETRY_S)
                        continue
                    sessions.start_soon(self._connection, stream)
            self._watching.cancel()
            await listener.aclose()

    async def _watch_admission(self) -> None:
        """On every change of ``control.*``, end the connections of peers no longer allowed."""
        with self._watching:
            while True:
                await self._config.view(lambda config: config.control).changed()
                for session in list(self._sessions):
                    pid, uid, gid = session.peer
                    if self._admit_peer(uid, gid):
                        continue
                    logger.warning(
                        "control socket: pid %d (uid %d, gid %d) is no longer allowed after the"
                        " reload; closing its connection",
                        pid,
                        uid,
                        gid,
                    )
                    session.revoke(
                        Failure(
                            id=None,
                            code=Code.NOT_AUTHORISED,
                            message=(
                                f"not authorised: uid {uid} / gid {gid} may no longer use this"
                                " socket (the configuration was reloaded); requests not started"
                                " are withdrawn"
                            ),
                        )
                    )

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            peer = self._admit(stream)
            if isinstance(peer, Failure):
                await _refuse(stream, peer)
                return
            self._connections += 1
            session = _Session(self, stream, peer)
            self._sessions.add(session)
            try:
                await session.run()
            finally:
                self._sessions.discard(session)
                self._connections -= 1
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            # The client went away, perhaps before reading its reply: an ordinary event. It
            # arrives wrapped in an ExceptionGroup from the session's nursery, hence except*.
            pass
        except* Exception:
            # A bug in one session must not end the server: this task is its fault barrier.
            logger.exception("control socket: a session failed; its connection is closed")
        finally:
            await trio.aclose_forcefully(stream)

    def _admit(self, stream: trio.SocketStream) -> tuple[int, int, int] | Failure:
        """The peer's ``(pid, uid, gid)`` if it may be served now, else why not."""
        try:
            pid, uid, gid = peer_credentials(stream.socket)
        except OSError as error:
            return Failure(id=None, code=Code.NOT_AUTHORISED, message=f"not authorised: {error}")
        if not self._admit_peer(uid, gid):
            logger.warning("control socket: refused pid %d (uid %d, gid %d)", pid, uid, gid)
            return Failure(
                id=None,
                code=Code.NOT_AUTHORISED,
                message=f"not authorised: uid {uid} / gid {gid} may not use this socket",
            )
        if self._connections >= self.config.control.max_connections:
            return Failure(
                id=None,
                code=Code.OVERLOADED,
                message=(
                    f"overloaded: {self.config.control.max_connections} connections open;"
                    " retry later"
                ),
            )
        return pid, uid, gid


REFUSAL_LINGER_S = 1.0
"""How long a refused connection is drained before it is closed."""


async def _refuse(stream: trio.SocketStream, failure: Failure) -> None:
    """Send ``failure`` and close so that the client reads it.

    Closing a socket with unread input makes the kernel reset the connection, and the client
    may lose the error line; so: send, half-close, drain what the client sent, then close.
    """
    with trio.move_on_after(REFUSAL_LINGER_S):
        await stream.send_all(protocol.error_line(failure))
        await stream.send_eof()
        while await stream.receive_some(65536):
            pass


def _peer_gone(stream: trio.SocketStream) -> bool:
    """Whether the peer closed its socket, rather than only its sending half.

    After a Unix socket's peer closes, ``poll`` reports ``POLLHUP``; after a mere
    ``shutdown(SHUT_WR)`` only ``POLLRDHUP``. Both read as EOF, so only this tells a client
    that still waits for its replies from one that has gone.
    """
    poller = select.poll()
    poller.register(stream.socket.fileno(), select.POLLHUP)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


class _Session:
    """One client connection: a reader, a writer, and the replies in between."""

    def __init__(
        self, server: ControlServer, stream: trio.SocketStream, peer: tuple[int, int, int]
    ) -> None:
        self._server = server
        self._stream = stream
        self.peer = peer  # (pid, uid, gid), from SO_PEERCRED when it connected
        self._replies: collections.deque[bytes] = collections.deque()
        # Status changes not yet written, one per battery: a newer change replaces an older
        # one, so a subscriber that reads, however slowly, ends with the truth and is never
        # dropped for how many batteries changed at once.
        self._changes: dict[int, dict[str, Any]] = {}
        self._more = trio.Event()  # set when a line or a change is waiting for the writer
        self._closing = False
        self._drained = trio.Event()  # set when the writer has taken a reply
        self._pending = 0
        self._requests: list[Request] = []  # taken, not answered yet
        self._idle = trio.Event()
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._subscribed = False
        self._revoked = False  # the peer is no longer allowed: read nothing more, then close
        self._eof = trio.Event()  # the reader saw the end of the client's input

    def _put(self, line: bytes) -> None:
        """Queue a reply for the client (bounded by :meth:`_room`, which the reader awaits)."""
        if self._closing:
            return  # the session is over
        self._replies.append(line)
        self._more.set()

    async def _room(self) -> None:
        """Back-pressure: wait until the client has taken enough replies to take a new line."""
        while len(self._replies) + self._pending >= OUTBOX_LINES and not self._revoked:
            self._drained = trio.Event()
            await self._drained.wait()

    def _drop(self) -> None:
        """Cut off a client that does not read (once; the replies still coming are dropped)."""
        logger.warning(
            "control socket: a client took no reply for %g s; dropping it", WRITE_STALL_S
        )
        self._closing = True
        self._replies.clear()
        self._scope.cancel()

    def close(self) -> None:
        """Write what is waiting, then end the connection."""
        self._closing = True
        self._more.set()

    def revoke(self, failure: Failure) -> None:
        """The peer may no longer use the socket: withdraw what waits, say why, then close.

        Nothing it sends from now on is read as a request; requests already being applied
        finish (their replies are not written). The error line is the last thing written,
        followed by EOF, and the connection closes once the client closes its side too (or
        after :data:`REFUSAL_LINGER_S`), so that the client reads the line.
        """
        if self._revoked:
            return
        self._revoked = True
        self._withdraw_waiting()
        self._replies.clear()
        self._changes.clear()
        self._replies.append(protocol.error_line(failure))
        self._closing = True
        self._more.set()
        self._drained.set()  # a reader waiting for room reads on (and discards)

    def _change(self, battery: int, params: dict[str, Any]) -> None:
        """Queue a status change, replacing one for the same battery not yet written."""
        if self._revoked:
            return  # the error line is the last thing it is sent
        self._changes.pop(battery, None)  # the newest goes last, in the order things happened
        self._changes[battery] = params
        self._more.set()

    async def run(self) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write)
                await self._read()
                if self._revoked:
                    await trio.sleep_forever()  # the writer ends the session
                # EOF. A client that only half-closed still reads: answer what is pending,
                # then close (the writer drains the outbox and ends the session, a
                # subscription with it). A client that has gone (its socket closed) will read
                # nothing: what waits for its batteries is not applied.
                if _peer_gone(self._stream):
                    self._withdraw_waiting()
                if self._pending:
                    await self._idle.wait()
                self._closing = True
                self._more.set()

    async def _write(self) -> None:
        """Write replies first, then status changes; end once closing and all is written."""
        while True:
            if self._replies:
                line = self._replies.popleft()
                self._drained.set()
            elif self._changes:
                battery = next(iter(self._changes))
                line = protocol.notification_line("status_changed", self._changes.pop(battery))
            elif self._closing:
                break
            else:
                self._more = trio.Event()
                await self._more.wait()
                continue
            with trio.move_on_after(
                REFUSAL_LINGER_S if self._revoked else WRITE_STALL_S
            ) as stalled:
                await self._stream.send_all(line)
            if stalled.cancelled_caught:
                if self._revoked:
                    self._scope.cancel()  # it was told; it does not read: close all the same
                else:
                    self._drop()
                return
        if self._revoked:
            # As for a refused connection: EOF after the error line, and close once the
            # client has closed too, or the kernel's reset could destroy the line unread.
            with trio.move_on_after(REFUSAL_LINGER_S):
                await self._stream.send_eof()
                await self._eof.wait()
        self._scope.cancel()

    async def _read(self) -> None:
        framer = LineFramer()
        while True:
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._withdraw_waiting()  # reset: the client has gone
                self._scope.cancel()
                return
            if not data:
                self._eof.set()
                return
            for line in framer.feed(data):
                await self._room()
                if self._revoked:
                    break  # read only to see the client's EOF
                if line is TOO_LONG:
                    self._fail(Failure(id=None, code=Code.LINE_TOO_LONG, message=TOO_LONG_MESSAGE))
                elif isinstance(line, bytes) and line.strip():
                    self._handle(line)

    def _answer(self, call: Call, result: Any, outcome: str = "ok") -> None:
        self._server.metrics.request(call.method, outcome)
        if not call.notification:
            self._put(protocol.result_line(call.id, result))

    def _fail(self, failure: Failure, method: str = INVALID) -> None:
        """Answer with an error; ``method`` is the call's, if it was read as far as that."""
        self._server.metrics.request(method, error_outcome(failure.code))
        if not failure.notification:
            self._put(protocol.error_line(failure))

    def _refuse(self, call: Call, code: Code, message: str) -> None:
        """Answer ``call`` with an error the daemon decided (not a malformed request)."""
        self._fail(
            Failure(id=call.id, code=code, message=message, notification=call.notification),
            call.method,
        )

    def _handle(self, line: bytes) -> None:
        call = protocol.decode(line)
        if isinstance(call, Failure):
            self._fail(call)
            return
        server = self._server
        loop, tracker, topology = server.loop, server.tracker, server.topology
        connected = loop is not None and tracker is not None and topology is not None
        if call.method in ("set_power", "list_components") and not connected:
            self._refuse(
                call,
                Code.NOT_CONNECTED,
                "the microgrid is not connected yet (discovery has not completed); "
                "nothing was commanded",
            )
            return
        if call.method == "set_power":
            assert loop is not None
            request = protocol.parse_set_power(
                call, default_timeout_s=server.config.requests.default_timeout_s
            )
            if isinstance(request, Failure):
                self._fail(request, call.method)
                return
            if loop.closed:
                self._refuse(
                    call,
                    Code.SHUTTING_DOWN,
                    "shutting down: not taken; do not retry here (a restarted daemon will answer)",
                )
                return
            if not loop.submit(request, self._reply_to(call, request)):
                self._refuse(
                    call, Code.OVERLOADED, "overloaded: the request queue is full; retry later"
                )
                return
            self._pending += 1
            self._requests.append(request)
            return
        refusal = protocol.check_no_params(call)
        if refusal is not None:
            self._fail(refusal, call.method)
            return
        if call.method == "ping":
            self._answer(
                call,
                {
                    "version": __version__,
                    "uptime_s": time.monotonic() - STARTED_MONOTONIC,
                    **self._server.microgrid_state(),
                },
            )
        elif call.method == "get_status":
            if tracker is None or loop is None:
                report: dict[str, Any] = {"batteries": [], "working": [], "uncertain": []}
            else:
                report = status_report(
                    tracker.states,
                    tracker.fleet,
                    loop.statistics().setpoints,
                    now=trio.current_time(),
                )
            self._answer(call, {**report, **self._server.microgrid_state()})
        elif call.method == "list_components":
            assert topology is not None
            self._answer(call, components_report(topology))
        elif call.method == "subscribe_status":
            if not self._subscribed:
                self._subscribed = True
                assert self._nursery is not None
                self._nursery.start_soon(self._notify_changes)
            self._answer(call, {"subscribed": True})

    def _withdraw_waiting(self) -> None:
        loop = self._server.loop
        if loop is None:
            return
        for request in list(self._requests):
            if loop.withdraw(request):
                self._requests.remove(request)
                self._server.metrics.request("set_power", "withdrawn")
                self._done_with_one()

    def _done_with_one(self) -> None:
        self._pending -= 1
        if not self._pending:
            self._idle.set()
            self._idle = trio.Event()

    def _reply_to(self, call: Call, request: Request) -> Callable[[Result, Timing], None]:
        def reply(result: Result, timing: Timing) -> None:
            answer = protocol.result_object(result)
            answer["timing"] = {
                "total_ms": round(timing.total_s * 1e3, 3),
                "commands_ms": round(timing.commands_s * 1e3, 3),
            }
            self._answer(call, answer, outcome=answer["outcome"])
            if request in self._requests:
                self._requests.remove(request)
            self._done_with_one()

        return reply

    async def _notify_changes(self) -> None:
        if not self._server.connected.is_set():
            # Subscribed before the microgrid was reached: every battery is news once it is.
            await self._server.connected.wait()
            previous = Board(version=-1, states={})
        else:
            assert self._server.tracker is not None
            previous = self._server.tracker.board.value
        assert self._server.tracker is not None
        board = self._server.tracker.board
        async with aclosing(board.eventual_values()) as boards:
            async for current in boards:
                for battery, state in sorted(current.states.items()):
                    before = previous.states.get(battery)
                    if before is None or (before.status, before.reasons) != (
                        state.status,
                        state.reasons,
                    ):
                        self._change(
                            battery,
                            {
                                "id": battery,
                                "status": state.status.value,
                                "reasons": sorted(state.reasons),
                            },
                        )
                previous = current
