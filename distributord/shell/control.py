"""The control socket: moves the bytes of JSON-RPC 2.0 sessions on a Unix socket.

Theory of operation
-------------------
Every rule of a connection (framing, ids, back-pressure, the daemon's refusals, how a
connection ends) lives in :class:`distributord.core.session.Session`, which does no IO. This
module does the IO around it:

* **The socket.** :func:`bind_control_socket` binds it mode 0660 (a stale socket file from an
  earlier run is replaced; a live one is refused), unless systemd passed one in.
  :func:`open_control_socket` also removes the file at the end (a stop, an error, a start that
  failed after binding), but only if the path still names the file it bound (same device and
  inode): once the daemon stops accepting, another one may have found the socket stale and
  bound its own there. A socket systemd passed in is systemd's: the socket unit created the
  file and removes it, so the daemon never does.
* **Admission.** :class:`ControlServer` accepts with :func:`trio.serve_listeners` (which also
  waits out a process short of descriptors or memory). A connection's peer
  (``SO_PEERCRED``, and its supplementary groups from ``SO_PEERGROUPS`` or the group
  database) must be root, the daemon's own user, or in ``control.allowed_uids`` /
  ``allowed_gids`` (its primary gid or any supplementary one), else it gets -32003 and is
  closed; past ``control.max_connections`` a new connection gets -32001 and is closed. A reload
  that takes a peer's uid or groups out of the allowed ones revokes that peer's sessions (a
  peer once let in is not let in for good).
* **One connection** is a reader, a writer and, once the client subscribes, a notifier (and,
  once it follows bounds, a follower that looks at them every :data:`BOUNDS_INTERVAL_S` and
  hands the session those that changed), all around one session. When it ends, its
  ``until_disconnect`` proposals end with it (:meth:`Served.disconnected`). The reader reads
  while the session wants input; the writer writes the lines the session hands out, each
  within :data:`WRITE_STALL_S` (a client that takes nothing for that long is cut off, and
  nobody else notices); the notifier feeds the session the batteries' status changes. They
  wait on one :class:`trio_util.RepeatedEvent`, set whenever the session may have something
  new (a reply from the request loop, a change, room to read).
  After EOF the reader asks the kernel whether the client only half-closed (it still reads its
  replies) or has gone (``POLLHUP``: what still waits is withdrawn).

Nothing a client sends can raise out of a connection: a broken connection ends that
connection, and a bug in one is logged and ends that one only.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import select
import socket
import stat
import struct
from collections.abc import AsyncGenerator, Callable, Collection, Iterator, Mapping
from contextlib import aclosing, contextmanager
from typing import Any, Protocol

import attrs
import trio
import trio_util

from distributord.core import protocol
from distributord.core import session as core_session
from distributord.core.config import Config, ControlConfig
from distributord.core.errors import ControlSocketError
from distributord.core.protocol import Code, Failure
from distributord.core.session import Count, Phase, Session
from distributord.shell.live import Live

logger = logging.getLogger(__name__)

WRITE_STALL_S = 30.0
"""A client that takes no line for this long while lines wait does not read at all: it is cut
off (its connection slot and its memory are freed)."""

BOUNDS_INTERVAL_S = 0.1
"""How often a ``subscribe_bounds`` subscriber's bounds are looked at: a change is sent within
this, coalesced to the latest value, at most 10 per second (``spec/arbitration.md``)."""

REFUSAL_LINGER_S = 1.0
"""How long a refused or revoked connection is drained before it is closed."""

RECEIVE_BYTES = 65536
"""What one read asks for: a request for 1,024 batteries is about 10 KiB."""

SOCKET_MODE = 0o660
"""Owner and group may connect (the spec's mode; the group is how operators are let in)."""

LISTEN_BACKLOG = 128


class Served(core_session.Backend, Protocol):
    """What a connection needs of the daemon: the session's questions, and status changes."""

    def status_changes(self) -> AsyncGenerator[list[tuple[int, dict[str, Any]]], None]:
        """Batches of ``status_changed`` notifications, from when the microgrid is reached."""

    def notices(self) -> AsyncGenerator[list[tuple[str, Mapping[str, Any]]], None]:
        """Batches of event notifications (``command_failed``), as ``(method, params)``."""

    def disconnected(self, session: Session) -> None:
        """A connection ended: its ``until_disconnect`` proposals end with it."""


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


@contextmanager
def open_control_socket(path: str) -> Iterator[socket.socket]:
    """:func:`bind_control_socket` for a block; at its end, close the socket and remove its file.

    The file is removed only if ``path`` still names the one bound here (same device and
    inode); a file that has taken its place since is someone else's and stays.

    Raises:
        ControlSocketError: Why the socket cannot be bound, in one line.
    """
    sock = bind_control_socket(path)
    with sock:
        try:
            bound: os.stat_result | None = os.lstat(path)
        except OSError:  # gone already: nothing of ours to remove later
            bound = None
        try:
            yield sock
        finally:
            if bound is not None:
                _remove_own(path, bound)


def _remove_own(path: str, bound: os.stat_result) -> None:
    """Remove the socket file at ``path`` if it is still ``bound`` (its ``lstat`` at binding)."""
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return  # removed by someone else: nothing left to do
    except OSError as error:
        logger.warning("cannot check control socket %s to remove it: %s", path, error.strerror)
        return
    if (now.st_dev, now.st_ino) != (bound.st_dev, bound.st_ino):
        logger.info("control socket %s is another file now; leaving it", path)
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning("cannot remove control socket %s: %s", path, error.strerror)


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


def is_allowed(
    uid: int,
    gid: int,
    *,
    owner_uid: int,
    config: ControlConfig,
    groups: Collection[int] = (),
) -> bool:
    """Whether a peer may use the socket: root, the daemon's own user, or a listed user/group.

    Args:
        uid: The peer's uid.
        gid: The peer's primary gid.
        owner_uid: The daemon's own uid.
        config: ``control.*``.
        groups: The peer's supplementary gids: a member of an allowed group is allowed
            whether the group is its primary one or not.
    """
    if uid in (0, owner_uid) or uid in config.allowed_uids:
        return True
    allowed = config.allowed_gids
    return gid in allowed or any(group in allowed for group in groups)


Admission = Callable[[int, int], bool]
"""A stand-in for the default admission (tests): decides whether a peer ``(uid, gid)`` may
use the socket."""


@attrs.frozen(kw_only=True)
class Peer:
    """Who is at the other end of a connection, as the kernel said when it connected.

    Attributes:
        pid: Its process id.
        uid: Its user id.
        gid: Its primary group id.
        groups: Its supplementary group ids (may include ``gid``).
    """

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux >= 4.13: a Unix socket peer's supplementary groups, as ``gid_t``s (Python's socket
module may not name it; 59 on Linux)."""

_PEERGROUPS_BYTES = (64, 1024)
"""Buffers tried in turn (the kernel says ERANGE when the groups do not fit): 16 groups, then
256, the most Python's ``getsockopt`` can take; a peer in more is looked up by name."""


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of a Unix socket's peer."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def peer_groups(sock: Any, uid: int, gid: int) -> tuple[int, ...]:
    """The supplementary gids of a Unix socket's peer ``(uid, gid)``.

    From ``SO_PEERGROUPS``: the groups the peer process had when it connected. Where the
    kernel does not have it (before 4.13) or the groups do not fit, from the group database
    by the uid's name (what the user's next login would get); a uid with no name has none.
    """
    for size in _PEERGROUPS_BYTES:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as error:
            if error.errno == errno.ERANGE:
                continue
            break
        count = len(raw) // struct.calcsize("I")
        return struct.unpack(f"{count}I", raw[: count * struct.calcsize("I")])
    try:
        return tuple(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except (KeyError, OSError):
        return ()


class ControlServer:
    """Serves the control protocol on a listening socket (see the module docstring).

    It serves from start-up: until the microgrid is reached, ``ping`` and ``get_status`` say
    so and ``set_power`` and ``list_components`` get -32004 (the session's rule, asked of
    ``served``).

    Args:
        served: What the sessions ask of the daemon.
        config: The running configuration; ``control.*`` is read when a connection comes, and
            a change of it re-checks the connections open.
        admit: Who may use the socket, in place of the default: :func:`is_allowed` with
            ``control.*``, the daemon's own user and the peer's supplementary groups.
        count: Counts each request answered, refused or withdrawn (the metrics).
    """

    def __init__(
        self,
        served: Served,
        *,
        config: Live[Config],
        admit: Admission | None = None,
        count: Count = lambda method, outcome: None,
    ) -> None:
        self._served = served
        self._control = config.view(lambda c: c.control)
        self._owner = os.geteuid()
        self._admit_peer: Admission | None = admit
        self._count = count
        self._connections: set[_Connection] = set()
        self._accepting = trio.CancelScope()
        self._watching = trio.CancelScope()  # the re-check of open connections on a reload

    def _allowed(self, peer: Peer) -> bool:
        if self._admit_peer is not None:
            return self._admit_peer(peer.uid, peer.gid)
        return is_allowed(
            peer.uid,
            peer.gid,
            owner_uid=self._owner,
            config=self._control.value,
            groups=peer.groups,
        )

    def statistics(self) -> ControlStatistics:
        """A snapshot of the server's state."""
        return ControlStatistics(connections=len(self._connections))

    def stop_accepting(self) -> None:
        """Close the listening socket; connections already open carry on."""
        self._accepting.cancel()
        self._watching.cancel()  # the loop takes no request from now on: nothing to guard

    def close_sessions(self) -> None:
        """End every connection once what it has to write is written (the last of shutdown)."""
        for connection in list(self._connections):
            connection.session.close()

    async def serve(
        self, sock: socket.socket, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept connections until :meth:`stop_accepting`, then wait for open ones to finish."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        async with trio.open_nursery() as connections:
            connections.start_soon(self._watch_admission)
            await connections.start(self._accept, listener, connections)
            task_status.started()

    async def _accept(
        self, listener: trio.SocketListener, connections: trio.Nursery, *, task_status: Any
    ) -> None:
        # trio's accept loop: it waits out EMFILE/ENFILE/ENOBUFS/ENOMEM (logging each), lets
        # trio's listener skip a peer that gave up in the backlog, and raises anything else
        # (the listening socket itself is broken: not ours to mend). It closes the listener.
        with self._accepting:
            await trio.serve_listeners(
                self._connection, [listener], handler_nursery=connections, task_status=task_status
            )

    async def _watch_admission(self) -> None:
        """On every change of ``control.*``, revoke the sessions of peers no longer allowed."""
        with self._watching:
            while True:
                await self._control.changed()
                for connection in list(self._connections):
                    peer = connection.peer
                    if self._allowed(peer):
                        continue
                    pid, uid, gid = peer.pid, peer.uid, peer.gid
                    logger.warning(
                        "control socket: pid %d (uid %d, gid %d) is no longer allowed after the"
                        " reload; closing its connection",
                        pid,
                        uid,
                        gid,
                    )
                    connection.session.revoke(
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
            connection = _Connection(stream, peer, self._served, self._count)
            self._connections.add(connection)
            try:
                await connection.run()
            finally:
                self._connections.discard(connection)
                self._served.disconnected(connection.session)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            # The client went away, perhaps before reading its reply: an ordinary event. It
            # arrives wrapped in an ExceptionGroup from the connection's nursery.
            pass
        except* Exception:
            # A bug in one connection must not end the server: this task is its fault barrier.
            logger.exception("control socket: a session failed; its connection is closed")
        finally:
            await trio.aclose_forcefully(stream)

    def _admit(self, stream: trio.SocketStream) -> Peer | Failure:
        """The peer if it may be served now, else why not."""
        try:
            pid, uid, gid = peer_credentials(stream.socket)
        except OSError as error:
            return Failure(id=None, code=Code.NOT_AUTHORISED, message=f"not authorised: {error}")
        peer = Peer(pid=pid, uid=uid, gid=gid, groups=peer_groups(stream.socket, uid, gid))
        if not self._allowed(peer):
            logger.warning(
                "control socket: refused pid %d (uid %d, gid %d, groups %s)",
                pid,
                uid,
                gid,
                ",".join(map(str, peer.groups)) or "none",
            )
            return Failure(
                id=None,
                code=Code.NOT_AUTHORISED,
                message=f"not authorised: uid {uid} / gid {gid} may not use this socket",
            )
        limit = self._control.value.max_connections
        if len(self._connections) >= limit:
            return Failure(
                id=None,
                code=Code.OVERLOADED,
                message=f"overloaded: {limit} connections open; retry later",
            )
        return peer


async def _refuse(stream: trio.SocketStream, failure: Failure) -> None:
    """Send ``failure`` and close so that the client reads it.

    Closing a socket with unread input makes the kernel reset the connection, and the client
    may lose the error line; so: send, half-close, drain what the client sent, then close.
    """
    with trio.move_on_after(REFUSAL_LINGER_S):
        await stream.send_all(protocol.error_line(failure))
        await stream.send_eof()
        while await stream.receive_some(RECEIVE_BYTES):
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


class _Connection:
    """One client connection: the session, and the tasks that move its bytes."""

    def __init__(
        self,
        stream: trio.SocketStream,
        peer: Peer,
        served: Served,
        count: Count,
    ) -> None:
        self._stream = stream
        self.peer = peer  # from SO_PEERCRED and SO_PEERGROUPS when it connected
        self._served = served
        self._moved = trio_util.RepeatedEvent()  # the session may have something new
        # The outbox's bound is read here, so that a test may shrink it for the module.
        self.session = Session(
            served,
            count=count,
            wake=self._wake,
            outbox_lines=core_session.OUTBOX_LINES,
            caller=core_session.Caller(
                pid=peer.pid, uid=peer.uid, gid=peer.gid, groups=peer.groups
            ),
        )
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._notifying = False
        self._following = False

    def _wake(self) -> None:
        self._moved.set()
        if self._nursery is None:
            return
        if self.session.subscribed and not self._notifying:
            self._notifying = True
            self._nursery.start_soon(self._notify)
        if self.session.bounds and not self._following:
            self._following = True
            self._nursery.start_soon(self._follow_bounds)

    async def run(self) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write)
                await self._read()

    async def _read(self) -> None:
        session = self.session
        while session.input_open:
            if not session.wants_data:  # back-pressure: its replies wait to be taken
                await self._moved.wait()
                continue
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                session.gone()  # reset
                return
            if not data and _peer_gone(self._stream):
                session.gone()
                return
            session.receive_data(data)

    async def _write(self) -> None:
        """Write what the session hands out; end the connection once it is finished."""
        session = self.session
        while True:
            line = session.next_line()
            if line is None:
                if session.finished:
                    break
                await self._moved.wait()
                continue
            revoked = session.phase is Phase.REVOKED
            with trio.move_on_after(REFUSAL_LINGER_S if revoked else WRITE_STALL_S) as stalled:
                await self._stream.send_all(line)
            if stalled.cancelled_caught:
                if not revoked:
                    logger.warning(
                        "control socket: a client took no reply for %g s; dropping it",
                        WRITE_STALL_S,
                    )
                session.stalled()
                break
        if session.phase is Phase.REVOKED:
            # As for a refused connection: EOF after the error line, and close once the
            # client has closed too, or the kernel's reset could destroy the line unread.
            with trio.move_on_after(REFUSAL_LINGER_S):
                await self._stream.send_eof()
                while not session.input_ended:
                    await self._moved.wait()
        self._scope.cancel()

    async def _follow_bounds(self) -> None:
        """Send ``bounds_changed`` for each followed set when its bounds change (polled)."""
        sent: dict[frozenset[int], Mapping[str, Any]] = {}
        session = self.session
        while True:
            for batteries in list(session.bounds):
                params = self._served.bounds(session.program, batteries)
                if params is not None and params != sent.get(batteries):
                    sent[batteries] = params
                    session.notify("bounds_changed", params)
            await trio.sleep(BOUNDS_INTERVAL_S)

    async def _notify(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._announce)
            async with aclosing(self._served.status_changes()) as batches:
                async for changes in batches:
                    for battery, params in changes:
                        self.session.status_changed(battery, params)

    async def _announce(self) -> None:
        async with aclosing(self._served.notices()) as batches:
            async for notices in batches:
                for method, params in notices:
                    self.session.announce(method, params)
