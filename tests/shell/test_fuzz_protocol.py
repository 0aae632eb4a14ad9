"""Protocol fuzzing over the real socket, against the real daemon on the simulator.

What is fuzzed
--------------
Hypothesis writes *batches*. A batch is one to three connections, each a stream of lines (requests
well formed and not, wrong types, unknown methods, members and fields, NaN/Infinity/1e999 and
huge integers as JSON tokens, ids of every JSON type, deep nesting, bytes that are not UTF-8,
random bytes, blank lines, lines of exactly 64 KiB and longer) sent in random chunks, ending in a
*departure*: read every reply then close, half-close then read to EOF, close without reading,
close in the middle of a line, close after reading some replies. Now and then a batch adds a
connection that pipelines hundreds to thousands of pings, each with its own id.

The oracle
----------
Every line sent is judged by :func:`expectation`, written from ``spec/protocol.md`` and JSON-RPC
2.0, not from the daemon's code: it says whether the line gets a reply (a line that parses as an
object without ``id`` is a notification, and a blank line is skipped: neither gets one), which id
the reply carries and which error codes (or which method's result) it may hold. For the lines
whose replies the client waits for, the replies must match these expectations exactly: one per
line, as a multiset by id (replies come back in any order), each a well-formed JSON-RPC response
(``"jsonrpc": "2.0"``, exactly one of ``result``/``error``, an error code from the spec's table,
``data`` naming the field for -32602). A half-closed connection must then be closed by the
daemon (EOF) with nothing more; a line longer than 64 KiB gets -32000 and the connection goes on.
After every batch, a second client that stayed connected throughout must still get its ``ping``
and a ``set_power`` for battery 1004 (which the fuzzer never names) answered ``success``; no
session may have failed (the control server logs an ERROR when its fault barrier catches one);
and at the end every fuzzing connection's session must have ended.

How it runs, and why this way
-----------------------------
Starting the simulator and the daemon once per example would cost more than the examples, and
pytest-trio's fixtures are function-scoped. So one async test starts them (as every daemon test
does, under pytest-trio's loop) and hands the hypothesis engine to a worker thread
(``trio.to_thread.run_sync``); each example runs back in the daemon's own trio loop
(``trio.from_thread.run``), so every wait is a ``trio.fail_after`` and the daemon and the fuzzing
clients share one scheduler, as in every other daemon test. The daemon state carries over from
example to example, which is the point: one daemon must survive everything. Shrinking still works
(each example is self-contained); a shrunk failure may depend on earlier state, which the printed
example makes visible.

Writes are *windowed*: at most :data:`WINDOW` replies are outstanding before the client reads,
four times the daemon's outbox, so that the daemon's back-pressure (it stops reading a client
while :data:`~distributord.shell.control.OUTBOX_LINES` replies wait) is exercised. The fuzzer
found two bugs, now fixed and kept as tests below: a reading client that pipelined more than
the outbox in one write was dropped, and an integer ``power_w`` beyond a float's range killed
the session. The counts print with ``pytest -s``; in CI (``CI`` set, profile ``ci``,
derandomized) at least :data:`CI_MIN_FRAMES` frames must have been tried.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributord.core.protocol import MAX_LINE_BYTES, METHODS, Code
from distributord.core.session import OUTBOX_LINES
from distributord.shell.daemon import Daemon
from distributord.sim.scenario import uniform_fleet
from distributord.sim.server import Simulator
from tests.support import LIMIT_S, Client, connect

FUZZED: Final = (1001, 1002, 1003)
"""Batteries the fuzzer may command."""

WATCHED: Final = 1004
"""The second client's battery: the fuzzer never names it, so its requests never wait or get
superseded, and any failure is the daemon's."""

WINDOW: Final = 4 * OUTBOX_LINES
"""Replies outstanding at most before a fuzzing client reads: beyond the daemon's outbox, so
that its back-pressure is exercised."""

