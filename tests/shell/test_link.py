"""The microgrid link against the simulator, over real gRPC on loopback."""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import pytest
import trio
import trio.testing
import trio_util

from distributord.api.adapter import FinalReply, Note, Snapshot
from distributord.core.errors import (
    CommandError,
    CommandFailedError,
    CommandRejectedError,
    LinkDownError,
    StreamBrokenError,
)
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds, StateCode
from distributord.core.topology import Topology
from distributord.shell.link import (
    Backoff,
    Late,
    MicrogridLink,
    SilenceWatch,
    StreamState,
    Tail,
    Telemetry,
    discover,
    open_link,
)
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario, uniform_fleet
from distributord.sim.server import Simulator
from tests.support import LIMIT_S, free_port

FAST = Backoff(first_s=0.05, cap_s=0.2)


class RecordingSink:
    """A TelemetrySink that remembers everything and lets tests wait for a condition."""

    def __init__(self) -> None:
        self.snapshots: dict[int, list[Snapshot]] = defaultdict(list)
        self.gaps: dict[int, list[str]] = defaultdict(list)
        self._version = trio_util.AsyncValue(0)

    def snapshot(self, snapshot: Snapshot) -> None:
        self.snapshots[snapshot.component_id].append(snapshot)
        self._version.value += 1

    def gap(self, component_id: int, reason: str) -> None:
        self.gaps[component_id].append(reason)
        self._version.value += 1

    async def wait(self, predicate: Callable[[], bool]) -> None:
        await self._version.wait_value(lambda _: predicate())


async def command(link: MicrogridLink, inverter_id: int, power_w: float, lifetime_s: int) -> float:
    """One command, as the commander sends it (a batch of one): its valid-until, or its error."""
    landed: dict[int, float | CommandError] = {}
    await link.set_active_powers({inverter_id: power_w}, lifetime_s, landed.__setitem__)
    outcome = landed[inverter_id]
    if isinstance(outcome, CommandError):
        raise outcome
    return outcome


async def sim_wait(sim: Simulator, predicate: Callable[[Simulator], bool]) -> None:
    assert await trio.to_thread.run_sync(sim.wait_for, predicate, 5.0), (
        "simulator condition not met"
    )


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(uniform_fleet(4, seed=1), telemetry_hz=20.0, lifetime_scale=0.01) as simulator:
        yield simulator


@pytest.fixture
async def link(sim: Simulator) -> AsyncIterator[MicrogridLink]:
    async with open_link(sim.address) as opened:
        await discover(opened)  # negotiates the API version
        yield opened


async def watch(
    nursery: trio.Nursery,
    link: MicrogridLink,
    component_id: int,
    sink: RecordingSink,
    *,
    silence_s: float = 5.0,
) -> None:
    telemetry = Telemetry(
        link,
        component_id,
        battery=component_id < 2000,
        sink=sink,
        max_data_age_s=10.0,
        silence_s=silence_s,
        backoff=FAST,
    )
    await nursery.start(telemetry.serve)


# --- discovery -----------------------------------------------------------------------------


async def test_discovery_pairs_batteries_and_reports_the_odd_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scenario = Scenario(
        batteries=tuple(BatterySpec(id=b, soc_pct=50.0) for b in (1001, 1002, 1003, 1004, 1005)),
        inverters=(
            InverterSpec(id=2001, batteries=(1001,)),
            InverterSpec(id=2002, batteries=(1002,)),
            InverterSpec(id=2003, batteries=(1002,)),
            InverterSpec(id=2004, batteries=(1003, 1004)),
        ),
    )
    caplog.set_level(logging.INFO, logger="distributord.shell.link")
    with Simulator(scenario) as odd:
        async with open_link(odd.address) as link:
            topology = await discover(link)
    assert topology.pairs == {1001: 2001, 1002: 2002, 1003: 2004}
    assert topology.groups.keys() == {1002, 1003}  # a shared DC bus; two batteries on one
    assert topology.left_out == {1005: "no inverter is connected to it"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"left out battery {b}: {why}" for b, why in sorted(topology.left_out.items())
    ]


