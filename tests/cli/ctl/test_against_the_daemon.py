"""``distributorctl`` as a user runs it: its own process, the real daemon, the simulator.

What a user sees (exit codes, ``--json`` errors, ``watch``'s first lines) through the real
socket and the real daemon; the fake daemon's tests (``test_main.py``) cover every case.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from distributord.cli.ctl import ExitCode
from distributord.shell.daemon import Daemon
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import Simulator
from tests.support import LIMIT_S, ctl, running_daemon

BATTERIES = [1001, 1002, 1003, 1004]  # 5 kW each, either way


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(uniform_fleet(4, seed=7), telemetry_hz=20.0, apis=("v1alpha18",)) as simulator:
        yield simulator


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "control.sock"


@pytest.fixture
async def running(sim: Simulator, path: Path) -> AsyncIterator[Daemon]:
    async with running_daemon(sim, path) as daemon:
        yield daemon


async def test_power_that_cannot_be_placed_has_its_own_exit_code(
    sim: Simulator, running: Daemon, path: Path
) -> None:
    # Issue 23: `set-power 1e30` on a 5 kW battery exited 0.
    done = await ctl(path, "set-power", "1e30", "--batteries", "1001")
    assert done.returncode == ExitCode.NOT_PLACED, done.stderr
    assert b"could not be placed" in done.stdout
    assert done.stderr == b""
    done = await ctl(path, "--json", "set-power", "1e30", "--batteries", "1001")
    assert done.returncode == ExitCode.NOT_PLACED, done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"] == "success"
    assert result["excess_power_w"] == pytest.approx(1e30)
    assert sim.setpoint(2001) == pytest.approx(5000)


async def test_power_placed_in_full_exits_0_despite_float32_setpoints(
    running: Daemon, path: Path
) -> None:
    # The setpoints go out as float32, rounded toward zero: the daemon reports the few mW
    # lost as excess, which is no power that could not be placed.
    for power in ("-4kW", "3333.3333W", "-9999.99W"):
        done = await ctl(path, "--json", "set-power", power, "--batteries", "1001,1002,1003")
        assert done.returncode == ExitCode.OK, (power, done.stdout)


async def test_reactive_power_that_cannot_be_placed_is_shown_and_exits_0(
    sim: Simulator, running: Daemon, path: Path
) -> None:
    # Two inverters of ±5 kvar: 10 kvar placed, 20 kvar not. Exit 5 is about active power.
    argv = ("set-power", "-8kW", "--batteries", "1001,1002", "--reactive-var", "30kvar")
    done = await ctl(path, *argv)
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stderr == b""
    assert (
        "reactive: 30.00 kvar requested, 10.00 kvar commanded to 2 batteries, "
        "20.00 kvar could not be placed"
    ) in done.stdout.decode()
    assert [sim.reactive_setpoint(i) for i in (2001, 2002)] == [5000.0, 5000.0]
    done = await ctl(path, "--json", *argv)
    assert done.returncode == ExitCode.OK, done.stderr
    reactive = json.loads(done.stdout)["reactive"]
    assert reactive["target_var"] == 30000.0
    assert reactive["excess_var"] == 20000.0
    assert reactive["distribution"] == {"1001": 5000.0, "1002": 5000.0}
    status = await ctl(path, "status")
    assert status.returncode == ExitCode.OK, status.stderr
    header, first, *_ = status.stdout.decode().splitlines()
    assert "REACTIVE" in header.split()
    assert "5.00 kvar" in first


async def test_errors_with_json_are_one_object_on_stdout(running: Daemon, path: Path) -> None:
    refused = await ctl(path, "--json", "--program", "nobody", "status")
    assert refused.returncode == ExitCode.DAEMON_ERROR
    assert refused.stderr == b""
    error = json.loads(refused.stdout)["error"]
    assert error["kind"] == "daemon_error"
    assert error["rpc_error"]["code"] == -32003
    assert error["program"] == "nobody"
    text = await ctl(path, "--program", "nobody", "status")
    assert text.returncode == ExitCode.DAEMON_ERROR
    assert text.stdout == b""
    assert text.stderr.decode() == f"distributorctl: {error['message']}\n"

    usage = await ctl(path, "--json", "set-power", "5 parsecs", "--batteries", "1001")
    assert usage.returncode == ExitCode.USAGE
    assert usage.stderr == b""
    assert json.loads(usage.stdout)["error"]["kind"] == "usage"


async def test_json_error_without_a_daemon(tmp_path: Path) -> None:
    done = await ctl(tmp_path / "absent.sock", "--json", "set-power", "1kW", "--batteries", "1")
    assert done.returncode == ExitCode.UNREACHABLE
    assert done.stderr == b""
    document = json.loads(done.stdout)
    assert document["error"]["kind"] == "unreachable"
    assert document["error"]["may_be_applied"] is False  # nothing was sent


CTL_WITH_CTRL_C = (
    sys.executable,
    "-c",
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from distributord.cli.ctl import main; sys.exit(main(sys.argv[1:]))",
)
"""``distributorctl`` as a terminal runs it, Ctrl-C working: a test run started as a shell's
background job (``&`` without job control) ignores SIGINT, and so would its children. Set in the
child itself: a ``preexec_fn`` forks a process whose other threads call into gRPC, and the child
died before it printed anything (seen in CI)."""


class Lines:
    """A process's stdout, a line at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> Any:
        """The next line, as JSON."""
        with trio.fail_after(LIMIT_S):
            while b"\n" not in self._buffer:
                chunk = await self._stream.receive_some()
                assert chunk, f"the process closed stdout; so far: {self._buffer!r}"
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)


async def test_watch_starts_with_every_battery_then_shows_changes(
    sim: Simulator, running: Daemon, path: Path
) -> None:
    # Issue 23: `watch` showed nothing until something changed.
    process = await trio.lowlevel.open_process(
        [*CTL_WITH_CTRL_C, "--socket", str(path), "--json", "watch"], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        lines = Lines(process.stdout)
        first = [await lines.next() for _ in BATTERIES]
        assert first == [
            {"id": battery, "status": "working", "reasons": []} for battery in BATTERIES
        ]
        sim.set_fault(1002, error_state=True)
        change = await lines.next()
        assert change["id"] == 1002
        assert change["status"] == "not_working"
        assert change["reasons"]
        process.send_signal(signal.SIGINT)  # Ctrl-C: how a watch is meant to end
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == ExitCode.OK
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()
