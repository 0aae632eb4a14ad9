"""Several programs share the fleet, through the daemon on the simulator over real sockets.

Each test runs the real daemon in process against the simulator (loopback gRPC), its programs
as clients on the real Unix socket (``spec/arbitration.md``): preemption and return, refusal at
equal priority, expiry, ``until_disconnect`` after ``kill -9`` of a program's process, bounds
notifications that follow telemetry and proposals, the audit lines, and a member of a program's
group allowed to act as it. What the inverters hold is read from the simulator's own record.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from distributord.core.status import Status
from distributord.shell.daemon import Daemon
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import Simulator
from tests.support import Client, config_for, ctl, running_daemon, sim_wait, wait_until

PROGRAMS = {
    "fcr": {"priority": 90},
    "peak": {"priority": 50},
    "trade": {"priority": 10},
    "broker": {"priority": 10},
    "capped": {"priority": 20, "max_charge_w": 1000, "batteries": [1001, 1002]},
}
LIMIT_S = 15.0
"""Each wait's bound: far above what it takes, so only a hang trips it."""


@pytest.fixture
def sim() -> Iterator[Simulator]:
    # Four batteries of ±5 kW each, no exclusion zones.
    with Simulator(uniform_fleet(4, seed=7), telemetry_hz=20.0, apis=("v1",)) as simulator:
        yield simulator


@pytest.fixture
async def daemon(sim: Simulator, tmp_path: Path) -> AsyncIterator[Daemon]:
    config = config_for(sim, programs=PROGRAMS)
    async with running_daemon(sim, tmp_path / "control.sock", config) as running:
        yield running


async def program(path: Path, name: str | None) -> tuple[Client, Any]:
    """A connection acting as program ``name`` (None: ``default``); the caller closes it."""
    stream = await trio.open_unix_socket(str(path))
    client = Client(stream)
    if name is not None:
        acting = await client.result("hello", {"program": name})
        assert acting["program"] == name
    return client, stream


async def held(
    sim: Simulator, expected: dict[int | tuple[int, ...], float], *, abs_w: float = 1.0
) -> None:
    """Wait until the inverters hold what is expected (W).

    Per battery, or summed over a tuple of batteries (the split follows their states of charge).
    """

    def holds(s: Simulator) -> bool:
        for batteries, watts in expected.items():
            group = batteries if isinstance(batteries, tuple) else (batteries,)
            if abs(sum(s.setpoint(s.inverter_of(b)) for b in group) - watts) > abs_w:
                return False
        return True

    await sim_wait(sim, holds, LIMIT_S)


async def notification(client: Client, method: str) -> dict[str, Any]:
    """The next notification ``method`` (others are skipped)."""
    while True:
        message = await client.receive()
        if message.get("method") == method:
            params: dict[str, Any] = message["params"]
            return params


# --- preemption, return, refusal ------------------------------------------------------------