async def test_start_up_waits_for_an_unreachable_api_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    caplog.set_level(logging.INFO, logger="distributord.shell.link")
    attempts = trio_util.AsyncValue(0)

    async with open_link(f"127.0.0.1:{port}") as link:

        class Counting:
            async def topology(self) -> Topology:
                attempts.value += 1
                return await link.topology()

        found: list[Topology] = []
        discovered = trio.Event()
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    found.append(await discover(Counting(), backoff=FAST))  # type: ignore[arg-type]
                    discovered.set()

                nursery.start_soon(run)
                await attempts.wait_value(lambda n: n >= 3)
                with Simulator(uniform_fleet(2, seed=1), port=port):
                    await discovered.wait()
    assert found[0].pairs == {1001: 2001, 1002: 2002}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1


async def test_an_unreachable_api_raises_link_down_for_a_single_attempt() -> None:
    port = free_port()
    async with open_link(f"127.0.0.1:{port}") as link:
        with trio.fail_after(10), pytest.raises(LinkDownError, match="UNAVAILABLE"):
            await link.topology()


# --- telemetry -----------------------------------------------------------------------------


async def test_telemetry_decodes_every_field(sim: Simulator, link: MicrogridLink) -> None:
    sink = RecordingSink()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await watch(nursery, link, 1001, sink)
            await watch(nursery, link, 2001, sink)
            await sink.wait(lambda: bool(sink.snapshots[1001]) and bool(sink.snapshots[2001]))
            nursery.cancel_scope.cancel()
    battery = sink.snapshots[1001][-1]
    inverter = sink.snapshots[2001][-1]
    assert isinstance(battery, BatterySnapshot)
    assert isinstance(inverter, InverterSnapshot)
    spec = sim.scenario.batteries[0]
    assert battery.soc_pct == pytest.approx(spec.soc_pct)
    assert (battery.soc_lower_pct, battery.soc_upper_pct) == (
        spec.soc_lower_pct,
        spec.soc_upper_pct,
    )
    assert battery.capacity_wh == spec.capacity_wh
    assert battery.power_w == 0.0
    assert battery.bounds == PowerBounds.symmetric(spec.power_limit_w)
    assert StateCode.READY in battery.states
    assert battery.errors == frozenset()
    assert abs(battery.sampled_at - time.time()) < 5
    assert inverter.bounds == PowerBounds.symmetric(sim.scenario.inverters[0].power_limit_w)
    assert inverter.active_power_w == 0.0
    assert inverter.states & {StateCode.READY, StateCode.STANDBY}


async def test_nan_metrics_missing_bounds_and_error_states_arrive_as_such(
    sim: Simulator, link: MicrogridLink
) -> None:
    sim.set_fault(
        1001, nan_metrics=frozenset({"soc", "capacity"}), missing_bounds=True, error_state=True
    )
    sink = RecordingSink()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await watch(nursery, link, 1001, sink)
            await sink.wait(lambda: bool(sink.snapshots[1001]))
            nursery.cancel_scope.cancel()
    battery = sink.snapshots[1001][-1]
    assert isinstance(battery, BatterySnapshot)
    assert math.isnan(battery.soc_pct)
    assert math.isnan(battery.capacity_wh)
    assert math.isnan(battery.soc_lower_pct)
    assert not battery.bounds.is_known
    assert battery.states == {StateCode.ERROR}
    assert battery.errors == {"internal"}


async def test_a_dropped_stream_reconnects_and_data_flows_again(
    sim: Simulator, link: MicrogridLink
) -> None:
    sink = RecordingSink()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await watch(nursery, link, 2001, sink)
            await sink.wait(lambda: bool(sink.snapshots[2001]))
            sim.drop_streams(2001)
            await sink.wait(lambda: bool(sink.gaps[2001]))
            after_gap = len(sink.snapshots[2001])
            await sink.wait(lambda: len(sink.snapshots[2001]) > after_gap)
            await sim_wait(sim, lambda s: s.open_streams(2001) == 1)
            nursery.cancel_scope.cancel()
    assert "UNAVAILABLE" in sink.gaps[2001][0]


