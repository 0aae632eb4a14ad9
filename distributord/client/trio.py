"""The trio face: :class:`~distributord.client.connection.Connection` over a trio stream.

The one trio client of the project: the library's, the demo's and the tests'. What it adds to
the connection is IO only: ``trio.open_unix_socket``, a write, a read and trio's lock. A stream
that breaks while reading, or while writing a request, is
:class:`~distributord.core.errors.UnreachableError`; :meth:`Client.send_raw` (bytes as they
are, for tests) leaves trio's own errors as they are.

A cancel that strikes while a request line is being written (only when the daemon has stopped
reading) leaves an unknown part of it on the wire: the stream is closed then, so that nothing
half-written is ever followed by more (``connection``'s rule on cancellation).

It imports trio: the user of this face brings it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from distributord.core.errors import UnreachableError
from distributord.core.protocol import DEFAULT_SOCKET
from distributord.core.rpcclient import RECEIVE_BYTES

from .connection import Connection, cannot_connect, peer_name


class Client(Connection):
    """One connection to the daemon on trio; see :class:`Connection` for its methods.

    Requests may be pipelined: :meth:`send` several, then :meth:`reply_to` each in any order,
    or :meth:`receive` messages as they come; or call the typed methods from several tasks.

    Args:
        stream: The connected stream; the caller closes it (or :func:`open_client` does).
        peer: How errors name the daemon.
        keep_all_notifications: Keep every notification for :meth:`receive`.
    """

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        *,
        peer: str = "distributord",
        keep_all_notifications: bool = False,
    ) -> None:
        self.stream = stream
        self._peer = peer
        self._sending = trio.Lock()
        super().__init__(peer=peer, keep_all_notifications=keep_all_notifications)

    def _new_lock(self) -> AbstractAsyncContextManager[Any]:
        return trio.Lock()

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (trio's errors as they are)."""
        await self.stream.send_all(data)

    async def _write(self, line: bytes) -> None:
        if self._sending.locked():
            await self._sending.acquire()  # another task writes: wait for it
        else:
            self._sending.acquire_nowait()  # no schedule point: no deadline passes meanwhile
        try:
            # A cancel already due is taken here, before any byte goes out: the connection
            # stays. This does not yield otherwise, so send_all starts as uncancelled as this.
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                await self.stream.send_all(line)
            except trio.Cancelled:
                # send_all blocked part-way (the daemon stopped reading) and was cancelled:
                # part of the line may be out, and nothing may follow it. Closed now; later
                # calls say so.
                await trio.aclose_forcefully(self.stream)
                raise
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise UnreachableError(f"{self._peer}: {error or 'the connection is closed'}") from None
        finally:
            self._sending.release()

    async def _read(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(RECEIVE_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise UnreachableError(f"{self._peer}: {error or 'the connection is closed'}") from None

    async def aclose(self) -> None:
        """Close the stream."""
        await self.stream.aclose()


@asynccontextmanager
async def open_client(
    path: str | Path = DEFAULT_SOCKET,
    *,
    program: str | None = None,
    keep_all_notifications: bool = False,
) -> AsyncIterator[Client]:
    """A client connected to the socket at ``path``: :func:`distributord.client.open_client`."""
    peer = peer_name(path)
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError as error:
        raise cannot_connect(peer, error) from None
    async with stream:
        client = Client(stream, peer=peer, keep_all_notifications=keep_all_notifications)
        await client.start(program)
        yield client
