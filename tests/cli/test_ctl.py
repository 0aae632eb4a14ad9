"""``distributorctl`` against a fake daemon on a real Unix socket.

The fake reads request lines and answers each from a script (echoing the request's id), so a
test sees both sides: what the client sent and what it printed, and its exit code. Every socket
operation on either side has a timeout, so a broken client fails a test instead of hanging it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from distributord import __version__
from distributord.cli import ctl

IO_TIMEOUT_S = 10.0
"""Bound on every socket operation in the tests: far above any real exchange here."""

Message = dict[str, Any]


class HangUp:
    """In an answer: close the connection here."""


HANG_UP = HangUp()
Outgoing = Message | bytes | HangUp
Answer = Callable[[Message], Sequence[Outgoing]]


class FakeDaemon:
    """distributord's stand-in: serves connections one after another, answering from a script.

    ``answers[method]`` returns what to send for a request (messages, raw bytes, ``HANG_UP``).
    A method without an answer gets the connection closed, so a test that forgot one fails
    quickly with exit 3.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, Answer] = {}
        self.requests: list[Message] = []
        self._stopping = False
        self._errors: list[BaseException] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._listener.settimeout(IO_TIMEOUT_S)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as waker:  # ends accept()
            waker.settimeout(IO_TIMEOUT_S)
            waker.connect(str(self.path))
        self._thread.join(IO_TIMEOUT_S)
        self._listener.close()
        assert not self._thread.is_alive(), "the fake daemon did not stop"
        if self._errors:
            raise self._errors[0]

    def _serve(self) -> None:
        try:
            while True:
                connection, _ = self._listener.accept()
                with connection:
                    if self._stopping:
                        return
                    self._converse(connection)
        except BaseException as error:  # re-raised in the test's thread by stop()
            self._errors.append(error)

    def _converse(self, connection: socket.socket) -> None:
        connection.settimeout(IO_TIMEOUT_S)
        buffer = b""
        try:
            while chunk := connection.recv(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    request = json.loads(line)
                    self.requests.append(request)
                    answer = self.answers.get(request.get("method"), hang_up)
                    for item in answer(request):
                        if isinstance(item, HangUp):
                            return
                        data = item if isinstance(item, bytes) else json.dumps(item).encode()
                        connection.sendall(data if isinstance(item, bytes) else data + b"\n")
        except (BrokenPipeError, ConnectionResetError):  # the client left first: its right
            pass


def hang_up(request: Message) -> list[Outgoing]:
    return [HANG_UP]


def reply(result: Any) -> Answer:
    return lambda request: [{"jsonrpc": "2.0", "id": request["id"], "result": result}]


def error_reply(code: int, message: str, data: Any = None) -> Answer:
    error: Message = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return lambda request: [{"jsonrpc": "2.0", "id": request["id"], "error": error}]


def status_changed(battery: int, status: str, reasons: list[str]) -> Message:
    return {
        "jsonrpc": "2.0",
        "method": "status_changed",
        "params": {"id": battery, "status": status, "reasons": reasons},
    }


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    monkeypatch.delenv(ctl.SOCKET_ENV, raising=False)
    monkeypatch.setattr(ctl, "WATCH_IDLE_TIMEOUT_S", IO_TIMEOUT_S)
    fake = FakeDaemon(tmp_path / "control.sock")
    yield fake
    fake.stop()


def run(daemon: FakeDaemon, *argv: str) -> int:
    return ctl.main(["--socket", str(daemon.path), *argv])


def only_request(daemon: FakeDaemon) -> Message:
    assert len(daemon.requests) == 1
    request = daemon.requests[0]
    assert request["jsonrpc"] == "2.0"
    assert isinstance(request["id"], int)
    return request


STATUS = {
    "batteries": [
        {
            "id": 1001,
            "inverter_id": 2001,
            "status": "working",
            "reasons": [],
            "soc_pct": 55.04,
            "capacity_wh": 10000.0,
            "bounds": {
                "inclusion_lower_w": -5000.0,
                "exclusion_lower_w": 0.0,
                "exclusion_upper_w": 0.0,
                "inclusion_upper_w": 5000.0,
            },
            "setpoint_w": -2500.0,
            "data_age_s": 0.25,
        },
        {
            "id": 1002,
            "inverter_id": 2002,
            "status": "uncertain",
            "reasons": ["blocked_after_failure"],
            "blocked_until_s": 3.0,
            "soc_pct": 60.0,
            "setpoint_w": 0.0,
            "data_age_s": 0.5,
        },
        {
            "id": 1003,
            "inverter_id": 2003,
            "status": "not_working",
            "reasons": ["stale_battery_data", "inverter_error_state"],
            "data_age_s": 75.0,
        },
    ],
    "working": [1001],
    "uncertain": [1002],
}

COMPONENTS = {
    "pairs": [{"battery_id": 1001, "inverter_id": 2001}, {"battery_id": 1002, "inverter_id": 2002}],
    "left_out": [{"battery_id": 1005, "reason": "no inverter is connected to it"}],
}

SUCCESS = {
    "outcome": "success",
    "power_w": -5000.0,
    "batteries": [1001, 1002],
    "succeeded_power_w": -5000.0,
    "succeeded_batteries": [1001, 1002],
    "excess_power_w": 0.0,
    "distribution": {"1001": -2500.0, "1002": -2500.0},
    "reasons": {"1001": "proportional", "1002": "proportional"},
}

PARTIAL_FAILURE = {
    "outcome": "partial_failure",
    "power_w": -12000.0,
    "batteries": [1001, 1002, 1003],
    "succeeded_power_w": -5000.0,
    "succeeded_batteries": [1001],
    "failed_power_w": -5000.0,
    "failed_batteries": [1002],
    "excess_power_w": -2000.0,
    "distribution": {"1001": -5000.0, "1002": -5000.0},
    "reasons": {"1001": "capped", "1002": "capped"},
}

OUT_OF_BOUNDS = {
    "outcome": "out_of_bounds",
    "power_w": -50000.0,
    "batteries": [1001, 1002],
    "bounds": {
        "inclusion_lower_w": -20000.0,
        "exclusion_lower_w": -1000.0,
        "exclusion_upper_w": 1000.0,
        "inclusion_upper_w": 20000.0,
    },
}

ERROR = {
    "outcome": "error",
    "power_w": -5000.0,
    "batteries": [1001, 9999],
    "message": "unknown batteries 9999; known: 1001, 1002, 1003",
}

IGNORED = {
    "outcome": "ignored",
    "power_w": -5000.0,
    "batteries": [1001, 1002],
    "message": "superseded by a newer request for the same batteries",
}


# --- ping, status, components ----------------------------------------------------------------


def test_ping(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["ping"] = reply({"version": "0.1.0", "uptime_s": 3723.4})
    assert run(daemon, "ping") == 0
    request = only_request(daemon)
    assert request["method"] == "ping"
    assert "params" not in request
    out, err = capsys.readouterr()
    assert out == f"distributord 0.1.0 at {daemon.path}, up 1 h 02 min\n"
    assert err == ""


@pytest.mark.parametrize(
    ("command", "method", "result"),
    [
        ("ping", "ping", {"version": "0.1.0", "uptime_s": 1.5}),
        ("status", "get_status", STATUS),
        ("components", "list_components", COMPONENTS),
        ("status", "get_status", {"batteries": [], "working": [], "uncertain": []}),
    ],
)
def test_json_prints_exactly_the_result(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    command: str,
    method: str,
    result: Any,
) -> None:
    daemon.answers[method] = reply(result)
    assert run(daemon, "--json", command) == 0
    assert only_request(daemon)["method"] == method
    out, err = capsys.readouterr()
    assert json.loads(out) == result
    assert err == ""


def test_status_table(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["get_status"] = reply(STATUS)
    assert run(daemon, "status") == 0
    assert only_request(daemon)["method"] == "get_status"
    # Values the daemon did not send show as "-"; numbers align right, the age reads in minutes
    # past 60 s.
    assert capsys.readouterr().out.splitlines() == [
        "BATTERY  INVERTER  STATUS          SOC  SETPOINT    DATA AGE  REASONS",
        "   1001      2001  working      55.0 %  -2.50 kW       0.2 s",
        "   1002      2002  uncertain    60.0 %   0.00 kW       0.5 s  "
        "blocked_after_failure (3.0 s left)",
        "   1003      2003  not_working       -         -  1 min 15 s  "
        "stale_battery_data, inverter_error_state",
        "3 batteries: 1 working, 1 uncertain, 1 not working",
    ]


def test_status_without_batteries(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["get_status"] = reply({"batteries": [], "working": [], "uncertain": []})
    assert run(daemon, "status") == 0
    assert capsys.readouterr().out == "no batteries\n"


def test_components_table(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["list_components"] = reply(COMPONENTS)
    assert run(daemon, "components") == 0
    assert only_request(daemon)["method"] == "list_components"
    assert capsys.readouterr().out.splitlines() == [
        "2 battery/inverter pairs managed",
        "BATTERY  INVERTER",
        "   1001      2001",
        "   1002      2002",
        "1 batteries left out",
        "BATTERY  REASON",
        "   1005  no inverter is connected to it",
    ]


def test_components_with_nothing_left_out(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["list_components"] = reply({"pairs": [], "left_out": []})
    assert run(daemon, "components") == 0
    assert capsys.readouterr().out.splitlines() == [
        "0 battery/inverter pairs managed",
        "no batteries left out",
    ]


# --- set-power -------------------------------------------------------------------------------


def test_set_power_success(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["set_power"] = reply(SUCCESS)
    assert run(daemon, "set-power", "-5kW", "--batteries", "1001,1002") == 0
    request = only_request(daemon)
    assert request["method"] == "set_power"
    # Only what was given: the daemon's defaults apply to the rest.
    assert request["params"] == {"power_w": -5000.0, "batteries": [1001, 1002]}
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "success: -5.00 kW requested, -5.00 kW commanded to 2 batteries",
        "BATTERY     POWER  RESULT  REASON",
        "   1001  -2.50 kW  ok      proportional",
        "   1002  -2.50 kW  ok      proportional",
    ]
    assert err == ""


def test_set_power_partial_failure_table(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["set_power"] = reply(PARTIAL_FAILURE)
    assert run(daemon, "set-power", "-12kW", "--batteries", "1001,1002,1003") == 1
    assert capsys.readouterr().out.splitlines() == [
        "partial_failure: -12.00 kW requested, -5.00 kW commanded to 1 battery, "
        "-5.00 kW failed on 1 battery (1002), -2.00 kW could not be placed",
        "BATTERY     POWER  RESULT    REASON",
        "   1001  -5.00 kW  ok        capped",
        "   1002  -5.00 kW  failed    capped",
        "   1003         -  not used",
    ]


def test_set_power_without_the_reasons_extension(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    result = {key: value for key, value in SUCCESS.items() if key != "reasons"}
    daemon.answers["set_power"] = reply(result)
    assert run(daemon, "set-power", "-5kW", "--batteries", "1001,1002") == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "BATTERY     POWER  RESULT  REASON",
        "   1001  -2.50 kW  ok",
        "   1002  -2.50 kW  ok",
    ]


@pytest.mark.parametrize(
    ("result", "line"),
    [
        (
            OUT_OF_BOUNDS,
            "out_of_bounds: -50.00 kW requested, the batteries allow 0 W, -20.00 kW to "
            "-1.00 kW or 1.00 kW to 20.00 kW; nothing was commanded",
        ),
        (
            {**OUT_OF_BOUNDS, "bounds": {**STATUS["batteries"][0]["bounds"]}},  # type: ignore[index]
            "out_of_bounds: -50.00 kW requested, the batteries allow -5.00 kW to 5.00 kW; "
            "nothing was commanded",
        ),
        (
            {
                **OUT_OF_BOUNDS,
                "bounds": {
                    "inclusion_lower_w": None,  # the protocol's "unknown"
                    "exclusion_lower_w": -1000.0,
                    "exclusion_upper_w": 1000.0,
                    "inclusion_upper_w": 20000.0,
                },
            },
            "out_of_bounds: -50.00 kW requested, the batteries allow 0 W, unknown to "
            "-1.00 kW or 1.00 kW to 20.00 kW; nothing was commanded",
        ),
        (ERROR, "error: unknown batteries 9999; known: 1001, 1002, 1003"),
        (IGNORED, "ignored: superseded by a newer request for the same batteries"),
        ({"outcome": "postponed"}, "postponed"),
    ],
)
def test_set_power_outcomes_without_power_are_one_line(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], result: Message, line: str
) -> None:
    daemon.answers["set_power"] = reply(result)
    assert run(daemon, "set-power", "-50kW", "--batteries", "1001,1002") == 1
    out, err = capsys.readouterr()
    assert out == line + "\n"
    assert err == ""


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
@pytest.mark.parametrize(
    ("result", "code"),
    [
        (SUCCESS, 0),
        (PARTIAL_FAILURE, 1),
        (OUT_OF_BOUNDS, 1),
        (ERROR, 1),
        (IGNORED, 1),
        ({"outcome": "some_future_outcome"}, 1),
    ],
    ids=["success", "partial_failure", "out_of_bounds", "error", "ignored", "unknown"],
)
def test_set_power_exit_code_is_zero_only_for_success(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    result: Message,
    code: int,
    as_json: bool,
) -> None:
    daemon.answers["set_power"] = reply(result)
    flags = ["--json"] if as_json else []
    assert run(daemon, *flags, "set-power", "-5kW", "--batteries", "1001,1002") == code
    out, err = capsys.readouterr()
    if as_json:
        assert json.loads(out) == result
    assert err == ""


def test_set_power_json_is_one_document(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["set_power"] = reply(PARTIAL_FAILURE)
    assert run(daemon, "--json", "set-power", "-12kW", "--batteries", "1001,1002,1003") == 1
    out = capsys.readouterr().out
    document, end = json.JSONDecoder().raw_decode(out)
    assert document == PARTIAL_FAILURE
    assert out[end:] == "\n"


def test_set_power_options(daemon: FakeDaemon) -> None:
    daemon.answers["set_power"] = reply(SUCCESS)
    argv = ["set-power", "1.2MW", "--batteries", "7", "--timeout", "2.5", "--no-adjust"]
    assert run(daemon, *argv) == 0
    assert only_request(daemon)["params"] == {
        "power_w": 1_200_000.0,
        "batteries": [7],
        "request_timeout_s": 2.5,
        "adjust_power": False,
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["set-power", "-5kW", "--batteries", "1001,1002"],  # as in spec/operations.md
        ["set-power", "--batteries", "1001,1002", "-5kW"],
        ["set-power", "--batteries=1001,1002", "-5kW"],
        ["set-power", "--batteries", "1001,1002", "--", "-5kW"],
        ["set-power", "-5 kW", "--batteries", "1001,1002"],
        ["set-power", "-5000", "--batteries", "1001,1002"],
        ["set-power", "-.005MW", "--batteries", "1001,1002"],
        ["set-power", "-5e3W", "--batteries", "1001, 1002"],
        ["set-power", "-5KW", "--timeout", "3", "--batteries", "1001,1002"],
    ],
)
def test_negative_power_as_typed(daemon: FakeDaemon, argv: list[str]) -> None:
    daemon.answers["set_power"] = reply(SUCCESS)
    assert run(daemon, *argv) == 0
    params = only_request(daemon)["params"]
    assert params["power_w"] == -5000.0
    assert params["batteries"] == [1001, 1002]


def test_flags_after_the_command(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["set_power"] = reply(SUCCESS)
    argv = ["set-power", "-5kW", "--batteries", "1001,1002", "--json", "--socket"]
    assert ctl.main([*argv, str(daemon.path)]) == 0
    assert json.loads(capsys.readouterr().out) == SUCCESS


def test_json_before_the_command_survives_the_subcommand(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["ping"] = reply({"version": "0.1.0", "uptime_s": 1.0})
    assert ctl.main(["--json", "--socket", str(daemon.path), "ping"]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": "0.1.0", "uptime_s": 1.0}


# --- usage errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("power", "message"),
    [
        ("-5kX", "unknown unit 'kX'"),
        ("5kWh", "unknown unit 'kWh'"),
        ("five", "is not a power"),
        ("nan", "is not a power"),
        ("1e400W", "too large"),
        ("", "no power given"),
    ],
)
def test_bad_power_is_a_usage_error(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], power: str, message: str
) -> None:
    assert run(daemon, "set-power", power, "--batteries", "1001") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "argument POWER" in err
    assert message in err
    assert daemon.requests == []


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("", "not an id: ''"),
        ("1001,", "not an id: ''"),
        ("1001,,1002", "not an id: ''"),
        ("abc", "not an id: 'abc'"),
        ("1001,-1", "not an id: '-1'"),
        ("1.5", "not an id: '1.5'"),
        ("+7", "not an id: '+7'"),
        ("1001;1002", "not an id: '1001;1002'"),
        ("1001,1002,1001", "repeated: 1001"),
        (",".join(map(str, range(1025))), "at most 1024"),
    ],
)
def test_bad_battery_ids_are_a_usage_error(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], ids: str, message: str
) -> None:
    assert run(daemon, "set-power", "5kW", "--batteries", ids) == 2
    err = capsys.readouterr().err
    assert "argument --batteries" in err
    assert message in err
    assert daemon.requests == []


@pytest.mark.parametrize("timeout", ["0", "-1", "60.5", "nan", "inf", "soon"])
def test_bad_timeout_is_a_usage_error(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    assert run(daemon, "set-power", "5kW", "--batteries", "1", "--timeout", timeout) == 2
    assert "argument --timeout" in capsys.readouterr().err
    assert daemon.requests == []


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["reboot"],
        ["status", "--verbose"],
        ["set-power", "5kW"],  # --batteries is required
        ["set-power", "--batteries", "1"],  # POWER is required
        ["set-power", "-5kW", "-3kW", "--batteries", "1"],
    ],
)
def test_usage_errors_exit_2(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert run(daemon, *argv) == 2
    assert "usage:" in capsys.readouterr().err
    assert daemon.requests == []


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status:" in out
    for code in ("0  success", "1  set-power", "2  usage", "3  the daemon cannot be reached"):
        assert code in out
    assert "4  the daemon answered with a JSON-RPC error" in out


def test_set_power_help_documents_the_units(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["set-power", "--help"]) == 0
    out = capsys.readouterr().out
    assert "W, kW or MW, case-insensitive" in out
    assert "set-power -5kW --batteries 1001,1002" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--version"]) == 0
    assert capsys.readouterr().out == f"distributorctl {__version__}\n"


# --- the daemon cannot be reached, or answers badly -----------------------------------------


def test_missing_socket_exits_3_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "absent.sock"
    assert ctl.main(["--socket", str(path), "status"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"distributorctl: cannot reach distributord at {path}: no such socket")


def test_socket_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "from-env.sock"
    monkeypatch.setenv(ctl.SOCKET_ENV, str(path))
    assert ctl.main(["ping"]) == 3
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "environ", "path"),
    [
        ("/a.sock", {ctl.SOCKET_ENV: "/b.sock"}, "/a.sock"),
        (None, {ctl.SOCKET_ENV: "/b.sock"}, "/b.sock"),
        (None, {}, "/run/distributord/control.sock"),
        (None, {ctl.SOCKET_ENV: ""}, "/run/distributord/control.sock"),
        ("", {}, "/run/distributord/control.sock"),
    ],
)
def test_socket_path_precedence(given: str | None, environ: dict[str, str], path: str) -> None:
    assert ctl.socket_path(given, environ) == path


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


def test_set_power_that_is_lost_may_still_be_applied(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["set_power"] = lambda request: [HANG_UP]
    assert run(daemon, "set-power", "1kW", "--batteries", "1") == 3
    assert "closed the connection (the request may still be applied)" in capsys.readouterr().err


def test_silent_daemon_times_out(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ctl, "CALL_TIMEOUT_S", 0.2)
    daemon.answers["ping"] = lambda request: []  # keeps the connection open, says nothing
    assert run(daemon, "ping") == 3
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
def test_garbage_exits_3(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], sent: bytes, message: str
) -> None:
    daemon.answers["ping"] = lambda request: [sent]
    assert run(daemon, "ping") == 3
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "method", "result"),
    [
        ("ping", "ping", {"version": "0.1.0"}),
        ("status", "get_status", {"batteries": [{"id": 1}]}),
        ("status", "get_status", {"batteries": [{**STATUS["batteries"][0], "soc_pct": "full"}]}),  # type: ignore[index]
        ("components", "list_components", []),
        ("set-power", "set_power", {"outcome": "success"}),
        ("set-power", "set_power", "success"),
    ],
)
def test_unexpected_result_shape_exits_3_without_traceback(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    command: str,
    method: str,
    result: Any,
) -> None:
    daemon.answers[method] = reply(result)
    extra = ["1kW", "--batteries", "1"] if command == "set-power" else []
    assert run(daemon, command, *extra) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert f"unexpected {method} result from distributord" in err


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


# --- JSON-RPC errors -------------------------------------------------------------------------


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
    assert run(daemon, "--json", "set-power", "-5kW", "--batteries", "1001,1002") == 4
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"distributorctl: {line}\n"


# --- watch -----------------------------------------------------------------------------------

WATCH_LINE = re.compile(r"\d\d:\d\d:\d\d (?P<rest>.*)")


def subscribe_then(*notifications: Outgoing) -> Answer:
    return lambda request: [
        {"jsonrpc": "2.0", "id": request["id"], "result": {"subscribed": True}},
        *notifications,
    ]


def test_watch_prints_changes_until_the_daemon_closes(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["subscribe_status"] = subscribe_then(
        status_changed(1001, "not_working", ["stale_battery_data", "inverter_error_state"]),
        {"jsonrpc": "2.0", "method": "something_else", "params": {}},  # not ours to show
        status_changed(1001, "working", []),
        HANG_UP,
    )
    assert run(daemon, "watch") == 3
    request = only_request(daemon)
    assert request["method"] == "subscribe_status"
    out, err = capsys.readouterr()
    rests = []
    for line in out.splitlines():
        match = WATCH_LINE.fullmatch(line)
        assert match is not None, line
        rests.append(match["rest"])
    assert rests == [
        "battery 1001: not_working (stale_battery_data, inverter_error_state)",
        "battery 1001: working",
    ]
    assert err.splitlines() == [
        f"watching distributord at {daemon.path} (Ctrl-C to stop)",
        f"distributorctl: distributord at {daemon.path} closed the connection",
    ]


def test_watch_shows_changes_that_overtake_the_subscription_reply(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    def answer(request: Message) -> list[Outgoing]:
        return [
            status_changed(1002, "uncertain", ["blocked_after_failure"]),
            {"jsonrpc": "2.0", "id": request["id"], "result": {"subscribed": True}},
            HANG_UP,
        ]

    daemon.answers["subscribe_status"] = answer
    assert run(daemon, "--json", "watch") == 3
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"id": 1002, "status": "uncertain", "reasons": ["blocked_after_failure"]}
    ]


def test_watch_json_prints_one_object_per_line(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    changes = [
        status_changed(1001, "not_working", ["no_battery_data"]),
        status_changed(1002, "uncertain", ["blocked_after_failure"]),
        status_changed(1001, "working", []),
    ]
    daemon.answers["subscribe_status"] = subscribe_then(*changes, HANG_UP)
    assert run(daemon, "--json", "watch") == 3
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [c["params"] for c in changes]
    assert "watching" not in err  # --json keeps to the data


def test_watch_ends_with_exit_0_on_ctrl_c(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = ctl.format_status_change

    def interrupting(params: dict[str, Any], when: Any) -> str:
        if params["id"] == 999:  # the user presses Ctrl-C while this one arrives
            raise KeyboardInterrupt
        return real(params, when)

    monkeypatch.setattr(ctl, "format_status_change", interrupting)
    daemon.answers["subscribe_status"] = subscribe_then(
        status_changed(1001, "working", []),
        status_changed(999, "working", []),
        # The connection stays open: only Ctrl-C ends this watch.
    )
    assert run(daemon, "watch") == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1
    assert "interrupted" not in err


def test_watch_refused_subscription_exits_4(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["subscribe_status"] = error_reply(-32001, "overloaded")
    assert run(daemon, "watch") == 4
    assert capsys.readouterr().err == (
        "distributorctl: distributord answered error -32001: overloaded\n"
    )


def test_watch_without_a_daemon_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--socket", str(tmp_path / "none.sock"), "watch"]) == 3
    assert "cannot reach distributord" in capsys.readouterr().err


def test_malformed_notification_while_watching_exits_3(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["subscribe_status"] = subscribe_then(
        {"jsonrpc": "2.0", "method": "status_changed", "params": [1, 2]}
    )
    assert run(daemon, "watch") == 3
    assert "unexpected status_changed notification" in capsys.readouterr().err


# --- the rest --------------------------------------------------------------------------------


def test_ctrl_c_while_waiting_exits_130(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ctl.Connection, "call", interrupted)
    assert run(daemon, "set-power", "1kW", "--batteries", "1") == 130
    assert capsys.readouterr().err == "distributorctl: interrupted\n"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.0 s"),
        (12.34, "12.3 s"),
        (59.94, "59.9 s"),
        (60.0, "1 min 00 s"),
        (307.9, "5 min 07 s"),
        (3723.4, "1 h 02 min"),
        (3 * 86400 + 4 * 3600 + 5, "3 d 04 h"),
        (-1.0, "-1.0 s"),
        (float("inf"), "inf s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert ctl.format_duration(seconds) == text


def test_table_aligns_columns() -> None:
    assert ctl.table(["ID", "NAME"], [["1", "a"], ["1000", "bb"]], right=(0,)) == [
        "  ID  NAME",
        "   1  a",
        "1000  bb",
    ]


def test_a_real_process_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "absent.sock"
    argv = ["--socket", str(path), "set-power", "-5kW", "--batteries", "1001,1002"]
    done = subprocess.run(
        [sys.executable, "-m", "distributord.cli.ctl", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert str(path) in done.stderr
    assert "Traceback" not in done.stderr


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
