"""Arbitration's protocol additions on the wire: params checks and encoders."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core import protocol
from distributord.core.arbitration import wire
from distributord.core.arbitration.holdings import GrantChange, Proposal, ProposalEnded, Why
from distributord.core.arbitration.merge import Bid, Headroom, Limiter, Reason, merge
from distributord.core.arbitration.wire import (
    MAX_TTL_S,
    Hello,
    Propose,
    SubscribeBounds,
    Withdraw,
)
from distributord.core.model import PowerBounds
from distributord.core.protocol import Call, Code, Failure

KW = 1000.0


def call_of(method: str, params: Any) -> Call:
    """A call as :func:`protocol.decode` builds it (it refuses these methods until wired)."""
    return Call(id=7, notification=False, method=method, params=params)


def raw(method: str, params: str) -> Call:
    # As decode reads it: NaN and Infinity become floats, so the check can name their field.
    return call_of(method, json.loads(params, parse_constant=float))


def parse(call: Call) -> object:
    match call.method:
        case "hello":
            return wire.parse_hello(call)
        case "propose":
            return wire.parse_propose(call, default_timeout_s=5.0)
        case "withdraw":
            return wire.parse_withdraw(call)
        case "get_proposals":
            return wire.parse_get_proposals(call)
        case "subscribe_bounds":
            return wire.parse_subscribe_bounds(call)
    raise AssertionError(call.method)


def refused(call: Call) -> Failure:
    failure = parse(call)
    assert isinstance(failure, Failure), failure
    assert failure.code is Code.INVALID_PARAMS
    assert failure.id == 7
    return failure


# --- params: good values --------------------------------------------------------------------


def test_hello() -> None:
    assert wire.parse_hello(call_of("hello", {"program": "fcr"})) == Hello(program="fcr")
    assert wire.parse_hello(call_of("hello", {"program": "a.b-c_9"})) == Hello(program="a.b-c_9")


def test_propose_with_defaults() -> None:
    propose = wire.parse_propose(
        call_of("propose", {"batteries": [2, 1], "power_w": -5000}), default_timeout_s=5.0
    )
    assert propose == Propose(batteries=frozenset({1, 2}), power_w=-5000.0, request_timeout_s=5.0)
    assert isinstance(propose, Propose)
    assert type(propose.power_w) is float


def test_propose_with_every_field() -> None:
    params = {
        "batteries": [1001],
        "power_w": 3,
        "lower_w": -10 * KW,
        "upper_w": 10 * KW,
        "ttl_s": 30,
        "until_disconnect": True,
        "request_timeout_s": 0.5,
    }
    assert wire.parse_propose(call_of("propose", params), default_timeout_s=5.0) == Propose(
        batteries=frozenset({1001}),
        power_w=3.0,
        lower_w=-10 * KW,
        upper_w=10 * KW,
        ttl_s=30.0,
        until_disconnect=True,
        request_timeout_s=0.5,
    )


@pytest.mark.parametrize(
    "bounds",
    [{"lower_w": -1.0}, {"upper_w": 1.0}, {"lower_w": 2.0, "upper_w": 2.0}],
)
def test_a_limiter_gives_bounds_only(bounds: dict[str, float]) -> None:
    propose = wire.parse_propose(
        call_of("propose", {"batteries": [1], **bounds}), default_timeout_s=5.0
    )
    assert isinstance(propose, Propose)
    assert propose.power_w is None
    assert propose.lower_w == bounds.get("lower_w")
    assert propose.upper_w == bounds.get("upper_w")


def test_ttl_may_be_the_maximum() -> None:
    propose = wire.parse_propose(
        call_of("propose", {"batteries": [1], "power_w": 0, "ttl_s": MAX_TTL_S}),
        default_timeout_s=5.0,
    )
    assert isinstance(propose, Propose)
    assert propose.ttl_s == MAX_TTL_S


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"lower_w": 2.0, "upper_w": 1.0},
        {"power_w": 1.0, "ttl_s": 0.0},
        {"power_w": 1.0, "ttl_s": 1e9},
    ],
)
def test_the_value_keeps_the_rules(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"power_w|lower_w|ttl_s"):
        Propose(batteries=frozenset({1}), request_timeout_s=5.0, **fields)


def test_withdraw() -> None:
    assert wire.parse_withdraw(call_of("withdraw", {})) == Withdraw(batteries=None)
    assert wire.parse_withdraw(call_of("withdraw", {"batteries": [3, 4]})) == Withdraw(
        batteries=frozenset({3, 4})
    )


def test_get_proposals() -> None:
    assert wire.parse_get_proposals(call_of("get_proposals", {})) is None


def test_subscribe_bounds() -> None:
    assert wire.parse_subscribe_bounds(
        call_of("subscribe_bounds", {"batteries": [5]})
    ) == SubscribeBounds(batteries=frozenset({5}))


# --- params: bad values name their field ------------------------------------------------------

BATTERIES_BAD = [
    "[]",
    "1",
    "null",
    "[-1]",
    "[1.0]",
    '["1"]',
    "[true]",
    "[1, 2, 1]",
    "[" + ",".join(map(str, range(1025))) + "]",
]
POWER_BAD = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "1" + "0" * 309,
    '"5"',
    "true",
    "null",
    "[1]",
]


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("hello", "{}", "program"),
        ("hello", '{"program": ""}', "program"),
        ("hello", '{"program": "-x"}', "program"),
        ("hello", '{"program": ".x"}', "program"),
        ("hello", '{"program": "a b"}', "program"),
        ("hello", '{"program": "' + "x" * 65 + '"}', "program"),
        ("hello", '{"program": 1}', "program"),
        ("hello", '{"program": null}', "program"),
        ("hello", '{"program": "fcr", "priority": 99}', "priority"),
        ("propose", '{"power_w": 1}', "batteries"),
        *[
            ("propose", '{"power_w": 1, "batteries": ' + b + "}", "batteries")
            for b in BATTERIES_BAD
        ],
        *[
            ("propose", '{"batteries": [1], "' + field + '": ' + v + "}", field)
            for field in ("power_w", "lower_w", "upper_w")
            for v in POWER_BAD
        ],
        ("propose", '{"batteries": [1]}', "power_w"),
        ("propose", '{"batteries": [1], "ttl_s": 5}', "power_w"),
        ("propose", '{"batteries": [1], "lower_w": 2, "upper_w": 1}', "lower_w"),
        ("propose", '{"batteries": [1], "power_w": 0, "lower_w": 2, "upper_w": 1}', "lower_w"),
        *[
            ("propose", '{"batteries": [1], "power_w": 1, "ttl_s": ' + v + "}", "ttl_s")
            for v in ["0", "-1", "86400.5", "1e999", "NaN", "true", "null", '"5"']
        ],
        *[
            (
                "propose",
                '{"batteries": [1], "power_w": 1, "until_disconnect": ' + v + "}",
                "until_disconnect",
            )
            for v in ["1", "null", '"yes"']
        ],
        *[
            (
                "propose",
                '{"batteries": [1], "power_w": 1, "request_timeout_s": ' + v + "}",
                "request_timeout_s",
            )
            for v in ["0", "61", "NaN", "null", "false"]
        ],
        ("propose", '{"batteries": [1], "power_w": 1, "priority": 99}', "priority"),
        ("propose", '{"batteries": [1], "power_w": 1, "adjust_power": false}', "adjust_power"),
        *[("withdraw", '{"batteries": ' + b + "}", "batteries") for b in BATTERIES_BAD],
        ("withdraw", '{"program": "fcr"}', "program"),
        ("get_proposals", '{"program": "fcr"}', "program"),
        ("subscribe_bounds", "{}", "batteries"),
        *[("subscribe_bounds", '{"batteries": ' + b + "}", "batteries") for b in BATTERIES_BAD],
        ("subscribe_bounds", '{"batteries": [1], "every_s": 1}', "every_s"),
    ],
)
def test_bad_params_name_the_field(method: str, params: str, field: str) -> None:
    failure = refused(raw(method, params))
    assert failure.data["field"] == field
    assert field in failure.message
    assert isinstance(failure.data["expected"], str)
    # The error line encodes (no NaN reaches the JSON).
    assert json.loads(protocol.error_line(failure))["error"]["data"] == failure.data


def test_a_proposal_with_no_power_names_all_three_fields() -> None:
    failure = refused(raw("propose", '{"batteries": [1]}'))
    assert all(field in failure.data["expected"] for field in ("power_w", "lower_w", "upper_w"))


def test_the_battery_rule_is_set_powers() -> None:
    batteries = [3, 1, 3, 1]
    ours = refused(call_of("subscribe_bounds", {"batteries": batteries}))
    theirs = protocol.parse_set_power(
        call_of("set_power", {"power_w": 1, "batteries": batteries}), default_timeout_s=5.0
    )
    assert isinstance(theirs, Failure)
    assert (
        ours.data
        == theirs.data
        == {
            "field": "batteries",
            "expected": "unique ids, got duplicates [1, 3]",
        }
    )


def test_a_notification_stays_one() -> None:
    call = Call(id=None, notification=True, method="hello", params={"program": 3})
    failure = wire.parse_hello(call)
    assert isinstance(failure, Failure)
    assert failure.notification


def test_the_methods_are_the_protocols() -> None:
    for method in ("hello", "propose", "withdraw", "get_proposals", "subscribe_bounds"):
        assert method in protocol.METHODS
        line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
        assert isinstance(protocol.decode(line), Call)


# --- params: nothing raises -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["fcr", "default"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(sorted(wire.PROPOSE_FIELDS | wire.HELLO_FIELDS | {"x"}))
params_objects = st.dictionaries(field_names, json_values, max_size=8) | st.dictionaries(
    st.text(max_size=10), json_values, max_size=4
)
methods = st.sampled_from(["hello", "propose", "withdraw", "get_proposals", "subscribe_bounds"])


@given(methods, params_objects)
def test_no_params_raise(method: str, params: dict[str, Any]) -> None:
    result = parse(call_of(method, params))
    if isinstance(result, Failure):
        assert result.code is Code.INVALID_PARAMS
        assert result.data["field"] in params or result.data["field"] in {
            "program",
            "batteries",
            "power_w",
        }
        protocol.error_line(result)  # encodes
    else:
        assert isinstance(result, Hello | Propose | Withdraw | SubscribeBounds | None)


@given(
    st.frozensets(st.integers(0, 2**40), min_size=1, max_size=20),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    st.one_of(st.none(), st.floats(min_value=1e-9, max_value=MAX_TTL_S)),
    st.booleans(),
)
def test_a_valid_proposal_round_trips_through_json(
    batteries: frozenset[int],
    power: float | None,
    lower: float | None,
    upper: float | None,
    ttl: float | None,
    until_disconnect: bool,
) -> None:
    params: dict[str, Any] = {"batteries": sorted(batteries), "until_disconnect": until_disconnect}
    for field, value in (
        ("power_w", power),
        ("lower_w", lower),
        ("upper_w", upper),
        ("ttl_s", ttl),
    ):
        if value is not None:
            params[field] = value
    line = protocol.request_line(1, "propose", params)
    result = wire.parse_propose(
        call_of("propose", json.loads(line)["params"]), default_timeout_s=5.0
    )
    if power is None and lower is None and upper is None:
        assert isinstance(result, Failure)
        assert result.data["field"] == "power_w"
    elif lower is not None and upper is not None and lower > upper:
        assert isinstance(result, Failure)
        assert result.data["field"] == "lower_w"
    else:
        assert result == Propose(
            batteries=batteries,
            power_w=power,
            lower_w=lower,
            upper_w=upper,
            ttl_s=ttl,
            until_disconnect=until_disconnect,
            request_timeout_s=5.0,
        )


# --- encoders -------------------------------------------------------------------------------

BOUNDS = PowerBounds(
    inclusion_lower=-10 * KW, exclusion_lower=-KW, exclusion_upper=KW, inclusion_upper=10 * KW
)


def test_the_arbitration_object() -> None:
    fcr = Bid(
        program="fcr", priority=90, sequence=1, power_w=4 * KW, lower_w=-5 * KW, upper_w=5 * KW
    )
    trading = Bid(program="trading", priority=10, sequence=2, power_w=3 * KW)
    result = merge(BOUNDS, [trading, fcr])
    by_program = {grant.bid.program: grant for grant in result.grants}
    assert wire.arbitration_object(by_program["fcr"], result) == {
        "program": "fcr",
        "priority": 90,
        "granted_w": 4000.0,
        "window_w": [-10000.0, 10000.0],
        "limited_by": [],
        "target_w": 5000.0,
        "reasons": [],
    }
    assert wire.arbitration_object(by_program["trading"], result) == {
        "program": "trading",
        "priority": 10,
        "granted_w": 1000.0,
        "window_w": [-9000.0, 1000.0],
        "limited_by": [{"program": "fcr", "priority": 90}],
        "target_w": 5000.0,
        "reasons": ["clamped"],
    }


def test_the_arbitration_object_with_unknown_bounds_and_the_targets_reasons() -> None:
    result = merge(PowerBounds.unknown(), [Bid(program="p", priority=0, sequence=1, power_w=1.0)])
    encoded = wire.arbitration_object(result.grants[0], result)
    assert Reason.UNKNOWN_BOUNDS.value in encoded["reasons"]
    assert len(encoded["reasons"]) == len(set(encoded["reasons"]))
    json.loads(protocol.result_line(1, encoded))  # no NaN, no infinity


def test_withdrawn() -> None:
    assert wire.withdrawn_object([frozenset({3, 1}), frozenset({2})]) == {
        "withdrawn": [[1, 3], [2]]
    }
    assert wire.withdrawn_object([]) == {"withdrawn": []}


def proposal(**fields: Any) -> Proposal:
    defaults: dict[str, Any] = {
        "program": "fcr",
        "priority": 90,
        "batteries": frozenset({2, 1}),
        "connection": "c1",
        "created_at": 100.0,
        "sequence": 1,
    }
    return Proposal(**{**defaults, **fields})


def test_a_proposal_entry() -> None:
    entry = wire.proposal_entry(
        proposal(power_w=-0.0, upper_w=5 * KW, ttl_s=30.0, until_disconnect=True),
        now=112.5,
        granted_w=-0.0,
        held=frozenset({2}),
    )
    assert entry == {
        "program": "fcr",
        "priority": 90,
        "batteries": [1, 2],
        "power_w": 0.0,
        "lower_w": None,
        "upper_w": 5000.0,
        "age_s": 12.5,
        "ttl_s": 30.0,
        "until_disconnect": True,
        "granted_w": 0.0,
        "held_batteries": [2],
    }
    assert math.copysign(1.0, entry["power_w"]) == 1.0
    assert math.copysign(1.0, entry["granted_w"]) == 1.0


def test_a_proposal_entry_without_a_grant_yet() -> None:
    entry = wire.proposal_entry(proposal(lower_w=-1.0), now=99.0, granted_w=None, held=frozenset())
    assert entry["granted_w"] is None
    assert entry["age_s"] == 0.0
    assert entry["held_batteries"] == []
    assert entry["ttl_s"] is None


def test_bounds_changed() -> None:
    headroom = Headroom(
        priority=10,
        inclusion_lower_w=-9 * KW,
        exclusion_lower_w=-KW,
        exclusion_upper_w=KW,
        inclusion_upper_w=math.inf,
        limited_by=(Limiter(program="fcr", priority=90),),
        reasons=(),
    )
    params = wire.bounds_changed_params(frozenset({7, 5}), "trading", headroom, -0.0)
    assert params == {
        "batteries": [5, 7],
        "program": "trading",
        "priority": 10,
        "inclusion_lower_w": -9000.0,
        "inclusion_upper_w": None,
        "exclusion_lower_w": -1000.0,
        "exclusion_upper_w": 1000.0,
        "target_w": 0.0,
    }
    json.loads(protocol.notification_line("bounds_changed", params))


def test_bounds_changed_from_a_merges_headroom() -> None:
    fcr = Bid(program="fcr", priority=90, sequence=1, power_w=4 * KW)
    result = merge(BOUNDS, [fcr])
    params = wire.bounds_changed_params(frozenset({1}), "trading", result.headroom(10), 4 * KW)
    assert params["inclusion_lower_w"] == -14000.0
    assert params["inclusion_upper_w"] == 6000.0


def test_proposal_changed() -> None:
    assert wire.proposal_changed_params(
        frozenset({2, 1}), 1500, [Reason.CLAMPED, GrantChange.PREEMPTED_BY, Reason.CLAMPED]
    ) == {"batteries": [1, 2], "granted_w": 1500.0, "reasons": ["clamped", "preempted_by"]}


@pytest.mark.parametrize("why", list(Why))
def test_proposal_ended(why: Why) -> None:
    ended = ProposalEnded(proposal=proposal(power_w=1.0), why=why)
    assert wire.proposal_ended_params(ended) == {"batteries": [1, 2], "why": why.value}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "5kvar", True, None])
def test_a_proposals_reactive_var_is_a_finite_number_of_var(value: Any) -> None:
    params = {"batteries": [1], "power_w": 0, "reactive_var": value}
    parsed = wire.parse_propose(call_of("propose", params), default_timeout_s=5.0)
    if value is None:  # as absent
        assert isinstance(parsed, Propose)
        assert parsed.reactive_var is None
        return
    assert isinstance(parsed, Failure)
    assert parsed.data["field"] == "reactive_var"
    assert parsed.data["expected"].startswith("a finite number of var")


def test_a_proposals_reactive_var_is_kept() -> None:
    params = {"batteries": [1], "power_w": 0, "reactive_var": 1200}
    parsed = wire.parse_propose(call_of("propose", params), default_timeout_s=5.0)
    assert isinstance(parsed, Propose)
    assert parsed.reactive_var == 1200.0