CI_MIN_FRAMES: Final = 10_000
"""Frames CI's profile must try (the issue's figure)."""

SPEC_CODES: Final = frozenset(int(code) for code in Code)
ENVELOPE: Final = frozenset({"jsonrpc", "id", "method", "params"})
SET_POWER_FIELDS: Final = frozenset(
    {"power_w", "batteries", "request_timeout_s", "adjust_power", "include_broken_batteries"}
)
OUTCOMES: Final = frozenset({"success", "partial_failure", "out_of_bounds", "error", "ignored"})
FLOAT_MAX: Final = sys.float_info.max


# --- the oracle ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Expect:
    """The reply a line must get.

    Attributes:
        id: The id the reply carries (``None`` for ``null``).
        codes: The error codes it may carry.
        result: The method whose result it may carry instead, if any.
    """

    id: Any
    codes: frozenset[int] = frozenset()
    result: str | None = None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _set_power_verdict(params: dict[str, Any]) -> bool:
    """Whether ``set_power``'s params are valid by the spec's table."""
    if set(params) - SET_POWER_FIELDS or not {"power_w", "batteries"} <= set(params):
        return False
    power = params["power_w"]
    if _is_int(power) and abs(power) > FLOAT_MAX:
        return False  # not a float: cannot be commanded (JSON allows it)
    if not (_is_number(power) and math.isfinite(power)):
        return False
    batteries = params["batteries"]
    if not (isinstance(batteries, list) and 1 <= len(batteries) <= 1024):
        return False
    if not all(_is_int(b) and b >= 0 for b in batteries) or len(set(batteries)) != len(batteries):
        return False
    timeout = params.get("request_timeout_s", 5.0)
    if not (_is_number(timeout) and 0 < timeout <= 60):
        return False
    return all(
        isinstance(params.get(flag, False), bool)
        for flag in ("adjust_power", "include_broken_batteries")
    )


ARBITRATION_CODES: Final[dict[str, tuple[int, ...]]] = {
    "hello": (Code.NOT_AUTHORISED,),
    "propose": (Code.OVERLOADED,),
    "withdraw": (),
    "subscribe_bounds": (),
}
"""Arbitration's methods with params: a result, invalid params, or these (arbitration.md)."""

NOTIFICATIONS: Final = frozenset(
    {"status_changed", "bounds_changed", "proposal_changed", "proposal_ended"}
)


def expectation(line: bytes) -> Expect | None:
    """The reply ``line`` (a line as the daemon cuts it, without its newline) must get.

    ``None`` when it gets none: a notification or a blank line.
    """
    if len(line) > MAX_LINE_BYTES:
        return Expect(id=None, codes=frozenset({Code.LINE_TOO_LONG}))
    if not line.strip():
        return None
    try:
        message = json.loads(line.decode("utf-8"), parse_constant=float)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Expect(id=None, codes=frozenset({Code.PARSE_ERROR}))
    if not isinstance(message, dict):
        return Expect(id=None, codes=frozenset({Code.INVALID_REQUEST}))
    notification = "id" not in message
    request_id = message.get("id")
    if not (request_id is None or isinstance(request_id, str) or _is_int(request_id)):
        return Expect(id=None, codes=frozenset({Code.INVALID_REQUEST}))

    def reply(*codes: int, result: str | None = None) -> Expect | None:
        return (
            None if notification else Expect(id=request_id, codes=frozenset(codes), result=result)
        )

    method = message.get("method")
    params = message.get("params", {})
    if (
        message.get("jsonrpc") != "2.0"
        or set(message) - ENVELOPE
        or not isinstance(method, str)
        or not isinstance(params, dict | list)
    ):
        return reply(Code.INVALID_REQUEST)
    if method not in METHODS:
        return reply(Code.METHOD_NOT_FOUND)
    if isinstance(params, list):
        if params:
            return reply(Code.INVALID_PARAMS)
        params = {}
    if method in ARBITRATION_CODES:  # their params are checked in tests/core/arbitration
        return reply(Code.INVALID_PARAMS, *ARBITRATION_CODES[method], result=method)
    if method != "set_power":
        return reply(Code.INVALID_PARAMS) if params else reply(result=method)
    verdict = _set_power_verdict(params)
    # A valid request may find the queue full (-32001); a result is the domain's outcome.
    return reply(Code.OVERLOADED, result="set_power") if verdict else reply(Code.INVALID_PARAMS)


