"""The control protocol: JSON-RPC 2.0, one JSON object per line (a pure codec).

Theory of operation
-------------------
The socket listener feeds bytes to a :class:`LineFramer`, which cuts lines and refuses any
longer than 64 KiB (the rest of such a line is discarded, and the connection goes on). Each
line is decoded (:func:`decode`) into a :class:`Call` or a :class:`Failure` (a JSON-RPC error
to send back); the parameters of ``set_power`` are checked by :func:`parse_set_power`, which
builds a validated :class:`~distributord.core.model.Request` or names the offending field.
Replies, errors and notifications are encoded to lines here too, and, for clients
(:mod:`distributord.core.rpcclient`), requests.

Nothing a client sends can raise out of this module: every malformed input becomes a
:class:`Failure` with the code the spec gives it (``spec/protocol.md``):

====== ===================================================================================
code   when
====== ===================================================================================
-32700 not valid JSON (including nesting too deep to parse), or not UTF-8; id ``null``
-32600 not a JSON-RPC 2.0 request object (an array, a missing ``jsonrpc``, a bad ``id``...)
-32601 unknown method
-32602 invalid params; ``data`` names the field and what was expected
-32000 line longer than 64 KiB
-32001 the request queue is full (the listener sends it)
-32003 peer not authorised (the listener sends it, then closes)
====== ===================================================================================

NaN and infinities are not JSON, but Python's parser accepts ``NaN`` and ``Infinity``, and
``1e999`` overflows to infinity; all three reach :func:`parse_set_power` as floats and are
refused there, naming the field, as the spec asks.
"""

from __future__ import annotations

import enum
import json
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any, assert_never

import attrs

from distributord.core.model import (
    MAX_BATTERIES_PER_REQUEST,
    MAX_REQUEST_TIMEOUT_S,
    Error,
    Ignored,
    OutOfBounds,
    PartialFailure,
    PowerBounds,
    Request,
    Result,
    Success,
    is_finite_power,
    is_request_timeout,
)
from distributord.core.values import is_component_id, is_integer

DEFAULT_SOCKET = "/run/distributord/control.sock"
"""The control socket's path when neither the socket unit, the configuration nor a client's flag
names one (``spec/operations.md``). It lives with the protocol so that the daemon's
configuration and ``distributorctl`` (which must start fast) share it without the parser."""

MAX_LINE_BYTES = 64 * 1024
"""The longest line accepted (the spec's limit): a request for 1,024 batteries is ~10 KiB."""

JsonId = int | str | None


class Code(enum.IntEnum):
    """JSON-RPC error codes (``spec/protocol.md``)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    LINE_TOO_LONG = -32000
    OVERLOADED = -32001
    SHUTTING_DOWN = -32002
    NOT_AUTHORISED = -32003
    NOT_CONNECTED = -32004


METHODS = frozenset(
    {
        "ping",
        "set_power",
        "get_status",
        "subscribe_status",
        "list_components",
        "hello",
        "propose",
        "withdraw",
        "get_proposals",
        "subscribe_bounds",
    }
)
"""The methods the daemon serves (``spec/protocol.md``; ``spec/arbitration.md`` adds the last
five)."""


@attrs.frozen(kw_only=True)
class Call:
    """A well-formed JSON-RPC request for one of our methods.

    Attributes:
        id: The request's id; ``None`` for ``"id": null``.
        notification: Whether the request had no ``id`` at all (then nothing is sent back).
        method: One of :data:`METHODS`.
        params: The parameters (an object; ``{}`` when absent).
    """

    id: JsonId
    notification: bool
    method: str
    params: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class Failure:
    """A JSON-RPC error to send back.

    Attributes:
        id: The request's id, or ``None`` when it could not be read.
        code: The error code.
        message: A short description.
        data: Details: for invalid params ``{"field": ..., "expected": ...}``.
        notification: Whether the request was a notification (then nothing is sent back).
    """

    id: JsonId
    code: Code
    message: str
    data: Any = None
    notification: bool = False


# --- framing -------------------------------------------------------------------------------


class TooLong:
    """A line longer than :data:`MAX_LINE_BYTES` was discarded."""


TOO_LONG = TooLong()


class LineFramer:
    """Cuts a byte stream into lines of at most ``limit`` bytes.

    A longer line is reported once (:data:`TOO_LONG`) and discarded up to its newline; the
    lines after it are read as usual. Memory use is bounded by ``limit``.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | TooLong]:
        """Take received bytes; return the complete lines (newline removed) and overflows."""
        out: list[bytes | TooLong] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            piece = data[start:newline]
            start = newline + 1
            if self._discarding:
                self._discarding = False
                continue
            if len(self._buffer) + len(piece) > self._limit:
                self._buffer.clear()
                out.append(TOO_LONG)
                continue
            self._buffer += piece
            out.append(bytes(self._buffer))
            self._buffer.clear()
        rest = data[start:]
        if not self._discarding:
            if len(self._buffer) + len(rest) > self._limit:
                self._buffer.clear()
                self._discarding = True
                out.append(TOO_LONG)
            else:
                self._buffer += rest
        return out


# --- decoding ------------------------------------------------------------------------------


