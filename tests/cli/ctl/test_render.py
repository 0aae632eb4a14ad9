"""``distributorctl``'s tables and one-line summaries, as printed for a fake daemon's results."""

from __future__ import annotations

import json
from typing import Any

import pytest

from distributord.cli import ctl
from distributord.cli.ctl import render
from tests.cli.ctl.fake import (
    ARBITRATION,
    COMPONENTS,
    ERROR,
    IGNORED,
    OUT_OF_BOUNDS,
    PARTIAL_FAILURE,
    PROPOSALS,
    PROPOSED,
    STATUS,
    SUCCESS,
    WITHDRAWN,
    FakeDaemon,
    Message,
    only_request,
    reply,
    run,
)


def test_ping(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["ping"] = reply({"version": "0.1.0", "uptime_s": 3723.4})
    assert run(daemon, "ping") == 0
    request = only_request(daemon)
    assert request["method"] == "ping"
    assert "params" not in request
    out, err = capsys.readouterr()
    assert out == f"distributord 0.1.0 at {daemon.path}, up 1 h 02 min\n"
    assert err == ""


def test_ping_says_when_the_microgrid_is_not_connected_yet(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["ping"] = reply({"version": "0.1.0", "uptime_s": 2.0, "microgrid": "connecting"})
    assert run(daemon, "ping") == 0
    assert capsys.readouterr().out == (
        f"distributord 0.1.0 at {daemon.path}, up 2.0 s; the microgrid is not connected yet\n"
    )


def test_ping_and_status_name_the_microgrid_api_version(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    connected = {"microgrid": "connected", "microgrid_api": "v1alpha18"}
    daemon.answers["ping"] = reply({"version": "0.1.0", "uptime_s": 2.0, **connected})
    daemon.answers["get_status"] = reply({**STATUS, **connected})
    assert run(daemon, "ping") == 0
    assert capsys.readouterr().out == (
        f"distributord 0.1.0 at {daemon.path}, up 2.0 s; Microgrid API v1alpha18\n"
    )
    assert run(daemon, "status") == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "3 batteries: 1 working, 1 uncertain, 1 not working (Microgrid API v1alpha18)"
    )


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


def test_status_says_when_the_microgrid_is_not_connected_yet(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before discovery the daemon answers with no batteries and "microgrid": "connecting";
    # "no batteries" alone read as if the site had none.
    daemon.answers["get_status"] = reply(
        {"batteries": [], "working": [], "uncertain": [], "microgrid": "connecting"}
    )
    assert run(daemon, "status") == 0
    assert capsys.readouterr().out == "no batteries yet: the microgrid is not connected\n"


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
@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_unexpected_result_shape_exits_7_without_traceback(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    command: str,
    method: str,
    result: Any,
    as_json: bool,
) -> None:
    daemon.answers[method] = reply(result)
    extra = ["1kW", "--batteries", "1"] if command == "set-power" else []
    flags = ["--json"] if as_json else []
    assert run(daemon, *flags, command, *extra) == ctl.ExitCode.BAD_REPLY
    out, err = capsys.readouterr()
    if as_json:  # the same check: a result the table could not show is no result
        assert err == ""
        assert json.loads(out)["error"]["kind"] == "bad_reply"
        assert f"unexpected {method} result from distributord" in out
    else:
        assert out == ""
        assert f"unexpected {method} result from distributord" in err


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
    assert render.format_duration(seconds) == text


def test_table_aligns_columns() -> None:
    assert render.table(["ID", "NAME"], [["1", "a"], ["1000", "bb"]], right=(0,)) == [
        "  ID  NAME",
        "   1  a",
        "1000  bb",
    ]


# --- arbitration: proposals, propose, withdraw (issue 20) -----------------------------------


def test_proposals_table(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["get_proposals"] = reply(PROPOSALS)
    assert run(daemon, "proposals") == 0
    # Highest priority first; HELD says what the bucket still holds of its set; the ttl shows
    # the time left; powers in one unit; what was not given is "-".
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "PROGRAM  PRIORITY  BATTERIES      POWER     LOWER    UPPER   GRANTED  HELD"
        "              AGE  LIFETIME",
        "fcr            90  1001,1002          -  -8.00 kW  0.00 kW   0.00 kW  all"
        "        1 h 02 min  standing",
        "trading        50  1001,1002  -12.00 kW         -        -  -8.00 kW  all"
        "            12.5 s  ttl 5 min 00 s (4 min 47 s left)",
        "peak           20  1002-1005    5.00 kW         -        -   3.00 kW  1003-1005"
        "       2.0 s  until disconnect",
        "default         0  1001         1.00 kW         -        -         -  none"
        "            0.5 s  ttl 1 min 00 s (59.5 s left), until disconnect",
        "4 proposals of 4 programs",
    ]
    assert err == ""


def test_proposals_of_one_program(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["get_proposals"] = reply({"proposals": PROPOSALS["proposals"][2:3]})
    assert run(daemon, "proposals") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 proposal of 1 program"


def test_no_proposals(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["get_proposals"] = reply({"proposals": []})
    assert run(daemon, "proposals") == 0
    assert capsys.readouterr().out == "no proposals\n"


def test_an_expired_ttl_shows_no_time_left() -> None:
    entry = {**PROPOSALS["proposals"][2], "age_s": 301.0}
    row = render.render_proposals({"proposals": [entry]}, "")[1]
    assert row.endswith("ttl 5 min 00 s (0.0 s left)")


def test_propose_shows_the_outcome_then_the_arbitration(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["propose"] = reply(PROPOSED)
    # 4 kW not granted: the outcome is success, the exit status says not all was placed.
    assert run(daemon, "propose", "-12kW", "--batteries", "1001,1002") == ctl.ExitCode.NOT_PLACED
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "success: -12.00 kW requested, -8.00 kW commanded to 2 batteries, "
        "-4.00 kW could not be placed",
        "BATTERY     POWER  RESULT  REASON",
        "   1001  -4.00 kW  ok      proportional",
        "   1002  -4.00 kW  ok      proportional",
        "program trading (priority 50): granted -8.00 kW in the window -8.00 kW to 0.00 W",
        "target of the battery set: -8.00 kW",
        "limited by fcr (priority 90)",
        "reasons: clamped",
    ]
    assert err == ""


@pytest.mark.parametrize("power", ["absent", "null"])
def test_a_limiter_requests_bounds_only(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], power: str
) -> None:
    result: Message = {
        key: value for key, value in PROPOSED.items() if key not in ("power_w", "excess_power_w")
    }
    if power == "null":
        result["power_w"] = None
    result["arbitration"] = {
        **ARBITRATION,
        "program": "fcr",
        "priority": 90,
        "granted_w": 0.0,
        "window_w": [None, None],  # infinite edges: JSON has no infinities
        "limited_by": [],
        "target_w": -8000.0,
        "reasons": [],
    }
    daemon.answers["propose"] = reply(result)
    assert run(daemon, "propose", "--batteries", "1001,1002", "--lower", "-8kW") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "success: bounds only requested, -8.00 kW commanded to 2 batteries"
    assert lines[-2:] == [
        "program fcr (priority 90): granted 0.00 W in the window no lower limit to no upper limit",
        "target of the battery set: -8.00 kW",
    ]


def test_propose_outcome_without_arbitration_is_one_line(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # An outcome decided before arbitration (unknown batteries) may come without it.
    daemon.answers["propose"] = reply(ERROR)
    assert run(daemon, "propose", "-5kW", "--batteries", "1001,9999") == 1
    assert capsys.readouterr().out == ("error: unknown batteries 9999; known: 1001, 1002, 1003\n")


def test_propose_out_of_bounds_with_arbitration(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    arbitration = {**ARBITRATION, "granted_w": None, "reasons": ["unknown_bounds", "clamped"]}
    daemon.answers["propose"] = reply({**OUT_OF_BOUNDS, "arbitration": arbitration})
    assert run(daemon, "propose", "-50kW", "--batteries", "1001,1002") == 1
    assert capsys.readouterr().out.splitlines() == [
        "out_of_bounds: -50.00 kW requested, the batteries allow 0 W, -20.00 kW to "
        "-1.00 kW or 1.00 kW to 20.00 kW; nothing was commanded",
        "program trading (priority 50): granted none in the window -8.00 kW to 0.00 W",
        "target of the battery set: -8.00 kW",
        "limited by fcr (priority 90)",
        "reasons: unknown_bounds, clamped",
    ]


def test_withdraw_names_the_sets(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["withdraw"] = reply(WITHDRAWN)
    assert run(daemon, "withdraw") == 0
    assert capsys.readouterr().out.splitlines() == [
        "withdrew 2 proposals; batteries no proposal holds any more get 0 W",
        "  batteries 1001-1003",
        "  batteries 1005",
    ]
    daemon.answers["withdraw"] = reply({"withdrawn": [[7]]})
    assert run(daemon, "withdraw", "--batteries", "7") == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("withdrew 1 proposal;")


def test_withdrawing_nothing(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.answers["withdraw"] = reply({"withdrawn": []})
    assert run(daemon, "withdraw", "--batteries", "1001") == 0
    assert capsys.readouterr().out == "nothing withdrawn\n"


@pytest.mark.parametrize(
    ("command", "method", "result"),
    [
        (["proposals"], "get_proposals", []),
        (["proposals"], "get_proposals", {"proposals": [{"program": "fcr", "priority": 9}]}),
        (
            ["proposals"],
            "get_proposals",
            {"proposals": [{**PROPOSALS["proposals"][0], "batteries": ["a"]}]},
        ),
        (
            ["proposals"],
            "get_proposals",
            {"proposals": [{**PROPOSALS["proposals"][0], "priority": "high"}]},
        ),
        (["withdraw"], "withdraw", {"withdrawn": 5}),
        (["withdraw"], "withdraw", {}),
        (["propose", "1kW", "--batteries", "1"], "propose", {**PROPOSED, "arbitration": {}}),
        (
            ["propose", "1kW", "--batteries", "1"],
            "propose",
            {**PROPOSED, "arbitration": {**ARBITRATION, "window_w": [1.0]}},
        ),
        (
            ["propose", "1kW", "--batteries", "1"],
            "propose",
            {**PROPOSED, "arbitration": {**ARBITRATION, "limited_by": ["fcr"]}},
        ),
    ],
)
def test_unexpected_arbitration_result_exits_7_without_traceback(
    daemon: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    method: str,
    result: Any,
) -> None:
    daemon.answers[method] = reply(result)
    assert run(daemon, *command) == ctl.ExitCode.BAD_REPLY
    out, err = capsys.readouterr()
    assert out == ""
    assert f"unexpected {method} result from distributord" in err


@pytest.mark.parametrize(
    ("batteries", "text"),
    [
        ([], ""),
        ([7], "7"),
        ([1002, 1001], "1001,1002"),
        ([1001, 1002, 1003], "1001-1003"),
        ([5, 1, 2, 3, 4, 9, 10, 12], "1-5,9,10,12"),
        (list(range(1000, 2024)), "1000-2023"),
        ([0, 2, 4], "0,2,4"),
    ],
)
def test_format_battery_set(batteries: list[int], text: str) -> None:
    assert render.format_battery_set(batteries) == text


def test_ping_and_status_say_when_the_microgrid_is_unreachable(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    down = {"microgrid": "unreachable", "unreachable_for_s": 75.0, "microgrid_api": "v1alpha18"}
    daemon.answers["ping"] = reply({"version": "0.1.0", "uptime_s": 3600.0, **down})
    assert run(daemon, "ping") == 0
    assert "; the microgrid is UNREACHABLE for 1 min 15 s" in capsys.readouterr().out
    daemon.answers["get_status"] = reply({"batteries": [], "working": [], "uncertain": [], **down})
    assert run(daemon, "status") == 0
    assert capsys.readouterr().out == "no batteries yet: the microgrid is unreachable\n"


# --- plant control: reactive power and ramps --------------------------------------------------

REACTIVE_SUCCESS = {
    **SUCCESS,
    "reactive": {
        "target_var": 8000.0,
        "distribution": {"1001": 3000.0, "1002": 3000.0},
        "excess_var": 2000.0,
        "failed_batteries": [],
        "reasons": {"1001": "at_edge", "1002": "at_edge"},
    },
}


def test_set_power_shows_the_reactive_part_and_a_reactive_excess_exits_0(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["set_power"] = reply(REACTIVE_SUCCESS)
    argv = ["set-power", "-5kW", "--batteries", "1001,1002", "--reactive-var", "8kvar"]
    # Exit 5 is about active power (excess_power_w): 2 kvar not placed is shown, not an exit.
    assert run(daemon, *argv) == 0
    assert capsys.readouterr().out.splitlines() == [
        "success: -5.00 kW requested, -5.00 kW commanded to 2 batteries",
        "BATTERY     POWER  RESULT  REASON",
        "   1001  -2.50 kW  ok      proportional",
        "   1002  -2.50 kW  ok      proportional",
        "reactive: 8.00 kvar requested, 6.00 kvar commanded to 2 batteries, "
        "2.00 kvar could not be placed",
        "BATTERY   REACTIVE  RESULT  REASON",
        "   1001  3.00 kvar  ok      at_edge",
        "   1002  3.00 kvar  ok      at_edge",
    ]


def test_a_failed_reactive_command_and_a_battery_without_reactive_power(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    result = {
        **SUCCESS,
        "outcome": "partial_failure",
        "failed_power_w": 0.0,
        "failed_batteries": [],
        "batteries": [1001, 1002, 1003],
        "reactive": {
            "target_var": -1500.0,
            "distribution": {"1001": -750.0, "1002": -750.0},
            "excess_var": 0.0,
            "failed_batteries": [1002],
            "reasons": {
                "1001": "proportional",
                "1002": "command failed: UNAVAILABLE",
                "1003": "bound_unknown",
            },
        },
    }
    daemon.answers["set_power"] = reply(result)
    argv = ["set-power", "-5kW", "--batteries", "1001,1002,1003", "--reactive-var", "-1.5kvar"]
    assert run(daemon, *argv) == 1
    lines = capsys.readouterr().out.splitlines()
    # Only the reactive command failed: the active headline names no failure of its own.
    assert lines[0] == "partial_failure: -5.00 kW requested, -5.00 kW commanded to 2 batteries"
    assert lines[-5:] == [
        "reactive: -1.50 kvar requested, -750.00 var commanded to 1 battery, "
        "-750.00 var failed on 1 battery (1002)",
        "BATTERY    REACTIVE  RESULT    REASON",
        "   1001  -0.75 kvar  ok        proportional",
        "   1002  -0.75 kvar  failed    command failed: UNAVAILABLE",
        "   1003           -  not used  bound_unknown",
    ]


def test_a_reactive_excess_within_float32_rounding_is_not_shown() -> None:
    reactive = {
        "target_var": -4000.0,
        "distribution": {"1001": -3999.9995},
        "excess_var": -0.0005,
        "failed_batteries": [],
    }
    lines = render.render_set_power({**SUCCESS, "reactive": reactive}, "path")
    summary = [line for line in lines if line.startswith("reactive:")]
    assert summary == ["reactive: -4.00 kvar requested, -4.00 kvar commanded to 1 battery"]


def test_a_ramping_target_has_its_own_line_and_is_not_excess(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    ramping = {"target_w": -40000.0, "applied_w": -10000.0, "eta_s": 3.0}
    daemon.answers["propose"] = reply({**PROPOSED, "excess_power_w": 0.0, "ramping": ramping})
    assert run(daemon, "propose", "-40kW", "--batteries", "1001,1002") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "ramping to -40.00 kW, -10.00 kW applied, 3.0 s to go"


def test_json_passes_the_reactive_and_ramping_parts_through(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    ramping = {"target_w": -5000.0, "applied_w": -1000.0, "eta_s": 4.0}
    result = {**REACTIVE_SUCCESS, "ramping": ramping}
    daemon.answers["set_power"] = reply(result)
    argv = ["--json", "set-power", "-5kW", "--batteries", "1001,1002", "--reactive-var", "8kvar"]
    assert run(daemon, *argv) == 0
    assert json.loads(capsys.readouterr().out) == result


@pytest.mark.parametrize(
    "reactive",
    [
        {"distribution": {}, "excess_var": 0.0},  # no target_var
        {"target_var": 1.0, "distribution": {"1001": "x"}, "excess_var": 0.0},
        {"target_var": 1.0, "distribution": {}, "excess_var": "0"},
    ],
)
def test_an_unusable_reactive_part_exits_7(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], reactive: dict[str, Any]
) -> None:
    daemon.answers["set_power"] = reply({**SUCCESS, "reactive": reactive})
    assert run(daemon, "set-power", "-5kW", "--batteries", "1001,1002") == ctl.ExitCode.BAD_REPLY
    out, err = capsys.readouterr()
    assert out == ""
    assert "unexpected set_power result" in err


def test_status_shows_the_reactive_setpoint_where_present(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    first, *others = json.loads(json.dumps(STATUS["batteries"]))
    batteries = [{**first, "reactive_setpoint_var": 1500.0}, *others]
    daemon.answers["get_status"] = reply({**STATUS, "batteries": batteries})
    assert run(daemon, "status") == 0
    assert capsys.readouterr().out.splitlines()[:3] == [
        "BATTERY  INVERTER  STATUS          SOC  SETPOINT   REACTIVE    DATA AGE  REASONS",
        "   1001      2001  working      55.0 %  -2.50 kW  1.50 kvar       0.2 s",
        "   1002      2002  uncertain    60.0 %   0.00 kW          -       0.5 s  "
        "blocked_after_failure (3.0 s left)",
    ]


@pytest.mark.parametrize(
    ("var", "unit", "text"),
    [
        (1500.0, None, "1.50 kvar"),
        (-300.0, None, "-300.00 var"),
        (2.5e6, None, "2.50 Mvar"),
        (-750.0, "kvar", "-0.75 kvar"),
        (-0.0, "var", "0.00 var"),
    ],
)
def test_format_reactive(var: float, unit: str | None, text: str) -> None:
    assert render.format_reactive(var, unit) == text


def test_components_table_names_each_groups_members(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.answers["list_components"] = reply(
        {
            "pairs": [
                {
                    "battery_id": 1001,
                    "inverter_id": 2001,
                    "group": {"batteries": [1001], "inverters": [2001, 2002]},
                },
                {"battery_id": 1003, "inverter_id": 2003},
                {
                    "battery_id": 1004,
                    "inverter_id": 2004,
                    "group": {"batteries": [1004, 1005], "inverters": [2004]},
                },
            ],
            "left_out": [],
        }
    )
    assert run(daemon, "components") == 0
    assert capsys.readouterr().out.splitlines() == [
        "3 battery/inverter pairs managed (an N:M group counts as one, under its lead battery"
        " and inverter)",
        "BATTERY  INVERTER  GROUP",
        "   1001      2001  battery 1001 on inverters 2001, 2002",
        "   1003      2003",
        "   1004      2004  batteries 1004, 1005 on inverter 2004",
        "no batteries left out",
    ]


def test_the_group_limits_that_bound_have_their_own_line() -> None:
    lines = render.render_set_power({**SUCCESS, "bound_limits": ["feeder", "grid"]}, "path")
    assert lines[1] == "held back by the group limits feeder, grid"
    assert "held back" not in "\n".join(render.render_set_power(SUCCESS, "path"))
