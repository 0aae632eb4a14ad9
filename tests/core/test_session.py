"""The server session's rules, synchronously: bytes in, lines and decisions out, no socket.

The transport's side (``tests/shell/test_control.py``) shows the same rules over a real Unix
socket; here each rule is shown alone, and properties check the ones that must hold for any
input and any chunking.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.arbitration.arbiter import Ask, Origin
from distributord.core.arbitration.holdings import Batteries
from distributord.core.arbitration.programs import Acting, Limits, NotAllowed
from distributord.core.model import Error, Request, Success, Timing
from distributord.core.protocol import MAX_LINE_BYTES, Code, Failure
from distributord.core.session import (
    INVALID,
    NOT_CONNECTED_MESSAGE,
    Caller,
    Phase,
    Reply,
    Session,
    Verdict,
)


@attrs.define
class FakeBackend:
    """A daemon that answers at once and keeps every request it takes."""

    connected: bool = True
    verdict: Verdict = Verdict.TAKEN
    timeout_s: float = 5.0
    taken: list[tuple[Request, Reply]] = attrs.field(factory=list)
    started: set[int] = attrs.field(factory=set)  # ids of requests being applied
    withdrawn: list[Request] = attrs.field(factory=list)

    def default_timeout_s(self) -> float:
        return self.timeout_s

    refused: list[str] = attrs.field(factory=list)  # commands sent as notifications
    asks: list[Ask] = attrs.field(factory=list)

    def submit(self, ask: Ask, reply: Reply) -> Verdict:
        if self.verdict is Verdict.TAKEN:
            self.taken.append((ask.request, reply))
            self.asks.append(ask)
        return self.verdict

    def hello(self, caller: Caller, program: str) -> Acting | NotAllowed:
        if program == "fcr" and caller.uid in (0, 1000):
            return Acting(program=program, priority=90, limits=Limits())
        return NotAllowed(message=f"not authorised: uid {caller.uid} may not act as {program}")

    def withdraw_proposals(self, origin: Origin, batteries: Batteries | None) -> dict[str, Any]:
        return {"withdrawn": [], "program": origin.program}

    def refused_notification(self, method: str) -> None:
        self.refused.append(method)

    def bounds(self, program: str, batteries: Batteries) -> dict[str, Any] | None:
        return None if 9999 in batteries else {"program": program}

    def leads(self, batteries: Batteries) -> tuple[dict[int, int], list[str]]:
        leads = {b: 1001 if b == 1002 else b for b in batteries}  # 1001 leads 1001 and 1002
        if 1002 in batteries and 1001 not in batteries:
            return leads, ["battery 1002 is in a group with batteries 1001"]
        return leads, []

    def withdraw(self, request: Request) -> bool:
        if id(request) in self.started:
            return False
        self.withdrawn.append(request)
        return True

    def query(self, method: str) -> dict[str, Any]:
        return {"answered": method}

    def answer(self, index: int = 0) -> None:
        """Answer the ``index``-th request taken and not answered yet."""
        request, reply = self.taken.pop(index)
        reply(Error(request=request, message="done"), Timing(total_s=0.0125, commands_s=0.0))


@attrs.define
class Harness:
    backend: FakeBackend
    session: Session
    counted: list[tuple[str, str]]
    wakes: list[None]

    def send(self, *messages: dict[str, Any] | bytes) -> None:
        data = b"".join(
            m if isinstance(m, bytes) else json.dumps(m).encode() + b"\n" for m in messages
        )
        self.session.receive_data(data)

    def written(self) -> list[dict[str, Any]]:
        """Every line the session hands out now, decoded."""
        out = []
        while (line := self.session.next_line()) is not None:
            assert line.endswith(b"\n")
            out.append(json.loads(line))
        return out


def harness(outbox_lines: int = 64, caller: Caller | None = None, **backend: Any) -> Harness:
    fake = FakeBackend(**backend)
    counted: list[tuple[str, str]] = []
    wakes: list[None] = []
    session = Session(
        fake,
        count=lambda method, outcome: counted.append((method, outcome)),
        wake=lambda: wakes.append(None),
        outbox_lines=outbox_lines,
        caller=caller,
    )
    return Harness(fake, session, counted, wakes)


def phase(h: Harness) -> Phase:
    return h.session.phase  # read afresh: mypy would narrow an attribute across calls


def call(method: str, request_id: int | None = 1, **params: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        message["id"] = request_id
    if params:
        message["params"] = params
    return message


def set_power(request_id: int | None = 1, power_w: float = 1000.0) -> dict[str, Any]:
    return call("set_power", request_id, power_w=power_w, batteries=[1001])


# --- lines ----------------------------------------------------------------------------------


def test_a_query_is_answered_by_the_backend_and_counted() -> None:
    h = harness()
    h.send(call("ping", 7))
    assert h.written() == [{"jsonrpc": "2.0", "id": 7, "result": {"answered": "ping"}}]
    assert h.counted == [("ping", "ok")]


def test_a_line_may_arrive_in_pieces_and_blank_lines_are_skipped() -> None:
    h = harness()
    line = json.dumps(call("get_status", 2)).encode() + b"\n"
    h.session.receive_data(b"\n  \n" + line[:5])
    assert h.written() == []
    h.session.receive_data(line[5:])
    assert [r["id"] for r in h.written()] == [2]
    assert h.counted == [("get_status", "ok")]


def test_an_over_long_line_is_answered_once_and_the_next_line_is_read() -> None:
    h = harness()
    h.session.receive_data(b"x" * (MAX_LINE_BYTES + 10))
    h.session.receive_data(b"y" * 100)
    h.send(b"\n", call("ping", 3))
    replies = h.written()
    assert [r.get("error", {}).get("code") for r in replies] == [Code.LINE_TOO_LONG, None]
    assert replies[0]["id"] is None
    assert h.counted == [(INVALID, "line_too_long"), ("ping", "ok")]


def test_malformed_input_is_answered_with_its_error_and_counted_as_invalid() -> None:
    h = harness()
    h.send(b"{not json\n", call("no_such_method", 4), call("ping", 5))
    replies = h.written()
    assert [r.get("error", {}).get("code") for r in replies] == [
        Code.PARSE_ERROR,
        Code.METHOD_NOT_FOUND,
        None,
    ]
    assert h.counted == [
        (INVALID, "parse_error"),
        (INVALID, "method_not_found"),
        ("ping", "ok"),
    ]


def test_a_notification_is_carried_out_and_never_answered() -> None:
    h = harness()
    h.send(call("ping", None), call("get_status", None))
    assert h.written() == []
    assert h.counted == [("ping", "ok"), ("get_status", "ok")]


@pytest.mark.parametrize("method", ["set_power", "propose", "withdraw"])
def test_a_command_sent_as_a_notification_is_not_carried_out(method: str) -> None:
    """Nobody could read its result (``spec/protocol.md``): refused, logged, never answered."""
    h = harness()
    params = {"power_w": 1000.0, "batteries": [1001]} if method != "withdraw" else {}
    h.send(call(method, None, **params))
    assert h.written() == []
    assert h.backend.taken == []
    assert h.backend.refused == [method]
    assert h.counted == [(method, "notification")]


def test_params_on_a_method_that_takes_none_are_refused() -> None:
    h = harness()
    h.send(call("ping", 1, extra=True))
    (reply,) = h.written()
    assert reply["error"]["code"] == Code.INVALID_PARAMS
    assert h.counted == [("ping", "invalid_params")]


# --- the daemon's refusals --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["set_power", "list_components"])
def test_before_the_microgrid_is_reached_commands_get_32004_and_nothing_is_submitted(
    method: str,
) -> None:
    h = harness(connected=False)
    h.send(set_power(1) if method == "set_power" else call(method, 1))
    (reply,) = h.written()
    assert reply["error"] == {"code": Code.NOT_CONNECTED, "message": NOT_CONNECTED_MESSAGE}
    assert h.backend.taken == []
    assert h.counted == [(method, "not_connected")]


@pytest.mark.parametrize("method", ["ping", "get_status", "subscribe_status"])
def test_before_the_microgrid_is_reached_queries_are_answered(method: str) -> None:
    h = harness(connected=False)
    h.send(call(method, 1))
    (reply,) = h.written()
    assert "result" in reply


@pytest.mark.parametrize(
    ("verdict", "code"),
    [(Verdict.QUEUE_FULL, Code.OVERLOADED), (Verdict.STOPPING, Code.SHUTTING_DOWN)],
)
def test_a_set_power_not_taken_is_refused_with_the_daemon_s_reason(
    verdict: Verdict, code: Code
) -> None:
    h = harness(verdict=verdict)
    h.send(set_power(9))
    (reply,) = h.written()
    assert reply["id"] == 9
    assert reply["error"]["code"] == code
    assert h.session.pending == 0
    assert h.counted == [("set_power", code.name.lower())]


def test_invalid_set_power_params_name_the_field_and_nothing_is_submitted() -> None:
    h = harness()
    h.send(call("set_power", 1, power_w="much", batteries=[1001]))
    (reply,) = h.written()
    assert reply["error"]["code"] == Code.INVALID_PARAMS
    assert reply["error"]["data"]["field"] == "power_w"
    assert h.backend.taken == []


def test_the_default_timeout_is_read_for_every_request() -> None:
    h = harness()
    h.send(set_power(1))
    h.backend.timeout_s = 2.5  # a reload
    h.send(set_power(2))
    assert [r.request_timeout_s for r, _ in h.backend.taken] == [5.0, 2.5]


# --- replies ----------------------------------------------------------------------------------


def test_replies_go_out_as_they_are_ready_with_their_timing() -> None:
    h = harness()
    h.send(set_power(1), call("ping", 2))
    assert [r["id"] for r in h.written()] == [2]  # the ping overtakes the set_power
    assert h.session.pending == 1
    h.backend.answer()
    (reply,) = h.written()
    assert reply["id"] == 1
    assert reply["result"]["outcome"] == "error"
    assert reply["result"]["timing"] == {"total_ms": 12.5, "commands_ms": 0.0}
    assert h.counted[-1] == ("set_power", "error")


def test_replies_are_written_before_status_changes() -> None:
    h = harness()
    h.send(call("subscribe_status", 1))
    h.session.status_changed(1001, {"id": 1001})
    h.send(call("ping", 2))
    assert [r.get("id", r.get("method")) for r in h.written()] == [1, 2, "status_changed"]


def test_changes_are_kept_one_per_battery_the_newest_last() -> None:
    h = harness()
    h.send(call("subscribe_status", 1))
    h.written()
    for battery, status in [(1, "a"), (2, "a"), (1, "b")]:
        h.session.status_changed(battery, {"id": battery, "status": status})
    assert [r["params"] for r in h.written()] == [
        {"id": 2, "status": "a"},
        {"id": 1, "status": "b"},
    ]


def test_announcements_go_to_subscribers_the_newest_per_battery_after_the_replies() -> None:
    h = harness()
    h.session.announce("command_failed", {"battery": 1001, "request": None})
    assert h.written() == []  # not subscribed: nothing
    h.send(call("subscribe_status", 1))
    for battery, request in [(1001, 7), (1002, 8), (1001, 9)]:
        h.session.announce("command_failed", {"battery": battery, "request": {"id": request}})
    h.send(call("ping", 2))
    assert [(r.get("id"), r.get("method"), r.get("params")) for r in h.written()] == [
        (1, None, None),
        (2, None, None),
        (None, "command_failed", {"battery": 1002, "request": {"id": 8}}),
        (None, "command_failed", {"battery": 1001, "request": {"id": 9}}),
    ]


def test_a_set_power_carries_its_call_id_to_the_daemon() -> None:
    h = harness()
    h.send({**set_power(), "id": "r-7"})
    (ask,) = h.backend.asks
    assert ask.call_id == "r-7"


def test_no_changes_without_a_subscription() -> None:
    h = harness()
    h.session.status_changed(1, {"id": 1})
    assert h.written() == []


# --- back-pressure ----------------------------------------------------------------------------


def test_a_burst_is_handled_as_the_client_takes_its_replies() -> None:
    h = harness(outbox_lines=2)
    h.send(*(call("ping", i) for i in range(5)))
    assert len(h.counted) == 2  # two answered; three wait, unread
    assert not h.session.wants_data
    ids = []
    while (line := h.session.next_line()) is not None:
        ids.append(json.loads(line)["id"])
    assert ids == [0, 1, 2, 3, 4]
    assert h.session.wants_data


def test_requests_being_applied_count_against_the_outbox() -> None:
    h = harness(outbox_lines=2)
    h.send(set_power(1), set_power(2), call("ping", 3))
    assert h.session.pending == 2
    assert h.written() == []  # the ping waits: two requests fill the outbox
    assert not h.session.wants_data
    h.backend.answer()
    assert [r["id"] for r in h.written()] == [1, 3]


def test_changes_do_not_count_against_the_outbox() -> None:
    h = harness(outbox_lines=1)
    h.send(call("subscribe_status", 1))
    h.written()
    for battery in range(100):
        h.session.status_changed(battery, {"id": battery})
    h.send(call("ping", 2))
    assert [r.get("id") for r in h.written()][:1] == [2]


# --- the end ----------------------------------------------------------------------------------


def test_after_a_half_close_what_was_sent_is_answered_then_the_session_closes() -> None:
    h = harness()
    h.send(set_power(1))
    h.session.receive_data(b"")
    assert h.session.input_ended
    assert not h.session.wants_data
    assert phase(h) is Phase.ANSWERING
    assert not h.session.finished
    h.backend.answer()
    assert phase(h) is Phase.CLOSING
    assert not h.session.finished  # its reply is still to be written
    assert [r["id"] for r in h.written()] == [1]
    assert h.session.finished


def test_a_half_close_with_nothing_pending_closes_at_once() -> None:
    h = harness()
    h.session.receive_data(b"")
    assert h.session.finished


def test_a_client_that_goes_has_its_waiting_requests_withdrawn_not_answered() -> None:
    h = harness()
    h.send(set_power(1), set_power(2, power_w=2000.0))
    applying, _ = h.backend.taken[0]
    h.backend.started.add(id(applying))
    h.session.gone()
    assert [r.power_w for r in h.backend.withdrawn] == [2000.0]
    assert phase(h) is Phase.CLOSED
    assert h.session.finished
    h.backend.answer()  # the one applying completes: nobody to tell
    assert h.written() == []
    assert h.counted == [("set_power", "withdrawn"), ("set_power", "error")]


def test_a_stop_writes_what_waits_and_reads_no_more() -> None:
    h = harness()
    h.send(call("ping", 1))
    h.session.close()
    assert not h.session.wants_data
    h.send(call("ping", 2))
    assert [r["id"] for r in h.written()] == [1]
    assert h.session.finished


def test_a_client_that_stalls_is_cut_off_with_nothing_more_written() -> None:
    h = harness()
    h.send(call("ping", 1), call("ping", 2))
    h.session.stalled()
    assert h.session.finished
    assert h.written() == []


REVOKED = Failure(id=None, code=Code.NOT_AUTHORISED, message="no longer allowed")


def test_revoking_withdraws_drops_and_writes_the_error_line_last() -> None:
    h = harness()
    h.send(call("subscribe_status", 1), set_power(2), set_power(3, power_w=5.0))
    h.session.status_changed(7, {"id": 7})
    applying, _ = h.backend.taken[0]
    h.backend.started.add(id(applying))
    h.session.revoke(REVOKED)
    assert [r.power_w for r in h.backend.withdrawn] == [5.0]
    h.send(call("ping", 4))  # read only to see the EOF: not a request any more
    h.backend.answer()  # the one applying completes, unanswered
    assert h.written() == [
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32003, "message": "no longer allowed"}}
    ]
    assert h.session.finished
    assert h.session.wants_data  # until the client's EOF
    h.session.receive_data(b"")
    assert h.session.input_ended
    assert ("ping", "ok") not in h.counted[1:]


def test_the_transport_is_woken_for_every_line_it_may_write() -> None:
    h = harness()
    h.send(set_power(1))
    before = len(h.wakes)
    h.backend.answer()
    assert len(h.wakes) > before


# --- properties -------------------------------------------------------------------------------

MESSAGES = st.lists(
    st.one_of(
        st.builds(call, st.sampled_from(["ping", "get_status", "bogus"]), st.integers(0, 99)),
        st.builds(set_power, st.integers(0, 99), st.floats(-1e4, 1e4)),
        st.just(b"not json\n"),
        st.just(b"\n"),
    ),
    max_size=30,
)


def run_through(
    messages: list[dict[str, Any] | bytes], cuts: list[int], outbox_lines: int, answer_every: int
) -> tuple[list[bytes], Harness]:
    """Feed the messages in pieces cut at ``cuts``, reading like a transport; the lines out."""
    h = harness(outbox_lines=outbox_lines)
    data = b"".join(m if isinstance(m, bytes) else json.dumps(m).encode() + b"\n" for m in messages)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    out: list[bytes] = []
    steps = 0
    while pieces or h.session.pending or not h.session.wants_data:
        steps += 1
        assert steps < 10_000, "the session made no progress"
        assert h.session.outbox <= outbox_lines
        if h.session.wants_data and pieces:
            h.session.receive_data(pieces.pop(0))
        elif h.backend.taken and steps % answer_every == 0:
            h.backend.answer()
        elif (line := h.session.next_line()) is not None:
            out.append(line)
        elif h.backend.taken:
            h.backend.answer()
        else:
            break
    out.extend(iter(h.session.next_line, None))
    return out, h


@given(
    messages=MESSAGES,
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
    outbox_lines=st.integers(1, 5),
    answer_every=st.integers(1, 4),
)
def test_every_request_is_answered_once_whatever_the_chunking_and_the_outbox(
    messages: list[dict[str, Any] | bytes], cuts: list[int], outbox_lines: int, answer_every: int
) -> None:
    out, h = run_through(messages, cuts, outbox_lines, answer_every)
    expected = sum(1 for m in messages if m != b"\n")
    assert len(out) == expected
    assert len(h.counted) == expected
    # Each request's reply carries its id, the same multiset whatever the order.
    ids = sorted(str(m["id"]) for m in messages if isinstance(m, dict))
    replies = [json.loads(line) for line in out]
    assert sorted(str(r["id"]) for r in replies if r["id"] is not None) == ids


@given(messages=MESSAGES, cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_the_chunking_does_not_change_what_is_answered(
    messages: list[dict[str, Any] | bytes], cuts: list[int]
) -> None:
    whole, _ = run_through(messages, [], 64, 1)
    pieces, _ = run_through(messages, cuts, 64, 1)
    assert whole == pieces


def test_the_property_can_fail() -> None:
    # A session that answered nothing would make the properties above vacuous.
    out, _ = run_through([call("ping", 1)], [], 1, 1)
    assert len(out) == 1


# --- arbitration's methods ----------------------------------------------------------------


def test_without_hello_a_connection_acts_as_default_with_its_peer() -> None:
    h = harness(caller=Caller(pid=42, uid=1000, gid=1000))
    h.send(set_power(1))
    (ask,) = h.backend.asks
    assert (ask.origin.program, ask.origin.uid, ask.origin.pid) == ("default", 1000, 42)
    assert ask.origin.connection is h.session
    assert not ask.proposed
    assert ask.power_w == 1000.0
    assert ask.lower_w is None


def test_hello_binds_the_program_to_later_proposals() -> None:
    h = harness(caller=Caller(pid=42, uid=1000, gid=1000))
    h.send(call("hello", 1, program="fcr"), call("propose", 2, power_w=-5.0, batteries=[1, 2]))
    (reply,) = h.written()
    assert reply["result"] == {
        "program": "fcr",
        "priority": 90,
        "limits": {"max_discharge_w": None, "max_charge_w": None, "batteries": None},
    }
    (ask,) = h.backend.asks
    assert ask.origin.program == "fcr"
    assert ask.proposed
    assert ask.power_w == -5.0


def test_a_refused_hello_is_32003_and_the_connection_goes_on_as_default() -> None:
    h = harness(caller=Caller(uid=2000))
    h.send(call("hello", 1, program="fcr"), call("ping", 2))
    refusal, pong = h.written()
    assert refusal["error"]["code"] == Code.NOT_AUTHORISED
    assert "uid 2000" in refusal["error"]["message"]
    assert pong["result"] == {"answered": "ping"}
    assert h.session.program == "default"
    assert phase(h) is Phase.OPEN


def test_hello_after_a_proposal_is_refused_naming_the_program_acted_as() -> None:
    h = harness(caller=Caller(uid=1000))
    h.send(set_power(1), call("hello", 2, program="fcr"))
    (refusal,) = h.written()
    assert refusal["error"]["code"] == Code.INVALID_PARAMS
    assert refusal["error"]["data"]["field"] == "program"
    assert "'default'" in refusal["error"]["data"]["expected"]
    assert h.session.program == "default"


def test_set_power_without_adjustment_pins_the_proposal_bounds() -> None:
    h = harness()
    h.send(call("set_power", 1, power_w=500.0, batteries=[1001], adjust_power=False))
    (ask,) = h.backend.asks
    assert (ask.power_w, ask.lower_w, ask.upper_w) == (500.0, 500.0, 500.0)


def test_a_limiter_is_a_proposal_without_power() -> None:
    h = harness()
    h.send(call("propose", 1, lower_w=-10.0, upper_w=10.0, batteries=[1], ttl_s=5))
    (ask,) = h.backend.asks
    assert ask.power_w is None
    assert (ask.lower_w, ask.upper_w, ask.ttl_s) == (-10.0, 10.0, 5.0)


def test_bad_propose_params_name_the_field_and_take_nothing() -> None:
    h = harness()
    h.send(call("propose", 1, batteries=[1]))
    (reply,) = h.written()
    assert reply["error"]["code"] == Code.INVALID_PARAMS
    assert h.backend.asks == []


def test_withdraw_is_answered_by_the_backend_for_the_program() -> None:
    h = harness()
    h.send(call("withdraw", 1))
    (reply,) = h.written()
    assert reply["result"] == {"withdrawn": [], "program": "default"}


def test_subscribe_bounds_on_an_unknown_battery_is_refused_naming_the_field() -> None:
    h = harness()
    h.send(call("subscribe_bounds", 1, batteries=[1, 9999]))
    (reply,) = h.written()
    assert reply["error"]["code"] == Code.INVALID_PARAMS
    assert reply["error"]["data"]["field"] == "batteries"
    assert h.session.bounds == set()


def test_subscribe_bounds_records_the_set() -> None:
    h = harness()
    h.send(call("subscribe_bounds", 1, batteries=[2, 1]))
    (reply,) = h.written()
    assert reply["result"] == {"subscribed": True}
    assert h.session.bounds == {frozenset({1, 2})}


@pytest.mark.parametrize("method", ["propose", "withdraw", "get_proposals", "subscribe_bounds"])
def test_arbitration_methods_wait_for_the_microgrid(method: str) -> None:
    h = harness(connected=False)
    params = {"power_w": 1.0, "batteries": [1]} if method == "propose" else {}
    h.send(call(method, 1, **params))
    (reply,) = h.written()
    assert reply["error"]["code"] == Code.NOT_CONNECTED


def test_notifications_coalesce_per_method_and_set_after_the_replies() -> None:
    h = harness()
    h.session.notify("proposal_changed", {"batteries": [1], "granted_w": 1.0, "reasons": []})
    h.session.notify("proposal_changed", {"batteries": [2], "granted_w": 5.0, "reasons": []})
    h.session.notify("proposal_changed", {"batteries": [1], "granted_w": 2.0, "reasons": []})
    h.send(call("ping", 1))
    written = h.written()
    assert [m.get("method") for m in written] == [None, "proposal_changed", "proposal_changed"]
    assert [m["params"]["granted_w"] for m in written[1:]] == [5.0, 2.0]


def test_a_closing_session_writes_its_notifications_first() -> None:
    h = harness()
    h.session.notify("proposal_ended", {"batteries": [1], "why": "expired"})
    h.session.close()
    assert not h.session.finished
    assert [m["method"] for m in h.written()] == ["proposal_ended"]
    assert h.session.finished


def test_a_program_the_peer_may_no_longer_act_as_is_refused_at_each_proposal() -> None:
    # A reload took the peer out of the program (the fake allows fcr to uids 0 and 1000 only).
    h = harness(caller=Caller(uid=1000))
    h.send(call("hello", 1, program="fcr"))
    h.written()
    h.session.caller = Caller(uid=3000)  # as if the configuration had changed
    h.send(
        call("propose", 2, power_w=1.0, batteries=[1]),
        call("withdraw", 3),
        call("set_power", 4, power_w=0.0, batteries=[1]),
    )
    propose, withdraw = h.written()
    assert propose["error"]["code"] == Code.NOT_AUTHORISED
    assert "(the configuration changed)" in propose["error"]["message"]
    # Letting go is always allowed: the withdrawal and the release at 0 W are taken.
    assert withdraw["result"]["withdrawn"] == []
    (release,) = h.backend.asks
    assert release.releases


# --- N:M groups (issue 25) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("set_power", {"power_w": 500.0}),
        ("propose", {"power_w": 500.0}),
        ("subscribe_bounds", {}),
        ("withdraw", {}),
    ],
)
def test_a_group_named_in_part_is_refused_by_name_and_nothing_is_done(
    method: str, params: dict[str, Any]
) -> None:
    h = harness()
    h.send(call(method, 1, batteries=[1002, 7], **params))
    (reply,) = h.written()
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"] == {
        "field": "batteries",
        "expected": "whole battery groups: battery 1002 is in a group with batteries 1001",
    }
    assert h.backend.asks == []


def test_a_whole_group_is_asked_for_by_its_lead() -> None:
    h = harness()
    h.send(call("set_power", 1, power_w=500.0, batteries=[1001, 1002, 7]))
    h.send(call("propose", 2, power_w=500.0, batteries=[1002, 1001]))
    first, second = h.backend.asks
    assert first.request.batteries == frozenset({1001, 7})
    assert second.batteries == frozenset({1001})


def test_a_groups_result_echoes_every_battery_named_and_says_each_succeeded() -> None:
    h = harness()
    h.send(call("set_power", 1, power_w=500.0, batteries=[1002, 1001, 7]))
    request, reply = h.backend.taken.pop()
    assert request.batteries == frozenset({1001, 7})  # the daemon is asked for the leads
    result = Success(
        request=request,
        succeeded_power_w=500.0,
        succeeded_batteries=frozenset({1001}),
        excess_power_w=0.0,
        distribution={1001: 500.0, 7: 0.0},
    )
    reply(result, Timing(total_s=0.0, commands_s=0.0))
    (answer,) = h.written()
    assert answer["result"]["batteries"] == [7, 1001, 1002]
    assert answer["result"]["succeeded_batteries"] == [1001, 1002]
    assert answer["result"]["distribution"] == {"1001": 500.0, "7": 0.0}  # one per group