def _id_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _no_constants(name: str) -> Any:
    raise AssertionError(f"the daemon wrote {name}, which is not JSON")


def check_message(line: bytes) -> dict[str, Any]:
    """A line the daemon wrote, checked to be a well-formed JSON-RPC response or notification."""
    message = json.loads(line.decode("utf-8"), parse_constant=_no_constants)
    assert isinstance(message, dict), line[:200]
    assert message.get("jsonrpc") == "2.0", line[:200]
    if "id" not in message:  # a notification: status changes, and arbitration's
        assert set(message) == {"jsonrpc", "method", "params"}, line[:200]
        assert message["method"] in NOTIFICATIONS, line[:200]
        if message["method"] == "status_changed":
            assert set(message["params"]) == {"id", "status", "reasons"}, line[:200]
        return message
    request_id = message["id"]
    assert request_id is None or isinstance(request_id, str) or _is_int(request_id), line[:200]
    assert set(message) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}), line[:200]
    if "error" in message:
        error = message["error"]
        assert isinstance(error, dict), line[:200]
        assert {"code", "message"} <= set(error) <= {"code", "message", "data"}, line[:200]
        assert error["code"] in SPEC_CODES, line[:200]
        assert isinstance(error["message"], str), line[:200]
        if error["code"] == Code.INVALID_PARAMS:
            assert isinstance(error["data"]["field"], str), line[:200]
            assert isinstance(error["data"]["expected"], str), line[:200]
    return message


def check_result(method: str, result: Any) -> None:
    """A result has the shape the spec gives ``method``'s."""
    assert isinstance(result, dict), result
    match method:
        case "ping":
            assert isinstance(result["version"], str)
            assert isinstance(result["uptime_s"], float)
        case "set_power":
            assert result["outcome"] in OUTCOMES, result
            assert _is_number(result["power_w"])
            assert isinstance(result["batteries"], list)
        case "get_status":
            assert isinstance(result["batteries"], list)
            assert isinstance(result["working"], list)
        case "subscribe_status":
            assert result == {"subscribed": True}
        case "list_components":
            pass  # its shape is the report's (tests/core); here only that it is an object
        case "propose":
            assert result["outcome"] in OUTCOMES, result
            assert isinstance(result["batteries"], list)
        case "hello":
            assert isinstance(result["program"], str)
            assert isinstance(result["priority"], int)
        case "withdraw":
            assert isinstance(result["withdrawn"], list)
        case "get_proposals":
            assert isinstance(result["proposals"], list)
        case "subscribe_bounds":
            assert result == {"subscribed": True}


def check_replies(expected: list[Expect], replies: list[dict[str, Any]]) -> None:
    """``replies`` answer ``expected`` one to one, in any order."""
    by_id: dict[str, list[Expect]] = defaultdict(list)
    for expect in expected:
        by_id[_id_key(expect.id)].append(expect)
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for reply in replies:
        got[_id_key(reply["id"])].append(reply)
    assert Counter({k: len(v) for k, v in got.items()}) == Counter(
        {k: len(v) for k, v in by_id.items()}
    ), "replies do not match the requests one to one (by id)"
    for key, expects in by_id.items():
        # The narrowest expectations first: the sets are nested or disjoint, so greedy suffices.
        unmatched = list(got[key])
        for expect in sorted(expects, key=lambda e: len(e.codes) + (e.result is not None)):
            for reply in unmatched:
                if "error" in reply and reply["error"]["code"] in expect.codes:
                    break
                if "result" in reply and expect.result is not None:
                    check_result(expect.result, reply["result"])
                    break
            else:
                raise AssertionError(f"no reply fits {expect} among {unmatched}")
            unmatched.remove(reply)


