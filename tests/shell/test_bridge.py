"""The trio ↔ asyncio bridge, on plain asyncio coroutines (no gRPC needed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from distributord.core.errors import LinkDownError
from distributord.shell import bridge as bridge_module
from distributord.shell.bridge import STREAM_SETTLE_S, Bridge, Stream, open_bridge


class Marker:
    """A thread-safe flag the asyncio side sets and the trio side waits for (no polling)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.at = 0.0

    def set(self) -> None:
        self.at = time.monotonic()
        self._event.set()

    async def wait(self, limit_s: float = 5.0) -> bool:
        """Whether it was set within ``limit_s`` (the thread waits no longer than that)."""
        return await trio.to_thread.run_sync(self._event.wait, limit_s)


async def test_call_returns_the_coroutines_result() -> None:
    async with open_bridge() as bridge:

        async def work() -> tuple[str, bool]:
            await asyncio.sleep(0)
            return threading.current_thread().name, asyncio.get_running_loop().is_running()

        name, running = await bridge.call(work)
    assert name == "distributord-grpc-loop"
    assert running


async def test_errors_cross_translated() -> None:
    def translate(error: BaseException) -> BaseException | None:
        return LinkDownError(f"translated {error}") if isinstance(error, KeyError) else None

    async with open_bridge(translate) as bridge:

        async def fails() -> None:
            raise KeyError("x")

        async def other() -> None:
            raise ValueError("kept")

        with pytest.raises(LinkDownError, match="translated 'x'"):
            await bridge.call(fails)
        with pytest.raises(ValueError, match="kept"):
            await bridge.call(other)


async def test_a_trio_cancel_cancels_the_asyncio_task_within_50_ms() -> None:
    cancelled = Marker()
    running = Marker()
    async with open_bridge() as bridge:

        async def hangs() -> None:
            running.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with trio.move_on_after(10) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bridge.call, hangs)
                assert await running.wait()
                cancel_at = time.monotonic()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
        assert await cancelled.wait(1.0)
    assert cancelled.at - cancel_at < 0.050


DEADLINE_S = 1.0
"""The fan-outs' deadline: a hundred times the 10 ms the calls that answer take, so that a
loaded CI machine still finishes them in time (0.2 s once saw 79 of 100 cut off)."""


class EveryTwentiethHangs:
    """Calls for the loop: each returns its key after 10 ms, but every twentieth hangs.

    The hanging ones wait until they are cancelled; the cancellations are counted.
    """

    def __init__(self) -> None:
        self._cancelled = 0
        self._lock = threading.Lock()

    def __call__(self, k: int) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            try:
                await asyncio.sleep(3600 if k % 20 == 0 else 0.01)
            except asyncio.CancelledError:
                with self._lock:
                    self._cancelled += 1
                raise
            return k

        return run

    async def cancelled(self) -> int:
        """How many were cancelled (a call on the loop: the cancellations run first)."""
        await asyncio.sleep(0)
        return self._cancelled


async def test_100_concurrent_calls_with_5_hanging_finish_at_the_deadline() -> None:
    finished: dict[int, int] = {}
    work = EveryTwentiethHangs()
    async with open_bridge() as bridge:

        async def one(k: int) -> None:
            finished[k] = await bridge.call(work(k))

        start = trio.current_time()
        with trio.move_on_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                for k in range(100):
                    nursery.start_soon(one, k)
        elapsed = trio.current_time() - start
        assert await bridge.call(work.cancelled) == 5
    assert sorted(finished) == [k for k in range(100) if k % 20]
    assert DEADLINE_S <= elapsed < DEADLINE_S + 0.5


async def stream_of(items: list[int], *, then: BaseException | None = None) -> AsyncIterator[int]:
    for item in items:
        yield item
    if then is not None:
        raise then


async def test_a_stream_delivers_in_order_and_ends() -> None:
    async with (
        open_bridge() as bridge,
        bridge.open_stream(lambda: stream_of(list(range(10)))) as stream,
    ):
        got = [item async for item in stream]
    assert got == list(range(10))


async def test_a_stream_error_reaches_the_consumer() -> None:
    async with open_bridge() as bridge:
        async with bridge.open_stream(
            lambda: stream_of([1, 2], then=RuntimeError("boom"))
        ) as stream:
            assert await stream.receive() == 1
            assert await stream.receive() == 2
            with pytest.raises(RuntimeError, match="boom"):
                await stream.receive()
        with pytest.raises(trio.EndOfChannel):
            async with bridge.open_stream(lambda: stream_of([])) as empty:
                await empty.receive()


async def test_leaving_a_stream_cancels_it_on_the_loop() -> None:
    cancelled = Marker()

    async def endless() -> AsyncIterator[int]:
        try:
            k = 0
            while True:
                yield k
                k += 1
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with open_bridge() as bridge:
        async with bridge.open_stream(endless) as stream:
            assert await stream.receive() == 0
            left_at = time.monotonic()
        assert await cancelled.wait(1.0)
    assert cancelled.at - left_at < 0.050


