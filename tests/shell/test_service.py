"""``distributord run`` as a process: configuration, systemd notifications, signals."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_util

from distributord.core.status import BatteryState, Status
from distributord.core.topology import Category, Component, InverterType
from distributord.shell import service
from distributord.shell.requestloop import LoopStatistics
from distributord.shell.tracker import Board
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import Simulator
from tests.support import LIMIT_S, connect, free_port, sim_wait

RUN = [sys.executable, "-m", "distributord", "run"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(uniform_fleet(2, seed=5), telemetry_hz=20.0) as simulator:
        yield simulator


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.seen: list[dict[str, str]] = []

    async def bind(self) -> None:
        await self.socket.bind(str(self.path))

    async def wait_for(self, key: str, value: str | None = None) -> dict[str, str]:
        """The next message holding ``key`` (with ``value``, if given)."""
        with trio.fail_after(LIMIT_S):
            while True:
                data = await self.socket.recv(65536)
                fields = dict(
                    line.split("=", 1) for line in data.decode().splitlines() if "=" in line
                )
                self.seen.append(fields)
                if key in fields and (value is None or fields[key] == value):
                    return fields


class Log:
    """The daemon's stderr, read as it comes."""

    def __init__(self) -> None:
        self.text = ""
        self._changed = trio.Event()

    async def pump(self, stream: trio.abc.ReceiveStream) -> None:
        async for chunk in stream:
            self.text += chunk.decode(errors="replace")
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, needle: str) -> None:
        with trio.fail_after(LIMIT_S):
            while needle not in self.text:
                await self._changed.wait()