class FailingSink(RecordingSink):
    """Raises on the first two snapshots it is handed, as a bug in a sink would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 2

    def snapshot(self, snapshot: Snapshot) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a bug in the sink")
        super().snapshot(snapshot)


async def test_a_message_that_cannot_be_handled_is_dropped_and_the_stream_goes_on(
    sim: Simulator, link: MicrogridLink, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 10, item 7: an exception in a telemetry handler ended the stream with it and
    # reached the root nursery: the daemon stopped.
    sink = FailingSink()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await watch(nursery, link, 2001, sink)
            await sink.wait(lambda: len(sink.snapshots[2001]) >= 3)
            nursery.cancel_scope.cancel()
    assert sink.gaps[2001] == []  # the stream itself never broke
    logged = [r for r in caplog.records if "could not be handled" in r.getMessage()]
    assert len(logged) == 1  # once per kind of failure, not per message


async def test_a_silent_stream_is_replaced(sim: Simulator, link: MicrogridLink) -> None:
    sink = RecordingSink()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await watch(nursery, link, 1002, sink, silence_s=0.3)
            await sink.wait(lambda: bool(sink.snapshots[1002]))
            sim.set_fault(1002, stream_silence=True)
            await sink.wait(lambda: bool(sink.gaps[1002]))
            sim.clear_faults(1002)
            after_gap = len(sink.snapshots[1002])
            await sink.wait(lambda: len(sink.snapshots[1002]) > after_gap)
            # The silent stream was cancelled, not left open next to the new one.
            await sim_wait(sim, lambda s: s.open_streams(1002) == 1)
            nursery.cancel_scope.cancel()
    assert sink.gaps[1002][0] == "silent for 0.3 s"


async def test_refused_streams_are_retried_until_they_work(
    sim: Simulator, link: MicrogridLink
) -> None:
    sim.set_fault(1003, refuse_streams=True)
    sink = RecordingSink()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await watch(nursery, link, 1003, sink)
            await sink.wait(lambda: len(sink.gaps[1003]) >= 3)
            sim.clear_faults(1003)
            await sink.wait(lambda: bool(sink.snapshots[1003]))
            nursery.cancel_scope.cancel()


# --- telemetry's states, silence and backoff, under MockClock with a fake source -------------


class FakeStream:
    """A :class:`~distributord.shell.link.MessageStream` the test drives by hand."""

    def __init__(self) -> None:
        self.closed_at: float | None = None
        self._handler: Callable[[object], None] | None = None
        self._end = trio.Event()
        self._error: BaseException = trio.EndOfChannel()

    async def receive(self) -> object:
        raise NotImplementedError("Telemetry takes its messages with deliver_to")

    def deliver_to(self, handler: Callable[[object], None]) -> None:
        self._handler = handler

    def push(self, message: object) -> None:
        """A message arrives (handed over at once, as the bridge does)."""
        assert self._handler is not None, "nobody takes this stream's messages"
        self._handler(message)

    def end(self, error: BaseException | None = None) -> None:
        """The server ends the stream, or it fails with ``error``."""
        self._error = error or trio.EndOfChannel()
        self._end.set()

    async def ended(self) -> NoReturn:
        await self._end.wait()
        raise self._error


class FakeDecoder:
    """Decodes a message into itself; ``None`` is a message it ignores."""

    def __init__(self, max_data_age_s: float) -> None:
        self.max_data_age_s = max_data_age_s
        self.notes: set[Note] = set()
        self.ignored = 0
        self.ages: list[float] = []  # max_data_age_s as each message was decoded

    def decode(self, data: Any, *, received_at: float) -> Any:
        self.ages.append(self.max_data_age_s)
        self.notes = {Note.FOREIGN_ID} if data == "foreign" else set()
        if data is None or data == "foreign":
            self.ignored += 1
            return None
        return (received_at, data)


class FakeSource:
    """A :class:`~distributord.shell.link.TelemetrySource` whose streams the test drives.

    Attributes:
        refusal: While set, opening a stream raises it.
        attempts: Trio time of every attempt to open a stream.
        streams: The streams opened, oldest first.
        decoders: The decoder made for each stream.
    """

    def __init__(self) -> None:
        self.refusal: LinkDownError | None = None
        self.attempts: list[float] = []
        self.streams: list[FakeStream] = []
        self.decoders: list[FakeDecoder] = []
        self._opened = trio_util.AsyncValue(0)

    @asynccontextmanager
    async def telemetry(self, component_id: int) -> AsyncIterator[FakeStream]:
        assert component_id == 2001
        self.attempts.append(trio.current_time())
        if self.refusal is not None:
            raise self.refusal
        stream = FakeStream()
        self.streams.append(stream)
        self._opened.value += 1
        try:
            yield stream
        finally:
            stream.closed_at = trio.current_time()

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> FakeDecoder:
        assert (component_id, battery) == (2001, False)
        self.decoders.append(FakeDecoder(max_data_age_s))
        return self.decoders[-1]

    async def stream(self, n: int) -> FakeStream:
        """The ``n``-th stream opened (from 0), once it is."""
        await self._opened.wait_value(lambda opened: opened > n)
        return self.streams[n]


class TimedSink:
    """A TelemetrySink that notes when each thing reached it."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[float, Any]] = []
        self.gaps: list[tuple[float, str]] = []

    def snapshot(self, snapshot: Any) -> None:
        self.snapshots.append((trio.current_time(), snapshot))

    def gap(self, component_id: int, reason: str) -> None:
        assert component_id == 2001
        self.gaps.append((trio.current_time(), reason))