async def test_a_slow_consumer_gets_the_newest_messages_and_a_drop_count() -> None:
    produced = Marker()

    async def burst() -> AsyncIterator[int]:
        for k in range(100):
            yield k
        produced.set()
        await asyncio.sleep(3600)

    async with open_bridge() as bridge, bridge.open_stream(burst, buffer=8) as stream:
        assert await produced.wait()
        await bridge.call(_streams_crossed)  # the last messages have been handed over
        await trio.testing.wait_all_tasks_blocked()
        got = [await stream.receive() for _ in range(8)]
    assert got == list(range(92, 100))
    assert stream.dropped == 92
    assert stream.received == 100


async def test_a_handler_gets_the_waiting_messages_then_the_rest_in_order() -> None:
    async def slow() -> AsyncIterator[int]:
        for k in range(3):
            yield k
        await asyncio.sleep(0.05)
        for k in range(3, 10):
            yield k

    got: list[int] = []
    async with open_bridge() as bridge, bridge.open_stream(slow) as stream:
        await bridge.call(_streams_crossed)  # the first three have been handed over
        await trio.testing.wait_all_tasks_blocked()
        stream.deliver_to(got.append)
        assert got == [0, 1, 2]  # at once, from the buffer
        with pytest.raises(trio.EndOfChannel):
            await stream.ended()
    assert got == list(range(10))
    assert stream.received == 10


async def test_a_stream_error_or_a_failing_handler_ends_the_stream() -> None:
    async with open_bridge() as bridge:
        got: list[int] = []
        async with bridge.open_stream(lambda: stream_of([1, 2], then=RuntimeError("boom"))) as s:
            s.deliver_to(got.append)
            with pytest.raises(RuntimeError, match="boom"):
                await s.ended()
        assert got == [1, 2]

        def fussy(message: int) -> None:
            got.append(message)
            if message == 3:
                raise ValueError("cannot take 3")

        got.clear()
        async with bridge.open_stream(lambda: stream_of(list(range(10)))) as s:
            s.deliver_to(fussy)
            with pytest.raises(ValueError, match="cannot take 3"):
                await s.ended()
        assert got == [0, 1, 2, 3]  # nothing handed over after the handler failed


async def test_nothing_is_handed_to_a_handler_after_the_consumer_left() -> None:
    async def endless() -> AsyncIterator[int]:
        k = 0
        while True:
            yield k
            k += 1
            await asyncio.sleep(0)

    got: list[int] = []
    enough = trio.Event()

    def take(message: int) -> None:
        got.append(message)
        if len(got) == 50:
            enough.set()

    async with open_bridge() as bridge:
        async with bridge.open_stream(endless) as stream:
            stream.deliver_to(take)
            await enough.wait()
        left_with = len(got)
        for _ in range(3):  # messages already on their way into trio are dropped
            await bridge.call(_loop_turn)
            await trio.testing.wait_all_tasks_blocked()
        assert len(got) == left_with
    assert got == list(range(left_with))


async def test_call_each_lands_every_result_and_translated_error_by_key() -> None:
    def translate(error: BaseException) -> BaseException | None:
        return LinkDownError(f"translated {error}") if isinstance(error, KeyError) else None

    def work(k: int):  # type: ignore[no-untyped-def]
        async def run() -> int:
            await asyncio.sleep(0.001 * (k % 3))
            if k == 3:
                raise KeyError(k)
            if k == 4:
                raise ValueError("kept")
            return k * 10

        return run

    landed: dict[int, object] = {}
    threads: set[str] = set()

    def land(key: int, result: object) -> None:
        threads.add(threading.current_thread().name)
        landed[key] = result

    async with open_bridge(translate) as bridge:
        await bridge.call_each({k: work(k) for k in range(6)}, land)
        await bridge.call_each({}, land)  # nothing to do: returns at once
    assert threads == {threading.current_thread().name}  # landed in trio's thread
    assert {k: v for k, v in landed.items() if k not in (3, 4)} == {0: 0, 1: 10, 2: 20, 5: 50}
    assert isinstance(landed[3], LinkDownError)
    assert str(landed[3]) == "translated 3"
    assert isinstance(landed[4], ValueError)


async def test_a_callback_that_raises_neither_stops_trio_nor_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 10, item 7: a callback handed over from the gRPC thread that raised was run from
    # run_sync_soon, where it is a TrioInternalError: the daemon stopped.
    def work(k: int):  # type: ignore[no-untyped-def]
        async def run() -> int:
            return k

        return run

    landed: dict[int, object] = {}

    def land(key: int, result: object) -> None:
        if key == 2:
            raise RuntimeError("a bug in land")
        landed[key] = result

    with trio.fail_after(5):
        async with open_bridge() as bridge:
            # Key 2 never lands, so call_each would wait for it: bound the wait.
            with trio.move_on_after(0.5):
                await bridge.call_each({k: work(k) for k in range(5)}, land)
            await bridge.call(_loop_turn)  # the bridge still works
    assert landed == {0: 0, 1: 1, 3: 3, 4: 4}
    assert "a callback from the gRPC thread failed" in caplog.text


