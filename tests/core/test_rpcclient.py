"""The client's rules without a socket: ids, framing, which replies are ours, what is kept."""

from __future__ import annotations

import json
from typing import Any

import pytest

from distributord.core.errors import BadReplyError, DaemonError, UnreachableError
from distributord.core.rpcclient import MAX_REPLY_LINE_BYTES, Message, RpcClient, result_of


def got(message: Message | None) -> Message:
    """A message that must be there."""
    assert message is not None, "the client asks for more data"
    return message


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def reply(request_id: Any, result: Any) -> bytes:
    return line({"jsonrpc": "2.0", "id": request_id, "result": result})


def error(request_id: Any, code: int, message: str, **data: Any) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message}
    if data:
        body["data"] = data
    return line({"jsonrpc": "2.0", "id": request_id, "error": body})


def notification(battery: int) -> bytes:
    return line({"jsonrpc": "2.0", "method": "status_changed", "params": {"id": battery}})


def test_requests_get_fresh_ids_one_line_each() -> None:
    client = RpcClient()
    first, first_line = client.request("ping")
    second, second_line = client.request("set_power", {"power_w": -5000.0, "batteries": [1, 2]})
    assert (first, second) == (1, 2)
    assert first_line == b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
    assert second_line.endswith(b"\n")
    assert second_line.count(b"\n") == 1
    assert json.loads(second_line) == {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "set_power",
        "params": {"power_w": -5000.0, "batteries": [1, 2]},
    }


def test_nothing_received_means_feed_more() -> None:
    client = RpcClient()
    request_id, _ = client.request("ping")
    assert client.reply_to(request_id) is None
    assert client.next_message() is None


def test_a_reply_split_across_feeds() -> None:
    client = RpcClient()
    request_id, _ = client.request("ping")
    data = reply(request_id, {"version": "0.1.0"})
    client.receive_data(data[:10])
    assert client.reply_to(request_id) is None
    client.receive_data(data[10:-1])
    assert client.reply_to(request_id) is None  # no newline yet
    client.receive_data(data[-1:])
    assert client.reply_to(request_id) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"version": "0.1.0"},
    }
    assert client.next_message() is None


def test_several_lines_in_one_feed() -> None:
    client = RpcClient()
    one, _ = client.request("ping")
    two, _ = client.request("get_status")
    client.receive_data(reply(one, "a") + b"\n" + reply(two, "b") + notification(7))
    assert result_of(got(client.reply_to(one))) == "a"
    assert result_of(got(client.reply_to(two))) == "b"  # the empty line between is skipped
    assert client.next_message() == json.loads(notification(7))
    assert client.next_message() is None


def test_notifications_are_kept_in_order_for_later() -> None:
    client = RpcClient()
    request_id, _ = client.request("subscribe_status")
    client.receive_data(notification(1) + notification(2) + reply(request_id, {"subscribed": True}))
    assert client.reply_to(request_id) == json.loads(reply(request_id, {"subscribed": True}))
    kept = [got(client.next_message()), got(client.next_message())]
    assert [message["params"]["id"] for message in kept] == [1, 2]
    assert client.next_message() is None


def test_replies_out_of_order() -> None:
    client = RpcClient()
    first, _ = client.request("set_power", {"power_w": 1.0, "batteries": [1]})
    second, _ = client.request("set_power", {"power_w": 1.0, "batteries": [2]})
    client.receive_data(reply(second, "second") + notification(9) + reply(first, "first"))
    assert result_of(got(client.reply_to(first))) == "first"
    # What arrived before it is still there, in arrival order.
    assert result_of(got(client.next_message())) == "second"
    assert got(client.next_message())["method"] == "status_changed"
    assert client.reply_to(second) is None


def test_a_kept_reply_is_found_later() -> None:
    client = RpcClient()
    first, _ = client.request("ping")
    second, _ = client.request("ping")
    client.receive_data(reply(second, "second") + reply(first, "first"))
    assert result_of(got(client.reply_to(first))) == "first"
    assert result_of(got(client.reply_to(second))) == "second"
    assert client.next_message() is None


def test_a_superseding_reply_drops_the_notifications_that_came_before_it() -> None:
    # `watch`: the status reply is newer than the changes that arrived before it.
    client = RpcClient()
    other, _ = client.request("ping")
    status, _ = client.request("get_status")
    client.receive_data(notification(1) + reply(other, "pong") + notification(2))
    client.receive_data(reply(status, "snapshot") + notification(3))
    assert result_of(got(client.reply_to(status, superseding=True))) == "snapshot"
    assert result_of(got(client.next_message())) == "pong"  # a reply: kept
    assert got(client.next_message())["params"] == {"id": 3}  # after the snapshot: kept
    assert client.next_message() is None