# --- strategies ----------------------------------------------------------------------------
#
# Generation is the fuzzer's bottleneck (a hypothesis draw costs tens of microseconds), so most
# choices are one draw from a catalogue of the values that matter, and only some values are
# built by a recursive strategy.

RAW_NUMBERS: Final = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1e-999",
    "-0",
    "-0.0",
    "5e-324",
    "1.7976931348623157e308",
    "9" * 300,  # an integer within a float's range
    "-" + "9" * 400,  # beyond it
    "1" + "0" * 4299,  # the longest integer Python converts (4,300 digits)
    "1" + "0" * 4300,  # one digit more: not parsed (ValueError), so -32700
    "0x10",
    "01",
    "+1",
    ".5",
    "1.",
)
"""JSON number tokens and near misses, written as they are (not via json.dumps)."""


def _nested(depth: int, opener: str = "[", closer: str = "]", inner: str = "1") -> str:
    return opener * depth + inner + closer * depth


def _ids_text(ids: range) -> str:
    return "[" + ",".join(map(str, ids)) + "]"


# Nesting depths are well under the parser's recursion limit (~1000) or well over it: near it,
# the answer would depend on the stack depth of the thread that parses, not on the line.
WRONG_VALUES: Final = (
    *RAW_NUMBERS,
    "null",
    "true",
    "false",
    '""',
    '"5000"',
    '"\\ud800"',
    '"\\u0000"',
    "[]",
    "{}",
    "[1001,1001]",
    "[-1]",
    "[1.5]",
    "[true]",
    "[1001.0]",
    '["1001"]',
    "[null]",
    "[[1001]]",
    '{"1001":1}',
    "[NaN]",
    "[1e999]",
    _ids_text(range(2000, 3025)),  # 1,025 ids: one too many
    _ids_text(range(2000, 3024)),  # 1,024 unknown ids: valid, an error outcome
    _nested(50),
    _nested(5_000),
    _nested(50, '{"a":', "}"),
    _nested(20_000, '{"a":', "}"),
    "0",
    "-1",
    "61",
    "60.000001",
    "1e-300",
    "0.0",
)
"""Values of every wrong type and range for any field, and some right ones at the edges."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


json_texts = st.recursive(
    st.one_of(
        st.sampled_from(WRONG_VALUES[:40]),
        st.integers().filter(lambda i: i != WATCHED).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(_dumps),
        st.text(max_size=8).map(_dumps),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(
            st.tuples(st.sampled_from([*SET_POWER_FIELDS, "", "id", "x"]), children), max_size=3
        ).map(lambda pairs: "{" + ",".join(f"{_dumps(k)}:{v}" for k, v in pairs) + "}"),
    ),
    max_leaves=8,
)
"""JSON values as text, NaN and friends included, built at random."""

wrong_values = st.one_of(*[st.sampled_from(WRONG_VALUES)] * 4, json_texts)

ABSENT: Final = ""
"""A field's value that leaves the field out."""

BATTERY_SETS: Final = (
    *(
        _dumps(sorted(ids))
        for ids in ([1001], [1002], [1003], [1001, 1002], [1002, 1003], [1001, 1003], FUZZED)
    ),
    "[9999]",
    "[1001,9999]",
    "[0]",
    f"[1003,{2**64}]",
    "[" + "7" * 4000 + "]",
)
"""Battery sets the fuzzer may name: its own batteries and unknown ids, never :data:`WATCHED`."""


def _field(valid: st.SearchStrategy[str], absent: int = 1) -> st.SearchStrategy[str]:
    return st.one_of(*[valid] * 5, wrong_values, *[st.just(ABSENT)] * absent)