EXACT = Backoff(first_s=1.0, cap_s=8.0, jitter=0.0)
"""Waits of 1, 2, 4, 8, 8 … s: no jitter, so that times can be asserted exactly."""


@asynccontextmanager
async def serving(
    source: FakeSource,
    sink: TimedSink,
    *,
    max_data_age_s: float | Callable[[], float] = 10.0,
) -> AsyncIterator[Telemetry]:
    """Inverter 2001's telemetry from ``source``, silent after 3 s, started; stopped on exit."""
    telemetry = Telemetry(
        source,
        2001,
        battery=False,
        sink=sink,
        max_data_age_s=max_data_age_s,
        silence_s=3.0,
        backoff=EXACT,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(telemetry.serve)
        yield telemetry
        nursery.cancel_scope.cancel()


async def test_a_silent_stream_is_dropped_after_silence_s_and_opened_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="distributord.shell.link")
    source, sink = FakeSource(), TimedSink()
    seen: list[tuple[float, StreamState, float | None]] = []
    async with serving(source, sink) as telemetry:

        def look() -> None:
            seen.append((trio.current_time(), telemetry.state, telemetry.down_since))

        look()  # started once the first stream is open
        await trio.sleep_until(1.0)
        source.streams[0].push("a")  # then nothing
        await trio.sleep_until(3.5)
        look()  # 2.5 s of silence is not enough
        await trio.sleep_until(4.5)
        look()
        second = await source.stream(1)
        look()
        second.push("b")
        look()
    assert seen == [
        (0.0, StreamState.STREAMING, None),
        (3.5, StreamState.STREAMING, None),
        (4.5, StreamState.WAITING, 4.0),
        (5.0, StreamState.STREAMING, 4.0),
        (5.0, StreamState.STREAMING, None),
    ]
    assert source.attempts == [0.0, 5.0]  # dropped at 4, the first wait of 1 s
    assert source.streams[0].closed_at == 4.0  # left, not kept open beside the new one
    assert sink.gaps == [(4.0, "silent for 3 s")]
    assert sink.snapshots == [(1.0, (1.0, "a")), (5.0, (5.0, "b"))]
    # The sink hears of the gap and logs it (it sees every stream); the task logs nothing.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []


async def test_messages_keep_a_stream_alive_and_its_silence_counts_from_the_last(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source, sink = FakeSource(), TimedSink()
    async with serving(source, sink) as telemetry:
        stream = source.streams[0]
        for t in (2.0, 4.0, 6.5, 9.0):  # never 3 s apart
            await trio.sleep_until(t)
            stream.push(t)
        await trio.sleep_until(10.0)
        stream.push(None)  # ignored by the decoder, yet the stream is alive
        await trio.sleep_until(12.5)
        assert (telemetry.state, sink.gaps) == (StreamState.STREAMING, [])
        await source.stream(1)
    assert sink.gaps == [(13.0, "silent for 3 s")]
    assert source.attempts == [0.0, 14.0]
    assert [data for _, (_, data) in sink.snapshots] == [2.0, 4.0, 6.5, 9.0]


async def test_a_failing_open_backs_off_to_the_cap_and_a_snapshot_resets_the_backoff(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="distributord.shell.link")
    source, sink = FakeSource(), TimedSink()
    source.refusal = StreamBrokenError("UNAVAILABLE", "no route")
    async with serving(source, sink) as telemetry:
        assert trio.current_time() == 0.0  # started once the first attempt has failed
        assert telemetry.state is StreamState.WAITING
        await trio.sleep_until(40.0)
        source.refusal = None
        stream = await source.stream(0)
        stream.push("back")
        stream.end()  # the server ends it at once: the next wait is the first again
        await source.stream(1)
    # Waits of 1, 2, 4, 8 (the cap), 8, 8 s.
    assert source.attempts == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0, 39.0, 47.0, 48.0]
    assert sink.gaps == [
        *((t, "broken (UNAVAILABLE: no route)") for t in source.attempts[:8]),
        (47.0, "ended by the server"),
    ]
    assert sink.snapshots == [(47.0, (47.0, "back"))]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []


