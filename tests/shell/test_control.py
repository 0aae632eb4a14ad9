"""The control server on a real Unix socket, with the real request loop and status tracker.

The microgrid is a fake whose commands land only when a test lets them, so that a request can
be held "in flight" while the test disconnects its client, half-closes, or stops the server.
The server runs under the real clock (the socket is real); every test is bounded by
``trio.fail_after`` and synchronises on events and on replies, never on sleeps.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pwd
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from distributord.core import session as core_session
from distributord.core.config import Config, ControlConfig
from distributord.core.model import StateCode
from distributord.core.protocol import MAX_LINE_BYTES
from distributord.core.session import TOO_LONG_MESSAGE
from distributord.core.status import Status
from distributord.core.topology import Topology
from distributord.shell import backend as backend_module
from distributord.shell import control
from distributord.shell.backend import Connected, DaemonBackend
from distributord.shell.control import (
    Admission,
    ControlServer,
    bind_control_socket,
    is_allowed,
    peer_credentials,
)
from distributord.shell.live import LiveValue
from distributord.shell.requestloop import RequestLoop
from distributord.shell.tracker import StatusTracker
from tests.fakes import Answer, FakeMicrogrid
from tests.snapshots import battery_snapshot, inverter_snapshot
from tests.support import Client, config_with, connect

PAIRS = {1001: 2001, 1002: 2002}
LIMIT_S = 10.0
"""Each test's bound: far above what a test takes, so only a hang trips it."""
CONFIG = config_with(status={"max_data_age_s": 3600.0})
"""Telemetry fed once stays fresh for the whole test."""


@attrs.define
class Served:
    """A running control server and what it talks to."""

    path: Path
    server: ControlServer
    backend: DaemonBackend  # reached, unless served(connected=False)
    config: LiveValue[Config]  # the one the server reads: a test may reload it
    loop: RequestLoop
    tracker: StatusTracker
    microgrid: FakeMicrogrid  # every command is held until `release` is set
    release: trio.Event
    done: trio.Event  # set when ControlServer.serve has returned


@asynccontextmanager
async def serving(
    tmp_path: Path,
    config: Config = CONFIG,
    admit: Admission | None = None,
    *,
    connected: bool = True,
) -> AsyncIterator[Served]:
    """The control server on ``tmp_path/control.sock``, both batteries working.

    With ``connected=False`` the server starts as the daemon's does, before the microgrid is
    reached; the test calls ``served.backend.reached(...)`` when it wants it reached.
    """
    path = tmp_path / "control.sock"
    live = LiveValue(config)
    tracker = StatusTracker(PAIRS, live.view(lambda c: c.status), wall_clock=trio.current_time)
    for battery, inverter in PAIRS.items():
        now = trio.current_time()
        tracker.snapshot(battery_snapshot(component_id=battery, sampled_at=now, received_at=now))
        tracker.snapshot(inverter_snapshot(component_id=inverter, sampled_at=now, received_at=now))
    assert all(s.status is Status.WORKING for s in tracker.states.values())
    release = trio.Event()
    microgrid = FakeMicrogrid()
    microgrid.behaviour = dict.fromkeys(PAIRS.values(), Answer(held=release))
    topology = Topology(pairs=PAIRS, left_out={})
    loop = RequestLoop(microgrid, tracker, topology, live)
    backend = DaemonBackend(live, api=lambda: None)
    server = ControlServer(backend, config=live, admit=admit)
    if connected:
        backend.reached(Connected(loop=loop, tracker=tracker, topology=topology))
    sock = bind_control_socket(str(path))
    done = trio.Event()

    async def serve(*, task_status: trio.TaskStatus[None]) -> None:
        await server.serve(sock, task_status=task_status)
        done.set()

    with sock:  # closed even if the server does not get to close it
        async with trio.open_nursery() as nursery:
            await nursery.start(tracker.serve)
            await nursery.start(loop.serve)
            await nursery.start(serve)
            yield Served(
                path=path,
                server=server,
                backend=backend,
                config=live,
                loop=loop,
                tracker=tracker,
                microgrid=microgrid,
                release=release,
                done=done,
            )
            nursery.cancel_scope.cancel()