SET_POWER_PARAMS: Final = {
    "power_w": _field(
        st.integers(-30_000, 30_000).map(str) | st.floats(-3e4, 3e4).map(_dumps), absent=0
    ),
    "batteries": _field(st.sampled_from(BATTERY_SETS), absent=0),
    "request_timeout_s": _field(st.sampled_from(["0.05", "0.5", "5", "60", "1e-9"]), absent=5),
    "adjust_power": _field(st.sampled_from(["true", "false"]), absent=5),
    "include_broken_batteries": _field(st.sampled_from(["true", "false"]), absent=5),
}

SHAPES: Final = (
    *["well formed"] * 12,
    "notification",
    "notification",
    "no jsonrpc",
    "jsonrpc 1.0",
    "jsonrpc a number",
    "an unknown member",
    "a duplicate id",
    "method not a string",
    "params an array",
    "params a scalar",
    "params with an unknown field",
    "spaced",
    "reversed",
)
"""What may be wrong with a request's envelope (or nothing)."""

METHOD_NAMES: Final = (
    *sorted(METHODS),
    *["set_power"] * 4,
    "shutdown",
    "PING",
    "ping ",
    "",
    "set_power\u0000",
    "rpc.discover",
)

ID_TEXTS: Final = ("null", '"a"', '""', '"\\ud800"', "1.5", "1.0", "true", "[1]", "{}", "-7")

