"""Reading the daemon's results: strict about types, lenient about what it does not know."""

from __future__ import annotations

from typing import Any

import pytest

from distributord.client import (
    Allotment,
    BadReplyError,
    BatteryStatus,
    Notification,
    Outcome,
    PowerResult,
    Ramping,
    ReactiveAllotment,
    ReactiveBounds,
    ReactiveResult,
    Reason,
    Status,
    StatusReport,
)
from distributord.client.results import event_from_json


def battery(**fields: Any) -> dict[str, Any]:
    return {"id": 1001, "inverter_id": 2001, "status": "working", "reasons": [], **fields}


def test_a_field_of_the_wrong_type_is_a_bad_reply_naming_it() -> None:
    with pytest.raises(BadReplyError, match="battery status whose soc_pct is not a number"):
        BatteryStatus.from_json(battery(soc_pct="50"))
    with pytest.raises(BadReplyError, match="status without working"):
        StatusReport.from_json({"batteries": [], "uncertain": [], "microgrid": "connected"})
    with pytest.raises(BadReplyError, match="power result that is not an object"):
        PowerResult.from_json([1, 2])
    with pytest.raises(BadReplyError, match="distribution is not a map of battery ids"):
        PowerResult.from_json(
            {"outcome": "success", "power_w": 1.0, "batteries": [1], "distribution": {"x": 1.0}}
        )


@pytest.mark.parametrize(
    ("distribution", "why"),
    [
        ({"1001": 10**400}, "an integer beyond the float range: OverflowError"),
        ({"\u00b2": 1.0}, "a superscript two passes isdigit(): ValueError from int()"),
        ({"\u0661": 1.0}, "an Arabic-Indic one passed as battery 1"),
    ],
)
def test_a_number_or_id_python_reads_but_json_has_not_is_a_bad_reply(
    distribution: dict[str, Any], why: str
) -> None:
    # Found in review: each raised another exception, or passed, instead of BadReplyError.
    result = {"outcome": "success", "power_w": 1.0, "batteries": [1], "distribution": distribution}
    with pytest.raises(BadReplyError, match="distribution is not a map of battery ids"):
        PowerResult.from_json(result)


def test_a_non_finite_number_is_a_bad_reply() -> None:
    with pytest.raises(BadReplyError, match="soc_pct is not a number"):
        BatteryStatus.from_json(battery(soc_pct=float("nan")))


def test_reasons_are_the_daemons_enums_and_unknown_ones_stay_strings() -> None:
    entry = BatteryStatus.from_json(
        battery(status="not_working", reasons=["battery_error_state", "from_a_newer_daemon"])
    )
    assert entry.status is Status.NOT_WORKING
    assert entry.reasons == {Reason.BATTERY_ERROR_STATE, "from_a_newer_daemon"}
    result = PowerResult.from_json(
        {
            "outcome": "error",
            "power_w": 1.0,
            "batteries": [1, 2],
            "message": "no usable batteries among [1, 2]",
            "reasons": {"1": "capped", "2": "held by program fcr (priority 90)"},
        }
    )
    assert result.outcome is Outcome.ERROR
    assert result.reasons == {1: Allotment.CAPPED, 2: "held by program fcr (priority 90)"}
    assert not result.ok


def test_a_notification_unknown_to_the_library_comes_as_it_is() -> None:
    message = {"jsonrpc": "2.0", "method": "news", "params": {"x": 1}}
    assert event_from_json(message) == Notification(method="news", params={"x": 1})


def power_result(**fields: Any) -> dict[str, Any]:
    return {"outcome": "success", "power_w": 1.0, "batteries": [1001, 1002], **fields}


REACTIVE = {
    "target_var": 3000.0,
    "distribution": {"1001": 1500.0, "1002": 0.0},
    "excess_var": 1500,
    "failed_batteries": [1002],
    "reasons": {"1001": "at_edge", "1002": "command failed: UNAVAILABLE"},
}


