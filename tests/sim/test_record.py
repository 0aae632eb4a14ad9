"""The simulator's record, alone: what it keeps, what it forgets, and what its helpers answer."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.sim.record import (
    Change,
    Command,
    Counts,
    Expiry,
    Outcome,
    Recorder,
    ramp_end,
    ramped,
)


def command(inverter_id: int, at: float, power_w: float, outcome: Outcome) -> Command:
    return Command(
        inverter_id=inverter_id,
        at=at,
        received_at=at,
        power_w=power_w,
        lifetime_s=10,
        outcome=outcome,
    )


def test_a_change_only_when_the_power_held_changes() -> None:
    recorder = Recorder([1], now=0.0)
    recorder.command(command(1, 1.0, 500.0, Outcome.APPLIED))
    recorder.change(1, at=1.0, to_w=500.0, until=11.0)
    recorder.command(command(1, 2.0, 500.0, Outcome.APPLIED))  # a refresh
    recorder.change(1, at=2.0, to_w=500.0, until=12.0)
    recorder.command(command(1, 3.0, 0.0, Outcome.APPLIED))
    recorder.change(1, at=3.0, to_w=0.0, until=13.0)
    record = recorder.snapshot(4.0)
    assert record.changes() == [
        Change(inverter_id=1, at=1.0, from_w=0.0, to_w=500.0, until=11.0),
        Change(inverter_id=1, at=3.0, from_w=500.0, to_w=0.0, until=13.0),
    ]
    assert [c.at for c in record.commands()] == [1.0, 2.0, 3.0]
    assert record.counts(1) == Counts(
        commands={Outcome.APPLIED: 3}, changes=2, expiries=0, lapses=0
    )


def test_an_expiry_of_a_non_zero_setpoint_is_a_lapse() -> None:
    recorder = Recorder([1, 2], now=0.0)
    recorder.change(1, at=1.0, to_w=-300.0, until=11.0)
    recorder.expiry(1, at=11.0, power_w=-300.0)
    recorder.expiry(2, at=12.0, power_w=0.0)  # a 0 W setpoint's lifetime ended: no power lost
    record = recorder.snapshot(20.0)
    assert record.expiries() == [
        Expiry(inverter_id=1, at=11.0, power_w=-300.0),
        Expiry(inverter_id=2, at=12.0, power_w=0.0),
    ]
    assert record.lapses() == [Expiry(inverter_id=1, at=11.0, power_w=-300.0)]
    assert record.lapses(since=11.5) == []
    assert record.lapses([2]) == []
    assert record.counts(1).lapses == 1
    assert record.counts(2) == Counts(commands={}, changes=0, expiries=1, lapses=0)
    assert record.held_at(1, 10.999) == -300.0
    assert record.held_at(1, 11.0) == 0.0  # from the expiry instant on


def test_held_at_is_what_holds_after_everything_at_that_instant() -> None:
    recorder = Recorder([1], now=0.0)
    recorder.change(1, at=5.0, to_w=100.0, until=15.0)
    recorder.expiry(1, at=15.0, power_w=100.0)
    recorder.change(1, at=15.0, to_w=200.0, until=25.0)  # re-sent at the very instant
    record = recorder.snapshot(30.0)
    assert [record.held_at(1, t) for t in (0.0, 4.9, 5.0, 14.9, 15.0, 30.0)] == [
        0.0,
        0.0,
        100.0,
        100.0,
        200.0,
        200.0,
    ]
    assert record.log(1).steps() == [(0.0, 0.0), (5.0, 100.0), (15.0, 200.0)]
    assert record.lapses() == [Expiry(inverter_id=1, at=15.0, power_w=100.0)]  # still a lapse


def test_the_total_of_a_set_over_time() -> None:
    recorder = Recorder([1, 2, 3], now=0.0)
    recorder.change(1, at=1.0, to_w=1000.0, until=11.0)
    recorder.change(2, at=2.0, to_w=1000.0, until=12.0)
    recorder.change(3, at=2.0, to_w=-5000.0, until=12.0)  # not in the set
    recorder.change(1, at=3.0, to_w=500.0, until=13.0)
    recorder.change(2, at=3.0, to_w=1500.0, until=13.0)  # one instant: the total stays 2000
    recorder.expiry(1, at=13.0, power_w=500.0)
    recorder.expiry(2, at=13.0, power_w=1500.0)
    record = recorder.snapshot(20.0)
    assert record.timeline([1, 2], start=0.0) == [
        (0.0, 0.0),
        (1.0, 1000.0),
        (2.0, 2000.0),
        (13.0, 0.0),
    ]
    assert record.timeline([1, 2], start=2.5, end=12.0) == [(2.5, 2000.0)]
    assert record.max_total([1, 2], start=0.0) == 2000.0
    assert record.max_total([1, 2], start=0.0, end=1.5) == 1000.0
    assert record.max_total([1, 2], start=13.0) == 0.0
    assert record.min_total([1, 2, 3], start=0.0, end=12.9) == -3000.0
    assert record.min_total([1, 2, 3], start=0.0) == -5000.0  # 3 alone, once 1 and 2 expired
    assert record.min_total([1, 2, 3], start=0.0, end=1.0) == 0.0


def test_questions_outside_what_the_record_knows_are_refused() -> None:
    recorder = Recorder([1], now=10.0)
    record = recorder.snapshot(20.0)
    with pytest.raises(ValueError, match=r"complete only from 10.0"):
        record.held_at(1, 9.0)
    with pytest.raises(ValueError, match=r"describes up to 20.0"):
        record.max_total([1], start=10.0, end=21.0)
    with pytest.raises(KeyError, match="no inverter 7"):
        record.held_at(7, 15.0)
    with pytest.raises(KeyError, match="no inverter 7"):
        record.lapses([7])
    assert record.held_at(1, 10.0) == 0.0


def test_commands_to_other_components_are_not_recorded() -> None:
    recorder = Recorder([1], now=0.0)
    recorder.command(command(1001, 1.0, 5.0, Outcome.REJECTED))
    record = recorder.snapshot(2.0)
    assert record.commands() == []
    assert set(record.logs) == {1}


def test_a_snapshot_does_not_change_afterwards() -> None:
    recorder = Recorder([1], now=0.0)
    recorder.change(1, at=1.0, to_w=1.0, until=11.0)
    before = recorder.snapshot(1.0)
    recorder.change(1, at=2.0, to_w=2.0, until=12.0)
    assert len(before.events()) == 1
    assert before.counts(1).changes == 1
    assert len(recorder.snapshot(2.0).events()) == 2


def test_forgotten_events_keep_the_power_held_known_and_the_counts() -> None:
    recorder = Recorder([1], now=0.0, maxlen=2)
    recorder.change(1, at=1.0, to_w=100.0, until=11.0)
    recorder.command(command(1, 2.0, 100.0, Outcome.APPLIED))
    recorder.expiry(1, at=11.0, power_w=100.0)
    recorder.change(1, at=12.0, to_w=300.0, until=22.0)
    record = recorder.snapshot(13.0)
    log = record.log(1)
    assert (log.start, log.start_w) == (2.0, 100.0)  # the command at 2 s went last
    assert [type(e) for e in log.events] == [Expiry, Change]
    assert record.held_at(1, 2.0) == 100.0
    assert record.timeline([1], start=2.0) == [(2.0, 100.0), (11.0, 0.0), (12.0, 300.0)]
    assert record.counts(1) == Counts(
        commands={Outcome.APPLIED: 1}, changes=2, expiries=1, lapses=1
    )
    with pytest.raises(ValueError, match="forgotten"):
        record.held_at(1, 1.5)


def test_the_default_bound_is_shared_out_with_a_floor() -> None:
    assert Recorder(range(10), now=0.0).maxlen == 30_000  # a 10-inverter soak fits
    assert Recorder(range(2000), now=0.0).maxlen == 256
    with pytest.raises(ValueError, match="maxlen"):
        Recorder([1], now=0.0, maxlen=0)


# A history: (seconds later, inverter, what happens: a power set, or None for an expiry).
_histories = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]),
        st.sampled_from([1, 2, 3]),
        st.none() | st.sampled_from([0.0, 0.1, 0.2, 0.3, -0.3, 1e16, -1e16, 1.0, 5000.0]),
    ),
    max_size=40,
)


@given(_histories, st.integers(1, 5))
def test_a_bounded_record_answers_like_the_truth_wherever_it_is_complete(
    history: list[tuple[float, int, float | None]], maxlen: int
) -> None:
    """A brute-force model of the power held; the record, bounded or not, must agree with it."""
    bounded = Recorder([1, 2, 3], now=0.0, maxlen=maxlen)
    unbounded = Recorder([1, 2, 3], now=0.0)
    held = {1: 0.0, 2: 0.0, 3: 0.0}
    truth: list[tuple[float, dict[int, float]]] = [(0.0, dict(held))]
    now = 0.0
    for later, inverter, power in history:
        now += later
        for recorder in (bounded, unbounded):
            if power is None:
                recorder.expiry(inverter, at=now, power_w=held[inverter])
            else:
                recorder.change(inverter, at=now, to_w=power, until=now + 10.0)
        held[inverter] = 0.0 if power is None else power
        truth.append((now, dict(held)))
    end = now + 1.0

    def true_total(inverters: list[int], at: float) -> float:
        state = [h for t, h in truth if t <= at][-1]
        return math.fsum(state[i] for i in inverters)

    full, kept = unbounded.snapshot(end), bounded.snapshot(end)
    start = max(log.start for log in kept.logs.values())
    instants = sorted({start, end, *(t for t, _ in truth if t >= start)})
    probes = instants + [(a + b) / 2 for a, b in itertools.pairwise(instants)]
    for inverters in ([1], [1, 2], [1, 2, 3]):
        for record in (full, kept):
            steps = record.timeline(inverters, start=start)
            for at in probes:
                from_steps = [total for t, total in steps if t <= at][-1]
                assert from_steps == true_total(inverters, at)
            assert record.max_total(inverters, start=start) == max(
                true_total(inverters, at) for at in probes
            )
            assert record.min_total(inverters, start=start) == min(
                true_total(inverters, at) for at in probes
            )
        for at in probes:
            assert kept.held_at(inverters[-1], at) == full.held_at(inverters[-1], at)
    for inverter in (1, 2, 3):
        assert kept.counts(inverter) == full.counts(inverter)
    assert full.lapses() == [e for e in full.expiries() if e.power_w != 0.0]


# --- applied power: ramps ------------------------------------------------------------------------


def test_a_ramp_moves_linearly_and_stops_exactly_at_its_target() -> None:
    # -40 kW at 10 kW/s, from 0 W at 2 s: 4 s, reached at 6 s.
    assert ramp_end(0.0, -40_000.0, 10_000.0, 2.0) == 6.0
    assert [ramped(0.0, -40_000.0, 10_000.0, 2.0, t) for t in (2.0, 3.0, 5.5, 6.0, 9.0)] == [
        0.0,
        -10_000.0,
        -35_000.0,
        -40_000.0,
        -40_000.0,
    ]
    assert ramp_end(500.0, 500.0, 1.0, 7.0) == 7.0  # there already


@given(
    st.floats(-1e6, 1e6),
    st.floats(-1e6, 1e6),
    st.floats(1e-3, 1e6),
    st.floats(0.0, 1e4),
    st.floats(0.0, 1e4),
)
def test_a_ramp_never_overshoots_nor_goes_faster_than_its_rate(
    start: float, target: float, rate: float, first: float, second: float
) -> None:
    early, late = sorted((first, second))
    a, b = ramped(start, target, rate, 0.0, early), ramped(start, target, rate, 0.0, late)
    low, high = sorted((start, target))
    assert low <= a <= high
    assert low <= b <= high
    assert abs(b - a) <= rate * (late - early) * (1 + 1e-9) + 1e-9 * abs(target - start)
    assert abs(target - b) <= abs(target - a)  # always toward the target
    assert ramped(start, target, rate, 0.0, ramp_end(start, target, rate, 0.0)) == target


def test_without_a_ramp_rate_the_applied_power_is_what_is_held() -> None:
    recorder = Recorder([1], now=0.0)
    recorder.change(1, at=5.0, to_w=100.0, until=15.0)
    recorder.expiry(1, at=15.0, power_w=100.0)
    record = recorder.snapshot(20.0)
    assert [record.applied_at(1, t) for t in (4.9, 5.0, 14.9, 15.0)] == [0.0, 100.0, 100.0, 0.0]
    assert record.log(1).applied(20.0) == [
        (0.0, 0.0),
        (5.0, 0.0),
        (5.0, 100.0),
        (15.0, 100.0),
        (15.0, 0.0),
        (20.0, 0.0),
    ]


def test_a_ramping_inverters_applied_power_follows_what_it_holds_at_its_rate() -> None:
    recorder = Recorder([1], now=0.0, ramps={1: 50.0})
    recorder.change(1, at=5.0, to_w=100.0, until=15.0)  # reached at 7 s
    recorder.change(1, at=10.0, to_w=-100.0, until=20.0)  # through 0 at 12 s, there at 14 s
    recorder.expiry(1, at=20.0, power_w=-100.0)  # back to 0 at 22 s
    recorder.change(1, at=30.0, to_w=200.0, until=40.0)
    recorder.change(1, at=31.0, to_w=0.0, until=math.inf, at_once=True)  # stopped: cut
    record = recorder.snapshot(40.0)
    assert record.log(1).applied(40.0) == [
        (0.0, 0.0),
        (5.0, 0.0),
        (7.0, 100.0),
        (10.0, 100.0),
        (14.0, -100.0),
        (20.0, -100.0),
        (22.0, 0.0),
        (30.0, 0.0),
        (31.0, 50.0),
        (31.0, 0.0),
        (40.0, 0.0),
    ]
    assert [record.applied_at(1, t) for t in (6.0, 12.0, 21.0, 30.5, 31.0)] == [
        50.0,
        0.0,
        -50.0,
        25.0,
        0.0,
    ]
    assert record.held_at(1, 6.0) == 100.0  # held: at once


def test_a_forgotten_start_keeps_the_applied_power_known() -> None:
    full = Recorder([1], now=0.0, ramps={1: 10.0})
    short = Recorder([1], now=0.0, ramps={1: 10.0}, maxlen=1)
    for recorder in (full, short):
        recorder.change(1, at=0.0, to_w=100.0, until=60.0)
        recorder.change(1, at=4.0, to_w=-100.0, until=60.0)
        recorder.change(1, at=6.0, to_w=0.0, until=60.0)
    kept, everything = short.snapshot(30.0), full.snapshot(30.0)
    assert (kept.log(1).start, kept.log(1).start_applied_w) == (4.0, 40.0)
    for t in (4.0, 5.0, 6.0, 7.0, 30.0):
        assert kept.applied_at(1, t) == everything.applied_at(1, t)
