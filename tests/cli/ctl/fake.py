"""A stand-in for distributord on a real Unix socket, and the results it answers with.

The fake reads request lines and answers each from a script (echoing the request's id), so a
test sees both sides: what the client sent and what it printed, and its exit code. Every socket
operation on either side has a timeout, so a broken client fails a test instead of hanging it.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distributord.cli import ctl
from distributord.core.arbitration.holdings import Proposal
from distributord.core.arbitration.merge import Bid, merge
from distributord.core.arbitration.wire import arbitration_object, proposal_entry, withdrawn_object
from distributord.core.model import PowerBounds

IO_TIMEOUT_S = 10.0
"""Bound on every socket operation in the tests: far above any real exchange here."""

Message = dict[str, Any]


class HangUp:
    """In an answer: close the connection here."""


HANG_UP = HangUp()
Outgoing = Message | bytes | HangUp
Answer = Callable[[Message], Sequence[Outgoing]]


class FakeDaemon:
    """distributord's stand-in: serves connections one after another, answering from a script.

    ``answers[method]`` returns what to send for a request (messages, raw bytes, ``HANG_UP``).
    A method without an answer gets the connection closed, so a test that forgot one fails
    quickly with exit 3.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, Answer] = {}
        self.requests: list[Message] = []
        self._stopping = False
        self._errors: list[BaseException] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen()
        self._listener.settimeout(IO_TIMEOUT_S)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as waker:  # ends accept()
            waker.settimeout(IO_TIMEOUT_S)
            waker.connect(str(self.path))
        self._thread.join(IO_TIMEOUT_S)
        self._listener.close()
        assert not self._thread.is_alive(), "the fake daemon did not stop"
        if self._errors:
            raise self._errors[0]

    def _serve(self) -> None:
        try:
            while True:
                connection, _ = self._listener.accept()
                with connection:
                    if self._stopping:
                        return
                    self._converse(connection)
        except BaseException as error:  # re-raised in the test's thread by stop()
            self._errors.append(error)

    def _converse(self, connection: socket.socket) -> None:
        connection.settimeout(IO_TIMEOUT_S)
        buffer = b""
        try:
            while chunk := connection.recv(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    request = json.loads(line)
                    self.requests.append(request)
                    answer = self.answers.get(request.get("method"), hang_up)
                    for item in answer(request):
                        if isinstance(item, HangUp):
                            return
                        data = item if isinstance(item, bytes) else json.dumps(item).encode()
                        connection.sendall(data if isinstance(item, bytes) else data + b"\n")
        except (BrokenPipeError, ConnectionResetError):  # the client left first: its right
            pass


def hang_up(request: Message) -> list[Outgoing]:
    return [HANG_UP]


def reply(result: Any) -> Answer:
    return lambda request: [{"jsonrpc": "2.0", "id": request["id"], "result": result}]


def error_reply(code: int, message: str, data: Any = None) -> Answer:
    error: Message = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return lambda request: [{"jsonrpc": "2.0", "id": request["id"], "error": error}]


def status_changed(battery: int, status: str, reasons: list[str]) -> Message:
    return {
        "jsonrpc": "2.0",
        "method": "status_changed",
        "params": {"id": battery, "status": status, "reasons": reasons},
    }


def run(daemon: FakeDaemon, *argv: str) -> int:
    return ctl.main(["--socket", str(daemon.path), *argv])


def hello_reply(priority: int = 50) -> Answer:
    """``hello``'s result (``{program, priority, limits}``) for whichever program was named."""
    return lambda request: [
        {
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {
                "program": request["params"]["program"],
                "priority": priority,
                "limits": {"max_charge_w": None, "max_discharge_w": None, "batteries": None},
            },
        }
    ]


def only_request(daemon: FakeDaemon) -> Message:
    assert len(daemon.requests) == 1
    request = daemon.requests[0]
    assert request["jsonrpc"] == "2.0"
    assert isinstance(request["id"], int)
    return request


# --- results the fake answers with ----------------------------------------------------------

STATUS = {
    "batteries": [
        {
            "id": 1001,
            "inverter_id": 2001,
            "status": "working",
            "reasons": [],
            "soc_pct": 55.04,
            "capacity_wh": 10000.0,
            "bounds": {
                "inclusion_lower_w": -5000.0,
                "exclusion_lower_w": 0.0,
                "exclusion_upper_w": 0.0,
                "inclusion_upper_w": 5000.0,
            },
            "setpoint_w": -2500.0,
            "data_age_s": 0.25,
        },
        {
            "id": 1002,
            "inverter_id": 2002,
            "status": "uncertain",
            "reasons": ["blocked_after_failure"],
            "blocked_until_s": 3.0,
            "soc_pct": 60.0,
            "setpoint_w": 0.0,
            "data_age_s": 0.5,
        },
        {
            "id": 1003,
            "inverter_id": 2003,
            "status": "not_working",
            "reasons": ["stale_battery_data", "inverter_error_state"],
            "data_age_s": 75.0,
        },
    ],
    "working": [1001],
    "uncertain": [1002],
}


COMPONENTS = {
    "pairs": [{"battery_id": 1001, "inverter_id": 2001}, {"battery_id": 1002, "inverter_id": 2002}],
    "left_out": [{"battery_id": 1005, "reason": "no inverter is connected to it"}],
}


SUCCESS = {
    "outcome": "success",
    "power_w": -5000.0,
    "batteries": [1001, 1002],
    "succeeded_power_w": -5000.0,
    "succeeded_batteries": [1001, 1002],
    "excess_power_w": 0.0,
    "distribution": {"1001": -2500.0, "1002": -2500.0},
    "reasons": {"1001": "proportional", "1002": "proportional"},
}


PARTIAL_FAILURE = {
    "outcome": "partial_failure",
    "power_w": -12000.0,
    "batteries": [1001, 1002, 1003],
    "succeeded_power_w": -5000.0,
    "succeeded_batteries": [1001],
    "failed_power_w": -5000.0,
    "failed_batteries": [1002],
    "excess_power_w": -2000.0,
    "distribution": {"1001": -5000.0, "1002": -5000.0},
    "reasons": {"1001": "capped", "1002": "capped"},
}


OUT_OF_BOUNDS = {
    "outcome": "out_of_bounds",
    "power_w": -50000.0,
    "batteries": [1001, 1002],
    "bounds": {
        "inclusion_lower_w": -20000.0,
        "exclusion_lower_w": -1000.0,
        "exclusion_upper_w": 1000.0,
        "inclusion_upper_w": 20000.0,
    },
}


ERROR = {
    "outcome": "error",
    "power_w": -5000.0,
    "batteries": [1001, 9999],
    "message": "unknown batteries 9999; known: 1001, 1002, 1003",
}


IGNORED = {
    "outcome": "ignored",
    "power_w": -5000.0,
    "batteries": [1001, 1002],
    "message": "superseded by a newer request for the same batteries",
}


# --- arbitration's results, made by the daemon's own encoders (core.arbitration.wire) -------
# so that a key renamed there fails these tests rather than only the real daemon's users.

_BUCKET_BOUNDS = PowerBounds(
    inclusion_lower=-20000.0, exclusion_lower=0.0, exclusion_upper=0.0, inclusion_upper=20000.0
)
# fcr (priority 90) limits the set to [-8, 0] kW; trading (50) asks -12 kW and gets -8 kW.
_MERGE = merge(
    _BUCKET_BOUNDS,
    [
        Bid(program="fcr", priority=90, sequence=1, lower_w=-8000.0, upper_w=0.0),
        Bid(program="trading", priority=50, sequence=2, power_w=-12000.0),
    ],
)
ARBITRATION = arbitration_object(
    next(grant for grant in _MERGE.grants if grant.bid.program == "trading"), _MERGE
)

PROPOSED = {
    **SUCCESS,
    "power_w": -12000.0,
    "succeeded_power_w": -8000.0,
    "excess_power_w": -4000.0,
    "distribution": {"1001": -4000.0, "1002": -4000.0},
    "arbitration": ARBITRATION,
}
"""``propose``'s result: the ``set_power`` result plus ``arbitration``."""

_NOW = 1000.0


def _entry(granted_w: float | None, held: set[int], **proposal: Any) -> Message:
    made = Proposal(connection="c", sequence=0, **proposal)
    return proposal_entry(made, now=_NOW, granted_w=granted_w, held=frozenset(held))


PROPOSALS = {
    "proposals": [
        _entry(  # the daemon's order is not by priority: the table sorts
            3000.0,
            {1003, 1004, 1005},
            program="peak",
            priority=20,
            batteries=frozenset({1002, 1003, 1004, 1005}),
            power_w=5000.0,
            until_disconnect=True,
            created_at=_NOW - 2.0,
        ),
        _entry(
            0.0,
            {1001, 1002},
            program="fcr",
            priority=90,
            batteries=frozenset({1001, 1002}),
            lower_w=-8000.0,
            upper_w=0.0,
            created_at=_NOW - 3725.0,
        ),
        _entry(
            -8000.0,
            {1001, 1002},
            program="trading",
            priority=50,
            batteries=frozenset({1001, 1002}),
            power_w=-12000.0,
            ttl_s=300.0,
            created_at=_NOW - 12.5,
        ),
        _entry(
            None,
            set(),
            program="default",
            priority=0,
            batteries=frozenset({1001}),
            power_w=1000.0,
            ttl_s=60.0,
            until_disconnect=True,
            created_at=_NOW - 0.5,
        ),
    ]
}
"""``get_proposals``' result: who holds what (``distributorctl proposals``)."""

WITHDRAWN = withdrawn_object([frozenset({1003, 1001, 1002}), frozenset({1005})])
"""``withdraw``'s result: ``{"withdrawn": [[1001, 1002, 1003], [1005]]}``."""