def _loads(text: str) -> Any:
    # `NaN`, `Infinity` and `-Infinity` become floats so that the params check can name the
    # field they are in; everything else follows the JSON grammar.
    return json.loads(text, parse_constant=float)


def decode(line: bytes) -> Call | Failure:
    """Read one request line."""
    try:
        message = _loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        detail = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        return Failure(id=None, code=Code.PARSE_ERROR, message=f"parse error: {detail}")
    if not isinstance(message, dict):
        return Failure(
            id=None,
            code=Code.INVALID_REQUEST,
            message="invalid request: expected a JSON-RPC 2.0 request object",
        )
    notification = "id" not in message
    request_id = message.get("id")
    if not (request_id is None or isinstance(request_id, str) or is_integer(request_id)):
        return Failure(
            id=None,
            code=Code.INVALID_REQUEST,
            message="invalid request: id must be a string, an integer or null",
        )

    def invalid(why: str) -> Failure:
        return Failure(
            id=request_id,
            code=Code.INVALID_REQUEST,
            message=f"invalid request: {why}",
            notification=notification,
        )

    if message.get("jsonrpc") != "2.0":
        return invalid('jsonrpc must be "2.0"')
    unknown = sorted(set(message) - {"jsonrpc", "id", "method", "params"})
    if unknown:
        return invalid(f"unknown members {unknown}")
    method = message.get("method")
    if not isinstance(method, str):
        return invalid("method must be a string")
    params = message.get("params", {})
    if not isinstance(params, dict | list):
        return invalid("params must be an object or an array")
    if method not in METHODS:
        return Failure(
            id=request_id,
            code=Code.METHOD_NOT_FOUND,
            message=f"method not found: {method!r}; methods: {', '.join(sorted(METHODS))}",
            notification=notification,
        )
    if isinstance(params, list):
        if params:
            return _invalid_params(
                request_id, notification, "params", "named parameters (an object)"
            )
        params = {}
    return Call(id=request_id, notification=notification, method=method, params=params)


def _invalid_params(request_id: JsonId, notification: bool, field: str, expected: str) -> Failure:
    return Failure(
        id=request_id,
        code=Code.INVALID_PARAMS,
        message=f"invalid params: {field} must be {expected}",
        data={"field": field, "expected": expected},
        notification=notification,
    )


def check_no_params(call: Call) -> Failure | None:
    """Methods other than ``set_power`` take no parameters."""
    if call.params:
        field = sorted(call.params)[0]
        return _invalid_params(
            call.id, call.notification, field, f"absent: {call.method} takes no parameters"
        )
    return None


def invalid_params(call: Call, field: str, expected: str) -> Failure:
    """The invalid-params error (-32602) for ``call``: ``data`` is ``{field, expected}``."""
    return _invalid_params(call.id, call.notification, field, expected)


def power_problem(value: object) -> str | None:
    """What a power field (W) must be, if ``value`` is not it; ``None`` if it is.

    The one rule for every power a client sends (``set_power``'s ``power_w``, ``propose``'s
    ``power_w``, ``lower_w`` and ``upper_w``): a finite number.
    """
    if is_finite_power(value):
        return None
    return f"a finite number of watts, got {json.dumps(value, default=str)}"


def batteries_problem(value: object) -> str | None:
    """What a battery set must be, if ``value`` is not one; ``None`` if it is.

    The one rule for every battery set a client sends: an array of 1 to
    :data:`~distributord.core.model.MAX_BATTERIES_PER_REQUEST` unique non-negative integer ids.
    """
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATTERIES_PER_REQUEST:
        return f"an array of 1 to {MAX_BATTERIES_PER_REQUEST} battery ids"
    wrong = [b for b in value if not is_component_id(b)]
    if wrong:
        return f"non-negative integer ids, got {json.dumps(wrong[:5], default=str)}"
    if len(set(value)) != len(value):
        dupes = sorted(b for b, count in Counter(value).items() if count > 1)
        return f"unique ids, got duplicates {dupes}"
    return None


def reactive_problem(value: object) -> str | None:
    """What a ``reactive_var`` must be, if ``value`` is not it; ``None`` if it is."""
    if is_finite_power(value):
        return None
    return f"a finite number of var, got {json.dumps(value, default=str)}"


def timeout_problem(value: object) -> str | None:
    """What a ``request_timeout_s`` must be, if ``value`` is not it; ``None`` if it is."""
    if is_request_timeout(value):
        return None
    return f"a number in (0, {MAX_REQUEST_TIMEOUT_S:g}] seconds"


SET_POWER_FIELDS = frozenset(
    {
        "power_w",
        "batteries",
        "request_timeout_s",
        "adjust_power",
        "include_broken_batteries",
        "reactive_var",
    }
)