def test_a_superseding_reply_found_among_those_kept_drops_only_what_came_before_it() -> None:
    client = RpcClient()
    first, _ = client.request("ping")
    status, _ = client.request("get_status")
    client.receive_data(
        notification(1) + reply(status, "snapshot") + notification(2) + reply(first, "pong")
    )
    assert result_of(got(client.reply_to(first))) == "pong"  # the snapshot is kept meanwhile
    assert result_of(got(client.reply_to(status, superseding=True))) == "snapshot"
    assert got(client.next_message())["params"] == {"id": 2}
    assert client.next_message() is None


def test_an_error_reply_raises_daemon_error_with_its_parts() -> None:
    client = RpcClient()
    request_id, _ = client.request("set_power", {"power_w": 1.0, "batteries": [1, 1]})
    client.receive_data(error(request_id, -32602, "invalid params", field="batteries"))
    answer = got(client.reply_to(request_id))
    with pytest.raises(DaemonError) as raised:
        result_of(answer)
    assert (raised.value.code, raised.value.message) == (-32602, "invalid params")
    assert raised.value.data == {"field": "batteries"}
    assert str(raised.value) == (
        'distributord answered error -32602: invalid params ({"field": "batteries"})'
    )


def test_a_null_id_error_answers_the_only_outstanding_request() -> None:
    client = RpcClient()
    request_id, _ = client.request("ping")
    client.receive_data(error(None, -32700, "parse error"))
    answer = got(client.reply_to(request_id))
    with pytest.raises(DaemonError, match="-32700: parse error"):
        result_of(answer)


def test_a_null_id_error_is_nobodys_while_several_are_outstanding() -> None:
    client = RpcClient()
    first, _ = client.request("ping")
    second, _ = client.request("ping")
    client.receive_data(error(None, -32700, "parse error") + reply(second, "pong"))
    assert client.reply_to(first) is None
    assert result_of(got(client.reply_to(second))) == "pong"
    # Now the first is the only one outstanding, but the error came while it was not: kept.
    assert got(client.next_message())["error"]["code"] == -32700


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not json\n", "distributord sent a line that is not JSON: b'this is not json'"),
        (b"\xff\xfe\n", "a line that is not JSON"),
        (b"[1, 2]\n", "distributord sent JSON that is not an object: b'[1, 2]'"),
        # Python's json reads these; JSON has no such numbers (found in review).
        (b'{"jsonrpc":"2.0","id":1,"result":{"uptime_s":NaN}}\n', "a line that is not JSON"),
        (b'{"jsonrpc":"2.0","id":1,"result":-Infinity}\n', "a line that is not JSON"),
    ],
)
def test_malformed_lines_are_bad_replies(data: bytes, message: str) -> None:
    client = RpcClient()
    request_id, _ = client.request("ping")
    client.receive_data(data)
    with pytest.raises(BadReplyError) as raised:
        client.reply_to(request_id)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"jsonrpc": "2.0", "id": 1}, "distributord sent a reply with neither result nor error"),
        (
            {"jsonrpc": "2.0", "id": 1, "error": "oops"},
            "distributord sent a malformed error: 'oops'",
        ),
    ],
)
def test_malformed_replies_are_bad_replies(answer: dict[str, Any], message: str) -> None:
    client = RpcClient()
    request_id, _ = client.request("ping")
    client.receive_data(line(answer))
    taken = client.reply_to(request_id)
    assert taken == answer
    with pytest.raises(BadReplyError) as raised:
        result_of(taken)
    assert str(raised.value) == message


def test_a_bad_line_after_the_reply_does_not_spoil_it() -> None:
    client = RpcClient()
    request_id, _ = client.request("ping")
    client.receive_data(reply(request_id, "pong") + b"garbage\n")
    assert result_of(got(client.reply_to(request_id))) == "pong"
    with pytest.raises(BadReplyError):
        client.next_message()


def test_a_line_over_the_limit_is_a_bad_reply_naming_the_peer() -> None:
    client = RpcClient(peer="distributord at /x.sock", limit=64)
    request_id, _ = client.request("ping")
    client.receive_data(b'{"jsonrpc": "2.0", "id": 1, "result": "' + b"a" * 64)  # no newline yet
    with pytest.raises(BadReplyError) as raised:
        client.reply_to(request_id)
    assert str(raised.value) == "distributord at /x.sock sent a line longer than 64 bytes"
    # The rest of that line is discarded; the lines after it are read as usual.
    client.receive_data(b'aaa"}\n' + reply(request_id, "pong"))
    assert result_of(got(client.reply_to(request_id))) == "pong"


