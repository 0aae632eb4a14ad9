"""``distributorctl``'s command line: what each flag sends, usage errors, help and the socket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distributord import __version__
from distributord.cli import ctl
from distributord.cli.ctl import args
from distributord.core.arbitration import wire
from tests.cli.ctl.fake import (
    PROPOSALS,
    PROPOSED,
    SUCCESS,
    WITHDRAWN,
    FakeDaemon,
    hello_reply,
    only_request,
    reply,
    run,
)


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
    assert "W or kW in any case, or MW (mW, mw and Mw are" in out
    assert "set-power -5kW --batteries 1001,1002" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--version"]) == 0
    assert capsys.readouterr().out == f"distributorctl {__version__}\n"


def test_socket_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "from-env.sock"
    monkeypatch.setenv(args.SOCKET_ENV, str(path))
    assert ctl.main(["ping"]) == 3
    assert str(path) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "environ", "path"),
    [
        ("/a.sock", {args.SOCKET_ENV: "/b.sock"}, "/a.sock"),
        (None, {args.SOCKET_ENV: "/b.sock"}, "/b.sock"),
        (None, {}, "/run/distributord/control.sock"),
        (None, {args.SOCKET_ENV: ""}, "/run/distributord/control.sock"),
        ("", {}, "/run/distributord/control.sock"),
    ],
)
def test_socket_path_precedence(given: str | None, environ: dict[str, str], path: str) -> None:
    assert args.socket_path(given, environ) == path


# --- arbitration: propose, withdraw, proposals, --program (issue 20) -------------------------


@pytest.mark.parametrize(
    ("argv", "params"),
    [
        (["-5kW", "--batteries", "1001,1002"], {"power_w": -5000.0, "batteries": [1001, 1002]}),
        (["--batteries", "1001,1002", "-5kW"], {"power_w": -5000.0, "batteries": [1001, 1002]}),
        (["--batteries", "7", "--", "-5kW"], {"power_w": -5000.0, "batteries": [7]}),
        (  # a limiter: bounds only, negative values as typed
            ["--batteries", "1001,1002", "--lower", "-20kW", "--upper", "0"],
            {"lower_w": -20000.0, "upper_w": 0.0, "batteries": [1001, 1002]},
        ),
        (["--batteries", "7", "--lower=-1.5MW"], {"lower_w": -1_500_000.0, "batteries": [7]}),
        (["--upper", "300W", "--batteries", "7"], {"upper_w": 300.0, "batteries": [7]}),
        (
            ["10kW", "--batteries", "1001", "--ttl", "300", "--lower", "-5kW", "--upper", "12kW"],
            {
                "power_w": 10000.0,
                "lower_w": -5000.0,
                "upper_w": 12000.0,
                "ttl_s": 300.0,
                "batteries": [1001],
            },
        ),
        (
            ["--batteries", "1", "--ttl", "86400", "0"],
            {"power_w": 0.0, "ttl_s": 86400.0, "batteries": [1]},
        ),
        (
            ["--batteries", "1", "--lower", "5kW", "--upper", "5kW"],
            {"lower_w": 5000.0, "upper_w": 5000.0, "batteries": [1]},
        ),
    ],
)
def test_propose_sends_only_what_was_given(
    daemon: FakeDaemon, argv: list[str], params: dict[str, object]
) -> None:
    # Never until_disconnect (the command's connection closes at once) nor request_timeout_s.
    daemon.answers["propose"] = reply(PROPOSED)
    # PROPOSED: success, 4 kW of the 12 kW asked not granted (exit 5).
    assert run(daemon, "propose", *argv) == ctl.ExitCode.NOT_PLACED
    request = only_request(daemon)
    assert request["method"] == "propose"
    assert request["params"] == params


def test_withdraw_sends_the_set_only_when_given(daemon: FakeDaemon) -> None:
    daemon.answers["withdraw"] = reply(WITHDRAWN)
    assert run(daemon, "withdraw", "--batteries", "1003,1001,1002") == 0
    assert run(daemon, "withdraw") == 0
    first, every = daemon.requests
    assert (first["method"], first["params"]) == ("withdraw", {"batteries": [1003, 1001, 1002]})
    assert every["method"] == "withdraw"
    assert "params" not in every  # all of the program's proposals


def test_proposals_sends_get_proposals_without_params(daemon: FakeDaemon) -> None:
    daemon.answers["get_proposals"] = reply(PROPOSALS)
    assert run(daemon, "proposals") == 0
    request = only_request(daemon)
    assert request["method"] == "get_proposals"
    assert "params" not in request


@pytest.mark.parametrize(
    "argv",
    [
        ["--program", "fcr", "proposals"],
        ["proposals", "--program", "fcr"],
        ["--program", "x", "proposals", "--program", "fcr"],  # the last one given wins
        ["--program=fcr", "proposals", "--json"],
    ],
)
def test_program_before_or_after_the_command(daemon: FakeDaemon, argv: list[str]) -> None:
    daemon.answers["hello"] = hello_reply()
    daemon.answers["get_proposals"] = reply(PROPOSALS)
    assert run(daemon, *argv) == 0
    hello, command = daemon.requests
    assert (hello["method"], hello["params"]) == ("hello", {"program": "fcr"})
    assert command["method"] == "get_proposals"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batteries", "1001"], "give at least one of POWER, --lower and --upper"),
        (["--batteries", "1001", "--ttl", "30"], "give at least one of POWER, --lower and --upper"),
        (
            ["--batteries", "1", "--lower", "5kW", "--upper", "-5kW"],
            "--lower (5000 W) is above --upper (-5000 W)",
        ),
        (["--batteries", "1", "--lower", "5kX"], "argument --lower: '5kX': unknown unit 'kX'"),
        (["--batteries", "1", "--upper", "lots"], "argument --upper"),
        (["5kWh", "--batteries", "1"], "argument POWER: '5kWh': unknown unit 'kWh'"),
        (["5kW"], "the following arguments are required: --batteries"),
        (["5kW", "--batteries", "1,1"], "repeated: 1"),
        (["5kW", "6kW", "--batteries", "1"], "unrecognized arguments: 6kW"),
        (["5kW", "--batteries", "1", "--timeout", "3"], "unrecognized arguments: --timeout"),
        (["5kW", "--batteries", "1", "--until-disconnect"], "unrecognized arguments"),
    ],
)
def test_propose_usage_errors(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run(daemon, "propose", *argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: distributorctl")  # unknown arguments: the top parser's usage
    assert message in err
    assert daemon.requests == []


@pytest.mark.parametrize("ttl", ["0", "-1", "86400.5", "1e9", "nan", "inf", "soon", ""])
def test_bad_ttl_is_a_usage_error(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], ttl: str
) -> None:
    assert run(daemon, "propose", "5kW", "--batteries", "1", "--ttl", ttl) == 2
    err = capsys.readouterr().err
    assert "argument --ttl" in err
    assert "the ttl is a number of seconds in (0, 86400]" in err
    assert daemon.requests == []


def test_the_ttl_cap_is_the_daemons() -> None:
    assert args.MAX_TTL_S == wire.MAX_TTL_S


@pytest.mark.parametrize(
    "argv",
    [
        ["withdraw", "5kW"],
        ["withdraw", "--batteries"],
        ["withdraw", "--batteries", "x"],
        ["proposals", "--batteries", "1"],
        ["proposals", "all"],
        ["ping", "--program"],
    ],
)
def test_arbitration_usage_errors_exit_2(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert run(daemon, *argv) == 2
    assert "usage:" in capsys.readouterr().err
    assert daemon.requests == []


def test_help_names_program_and_the_new_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in ("--program NAME", "proposals", "propose", "withdraw", "1  set-power, propose"):
        assert text in out
    assert 'Without --program the connection acts as the program "default".' in out


def test_propose_and_withdraw_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["propose", "--help"]) == 0
    out = capsys.readouterr().out
    assert "[POWER]" in out
    assert "--lower P" in out
    assert "--ttl S" in out
    assert "propose --batteries 1001,1002 --lower -20kW --upper 0" in out
    assert ctl.main(["withdraw", "--help"]) == 0
    assert "all of its proposals without --batteries" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "var", "sent"),
    [
        (["set-power", "-8kW"], "6kvar", 6000.0),
        (["set-power", "0"], "-3kvar", -3000.0),  # negative, as typed
        (["set-power", "0"], "-500", -500.0),  # a bare number is var
        (["set-power", "0"], "1.2Mvar", 1_200_000.0),
        (["set-power", "0"], "250 VAR", 250.0),
        (["propose", "0"], "-2kvar", -2000.0),
    ],
)
def test_reactive_var_is_sent_in_var(
    daemon: FakeDaemon, command: list[str], var: str, sent: float
) -> None:
    method = "set_power" if command[0] == "set-power" else "propose"
    daemon.answers[method] = reply(SUCCESS)
    assert run(daemon, *command, "--batteries", "1001", "--reactive-var", var) == 0
    request = only_request(daemon)
    assert request["method"] == method
    assert request["params"]["reactive_var"] == sent


def test_reactive_var_is_sent_only_when_given(daemon: FakeDaemon) -> None:
    daemon.answers["set_power"] = reply(SUCCESS)
    assert run(daemon, "set-power", "1kW", "--batteries", "1001") == 0
    assert "reactive_var" not in only_request(daemon)["params"]


@pytest.mark.parametrize("var", ["3kW", "1mvar", "5kvarh", "x", "", "nan", "1e400var"])
def test_bad_reactive_var_is_a_usage_error(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], var: str
) -> None:
    assert run(daemon, "set-power", "0", "--batteries", "1001", "--reactive-var", var) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "argument --reactive-var" in err
    assert "is not a reactive power; expected a number with an optional unit var, kvar" in err
    assert daemon.requests == []


def test_help_says_a_reactive_excess_does_not_change_the_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert ctl.main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "reactive power that could not be placed (reactive.excess_var) is shown" in out
    assert ctl.main(["set-power", "--help"]) == 0
    assert "--reactive-var VAR" in capsys.readouterr().out
