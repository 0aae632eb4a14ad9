"""The asyncio face against the real daemon, and the client-only install's promise.

The daemon and the simulator run in this test's trio loop; the asyncio client runs in a worker
thread (``asyncio.run``) or in a subprocess, over the real Unix socket, as a program does.

The subprocess makes the daemon's dependencies unimportable (a meta path finder refuses trio,
trio_util, grpc, google.protobuf and prometheus_client) before it imports
``distributord.client``: what ``pip install --no-deps DIR attrs`` (``DIR`` a checkout, or its
wheel) leaves a program with. It then drives the daemon through the asyncio face. If the
library reached for any of them, the import or a call would fail.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from distributord.client import (
    Client,
    MicrogridState,
    Outcome,
    Reason,
    Status,
    UnreachableError,
    open_client,
)
from distributord.shell.daemon import Daemon
from distributord.sim.server import Simulator
from tests.support import LIMIT_S

T = TypeVar("T")

BATTERIES = [1001, 1002, 1003, 1004]

DAEMON_DEPENDENCIES = ("trio", "trio_util", "grpc", "google", "prometheus_client")
"""What ``pip install distributord`` brings for the daemon and a client must not need."""


async def on_asyncio(path: Path, use: Callable[[Client], Awaitable[T]]) -> T:
    """``use(client)`` with the asyncio face connected to ``path``, in a thread of its own."""

    async def main() -> T:
        async with open_client(path) as client:
            return await asyncio.wait_for(use(client), timeout=LIMIT_S)

    return await trio.to_thread.run_sync(lambda: asyncio.run(main()))


async def test_methods_on_asyncio(daemon: Daemon, sim: Simulator, path: Path) -> None:
    async def use(client: Client) -> None:
        ping = await client.ping()
        assert ping.microgrid is MicrogridState.CONNECTED
        result = await client.set_power(-3000.0, BATTERIES)
        assert result.outcome is Outcome.SUCCESS
        assert sum(result.distribution.values()) == pytest.approx(-3000.0)
        status = await client.get_status()
        assert status.working == frozenset(BATTERIES)
        assert {b.setpoint_w for b in status.batteries.values()} != {None}
        assert [p.battery_id for p in (await client.list_components()).pairs] == BATTERIES
        # Several tasks on one connection: each gets its own reply.
        pings = await asyncio.gather(*(client.ping() for _ in range(10)))
        assert {p.version for p in pings} == {ping.version}

    await on_asyncio(path, use)


async def test_status_changes_on_asyncio(daemon: Daemon, sim: Simulator, path: Path) -> None:
    async def use(client: Client) -> None:
        async with client.status_changes() as changes:
            await client.subscribe_status()
            sim.set_fault(1004, error_state=True)
            async for change in changes:
                if change.id == 1004 and change.status is Status.NOT_WORKING:
                    assert Reason.BATTERY_ERROR_STATE in change.reasons
                    return

    await on_asyncio(path, use)


async def test_a_cancelled_call_leaves_the_connection_usable_on_asyncio(
    daemon: Daemon, sim: Simulator, path: Path
) -> None:
    sim.set_fault(2001, command_hang=True)

    async def use(client: Client) -> None:
        call = asyncio.create_task(client.set_power(1000.0, [1001], request_timeout_s=1.0))
        hanging = await asyncio.to_thread(
            sim.wait_for, lambda s: s.pending_commands(2001) > 0, LIMIT_S
        )
        assert hanging
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        sim.clear_faults(2001)
        assert (await client.ping()).microgrid is MicrogridState.CONNECTED
        assert (await client.set_power(2000.0, [1001])).outcome is Outcome.SUCCESS
        assert client.receive_nowait() is None  # the abandoned reply was dropped

    await on_asyncio(path, use)


async def test_a_daemon_that_closes_the_connection_on_asyncio(daemon: Daemon, path: Path) -> None:
    connected = trio.Event()

    async def use(client: Client) -> None:
        await client.subscribe_status()
        trio.from_thread.run_sync(connected.set)
        with pytest.raises(UnreachableError, match="closed the connection"):
            async for _ in client.status_changes():
                pass  # pragma: no cover - the daemon sends none before it stops

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_asyncio, path, use)
        await connected.wait()
        daemon.stop()


# --- the client-only install ------------------------------------------------------------------

BLOCKED_PROGRAM = textwrap.dedent(
    """
    import asyncio, importlib.abc, json, sys

    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not installed (client-only)")
            return None

    sys.meta_path.insert(0, Blocker())
    import distributord.client as client_library

    async def main(path):
        async with client_library.open_client(path) as client:
            ping = await client.ping()
            result = await client.set_power(2000.0, [1001, 1002])
            status = await client.get_status()
        return {{
            "microgrid": ping.microgrid,
            "outcome": result.outcome,
            "working": sorted(status.working),
            "loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
        }}

    print(json.dumps(asyncio.run(main(sys.argv[1]))))
    """
)


def test_the_blocker_blocks() -> None:
    # The control case: with the blocker, what the daemon needs does not import.
    program = BLOCKED_PROGRAM.split("import distributord.client")[0] + "import trio\n"
    done = subprocess.run(
        [sys.executable, "-c", program.format(blocked=DAEMON_DEPENDENCIES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "trio is not installed (client-only)" in done.stderr


async def test_the_asyncio_face_needs_none_of_the_daemons_dependencies(
    daemon: Daemon, path: Path
) -> None:
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-c", BLOCKED_PROGRAM.format(blocked=DAEMON_DEPENDENCIES), str(path)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {
        "microgrid": "connected",
        "outcome": "success",
        "working": BATTERIES,
        "loaded": [],
    }
