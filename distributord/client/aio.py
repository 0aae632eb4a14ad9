"""The asyncio face: :class:`~distributord.client.connection.Connection` over a Unix stream.

What it adds to the connection is IO only: ``asyncio.open_unix_connection``, a write (whole:
``StreamWriter.write`` buffers the line at once, so a cancelled ``drain`` never cuts it short),
a read, and asyncio's lock. A connection that breaks (reset, or refused when opening) is
:class:`~distributord.core.errors.UnreachableError`, naming the socket.

Standard library only (no trio, no grpc): what a client-only install has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from distributord.core.errors import UnreachableError
from distributord.core.protocol import DEFAULT_SOCKET
from distributord.core.rpcclient import RECEIVE_BYTES

from .connection import Connection, cannot_connect, peer_name


class Client(Connection):
    """One connection to the daemon on asyncio; see :class:`Connection` for its methods.

    Args:
        reader: The connection's reader.
        writer: Its writer; :meth:`aclose` closes it.
        peer: How errors name the daemon.
        keep_all_notifications: Keep every notification for :meth:`receive`.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer: str = "distributord",
        keep_all_notifications: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._peer = peer
        super().__init__(peer=peer, keep_all_notifications=keep_all_notifications)

    def _new_lock(self) -> AbstractAsyncContextManager[Any]:
        return asyncio.Lock()

    async def _write(self, line: bytes) -> None:
        await self.send_raw(line)

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are."""
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as error:
            raise UnreachableError(f"{self._peer}: {error}") from None

    async def _read(self) -> bytes:
        try:
            return await self._reader.read(RECEIVE_BYTES)
        except OSError as error:
            raise UnreachableError(f"{self._peer}: {error}") from None

    async def aclose(self) -> None:
        """Close the connection (the daemon withdraws what of ours has not started)."""
        self._writer.close()
        with contextlib.suppress(OSError):  # it had broken already: closed all the same
            await self._writer.wait_closed()


@asynccontextmanager
async def open_client(
    path: str | Path = DEFAULT_SOCKET,
    *,
    program: str | None = None,
    keep_all_notifications: bool = False,
) -> AsyncIterator[Client]:
    """A client connected to the daemon's socket at ``path``, closed on exit.

    Args:
        path: The control socket (the daemon's default unless given).
        program: If given, say ``hello`` as this program first.
        keep_all_notifications: Keep every notification for :meth:`Client.receive`.

    Raises:
        UnreachableError: Nothing listens at ``path``, or it refused us.
        HelloRefusedError: The daemon refused ``program``.
    """
    peer = peer_name(path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError as error:
        raise cannot_connect(peer, error) from None
    client = Client(reader, writer, peer=peer, keep_all_notifications=keep_all_notifications)
    try:
        await client.start(program)
        yield client
    finally:
        await client.aclose()
