"""Shared pieces for tests that run the real daemon.

A socket client, a running daemon, and configurations that differ from the defaults in a few
keys (:func:`config_with`: tests change keys of the one configuration, never a copy of it).
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from distributord.client import trio as trioclient
from distributord.core.config import Config, ProgramConfig
from distributord.core.errors import UnreachableError
from distributord.core.protocol import JsonId
from distributord.core.status import Status
from distributord.shell.control import bind_control_socket
from distributord.shell.daemon import Daemon, serve_daemon
from distributord.shell.live import Live, fixed
from distributord.shell.metrics import Metrics
from distributord.sim.server import Simulator

LIMIT_S = 15.0
"""Every wait in these helpers fails (TooSlowError) after this long instead of hanging."""


class Client(trioclient.Client):
    """The demo's trio client as the tests want it: waits bounded, EOF as a channel's end.

    Every wait fails (TooSlowError) after :data:`LIMIT_S`; the daemon closing the connection is
    :class:`trio.EndOfChannel`. Every notification is kept, followed or not: the tests read
    them raw.
    """

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        super().__init__(stream, keep_all_notifications=True)

    async def receive(self, limit_s: float = LIMIT_S) -> dict[str, Any]:
        """The next message (reply or notification); EOF raises EndOfChannel."""
        with trio.fail_after(limit_s), _closed_is_end_of_channel():
            return await super().receive()

    async def reply_to(self, request_id: JsonId) -> dict[str, Any]:
        """The reply to ``request_id`` (other messages are kept for later)."""
        with trio.fail_after(LIMIT_S), _closed_is_end_of_channel():
            return await super().reply_to(request_id)


@contextmanager
def _closed_is_end_of_channel() -> Iterator[None]:
    try:
        yield
    except UnreachableError:  # what RpcClient says when the daemon has closed the connection
        raise trio.EndOfChannel from None


@asynccontextmanager
async def connect(path: str | Path) -> AsyncIterator[Client]:
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        yield Client(stream)


def config_with(base: Config | None = None, /, **tables: Mapping[str, Any]) -> Config:
    """``base`` (the defaults) with a few keys changed, table by table.

    ``config_with(setpoints={"lifetime_s": 10})``: every other key keeps its one default, and
    the values are checked as a file's are. ``programs={"fcr": {"priority": 90}}`` replaces the
    programs (``default`` is always there).
    """
    config = base or Config()
    programs = tables.pop("programs", None)
    config = attrs.evolve(
        config,
        **{name: attrs.evolve(getattr(config, name), **keys) for name, keys in tables.items()},
    )
    if programs is not None:
        config = attrs.evolve(
            config,
            programs={name: ProgramConfig(**keys) for name, keys in programs.items()},
        )
    return config


def config_for(sim: Simulator, **tables: Mapping[str, Any]) -> Config:
    """:func:`config_with` for a daemon on ``sim``: ``microgrid.address`` is the simulator's."""
    microgrid = {"address": sim.address, **tables.pop("microgrid", {})}
    return config_with(microgrid=microgrid, **tables)


@asynccontextmanager
async def running_daemon(
    sim: Simulator,
    socket_path: Path,
    config: Config | Live[Config] | None = None,
    *,
    lifetime_scale: float = 1.0,
    metrics: Metrics | None = None,
) -> AsyncIterator[Daemon]:
    """The daemon on ``socket_path`` against ``sim``, every battery working before it yields.

    ``config`` is :func:`config_for` ``sim`` unless given. Pass a
    :class:`~distributord.shell.live.LiveValue` to reload it while the daemon runs.
    """
    config = config or config_for(sim)
    live = config if isinstance(config, Live) else fixed(config)
    sock = bind_control_socket(str(socket_path))
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(
            functools.partial(
                serve_daemon, live, sock, lifetime_scale=lifetime_scale, metrics=metrics
            )
        )
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


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released: connecting is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


CTL = (sys.executable, "-m", "distributord.cli.ctl")
"""``distributorctl`` as a process of its own, as a user runs it."""


async def ctl(socket_path: str | Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``distributorctl --socket PATH ARGS...`` to its end; its output, captured."""
    with trio.fail_after(LIMIT_S):
        return await trio.run_process(
            [*CTL, "--socket", str(socket_path), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