def set_power(power_w: float, batteries: list[int]) -> dict[str, Any]:
    return {"power_w": power_w, "batteries": batteries}


async def assert_served(client: Client) -> None:
    result = await client.result("ping")
    assert set(result) == {"version", "uptime_s", "microgrid"}
    assert result["microgrid"] == "connected"


async def assert_closed(client: Client) -> None:
    """The server closed the connection (EOF; a reset counts too)."""
    with pytest.raises((trio.EndOfChannel, trio.BrokenResourceError)):
        await client.receive()


# --- admission ------------------------------------------------------------------------------


def test_peer_credentials_are_the_peer_process_s() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_credentials(left) == (os.getpid(), os.geteuid(), os.getegid())


@pytest.mark.parametrize(
    ("uid", "gid", "allowed"),
    [
        (0, 4000, True),  # root
        (1000, 4000, True),  # the daemon's own user
        (1001, 4000, True),  # a listed user
        (3000, 60, True),  # a member of a listed group
        (3000, 4000, False),
        (1002, 61, False),
    ],
)
def test_who_is_allowed(uid: int, gid: int, allowed: bool) -> None:
    config = ControlConfig(allowed_uids=(1001,), allowed_gids=(60,))
    assert is_allowed(uid, gid, owner_uid=1000, config=config) is allowed


async def test_admission_is_asked_with_the_peer_s_credentials(tmp_path: Path) -> None:
    asked: list[tuple[int, int]] = []
    decisions = iter([False, True])

    def admit(uid: int, gid: int) -> bool:
        asked.append((uid, gid))
        return next(decisions)

    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path, admit=admit) as served:
            async with connect(served.path) as refused:
                await refused.send("ping")
                reply = await refused.receive()
                assert reply["id"] is None
                assert reply["error"]["code"] == -32003
                await assert_closed(refused)  # after -32003 the connection is closed
            async with connect(served.path) as admitted:
                await assert_served(admitted)
                assert served.server.statistics().connections == 1  # the refused one never counted
    assert asked == [(os.geteuid(), os.getegid())] * 2


async def test_the_default_admission_refuses_a_stranger_until_its_group_is_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, gid = os.geteuid() + 4242, os.getegid() + 4242  # neither root nor the daemon's user
    monkeypatch.setattr(control, "peer_credentials", lambda sock: (os.getpid(), uid, gid))
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served:
            async with connect(served.path) as refused:
                assert await refused.receive() == {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": -32003,
                        "message": f"not authorised: uid {uid} / gid {gid} may not use this socket",
                    },
                }
                await assert_closed(refused)
            # A reload applies to the connections that come after it.
            served.config.value = config_with(CONFIG, control={"allowed_gids": [gid]})
            async with connect(served.path) as admitted:
                await assert_served(admitted)


@pytest.mark.parametrize(
    ("uid", "gid", "groups", "allowed"),
    [
        (3000, 4000, (60,), True),  # a member of a listed group that is not its primary one
        (3000, 4000, (59, 61, 60), True),
        (3000, 60, (), True),  # the primary gid still counts
        (3000, 4000, (59, 61), False),
        (3000, 4000, (), False),
        (0, 4000, (), True),  # root, in no group
    ],
)
def test_supplementary_groups_count(
    uid: int, gid: int, groups: tuple[int, ...], allowed: bool
) -> None:
    config = ControlConfig(allowed_uids=(1001,), allowed_gids=(60,))
    assert is_allowed(uid, gid, owner_uid=1000, config=config, groups=groups) is allowed


def test_peer_groups_are_the_peer_process_s() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        groups = control.peer_groups(left, os.geteuid(), os.getegid())
    assert set(groups) == set(os.getgroups())


