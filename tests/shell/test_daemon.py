"""The daemon end to end: a real socket, the real daemon, the simulator over loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from distributord.core import methods
from distributord.core.config import ControlConfig
from distributord.core.errors import ControlSocketError
from distributord.core.status import Status
from distributord.shell import control
from distributord.shell.control import bind_control_socket, is_allowed
from distributord.shell.daemon import Daemon
from distributord.shell.live import LiveValue
from distributord.sim.scenario import BatterySpec, Faults, InverterSpec, Scenario, uniform_fleet
from distributord.sim.server import Simulator
from tests.shell.test_arbitration import notification
from tests.support import (
    Client,
    config_for,
    config_with,
    connect,
    running_daemon,
    sim_wait,
    wait_until,
)

BATTERIES = [1001, 1002, 1003, 1004]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # What current sites serve: v1alpha18 only (tests/shell/test_versions.py covers the others).
    with Simulator(uniform_fleet(4, seed=7), telemetry_hz=20.0, apis=("v1alpha18",)) as simulator:
        yield simulator


# --- outcomes -----------------------------------------------------------------------------


async def test_success(sim: Simulator, client: Client) -> None:
    with trio.fail_after(10):
        result = await client.result("set_power", {"power_w": -4000, "batteries": [1001, 1002]})
    assert result["outcome"] == "success"
    assert result["succeeded_batteries"] == [1001, 1002]
    assert result["succeeded_power_w"] == pytest.approx(-4000)
    # Setpoints go out as float32, rounded toward zero: what that loses is reported as excess.
    assert -4000 * 2**-22 <= result["excess_power_w"] <= 0.0
    assert result["succeeded_power_w"] + result["excess_power_w"] == pytest.approx(-4000, abs=1e-9)
    distribution = {int(b): w for b, w in result["distribution"].items()}
    assert sum(distribution.values()) == pytest.approx(-4000)
    for battery, power in distribution.items():
        assert sim.setpoint(sim.inverter_of(battery)) == pytest.approx(power)
    assert set(result["reasons"].values()) <= {"proportional", "capped"}
    timing = result["timing"]  # an extension: where the request's time went
    assert 0 < timing["commands_ms"] <= timing["total_ms"]


async def test_partial_failure_one_errors_one_hangs(
    sim: Simulator, daemon: Daemon, client: Client
) -> None:
    sim.set_fault(2003, command_error="UNAVAILABLE")
    sim.set_fault(2004, command_hang=True)
    with trio.fail_after(10):
        result = await client.result(
            "set_power", {"power_w": 8000, "batteries": BATTERIES, "request_timeout_s": 0.5}
        )
    assert result["outcome"] == "partial_failure"
    assert result["failed_batteries"] == [1003, 1004]
    assert result["succeeded_batteries"] == [1001, 1002]
    distribution = {int(b): w for b, w in result["distribution"].items()}
    # Only what succeeded counts as succeeded (the reference counted the failed power too).
    assert result["succeeded_power_w"] == pytest.approx(distribution[1001] + distribution[1002])
    assert result["failed_power_w"] == pytest.approx(distribution[1003] + distribution[1004])
    await sim_wait(
        sim,
        lambda s: any(r.component_id == 2004 and r.outcome == "cancelled" for r in s.commands()),
    )
    assert daemon.tracker.state(1003).status is Status.UNCERTAIN  # blocked after the failure
    assert daemon.tracker.state(1004).status is Status.UNCERTAIN


async def test_out_of_bounds_without_adjustment(client: Client) -> None:
    result = await client.result(
        "set_power", {"power_w": 50_000, "batteries": [1001, 1002], "adjust_power": False}
    )
    assert result["outcome"] == "out_of_bounds"
    assert result["bounds"] == {
        "inclusion_lower_w": -10_000.0,
        "exclusion_lower_w": 0.0,
        "exclusion_upper_w": 0.0,
        "inclusion_upper_w": 10_000.0,
    }


async def test_adjusted_power_is_trimmed_and_reported_as_excess(client: Client) -> None:
    result = await client.result("set_power", {"power_w": 50_000, "batteries": [1001, 1002]})
    assert result["outcome"] == "success"
    assert result["succeeded_power_w"] == pytest.approx(10_000)
    assert result["excess_power_w"] == pytest.approx(40_000)


async def test_out_of_bounds_with_adjustment_inside_the_exclusion_zone(tmp_path: Path) -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=50.0), BatterySpec(id=1002, soc_pct=60.0)),
        inverters=(
            InverterSpec(id=2001, batteries=(1001,), exclusion_w=300.0),
            InverterSpec(id=2002, batteries=(1002,), exclusion_w=400.0),
        ),
    )
    with Simulator(scenario, telemetry_hz=20.0, apis=("v1alpha18",)) as sim:
        async with running_daemon(sim, tmp_path / "c.sock"), connect(tmp_path / "c.sock") as client:
            result = await client.result("set_power", {"power_w": 200, "batteries": [1001, 1002]})
            assert result["outcome"] == "out_of_bounds"
            assert result["bounds"]["exclusion_upper_w"] == 300.0  # one pair alone can take 300 W
            result = await client.result("set_power", {"power_w": 350, "batteries": [1001, 1002]})
            assert result["outcome"] == "success"


async def test_soc_derating_caps_a_nearly_full_battery_and_its_bounds(tmp_path: Path) -> None:
    # distribution.derate_band_pct = 10: SoC 85 % of [10, 90] has 5 points of room to charge,
    # so half its 5 kW; the other battery has 40 points and its whole 5 kW.
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=85.0), BatterySpec(id=1002, soc_pct=50.0)),
        inverters=(
            InverterSpec(id=2001, batteries=(1001,)),
            InverterSpec(id=2002, batteries=(1002,)),
        ),
    )
    with Simulator(scenario, telemetry_hz=20.0, apis=("v1alpha18",)) as sim:
        config = config_for(sim, distribution={"derate_band_pct": 10.0})
        async with (
            running_daemon(sim, tmp_path / "c.sock", config),
            connect(tmp_path / "c.sock") as client,
        ):
            # What a subscriber is told the batteries can take: derated too.
            await client.result("subscribe_bounds", {"batteries": [1001, 1002]})
            bounds = await notification(client, "bounds_changed")
            assert (bounds["inclusion_lower_w"], bounds["inclusion_upper_w"]) == (-10_000, 7500)
            params = {"power_w": 10_000, "batteries": [1001, 1002]}
            result = await client.result("set_power", {**params, "adjust_power": False})
            assert result["outcome"] == "out_of_bounds"
            assert result["bounds"]["inclusion_upper_w"] == 7500.0
            assert result["bounds"]["inclusion_lower_w"] == -10_000.0  # discharging: whole
            result = await client.result("set_power", params)
            assert result["outcome"] == "success"
            assert result["reasons"] == {"1001": "capped", "1002": "capped"}
            # The SoC moves while it charges (some 0.007 %/s): the derated cap with it.
            assert result["distribution"]["1001"] == pytest.approx(2500.0, rel=1e-2)
            assert sim.setpoint(2001) == pytest.approx(2500.0, rel=1e-2)
            assert sim.setpoint(2002) == pytest.approx(5000.0)


async def test_error_for_unknown_batteries(client: Client) -> None:
    result = await client.result("set_power", {"power_w": 100, "batteries": [1001, 9999, 8888]})
    assert result["outcome"] == "error"
    assert (
        result["message"]
        == "unknown batteries [8888, 9999]; known batteries: [1001, 1002, 1003, 1004]"
    )


async def test_error_when_none_is_usable(sim: Simulator, daemon: Daemon, client: Client) -> None:
    sim.set_fault(1003, error_state=True)
    sim.set_fault(2004, stream_silence=True)
    await wait_until(daemon, lambda d: d.tracker.state(1003).status is Status.NOT_WORKING)
    result = await client.result("set_power", {"power_w": 100, "batteries": [1003]})
    assert result["outcome"] == "error"
    assert result["message"] == "no usable batteries among [1003]"


async def test_error_for_zero_capacity(tmp_path: Path) -> None:
    fleet = uniform_fleet(2, seed=1)
    scenario = attrs.evolve(fleet, faults={1001: Faults(reported_capacity_wh=0.0)})
    with Simulator(scenario, telemetry_hz=20.0, apis=("v1alpha18",)) as sim:
        async with running_daemon(sim, tmp_path / "z.sock"), connect(tmp_path / "z.sock") as client:
            result = await client.result("set_power", {"power_w": 100, "batteries": [1001]})
    assert result["outcome"] == "error"
    assert result["message"] == "zero total capacity among batteries [1001]"


async def test_the_middle_of_three_quick_requests_is_ignored(
    sim: Simulator, client: Client
) -> None:
    sim.set_fault(2001, command_latency_s=0.3)
    sim.set_fault(2002, command_latency_s=0.3)
    params = {"batteries": [1001, 1002]}
    first = await client.send("set_power", {**params, "power_w": 1000})
    second = await client.send("set_power", {**params, "power_w": 2000})
    third = await client.send("set_power", {**params, "power_w": 3000})
    with trio.fail_after(10):
        replies = {rid: (await client.reply_to(rid))["result"] for rid in (first, second, third)}
    assert replies[first]["outcome"] == "success"
    assert replies[second]["outcome"] == "ignored"
    assert replies[second]["message"] == "superseded by a newer request for the same batteries"
    assert replies[third]["outcome"] == "success"
    assert sim.setpoint(2001) + sim.setpoint(2002) == pytest.approx(3000)
    # The third waited for the first's 0.3 s commands; the second never commanded anything.
    assert replies[second]["timing"]["commands_ms"] == 0
    assert replies[third]["timing"]["total_ms"] > replies[third]["timing"]["commands_ms"] >= 300


async def test_a_hanging_inverter_in_one_set_does_not_delay_another(
    sim: Simulator, client: Client
) -> None:
    sim.set_fault(2001, command_hang=True)
    slow = await client.send(
        "set_power", {"power_w": 1000, "batteries": [1001], "request_timeout_s": 3}
    )
    fast = await client.send("set_power", {"power_w": 1000, "batteries": [1002]})
    with trio.fail_after(10):
        first = await client.receive()
        assert first["id"] == fast
        assert first["result"]["outcome"] == "success"
        # Set A is still waiting for its inverter. Its command may reach the simulator's
        # thread after set B's reply has come back, so wait for it rather than race it.
        await sim_wait(sim, lambda s: s.pending_commands(2001) == 1)
        late = await client.reply_to(slow)
    assert late["result"]["outcome"] == "partial_failure"


async def test_overlapping_sets_run_one_after_another(
    sim: Simulator, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    sim.set_fault(2002, command_latency_s=0.2)
    first = await client.send("set_power", {"power_w": 1000, "batteries": [1001, 1002]})
    second = await client.send("set_power", {"power_w": 1000, "batteries": [1002, 1003]})
    replies: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while len(replies) < 2:
            message = await client.receive()
            (replies if "id" in message else notes).append(message)
    assert [r["id"] for r in replies] == [first, second]
    assert "overlaps the request for [1001, 1002]; it waits" in caplog.text
    # Issue 20: the older one's owner is told that the newer one ended it (it was told nothing).
    assert {
        "method": "proposal_ended",
        "params": {"batteries": [1001, 1002], "why": "superseded"},
    }.items() <= notes[0].items()


# --- standing setpoints -------------------------------------------------------------------


SCALE = 0.05
"""Setpoints expire after lifetime × this: a 10 s lifetime holds for 0.5 s."""


@pytest.fixture
def expiring_sim() -> Iterator[Simulator]:
    with Simulator(
        uniform_fleet(3, seed=1), telemetry_hz=20.0, lifetime_scale=SCALE, apis=("v1alpha18",)
    ) as simulator:
        yield simulator


@asynccontextmanager
async def refreshing(sim: Simulator, path: Path) -> AsyncIterator[Daemon]:
    """The daemon on ``sim`` with 10 s lifetimes, told that they run :data:`SCALE` as fast."""
    config = config_for(sim, setpoints={"lifetime_s": 10})
    async with running_daemon(sim, path, config, lifetime_scale=SCALE) as daemon:
        yield daemon


async def test_a_standing_setpoint_is_refreshed_before_it_expires(
    expiring_sim: Simulator, tmp_path: Path
) -> None:
    sim = expiring_sim
    async with (
        refreshing(sim, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        result = await client.result("set_power", {"power_w": 3000, "batteries": [1001, 1002]})
        assert result["outcome"] == "success"
        assert set(daemon.loop.standing()) == {frozenset({1001, 1002})}
        # Five sends per inverter span more than a lifetime (0.5 s): it never expired.
        await sim_wait(
            sim,
            lambda s: sum(r.component_id == 2001 and r.outcome == "ok" for r in s.commands()) >= 5,
        )
        assert sim.setpoint(2001) + sim.setpoint(2002) == pytest.approx(3000)
        # 0 W releases it: nothing is held, so nothing is refreshed.
        await client.result("set_power", {"power_w": 0, "batteries": [1001, 1002]})
        assert daemon.loop.standing() == {}
        assert sim.setpoint(2001) == 0.0


async def test_a_standing_setpoint_is_redistributed_when_a_battery_drops_out(
    expiring_sim: Simulator, tmp_path: Path
) -> None:
    sim = expiring_sim
    async with (
        refreshing(sim, tmp_path / "c.sock") as daemon,
        connect(tmp_path / "c.sock") as client,
    ):
        await client.result("set_power", {"power_w": 3000, "batteries": [1001, 1002]})
        sim.set_fault(1002, error_state=True)
        await wait_until(daemon, lambda d: d.tracker.state(1002).status is Status.NOT_WORKING)
        # The refresh gives battery 1001 all of it and stops battery 1002.
        await sim_wait(
            sim, lambda s: s.setpoint(2001) == pytest.approx(3000) and s.setpoint(2002) == 0.0
        )


# --- the protocol on a real socket --------------------------------------------------------


async def assert_still_usable(client: Client) -> None:
    result = await client.result("ping")
    assert result["version"]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"this is not json\n", -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping"]\n', -32700),
        (b"[" * 20_000 + b"\n", -32700),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]\n', -32600),
        (b'{"jsonrpc":"2.0","id":1}\n', -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":"reboot"}\n', -32601),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"set_power","params":{"power_w":NaN,"batteries":[1001]}}\n',
            -32602,
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"set_power","params":{"power_w":"5","batteries":[1001]}}\n',
            -32602,
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"set_power","params":{"power_w":5,"batteries":[1001,1001]}}\n',
            -32602,
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"set_power","params":{"power_w":5,"batteries":[-3]}}\n',
            -32602,
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"set_power","params":{"power_w":5,"batteries":[1],"x":1}}\n',
            -32602,
        ),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":1}}\n', -32602),
        (b'{"x":"' + b"a" * (70 * 1024) + b'"}\n', -32000),
    ],
)
async def test_each_protocol_error_and_the_connection_stays_usable(
    client: Client, line: bytes, code: int
) -> None:
    with trio.fail_after(10):
        await client.send_raw(line)
        reply = await client.receive()
        assert reply["error"]["code"] == code
        await assert_still_usable(client)


async def test_an_overloaded_queue_says_so(sim: Simulator, tmp_path: Path) -> None:
    config = config_for(sim, requests={"queue_size": 1})
    async with (
        running_daemon(sim, tmp_path / "q.sock", config),
        connect(tmp_path / "q.sock") as client,
    ):
        lines = b"".join(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": k,
                    "method": "set_power",
                    "params": {"power_w": 10, "batteries": [1001 + k % 4]},
                }
            ).encode()
            + b"\n"
            for k in range(50)
        )
        with trio.fail_after(20):
            await client.send_raw(lines)  # one write: read and queued in one go
            replies = [await client.receive() for _ in range(50)]
        overloaded = [r for r in replies if "error" in r]
        assert overloaded
        assert {r["error"]["code"] for r in overloaded} == {-32001}
        await assert_still_usable(client)


async def test_too_many_connections_are_refused(sim: Simulator, tmp_path: Path) -> None:
    config = config_for(sim, control={"max_connections": 2})
    path = tmp_path / "m.sock"
    async with running_daemon(sim, path, config), connect(path) as one, connect(path) as two:
        await assert_still_usable(one)
        await assert_still_usable(two)
        async with connect(path) as three:
            with trio.fail_after(10):
                reply = await three.receive()
                assert reply["error"]["code"] == -32001
                with pytest.raises(trio.EndOfChannel):
                    await three.receive()
        await assert_still_usable(one)


async def test_every_part_reads_the_one_running_value(sim: Simulator, tmp_path: Path) -> None:
    # Issue 10, item 2: the loop, the control server and the tracker each held a copy that a
    # reload had to replace one by one (and the daemon's drain timeout a fourth).
    running = LiveValue(config_for(sim))
    async with running_daemon(sim, tmp_path / "l.sock", running) as daemon:
        new = config_with(
            running.value,
            distribution={"exponent": 3.0},
            setpoints={"lifetime_s": 15},
            control={"max_connections": 5},
            status={"max_data_age_s": 7.0},
            requests={"drain_timeout_s": 1.0},
        )
        running.value = new
        assert daemon.config.value is new
        assert daemon.loop.config is new
        assert daemon.tracker.config is new.status


SYSTEM_PYTHON = "/usr/bin/python3"
PING_AND_READ = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
    's.sendall(b\'{"jsonrpc":"2.0","id":1,"method":"ping"}\\n\')\n'
    "data = b''\n"
    "while chunk := s.recv(65536):\n"
    "    data += chunk\n"
    "sys.stdout.write(data.decode())\n"
)


SETPRIV = shutil.which("setpriv")
AS_NOBODY = [SETPRIV or "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# setpriv changes the user after exec. subprocess's own `user=` needs a full fork() to call
# setuid in the child, and grpc's at-fork handler crashes that child (SIGSEGV) once grpc's
# threads run in this process; without `user=`, subprocess uses vfork and no handler runs.


def usable_by_nobody() -> bool:
    if SETPRIV is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    done = subprocess.run(
        [*AS_NOBODY, SYSTEM_PYTHON, "-c", "pass"], capture_output=True, timeout=30
    )
    return done.returncode == 0


@pytest.mark.skipif(
    os.geteuid() != 0 or not usable_by_nobody(),
    reason="needs root, setpriv and a system Python that user 'nobody' can run",
)
async def test_an_unauthorised_user_is_refused_and_disconnected(sim: Simulator) -> None:
    # pytest's temporary directories are private to root; "nobody" must reach the socket, so
    # that it is the daemon that says no. (The project's own Python may not be readable by
    # "nobody", hence the system one.)
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        path = Path(directory) / "control.sock"
        async with running_daemon(sim, path):
            os.chmod(path, 0o666)
            with trio.fail_after(30):
                done = await trio.to_thread.run_sync(
                    lambda: subprocess.run(
                        [*AS_NOBODY, SYSTEM_PYTHON, "-c", PING_AND_READ, str(path)],
                        capture_output=True,
                        text=True,
                        timeout=20,
                    )
                )
    assert done.returncode == 0, done.stderr
    (reply,) = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert reply["error"]["code"] == -32003
    assert "uid 65534" in reply["error"]["message"]


async def test_a_refused_peer_gets_32003_and_is_disconnected(
    sim: Simulator, tmp_path: Path
) -> None:
    """The refusal path on a real socket, whoever runs the tests (the policy says no)."""
    path = tmp_path / "r.sock"
    async with running_daemon(sim, path) as daemon:
        daemon.control._admit_peer = lambda uid, gid: False
        async with connect(path) as client:
            await client.send("ping")
            reply = await client.receive()
            assert reply["error"]["code"] == -32003
            with pytest.raises(trio.EndOfChannel):
                await client.receive()


@pytest.mark.parametrize(
    ("uid", "gid", "allowed"),
    [(0, 0, True), (1000, 1000, True), (1001, 50, True), (1002, 60, True), (1003, 1003, False)],
)
def test_who_may_use_the_socket(uid: int, gid: int, allowed: bool) -> None:
    config = ControlConfig(allowed_uids=(1001,), allowed_gids=(60,))
    assert is_allowed(uid, gid, owner_uid=1000, config=config) is allowed


async def test_a_client_that_never_reads_is_dropped_without_slowing_others(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It stops being read once its replies wait (back-pressure); after WRITE_STALL_S with no
    # reply taken it is cut off.
    monkeypatch.setattr(control, "WRITE_STALL_S", 0.5)
    path = tmp_path / "control.sock"
    async with connect(path) as hog, connect(path) as other:
        request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "get_status"}).encode() + b"\n"
        dropped = False
        with trio.fail_after(20):
            # Ask for far more than the outbox and the kernel's buffers hold, never reading.
            with trio.move_on_after(5):
                try:
                    for _ in range(2000):
                        await hog.send_raw(request * 10)
                except trio.BrokenResourceError:
                    dropped = True  # the daemon closed it while we were still writing
            await assert_still_usable(other)
            if not dropped:  # its connection ends after what was already sent
                with pytest.raises((trio.EndOfChannel, trio.BrokenResourceError)):
                    await drain(hog)


async def drain(client: Client) -> None:
    while True:
        await client.receive()


async def test_subscribers_are_told_of_changes(
    sim: Simulator, daemon: Daemon, client: Client
) -> None:
    assert await client.result("subscribe_status") == {"subscribed": True}
    sim.set_fault(1002, error_state=True)
    with trio.fail_after(10):
        while True:
            message = await client.receive()
            if message.get("method") == "status_changed" and message["params"]["id"] == 1002:
                break
    assert message["params"]["status"] == "not_working"
    assert "battery_error_state" in message["params"]["reasons"]


async def test_get_status_and_components(sim: Simulator, client: Client) -> None:
    await client.result("set_power", {"power_w": 1000, "batteries": [1001]})
    status = await client.result("get_status")
    assert status["working"] == BATTERIES
    first = status["batteries"][0]
    assert first["id"] == 1001
    assert first["inverter_id"] == 2001
    assert first["status"] == "working"
    assert first["setpoint_w"] == 1000.0
    assert first["bounds"]["inclusion_upper_w"] == 5000.0
    assert 0 <= first["data_age_s"] < 5
    components = await client.result("list_components")
    assert components["pairs"][0] == {"battery_id": 1001, "inverter_id": 2001}
    assert components["left_out"] == []


async def test_a_notification_set_power_is_not_applied_and_is_logged(
    sim: Simulator, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 20 (spec/protocol.md): a command whose result nobody can read is refused. It used
    # to be applied without a reply.
    await client.send_raw(
        b'{"jsonrpc":"2.0","method":"set_power","params":{"power_w":500,"batteries":[1003]}}\n'
    )
    await assert_still_usable(client)  # and the next message is the ping's reply, not a stray one
    assert not [r for r in sim.commands() if r.component_id == 2003]
    assert "set_power sent as a notification (no id) was not carried out" in caplog.text


# --- the socket file ----------------------------------------------------------------------


def test_the_socket_is_created_with_mode_0660(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    sock = bind_control_socket(str(path))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    finally:
        sock.close()


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays; nothing listens
    bind_control_socket(str(path)).close()


def test_a_live_socket_or_another_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    live = bind_control_socket(str(path))
    try:
        with pytest.raises(ControlSocketError, match="another process is listening"):
            bind_control_socket(str(path))
    finally:
        live.close()
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    with pytest.raises(ControlSocketError, match="exists and is not a socket"):
        bind_control_socket(str(other))
    assert other.read_text() == "keep me"
    with pytest.raises(ControlSocketError, match="its directory does not exist"):
        bind_control_socket(str(tmp_path / "missing" / "s.sock"))


def test_a_socket_it_bound_is_removed_at_the_end(tmp_path: Path) -> None:
    # Issue 23: a socket file the daemon bound itself was left behind at exit.
    path = tmp_path / "s.sock"
    with control.open_control_socket(str(path)) as sock:
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert sock.fileno() >= 0
    assert not path.exists()
    assert sock.fileno() == -1  # closed


def test_a_socket_it_bound_is_removed_when_the_start_fails_after_binding(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with pytest.raises(RuntimeError, match="metrics"), control.open_control_socket(str(path)):
        raise RuntimeError("metrics cannot be served")
    assert not path.exists()


def test_a_file_that_replaced_its_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with control.open_control_socket(str(path)):
        path.unlink()  # another daemon took the path over (ours had stopped accepting)
        with socket.socket(socket.AF_UNIX) as other:
            other.bind(str(path))
            theirs = os.lstat(path)
    after = os.lstat(path)
    assert (after.st_dev, after.st_ino) == (theirs.st_dev, theirs.st_ino)


def test_a_socket_removed_by_someone_else_is_no_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with control.open_control_socket(str(path)):
        path.unlink()
    assert not path.exists()


# --- what a site's operator does at the site -----------------------------------------------


async def test_bounds_added_at_the_site_govern_what_the_daemon_commands(tmp_path: Path) -> None:
    # Issue 22: a client of the site (another controller, the operator) narrows inverter
    # 2001 to [-1000, 1000] W; the daemon reads it in the inverter's bounds and keeps to it.
    with Simulator(uniform_fleet(2, seed=3), telemetry_hz=20.0, apis=("v1alpha18",)) as sim:
        sim.add_bounds(2001, [(-1000.0, 1000.0)], lifetime_s=900)
        async with running_daemon(sim, tmp_path / "c.sock"), connect(tmp_path / "c.sock") as client:
            result = await client.result(
                "set_power", {"power_w": 4000, "batteries": [1001], "adjust_power": False}
            )
            assert result["outcome"] == "out_of_bounds"
            assert result["bounds"]["inclusion_upper_w"] == 1000.0
            assert result["bounds"]["inclusion_lower_w"] == -1000.0
            result = await client.result("set_power", {"power_w": 4000, "batteries": [1001, 1002]})
            assert result["outcome"] == "success"
            assert sim.setpoint(2001) == pytest.approx(1000.0)
            assert sim.setpoint(2002) == pytest.approx(3000.0)
            # Nothing the daemon sent was refused by the site.
            assert {c.outcome for c in sim.commands()} == {"ok"}


async def test_an_inverter_stopped_at_the_site_takes_its_battery_out_until_started(
    sim: Simulator, daemon: Daemon, client: Client
) -> None:
    sim.control(2004, "stop")
    await wait_until(daemon, lambda d: d.tracker.state(1004).status is Status.NOT_WORKING)
    assert "inverter_error_state" in daemon.tracker.state(1004).reasons
    result = await client.result("set_power", {"power_w": 100, "batteries": [1004]})
    assert result["outcome"] == "error"
    assert result["message"] == "no usable batteries among [1004]"
    sim.control(2004, "start")
    await wait_until(daemon, lambda d: d.tracker.state(1004).status is Status.WORKING)
    result = await client.result("set_power", {"power_w": 100, "batteries": [1004]})
    assert result["outcome"] == "success"
    assert sim.setpoint(2004) == pytest.approx(100.0)


# --- what distributord-protocol(7) says ----------------------------------------------------


def _documented(method: str) -> set[str]:
    found = next(m for m in methods.METHODS if m.name == method)
    return {field.name for field in found.result}


async def test_every_result_field_the_daemon_sends_is_documented(client: Client) -> None:
    """The manual page (core/methods.py) lists every field of every result a client can get."""
    for method, params in (
        ("ping", None),
        ("get_status", None),
        ("list_components", None),
        ("get_proposals", None),
        ("hello", {"program": "default"}),
        ("set_power", {"power_w": 1000.0, "batteries": BATTERIES}),
        ("set_power", {"power_w": 1e9, "batteries": BATTERIES, "adjust_power": False}),
        ("propose", {"power_w": -500.0, "batteries": BATTERIES}),
        ("withdraw", None),
        ("subscribe_status", None),
        ("subscribe_bounds", {"batteries": BATTERIES}),
    ):
        result = await client.result(method, params)
        assert set(result) <= _documented(method), method
    status = await client.result("get_status")
    described = next(f for m in methods.METHODS if m.name == "get_status" for f in m.result)
    for key in {key for battery in status["batteries"] for key in battery}:
        assert re.search(rf"\b{key}\b", described.meaning), key