async def test_three_programs_preempt_and_return(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "control.sock"
    trade, trade_stream = await program(path, "trade")
    peak, peak_stream = await program(path, "peak")
    fcr, fcr_stream = await program(path, "fcr")
    async with trade_stream, peak_stream, fcr_stream:
        result = await trade.result("propose", {"power_w": 4000, "batteries": [1001, 1002]})
        assert result["outcome"] == "success"
        assert result["arbitration"]["granted_w"] == 4000.0
        await held(sim, {(1001, 1002): 4000})

        # peak (50) overlaps on 1002: it holds 1002 and 1003; trade keeps 1001.
        result = await peak.result("propose", {"power_w": -3000, "batteries": [1002, 1003]})
        assert result["outcome"] == "success"
        assert sorted(result["distribution"]) == ["1002", "1003"]
        changed = await notification(trade, "proposal_changed")
        assert changed["batteries"] == [1001, 1002]
        assert "preempted_by" in changed["reasons"]
        assert changed["preempted_by"] == {"program": "peak", "priority": 50}
        assert changed["held_batteries"] == [1001]
        await held(sim, {1001: 4000, (1002, 1003): -3000})

        # fcr (90) takes 1003: peak goes on with 1002 alone.
        result = await fcr.result("propose", {"power_w": 1000, "batteries": [1003]})
        assert result["arbitration"] == {
            "program": "fcr",
            "priority": 90,
            "granted_w": 1000.0,
            "window_w": [-5000.0, 5000.0],
            "limited_by": [],
            "target_w": 1000.0,
            "reasons": [],
        }
        await held(sim, {1001: 4000, 1002: -3000, 1003: 1000})

        # Who holds what, as get_proposals says it.
        proposals = (await trade.result("get_proposals"))["proposals"]
        by_program = {p["program"]: p for p in proposals}
        assert by_program["trade"]["held_batteries"] == [1001]
        assert by_program["peak"]["held_batteries"] == [1002]
        assert by_program["fcr"]["held_batteries"] == [1003]
        assert by_program["peak"]["granted_w"] == -3000.0
        # What the per-program metrics read: live proposals and granted power.
        figures = daemon.loop.programs()
        assert figures["fcr"] == (1, 1000.0)
        assert figures["peak"] == (1, -3000.0)
        assert figures["broker"] == (0, 0.0)

        # fcr withdraws: 1003 returns to peak; peak withdraws: 1002 returns to trade, 1003 0 W.
        assert await fcr.result("withdraw") == {"withdrawn": [[1003]]}
        await held(sim, {1001: 4000, (1002, 1003): -3000})
        assert await peak.result("withdraw", {"batteries": [1002, 1003]}) == {
            "withdrawn": [[1002, 1003]]
        }
        await held(sim, {(1001, 1002): 4000, 1003: 0})
        # trade was told when it got 1002 back (its own withdrawal tells peak nothing more).
        returned = await notification(trade, "proposal_changed")
        assert returned["reasons"] == ["returned"]
        assert returned["held_batteries"] == [1001, 1002]


async def test_equal_priority_on_an_overlapping_set_is_refused_and_changes_nothing(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "control.sock"
    trade, trade_stream = await program(path, "trade")
    broker, broker_stream = await program(path, "broker")
    async with trade_stream, broker_stream:
        await trade.result("propose", {"power_w": 2000, "batteries": [1001, 1002]})
        await held(sim, {(1001, 1002): 2000})
        refused = await broker.result("propose", {"power_w": -4000, "batteries": [1002, 1003]})
        assert refused["outcome"] == "error"
        assert "program trade holds batteries [1001, 1002]" in refused["message"]
        proposals = (await broker.result("get_proposals"))["proposals"]
        assert [p["program"] for p in proposals] == ["trade"]
        # On the very same set they share one bucket: the grants add.
        result = await broker.result("propose", {"power_w": -500, "batteries": [1001, 1002]})
        assert result["outcome"] == "success"
        assert result["arbitration"]["target_w"] == 1500.0
        await held(sim, {(1001, 1002): 1500})


async def test_a_programs_limits_bound_its_proposals(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    capped, stream = await program(tmp_path / "control.sock", "capped")
    async with stream:
        result = await capped.result("propose", {"power_w": 4000, "batteries": [1001]})
        assert result["arbitration"]["granted_w"] == 1000.0
        assert "clamped" in result["arbitration"]["reasons"]
        await held(sim, {1001: 1000})
        outside = await capped.result("propose", {"power_w": 100, "batteries": [1003]})
        assert outside["outcome"] == "error"
        assert "[1003]" in outside["message"]


# --- lifetimes ------------------------------------------------------------------------------


async def test_an_expired_proposal_is_commanded_0_w_and_its_owner_told(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    trade, stream = await program(tmp_path / "control.sock", "trade")
    async with stream:
        await trade.result("propose", {"power_w": 3000, "batteries": [1004], "ttl_s": 1.0})
        await held(sim, {1004: 3000})
        ended = await notification(trade, "proposal_ended")
        assert ended == {"batteries": [1004], "why": "expired"}
        await held(sim, {1004: 0}, abs_w=0.0)
        zero = [
            r for r in sim.commands() if r.component_id == sim.inverter_of(1004) and r.power_w == 0
        ]
        assert zero, "no explicit 0 W command: the setpoint was left to lapse"
        assert (await trade.result("get_proposals"))["proposals"] == []


PROGRAM_SCRIPT = """
import json, socket, sys, time
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
reader = sock.makefile("rb")
def call(i, method, params):
    message = {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
    sock.sendall(json.dumps(message).encode() + b"\\n")
    while True:
        message = json.loads(reader.readline())
        if message.get("id") == i:
            return message
call(1, "hello", {"program": "fcr"})
reply = call(2, "propose", {"power_w": 2500, "batteries": [1004], "until_disconnect": True})
sys.stdout.write(json.dumps(reply) + "\\n")
sys.stdout.flush()
time.sleep(3600)
"""


async def test_until_disconnect_ends_when_the_program_is_killed(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "control.sock"
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", PROGRAM_SCRIPT, str(path)], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(LIMIT_S):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some()
                assert chunk, "the program ended before its proposal was answered"
                line += chunk
        assert json.loads(line)["result"]["outcome"] == "success"
        await held(sim, {1004: 2500})
        process.send_signal(signal.SIGKILL)
        await held(sim, {1004: 0}, abs_w=0.0)
        observer, stream = await program(path, None)
        async with stream:
            assert (await observer.result("get_proposals"))["proposals"] == []
    finally:
        process.kill()
        with trio.fail_after(LIMIT_S):
            await process.wait()


async def test_a_proposal_for_batteries_not_usable_yet_stands_and_applies_when_they_are(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    # The SDK drops a proposal made before the first telemetry; ours waits for the batteries.
    sim.set_fault(1004, error_state=True)
    await wait_until(daemon, lambda d: d.tracker.state(1004).status is Status.NOT_WORKING)
    trade, stream = await program(tmp_path / "control.sock", "trade")
    async with stream:
        result = await trade.result("propose", {"power_w": 1500, "batteries": [1004]})
        assert result["outcome"] == "error"
        assert "the proposal stands" in result["message"]
        (entry,) = (await trade.result("get_proposals"))["proposals"]
        assert entry["batteries"] == [1004]
        sim.clear_faults(1004)
        await held(sim, {1004: 1500})


# --- bounds ---------------------------------------------------------------------------------


async def test_bounds_notifications_follow_proposals_and_telemetry(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "control.sock"
    trade, trade_stream = await program(path, "trade")
    peak, peak_stream = await program(path, "peak")
    async with trade_stream, peak_stream:
        assert await trade.result("subscribe_bounds", {"batteries": [1001, 1002]}) == {
            "subscribed": True
        }
        first = await notification(trade, "bounds_changed")
        assert (first["inclusion_lower_w"], first["inclusion_upper_w"]) == (-10_000.0, 10_000.0)
        assert (first["program"], first["priority"]) == ("trade", 10)
        # A higher priority limits what lower ones may ask.
        await peak.result("propose", {"lower_w": -2000, "upper_w": 3000, "batteries": [1001, 1002]})
        narrowed = await notification(trade, "bounds_changed")
        assert (narrowed["inclusion_lower_w"], narrowed["inclusion_upper_w"]) == (-2000.0, 3000.0)
        # Telemetry: battery 1002 fails; the set can take only 1001's ±5 kW.
        await peak.result("withdraw")
        sim.set_fault(1002, error_state=True)
        while True:
            params = await notification(trade, "bounds_changed")
            if params["inclusion_upper_w"] == 5000.0:
                break
        assert params["inclusion_lower_w"] == -5000.0


# --- audit and who may act ------------------------------------------------------------------


async def test_every_decision_is_an_info_audit_line(
    sim: Simulator, daemon: Daemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="distributord")
    path = tmp_path / "control.sock"
    trade, trade_stream = await program(path, "trade")
    broker, broker_stream = await program(path, "broker")
    peak, peak_stream = await program(path, "peak")
    async with trade_stream, broker_stream, peak_stream:
        await trade.result("propose", {"power_w": 1000, "batteries": [1001, 1002]})
        await trade.result("propose", {"power_w": 2000, "batteries": [1001, 1002]})
        await broker.result("propose", {"power_w": 1000, "batteries": [1002, 1003]})
        await peak.result("propose", {"power_w": -1000, "batteries": [1002]})
        await peak.result("withdraw")
        await trade.result("propose", {"power_w": 500, "batteries": [1003], "ttl_s": 0.5})
        while (await notification(trade, "proposal_ended"))["why"] != "expired":
            pass
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    pid = os.getpid()
    audit = [line for line in lines if line.startswith("proposal by ")]
    for kind in ("granted", "ended: replaced", "refused", "preempted", "ended: withdrawn"):
        assert any(kind in line for line in audit), f"no audit line for {kind}: {audit}"
    assert any("ended: expired" in line for line in audit)
    assert all(f"pid {pid}" in line for line in audit)
    granted = next(line for line in audit if "program trade" in line and "granted" in line)
    assert "[1001, 1002] power 1000 W" in granted


PEER_PYTHON = "/usr/bin/python3"
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
HELLO_SCRIPT = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sock.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "hello", "params": {"program": "fcr"}}\\n')
reply = b""
while not reply.endswith(b"\\n"):
    chunk = sock.recv(65536)
    if not chunk:
        break
    reply += chunk
sys.stdout.buffer.write(reply)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run a peer as another user")
@pytest.mark.skipif(not os.access(PEER_PYTHON, os.X_OK), reason=f"needs {PEER_PYTHON}")
@pytest.mark.skipif(not os.access(SETPRIV, os.X_OK), reason=f"needs {SETPRIV}")
async def test_a_member_of_a_programs_group_may_act_as_it(sim: Simulator) -> None:
    uid, primary, fcr_gid, socket_gid = 54331, 54331, 54332, 54333
    programs = {"fcr": {"priority": 90, "groups": [fcr_gid]}}
    config = config_for(sim, programs=programs, control={"allowed_gids": [socket_gid]})
    directory = Path(tempfile.mkdtemp(prefix="distributord-programs-"))
    try:
        os.chmod(directory, 0o755)
        path = directory / "control.sock"
        async with running_daemon(sim, path, config):
            os.chmod(path, 0o666)

            async def hello_as(groups: list[int]) -> dict[str, Any]:
                # setpriv changes the credentials: Python's own (user=, extra_groups=) would
                # fork rather than vfork, and gRPC's fork handlers crash the child.
                done = await trio.run_process(
                    [
                        SETPRIV,
                        f"--reuid={uid}",
                        f"--regid={primary}",
                        f"--groups={','.join(map(str, groups))}",
                        PEER_PYTHON,
                        "-I",
                        "-S",
                        "-c",
                        HELLO_SCRIPT,
                        str(path),
                    ],
                    capture_stdout=True,
                    cwd="/",
                )
                reply: dict[str, Any] = json.loads(done.stdout)
                return reply

            member = await hello_as([socket_gid, fcr_gid])
            assert member["result"]["program"] == "fcr"
            assert member["result"]["priority"] == 90
            stranger = await hello_as([socket_gid])
            assert stranger["error"]["code"] == -32003
            assert f"uid {uid}" in stranger["error"]["message"]
    finally:
        shutil.rmtree(directory)


# --- distributorctl -------------------------------------------------------------------------


async def test_distributorctl_proposes_shows_and_withdraws_as_a_program(
    sim: Simulator, daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "control.sock"
    done = await ctl(path, "--program", "peak", "propose", "2kW", "--batteries", "1003,1004")
    assert done.returncode == 0, done.stderr
    assert b"success" in done.stdout
    await held(sim, {(1003, 1004): 2000})
    # A standing proposal outlives the one-shot connection that made it.
    shown = await ctl(path, "--json", "proposals")
    assert shown.returncode == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)["proposals"]
    assert (entry["program"], entry["priority"], entry["held_batteries"]) == (
        "peak",
        50,
        [1003, 1004],
    )
    table = await ctl(path, "proposals")
    assert b"peak" in table.stdout
    # Another program's withdraw takes nothing of peak's; peak's own does.
    other = await ctl(path, "--json", "--program", "trade", "withdraw")
    assert json.loads(other.stdout) == {"withdrawn": []}
    mine = await ctl(path, "--json", "--program", "peak", "withdraw")
    assert json.loads(mine.stdout) == {"withdrawn": [[1003, 1004]]}
    await held(sim, {1003: 0, 1004: 0}, abs_w=0.0)
    refused = await ctl(path, "--program", "nobody", "proposals")
    assert refused.returncode == 4
    assert b"no program 'nobody'" in refused.stderr