@attrs.define
class GroupsSocket:
    """A socket whose ``SO_PEERGROUPS`` fails with ``errno`` while the buffer is under ``fits``."""

    groups: tuple[int, ...]
    fits: int = 0
    errno: int = errno.ERANGE
    asked: list[int] = attrs.Factory(list)

    def getsockopt(self, level: int, option: int, size: int) -> bytes:
        assert (level, option) == (socket.SOL_SOCKET, 59)
        self.asked.append(size)
        if size < self.fits:
            raise OSError(self.errno, os.strerror(self.errno))
        return struct.pack(f"{len(self.groups)}I", *self.groups)


def test_peer_groups_retry_with_a_bigger_buffer_when_they_do_not_fit() -> None:
    groups = tuple(range(100, 140))  # 160 bytes: more than the first buffer holds
    sock = GroupsSocket(groups, fits=160)
    assert control.peer_groups(sock, 12345, 12345) == groups
    assert sock.asked == [64, 1024]


def test_peer_groups_come_from_the_group_database_where_the_kernel_has_none() -> None:
    sock = GroupsSocket((7,), fits=2**20, errno=errno.ENOPROTOOPT)  # a kernel before 4.13
    uid, gid = os.geteuid(), os.getegid()
    expected = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    assert set(control.peer_groups(sock, uid, gid)) == set(expected)
    assert sock.asked == [64]  # not retried: only ERANGE is
    unnamed = 4_000_000_000  # a uid with no name has no groups to look up
    with pytest.raises(KeyError):
        pwd.getpwuid(unnamed)
    assert control.peer_groups(sock, unnamed, gid) == ()


async def test_a_reload_rechecks_a_peer_s_supplementary_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid, gid, member_of = os.geteuid() + 4242, os.getegid() + 4242, os.getegid() + 4343
    monkeypatch.setattr(control, "peer_credentials", lambda sock: (os.getpid(), uid, gid))
    monkeypatch.setattr(control, "peer_groups", lambda sock, uid, gid: (member_of,))
    allowed = config_with(CONFIG, control={"allowed_gids": [member_of]})
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path, allowed) as served, connect(served.path) as client:
            await assert_served(client)
            served.config.value = config_with(allowed, control={"max_connections": 5})
            await assert_served(client)  # still a member of an allowed group: kept
            served.config.value = CONFIG
            revoked = await client.receive()
            assert revoked["error"]["code"] == -32003
            assert "may no longer use this socket" in revoked["error"]["message"]
            await assert_closed(client)


PEER = """
import socket, sys
with socket.socket(socket.AF_UNIX) as sock:
    sock.connect(sys.argv[1])
    sock.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}\\n')
    reply = b""
    while not reply.endswith(b"\\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    sys.stdout.buffer.write(reply)
"""
"""A client as another user would run it (no import beyond the standard library)."""

PEER_PYTHON = "/usr/bin/python3"
"""An interpreter another user may run (the test's own may sit in root's home)."""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run a peer as another user")
@pytest.mark.skipif(not os.access(PEER_PYTHON, os.X_OK), reason=f"needs {PEER_PYTHON}")
async def test_a_process_whose_supplementary_group_is_allowed_is_served() -> None:
    # Issue 20: `usermod -aG distributord alice` then `distributorctl status` as alice got
    # -32003, even with that gid allowed: only the primary gid was compared.
    uid, primary, allowed_gid = 54321, 54321, 54322
    config = config_with(CONFIG, control={"allowed_gids": [allowed_gid]})
    # A directory and a socket the other user may reach (tmp_path is root's alone), so that
    # the daemon's check is the one that decides, not the file's mode.
    directory = Path(tempfile.mkdtemp(prefix="distributord-admission-"))
    try:
        os.chmod(directory, 0o755)
        with trio.fail_after(LIMIT_S):
            async with serving(directory, config) as served:
                os.chmod(served.path, 0o666)

                async def ping_as(groups: list[int]) -> dict[str, Any]:
                    done = await trio.run_process(
                        [PEER_PYTHON, "-I", "-S", "-c", PEER, str(served.path)],
                        capture_stdout=True,
                        user=uid,
                        group=primary,
                        extra_groups=groups,
                        cwd="/",
                    )
                    reply: dict[str, Any] = json.loads(done.stdout)
                    return reply

                member = await ping_as([allowed_gid])
                assert member["result"]["microgrid"] == "connected"
                stranger = await ping_as([primary + 2])
                assert stranger["error"] == {
                    "code": -32003,
                    "message": f"not authorised: uid {uid} / gid {primary} may not use this socket",
                }
    finally:
        shutil.rmtree(directory)