def parse_set_power(call: Call, *, default_timeout_s: float) -> Request | Failure:
    """The validated request of a ``set_power`` call, or the invalid-params error naming why."""
    params = call.params

    def bad(field: str, expected: str) -> Failure:
        return _invalid_params(call.id, call.notification, field, expected)

    unknown = sorted(set(params) - SET_POWER_FIELDS)
    if unknown:
        return bad(
            unknown[0], f"absent (unknown field; fields: {', '.join(sorted(SET_POWER_FIELDS))})"
        )
    for field in ("power_w", "batteries"):
        if field not in params:
            return bad(field, "present (required)")
    power = params["power_w"]
    batteries = params["batteries"]
    timeout = params.get("request_timeout_s", default_timeout_s)
    reactive = params.get("reactive_var")
    for field, problem in (
        ("power_w", power_problem(power)),
        ("batteries", batteries_problem(batteries)),
        ("request_timeout_s", timeout_problem(timeout)),
        ("reactive_var", None if reactive is None else reactive_problem(reactive)),
    ):
        if problem is not None:
            return bad(field, problem)
    flags = {}
    for field, default in (("adjust_power", True), ("include_broken_batteries", False)):
        value = params.get(field, default)
        if not isinstance(value, bool):
            return bad(field, "true or false")
        flags[field] = value
    return Request(
        power_w=float(power),
        batteries=frozenset(batteries),
        request_timeout_s=float(timeout),
        reactive_var=None if reactive is None else float(reactive),
        **flags,
    )


# --- encoding ------------------------------------------------------------------------------


def _line(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def result_line(request_id: JsonId, result: Any) -> bytes:
    """A JSON-RPC success response."""
    return _line({"jsonrpc": "2.0", "id": request_id, "result": result})


def error_line(failure: Failure) -> bytes:
    """A JSON-RPC error response."""
    error: dict[str, Any] = {"code": int(failure.code), "message": failure.message}
    if failure.data is not None:
        error["data"] = failure.data
    return _line({"jsonrpc": "2.0", "id": failure.id, "error": error})


def notification_line(method: str, params: Mapping[str, Any]) -> bytes:
    """A JSON-RPC notification (no id)."""
    return _line({"jsonrpc": "2.0", "method": method, "params": params})


def request_line(request_id: JsonId, method: str, params: Mapping[str, Any] | None) -> bytes:
    """A JSON-RPC request, as a client sends it; without ``params`` when they are ``None``."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return _line(message)


def _watts(value: float) -> float:
    # -0.0 would print as "-0.0"; and a float, never an int, whatever the arithmetic gave.
    return float(value) + 0.0


def bounds_object(bounds: PowerBounds) -> dict[str, float | None]:
    """Bounds as the protocol writes them (``null`` for an unknown value)."""
    return {
        f"{name}_w": None if math.isnan(v) or math.isinf(v) else _watts(v)
        for name, v in (
            ("inclusion_lower", bounds.inclusion_lower),
            ("exclusion_lower", bounds.exclusion_lower),
            ("exclusion_upper", bounds.exclusion_upper),
            ("inclusion_upper", bounds.inclusion_upper),
        )
    }


def result_object(result: Result) -> dict[str, Any]:
    """A ``set_power`` result as the protocol writes it."""
    request = result.request
    out: dict[str, Any] = {
        "power_w": _watts(request.power_w),
        "batteries": sorted(request.batteries),
    }
    match result:
        case Success() | PartialFailure():
            out["outcome"] = "success" if isinstance(result, Success) else "partial_failure"
            out["succeeded_power_w"] = _watts(result.succeeded_power_w)
            out["succeeded_batteries"] = sorted(result.succeeded_batteries)
            if isinstance(result, PartialFailure):
                out["failed_power_w"] = _watts(result.failed_power_w)
                out["failed_batteries"] = sorted(result.failed_batteries)
            out["excess_power_w"] = _watts(result.excess_power_w)
            out["distribution"] = {
                str(b): _watts(w) for b, w in sorted(result.distribution.items())
            }
            out["reasons"] = {str(b): str(r) for b, r in sorted(result.reasons.items())}
            if result.unused_power_w:
                out["unused_power_w"] = {
                    str(b): _watts(w) for b, w in sorted(result.unused_power_w.items())
                }
                out["compensated_power_w"] = _watts(result.compensated_power_w)
                out["uncompensated_power_w"] = _watts(result.uncompensated_power_w)
            if result.ramping is not None:
                out["ramping"] = {
                    "target_w": _watts(result.ramping["target_w"]),
                    "applied_w": _watts(result.ramping["applied_w"]),
                    "eta_s": result.ramping["eta_s"],
                }
            if result.reactive is not None:
                out["reactive"] = dict(result.reactive)
            if result.bound_limits:
                out["bound_limits"] = list(result.bound_limits)
        case OutOfBounds():
            out["outcome"] = "out_of_bounds"
            out["bounds"] = bounds_object(result.bounds)
            if result.reasons:
                out["reasons"] = {str(b): str(r) for b, r in sorted(result.reasons.items())}
        case Error():
            out["outcome"] = "error"
            out["message"] = result.message
            if result.reasons:
                out["reasons"] = {str(b): str(r) for b, r in sorted(result.reasons.items())}
        case Ignored():
            out["outcome"] = "ignored"
            out["message"] = result.message
        case _:  # pragma: no cover - the union is closed
            assert_never(result)
    if result.arbitration is not None:
        out["arbitration"] = dict(result.arbitration)
    return out
