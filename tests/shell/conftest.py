"""Fixtures the daemon's shell tests share: a daemon on a module's own simulator, a client.

A module defines ``sim`` (its scenario, its API versions); ``daemon`` runs the daemon on it, with
the default configuration, on a real Unix socket; ``client`` is one connection to it. A module
that needs another configuration defines its own ``daemon``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from distributord.shell.daemon import Daemon
from distributord.sim.server import Simulator
from tests.support import Client, connect, running_daemon


@pytest.fixture
async def daemon(sim: Simulator, tmp_path: Path) -> AsyncIterator[Daemon]:
    async with running_daemon(sim, tmp_path / "control.sock") as running:
        yield running


@pytest.fixture
async def client(daemon: Daemon, tmp_path: Path) -> AsyncIterator[Client]:
    async with connect(tmp_path / "control.sock") as opened:
        yield opened
