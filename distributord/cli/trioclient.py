"""The JSON-RPC client over a trio stream, for the demo and the tests.

Theory of operation
-------------------
:class:`Client` only moves bytes: it writes the lines that
:class:`~distributord.core.rpcclient.RpcClient` makes and feeds it what the stream reads, until
it has the message asked for. Every rule (ids, framing, which replies are ours, what is kept for
later, what is a bad reply, the end of the connection) is ``RpcClient``'s, the same as for
``distributorctl``. Requests may be pipelined: :meth:`Client.send` several, then
:meth:`Client.reply_to` each in any order, or :meth:`Client.receive` messages as they come.

It sets no deadlines; callers wrap waits in ``trio.fail_after`` as they see fit. A stream that
breaks raises trio's own errors; a daemon that closes the connection raises
:class:`~distributord.core.errors.UnreachableError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from distributord.core.protocol import JsonId
from distributord.core.rpcclient import RECEIVE_BYTES, Message, RpcClient, result_of


class Client:
    """One JSON-RPC connection to the daemon over a trio stream (pipelining allowed).

    Args:
        stream: The connected stream; the caller closes it.
    """

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self._client = RpcClient()

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are: not a request RpcClient knows of (see its rule on null ids)."""
        await self.stream.send_all(data)

    async def send(self, method: str, params: Mapping[str, Any] | None = None) -> int:
        """Send a request; returns its id."""
        request_id, line = self._client.request(method, params)
        await self.send_raw(line)
        return request_id

    async def receive(self) -> Message:
        """The next message not taken yet, a reply or a notification, in arrival order.

        Raises:
            UnreachableError: The daemon closed the connection and all it sent has been taken.
            BadReplyError: The next line is not a JSON object, or is too long.
        """
        return await self._wait(self._client.next_message)

    async def reply_to(self, request_id: JsonId) -> Message:
        """The whole reply to ``request_id``; what arrived before it is kept for later.

        Raises:
            UnreachableError: The daemon closed the connection without replying.
            BadReplyError: A line before the reply is not a JSON object, or is too long.
        """
        return await self._wait(lambda: self._client.reply_to(request_id))

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Message:
        """Send a request and return its whole reply, an error reply included."""
        return await self.reply_to(await self.send(method, params))

    async def result(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Send a request and return its result.

        Raises:
            DaemonError: The reply is a JSON-RPC error.
        """
        return result_of(await self.call(method, params))

    async def _wait(self, take: Callable[[], Message | None]) -> Message:
        """Read until ``take`` has a message."""
        while (message := take()) is None:
            data = await self.stream.receive_some(RECEIVE_BYTES)
            self._client.receive_data(bytes(data))  # bytes already, for a socket: no copy
        return message


@asynccontextmanager
async def open_client(path: str | Path) -> AsyncIterator[Client]:
    """A client connected to the daemon's socket at ``path``, closed on exit."""
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        yield Client(stream)
