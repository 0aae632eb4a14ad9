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
