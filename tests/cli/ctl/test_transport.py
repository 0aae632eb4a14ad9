"""``distributorctl``'s connection: unreachable, silent, closing and garbage-talking daemons."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from distributord.cli import ctl
from tests.cli.ctl.fake import (
    HANG_UP,
    Answer,
    FakeDaemon,
    Message,
    Outgoing,
    error_reply,
    run,
    status_changed,
)


def test_missing_socket_exits_3_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "absent.sock"
    assert ctl.main(["--socket", str(path), "status"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"distributorctl: cannot reach distributord at {path}: no such socket")


def test_refused_connection_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # bound, never listening: what a crashed daemon leaves behind
        assert ctl.main(["--socket", str(path), "ping"]) == 3
    err = capsys.readouterr().err
    assert f"at {path}: connection refused" in err


def test_daemon_that_hangs_up_exits_3(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["get_status"] = lambda request: [HANG_UP]
    assert run(daemon, "status") == 3
    assert capsys.readouterr().err == (
        f"distributorctl: distributord at {daemon.path} closed the connection\n"
    )


def test_silent_daemon_times_out(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ctl, "CALL_TIMEOUT_S", 0.2)
    daemon.answers["ping"] = lambda request: []  # keeps the connection open, says nothing
    assert run(daemon, "ping") == ctl.ExitCode.TIMEOUT
    assert capsys.readouterr().err == (
        f"distributorctl: distributord at {daemon.path} did not answer in time\n"
    )


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (b"this is not json\n", "a line that is not JSON"),
        (b"\xff\xfe\n", "a line that is not JSON"),
        (b"[1, 2]\n", "JSON that is not an object"),
        (b'{"jsonrpc": "2.0", "id": 1}\n', "neither result nor error"),
        (b'{"jsonrpc": "2.0", "id": 1, "error": "oops"}\n', "malformed error"),
    ],
)
def test_garbage_exits_7(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], sent: bytes, message: str
) -> None:
    daemon.answers["ping"] = lambda request: [sent]
    assert run(daemon, "ping") == ctl.ExitCode.BAD_REPLY
    assert message in capsys.readouterr().err


def test_only_our_reply_counts(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    def answer(request: Message) -> list[Outgoing]:
        return [
            status_changed(1001, "working", []),  # a notification: skipped
            {"jsonrpc": "2.0", "id": request["id"] + 1, "result": {"version": "wrong"}},
            b"\n",  # an empty line: skipped
            # Our reply, split across writes and sharing a write with the next line.
            b'{"jsonrpc": "2.0", "id": ',
            json.dumps(request["id"]).encode() + b', "result": {"version": "0.1.0", ',
            b'"uptime_s": 5}}\n{"jsonrpc": "2.0", "method": "status_changed"}\n',
        ]

    daemon.answers["ping"] = answer
    assert run(daemon, "ping") == 0
    assert capsys.readouterr().out == f"distributord 0.1.0 at {daemon.path}, up 5.0 s\n"


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        (
            error_reply(
                -32602,
                "invalid params",
                {"field": "batteries", "expected": "unique non-negative integers"},
            ),
            'distributord answered error -32602: invalid params ({"field": "batteries", '
            '"expected": "unique non-negative integers"})',
        ),
        (
            error_reply(-32001, "overloaded", "request queue full; retry later"),
            "distributord answered error -32001: overloaded (request queue full; retry later)",
        ),
        (
            error_reply(-32601, "method not found"),
            "distributord answered error -32601: method not found",
        ),
        (
            lambda request: [
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            ],
            "distributord answered error -32700: parse error",
        ),
        (
            lambda request: [
                {
                    "jsonrpc": "2.0",
                    "id": request["id"],
                    "error": {"code": -32003, "message": "not authorised"},
                },
                HANG_UP,
            ],
            "distributord answered error -32003: not authorised",
        ),
    ],
)
def test_json_rpc_error_exits_4(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], answer: Answer, line: str
) -> None:
    daemon.answers["set_power"] = answer
    assert run(daemon, "set-power", "-5kW", "--batteries", "1001,1002") == 4
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"distributorctl: {line}\n"
    # With --json, on stdout as a JSON object (spec/operations.md), nothing on stderr.
    assert run(daemon, "--json", "set-power", "-5kW", "--batteries", "1001,1002") == 4
    out, err = capsys.readouterr()
    assert err == ""
    error = json.loads(out)["error"]
    assert error["kind"] == "daemon_error"
    assert error["message"] == line
    assert error["may_be_applied"] is False


def test_the_client_loads_neither_trio_nor_grpc() -> None:
    code = (
        "import sys\n"
        "import distributord.cli.ctl\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in {'trio', 'grpc', 'google'})\n"
        "print(','.join(leaked))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""
