"""Shared pieces for tests that run the real daemon: a socket client and a running daemon."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from distributord.core.protocol import LineFramer
from distributord.core.status import Status
from distributord.shell.control import bind_control_socket
from distributord.shell.daemon import Daemon, DaemonSettings, serve_daemon
from distributord.sim.server import Simulator

LIMIT_S = 15.0
"""Every wait in these helpers fails (TooSlowError) after this long instead of hanging."""


class Client:
    """A JSON-RPC client on a real Unix socket (pipelining allowed)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._framer = LineFramer(limit=10**9)
        self._messages: deque[dict[str, Any]] = deque()
        self._next_id = 0

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, method: str, params: Any = None, *, request_id: Any = ...) -> Any:
        """Send a request; returns its id."""
        if request_id is ...:
            self._next_id += 1
            request_id = self._next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send_raw(json.dumps(message).encode() + b"\n")
        return request_id

    async def receive(self, limit_s: float = LIMIT_S) -> dict[str, Any]:
        """The next message (reply or notification); EOF raises EndOfChannel."""
        while not self._messages:
            with trio.fail_after(limit_s):
                data = await self.stream.receive_some(65536)
            if not data:
                raise trio.EndOfChannel
            for line in self._framer.feed(data):
                assert isinstance(line, bytes)
                self._messages.append(json.loads(line))
        return self._messages.popleft()

    async def reply_to(self, request_id: Any) -> dict[str, Any]:
        """The reply to ``request_id`` (other messages are kept for later)."""
        skipped: list[dict[str, Any]] = []
        try:
            while True:
                message = await self.receive()
                if message.get("id") == request_id and "method" not in message:
                    return message
                skipped.append(message)
        finally:
            self._messages.extendleft(reversed(skipped))

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """Send a request and return its whole reply message."""
        return await self.reply_to(await self.send(method, params))

    async def result(self, method: str, params: Any = None) -> Any:
        """Send a request and return its result (fails on an error reply)."""
        reply = await self.call(method, params)
        assert "result" in reply, reply
        return reply["result"]


@asynccontextmanager
async def connect(path: str | Path) -> AsyncIterator[Client]:
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        yield Client(stream)


@asynccontextmanager
async def running_daemon(
    sim: Simulator, socket_path: Path, settings: DaemonSettings | None = None
) -> AsyncIterator[Daemon]:
    """The daemon on ``socket_path`` against ``sim``, every battery working before it yields."""
    settings = settings or DaemonSettings(address=sim.address)
    sock = bind_control_socket(str(socket_path))
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve_daemon, settings, sock)
        await wait_until(
            daemon, lambda d: all(s.status is Status.WORKING for s in d.tracker.states.values())
        )
        yield daemon
        daemon.stop()


async def wait_until(daemon: Daemon, predicate: Callable[[Daemon], bool]) -> None:
    """Wait until ``predicate(daemon)`` holds, re-checking on every status board change."""
    with trio.fail_after(LIMIT_S):
        await daemon.tracker.board.wait_value(lambda _: predicate(daemon))


async def sim_wait(
    sim: Simulator, predicate: Callable[[Simulator], bool], limit_s: float = 10.0
) -> None:
    assert await trio.to_thread.run_sync(sim.wait_for, predicate, limit_s), (
        "simulator condition not met"
    )