ids = st.one_of(
    *[st.integers(0, 2**53).map(str)] * 3,
    st.text(max_size=6).map(_dumps),
    st.sampled_from(ID_TEXTS + RAW_NUMBERS),
)
"""Ids as JSON text: mostly distinct integers, then every other type and number token."""


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request object: mostly right, with one thing wrong now and then."""
    shape = draw(st.sampled_from(SHAPES))
    method = draw(st.sampled_from(METHOD_NAMES))
    members: list[tuple[str, str]] = []
    if shape != "no jsonrpc":
        version = {"jsonrpc 1.0": '"1.0"', "jsonrpc a number": "2.0"}.get(shape, '"2.0"')
        members.append(("jsonrpc", version))
    if shape != "notification":
        members.append(("id", draw(ids)))
    members.append(
        ("method", draw(json_texts) if shape == "method not a string" else _dumps(method))
    )
    if method == "set_power" and shape not in ("params an array", "params a scalar"):
        fields = [(name, draw(value)) for name, value in SET_POWER_PARAMS.items()]
        if shape == "params with an unknown field":
            fields.append(("power", "1"))
        members.append(
            ("params", "{" + ",".join(f'"{k}":{v}' for k, v in fields if v != ABSENT) + "}")
        )
    elif shape == "params an array":
        members.append(("params", draw(st.sampled_from(["[]", "[1]", "[{}]"]))))
    elif shape == "params a scalar":
        members.append(("params", draw(st.sampled_from(["null", "3", '"x"', "true"]))))
    elif shape == "params with an unknown field":
        members.append(("params", '{"verbose":true}'))
    if shape == "an unknown member":
        members.append(("params_", "{}"))
    elif shape == "a duplicate id":
        members.append(("id", draw(ids)))  # the last one counts, as in Python's parser
    if shape == "reversed":
        members.reverse()
    space = " \t\r " if shape == "spaced" else ""
    text = "{" + ",".join(f"{space}{_dumps(k)}:{space}{v}" for k, v in members) + "}" + space
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8


@st.composite
def not_utf8(draw: st.DrawFn) -> bytes:
    line = draw(requests())
    bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]))
    at = draw(st.integers(0, len(line)))
    return line[:at] + bad + line[at:]


@st.composite
def long_lines(draw: st.DrawFn) -> bytes:
    """Lines around the 64 KiB limit and far past it (built, not drawn byte by byte)."""
    length = draw(
        st.sampled_from([MAX_LINE_BYTES - 1, MAX_LINE_BYTES, MAX_LINE_BYTES + 1])
        | st.integers(MAX_LINE_BYTES + 2, 4 * MAX_LINE_BYTES)
    )
    kind = draw(st.sampled_from(["padded ping", "deep", "long id", "spaces"]))
    match kind:
        case "padded ping":
            head = b'{"jsonrpc":"2.0","id":%d,"method":"ping"' % length
            return head + b" " * (length - len(head) - 1) + b"}"
        case "deep":
            return b"[" * length
        case "long id":
            head, tail = b'{"jsonrpc":"2.0","method":"ping","id":"', b'"}'
            return head + b"i" * (length - len(head) - len(tail)) + tail
        case _:
            return b" " * length


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    line = draw(requests())
    return line[: draw(st.integers(0, max(len(line) - 1, 0)))]


frames = st.one_of(
    *[requests()] * 8,
    not_utf8(),
    truncated(),
    st.sampled_from(WRONG_VALUES).map(str.encode),  # not an object
    json_texts.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.lists(requests(), min_size=1, max_size=3).map(lambda rs: b"[" + b",".join(rs) + b"]"),
    st.binary(max_size=40),  # may hold newlines: then it is several lines
    st.sampled_from(
        [b"", b" ", b"\r", b"\t \x0b", b"\x00", b"{}", b"[]", b"null", b"\xef\xbb\xbf{}"]
    ),
    long_lines(),
)
"""One frame: usually a request, else anything a line can be."""

DEPARTURES: Final = ("read", "half-close", "close after send", "close mid-line", "close mid-read")


@attrs.frozen(kw_only=True)
class Script:
    """What one fuzzing connection does.

    Attributes:
        lines: The lines it sends, newline-terminated, in order.
        tail: Bytes sent after the last line, without a newline (a line cut off).
        departure: How it goes (see :data:`DEPARTURES`).
        chunk: Bytes per write (0: a window at once).
        read_before_close: For "close mid-read": replies read before closing.
        burst: Whether this is a burst of pings with ids of their own.
    """

    lines: tuple[bytes, ...]
    tail: bytes
    departure: str
    chunk: int
    read_before_close: int
    burst: bool = False


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    lines: list[bytes] = []
    for frame in draw(st.lists(frames, min_size=1, max_size=12)):
        lines.extend(frame.split(b"\n"))
    departure = draw(st.sampled_from(DEPARTURES))
    tail = b""
    if departure in ("half-close", "close mid-line"):
        tail = draw(truncated() | long_lines().map(lambda line: line[:-1]))
    return Script(
        lines=tuple(lines),
        tail=tail,
        departure=departure,
        chunk=draw(st.sampled_from([0, 0, 0, 1, 7, 100, 4096])),
        read_before_close=draw(st.integers(0, 5)),
    )


@st.composite
def bursts(draw: st.DrawFn) -> Script:
    """Hundreds to thousands of pings on one connection, each with an id of its own."""
    count = draw(st.integers(100, 3000))
    base = draw(st.integers(0, 2**40))
    lines = tuple(
        b'{"jsonrpc":"2.0","id":%s,"method":"ping"}'
        % (str(base + n) if n % 2 else f'"n{base + n}"').encode()
        for n in range(count)
    )
    return Script(lines=lines, tail=b"", departure="read", chunk=0, read_before_close=0, burst=True)


@st.composite
def batches(draw: st.DrawFn) -> list[Script]:
    batch = draw(st.lists(scripts(), min_size=1, max_size=3))
    if draw(st.integers(0, 39)) == 0:
        batch.append(draw(bursts()))
    return batch


# --- the fuzzing client --------------------------------------------------------------------


@attrs.define
class Tally:
    """What the fuzzer did, printed at the end."""

    frames: int = 0
    burst_frames: int = 0
    replies: int = 0
    notifications: int = 0
    batches: int = 0
    departures: Counter[str] = attrs.field(factory=Counter)


class Reader:
    """Reads the daemon's lines on one connection, checking each as it comes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self.replies: list[dict[str, Any]] = []
        self.notifications = 0

    async def until(self, count: int) -> None:
        """Read until ``count`` replies have come."""
        while len(self.replies) < count:
            assert await self._more(), (
                f"the daemon closed the connection after {len(self.replies)} of {count} replies"
            )

    async def to_eof(self) -> None:
        """Read until the daemon closes the connection."""
        while await self._more():
            pass

    async def _more(self) -> bool:
        data = await self._stream.receive_some(1 << 20)
        if not data:
            assert not self._buffer, "the daemon's last line has no newline"
            return False
        self._buffer += data
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            message = check_message(bytes(self._buffer[start:end]))
            if "id" in message:
                self.replies.append(message)
            else:
                self.notifications += 1
            start = end + 1
        del self._buffer[:start]
        return True