async def test_call_each_at_a_deadline_keeps_what_landed_and_cancels_the_rest() -> None:
    work = EveryTwentiethHangs()
    landed: dict[int, object] = {}
    async with open_bridge() as bridge:
        start = trio.current_time()
        with trio.move_on_after(DEADLINE_S) as scope:
            await bridge.call_each({k: work(k) for k in range(100)}, landed.__setitem__)
        elapsed = trio.current_time() - start
        assert scope.cancelled_caught
        at_deadline = dict(landed)
        assert await bridge.call(work.cancelled) == 5
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(at_deadline) == [k for k in range(100) if k % 20]
    assert landed == at_deadline  # nothing landed after the caller left
    assert DEADLINE_S <= elapsed < DEADLINE_S + 0.5


async def test_call_each_after_close_fails_clearly() -> None:
    async with open_bridge() as bridge:
        kept: Bridge = bridge
    with pytest.raises(LinkDownError, match="closed"):
        await kept.call_each({1: _loop_turn}, lambda key, result: None)


async def _loop_turn() -> None:
    await asyncio.sleep(0)


async def _streams_crossed() -> None:
    """Returns once what streams posted before it has crossed to trio (its reply follows it).

    Streams' messages cross in a batch :data:`STREAM_SETTLE_S` after the first: a timer of
    the same length set after theirs fires after theirs (the loop orders timers by deadline).
    """
    await asyncio.sleep(STREAM_SETTLE_S)


async def test_calls_after_close_fail_clearly() -> None:
    async with open_bridge() as bridge:
        kept: Bridge = bridge
    with pytest.raises(LinkDownError, match="closed"):
        await kept.call(_loop_turn)


async def test_threads_do_not_grow_with_streams() -> None:
    async def quiet() -> AsyncIterator[int]:
        await asyncio.sleep(3600)
        yield 0

    # Threads counted by identity: one a previous test left (a thread cache's idle worker) may
    # end meanwhile, and must not read as a thread the bridge gave back.
    before = set(threading.enumerate())
    async with open_bridge() as bridge:
        with_bridge = set(threading.enumerate()) - before
        async with trio.open_nursery() as nursery:
            opened = trio.Semaphore(0)

            async def hold() -> None:
                async with bridge.open_stream(quiet):
                    opened.release()
                    await trio.sleep_forever()

            for _ in range(1000):
                nursery.start_soon(hold)
            for _ in range(1000):
                await opened.acquire()
            await bridge.call(_loop_turn)
            assert set(threading.enumerate()) - before == with_bridge
            nursery.cancel_scope.cancel()
    assert len(with_bridge) == 1
    assert await trio.to_thread.run_sync(lambda: True)
    assert not with_bridge & set(threading.enumerate())  # the loop thread has gone


async def test_a_waiting_consumer_is_woken_by_each_message_and_by_the_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The trio side alone, as the loop's batches drive it: a lost wake-up hangs, and the
    # autojumping clock turns that hang into fail_after's error at once.
    got: list[int] = []
    reading: Stream[int] = Stream(4)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                async for item in reading:
                    got.append(item)

            nursery.start_soon(read)
            for k in range(3):
                await trio.testing.wait_all_tasks_blocked()  # the reader waits...
                reading._push(k)  # ...and is woken by the message
                await trio.testing.wait_all_tasks_blocked()
                assert got == list(range(k + 1))
            reading._finish(None)
    assert got == [0, 1, 2]

    handled: list[int] = []
    delivering: Stream[int] = Stream(4)
    delivering.deliver_to(handled.append)
    ends: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def wait_for_the_end() -> None:
                try:
                    await delivering.ended()
                except RuntimeError as error:
                    ends.append(str(error))

            nursery.start_soon(wait_for_the_end)
            await trio.testing.wait_all_tasks_blocked()
            delivering._push(7)  # handed over, with no task woken
            await trio.testing.wait_all_tasks_blocked()
            delivering._finish(RuntimeError("gone"))
    assert (handled, ends) == ([7], ["gone"])


async def test_streams_messages_a_few_ms_apart_cross_to_trio_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Telemetry spread over the loop's iterations costs one wake-up of trio, not one each."""
    batches: list[int] = []
    run_all = bridge_module._run_all

    def counted(actions: list[Any]) -> None:
        batches.append(len(actions))
        run_all(actions)

    monkeypatch.setattr(bridge_module, "_run_all", counted)

    async def spread() -> AsyncIterator[int]:
        for k in range(5):
            yield k
            await asyncio.sleep(0)  # one message a loop iteration, as grpc.aio hands them over
        await asyncio.sleep(3600)

    got: list[int] = []
    done = trio.Event()

    def take(message: int) -> None:
        got.append(message)
        if len(got) == 5:
            done.set()

    async with open_bridge() as bridge, bridge.open_stream(spread) as stream:
        stream.deliver_to(take)
        with trio.fail_after(5):
            await done.wait()
    assert got == [0, 1, 2, 3, 4]
    assert batches == [5]