async def test_streams_that_open_but_give_no_snapshot_keep_backing_off(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="distributord.shell.link")
    source, sink = FakeSource(), TimedSink()
    async with serving(source, sink):
        for n in range(5):
            stream = await source.stream(n)
            stream.push("foreign")  # another component's message: ignored, and noted
            stream.end(StreamBrokenError("INTERNAL") if n % 2 else None)
        await source.stream(5)
    assert source.attempts == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0]
    assert [reason for _, reason in sink.gaps] == [
        "ended by the server",
        "broken (INTERNAL)",
    ] * 2 + ["ended by the server"]
    assert sink.snapshots == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == [
        "inverter 2001: a message carried another component's id; ignored (logged once)",
    ]


async def test_the_data_age_limit_is_read_on_every_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Issue 10, item 2: status.max_data_age_s reached the decoders only when a stream opened,
    # so a reload changed the log, not the behaviour. It is now read where it is used.
    source, sink, limit = FakeSource(), TimedSink(), [10.0]
    async with serving(source, sink, max_data_age_s=lambda: limit[0]):
        stream = source.streams[0]
        for age in (10.0, 20.0, 5.0):
            limit[0] = age
            stream.push("m")
        stream.end()
        limit[0] = 7.0
        await source.stream(1)
    assert [d.max_data_age_s for d in source.decoders] == [5.0, 7.0]
    assert source.decoders[0].ages == [10.0, 20.0, 5.0]


def test_backoff_doubles_to_its_cap_with_jitter_below_each_wait() -> None:
    next_delay, reset = Backoff(first_s=0.5, cap_s=3.0, jitter=0.5).delays(random.Random(7))
    nominal = [0.5, 1.0, 2.0, 3.0, 3.0]
    waits = [next_delay() for _ in nominal]
    assert all(d / 2 <= w <= d for w, d in zip(waits, nominal, strict=True))
    assert len(set(waits)) == len(waits)  # drawn, not fixed
    reset()
    assert 0.25 <= next_delay() <= 0.5


# --- commands ------------------------------------------------------------------------------


async def test_a_command_is_applied_and_valid_until_is_returned(
    sim: Simulator, link: MicrogridLink
) -> None:
    valid_until = await command(link, 2001, 1500.0, 60)
    assert valid_until == pytest.approx(time.time() + 60, abs=2)
    assert sim.setpoint(2001) == 1500.0
    record = sim.commands()[-1]
    assert (record.component_id, record.power_w, record.lifetime_s, record.outcome) == (
        2001,
        1500.0,
        60,
        "ok",
    )


async def test_a_hanging_command_is_cancelled_at_the_rpc_within_50_ms(
    sim: Simulator, link: MicrogridLink
) -> None:
    sim.set_fault(2002, command_hang=True)
    with trio.move_on_after(0.2) as scope:
        await command(link, 2002, 1000.0, 60)
    assert scope.cancelled_caught
    cancelled_at = time.monotonic()
    await sim_wait(sim, lambda s: any(r.outcome == "cancelled" for r in s.commands()))
    (record,) = [r for r in sim.commands() if r.component_id == 2002]
    assert record.outcome == "cancelled"
    assert record.finished_at - cancelled_at < 0.050