async def test_past_max_connections_a_connection_gets_32001_and_is_closed(
    tmp_path: Path,
) -> None:
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path, config_with(CONFIG, control={"max_connections": 1})) as served:
            async with connect(served.path) as first:
                await assert_served(first)
                assert served.server.statistics().connections == 1
                async with connect(served.path) as second:
                    reply = await second.receive()
                    assert reply["id"] is None
                    assert reply["error"]["code"] == -32001
                    assert "1 connections open" in reply["error"]["message"]
                    await assert_closed(second)
                await assert_served(first)  # the one being served carries on
                # Half-close and wait for the server to close: the session is over then.
                await first.stream.send_eof()
                await assert_closed(first)
            assert served.server.statistics().connections == 0
            async with connect(served.path) as third:
                await assert_served(third)


# --- within a connection ---------------------------------------------------------------------


async def test_an_over_long_line_is_reported_once_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    head = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":"'
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served, connect(served.path) as client:
            # No newline yet: the line is too long already, and is reported at once.
            await client.send_raw(head + b"a" * MAX_LINE_BYTES)
            assert await client.receive() == {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32000, "message": TOO_LONG_MESSAGE},
            }
            # The rest of that line is discarded, however long; then lines are read again.
            await client.send_raw(b"a" * (2 * MAX_LINE_BYTES) + b'"}\n')
            await assert_served(client)  # its reply is the next message: no second error


async def test_malformed_input_is_answered_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served, connect(served.path) as client:
            await client.send_raw(b"\xff\xfe not utf-8\n[1, 2]\n\n   \n")
            first, second = await client.receive(), await client.receive()
            assert (first["error"]["code"], second["error"]["code"]) == (-32700, -32600)
            await assert_served(client)  # blank lines are skipped without a reply


async def test_replies_come_back_when_ready_so_a_ping_overtakes_a_set_power(
    tmp_path: Path,
) -> None:
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served, connect(served.path) as client:
            slow = await client.send("set_power", set_power(-1000, [1001, 1002]))
            await served.microgrid.commanded.wait()
            fast = await client.send("ping")
            assert (await client.receive())["id"] == fast
            served.release.set()
            reply = await client.receive()
            assert reply["id"] == slow
            assert reply["result"]["outcome"] == "success"
            status = await client.result("get_status")
            assert [b.get("setpoint_w") for b in status["batteries"]] == [-500.0, -500.0]
            assert dict(served.loop.statistics().setpoints) == {1001: -500.0, 1002: -500.0}


async def test_after_eof_the_pending_replies_are_written_then_the_connection_closes(
    tmp_path: Path,
) -> None:
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served, connect(served.path) as client:
            request_id = await client.send("set_power", set_power(1000, [1001]))
            await served.microgrid.commanded.wait()
            await client.stream.send_eof()
            await trio.testing.wait_all_tasks_blocked()  # the server has read the EOF...
            assert served.server.statistics().connections == 1  # ...and waits for the reply
            served.release.set()
            reply = await client.receive()
            assert reply["id"] == request_id
            assert reply["result"]["outcome"] == "success"
            await assert_closed(client)
            assert served.server.statistics().connections == 0


