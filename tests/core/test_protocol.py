"""The control protocol codec: framing, decoding, params checks, encoding."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core import protocol
from distributord.core.model import (
    Error,
    Ignored,
    OutOfBounds,
    PartialFailure,
    PowerBounds,
    Request,
    Success,
)
from distributord.core.protocol import (
    TOO_LONG,
    Call,
    Code,
    Failure,
    LineFramer,
    decode,
    parse_set_power,
)


def request_line(**message: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **message}).encode()


# --- framing ------------------------------------------------------------------------------


def test_lines_are_cut_at_newlines_across_chunks() -> None:
    framer = LineFramer(limit=100)
    assert framer.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert framer.feed(b":2}\n\n") == [b'{"b":2}', b""]


def test_a_too_long_line_is_reported_once_and_discarded() -> None:
    framer = LineFramer(limit=10)
    assert framer.feed(b"x" * 8) == []
    assert framer.feed(b"x" * 8) == [TOO_LONG]
    assert framer.feed(b"x" * 100) == []
    assert framer.feed(b"xx\nok\n") == [b"ok"]
    assert framer.feed(b"y" * 20 + b"\nfine\n") == [TOO_LONG, b"fine"]


def test_a_line_of_exactly_the_limit_is_accepted() -> None:
    framer = LineFramer(limit=10)
    assert framer.feed(b"x" * 10 + b"\n" + b"y" * 11 + b"\n") == [b"x" * 10, TOO_LONG]


@given(st.lists(st.binary(max_size=40), max_size=20), st.data())
def test_framing_does_not_depend_on_how_the_stream_is_chunked(
    lines: list[bytes], data: st.DataObject
) -> None:
    lines = [line.replace(b"\n", b"") for line in lines]
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    framer = LineFramer(limit=30)
    got: list[bytes | protocol.TooLong] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got.extend(framer.feed(stream[start:end]))
        assert len(framer._buffer) <= 30
    assert got == [line if len(line) <= 30 else TOO_LONG for line in lines]


# --- decoding -----------------------------------------------------------------------------


def test_a_well_formed_call() -> None:
    call = decode(request_line(id=7, method="ping"))
    assert call == Call(id=7, notification=False, method="ping", params={})


def test_a_notification_has_no_id() -> None:
    call = decode(request_line(method="get_status", params={}))
    assert isinstance(call, Call)
    assert call.notification


@pytest.mark.parametrize(
    ("line", "code", "request_id"),
    [
        (b"{not json", Code.PARSE_ERROR, None),
        (b"\xff\xfe", Code.PARSE_ERROR, None),
        (b"[" * 100_000, Code.PARSE_ERROR, None),  # deeper than the parser's recursion limit
        (b"", Code.PARSE_ERROR, None),
        (b"[1, 2]", Code.INVALID_REQUEST, None),
        (b'"ping"', Code.INVALID_REQUEST, None),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', Code.INVALID_REQUEST, 1),
        (b'{"id":1,"method":"ping"}', Code.INVALID_REQUEST, 1),
        (b'{"jsonrpc":"2.0","id":1,"method":5}', Code.INVALID_REQUEST, 1),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', Code.INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', Code.INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","id":{},"method":"ping"}', Code.INVALID_REQUEST, None),
        (b'{"jsonrpc":"2.0","id":"a","method":"ping","params":3}', Code.INVALID_REQUEST, "a"),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","extra":1}', Code.INVALID_REQUEST, 1),
        (b'{"jsonrpc":"2.0","id":1,"method":"shutdown"}', Code.METHOD_NOT_FOUND, 1),
        (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', Code.INVALID_PARAMS, 1),
    ],
)
def test_malformed_lines_get_the_right_error(line: bytes, code: Code, request_id: Any) -> None:
    failure = decode(line)
    assert isinstance(failure, Failure)
    assert failure.code is code
    assert failure.id == request_id


@given(st.binary(max_size=200))
def test_decoding_never_raises_on_any_bytes(line: bytes) -> None:
    assert isinstance(decode(line), Call | Failure)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values, st.sampled_from(sorted(protocol.METHODS)))
def test_decoding_and_params_checks_never_raise_on_any_json(params: Any, method: str) -> None:
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    call = decode(line)
    if isinstance(call, Call) and call.method == "set_power":
        assert isinstance(parse_set_power(call, default_timeout_s=5.0), Request | Failure)


# --- set_power params -------------------------------------------------------------------------


def set_power(**params: Any) -> Request | Failure:
    call = decode(request_line(id=1, method="set_power", params=params))
    assert isinstance(call, Call)
    return parse_set_power(call, default_timeout_s=5.0)


def test_set_power_with_defaults() -> None:
    assert set_power(power_w=-5000, batteries=[1002, 1001]) == Request(
        power_w=-5000.0, batteries=frozenset({1001, 1002}), request_timeout_s=5.0
    )


def test_set_power_with_every_field() -> None:
    request = set_power(
        power_w=1.5,
        batteries=[1],
        request_timeout_s=0.5,
        adjust_power=False,
        include_broken_batteries=True,
    )
    assert request == Request(
        power_w=1.5,
        batteries=frozenset({1}),
        request_timeout_s=0.5,
        adjust_power=False,
        include_broken_batteries=True,
    )


def raw_set_power(params: str) -> Request | Failure:
    call = decode(
        b'{"jsonrpc":"2.0","id":1,"method":"set_power","params":' + params.encode() + b"}"
    )
    assert isinstance(call, Call)
    return parse_set_power(call, default_timeout_s=5.0)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ('{"power_w": NaN, "batteries": [1]}', "power_w"),
        ('{"power_w": Infinity, "batteries": [1]}', "power_w"),
        ('{"power_w": -Infinity, "batteries": [1]}', "power_w"),
        # Beyond a float's range (found by the protocol fuzzer: math.isfinite raised on it).
        ('{"power_w": 1' + "0" * 309 + ', "batteries": [1]}', "power_w"),
        ('{"power_w": -1' + "0" * 309 + ', "batteries": [1]}', "power_w"),
        ('{"power_w": 1e999, "batteries": [1]}', "power_w"),
        ('{"power_w": "5000", "batteries": [1]}', "power_w"),
        ('{"power_w": true, "batteries": [1]}', "power_w"),
        ('{"power_w": null, "batteries": [1]}', "power_w"),
        ('{"batteries": [1]}', "power_w"),
        ('{"power_w": 1}', "batteries"),
        ('{"power_w": 1, "batteries": []}', "batteries"),
        ('{"power_w": 1, "batteries": 1}', "batteries"),
        ('{"power_w": 1, "batteries": [-1]}', "batteries"),
        ('{"power_w": 1, "batteries": [1.0]}', "batteries"),
        ('{"power_w": 1, "batteries": ["1"]}', "batteries"),
        ('{"power_w": 1, "batteries": [true]}', "batteries"),
        ('{"power_w": 1, "batteries": [1, 2, 1]}', "batteries"),
        ('{"power_w": 1, "batteries": [' + ",".join(map(str, range(1025))) + "]}", "batteries"),
        ('{"power_w": 1, "batteries": [1], "request_timeout_s": 0}', "request_timeout_s"),
        ('{"power_w": 1, "batteries": [1], "request_timeout_s": 61}', "request_timeout_s"),
        ('{"power_w": 1, "batteries": [1], "request_timeout_s": NaN}', "request_timeout_s"),
        ('{"power_w": 1, "batteries": [1], "adjust_power": 1}', "adjust_power"),
        (
            '{"power_w": 1, "batteries": [1], "include_broken_batteries": "no"}',
            "include_broken_batteries",
        ),
        ('{"power_w": 1, "batteries": [1], "force": true}', "force"),
        ('{"power_w": 1, "batteries": [1], "reactive_var": NaN}', "reactive_var"),
        ('{"power_w": 1, "batteries": [1], "reactive_var": Infinity}', "reactive_var"),
        ('{"power_w": 1, "batteries": [1], "reactive_var": "5kvar"}', "reactive_var"),
        ('{"power_w": 1, "batteries": [1], "reactive_var": true}', "reactive_var"),
        ('{"power_w": 1, "batteries": [1], "reactive_var": 1e999}', "reactive_var"),
    ],
)
def test_invalid_set_power_params_name_the_field(params: str, field: str) -> None:
    failure = raw_set_power(params)
    assert isinstance(failure, Failure)
    assert failure.code is Code.INVALID_PARAMS
    assert failure.data["field"] == field
    assert field in failure.message


def test_duplicates_are_named() -> None:
    failure = raw_set_power('{"power_w": 1, "batteries": [3, 1, 3, 1]}')
    assert isinstance(failure, Failure)
    assert failure.data["expected"] == "unique ids, got duplicates [1, 3]"


def test_methods_without_params_refuse_params() -> None:
    call = decode(request_line(id=2, method="ping", params={"x": 1}))
    assert isinstance(call, Call)
    failure = protocol.check_no_params(call)
    assert failure is not None
    assert failure.code is Code.INVALID_PARAMS
    assert failure.data["field"] == "x"


# --- encoding -----------------------------------------------------------------------------------


REQUEST = Request(power_w=-1500.0, batteries=frozenset({2, 1}))


def test_lines_are_compact_json_ending_in_newline() -> None:
    line = protocol.result_line(3, {"ok": True})
    assert line == b'{"jsonrpc":"2.0","id":3,"result":{"ok":true}}\n'
    error = protocol.error_line(Failure(id=None, code=Code.PARSE_ERROR, message="parse error: x"))
    assert json.loads(error) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "parse error: x"},
    }
    note = protocol.notification_line(
        "status_changed", {"id": 1, "status": "working", "reasons": []}
    )
    assert json.loads(note) == {
        "jsonrpc": "2.0",
        "method": "status_changed",
        "params": {"id": 1, "status": "working", "reasons": []},
    }


def test_a_client_request_line_decodes_as_the_call() -> None:
    params = {"power_w": -5000.0, "batteries": [1001, 1002]}
    line = protocol.request_line(7, "set_power", params)
    assert line == (
        b'{"jsonrpc":"2.0","id":7,"method":"set_power",'
        b'"params":{"power_w":-5000.0,"batteries":[1001,1002]}}\n'
    )
    assert protocol.decode(line.rstrip(b"\n")) == Call(
        id=7, notification=False, method="set_power", params=params
    )
    assert protocol.decode(protocol.request_line(8, "ping", None).rstrip(b"\n")) == Call(
        id=8, notification=False, method="ping", params={}
    )


def test_success_is_encoded_with_every_field() -> None:
    result = Success(
        request=REQUEST,
        succeeded_power_w=-1500.0,
        succeeded_batteries=frozenset({1, 2}),
        excess_power_w=0.0,
        distribution={2: -500.0, 1: -1000.0},
        reasons={1: "proportional", 2: "capped"},
    )
    assert protocol.result_object(result) == {
        "outcome": "success",
        "power_w": -1500.0,
        "batteries": [1, 2],
        "succeeded_power_w": -1500.0,
        "succeeded_batteries": [1, 2],
        "excess_power_w": 0.0,
        "distribution": {"1": -1000.0, "2": -500.0},
        "reasons": {"1": "proportional", "2": "capped"},
    }


def test_the_unused_batteries_power_is_encoded_when_measured() -> None:
    result = Success(
        request=REQUEST,
        succeeded_power_w=-1000.0,
        succeeded_batteries=frozenset({1}),
        excess_power_w=0.0,
        distribution={1: -1000.0},
        reasons={1: "proportional", 2: "uncertain (blocked_after_failure); measured -500.0 W"},
        unused_power_w={2: -500.0},
        compensated_power_w=-500.0,
        uncompensated_power_w=-0.0,
    )
    encoded = protocol.result_object(result)
    assert encoded["unused_power_w"] == {"2": -500.0}
    assert encoded["compensated_power_w"] == -500.0
    assert json.dumps(encoded["uncompensated_power_w"]) == "0.0"
    assert "unused_power_w" not in protocol.result_object(attrs.evolve(result, unused_power_w={}))


def test_refusals_carry_the_reasons_of_the_batteries_left_out() -> None:
    refused = Error(request=REQUEST, message="no usable batteries", reasons={2: "not_working"})
    assert protocol.result_object(refused)["reasons"] == {"2": "not_working"}
    assert "reasons" not in protocol.result_object(attrs.evolve(refused, reasons={}))


def test_partial_failure_adds_the_failed_part() -> None:
    result = PartialFailure(
        request=REQUEST,
        succeeded_power_w=-1000.0,
        succeeded_batteries=frozenset({1}),
        failed_power_w=-500.0,
        failed_batteries=frozenset({2}),
        excess_power_w=-0.0,
        distribution={1: -1000.0, 2: -500.0},
    )
    encoded = protocol.result_object(result)
    assert encoded["outcome"] == "partial_failure"
    assert (encoded["failed_power_w"], encoded["failed_batteries"]) == (-500.0, [2])
    assert json.dumps(encoded["excess_power_w"]) == "0.0"  # never "-0.0"


def test_out_of_bounds_error_and_ignored() -> None:
    bounds = PowerBounds(
        inclusion_lower=-2000.0,
        exclusion_lower=-100.0,
        exclusion_upper=100.0,
        inclusion_upper=2000.0,
    )
    assert protocol.result_object(OutOfBounds(request=REQUEST, bounds=bounds)) == {
        "outcome": "out_of_bounds",
        "power_w": -1500.0,
        "batteries": [1, 2],
        "bounds": {
            "inclusion_lower_w": -2000.0,
            "exclusion_lower_w": -100.0,
            "exclusion_upper_w": 100.0,
            "inclusion_upper_w": 2000.0,
        },
    }
    assert protocol.result_object(
        Error(request=REQUEST, message="no usable batteries among [1, 2]")
    )["message"] == ("no usable batteries among [1, 2]")
    assert (
        protocol.result_object(Ignored(request=REQUEST, message="superseded"))["outcome"]
        == "ignored"
    )


def test_unknown_bounds_are_null() -> None:
    assert set(protocol.bounds_object(PowerBounds.unknown()).values()) == {None}


def test_a_bad_reactive_var_is_named_in_var_and_a_good_one_is_kept() -> None:
    failure = raw_set_power('{"power_w": 1, "batteries": [1], "reactive_var": "5kvar"}')
    assert isinstance(failure, Failure)
    assert failure.data["expected"].startswith("a finite number of var, got")
    request = raw_set_power('{"power_w": 1, "batteries": [1], "reactive_var": -250}')
    assert isinstance(request, Request)
    assert request.reactive_var == -250.0
    assert raw_set_power('{"power_w": 1, "batteries": [1]}').reactive_var is None  # type: ignore[union-attr]
