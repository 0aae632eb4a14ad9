"""``distributorctl`` runs a command: --json, exit codes, watch, Ctrl-C, a real process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
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
    real = render.format_status_change

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


def test_ctrl_c_while_waiting_exits_130(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(transport.Connection, "call", interrupted)
    assert run(daemon, "set-power", "1kW", "--batteries", "1") == 130
    assert capsys.readouterr().err == "distributorctl: interrupted\n"


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

COMMANDS = [
    (["ping"], "ping", {"version": "0.1.0", "uptime_s": 1.5}),
    (["status"], "get_status", STATUS),
    (["components"], "list_components", COMPONENTS),
    (["proposals"], "get_proposals", PROPOSALS),
    (["set-power", "-5kW", "--batteries", "1001,1002"], "set_power", SUCCESS),
    (["propose", "-12kW", "--batteries", "1001,1002"], "propose", PROPOSED),
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
    daemon.answers["subscribe_status"] = subscribe_then(status_changed(1, "working", []), HANG_UP)
    assert run(daemon, "--json", "watch", "--program", "fcr") == 3
    assert [request["method"] for request in daemon.requests] == ["hello", "subscribe_status"]
    assert daemon.requests[0]["params"] == {"program": "fcr"}
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
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
    assert out == ""
    assert err == (
        "distributorctl: distributord answered error -32003: not allowed "
        "(uid 1000 may not act as program 'no such') (to hello as program 'no such')\n"
    )


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
        (PROPOSED, 0),
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
    assert run(daemon, "--program", "fcr", "propose", "1kW", "--batteries", "1") == 3
    assert capsys.readouterr().err == (
        f"distributorctl: distributord at {daemon.path} did not answer in time\n"
    )