@asynccontextmanager
async def daemon_process(
    args: list[str],
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> AsyncIterator[tuple[trio.Process, Notifications, Log]]:
    notify = Notifications(tmp_path / "notify")
    try:
        await notify.bind()
    except BaseException:
        notify.socket.close()
        raise
    environment = {**os.environ, "NOTIFY_SOCKET": str(notify.path), **(env or {})}
    log = Log()
    process = await trio.lowlevel.open_process(
        args, env=environment, stderr=subprocess.PIPE, pass_fds=pass_fds
    )
    assert process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(log.pump, process.stderr)
            yield process, notify, log
            if process.returncode is None:
                process.kill()
            with trio.fail_after(LIMIT_S):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stderr is not None:
            await process.stderr.aclose()
        notify.socket.close()


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "distributord.toml"
    path.write_text(text)
    return path


async def test_run_notifies_serves_reloads_and_stops(sim: Simulator, tmp_path: Path) -> None:
    config = config_file(tmp_path, "[distribution]\nexponent = 1.0\n")
    sock = tmp_path / "control.sock"
    args = [*RUN, "--config", str(config), "--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path, env={"WATCHDOG_USEC": "1000000"}) as (
        process,
        notify,
        log,
    ):
        serving = await notify.wait_for("READY", "1")  # the socket serves from the start
        assert "waiting for the microgrid" in serving["STATUS"]
        ready = await notify.wait_for("READY", "1")  # and the microgrid is connected
        assert "working" in ready["STATUS"]
        assert ready["STATUS"].endswith("; API v1alpha18")  # negotiated: the sim serves all
        async with connect(sock) as client:
            assert (await client.result("ping"))["version"]
        await notify.wait_for("WATCHDOG", "1")  # half of WATCHDOG_USEC, while the loop answers

        config.write_text("[distribution]\nexponent = 2.0\n")
        process.send_signal(signal.SIGHUP)
        reloading = await notify.wait_for("RELOADING", "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        await notify.wait_for("READY", "1")

        process.send_signal(signal.SIGTERM)
        await notify.wait_for("STOPPING", "1")
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
        assert "reload: applied distribution.exponent" in log.text


async def test_a_reload_with_a_bad_file_keeps_running(sim: Simulator, tmp_path: Path) -> None:
    config = config_file(tmp_path, "")
    sock = tmp_path / "control.sock"
    args = [*RUN, "--config", str(config), "--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        await notify.wait_for("READY", "1")  # serving
        await notify.wait_for("READY", "1")  # connected
        config.write_text("[distribution]\nexponent = -1\n")
        process.send_signal(signal.SIGHUP)
        await notify.wait_for("READY", "1")
        async with connect(sock) as client:
            assert (await client.result("ping"))["version"]
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
        assert "distribution.exponent" in log.text


async def test_socket_activation_is_used_when_given(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "activated.sock"
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(path))
    listening.listen()
    fd = listening.fileno()
    # As systemd does: the socket is fd 3 and LISTEN_PID the daemon's own pid (exec keeps it).
    activate = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='control')\n"
        "os.execv(sys.argv[2], sys.argv[2:])\n"
    )
    run = [*RUN, "--microgrid", sim.address, "--socket", str(tmp_path / "unused.sock")]
    command = [sys.executable, "-c", activate, str(fd), *run]
    with listening:
        async with daemon_process(command, tmp_path, pass_fds=(fd,)) as (
            process,
            notify,
            log,
        ):
            await notify.wait_for("READY", "1")
            async with connect(path) as client:
                assert (await client.result("ping"))["version"]
            assert not (tmp_path / "unused.sock").exists()
            assert "replacing stale control socket" not in log.text
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(LIMIT_S):
                assert await process.wait() == 0
            assert path.exists()  # systemd's: the socket unit removes it, not the daemon


async def test_an_unreachable_microgrid_is_waited_for_and_stop_still_works(tmp_path: Path) -> None:
    port = free_port()
    args = [*RUN, "--microgrid", f"127.0.0.1:{port}", "--socket", str(tmp_path / "c.sock")]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        waiting = await notify.wait_for("STATUS")
        assert waiting["STATUS"] == f"waiting for the microgrid at 127.0.0.1:{port}"
        await log.wait_for("microgrid unreachable")
        # Issue 10, item 6: the socket serves from start-up (READY=1 says so), and answers
        # at once instead of leaving clients hanging until the microgrid comes up.
        ready = await notify.wait_for("READY", "1")
        assert ready["STATUS"] == f"waiting for the microgrid at 127.0.0.1:{port}"
        down = await notify.wait_for("STATUS")  # discovery failed: systemctl status says so
        assert (
            down["STATUS"]
            == f"waiting for the microgrid at 127.0.0.1:{port}: UNREACHABLE, retrying"
        )
        async with connect(tmp_path / "c.sock") as client:
            assert (await client.result("ping"))["microgrid"] == "unreachable"
            status = await client.result("get_status")
            assert status.pop("unreachable_for_s") >= 0.0
            assert status == {
                "batteries": [],
                "working": [],
                "uncertain": [],
                "microgrid": "unreachable",
            }
            refused = await client.call("set_power", {"power_w": 1000, "batteries": [1001]})
            assert refused["error"]["code"] == -32004
            assert "not connected" in refused["error"]["message"]
            components = await client.call("list_components")
            assert components["error"]["code"] == -32004
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0


async def test_a_reload_while_waiting_for_the_microgrid_applies_at_once(tmp_path: Path) -> None:
    # Issue 10, item 2: the settings are one running value from start-up on, so a reload has
    # something to apply to before discovery completes (it used to say "not applied").
    port = free_port()
    config = config_file(tmp_path, "[control]\nmax_connections = 64\n")
    sock = tmp_path / "c.sock"
    args = [
        *RUN,
        "--config",
        str(config),
        "--microgrid",
        f"127.0.0.1:{port}",
        "--socket",
        str(sock),
    ]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        await notify.wait_for("READY", "1")  # serving, waiting for the microgrid
        config.write_text("[control]\nmax_connections = 1\n[requests]\nqueue_size = 3\n")
        process.send_signal(signal.SIGHUP)
        await notify.wait_for("RELOADING", "1")
        reloaded = await notify.wait_for("READY", "1")
        assert reloaded["STATUS"].startswith(f"waiting for the microgrid at 127.0.0.1:{port}")
        await log.wait_for("reload: applied control.max_connections")
        assert "requests.queue_size change only with a restart" in log.text
        async with connect(sock) as first:
            assert (await first.result("ping"))["microgrid"] in {"connecting", "unreachable"}
            async with connect(sock) as second:  # past the reloaded bound of one
                with trio.fail_after(LIMIT_S):
                    refused = await second.receive()
                assert refused["error"]["code"] == -32001
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
        assert "Traceback" not in log.text


@pytest.mark.parametrize(
    ("config", "flags", "code", "message"),
    [
        ("[requests]\ndefault_timeout_s = 0\n", [], 2, "requests.default_timeout_s"),
        ("[control]\nsockett = 'x'\n", [], 2, "control.sockett"),
        ("not toml [", [], 2, "distributord.toml"),
        ("", ["--socket", "/nonexistent-dir/c.sock"], 1, "its directory does not exist"),
        ("", ["--log-level", "loud"], 2, "logging.level"),
    ],
)
def test_what_prevents_a_start_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, config: str, flags: list[str], code: int, message: str
) -> None:
    path = config_file(tmp_path, config)
    done = subprocess.run(
        [*RUN, "--config", str(path), *flags], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert lines[0].startswith("distributord: ")


WITHOUT_OVERRIDES = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER\n"
    "    libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; fails harmlessly when not root\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)
"""Runs a command as this user without the capabilities that let root remove any file: root
keeps its uid, and so its way to the interpreter, but meets permissions as a daemon user does."""


def stale_socket(path: Path) -> None:
    """A socket file nothing listens on (its binder has gone), connectable by anyone."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
        gone.bind(str(path))
    path.chmod(0o666)


@pytest.mark.parametrize("place", ["sticky", "read_only"])
def test_a_stale_socket_that_cannot_be_removed_is_one_line(tmp_path: Path, place: str) -> None:
    # Issue 18, finding 8: a stale socket left in /tmp by another user could not be unlinked
    # (EPERM: /tmp is sticky) and the start ended in a 23-line traceback.
    directory = tmp_path / place
    directory.mkdir()
    path = directory / "c.sock"
    stale_socket(path)
    if place == "sticky":
        if os.geteuid() != 0:
            pytest.skip("making a file another user's needs root")
        directory.chmod(0o1777)
        os.chown(directory, 4321, 4321)  # neither the directory nor the socket is ours
        os.chown(path, 1234, 1234)
        why = "Operation not permitted (it belongs to uid 1234 in a sticky directory"
    else:
        directory.chmod(0o555)
        why = "Permission denied (uid "
    try:
        done = subprocess.run(
            [sys.executable, "-c", WITHOUT_OVERRIDES, *RUN, "--socket", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        directory.chmod(0o755)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"distributord: cannot remove stale control socket {path}: {why}")
    assert path.exists()


def test_in_the_journal_why_it_did_not_start_carries_an_error_priority(tmp_path: Path) -> None:
    # Issue 10, item 8: `journalctl -p warning` hid the one line that said why.
    err = tmp_path / "stderr"
    with err.open("wb") as stream:
        stat = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        done = subprocess.run(
            [*RUN, "--config", str(tmp_path / "missing.toml")],
            stderr=stream,
            env=env,
            timeout=60,
        )
    assert done.returncode == 2
    assert err.read_text().startswith("<3>distributord: ")


def test_the_example_configuration_is_accepted_by_run(tmp_path: Path) -> None:
    """config/distributord.toml is what `run` reads (here it stops at the missing directory)."""
    example = Path(__file__).resolve().parent.parent.parent / "config" / "distributord.toml"
    done = subprocess.run(
        [*RUN, "--config", str(example), "--socket", str(tmp_path / "missing" / "c.sock")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "its directory does not exist" in done.stderr
    json.dumps(done.stderr)  # one readable line, nothing binary


CTL = [sys.executable, "-m", "distributord.cli.ctl"]


async def ctl(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(LIMIT_S):
        return await trio.run_process(
            [*CTL, *args], capture_stdout=True, capture_stderr=True, check=False
        )


async def test_distributorctl_against_the_daemon(sim: Simulator, tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    args = [*RUN, "--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        await notify.wait_for("READY", "1")
        await wait_all_working(sock, {1001, 1002})  # READY=1 comes before the first telemetry
        done = await ctl("--socket", str(sock), "set-power", "-4kW", "--batteries", "1001,1002")
        assert done.returncode == 0, done.stderr
        assert b"success" in done.stdout
        assert sim.setpoint(2001) + sim.setpoint(2002) == pytest.approx(-4000)
        status = await ctl("--socket", str(sock), "--json", "status")
        assert status.returncode == 0
        assert {b["id"] for b in json.loads(status.stdout)["batteries"]} == {1001, 1002}
        refused = await ctl("--socket", str(sock), "set-power", "1kW", "--batteries", "1001,9999")
        assert refused.returncode == 1
        assert b"unknown batteries [9999]" in refused.stdout + refused.stderr
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
        assert "Traceback" not in log.text


def test_the_collector_is_tuned_and_the_tuning_undone() -> None:
    before = gc.get_threshold()
    undo = service.tune_gc()
    try:
        assert gc.get_threshold() == service.GC_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        undo()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def wait_all_working(sock: Path, batteries: set[int]) -> None:
    """Until every battery is working: READY=1 comes before the first telemetry."""
    async with connect(sock) as client:
        assert await client.result("subscribe_status") == {"subscribed": True}
        working = set((await client.result("get_status"))["working"])
        while not batteries <= working:
            message = await client.receive()
            if message.get("method") == "status_changed":
                params = message["params"]
                if params["status"] == "working":
                    working.add(params["id"])
                else:
                    working.discard(params["id"])


async def test_clients_that_leave_before_their_replies_do_not_stop_the_daemon(
    sim: Simulator, tmp_path: Path
) -> None:
    # Issue 10, item 1: the reply to a client that has gone used to end the daemon (exit 1).
    sim.set_fault(2001, command_latency_s=0.3)
    sock = tmp_path / "control.sock"
    args = [*RUN, "--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        await notify.wait_for("READY", "1")
        await wait_all_working(sock, {1001, 1002})
        leaving = await trio.open_unix_socket(str(sock))
        await leaving.send_all(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
        await leaving.aclose()  # gone before the reply
        # A set_power whose commands are under way when its client goes (Ctrl-C on
        # distributorctl): it completes, and its reply meets a closed socket. (One that has not
        # started when its client goes is withdrawn, never applied: the protocol's rule.)
        leaving = await trio.open_unix_socket(str(sock))
        await leaving.send_all(
            b'{"jsonrpc":"2.0","id":2,"method":"set_power",'
            b'"params":{"power_w":1000,"batteries":[1001,1002]}}\n'
        )
        await sim_wait(sim, lambda s: s.pending_commands(2001) == 1)
        await leaving.aclose()
        await sim_wait(sim, lambda s: s.pending_commands(2001) == 0 and s.setpoint(2001) > 0)
        done = await ctl("--socket", str(sock), "ping")
        assert done.returncode == 0, done.stderr
        assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
        assert "Traceback" not in log.text


async def test_a_stop_answers_every_request_it_took_and_refuses_new_ones(
    sim: Simulator, tmp_path: Path
) -> None:
    # Issue 10, item 5: a request cut off by the drain deadline got no reply (the connection
    # just closed), and one arriving during the drain got -32001 "retry later".
    sim.set_fault(2001, command_hang=True)
    sock = tmp_path / "control.sock"
    path = config_file(tmp_path, "[requests]\ndrain_timeout_s = 0.5\n")
    args = [*RUN, "--config", str(path), "--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        await notify.wait_for("READY", "1")
        await wait_all_working(sock, {1001, 1002})
        async with connect(sock) as client:
            hanging = await client.send(
                "set_power", {"power_w": 1000, "batteries": [1001], "request_timeout_s": 30}
            )
            await sim_wait(sim, lambda s: s.pending_commands(2001) == 1)
            process.send_signal(signal.SIGTERM)
            await log.wait_for("stopping: no new connections or requests")
            late = await client.call("set_power", {"power_w": 1000, "batteries": [1002]})
            assert late["error"]["code"] == -32002, late
            reply = await client.reply_to(hanging)
            assert reply["result"]["outcome"] == "error"
            assert "cut off" in reply["result"]["message"]
            with pytest.raises(trio.EndOfChannel):  # then the connection closes
                await client.receive()
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
        assert "Traceback" not in log.text


async def test_an_id_the_graph_lists_twice_is_left_out_and_logged(tmp_path: Path) -> None:
    # Issue 18, finding 8: the later entry of a repeated id won, silently. Here inverter 2002
    # is listed a second time, as a PV inverter: which is it? Its battery is left out.
    with Simulator(uniform_fleet(2, seed=5), telemetry_hz=20.0) as sim:
        sim._components = (*sim._components, (2002, Component(Category.INVERTER, InverterType.PV)))
        sock = tmp_path / "control.sock"
        args = [*RUN, "--microgrid", sim.address, "--socket", str(sock)]
        async with daemon_process(args, tmp_path) as (process, notify, log):
            await notify.wait_for("READY", "1")  # serving
            await notify.wait_for("READY", "1")  # the graph is read
            async with connect(sock) as client:
                components = await client.result("list_components")
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(LIMIT_S):
                assert await process.wait() == 0
    assert components["pairs"] == [{"battery_id": 1001, "inverter_id": 2001}]
    assert components["left_out"] == [
        {
            "battery_id": 1002,
            "reason": "component 2002 above it is listed more than once in the component graph",
        }
    ]
    warning = (
        "WARNING distributord.shell.link: left out components 2002: each is listed more than"
        " once in the component graph"
    )
    assert log.text.count(warning) == 1


async def test_signals_during_the_drain_neither_end_nor_shorten_it(
    sim: Simulator, tmp_path: Path
) -> None:
    # Issue 18, finding 8: a SIGHUP during the drain waited, unread, in trio's signal receiver,
    # which re-raised it when the run ended: the process died by SIGHUP (5 of 5) instead of
    # exiting 0. Now a SIGHUP while stopping is not a reload, and a second SIGTERM does not cut
    # the drain short (it is bounded already; SIGKILL is for impatience): each is logged once.
    sim.set_fault(2001, command_hang=True)
    sock = tmp_path / "control.sock"
    # Long enough for the signals below to arrive well inside it (each is logged in a few
    # milliseconds; the test waits for those lines, not for time).
    path = config_file(tmp_path, "[requests]\ndrain_timeout_s = 4\n")
    args = [*RUN, "--config", str(path), "--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        await notify.wait_for("READY", "1")
        await wait_all_working(sock, {1001, 1002})
        async with connect(sock) as client:
            hanging = await client.send(
                "set_power", {"power_w": 1000, "batteries": [1001], "request_timeout_s": 30}
            )
            await sim_wait(sim, lambda s: s.pending_commands(2001) == 1)
            process.send_signal(signal.SIGTERM)
            await log.wait_for("stopping: no new connections or requests")
            process.send_signal(signal.SIGHUP)
            await log.wait_for("SIGHUP while stopping: not reloading")
            process.send_signal(signal.SIGTERM)
            await log.wait_for("SIGTERM while stopping: already stopping")
            process.send_signal(signal.SIGHUP)
            process.send_signal(signal.SIGINT)
            reply = await client.reply_to(hanging)  # at the end of the drain, not before
            assert "cut off" in reply["result"]["message"]
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
    assert log.text.count("SIGHUP while stopping") == 1
    assert log.text.count("SIGTERM while stopping") == 1
    assert "Traceback" not in log.text


class RecordingNotifier:
    """Stands in for systemd's notification socket: remembers each STATUS= with its time."""

    def __init__(self) -> None:
        self.statuses: list[tuple[float, str]] = []

    def status(self, text: str) -> None:
        self.statuses.append((trio.current_time(), text))


async def test_status_reports_a_change_made_during_its_pause_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Issue 10, item 7: STATUS= could stay wrong for 30 s after a burst of changes: it
    # paused a second after each report, then waited for the *next* change.
    working = BatteryState(battery_id=1001, inverter_id=2001, status=Status.WORKING)
    board = trio_util.AsyncValue(Board(version=0, states={1001: working}))
    statistics = LoopStatistics(
        queued=0, waiting=0, running=0, standing=0, last_latency_s=None, setpoints={}
    )
    daemon: Any = SimpleNamespace(
        tracker=SimpleNamespace(board=board, unreachable_since=None),
        loop=SimpleNamespace(statistics=lambda: statistics),
        link=SimpleNamespace(version="v1alpha18"),
    )
    notifier: Any = RecordingNotifier()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service._report_status, daemon, notifier)
        await trio.sleep(0.5)  # during the pause after the first report
        broken = attrs.evolve(working, status=Status.NOT_WORKING)
        board.value = Board(version=1, states={1001: broken})
        await trio.sleep(2.0)
        nursery.cancel_scope.cancel()
    assert [(at, text.split(";")[0]) for at, text in notifier.statuses] == [
        (0.0, "1 working, 0 uncertain, 0 not working"),
        (1.0, "0 working, 0 uncertain, 1 not working"),
    ]