async def test_100_commands_at_once_with_5_hanging_finish_at_the_deadline() -> None:
    with Simulator(uniform_fleet(100, seed=2)) as big:
        hanging = {2001, 2021, 2041, 2061, 2081}
        for inverter in hanging:
            big.set_fault(inverter, command_hang=True)
        big.set_fault(2002, command_error="UNAVAILABLE")
        landed: dict[int, float | CommandError] = {}
        async with open_link(big.address, api="v1") as link:
            await command(link, 2003, 0.0, 60)  # connect before the clock starts
            start = trio.current_time()
            with trio.move_on_after(1.0):
                await link.set_active_powers(
                    dict.fromkeys(big.inverter_ids, 100.0), 60, landed.__setitem__
                )
            elapsed = trio.current_time() - start
            await sim_wait(big, lambda s: sum(r.outcome == "cancelled" for r in s.commands()) == 5)
        assert set(landed) == set(big.inverter_ids) - hanging
        failed = landed.pop(2002)
        assert isinstance(failed, CommandFailedError)
        assert failed.code == "UNAVAILABLE"
        assert all(until == pytest.approx(time.time() + 60, abs=5) for until in landed.values())
        assert 1.0 <= elapsed < 1.2
        assert {r.component_id for r in big.commands() if r.outcome == "cancelled"} == hanging


@pytest.mark.parametrize("api", ["v1alpha18", "v1"])
@pytest.mark.parametrize(
    ("power", "lifetime", "fault", "error", "code"),
    [
        (6000.0, 60, None, CommandRejectedError, "OUT_OF_RANGE"),
        (1000.0, 5, None, CommandRejectedError, "INVALID_ARGUMENT"),
        (1000.0, 60, "UNAVAILABLE", CommandFailedError, "UNAVAILABLE"),
        (1000.0, 60, "INTERNAL", CommandFailedError, "INTERNAL"),
    ],
)
async def test_command_errors_become_domain_errors(
    sim: Simulator,
    api: str,
    power: float,
    lifetime: int,
    fault: str | None,
    error: type[Exception],
    code: str,
) -> None:
    if fault:
        sim.set_fault(2003, command_error=fault)
    async with open_link(sim.address, api=api) as link:
        with pytest.raises(error) as caught:
            await command(link, 2003, power, lifetime)
    # v1alpha18 refuses with a REJECTED reply (its details say why), v1 with the gRPC code.
    refused = error is CommandRejectedError and api != "v1"
    assert caught.value.code == ("REJECTED" if refused else code)  # type: ignore[attr-defined]


async def test_lifetime_expiry_drives_the_inverter_to_zero(
    sim: Simulator, link: MicrogridLink
) -> None:
    await command(link, 2004, 2000.0, 10)  # 10 s × lifetime_scale 0.01 = 0.1 s
    assert sim.setpoint(2004) == 2000.0
    await sim_wait(sim, lambda s: s.setpoint(2004) == 0.0)


async def test_a_burst_of_1500_streams_all_open() -> None:
    """All of a burst of 1,500 new streams open.

    A server with grpc's default limit of 1,000 pending calls cancels some of a bigger burst;
    the link takes turns.
    """
    default_server = {"grpc.server.max_pending_requests": 1000}
    with Simulator(
        uniform_fleet(750, seed=3), telemetry_hz=2.0, server_options=default_server
    ) as big:
        sink = RecordingSink()
        components = [*big.battery_ids, *big.inverter_ids]
        async with open_link(big.address, api="v1") as link:
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for component in components:
                        telemetry = Telemetry(
                            link,
                            component,
                            battery=component < 2000,
                            sink=sink,
                            max_data_age_s=10.0,
                            silence_s=30.0,
                        )
                        nursery.start_soon(telemetry.serve)
                    await sink.wait(lambda: len(sink.snapshots) == len(components))
                    nursery.cancel_scope.cancel()
        assert sum(len(g) for g in sink.gaps.values()) == 0


# --- accepted commands' reply streams, read in the background (issue 21) ------------------------


async def test_a_command_lands_on_accepted_and_its_tail_hears_the_final_reply(
    sim: Simulator, link: MicrogridLink
) -> None:
    inverter = sim.inverter_ids[0]
    sim.set_fault(inverter, ramp_s=0.3, final_reply="FAILED")
    heard: list[Late] = []
    tail = Tail(heard.append)
    landed: dict[int, float | CommandError] = {}
    with trio.fail_after(LIMIT_S):
        await link.set_active_powers({inverter: 500.0}, 60, landed.__setitem__, {inverter: tail})
    assert isinstance(landed[inverter], float)  # ACCEPTED: landed while the inverter ramps
    assert tail.following
    assert sim.ramping(inverter)
    with trio.fail_after(LIMIT_S):
        await tail.finished.wait()
    assert heard == [FinalReply.FAILED]
    assert [r.reply for r in sim.ramps()] == ["FAILED"]


