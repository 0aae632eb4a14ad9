"""``distributorctl`` runs a command: --json, exit codes, watch, Ctrl-C, a real process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from distributord.cli import ctl
from distributord.cli.ctl import render, transport
from distributord.core.model import MAX_REQUEST_TIMEOUT_S
from tests.cli.ctl.fake import (
    COMPONENTS,
    ERROR,
    HANG_UP,
    IGNORED,
    OUT_OF_BOUNDS,
    PARTIAL_FAILURE,
    PROPOSALS,
    PROPOSED,
    STATUS,
    SUCCESS,
    WITHDRAWN,
    Answer,
    FakeDaemon,
    Message,
    Outgoing,
    error_reply,
    hang_up,
    hello_reply,
    only_request,
    reply,
    run,
    status_changed,
)


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


def test_set_power_that_is_lost_may_still_be_applied(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["set_power"] = lambda request: [HANG_UP]
    assert run(daemon, "set-power", "1kW", "--batteries", "1") == 3
    assert "closed the connection (the request may still be applied)" in capsys.readouterr().err


WATCH_LINE = re.compile(r"\d\d:\d\d:\d\d (?P<rest>.*)")


def subscribe_then(*notifications: Outgoing) -> Answer:
    return lambda request: [
        {"jsonrpc": "2.0", "id": request["id"], "result": {"subscribed": True}},
        *notifications,
    ]


NO_BATTERIES: Message = {"batteries": [], "working": [], "uncertain": []}


def watching(
    daemon: FakeDaemon,
    *notifications: Outgoing,
    status: Message = NO_BATTERIES,
    overtaking: Sequence[Outgoing] = (),
) -> None:
    """What ``watch`` is answered: ``status``, then these notifications.

    ``overtaking`` are sent between the subscription's reply and the status reply.
    """
    daemon.answers["subscribe_status"] = subscribe_then(*overtaking)
    daemon.answers["get_status"] = lambda request: [*reply(status)(request), *notifications]


def test_watch_prints_changes_until_the_daemon_closes(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    watching(
        daemon,
        status_changed(1001, "not_working", ["stale_battery_data", "inverter_error_state"]),
        {"jsonrpc": "2.0", "method": "something_else", "params": {}},  # not ours to show
        status_changed(1001, "working", []),
        HANG_UP,
    )
    assert run(daemon, "watch") == 3
    assert [request["method"] for request in daemon.requests] == [
        "subscribe_status",
        "get_status",
    ]
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


def test_watch_json_prints_one_object_per_line(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    changes = [
        status_changed(1001, "not_working", ["no_battery_data"]),
        status_changed(1002, "uncertain", ["blocked_after_failure"]),
        status_changed(1001, "working", []),
    ]
    watching(daemon, *changes, HANG_UP)
    assert run(daemon, "--json", "watch") == 3
    out, err = capsys.readouterr()
    *lines, end = [json.loads(line) for line in out.splitlines()]
    assert lines == [c["params"] for c in changes]
    assert end["error"]["kind"] == "unreachable"  # the daemon closed the connection
    assert "watching" not in err  # --json keeps to the data


def test_watch_ends_with_exit_0_on_ctrl_c(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = render.format_status_change

    def interrupting(params: dict[str, Any], when: Any) -> str:
        if params["id"] == 999:  # the user presses Ctrl-C while this one arrives
            raise KeyboardInterrupt
        return real(params, when)

    monkeypatch.setattr(ctl, "format_status_change", interrupting)
    watching(
        daemon,
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


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_malformed_notification_while_watching_exits_7(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    watching(daemon, {"jsonrpc": "2.0", "method": "status_changed", "params": [1, 2]})
    flags = ["--json"] if as_json else []
    assert run(daemon, *flags, "watch") == ctl.ExitCode.BAD_REPLY
    if as_json:
        assert json.loads(capsys.readouterr().out)["error"]["kind"] == "bad_reply"
        return
    assert "unexpected status_changed notification" in capsys.readouterr().err


def test_ctrl_c_while_waiting_exits_130(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(transport.Connection, "call", interrupted)
    assert run(daemon, "set-power", "1kW", "--batteries", "1") == 130
    assert capsys.readouterr().err == (
        "distributorctl: interrupted (the request may still be applied)\n"
    )
    assert run(daemon, "status") == 130
    assert capsys.readouterr().err == "distributorctl: interrupted\n"
    assert run(daemon, "--json", "set-power", "1kW", "--batteries", "1") == 130
    out, err = capsys.readouterr()
    assert err == ""
    error = json.loads(out)["error"]
    assert (error["kind"], error["may_be_applied"]) == ("interrupted", True)


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


# --- arbitration: propose, withdraw, proposals, --program (issue 20) -------------------------

GRANTED = {**PROPOSED, "power_w": -8000.0, "excess_power_w": 0.0}
"""A proposal granted in full (exit 0): PROPOSED asked -12 kW and was granted -8 kW (exit 5)."""

COMMANDS = [
    (["ping"], "ping", {"version": "0.1.0", "uptime_s": 1.5}),
    (["status"], "get_status", STATUS),
    (["components"], "list_components", COMPONENTS),
    (["proposals"], "get_proposals", PROPOSALS),
    (["set-power", "-5kW", "--batteries", "1001,1002"], "set_power", SUCCESS),
    (["propose", "-12kW", "--batteries", "1001,1002"], "propose", GRANTED),
    (["withdraw"], "withdraw", WITHDRAWN),
]
COMMAND_IDS = [method for _, method, _ in COMMANDS]


@pytest.mark.parametrize(("command", "method", "result"), COMMANDS, ids=COMMAND_IDS)
def test_program_says_hello_first_on_the_same_connection(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    method: str,
    result: Any,
) -> None:
    daemon.answers["hello"] = hello_reply()
    daemon.answers[method] = reply(result)
    assert run(daemon, "--program", "fcr", "--json", *command) == 0
    hello, request = daemon.requests  # one connection: the fake serves them one at a time
    assert hello["method"] == "hello"
    assert hello["params"] == {"program": "fcr"}
    assert request["method"] == method
    assert request["id"] != hello["id"]
    assert json.loads(capsys.readouterr().out) == result  # hello's result is not printed


@pytest.mark.parametrize(("command", "method", "result"), COMMANDS, ids=COMMAND_IDS)
def test_no_hello_without_program(
    daemon: FakeDaemon, command: list[str], method: str, result: Any
) -> None:
    daemon.answers[method] = reply(result)  # a hello would get the connection closed: exit 3
    assert run(daemon, *command) == 0
    assert only_request(daemon)["method"] == method


def test_watch_as_a_program(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["hello"] = hello_reply()
    watching(daemon, status_changed(1, "working", []), HANG_UP)
    assert run(daemon, "--json", "watch", "--program", "fcr") == 3
    assert [request["method"] for request in daemon.requests] == [
        "hello",
        "subscribe_status",
        "get_status",
    ]
    assert daemon.requests[0]["params"] == {"program": "fcr"}
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()][:-1] == [
        {"id": 1, "status": "working", "reasons": []}
    ]


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
@pytest.mark.parametrize(
    "command", [["watch"], *(command for command, _, _ in COMMANDS)], ids=["watch", *COMMAND_IDS]
)
def test_refused_hello_exits_4_and_sends_nothing_else(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], command: list[str], as_json: bool
) -> None:
    daemon.answers["hello"] = error_reply(
        -32003, "not allowed", "uid 1000 may not act as program 'no such'"
    )
    flags = ["--json"] if as_json else []
    assert run(daemon, *flags, "--program", "no such", *command) == 4
    assert [request["method"] for request in daemon.requests] == ["hello"]
    assert daemon.requests[0]["params"] == {"program": "no such"}  # sent as typed
    out, err = capsys.readouterr()
    line = (
        "distributord answered error -32003: not allowed "
        "(uid 1000 may not act as program 'no such') (to hello as program 'no such')"
    )
    if as_json:
        assert err == ""
        assert json.loads(out)["error"]["message"] == line
    else:
        assert out == ""
        assert err == f"distributorctl: {line}\n"


def test_hello_refused_then_hung_up_still_exits_4(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # The daemon may close the connection after the refusal: the refusal is what counts.
    daemon.answers["hello"] = lambda request: [
        {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32003, "message": "nope"}},
        HANG_UP,
    ]
    assert run(daemon, "--program", "fcr", "propose", "1kW", "--batteries", "1") == 4
    assert capsys.readouterr().err.count("\n") == 1


def test_lost_hello_is_not_a_request_that_may_be_applied(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["hello"] = lambda request: [HANG_UP]
    assert run(daemon, "--program", "fcr", "propose", "1kW", "--batteries", "1") == 3
    err = capsys.readouterr().err
    assert err == f"distributorctl: distributord at {daemon.path} closed the connection\n"
    assert [request["method"] for request in daemon.requests] == ["hello"]


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
@pytest.mark.parametrize(
    ("result", "code"),
    [
        (GRANTED, 0),
        ({**PARTIAL_FAILURE, "arbitration": PROPOSED["arbitration"]}, 1),
        ({**OUT_OF_BOUNDS, "arbitration": PROPOSED["arbitration"]}, 1),
        (ERROR, 1),
        (IGNORED, 1),
        ({"outcome": "some_future_outcome"}, 1),
    ],
    ids=["success", "partial_failure", "out_of_bounds", "error", "ignored", "unknown"],
)
def test_propose_exit_code_is_zero_only_for_success(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    result: Message,
    code: int,
    as_json: bool,
) -> None:
    daemon.answers["propose"] = reply(result)
    flags = ["--json"] if as_json else []
    assert run(daemon, *flags, "propose", "-12kW", "--batteries", "1001,1002,1003") == code
    out, err = capsys.readouterr()
    if as_json:
        document, end = json.JSONDecoder().raw_decode(out)
        assert document == result
        assert out[end:] == "\n"
    assert err == ""


@pytest.mark.parametrize(
    ("command", "method", "result"),
    [
        (["proposals"], "get_proposals", PROPOSALS),
        (["proposals"], "get_proposals", {"proposals": []}),
        (["withdraw"], "withdraw", WITHDRAWN),
        (["withdraw", "--batteries", "5"], "withdraw", {"withdrawn": []}),
    ],
)
def test_arbitration_json_prints_exactly_the_result(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    method: str,
    result: Any,
) -> None:
    daemon.answers[method] = reply(result)
    assert run(daemon, *command, "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == result
    assert err == ""


@pytest.mark.parametrize(
    "command", [["propose", "1kW", "--batteries", "1"], ["withdraw", "--batteries", "1"]]
)
def test_a_lost_propose_or_withdraw_may_still_be_applied(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    daemon.answers[command[0]] = lambda request: [HANG_UP]
    assert run(daemon, *command) == 3
    assert "closed the connection (the request may still be applied)" in capsys.readouterr().err


def test_a_lost_proposals_is_only_lost(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["get_proposals"] = lambda request: [HANG_UP]
    assert run(daemon, "proposals") == 3
    assert "may still be applied" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "method", "seconds"),
    [
        (["proposals"], "get_proposals", ctl.CALL_TIMEOUT_S),
        (["withdraw"], "withdraw", ctl.CALL_TIMEOUT_S),
        (
            ["propose", "1kW", "--batteries", "1"],
            "propose",
            MAX_REQUEST_TIMEOUT_S + ctl.SET_POWER_MARGIN_S,
        ),
        (
            ["set-power", "1kW", "--batteries", "1", "--timeout", "2"],
            "set_power",
            2.0 + ctl.SET_POWER_MARGIN_S,
        ),
    ],
)
def test_deadlines(
    daemon: FakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    method: str,
    seconds: float,
) -> None:
    # The deadline each call is given, measured from before the command started: hello gets
    # CALL_TIMEOUT_S (it is answered from memory), the command its own.
    deadlines: list[tuple[str, float]] = []
    real = transport.Connection.call

    def recording(self: transport.Connection, method: str, params: Any, deadline: float) -> Any:
        deadlines.append((method, deadline))
        return real(self, method, params, deadline)

    monkeypatch.setattr(transport.Connection, "call", recording)
    daemon.answers["hello"] = hello_reply()
    daemon.answers[method] = reply(
        {"withdrawn": []}
        if method == "withdraw"
        else PROPOSALS
        if method == "get_proposals"
        else PROPOSED
    )
    before = time.monotonic()
    run(daemon, "--program", "fcr", *command)
    after = time.monotonic()
    assert [name for name, _ in deadlines] == ["hello", method]
    (_, hello), (_, own) = deadlines
    assert before + ctl.CALL_TIMEOUT_S <= hello <= after + ctl.CALL_TIMEOUT_S
    assert before + seconds <= own <= after + seconds


def test_silent_daemon_during_hello_times_out(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ctl, "CALL_TIMEOUT_S", 0.2)
    daemon.answers["hello"] = lambda request: []  # keeps the connection open, says nothing
    # propose's own deadline is 70 s; hello's is CALL_TIMEOUT_S.
    assert run(daemon, "--program", "fcr", "propose", "1kW", "--batteries", "1") == 6
    assert capsys.readouterr().err == (
        f"distributorctl: distributord at {daemon.path} did not answer in time\n"
    )


# --- errors with --json, exit codes, watch's first state (issue 23) --------------------------


def silent(request: Message) -> list[Outgoing]:
    return []  # keeps the connection open and says nothing


FAILURES: list[tuple[str, list[str], dict[str, Answer], ctl.ExitCode, str]] = [
    (
        "daemon_error",
        ["status"],
        {"get_status": error_reply(-32001, "overloaded", {"retry": True})},
        ctl.ExitCode.DAEMON_ERROR,
        "distributord answered error -32001: overloaded",
    ),
    (
        "hello_refused",
        ["--program", "fcr", "ping"],
        {"hello": error_reply(-32003, "not allowed")},
        ctl.ExitCode.DAEMON_ERROR,
        "(to hello as program 'fcr')",
    ),
    ("closed", ["ping"], {"ping": hang_up}, ctl.ExitCode.UNREACHABLE, "closed the connection"),
    (
        "lost_command",
        ["set-power", "1kW", "--batteries", "1"],
        {"set_power": hang_up},
        ctl.ExitCode.UNREACHABLE,
        "(the request may still be applied)",
    ),
    ("timeout", ["ping"], {"ping": silent}, ctl.ExitCode.TIMEOUT, "did not answer in time"),
    (
        "timeout_of_a_command",
        ["withdraw"],
        {"withdraw": silent},
        ctl.ExitCode.TIMEOUT,
        "did not answer in time (the request may still be applied)",
    ),
    (
        "not_json",
        ["ping"],
        {"ping": lambda request: [b"HTTP/1.1 400 Bad Request\r\n\r\n\n"]},
        ctl.ExitCode.BAD_REPLY,
        "not",
    ),
    (
        "unusable_result",
        ["status"],
        {"get_status": reply({"batteries": 7})},
        ctl.ExitCode.BAD_REPLY,
        "unexpected get_status result",
    ),
]


@pytest.mark.parametrize(
    ("argv", "answers", "code", "message"),
    [failure[1:] for failure in FAILURES],
    ids=[failure[0] for failure in FAILURES],
)
def test_an_error_is_one_line_on_stderr_or_one_json_object_on_stdout(
    daemon: FakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    answers: dict[str, Answer],
    code: ctl.ExitCode,
    message: str,
) -> None:
    monkeypatch.setattr(ctl, "CALL_TIMEOUT_S", 0.2)
    monkeypatch.setattr(ctl, "SET_POWER_MARGIN_S", 0.0)
    daemon.answers.update(answers)
    assert run(daemon, *argv) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("distributorctl: ")
    assert err.count("\n") == 1
    assert message in err
    text_line = err.removeprefix("distributorctl: ").rstrip("\n")

    assert run(daemon, "--json", *argv) == code
    out, err = capsys.readouterr()
    assert err == ""
    document, end = json.JSONDecoder().raw_decode(out)
    assert out[end:] == "\n"
    error = document.pop("error")
    assert document == {}
    assert error["kind"] == code.name.lower()
    assert error["exit_code"] == code
    assert error["message"] == text_line


def test_a_json_daemon_error_carries_the_json_rpc_error(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["get_status"] = error_reply(-32001, "overloaded", {"retry": True})
    assert run(daemon, "--json", "status") == ctl.ExitCode.DAEMON_ERROR
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["rpc_error"] == {"code": -32001, "message": "overloaded", "data": {"retry": True}}
    assert "program" not in error


def test_a_json_hello_refusal_names_the_program(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["hello"] = error_reply(-32003, "not allowed")
    assert run(daemon, "--json", "--program", "fcr", "ping") == ctl.ExitCode.DAEMON_ERROR
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["rpc_error"] == {"code": -32003, "message": "not allowed"}
    assert error["program"] == "fcr"


@pytest.mark.parametrize(
    ("command", "answer", "applied"),
    [
        (["set-power", "1kW", "--batteries", "1"], {"set_power": hang_up}, True),
        (["withdraw"], {"withdraw": hang_up}, True),
        (["proposals"], {"get_proposals": hang_up}, False),
    ],
)
def test_a_json_error_says_whether_the_request_may_still_be_applied(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    answer: dict[str, Answer],
    applied: bool,
) -> None:
    daemon.answers.update(answer)
    assert run(daemon, "--json", *command) == ctl.ExitCode.UNREACHABLE
    assert json.loads(capsys.readouterr().out)["error"]["may_be_applied"] is applied


def test_an_unusable_answer_to_a_command_says_it_may_have_been_applied(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found in review: the daemon took the command and answered; only its result was
    # unreadable, yet the error said "may_be_applied": false.
    daemon.answers["set_power"] = reply({"outcome": "success", "excess_power_w": "lots"})
    assert run(daemon, "--json", "set-power", "1kW", "--batteries", "1") == ctl.ExitCode.BAD_REPLY
    error = json.loads(capsys.readouterr().out)["error"]
    assert (error["kind"], error["may_be_applied"]) == ("bad_reply", True)


def test_no_daemon_with_json_is_a_json_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "none.sock"
    assert ctl.main(["--json", "--socket", str(path), "ping"]) == ctl.ExitCode.UNREACHABLE
    out, err = capsys.readouterr()
    assert err == ""
    error = json.loads(out)["error"]
    assert error["kind"] == "unreachable"
    assert str(path) in error["message"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--json"],
        ["--json", "reboot"],
        ["status", "--json", "--verbose"],
        ["--json", "set-power", "5kX", "--batteries", "1"],
        ["set-power", "5kW", "--batteries", "1,1", "--json"],
        ["--js", "set-power", "5kW"],  # an abbreviation argparse takes for --json
        ["--json", "propose", "--batteries", "1"],  # a rule that spans arguments
    ],
)
def test_usage_errors_with_json_are_a_json_error(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert run(daemon, *argv) == ctl.ExitCode.USAGE
    out, err = capsys.readouterr()
    assert err == ""
    document, end = json.JSONDecoder().raw_decode(out)
    assert out[end:] == "\n"
    assert set(document) == {"error"}
    error = document["error"]
    assert error["kind"] == "usage"
    assert error["exit_code"] == 2
    assert error["message"]
    assert error["usage"].startswith("usage: distributorctl")
    assert daemon.requests == []


@pytest.mark.parametrize("argv", [["set-power", "5kX", "--batteries", "1"], ["reboot"]])
def test_usage_errors_without_json_are_argparses(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert run(daemon, *argv) == ctl.ExitCode.USAGE
    out, err = capsys.readouterr()
    assert out == ""
    usage, _, rest = err.partition("\n")
    assert usage.startswith("usage: distributorctl")
    assert rest.splitlines()[-1].startswith("distributorctl")
    assert ": error: " in rest


def test_a_json_after_the_end_of_options_is_no_flag(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(daemon, "set-power", "--batteries", "1", "--", "--json") == ctl.ExitCode.USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert "argument POWER" in err


def test_the_exit_codes_are_distinct_and_documented(capsys: pytest.CaptureFixture[str]) -> None:
    assert len(set(ctl.ExitCode)) == len(ctl.ExitCode.__members__)
    assert int(ctl.ExitCode.USAGE) == 2  # argparse's
    assert ctl.main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in ctl.ExitCode:
        assert re.search(rf"^ *{int(code)} +\S", out, re.MULTILINE), code
    assert '{"error": {"kind": KIND' in out


UNPLACED = {**SUCCESS, "power_w": 1e30, "succeeded_power_w": 10000.0, "excess_power_w": 1e30}
ROUNDED = {  # setpoints go out as float32, rounded toward zero: that loss is no shortfall
    **SUCCESS,
    "succeeded_power_w": -4999.99951171875,
    "excess_power_w": -0.00048828125,
    "distribution": {"1001": -2499.999755859375, "1002": -2499.999755859375},
}


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
@pytest.mark.parametrize(
    ("command", "method", "result", "code"),
    [
        (["set-power", "1e30", "--batteries", "1001,1002"], "set_power", UNPLACED, 5),
        (["set-power", "-5kW", "--batteries", "1001,1002"], "set_power", ROUNDED, 0),
        (["set-power", "-12kW", "--batteries", "1001,1002"], "set_power", PARTIAL_FAILURE, 1),
        (["propose", "-12kW", "--batteries", "1001,1002"], "propose", PROPOSED, 5),
        (
            ["propose", "-8kW", "--batteries", "1001,1002"],
            "propose",
            {**PROPOSED, "power_w": -8000.0, "excess_power_w": 0.0},
            0,
        ),
    ],
    ids=["unplaced", "float32_rounding", "partial_failure_first", "propose_not_granted", "granted"],
)
def test_power_that_could_not_be_placed_has_its_own_exit_code(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    method: str,
    result: Message,
    code: int,
    as_json: bool,
) -> None:
    daemon.answers[method] = reply(result)
    flags = ["--json"] if as_json else []
    assert run(daemon, *flags, *command) == code
    out, err = capsys.readouterr()
    assert err == ""
    if as_json:
        assert json.loads(out) == result
    else:
        shortfall = result is not ROUNDED and result["excess_power_w"] != 0
        assert ("could not be placed" in out) == shortfall


def status_of(*batteries: tuple[int, str, list[str]]) -> Message:
    """A ``get_status`` result with these batteries' ids, statuses and reasons."""
    return {
        "batteries": [
            {"id": battery, "inverter_id": battery + 1000, "status": status, "reasons": why}
            for battery, status, why in batteries
        ],
        "working": [battery for battery, status, _ in batteries if status == "working"],
        "uncertain": [battery for battery, status, _ in batteries if status == "uncertain"],
    }