# --- the socket file at exit (issue 23) ------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_socket_the_daemon_bound_is_removed_at_exit(
    sim: Simulator, tmp_path: Path, signum: signal.Signals
) -> None:
    sock = tmp_path / "control.sock"
    args = [*RUN, "--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path) as (process, notify, log):
        await notify.wait_for("READY", "1")
        assert sock.exists()
        process.send_signal(signum)
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
    assert not sock.exists()
    assert "Traceback" not in log.text


def test_a_socket_the_daemon_bound_is_removed_when_the_start_fails_after(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    with socket.socket() as taken:  # metrics.listen cannot be served: the start fails
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config_file(tmp_path, f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        done = subprocess.run(
            [*RUN, "--config", str(config), "--socket", str(sock)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "metrics.listen" in done.stderr
    assert not sock.exists()


async def test_a_file_that_took_the_sockets_place_is_not_removed(
    sim: Simulator, tmp_path: Path
) -> None:
    sock = tmp_path / "control.sock"
    args = [*RUN, "--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path) as (process, notify, _log):
        await notify.wait_for("READY", "1")
        sock.unlink()
        with socket.socket(socket.AF_UNIX) as other:
            other.bind(str(sock))  # another daemon's now
            theirs = os.lstat(sock)
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(LIMIT_S):
                assert await process.wait() == 0
        after = os.lstat(sock)
    assert (after.st_dev, after.st_ino) == (theirs.st_dev, theirs.st_ino)


# --- library log noise (issue 23) -------------------------------------------------------------

C_CORE_LINE = re.compile(r"^[DIWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]", re.MULTILINE)
"""A line grpc's C core writes to stderr itself, in absl's format
(``I1205 22:15:42.171108   30268 init.cc:124]``)."""


def foreign_debug_lines(log: str) -> list[str]:
    """Debug lines of loggers that are not distributord's."""
    return [
        line
        for line in log.splitlines()
        if " DEBUG " in line and not line.split(" DEBUG ", 1)[1].startswith("distributord")
    ]


async def run_at_debug(
    sim: Simulator, tmp_path: Path, config: str, env: dict[str, str] | None = None
) -> str:
    """Start ``run --log-level debug``, command both batteries once, stop; the log."""
    sock = tmp_path / "control.sock"
    path = config_file(tmp_path, config)
    args = [*RUN, "--config", str(path), "--log-level", "debug"]
    args += ["--microgrid", sim.address, "--socket", str(sock)]
    async with daemon_process(args, tmp_path, env=env) as (process, notify, log):
        await notify.wait_for("READY", "1")
        await wait_all_working(sock, {1001, 1002})
        async with connect(sock) as client:
            result = await client.result("set_power", {"power_w": 1000, "batteries": [1001, 1002]})
        assert result["outcome"] == "success", result
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(LIMIT_S):
            assert await process.wait() == 0
    return log.text


@pytest.fixture
def without_grpc_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the operator had set neither of grpc's own variables."""
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    monkeypatch.delenv("GRPC_TRACE", raising=False)


@pytest.mark.usefixtures("without_grpc_variables")
async def test_at_debug_the_libraries_log_warnings_only(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 23: `--log-level debug` flooded the log with grpc's own debug lines.
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    monkeypatch.delenv("GRPC_TRACE", raising=False)
    log = await run_at_debug(sim, tmp_path, "")
    assert " DEBUG distributord." in log  # ours
    assert "request for batteries [1001, 1002] at 1000 W: " in log
    assert foreign_debug_lines(log) == []
    assert not C_CORE_LINE.search(log)


@pytest.mark.usefixtures("without_grpc_variables")
async def test_logging_libraries_lets_the_libraries_debug_lines_through(
    sim: Simulator, tmp_path: Path
) -> None:
    log = await run_at_debug(sim, tmp_path, '[logging]\nlibraries = "debug"\n')
    assert " DEBUG distributord." in log
    assert any(" DEBUG grpc" in line for line in foreign_debug_lines(log))
    # grpc's C core logs by itself, under its own variables: the setting does not touch them.
    assert not C_CORE_LINE.search(log)


@pytest.mark.usefixtures("without_grpc_variables")
async def test_grpcs_own_variables_are_the_operators(sim: Simulator, tmp_path: Path) -> None:
    log = await run_at_debug(sim, tmp_path, "", env={"GRPC_VERBOSITY": "info", "GRPC_TRACE": "api"})
    assert C_CORE_LINE.search(log)
    assert foreign_debug_lines(log) == []  # the C core's lines are not Python's loggers