async def test_a_client_that_disconnects_mid_request_does_not_take_the_server_down(
    tmp_path: Path,
) -> None:
    # Writing the reply to a client that has gone raises BrokenResourceError inside the
    # session's nursery; it used to reach serve() wrapped in an ExceptionGroup and end it.
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served:
            async with connect(served.path) as leaving:
                await leaving.send("set_power", set_power(1000, [1001]))
                await served.microgrid.commanded.wait()
            # ``leaving`` is gone while its request is being applied.
            async with connect(served.path) as staying:
                await assert_served(staying)
                served.release.set()
                await served.microgrid.landed.wait()
                await trio.testing.wait_all_tasks_blocked()
                # The request that was applying completed; the server still serves.
                status = await staying.result("get_status")
                assert status["batteries"][0]["setpoint_w"] == 1000.0
                assert served.server.statistics().connections == 1


# --- stopping --------------------------------------------------------------------------------


async def test_stop_accepting_closes_the_listener_and_open_connections_carry_on(
    tmp_path: Path,
) -> None:
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served:
            async with connect(served.path) as client:
                await assert_served(client)
                served.server.stop_accepting()
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(ConnectionRefusedError):  # the file stays; nobody listens
                    await trio.open_unix_socket(str(served.path))
                await assert_served(client)
                assert not served.done.is_set()  # serve() waits for the open connection
                await client.stream.send_eof()
                await assert_closed(client)
            await served.done.wait()


async def test_ping_counts_uptime_from_process_start_not_from_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 10, item 8: uptime started when the control server was made (after discovery).
    monkeypatch.setattr(backend_module, "STARTED_MONOTONIC", time.monotonic() - 3600.0)
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served, connect(served.path) as client:
            result = await client.result("ping")
    assert result["uptime_s"] >= 3600.0


async def test_a_subscriber_that_reads_is_not_dropped_when_many_change_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 10, item 3: every change went into the 64-line outbox at once; 150 batteries
    # recovering together dropped a subscriber that reads. Here the outbox holds one reply, and
    # two batteries change, thrice each, before the writer can write.
    monkeypatch.setattr(core_session, "OUTBOX_LINES", 1)
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served, connect(served.path) as client:
            assert await client.result("subscribe_status") == {"subscribed": True}
            tracker, now = served.tracker, trio.current_time()
            for states in ({StateCode.ERROR}, {StateCode.READY}, {StateCode.ERROR}):
                for battery in PAIRS:
                    tracker.snapshot(
                        battery_snapshot(
                            component_id=battery,
                            sampled_at=now,
                            received_at=now,
                            states=frozenset(states),
                        )
                    )
            seen: dict[int, str] = {}
            while len(seen) < len(PAIRS) or set(seen.values()) != {"not_working"}:
                message = await client.receive()
                assert message["method"] == "status_changed"
                seen[message["params"]["id"]] = message["params"]["status"]
            await assert_served(client)  # still connected
            assert served.server.statistics().connections == 1


async def test_a_client_that_does_not_read_is_dropped_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 10, item 7: every reply after the drop logged the warning again (1,329 lines).
    # A client that reads nothing fills the socket's buffers; the daemon's writer waits
    # WRITE_STALL_S, then cuts it off, once.
    monkeypatch.setattr(control, "WRITE_STALL_S", 0.2)
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served, connect(served.path) as client:
            line = b'{"jsonrpc":"2.0","id":1,"method":"get_status"}\n'

            # Send, never read: the daemon stops reading (back-pressure), the client's sends
            # block, and end with a broken pipe once the daemon has cut the client off.
            async def flood() -> None:
                while True:
                    await client.send_raw(line * 100)

            with pytest.raises(trio.BrokenResourceError):
                await flood()
            await trio.testing.wait_all_tasks_blocked()
            assert served.server.statistics().connections == 0
    drops = [r for r in caplog.records if "took no reply" in r.getMessage()]
    assert len(drops) == 1