def test_the_reactive_and_ramping_parts_of_a_power_result() -> None:
    result = PowerResult.from_json(
        power_result(
            reactive=REACTIVE,
            ramping={"target_w": -4000.0, "applied_w": -1000, "eta_s": 3.0},
        )
    )
    assert result.reactive == ReactiveResult(
        target_var=3000.0,
        distribution={1001: 1500.0, 1002: 0.0},
        excess_var=1500.0,
        failed_batteries=frozenset({1002}),
        reasons={1001: ReactiveAllotment.AT_EDGE, 1002: "command failed: UNAVAILABLE"},
    )
    assert result.ramping == Ramping(target_w=-4000.0, applied_w=-1000.0, eta_s=3.0)
    plain = PowerResult.from_json(power_result())
    assert plain.reactive is None
    assert plain.ramping is None
    # failed_batteries and reasons may be left out; so may unknown additions be sent.
    lean = {"target_var": 0.0, "distribution": {}, "excess_var": 0.0, "new": 1}
    assert PowerResult.from_json(power_result(reactive=lean)).reactive == ReactiveResult(
        target_var=0.0, distribution={}, excess_var=0.0
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"reactive": [1]}, "power result whose reactive is not an object"),
        (
            {"reactive": {**REACTIVE, "excess_var": "1500"}},
            "power result's reactive whose excess_var is not a number",
        ),
        (
            {"reactive": {**REACTIVE, "target_var": float("inf")}},
            "power result's reactive whose target_var is not a number",
        ),
        (
            {"reactive": {k: v for k, v in REACTIVE.items() if k != "target_var"}},
            "power result's reactive without target_var",
        ),
        (
            {"reactive": {k: v for k, v in REACTIVE.items() if k != "distribution"}},
            "power result's reactive without distribution",
        ),
        (
            {"reactive": {**REACTIVE, "distribution": {"1001": "1500"}}},
            "reactive whose distribution is not a map of battery ids",
        ),
        (
            {"reactive": {**REACTIVE, "failed_batteries": ["1002"]}},
            "reactive whose failed_batteries is not an array of battery ids",
        ),
        (
            {"reactive": {**REACTIVE, "reasons": {"1001": 7}}},
            "reactive whose reasons is not a map of battery ids",
        ),
        (
            {"ramping": {"target_w": 1.0, "applied_w": 0.5}},
            "power result's ramping without eta_s",
        ),
        (
            {"ramping": {"target_w": 1.0, "applied_w": None, "eta_s": 1.0}},
            "power result's ramping whose applied_w is not a number",
        ),
    ],
)
def test_a_bad_reactive_or_ramping_part_is_a_bad_reply_naming_it(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadReplyError, match=message):
        PowerResult.from_json(power_result(**fields))


def test_a_batterys_reactive_status() -> None:
    entry = BatteryStatus.from_json(
        battery(
            reactive_setpoint_var=-1250.0,
            reactive_bounds={"lower_var": -3000.0, "upper_var": None},
            apparent_limit_va=5000,
        )
    )
    assert entry.reactive_setpoint_var == -1250.0
    assert entry.reactive_bounds == ReactiveBounds(lower_var=-3000.0, upper_var=None)
    assert entry.apparent_limit_va == 5000.0
    bare = BatteryStatus.from_json(battery())
    assert (bare.reactive_setpoint_var, bare.reactive_bounds, bare.apparent_limit_va) == (
        None,
        None,
        None,
    )
    with pytest.raises(BadReplyError, match="battery status whose reactive_bounds is not an obj"):
        BatteryStatus.from_json(battery(reactive_bounds=[-3000.0, 3000.0]))
    with pytest.raises(BadReplyError, match="reactive_bounds whose upper_var is not a number"):
        BatteryStatus.from_json(battery(reactive_bounds={"lower_var": 0.0, "upper_var": "x"}))
    with pytest.raises(BadReplyError, match="whose apparent_limit_va is not a number"):
        BatteryStatus.from_json(battery(apparent_limit_va=True))
    with pytest.raises(BadReplyError, match="whose reactive_setpoint_var is not a number"):
        BatteryStatus.from_json(battery(reactive_setpoint_var="1"))