async def test_abandoning_a_tail_cancels_its_call_at_the_rpc(
    sim: Simulator, link: MicrogridLink
) -> None:
    inverter = sim.inverter_ids[0]
    sim.set_fault(inverter, ramp_s=60.0)
    heard: list[Late] = []
    tail = Tail(heard.append)
    landed: dict[int, float | CommandError] = {}
    with trio.fail_after(LIMIT_S):
        await link.set_active_powers({inverter: 500.0}, 60, landed.__setitem__, {inverter: tail})
    tail.abandon()
    await sim_wait(sim, lambda s: [r.reply for r in s.ramps()] == ["cancelled"])
    assert heard == []  # nothing is delivered after abandon


async def test_without_a_tail_a_command_waits_for_its_final_reply(
    sim: Simulator, link: MicrogridLink
) -> None:
    inverter = sim.inverter_ids[0]
    sim.set_fault(inverter, ramp_s=0.2, final_reply="FAILED")
    with pytest.raises(CommandError, match="FAILED"):
        await command(link, inverter, 500.0, 60)


# --- silence is watched without waking a task per stream ----------------------------------------


class ManySource:
    """A :class:`~distributord.shell.link.TelemetrySource` of many inverters' fake streams."""

    def __init__(self) -> None:
        self.streams: dict[int, list[FakeStream]] = defaultdict(list)

    @asynccontextmanager
    async def telemetry(self, component_id: int) -> AsyncIterator[FakeStream]:
        stream = FakeStream()
        self.streams[component_id].append(stream)
        try:
            yield stream
        finally:
            stream.closed_at = trio.current_time()

    def decoder(self, component_id: int, *, battery: bool, max_data_age_s: float) -> FakeDecoder:
        return FakeDecoder(max_data_age_s)


class TaskSteps(trio.abc.Instrument):
    """Counts the steps of every task but one (the test's own)."""

    def __init__(self, besides: trio.lowlevel.Task) -> None:
        self.besides = besides
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self.besides:
            self.steps += 1


class GapSink:
    """A TelemetrySink that notes each gap with its time."""

    def __init__(self) -> None:
        self.gaps: list[tuple[float, int, str]] = []

    def snapshot(self, snapshot: Any) -> None:
        pass

    def gap(self, component_id: int, reason: str) -> None:
        self.gaps.append((trio.current_time(), component_id, reason))


async def test_streams_that_keep_talking_wake_no_task_and_a_silent_one_is_dropped_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Issue 21: a deadline per stream woke each telemetry task every few seconds (2,000
    # streams: ~450 wake-ups a second, with a cancellation each). Silence is now watched by one
    # task for all streams, exactly as before: a stream is dropped silence_s after its last
    # message, to the tick.
    source, sink, watch = ManySource(), GapSink(), SilenceWatch()
    ids = range(2001, 2101)
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.serve)
        for component_id in ids:
            telemetry = Telemetry(
                source,
                component_id,
                battery=False,
                sink=sink,
                max_data_age_s=10.0,
                silence_s=5.0,
                watch=watch,
            )
            await nursery.start(telemetry.serve)
        steps = TaskSteps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(steps)
        for second in range(1, 61):  # a message a second on every stream, for a minute
            await trio.sleep_until(second)
            for component_id in ids:
                source.streams[component_id][-1].push(second)
        trio.lowlevel.remove_instrument(steps)
        # One watcher's wake-up a second at most, where each stream's own deadline woke its
        # task about every 4 s: 100 streams, 60 s, ~1,300 steps.
        assert steps.steps <= 60
        assert watch.wakeups <= 61
        assert sink.gaps == []
        await trio.sleep_until(62.5)
        source.streams[2001][-1].push("last")  # then 2001 falls silent; the others too, at 65
        await trio.sleep_until(67.6)
        nursery.cancel_scope.cancel()
    assert sorted(sink.gaps)[:2] == [(65.0, 2002, "silent for 5 s"), (65.0, 2003, "silent for 5 s")]
    assert [gap for gap in sink.gaps if gap[1] == 2001] == [(67.5, 2001, "silent for 5 s")]
    assert source.streams[2001][0].closed_at == 67.5
