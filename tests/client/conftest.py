"""The daemon the library's tests drive: on the simulator, over a real Unix socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from distributord.client.trio import Client, open_client
from distributord.shell.daemon import Daemon
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import Simulator
from tests.support import config_for, running_daemon

PROGRAMS = {
    "default": {"priority": 0},
    "fcr": {"priority": 90},
    "peak": {"priority": 50},
    "trade": {"priority": 10, "max_charge_w": 3000},
}
"""The programs the daemon knows (``hello``): priorities, and a limit to see clamping."""


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # v1alpha18: what current sites serve; it has final replies (command_failed). Four
    # batteries of ±5 kW, ids 1001-1004 behind inverters 2001-2004.
    with Simulator(uniform_fleet(4, seed=7), telemetry_hz=20.0, apis=("v1alpha18",)) as simulator:
        yield simulator


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """The daemon's control socket."""
    return tmp_path / "control.sock"


@pytest.fixture
async def daemon(sim: Simulator, path: Path) -> AsyncIterator[Daemon]:
    async with running_daemon(sim, path, config_for(sim, programs=PROGRAMS)) as running:
        yield running


@pytest.fixture
async def client(daemon: Daemon, path: Path) -> AsyncIterator[Client]:
    """A connection to the daemon through the library's trio face (acting as "default")."""
    async with open_client(path) as opened:
        yield opened