async def test_a_reading_client_that_pipelines_a_burst_gets_every_reply(tmp_path: Path) -> None:
    # Found by the protocol fuzzer: 128 pings in one write while reading got none of their
    # replies: the outbox overflowed within one read and the client was dropped. Now the
    # daemon reads no more from a client while OUTBOX_LINES replies wait (back-pressure).
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served, connect(served.path) as client:
            count = 20 * core_session.OUTBOX_LINES
            await client.send_raw(
                b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % k for k in range(count))
            )
            ids = [(await client.receive())["id"] for _ in range(count)]
            assert sorted(ids) == list(range(count))
            await assert_served(client)


@pytest.mark.parametrize(
    ("error", "transient"), [(errno.EMFILE, True), (errno.ENOBUFS, True), (errno.EBADF, False)]
)
async def test_accept_retries_only_what_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int, transient: bool
) -> None:
    # Issue 10, item 7: the accept loop retried every OSError forever.
    real_accept = trio.SocketListener.accept
    failures = [OSError(error, os.strerror(error))]

    async def accept(self: trio.SocketListener) -> trio.SocketStream:
        if failures:
            raise failures.pop()
        return await real_accept(self)

    monkeypatch.setattr(trio.SocketListener, "accept", accept)
    with trio.fail_after(LIMIT_S):
        if transient:
            async with serving(tmp_path) as served, connect(served.path) as client:
                await assert_served(client)
        else:
            with pytest.RaisesGroup(pytest.RaisesExc(OSError), flatten_subgroups=True):
                async with serving(tmp_path):
                    await trio.sleep_forever()


async def test_before_the_microgrid_is_reached_it_answers_and_subscribers_learn_everything(
    tmp_path: Path,
) -> None:
    # Issue 10, item 6: the socket accepted but nothing answered until discovery.
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path, connected=False) as served, connect(served.path) as client:
            assert (await client.result("ping"))["microgrid"] == "connecting"
            refused = await client.call("set_power", set_power(1000, [1001]))
            assert refused["error"]["code"] == -32004
            assert await client.result("subscribe_status") == {"subscribed": True}
            served.backend.reached(
                Connected(
                    loop=served.loop,
                    tracker=served.tracker,
                    topology=Topology(pairs=PAIRS, left_out={}),
                )
            )
            seen: dict[int, str] = {}
            while len(seen) < len(PAIRS):
                message = await client.receive()
                seen[message["params"]["id"]] = message["params"]["status"]
            assert seen == dict.fromkeys(PAIRS, "working")  # every battery, once reached
            await assert_served(client)
            served.release.set()
            result = await client.result("set_power", set_power(1000, [1001]))
            assert result["outcome"] == "success"


async def test_a_request_still_waiting_when_its_client_goes_is_not_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The protocol's rule for client departures: one already applying completes; one that
    # still waits for its batteries is not applied (and logged).
    caplog.set_level(logging.INFO, logger="distributord.shell.requestloop")
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served:
            async with connect(served.path) as leaving:
                await leaving.send("set_power", set_power(1000, [1001]))
                await served.microgrid.commanded.wait()  # applying, held
                await leaving.send("set_power", set_power(2000, [1001, 1002]))  # waits
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()  # gone: the server sees it
            served.release.set()
            await served.microgrid.landed.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert [setpoints for _, setpoints in served.microgrid.sent()] == [{2001: 1000.0}]
            assert served.loop.statistics().waiting == 0
    assert "withdrawn before it started: its client went away" in caplog.text


async def test_a_client_that_only_half_closes_still_gets_its_waiting_request_applied(
    tmp_path: Path,
) -> None:
    with trio.fail_after(LIMIT_S):
        async with serving(tmp_path) as served, connect(served.path) as client:
            first = await client.send("set_power", set_power(1000, [1001]))
            await served.microgrid.commanded.wait()
            second = await client.send("set_power", set_power(2000, [1001, 1002]))
            await client.stream.send_eof()  # done sending; still reading
            await trio.testing.wait_all_tasks_blocked()
            served.release.set()
            assert (await client.reply_to(first))["result"]["outcome"] == "success"
            assert (await client.reply_to(second))["result"]["outcome"] == "success"
