"""The status tracker task, on trio's mock clock, with a fake telemetry source."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from distributord.core.config import StatusConfig
from distributord.core.model import BatterySnapshot, InverterSnapshot
from distributord.core.status import Reason, Status
from distributord.shell.live import LiveValue, fixed
from distributord.shell.tracker import LOG_SETTLE_S, Board, StatusTracker
from tests.snapshots import battery_snapshot, inverter_snapshot

EPOCH = 1_800_000_000.0
PAIRS = {1001: 2001, 1002: 2002}
SETTINGS = StatusConfig(max_data_age_s=10.0, min_blocking_s=1.0, max_blocking_s=30.0)


def wall() -> float:
    """Unix time tied to the trio clock, so that sampled_at is meaningful under MockClock."""
    return EPOCH + trio.current_time()


def battery(bid: int = 1001, *, age: float = 0.0, **overrides: Any) -> BatterySnapshot:
    return battery_snapshot(
        component_id=bid, sampled_at=wall() - age, received_at=trio.current_time(), **overrides
    )


def inverter(iid: int = 2001, **overrides: Any) -> InverterSnapshot:
    return inverter_snapshot(
        component_id=iid, sampled_at=wall(), received_at=trio.current_time(), **overrides
    )


# pytest-trio runs a test on the clock found among the *test's* own arguments, so each test
# asks for `autojump_clock` itself; the fixture gets the same instance.
@pytest.fixture
async def tracker(autojump_clock: trio.testing.MockClock) -> AsyncIterator[StatusTracker]:
    tracker = StatusTracker(PAIRS, fixed(SETTINGS), wall_clock=wall)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        yield tracker
        nursery.cancel_scope.cancel()


def feed(tracker: StatusTracker, bid: int = 1001) -> None:
    tracker.snapshot(battery(bid))
    tracker.snapshot(inverter(PAIRS[bid]))


async def wait_status(tracker: StatusTracker, bid: int, status: Status) -> float:
    """Wait until the published board shows ``status`` for ``bid``; return the time it did.

    The board lags the tracker's own state by one wake-up of its task: first let it catch up
    with the state as it is now, then wait for the change.
    """
    await tracker.board.wait_value(lambda board: board.states[bid] == tracker.state(bid))
    await tracker.board.wait_value(lambda board: board.states[bid].status is status)
    return trio.current_time()


async def test_every_battery_starts_not_working(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    board: Board = tracker.board.value
    assert {s.status for s in board.states.values()} == {Status.NOT_WORKING}
    assert board.states[1001].reasons == {Reason.NO_BATTERY_DATA, Reason.NO_INVERTER_DATA}


async def test_fresh_data_makes_it_working_at_once(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    feed(tracker)
    assert tracker.state(1001).status is Status.WORKING  # no wait: inputs evaluate at once
    assert await wait_status(tracker, 1001, Status.WORKING) == pytest.approx(trio.current_time())


async def test_staleness_fires_exactly_max_data_age_after_the_last_sample(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    await trio.sleep(3.25)
    feed(tracker)
    last = trio.current_time()
    stale_at = await wait_status(tracker, 1001, Status.NOT_WORKING)
    assert stale_at == last + 10.0
    assert tracker.state(1001).reasons == {Reason.STALE_BATTERY_DATA, Reason.STALE_INVERTER_DATA}
    assert tracker.state(1001).since == last + 10.0


async def test_a_silent_side_goes_stale_on_time_while_the_other_keeps_talking(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    feed(tracker)
    start = trio.current_time()

    async def battery_keeps_talking() -> None:
        while True:
            await trio.sleep(0.1)
            tracker.snapshot(battery())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(battery_keeps_talking)
        assert await wait_status(tracker, 1001, Status.NOT_WORKING) == start + 10.0
        assert tracker.state(1001).reasons == {Reason.STALE_INVERTER_DATA}
        nursery.cancel_scope.cancel()


async def test_an_old_time_stamp_is_clock_skew_not_staleness(
    tracker: StatusTracker,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distributord.shell.tracker")
    await trio.sleep(1.0)
    tracker.snapshot(battery(age=30.0))  # the microgrid's clock is 30 s behind ours
    tracker.snapshot(inverter())
    assert tracker.state(1001).status is Status.WORKING
    assert tracker.state(1001).reasons == {Reason.CLOCK_SKEW}
    await trio.testing.wait_all_tasks_blocked()
    assert caplog.records[0].getMessage() == "battery 1001: not_working -> working (clock_skew)"
    del caplog.records[0]
    heard_at, offset = tracker.heard()[1001]
    assert heard_at == 1.0
    assert offset == pytest.approx(30.0)
    assert tracker.statistics().clock_offsets[1001] == pytest.approx(30.0)
    for _ in range(30):  # it keeps sampling: fresh, and logged once
        await trio.sleep(0.5)
        feed_old = battery(age=30.0)
        tracker.snapshot(feed_old)
        tracker.snapshot(inverter())
    assert tracker.state(1001).status is Status.WORKING
    tracker.snapshot(battery())  # its clock is set right
    await trio.sleep(LOG_SETTLE_S)
    await trio.testing.wait_all_tasks_blocked()
    assert tracker.state(1001).reasons == frozenset()
    assert [r.getMessage() for r in caplog.records] == [
        "clock skew on battery 1001: sampled_at 30.0 s behind our clock (more than "
        "max_data_age_s, 10 s); freshness is judged on receipt",
        "clock skew ended on battery 1001",
    ]


async def test_a_sample_no_newer_than_the_one_before_counts_as_none(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    feed(tracker)
    first = trio.current_time()
    repeated = battery()
    for _ in range(40):  # the source repeats its last sample: no sign of life
        await trio.sleep(0.5)
        tracker.snapshot(attrs.evolve(repeated, received_at=trio.current_time()))
        tracker.snapshot(inverter())
    assert tracker.state(1001).reasons == {Reason.STALE_BATTERY_DATA}
    assert tracker.state(1001).since == first + 10.0
    assert tracker.statistics().repeated == 40
    tracker.count_repeat()  # a group member's, dropped by the group sink
    assert tracker.statistics().repeated == 41


async def test_an_outage_is_one_fact_at_once_logged_once(
    tracker: StatusTracker,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distributord.shell.tracker")
    feed(tracker, 1001)
    feed(tracker, 1002)
    tracker.record_outcomes(succeeded=(), failed=[1002])  # blocked for 1 s
    await trio.testing.wait_all_tasks_blocked()
    caplog.clear()
    for component in (1001, 2001, 1002):
        tracker.gap(component, "broken (UNAVAILABLE: connection refused)")
    assert tracker.unreachable_since is None  # one stream still delivers
    await trio.sleep(0.2)
    tracker.gap(2002, "broken (UNAVAILABLE: connection refused)")
    down = trio.current_time()
    assert tracker.unreachable_since == down
    for battery_id in PAIRS:  # at once, not at max_data_age
        assert tracker.state(battery_id).status is Status.NOT_WORKING
        assert tracker.state(battery_id).reasons == {Reason.MICROGRID_UNREACHABLE}
    await trio.sleep(5.0)  # the blocking window ends: still not working
    for component in (*PAIRS, *PAIRS.values()):  # the streams keep failing while it is down
        tracker.gap(component, "broken (UNAVAILABLE: connection refused)")
    await trio.sleep(55.0)
    assert {tracker.state(b).status for b in PAIRS} == {Status.NOT_WORKING}
    assert tracker.statistics().unreachable_since == down
    feed(tracker, 1001)
    assert tracker.unreachable_since is None
    assert tracker.state(1001).status is Status.WORKING
    assert tracker.state(1002).reasons == {Reason.STALE_BATTERY_DATA, Reason.STALE_INVERTER_DATA}
    feed(tracker, 1002)
    assert tracker.state(1002).status is Status.WORKING  # the recovery unblocked it
    await trio.sleep(2.0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "microgrid unreachable: every telemetry stream is broken (the last: inverter "
            "2002, broken (UNAVAILABLE: connection refused)); every battery is not working "
            "until it returns",
        ),
        ("INFO", "microgrid reachable again after 60.0 s: telemetry flows (battery 1001 first)"),
        ("INFO", "battery 1001: not_working -> working"),
        ("INFO", "battery 1002: not_working -> working"),
    ]


async def test_a_single_break_is_logged_after_the_settling_time_and_its_return(
    tracker: StatusTracker,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distributord.shell.tracker")
    feed(tracker, 1001)
    feed(tracker, 1002)
    await trio.testing.wait_all_tasks_blocked()
    caplog.clear()
    tracker.gap(2001, "silent for 5 s")
    await trio.testing.wait_all_tasks_blocked()
    assert caplog.records == []
    await trio.sleep(LOG_SETTLE_S)
    await trio.testing.wait_all_tasks_blocked()
    assert [r.getMessage() for r in caplog.records] == [
        "inverter 2001: telemetry stream silent for 5 s; reconnecting"
    ]
    await trio.sleep(2.0)
    tracker.snapshot(inverter(2001))
    assert caplog.records[-1].getMessage() == "inverter 2001: telemetry back after 3.0 s"
    # Several at once: one line. A short break is told with its return.
    for component in (1001, 1002, 2002):
        tracker.gap(component, "ended by the server")
    await trio.sleep(0.5)
    tracker.snapshot(battery(1002))
    await trio.sleep(LOG_SETTLE_S)
    await trio.testing.wait_all_tasks_blocked()
    assert [r.getMessage() for r in caplog.records[2:]] == [
        "battery 1002: telemetry stream ended by the server; back after 0.5 s",
        "2 telemetry streams broke (ended by the server): components 1001, 2002; reconnecting",
    ]
    assert tracker.unreachable_since is None


async def test_the_blocking_window_ends_exactly_on_time(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    feed(tracker)
    await trio.sleep(2.5)
    feed(tracker)
    tracker.record_outcomes(succeeded=(), failed=[1001])
    failed_at = trio.current_time()
    assert tracker.state(1001).status is Status.UNCERTAIN
    assert tracker.state(1001).blocked_until == failed_at + 1.0
    assert await wait_status(tracker, 1001, Status.WORKING) == failed_at + 1.0


async def test_overridden_is_a_reason_that_never_changes_the_status(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    feed(tracker, 1001)
    assert tracker.command_overridden(1001, True)
    assert not tracker.command_overridden(1001, True)  # already: no change (one warning)
    state = tracker.state(1001)
    assert (state.status, state.reasons) == (Status.WORKING, frozenset({Reason.OVERRIDDEN}))
    tracker.record_outcomes(succeeded=(), failed=[1001])  # a failure adds its own reason
    assert tracker.state(1001).reasons == {Reason.OVERRIDDEN, Reason.BLOCKED_AFTER_FAILURE}
    assert tracker.command_overridden(1001, False)
    assert tracker.state(1001).reasons == {Reason.BLOCKED_AFTER_FAILURE}
    assert not tracker.command_overridden(4242, True)  # not ours: ignored


async def test_outcomes_change_the_statuses_a_request_is_planned_on(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    # The request loop plans on tracker.state(b).status (core.status.select picks from them).
    def statuses() -> list[Status]:
        return [tracker.state(b).status for b in (1001, 1002)]

    feed(tracker, 1001)
    feed(tracker, 1002)
    tracker.record_outcomes(succeeded=(), failed=[1002])
    assert statuses() == [Status.WORKING, Status.UNCERTAIN]
    tracker.record_outcomes(succeeded=(), failed=[1001])
    assert statuses() == [Status.UNCERTAIN, Status.UNCERTAIN]
    tracker.record_outcomes(succeeded=[1001], failed=())
    assert statuses() == [Status.WORKING, Status.UNCERTAIN]


async def test_a_slow_subscriber_sees_the_latest_board_and_slows_nothing(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[int] = []

    async def slow_subscriber() -> None:
        async with aclosing(tracker.board.eventual_values()) as boards:
            async for board in boards:
                seen.append(board.version)
                await trio.sleep(60)  # far slower than the changes below

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_subscriber)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(50):
            feed(tracker)
            tracker.record_outcomes(succeeded=(), failed=[1001])
            await trio.sleep(1.0)  # each window ends: another change
            tracker.record_outcomes(succeeded=[1001], failed=())
        assert tracker.board.value.version >= 50  # published on, whatever the subscriber did
        await trio.sleep(120)  # quiet: the subscriber wakes and catches up
        latest = tracker.board.value.version
        nursery.cancel_scope.cancel()
    assert seen[0] == 0
    assert len(seen) < 10  # coalesced
    assert seen[-1] == latest  # and eventually up to date


async def test_timers_stay_bounded_under_heavy_telemetry(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    for _ in range(5000):
        feed(tracker, 1001)
        feed(tracker, 1002)
        await trio.sleep(0.01)
    assert len(tracker._heap) <= 2 * len(PAIRS) + 2


async def test_gaps_are_recorded_and_unknown_components_ignored(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    tracker.gap(2001, "broken (UNAVAILABLE)")
    assert tracker.statistics().gaps[2001] == ("broken (UNAVAILABLE)", trio.current_time())
    tracker.snapshot(battery(9999))  # not managed: ignored
    assert 9999 not in tracker.states


async def test_the_fleet_builds_pairs_from_the_latest_snapshots(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    assert tracker.fleet.pair(1001) is None
    feed(tracker)
    first = tracker.fleet.pair(1001)
    assert first is not None
    assert tracker.fleet.pair(1001) is first  # kept until new telemetry
    await trio.sleep(0.1)
    tracker.snapshot(battery(soc_pct=60.0))
    second = tracker.fleet.pair(1001)
    assert second is not None
    assert second is not first
    assert second.battery.soc_pct == 60.0


async def test_the_broken_cache_keeps_the_last_valid_values_for_its_ttl(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock
) -> None:
    feed(tracker)
    await trio.sleep(0.1)
    tracker.snapshot(battery(soc_pct=float("nan")))
    pair = tracker.fleet.pair(1001)
    assert pair is not None
    assert pair.problem is not None
    cached = tracker.fleet.cached_pair(1001, now=trio.current_time(), ttl_s=100.0)
    assert cached is not None
    assert cached.battery.soc_pct == 50.0
    assert tracker.fleet.cached_pair(1001, now=trio.current_time() + 101.0, ttl_s=100.0) is None


async def test_a_reload_of_the_status_settings_applies_from_the_next_sample(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Issue 10, item 2: the tracker read a copy of the settings that a reload replaced; it
    # now reads the one running value, so there is nothing to keep in step.
    running = LiveValue(SETTINGS)
    tracker = StatusTracker(PAIRS, running, wall_clock=wall)
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.serve)
        feed(tracker)
        first = trio.current_time()
        running.value = attrs.evolve(SETTINGS, max_data_age_s=2.0)
        assert tracker.config.max_data_age_s == 2.0
        # The sample already in hand keeps the age it arrived with...
        assert await wait_status(tracker, 1001, Status.NOT_WORKING) == first + 10.0
        # ...the next one is fresh for the new age only.
        feed(tracker)
        again = trio.current_time()
        assert await wait_status(tracker, 1001, Status.NOT_WORKING) == again + 2.0
        nursery.cancel_scope.cancel()


async def test_the_usual_sample_is_not_evaluated_and_silence_still_counts(
    tracker: StatusTracker, autojump_clock: trio.testing.MockClock, monkeypatch: Any
) -> None:
    """Samples that only move the times leave the evaluation to the staleness timer."""
    feed(tracker)
    await wait_status(tracker, 1001, Status.WORKING)
    machine = tracker._machines[1001]
    evaluations: list[float] = []
    evaluate = machine.evaluate

    def counted(now: float) -> Any:
        evaluations.append(now)
        return evaluate(now)

    monkeypatch.setattr(machine, "evaluate", counted)
    start = trio.current_time()
    for _ in range(25):
        await trio.sleep(1.0)
        feed(tracker)
    last = trio.current_time()
    # Only the timers evaluate: the first at the first staleness deadline, then one set from
    # the sample before it or at it (which task trio runs first at that instant is not fixed),
    # both well before the last sample; the next is due after it.
    assert evaluations[0] == start + 10.0
    assert len(evaluations) == 2
    assert evaluations[1] in {start + 19.0, start + 20.0}
    assert await wait_status(tracker, 1001, Status.NOT_WORKING) == last + SETTINGS.max_data_age_s
