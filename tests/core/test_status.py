"""The battery status state machine: every transition with exact times."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from distributord.core.config import StatusConfig
from distributord.core.model import (
    PLAUSIBLE_LIMIT,
    BatterySnapshot,
    InverterSnapshot,
    PowerBounds,
    StateCode,
    ValueFault,
    bad_battery_values,
)
from distributord.core.status import (
    BATTERY_HEALTHY_STATES,
    BATTERY_READY_STATES,
    Evaluation,
    Reason,
    Status,
    StatusMachine,
    battery_problems,
    select,
)
from tests.snapshots import battery_snapshot, inverter_snapshot

Snapshot = BatterySnapshot | InverterSnapshot
SETTINGS = StatusConfig(max_data_age_s=10.0, min_blocking_s=1.0, max_blocking_s=30.0)


battery = battery_snapshot
inverter = inverter_snapshot


def take(machine: StatusMachine, snapshot: Snapshot, received_at: float, sampled_at: float) -> bool:
    """Feed one sample that says it was taken at ``sampled_at`` (our clocks agree: one clock)."""
    snapshot = attrs.evolve(snapshot, sampled_at=sampled_at)
    offset = received_at - sampled_at
    if isinstance(snapshot, BatterySnapshot):
        return machine.battery_sample(snapshot, received_at=received_at, offset=offset)
    return machine.inverter_sample(snapshot, received_at=received_at, offset=offset)


def fed(at: float = 0.0, **battery_overrides: Any) -> StatusMachine:
    machine = StatusMachine(lambda: SETTINGS)
    take(machine, battery(**battery_overrides), at, at)
    take(machine, inverter(), at, at)
    return machine


def both_fresh(machine: StatusMachine, at: float) -> None:
    take(machine, battery(), at, at)
    take(machine, inverter(), at, at)


# --- starting and data -------------------------------------------------------------------------


def test_every_battery_starts_not_working() -> None:
    evaluation = StatusMachine(lambda: SETTINGS).evaluate(0.0)
    assert evaluation.status is Status.NOT_WORKING
    assert evaluation.reasons == {Reason.NO_BATTERY_DATA, Reason.NO_INVERTER_DATA}


def test_fresh_healthy_data_from_both_sides_is_working() -> None:
    machine = fed()
    assert machine.evaluate(0.0).status is Status.WORKING
    assert machine.evaluate(0.0).reasons == frozenset()


def test_one_side_alone_is_not_enough() -> None:
    machine = StatusMachine(lambda: SETTINGS)
    take(machine, battery(), 0.0, 0.0)
    assert machine.evaluate(0.0).reasons == {Reason.NO_INVERTER_DATA}


def test_staleness_exactly_max_data_age_after_receipt() -> None:
    machine = fed(at=100.0)
    take(machine, inverter(), 105.0, 105.0)
    assert machine.evaluate(109.999).status is Status.WORKING
    assert machine.next_change(100.0) == 110.0
    evaluation = machine.evaluate(110.0)
    assert evaluation.status is Status.NOT_WORKING
    assert evaluation.reasons == {Reason.STALE_BATTERY_DATA}
    assert machine.evaluate(115.0).reasons == {
        Reason.STALE_BATTERY_DATA,
        Reason.STALE_INVERTER_DATA,
    }


def test_a_re_sent_old_sample_counts_as_no_sample() -> None:
    machine = fed(at=100.0)
    # Arrives later, but says it was taken when the one before was: a source repeating itself.
    assert not take(machine, battery(), 105.0, 100.0)
    assert take(machine, inverter(), 105.0, 105.0)
    assert machine.next_change(105.0) == 110.0
    assert machine.evaluate(110.0).reasons == {Reason.STALE_BATTERY_DATA}


def test_an_older_sample_than_the_last_counts_as_no_sample_and_the_next_newer_one_does() -> None:
    machine = fed(at=100.0)
    assert not take(machine, battery(), 104.0, 99.0)
    # Newer than the one just before (not than the newest ever): one wrong time stamp far in
    # the future cannot keep a battery stale until the microgrid's clock gets there.
    assert take(machine, battery(), 108.0, 99.5)
    assert machine.next_change(108.0) == 110.0  # the inverter's
    assert machine.evaluate(112.0).reasons == {Reason.STALE_INVERTER_DATA}


def test_an_old_time_stamp_that_advances_is_clock_skew_not_staleness() -> None:
    machine = fed(at=100.0)
    # Taken 12 s before it arrived, by the microgrid's clock: its clock is behind ours.
    take(machine, battery(), 200.0, 188.0)
    take(machine, inverter(), 200.0, 200.0)
    assert machine.evaluate(200.0) == Evaluation(
        status=Status.WORKING, reasons=frozenset({Reason.CLOCK_SKEW})
    )
    assert machine.clock_offset == 12.0
    take(machine, battery(), 201.0, 200.5)  # back in step
    assert machine.evaluate(201.0) == Evaluation(status=Status.WORKING)


def test_clock_skew_is_a_reason_beside_any_status() -> None:
    machine = fed(at=0.0)
    take(machine, inverter(), 31.0, 1.0)  # 30 s behind
    take(machine, battery(), 31.0, 31.0)
    machine.evaluate(31.0)
    machine.command_failed(now=31.0)
    assert machine.evaluate(31.0).reasons == {Reason.BLOCKED_AFTER_FAILURE, Reason.CLOCK_SKEW}
    take(machine, battery(states=frozenset({StateCode.ERROR})), 31.5, 31.5)
    assert machine.evaluate(31.5).reasons == {Reason.BATTERY_ERROR_STATE, Reason.CLOCK_SKEW}


@pytest.mark.parametrize("offset", [-11.0, 10.001, 3600.0, -86_400.0])
def test_skew_is_an_offset_beyond_the_data_age(offset: float) -> None:
    machine = fed(at=0.0)
    take(machine, battery(), 100_000.0, 100_000.0 - offset)
    take(machine, inverter(), 100_000.0, 100_000.0)
    assert machine.skewed()
    assert machine.evaluate(100_005.0).status is Status.WORKING


@pytest.mark.parametrize("offset", [-10.0, 0.0, 9.99, 10.0])
def test_an_offset_within_the_data_age_is_not_skew(offset: float) -> None:
    machine = fed(at=0.0)
    take(machine, battery(), 100.0, 100.0 - offset)
    assert not machine.skewed()


def test_samples_alternately_an_hour_old_and_a_day_ahead_never_flap() -> None:
    machine = fed(at=0.0)
    seen = set()
    for n in range(200):  # 10 Hz for 20 s, each side in turn
        at = 0.1 * (n + 1)
        shifted = at - 3600.0 if n % 2 else at + 86_400.0
        take(machine, battery(), at, shifted)
        take(machine, inverter(), at, at)
        seen.add(machine.evaluate(at))
    assert seen == {Evaluation(status=Status.WORKING, reasons=frozenset({Reason.CLOCK_SKEW}))}


def test_an_unreachable_microgrid_is_one_reason_at_once_and_blocks_nothing_from_ending() -> None:
    machine = fed(at=0.0)
    machine.command_failed(now=0.0)
    machine.unreachable = True
    assert machine.evaluate(0.0) == Evaluation(
        status=Status.NOT_WORKING, reasons=frozenset({Reason.MICROGRID_UNREACHABLE})
    )
    assert machine.next_change(0.0) == math.inf  # no window's end turns it working
    assert machine.evaluate(2.0).status is Status.NOT_WORKING
    machine.unreachable = False
    both_fresh(machine, 3.0)
    assert machine.evaluate(3.0) == Evaluation(status=Status.WORKING)  # a recovery unblocks


def test_an_unreachable_microgrid_stays_not_working_even_with_fresh_samples() -> None:
    machine = fed(at=0.0)
    machine.unreachable = True
    both_fresh(machine, 1.0)
    assert machine.evaluate(1.0).reasons == {Reason.MICROGRID_UNREACHABLE}
    machine.unreachable = False
    assert machine.evaluate(1.0).status is Status.WORKING


def test_a_sample_that_does_not_say_when_it_was_taken_ages_from_receipt() -> None:
    machine = StatusMachine(lambda: SETTINGS)
    take(machine, battery(), 0.0, math.nan)
    take(machine, inverter(), 0.0, math.nan)
    assert machine.evaluate(9.0).status is Status.WORKING
    assert machine.next_change(0.0) == 10.0


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"soc_pct": math.nan}, Reason.NAN_SOC),
        ({"soc_pct": math.inf}, Reason.NAN_SOC),
        ({"capacity_wh": math.nan}, Reason.NAN_CAPACITY),
        ({"soc_lower_pct": math.nan}, Reason.NAN_SOC_BOUNDS),
        ({"states": frozenset({StateCode.READY, StateCode.ERROR})}, Reason.BATTERY_ERROR_STATE),
        ({"states": frozenset({StateCode.RELAY_CLOSED})}, Reason.BATTERY_ERROR_STATE),
        ({"states": frozenset()}, Reason.BATTERY_ERROR_STATE),
        ({"errors": frozenset({"overcurrent"})}, Reason.BATTERY_ERROR_CODE),
    ],
)
def test_unhealthy_battery_samples_are_not_working(
    overrides: dict[str, Any], reason: Reason
) -> None:
    assert fed(**overrides).evaluate(0.0) == attrs.evolve(
        fed().evaluate(0.0), status=Status.NOT_WORKING, reasons=frozenset({reason})
    )


@pytest.mark.parametrize("overrides", [{"soc_pct": 1e16}, {"capacity_wh": -1.0}])
def test_implausible_battery_values_leave_it_working(overrides: dict[str, Any]) -> None:
    # The shared rule (model.bad_battery_values) finds them, but only values that are not
    # finite make a battery unhealthy; the distribution excludes its pair instead.
    assert fed(**overrides).evaluate(0.0) == fed().evaluate(0.0)


@pytest.mark.parametrize(
    "state",
    [
        s
        for s in StateCode
        if s
        not in {StateCode.READY, StateCode.CHARGING, StateCode.DISCHARGING, StateCode.RELAY_CLOSED}
    ],
)
def test_each_unhealthy_battery_state_code_flips_to_not_working(state: StateCode) -> None:
    evaluation = fed(states=frozenset({StateCode.READY, state})).evaluate(0.0)
    assert evaluation.reasons == {Reason.BATTERY_ERROR_STATE}


@pytest.mark.parametrize(
    "state",
    [
        s
        for s in StateCode
        if s not in {StateCode.READY, StateCode.STANDBY, StateCode.CHARGING, StateCode.DISCHARGING}
    ],
)
def test_each_unhealthy_inverter_state_code_flips_to_not_working(state: StateCode) -> None:
    machine = fed()
    take(machine, inverter(states=frozenset({StateCode.READY, state})), 0.0, 0.5)
    assert machine.evaluate(0.0).reasons == {Reason.INVERTER_ERROR_STATE}


def test_an_inverter_error_code_flips_to_not_working() -> None:
    machine = fed()
    take(machine, inverter(errors=frozenset({"internal"})), 0.0, 0.5)
    assert machine.evaluate(0.0).reasons == {Reason.INVERTER_ERROR_CODE}


def test_warnings_never_change_status() -> None:
    machine = fed(warnings=frozenset({"battery_imbalance"}))
    take(machine, inverter(warnings=frozenset({"overtemperature"})), 0.0, 0.5)
    assert machine.evaluate(0.0).status is Status.WORKING


def test_bounds_from_one_side_are_enough_but_not_from_none() -> None:
    machine = fed(bounds=PowerBounds.unknown())
    assert machine.evaluate(0.0).status is Status.WORKING
    take(machine, inverter(bounds=PowerBounds.unknown()), 0.0, 0.5)
    assert machine.evaluate(0.0).reasons == {Reason.MISSING_BOUNDS}


# --- blocking windows ----------------------------------------------------------------------


def test_a_failure_makes_it_uncertain_until_the_window_ends() -> None:
    machine = fed()
    machine.evaluate(0.0)
    machine.command_failed(now=2.0)
    evaluation = machine.evaluate(2.0)
    assert evaluation.status is Status.UNCERTAIN
    assert evaluation.reasons == {Reason.BLOCKED_AFTER_FAILURE}
    assert evaluation.blocked_until == 3.0
    assert machine.next_change(2.0) == 3.0
    assert machine.evaluate(2.999).status is Status.UNCERTAIN
    assert machine.evaluate(3.0).status is Status.WORKING


def test_blocking_sequence_1_2_4_8_16_30_30() -> None:
    machine = fed()
    machine.evaluate(0.0)
    now, windows = 0.0, []
    for _ in range(7):
        both_fresh(machine, now)
        machine.command_failed(now=now)
        until = machine.evaluate(now).blocked_until
        assert until is not None
        windows.append(until - now)
        now = until  # the window has run out: the next failure doubles it
        both_fresh(machine, now)
        assert machine.evaluate(now).status is Status.WORKING
    assert windows == [1, 2, 4, 8, 16, 30, 30]


def test_failure_inside_window_changes_nothing() -> None:
    machine = fed()
    machine.evaluate(0.0)
    machine.command_failed(now=0.0)
    machine.command_failed(now=0.5)
    assert machine.evaluate(0.5).blocked_until == 1.0
    machine.command_failed(now=1.0)  # the window ran out: the next one is 2 s, not 4
    assert machine.evaluate(1.0).blocked_until == 3.0


def test_success_resets() -> None:
    machine = fed()
    machine.evaluate(0.0)
    machine.command_failed(now=0.0)
    machine.command_failed(now=1.0)
    assert machine.evaluate(1.0).blocked_until == 3.0
    machine.command_succeeded()
    assert machine.evaluate(1.5).status is Status.WORKING
    machine.command_failed(now=5.0)
    assert machine.evaluate(5.0).blocked_until == 6.0


def test_recovery_from_not_working_resets() -> None:
    machine = fed()
    machine.evaluate(0.0)
    machine.command_failed(now=0.0)
    machine.command_failed(now=1.0)  # window of 2 s
    assert machine.evaluate(1.5).status is Status.UNCERTAIN
    take(machine, inverter(states=frozenset({StateCode.ERROR})), 1.5, 1.5)
    assert machine.evaluate(1.5).status is Status.NOT_WORKING
    take(machine, inverter(), 1.6, 1.6)
    assert machine.evaluate(1.6).status is Status.WORKING  # unblocked although the window runs to 3
    machine.command_failed(now=1.7)
    assert machine.evaluate(1.7).blocked_until == pytest.approx(2.7)


def test_an_accepted_command_unblocks_but_only_a_final_success_resets_the_window() -> None:
    machine = fed()
    machine.evaluate(0.0)
    machine.command_failed(now=0.0)  # 1 s
    machine.command_succeeded(final=False)  # ACCEPTED: unblocked ...
    assert machine.evaluate(0.1).status is Status.WORKING
    machine.command_failed(now=0.2)  # ... and FAILED after the ramp: 2 s
    assert machine.evaluate(0.2).blocked_until == pytest.approx(2.2)
    machine.command_succeeded()  # a final SUCCESS: the next window is the minimum again
    machine.command_failed(now=3.0)
    assert machine.evaluate(3.0).blocked_until == 4.0


def test_failures_while_not_working_are_ignored() -> None:
    machine = StatusMachine(lambda: SETTINGS)
    machine.evaluate(0.0)
    machine.command_failed(now=0.0)
    both_fresh(machine, 0.5)
    assert machine.evaluate(0.5).status is Status.WORKING


def test_select_prefers_working_then_uncertain() -> None:
    statuses = {1: Status.WORKING, 2: Status.UNCERTAIN, 3: Status.NOT_WORKING, 4: Status.UNCERTAIN}
    assert select(statuses, {1, 2, 3}) == {1}
    assert select(statuses, {2, 3, 4}) == {2, 4}
    assert select(statuses, {3, 99}) == set()


# --- a stateful check against the spec's evaluation order ----------------------------------------


class Reference:
    """The spec, read literally, kept apart from the implementation."""

    def __init__(self) -> None:
        # Per side: receipt of the latest new sample, the latest sample's time, health, offset.
        self.sides: dict[str, list[Any] | None] = {"battery": None, "inverter": None}
        self.unreachable = False
        self.previous = Status.NOT_WORKING
        self.blocked_until: float | None = None
        self.last_window: float | None = None

    def sample(self, name: str, now: float, sampled_at: float, healthy: bool) -> None:
        side = self.sides[name]
        if side is None or sampled_at > side[1]:  # new: later than the sample before
            self.sides[name] = [now, sampled_at, healthy, now - sampled_at]
        else:  # counts as no sample, but is the one the next is compared with
            side[1] = sampled_at

    def skewed(self) -> bool:
        return any(
            side is not None and abs(side[3]) > SETTINGS.max_data_age_s
            for side in self.sides.values()
        )

    def usable(self, now: float) -> bool:
        if self.unreachable:
            return False
        for side in self.sides.values():
            if side is None:
                return False
            heard, _, healthy, _ = side
            # Fresh until heard + max_data_age: the deadline a timer fires at. (Written as
            # `now - heard >= age` it disagrees by rounding exactly at that deadline.)
            if not healthy or now >= heard + SETTINGS.max_data_age_s:
                return False
        return True

    def fail(self, now: float) -> None:
        if self.previous is Status.NOT_WORKING or (
            self.blocked_until is not None and now < self.blocked_until
        ):
            return
        window = (
            SETTINGS.min_blocking_s
            if self.last_window is None
            else min(2 * self.last_window, SETTINGS.max_blocking_s)
        )
        self.last_window = window
        self.blocked_until = now + window

    def succeed(self) -> None:
        self.blocked_until = self.last_window = None

    def evaluate(self, now: float) -> Status:
        if not self.usable(now):
            self.previous = Status.NOT_WORKING
        elif self.previous is Status.NOT_WORKING:
            self.succeed()
            self.previous = Status.WORKING
        elif self.blocked_until is not None and now < self.blocked_until:
            self.previous = Status.UNCERTAIN
        else:
            self.previous = Status.WORKING
        return self.previous


AGES = st.sampled_from([0.0, 0.0, 3.0, 9.5, 10.0, 12.0, -3600.0, 86_400.0])
"""How long before its receipt a sample says it was taken (negative: in the future)."""


class StatusRules(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.now = 0.0
        self.machine = StatusMachine(lambda: SETTINGS)
        self.reference = Reference()
        self.check()

    def check(self) -> None:
        evaluation = self.machine.evaluate(self.now)
        assert evaluation.status is self.reference.evaluate(self.now)
        assert (Reason.CLOCK_SKEW in evaluation.reasons) is (
            self.reference.skewed() and not self.reference.unreachable
        )

    @rule(healthy=st.booleans(), age=AGES)
    def battery_sample(self, healthy: bool, age: float) -> None:
        snapshot = battery() if healthy else battery(states=frozenset({StateCode.ERROR}))
        take(self.machine, snapshot, self.now, self.now - age)
        self.reference.sample("battery", self.now, self.now - age, healthy)
        self.check()

    @rule(healthy=st.booleans(), age=AGES)
    def inverter_sample(self, healthy: bool, age: float) -> None:
        snapshot = inverter() if healthy else inverter(errors=frozenset({"internal"}))
        take(self.machine, snapshot, self.now, self.now - age)
        self.reference.sample("inverter", self.now, self.now - age, healthy)
        self.check()

    @rule(unreachable=st.booleans())
    def link(self, unreachable: bool) -> None:
        self.machine.unreachable = self.reference.unreachable = unreachable
        self.check()

    @rule(dt=st.sampled_from([0.001, 0.25, 0.5, 1.0, 2.0, 4.0, 9.999, 10.0, 31.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.check()

    @rule()
    def to_next_change(self) -> None:
        """Jump exactly to the moment the machine says its status may change."""
        nxt = self.machine.next_change(self.now)
        if math.isfinite(nxt):
            self.now = nxt
            self.check()

    @rule()
    def fail(self) -> None:
        self.machine.command_failed(now=self.now)
        self.reference.fail(self.now)
        self.check()

    @rule()
    def succeed(self) -> None:
        self.machine.command_succeeded()
        self.reference.succeed()
        self.check()

    @invariant()
    def blocked_only_when_uncertain(self) -> None:
        evaluation = self.machine.evaluate(self.now)
        assert (evaluation.status is Status.UNCERTAIN) == (evaluation.blocked_until is not None)
        self.reference.evaluate(self.now)

    @precondition(lambda self: True)
    @rule()
    def next_change_is_in_the_future(self) -> None:
        assert self.machine.next_change(self.now) > self.now


TestStatusRules = StatusRules.TestCase


VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, PLAUSIBLE_LIMIT, -PLAUSIBLE_LIMIT, 2 * PLAUSIBLE_LIMIT]),
)
NOT_FINITE = {
    "soc_pct": Reason.NAN_SOC,
    "soc_lower_pct": Reason.NAN_SOC_BOUNDS,
    "soc_upper_pct": Reason.NAN_SOC_BOUNDS,
    "capacity_wh": Reason.NAN_CAPACITY,
}


@given(
    soc=VALUES,
    low=VALUES,
    high=VALUES,
    capacity=VALUES,
    states=st.frozensets(st.sampled_from(list(StateCode))),
    errors=st.frozensets(st.sampled_from(["overcurrent", "unknown_7"]), max_size=1),
)
def test_a_battery_samples_problems_are_its_values_not_finite_and_its_states_and_errors(
    soc: float,
    low: float,
    high: float,
    capacity: float,
    states: frozenset[StateCode],
    errors: frozenset[str],
) -> None:
    # battery_problems tests the values directly (it runs on every sample); the rule it
    # stands for is the shared one, bad_battery_values, of which only "not finite" counts.
    if low > high:
        low, high = high, low
    snapshot = battery(
        soc_pct=soc,
        soc_lower_pct=low,
        soc_upper_pct=high,
        capacity_wh=capacity,
        states=states,
        errors=errors,
    )
    expected = {
        NOT_FINITE[bad.field]
        for bad in bad_battery_values(snapshot)
        if bad.fault is ValueFault.NOT_FINITE
    }
    if not (states <= BATTERY_HEALTHY_STATES and states & BATTERY_READY_STATES):
        expected.add(Reason.BATTERY_ERROR_STATE)
    if errors:
        expected.add(Reason.BATTERY_ERROR_CODE)
    assert battery_problems(snapshot) == expected


UNKNOWN = PowerBounds.unknown()
SAMPLES: dict[str, dict[str, Any]] = {
    "healthy": {},
    "unhealthy": {"errors": frozenset({"internal"})},
    "no bounds": {"bounds": UNKNOWN},
}
CONFIGS = [SETTINGS, attrs.evolve(SETTINGS), attrs.evolve(SETTINGS, max_data_age_s=4.0)]
"""The configuration as reloads give it: the same, equal but another object, and shorter."""


class UnchangedRules(RuleBasedStateMachine):
    """:meth:`StatusMachine.unchanged` says so only when an evaluation would say the same.

    As the tracker does: after a new sample, the evaluation is skipped when ``unchanged``; here
    it is made anyway, and must equal the last one. Time passes, commands fail and succeed,
    the link breaks and the configuration is reloaded with no evaluation in between, as they
    do between a timer and a sample.
    """

    @initialize()
    def start(self) -> None:
        self.now = 0.0
        self.config = SETTINGS
        self.machine = StatusMachine(lambda: self.config)
        self.last = self.machine.evaluate(self.now)
        self.skipped = 0

    def sampled(self, new: bool) -> None:
        if not new:
            return
        if self.machine.unchanged(self.now):
            self.skipped += 1
            assert self.machine.evaluate(self.now) == self.last
        else:
            self.last = self.machine.evaluate(self.now)

    @rule(kind=st.sampled_from(sorted(SAMPLES)), age=AGES, later=st.booleans())
    def battery_sample(self, kind: str, age: float, later: bool) -> None:
        self.now += 0.5 if later else 0.0
        new = take(self.machine, battery(**SAMPLES[kind]), self.now, self.now - age)
        self.sampled(new)

    @rule(kind=st.sampled_from(sorted(SAMPLES)), age=AGES, later=st.booleans())
    def inverter_sample(self, kind: str, age: float, later: bool) -> None:
        self.now += 0.5 if later else 0.0
        new = take(self.machine, inverter(**SAMPLES[kind]), self.now, self.now - age)
        self.sampled(new)

    @rule(dt=st.sampled_from([0.001, 1.0, 3.999, 4.0, 9.999, 10.0, 31.0]))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def to_next_change(self) -> None:
        nxt = self.machine.next_change(self.now)
        if math.isfinite(nxt):
            self.now = nxt

    @rule()
    def evaluate(self) -> None:
        self.last = self.machine.evaluate(self.now)

    @rule()
    def fail(self) -> None:
        self.machine.command_failed(now=self.now)

    @rule(final=st.booleans())
    def succeed(self, final: bool) -> None:
        self.machine.command_succeeded(final=final)

    @rule(unreachable=st.booleans())
    def link(self, unreachable: bool) -> None:
        self.machine.unreachable = unreachable

    @rule(config=st.sampled_from(CONFIGS))
    def reload(self, config: StatusConfig) -> None:
        self.config = config


TestUnchangedRules = UnchangedRules.TestCase


def test_the_usual_sample_is_unchanged() -> None:
    """A healthy working battery's next samples change nothing but their times."""
    machine = fed(0.0)
    assert machine.evaluate(0.0).status is Status.WORKING
    for at in (1.0, 2.0):
        take(machine, battery(), at, at)
        assert machine.unchanged(at)
        take(machine, inverter(), at, at)
        assert machine.unchanged(at)
    take(machine, battery(errors=frozenset({"internal"})), 3.0, 3.0)
    assert not machine.unchanged(3.0)


def test_after_a_reload_the_usual_sample_is_evaluated() -> None:
    """A shorter ``max_data_age_s`` can make both offsets skew: the last evaluation is no guide."""
    config = SETTINGS
    machine = StatusMachine(lambda: config)
    take(machine, battery(), 0.0, -9.5)
    take(machine, inverter(), 0.0, -9.5)
    assert machine.evaluate(0.0) == Evaluation(status=Status.WORKING)
    take(machine, battery(), 1.0, -8.5)
    assert machine.unchanged(1.0)
    config = attrs.evolve(SETTINGS, max_data_age_s=4.0)
    take(machine, battery(), 2.0, -7.5)
    assert not machine.unchanged(2.0)
    assert machine.evaluate(2.0).reasons == {Reason.CLOCK_SKEW}
    take(machine, battery(), 3.0, -6.5)
    assert machine.unchanged(3.0)
