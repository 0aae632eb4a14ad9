"""The trio face moves bytes both ways; the rules are RpcClient's (tests/core)."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from distributord.client import StatusChange
from distributord.client.trio import Client
from distributord.core.errors import DaemonError, UnreachableError


async def read_line(stream: trio.abc.Stream) -> dict[str, object]:
    data = b""
    while not data.endswith(b"\n"):
        data += await stream.receive_some(1)
    message = json.loads(data)
    assert isinstance(message, dict)
    return message


def line(**message: object) -> bytes:
    return json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n"


async def test_a_request_goes_out_as_one_line_and_its_result_comes_back() -> None:
    ours, daemon = trio.testing.memory_stream_pair()
    client = Client(ours)
    async with trio.open_nursery() as nursery:
        results: list[object] = []

        async def ask() -> None:
            results.append(await client.result("ping"))

        nursery.start_soon(ask)
        request = await read_line(daemon)
        assert request == {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        await daemon.send_all(line(id=1, result={"version": "0.1.0"})[:7])
        await trio.testing.wait_all_tasks_blocked()
        assert results == []  # half a line is not a reply
        await daemon.send_all(line(id=1, result={"version": "0.1.0"})[7:])
    assert results == [{"version": "0.1.0"}]


async def test_pipelined_replies_in_any_order_and_what_is_kept() -> None:
    ours, daemon = trio.testing.memory_stream_pair()
    client = Client(ours, keep_all_notifications=True)
    first = await client.send("set_power", {"power_w": 1.0, "batteries": [1]})
    second = await client.send("set_power", {"power_w": 1.0, "batteries": [2]})
    assert [(await read_line(daemon))["id"] for _ in range(2)] == [first, second]
    await daemon.send_all(
        line(id=second, result="two")
        + line(method="status_changed", params={"id": 1})
        + line(id=first, result="one")
    )
    assert await client.reply_to(first) == {"jsonrpc": "2.0", "id": first, "result": "one"}
    assert (await client.receive())["result"] == "two"
    assert (await client.receive())["method"] == "status_changed"


async def test_an_error_reply_is_the_call_and_a_daemon_error_for_result() -> None:
    ours, daemon = trio.testing.memory_stream_pair()
    client = Client(ours)
    error = {"code": -32001, "message": "overloaded"}
    await daemon.send_all(line(id=1, error=error) + line(id=2, error=error))
    assert (await client.call("ping"))["error"] == error
    with pytest.raises(DaemonError, match="-32001: overloaded"):
        await client.result("ping")


async def test_the_daemon_closing_the_connection_is_unreachable() -> None:
    ours, daemon = trio.testing.memory_stream_pair()
    client = Client(ours)
    request_id = await client.send("ping")
    await daemon.send_all(b'{"jsonrpc": "2.0", "id": 1, ')
    await daemon.aclose()
    with pytest.raises(UnreachableError, match="closed the connection"):
        await client.reply_to(request_id)


async def test_notifications_are_kept_only_while_an_iterator_follows_them() -> None:
    ours, daemon = trio.testing.memory_stream_pair()
    client = Client(ours)
    status = line(method="status_changed", params={"id": 1, "status": "working", "reasons": []})
    await daemon.send_all(status + line(id=1, result="pong"))
    assert await client.result("ping") == "pong"
    assert client.receive_nowait() is None  # nobody followed it: dropped
    async with client.notifications() as notifications:  # every kind, no subscription
        await daemon.send_all(status + status + line(id=2, result="pong"))
        assert await client.result("ping") == "pong"
        assert isinstance(await notifications.__anext__(), StatusChange)
    assert client.receive_nowait() is not None  # read while followed: kept for a reader
    await daemon.send_all(status + line(id=3, result="pong"))
    assert await client.result("ping") == "pong"
    assert client.receive_nowait() is None  # nobody follows them any more: dropped


async def test_a_cancel_already_due_sends_nothing_and_the_connection_stays() -> None:
    ours, daemon = trio.testing.memory_stream_pair()
    client = Client(ours)
    with trio.CancelScope() as scope:
        scope.cancel()
        await client.ping()
    await daemon.send_all(line(id=2, result={"version": "0", "uptime_s": 1, "microgrid": "x"}))
    assert (await client.ping()).version == "0"
    assert (await read_line(daemon))["id"] == 2  # the cancelled request never went out