def test_the_default_limit_takes_a_long_line() -> None:
    client = RpcClient()
    request_id, _ = client.request("get_status")
    long = "a" * (MAX_REPLY_LINE_BYTES // 2)  # far beyond the daemon's 64 KiB for requests
    client.receive_data(reply(request_id, long))
    assert result_of(got(client.reply_to(request_id))) == long


def test_eof_mid_line_is_a_closed_connection_not_a_bad_line() -> None:
    client = RpcClient(peer="distributord at /x.sock")
    request_id, _ = client.request("ping")
    client.receive_data(reply(request_id, "pong")[:-5])
    client.receive_data(b"")
    with pytest.raises(UnreachableError) as raised:
        client.reply_to(request_id)
    assert str(raised.value) == "distributord at /x.sock closed the connection"


def test_what_came_before_eof_is_still_delivered() -> None:
    client = RpcClient()
    request_id, _ = client.request("subscribe_status")
    client.receive_data(reply(request_id, {"subscribed": True}) + notification(3))
    client.receive_data(b"")
    assert client.reply_to(request_id) is not None
    assert got(client.next_message())["params"] == {"id": 3}
    with pytest.raises(UnreachableError, match=r"^distributord closed the connection$"):
        client.next_message()


def test_eof_before_the_reply_raises_even_with_messages_kept() -> None:
    client = RpcClient()
    request_id, _ = client.request("ping")
    client.receive_data(notification(1))
    client.receive_data(b"")
    with pytest.raises(UnreachableError):
        client.reply_to(request_id)
    assert got(client.next_message())["params"] == {"id": 1}


# --- what the client library needs: notifications by kind, what nobody follows, abandoning ---


def bounds_note(batteries: list[int]) -> bytes:
    return line({"jsonrpc": "2.0", "method": "bounds_changed", "params": {"batteries": batteries}})


def test_a_notification_is_taken_by_kind_leaving_replies_and_others() -> None:
    client = RpcClient()
    request_id, _ = client.request("ping")
    client.receive_data(notification(1) + reply(request_id, "pong") + bounds_note([1]))
    taken = got(client.notification(lambda m: m["method"] == "bounds_changed"))
    assert taken["params"] == {"batteries": [1]}
    assert client.notification(lambda m: m["method"] == "bounds_changed") is None
    assert got(client.reply_to(request_id))["result"] == "pong"
    assert got(client.next_message())["method"] == "status_changed"


def test_notifications_nobody_follows_are_dropped_as_they_are_read() -> None:
    followed = {"status_changed"}
    client = RpcClient(follows=lambda method: method in followed)
    request_id, _ = client.request("ping")
    client.receive_data(bounds_note([1]) + notification(1) + reply(request_id, "pong"))
    assert got(client.reply_to(request_id))["result"] == "pong"
    assert got(client.next_message())["method"] == "status_changed"
    assert client.next_message() is None  # bounds_changed was not followed: not kept


@pytest.mark.parametrize("drop_strays", [True, False])
def test_a_reply_nobody_waits_for_is_dropped_when_asked(drop_strays: bool) -> None:
    # Found in review: a reply to an id never sent, or answered already, stayed for ever.
    client = RpcClient(drop_strays=drop_strays)
    request_id, _ = client.request("ping")
    client.receive_data(reply(request_id, "pong"))
    assert got(client.reply_to(request_id))["result"] == "pong"
    client.receive_data(reply(request_id, "again") + reply(request_id + 7, "never asked"))
    if drop_strays:
        assert client.next_message() is None
    else:  # a client that writes lines of its own takes them as they come
        assert got(client.next_message())["result"] == "again"
        assert got(client.next_message())["result"] == "never asked"


def test_an_abandoned_request_leaves_nothing_behind_whenever_its_reply_comes() -> None:
    client = RpcClient()
    early, _ = client.request("ping")
    late, _ = client.request("ping")
    third, _ = client.request("ping")
    client.receive_data(reply(early, "early"))
    assert client.reply_to(third) is None  # decodes the early reply and keeps it
    client.abandon(early)  # its reply had arrived: dropped now
    client.abandon(late)  # its reply comes later: dropped when it does
    client.receive_data(reply(late, "late") + reply(third, "third"))
    assert got(client.next_message())["result"] == "third"
    assert client.next_message() is None


def test_an_abandoned_request_no_longer_counts_for_a_null_id_error() -> None:
    # With the abandoned request forgotten, the one left outstanding owns a parse error again.
    client = RpcClient()
    abandoned, _ = client.request("ping")
    waiting, _ = client.request("ping")
    client.abandon(abandoned)
    client.receive_data(error(None, -32700, "parse error"))
    assert got(client.reply_to(waiting))["error"]["code"] == -32700
