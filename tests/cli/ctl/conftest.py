"""The fake daemon for every ``distributorctl`` test, with no socket from the environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distributord.cli import ctl
from distributord.cli.ctl import args
from tests.cli.ctl.fake import IO_TIMEOUT_S, FakeDaemon


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    monkeypatch.delenv(args.SOCKET_ENV, raising=False)
    monkeypatch.setattr(ctl, "WATCH_IDLE_TIMEOUT_S", IO_TIMEOUT_S)
    fake = FakeDaemon(tmp_path / "control.sock")
    yield fake
    fake.stop()