def watched(out: str) -> list[str]:
    rests = []
    for line in out.splitlines():
        match = WATCH_LINE.fullmatch(line)
        assert match is not None, line
        rests.append(match["rest"])
    return rests


def test_watch_starts_with_the_state_of_every_battery(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    watching(
        daemon,
        status_changed(1002, "working", []),
        HANG_UP,
        status=status_of(
            (1001, "working", []),
            (1002, "uncertain", ["blocked_after_failure"]),
            (1003, "not_working", ["stale_battery_data"]),
        ),
    )
    assert run(daemon, "watch") == ctl.ExitCode.UNREACHABLE
    assert [request["method"] for request in daemon.requests] == [
        "subscribe_status",
        "get_status",
    ]
    assert watched(capsys.readouterr().out) == [
        "battery 1001: working",
        "battery 1002: uncertain (blocked_after_failure)",
        "battery 1003: not_working (stale_battery_data)",
        "battery 1002: working",
    ]


def test_watch_json_starts_with_the_state_of_every_battery(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    watching(
        daemon,
        status_changed(1001, "uncertain", ["blocked_after_failure"]),
        HANG_UP,
        status=status_of((1001, "working", []), (1002, "not_working", ["no_battery_data"])),
    )
    assert run(daemon, "--json", "watch") == ctl.ExitCode.UNREACHABLE
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        {"id": 1001, "status": "working", "reasons": []},
        {"id": 1002, "status": "not_working", "reasons": ["no_battery_data"]},
        {"id": 1001, "status": "uncertain", "reasons": ["blocked_after_failure"]},
        {
            "error": {
                "kind": "unreachable",
                "exit_code": 3,
                "message": f"distributord at {daemon.path} closed the connection",
                "may_be_applied": False,
            }
        },
    ]


def test_watch_reconciles_changes_with_the_first_state(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # Changes that arrive before the status reply are older than it: the status supersedes
    # them. After it, a change the status already shows (it waited behind the reply) is no
    # change; any other is.
    watching(
        daemon,
        status_changed(1001, "working", []),  # what the status says already
        status_changed(1002, "uncertain", ["blocked_after_failure"]),
        status_changed(1002, "working", []),
        HANG_UP,
        status=status_of((1001, "working", []), (1002, "working", [])),
        overtaking=[
            status_changed(1001, "not_working", ["no_battery_data"]),
            status_changed(1002, "not_working", ["no_battery_data"]),
        ],
    )
    assert run(daemon, "watch") == ctl.ExitCode.UNREACHABLE
    assert watched(capsys.readouterr().out) == [
        "battery 1001: working",
        "battery 1002: working",
        "battery 1002: uncertain (blocked_after_failure)",
        "battery 1002: working",
    ]


def test_watch_before_the_microgrid_is_reached_starts_empty(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    watching(
        daemon,
        status_changed(1001, "working", []),  # the first batch once connected names every one
        HANG_UP,
        status={**NO_BATTERIES, "microgrid": "connecting"},
    )
    assert run(daemon, "watch") == ctl.ExitCode.UNREACHABLE
    assert watched(capsys.readouterr().out) == ["battery 1001: working"]


def test_watch_with_an_unusable_status_is_a_bad_reply(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    watching(daemon, status={"batteries": [{"status": "working"}]})
    assert run(daemon, "watch") == ctl.ExitCode.BAD_REPLY
    out, err = capsys.readouterr()
    assert out == ""
    assert "unexpected get_status result" in err