def _windows(lines: tuple[bytes, ...], tally: Tally) -> Iterator[tuple[bytes, list[Expect]]]:
    """The lines cut into windows of at most :data:`WINDOW` expected replies."""
    data = bytearray()
    expected: list[Expect] = []
    for line in lines:
        expect = expectation(line)
        data += line + b"\n"
        if expect is not None:
            expected.append(expect)
        if len(expected) == WINDOW:
            yield bytes(data), expected
            data, expected = bytearray(), []
    if data:
        yield bytes(data), expected


async def _send(stream: trio.SocketStream, data: bytes, chunk: int) -> None:
    # Tiny chunks only for short data: a 256 KiB line in 1-byte writes would take seconds.
    size = max(chunk, len(data) // 64) if chunk else len(data)
    for start in range(0, len(data), size):
        await stream.send_all(data[start : start + size])


async def run_script(path: Path, script: Script, tally: Tally) -> None:
    """One fuzzing connection, from connect to departure, checking every reply it reads."""
    with trio.fail_after(LIMIT_S):
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            reader = Reader(stream)
            expected: list[Expect] = []
            windows = list(_windows(script.lines, tally))
            sent = sum(w.count(b"\n") for w, _ in windows)
            for index, (data, window) in enumerate(windows):
                await _send(stream, data, script.chunk)
                before = len(expected)
                expected += window
                if index < len(windows) - 1 or script.departure in ("read", "half-close"):
                    await reader.until(len(expected))
                elif script.departure == "close mid-read":
                    await reader.until(min(before + script.read_before_close, len(expected)))
            if script.tail:
                await _send(stream, script.tail, script.chunk)
            match script.departure:
                case "read":
                    check_replies(expected, reader.replies)
                    # Nothing more may come for what was sent: a last ping is answered alone.
                    await stream.send_all(b'{"jsonrpc":"2.0","id":"last","method":"ping"}\n')
                    await reader.until(len(expected) + 1)
                    assert len(reader.replies) == len(expected) + 1, "a reply too many"
                    assert reader.replies[-1]["id"] == "last", "a reply too many"
                case "half-close":
                    await stream.send_eof()
                    await reader.to_eof()  # the daemon answers what was sent, then closes
                    if len(script.tail) > MAX_LINE_BYTES:
                        expected.append(Expect(id=None, codes=frozenset({Code.LINE_TOO_LONG})))
                    check_replies(expected, reader.replies)
                case "close mid-read" | "close after send" | "close mid-line":
                    pass  # every reply read so far was checked for its shape
                case _:  # pragma: no cover - the strategy draws from DEPARTURES
                    raise AssertionError(script.departure)
    frames = sent + bool(script.tail)
    if script.burst:
        tally.burst_frames += frames
    else:
        tally.frames += frames
    tally.replies += len(reader.replies)
    tally.notifications += reader.notifications
    tally.departures[script.departure] += 1


async def check_watcher(watcher: Client, serial: int) -> None:
    """The second client is still served: a ping, and a set_power to its own battery."""
    pong = await watcher.result("ping")
    assert pong["microgrid"] == "connected"
    power = 500.0 + 10 * (serial % 50)  # a new value each time: the command is really sent
    result = await watcher.result("set_power", {"power_w": power, "batteries": [WATCHED]})
    assert result["outcome"] == "success", result
    assert result["succeeded_batteries"] == [WATCHED]
    assert result["succeeded_power_w"] == pytest.approx(power)


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- the tests -----------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(uniform_fleet(4, seed=11), telemetry_hz=20.0) as simulator:
        yield simulator


async def test_fuzzed_frames_and_departures_never_hurt_the_daemon(
    daemon: Daemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "control.sock"
    tally = Tally()
    started = time.monotonic()
    async with connect(path) as watcher:
        await check_watcher(watcher, 0)

        async def run_batch(batch: list[Script]) -> None:
            async with trio.open_nursery() as nursery:
                for script in batch:
                    nursery.start_soon(run_script, path, script, tally)
            tally.batches += 1
            await check_watcher(watcher, tally.batches)
            assert not _failures(caplog), "a session failed (see the log)"

        @settings(
            # Each example is a batch of ~10 frames, a burst of pings now and then, and the
            # second client's two requests: CI's 1,000 examples would take two minutes on two
            # cores, its 1,000 try well over CI_MIN_FRAMES frames in about half a minute.
            max_examples=max(settings().max_examples // 2, 100),
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.large_base_example,
            ],
        )
        @given(batches())
        def fuzz(batch: list[Script]) -> None:
            trio.from_thread.run(run_batch, batch)

        await trio.to_thread.run_sync(fuzz)

        # Every fuzzing connection has gone: its session must end (the watcher's stays).
        with trio.fail_after(LIMIT_S):
            while daemon.control.statistics().connections != 1:
                await trio.testing.wait_all_tasks_blocked()
        await check_watcher(watcher, -1)

    crashes = len(_failures(caplog))
    print(
        f"\nprotocol fuzz: {tally.frames + tally.burst_frames} frames tried "
        f"({tally.frames} fuzzed, {tally.burst_frames} in id bursts) in {tally.batches} batches, "
        f"{sum(tally.departures.values())} connections {dict(tally.departures)}; "
        f"{tally.replies} replies and {tally.notifications} notifications checked; "
        f"{crashes} crashes; "
        f"{time.monotonic() - started:.1f} s"
    )
    assert crashes == 0
    if os.environ.get("CI"):
        assert tally.frames + tally.burst_frames >= CI_MIN_FRAMES, tally


# --- bugs the fuzzer found (fixed) ----------------------------------------------------------


async def test_a_reading_client_that_pipelines_a_burst_gets_every_reply(
    daemon: Daemon, tmp_path: Path
) -> None:
    # 2 x OUTBOX_LINES pings in one write: the daemon reads them in one receive_some (or very
    # few) and queues every reply before its writer gets a turn.
    count = 2 * OUTBOX_LINES
    burst = b"".join(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % n for n in range(count))
    with trio.fail_after(LIMIT_S):
        stream = await trio.open_unix_socket(str(tmp_path / "control.sock"))
        async with stream, trio.open_nursery() as nursery:
            reader = Reader(stream)
            nursery.start_soon(stream.send_all, burst)
            await reader.until(count)
    assert sorted(r["id"] for r in reader.replies) == list(range(count))


async def test_a_huge_integer_power_is_invalid_params(daemon: Daemon, tmp_path: Path) -> None:
    async with connect(tmp_path / "control.sock") as client:
        huge = "1" + "0" * 309  # 1e309 written as an integer: a valid JSON number
        await client.send_raw(
            b'{"jsonrpc":"2.0","id":1,"method":"set_power",'
            b'"params":{"power_w":%s,"batteries":[1001]}}\n' % huge.encode()
        )
        reply = await client.reply_to(1)
        assert reply["error"]["code"] == Code.INVALID_PARAMS
        assert reply["error"]["data"]["field"] == "power_w"
        assert (await client.result("ping"))["microgrid"] == "connected"  # the connection goes on
