"""The setpoint ledger: directed rules, and a state machine against a model of the inverters."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from distributord.core.errors import (
    CommandFailedError,
    CommandOverriddenError,
    CommandRejectedError,
)
from distributord.core.ledger import REFRESH_AT, Ledger, State, fate

OWNER = frozenset({1})


def send_all(ledger: Ledger, now: float, lifetime_s: float = 60.0) -> dict[int, float]:
    """Send everything due (as the commander does); inverter → power sent."""
    sent = {}
    for due in ledger.due(now):
        ledger.sent(due.inverter, due.power_w, lifetime_s, now=now)
        sent[due.inverter] = due.power_w
    return sent


def land_all(ledger: Ledger, now: float, state: State = State.CONFIRMED) -> None:
    for inverter in (1, 2, 3):
        last = ledger.last(inverter)
        if last is not None and last.state is State.SENDING:
            ledger.answered(last, state, now=now)


# -- directed ----------------------------------------------------------------------------------


def test_a_wanted_power_is_sent_at_once_and_refreshed_a_third_into_its_own_lifetime() -> None:
    ledger = Ledger()
    ledger.want(OWNER, {1: 500.0})
    assert send_all(ledger, 0.0, lifetime_s=30.0) == {1: 500.0}
    assert ledger.due(0.0) == []  # in flight
    land_all(ledger, 0.5)
    assert ledger.next_due(0.5) == 10.0
    assert send_all(ledger, 9.99) == {}
    # Sent again with a longer lifetime (a reload): the next refresh follows that one.
    assert send_all(ledger, 10.0, lifetime_s=60.0) == {1: 500.0}
    land_all(ledger, 10.0)
    assert ledger.next_due(10.0) == 30.0


def test_power_nobody_wants_is_released_at_once_and_a_landed_zero_is_not_refreshed() -> None:
    ledger = Ledger()
    ledger.want(OWNER, {1: 500.0, 2: 500.0})
    send_all(ledger, 0.0)
    land_all(ledger, 0.0)
    ledger.want(OWNER, {1: 500.0})  # 2 leaves the set
    assert [(d.inverter, d.power_w, d.release) for d in ledger.due(1.0)] == [(2, 0.0, True)]
    send_all(ledger, 1.0)
    land_all(ledger, 1.0)
    assert ledger.belief(2, 1.0) == 0.0
    assert ledger.next_due(1.0) == 20.0  # 1's refresh; 2 needs nothing ever again
    assert [d.inverter for d in ledger.due(1000.0)] == [1]


def test_an_explicit_zero_that_never_held_power_sends_nothing() -> None:
    ledger = Ledger()
    ledger.want(OWNER, {1: 0.0})
    assert ledger.due(0.0) == []
    assert not ledger.known_idle(1, 0.0)  # never commanded: a predecessor may have left power


def test_a_zero_share_stands_once_sent_until_power_may_be_in_force_again() -> None:
    ledger = Ledger()
    assert not ledger.zero_stands(1, 0.0)  # never commanded: what it holds is not known
    ledger.want(OWNER, {1: 500.0})
    send_all(ledger, 0.0)
    land_all(ledger, 0.0)
    assert not ledger.zero_stands(1, 1.0)  # it holds 500 W
    zero = ledger.sent(1, 0.0, 60.0, now=1.0)
    assert not ledger.zero_stands(1, 1.0)  # under way: a request wants its own outcome
    ledger.answered(zero, State.FAILED, now=1.5)
    assert not ledger.zero_stands(1, 2.0)  # the 500 W may still be in force
    assert ledger.zero_stands(1, 60.5)  # ... until its lifetime ran out
    again = ledger.sent(1, 0.0, 60.0, now=61.0)
    ledger.answered(again, State.UNKNOWN, now=61.0)
    assert not ledger.zero_stands(1, 62.0)  # it may never have got there: sent again
    third = ledger.sent(1, 0.0, 60.0, now=62.0)
    ledger.answered(third, State.CONFIRMED, now=62.0)
    assert ledger.zero_stands(1, 63.0)


@pytest.mark.parametrize("state", [State.UNKNOWN, State.ACCEPTED, State.CONFIRMED])
def test_a_command_that_may_have_been_applied_holds_until_its_own_lifetime_ends(
    state: State,
) -> None:
    ledger = Ledger()
    ledger.want(OWNER, {1: 800.0})
    send_all(ledger, 0.0, lifetime_s=10.0)
    land_all(ledger, 2.0, state)
    ledger.drop(OWNER)
    assert ledger.may_hold_power(1, 11.9)
    assert ledger.belief(1, 11.9) == 800.0
    assert [d.power_w for d in ledger.due(3.0)] == [0.0]
    assert not ledger.may_hold_power(1, 12.0)  # answered at 2, so received by 2
    assert ledger.belief(1, 12.0) is None


@pytest.mark.parametrize("state", [State.REFUSED, State.FAILED])
def test_a_command_that_was_not_applied_leaves_what_was_in_force(state: State) -> None:
    ledger = Ledger()
    ledger.want(OWNER, {1: 800.0})
    send_all(ledger, 0.0, lifetime_s=30.0)
    land_all(ledger, 0.0)
    ledger.want(OWNER, {1: 300.0})
    send_all(ledger, 1.0, lifetime_s=30.0)
    land_all(ledger, 1.0, state)
    assert ledger.belief(1, 5.0) == 800.0
    ledger.drop(OWNER)
    assert [d.power_w for d in ledger.due(5.0)] == [0.0]  # the 800 W is still to release


def test_failures_back_off_doubling_up_to_a_third_of_the_lifetime_and_reset_on_success() -> None:
    ledger = Ledger(retry_first_s=1.0)
    ledger.want(OWNER, {1: 500.0})
    now = 0.0
    waits = []
    for _ in range(7):
        send_all(ledger, now, lifetime_s=15.0)
        land_all(ledger, now, State.FAILED)
        later = ledger.next_due(now)
        waits.append(later - now)
        now = later
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    send_all(ledger, now, lifetime_s=15.0)
    land_all(ledger, now)
    send_all(ledger, now + 5.0, lifetime_s=15.0)
    land_all(ledger, now + 5.0, State.FAILED)
    assert ledger.next_due(now + 5.0) == now + 6.0


def test_accepted_then_failed_backs_off_as_a_failure_does() -> None:
    # Issue 21: a ramping inverter answers ACCEPTED (a success for the request) and FAILED
    # later. ACCEPTED must not reset the backoff, or an inverter that always fails after its
    # ramp is commanded again every second; its final SUCCESS does reset it.
    ledger = Ledger(retry_first_s=1.0)
    ledger.want(OWNER, {1: 500.0})
    now = 0.0
    waits = []
    for _ in range(5):
        send_all(ledger, now, lifetime_s=15.0)
        land_all(ledger, now, State.ACCEPTED)
        accepted = ledger.last(1)
        assert accepted is not None
        ledger.answered(accepted, State.FAILED, now=now)  # the final reply, after the ramp
        later = ledger.next_due(now)
        waits.append(later - now)
        now = later
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    send_all(ledger, now, lifetime_s=15.0)
    land_all(ledger, now, State.ACCEPTED)
    confirmed = ledger.last(1)
    assert confirmed is not None
    ledger.answered(confirmed, State.CONFIRMED, now=now + 1.0)  # SUCCESS: the backoff resets
    send_all(ledger, now + 5.0, lifetime_s=15.0)
    land_all(ledger, now + 5.0, State.FAILED)
    assert ledger.next_due(now + 5.0) == now + 6.0


def test_an_accepted_command_is_refreshed_on_time_after_an_earlier_failure() -> None:
    # Found by tests/shell/test_setpoints.py: a superseded command's unknown fate set a retry a
    # second away; the ACCEPTED that followed kept it, and held back the refresh past the
    # setpoint's lifetime.
    ledger = Ledger(retry_first_s=1.0)
    ledger.want(OWNER, {1: 500.0})
    send_all(ledger, 0.0, lifetime_s=0.5)
    land_all(ledger, 0.0, State.UNKNOWN)  # a retry is due 1 s later
    ledger.want(OWNER, {1: 400.0})  # a new decision goes out at once
    send_all(ledger, 0.1, lifetime_s=0.5)
    land_all(ledger, 0.1, State.ACCEPTED)
    assert ledger.next_due(0.1) == pytest.approx(0.1 + 0.5 / 3)  # its refresh, not the retry


def test_a_new_decision_is_not_held_back_by_the_backoff() -> None:
    ledger = Ledger()
    ledger.want(OWNER, {1: 500.0})
    send_all(ledger, 0.0)
    land_all(ledger, 0.0, State.UNKNOWN)
    assert ledger.due(0.5) == []  # the same 500 W waits for its retry
    ledger.drop(OWNER)
    assert [d.power_w for d in ledger.due(0.5)] == [0.0]  # a release does not


def test_a_changed_want_supersedes_the_command_in_flight() -> None:
    ledger = Ledger()
    ledger.want(OWNER, {1: 500.0})
    first = ledger.sent(1, 500.0, 60.0, now=0.0)
    ledger.want(OWNER, {1: 200.0})
    (due,) = ledger.due(1.0)
    assert (due.power_w, due.supersedes) == (200.0, first.seq)
    ledger.sent(1, 200.0, 60.0, now=1.0)
    # The superseded one may have been applied: until 61 it counts, under the newer one.
    assert ledger.may_hold_power(1, 60.9)
    ledger.answered(first, State.UNKNOWN, now=1.0)
    assert ledger.belief(1, 2.0) == 500.0  # the newer has not landed


def test_an_inverter_passes_to_its_new_owner_and_the_old_owner_lets_go_of_it_only() -> None:
    ledger = Ledger()
    a, b = frozenset({1, 2}), frozenset({2, 3})
    ledger.want(a, {1: 100.0, 2: 100.0})
    ledger.want(b, {2: 50.0, 3: 50.0})
    assert (ledger.owner(2), ledger.wanted(2)) == (b, 50.0)
    ledger.drop(a)
    assert (ledger.wanted(1), ledger.wanted(2)) == (None, 50.0)


def test_what_an_inverter_may_hold_includes_nothing_until_a_command_surely_holds() -> None:
    ledger = Ledger()
    assert ledger.possible(1, 0.0) == {0.0}
    ledger.want(OWNER, {1: 500.0})
    send_all(ledger, 0.0, lifetime_s=10.0)
    assert ledger.possible(1, 0.0) == {0.0, 500.0}  # in flight
    land_all(ledger, 0.0)
    assert ledger.possible(1, 1.0) == {500.0}
    ledger.drop(OWNER)
    send_all(ledger, 1.0, lifetime_s=10.0)
    land_all(ledger, 1.0)
    assert ledger.possible(1, 2.0) == {0.0}  # a landed 0 W is a power it holds
    assert ledger.possible(1, 20.0) == {0.0}


def test_what_is_kept_is_bounded() -> None:
    ledger = Ledger()
    ledger.want(OWNER, {1: 500.0})
    for step in range(1000):
        now = step * 20.0
        send_all(ledger, now, lifetime_s=60.0)
        land_all(ledger, now)
    entry = ledger._entries[1]
    assert len(entry.commands) == 1


def landed_500(lifetime_s: float = 60.0) -> Ledger:
    """A ledger whose inverter 1 holds 500 W, sent and confirmed at 0 s."""
    ledger = Ledger()
    ledger.want(OWNER, {1: 500.0})
    send_all(ledger, 0.0, lifetime_s)
    land_all(ledger, 0.0)
    return ledger


def test_power_that_runs_out_unrefreshed_is_one_lapse_counted_once() -> None:
    ledger = landed_500()
    assert ledger.lapses(59.9) == 0
    assert ledger.lapses(60.0) == 1
    assert ledger.lapses(1000.0) == 1  # the same power, counted once


def test_a_refresh_or_release_that_lands_in_time_is_no_lapse() -> None:
    ledger = landed_500()
    assert send_all(ledger, 20.0) == {1: 500.0}
    land_all(ledger, 20.5)
    assert ledger.lapses(70.0) == 0  # the refresh holds until 80.5
    ledger.drop(OWNER)
    assert send_all(ledger, 30.0) == {1: 0.0}
    land_all(ledger, 30.1)
    assert ledger.lapses(1000.0) == 0  # released: 0 W by the daemon's decision


@pytest.mark.parametrize("state", [State.FAILED, State.REFUSED])
def test_a_release_the_inverter_did_not_apply_leaves_the_power_to_lapse(state: State) -> None:
    ledger = landed_500()
    ledger.drop(OWNER)
    send_all(ledger, 1.0)
    land_all(ledger, 1.1, state)
    assert ledger.lapses(59.0) == 0
    assert ledger.lapses(60.0) == 1


def test_a_command_in_flight_sent_in_time_decides_by_its_answer() -> None:
    for state, lapses in ((State.CONFIRMED, 0), (State.FAILED, 1)):
        ledger = landed_500()
        assert send_all(ledger, 50.0) == {1: 500.0}  # late, but before 60 s
        assert ledger.lapses(70.0) == 0  # in flight: it may land in time
        land_all(ledger, 70.0, state)
        assert ledger.lapses(70.0) == lapses, state


def test_a_lapse_is_counted_before_what_ran_out_is_pruned() -> None:
    ledger = landed_500()
    # Nobody reads the count until after a new command to the inverter landed.
    assert send_all(ledger, 65.0) == {1: 500.0}
    land_all(ledger, 65.1)
    assert ledger.lapses(66.0) == 1
    assert ledger.lapses(200.0) == 2  # and the new one ran out too


def test_power_that_may_have_landed_holds_until_its_own_lifetime_ends() -> None:
    ledger = landed_500()
    assert send_all(ledger, 20.0) == {1: 500.0}
    land_all(ledger, 21.0, State.UNKNOWN)  # a timeout: it may hold until 81 s
    assert ledger.lapses(80.0) == 0
    assert ledger.lapses(81.0) == 1


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (1e9, State.CONFIRMED),
        (CommandRejectedError("OUT_OF_RANGE"), State.REFUSED),
        (CommandOverriddenError("OVERRIDDEN"), State.FAILED),
        (CommandFailedError("FAILED"), State.FAILED),
        (CommandFailedError("NOT_FOUND"), State.FAILED),
        (CommandFailedError("NO_FINAL_REPLY"), State.UNKNOWN),
        (CommandFailedError("UNAVAILABLE"), State.UNKNOWN),
        (CommandFailedError("DEADLINE"), State.UNKNOWN),
    ],
)
def test_what_an_outcome_says_of_the_command(outcome: float | Exception, state: State) -> None:
    assert fate(outcome) is state  # type: ignore[arg-type]


# -- against a model of the inverters ----------------------------------------------------------

INVERTERS = (1, 2, 3)
FATES = ("ok", "ok", "ok", "refused", "failed", "lost", "lost_applied", "late_applied", "silent")
"""What happens to a command: applied and answered; refused or failed (not applied); ended
without a verdict, not applied, applied when sent, or applied just before it ended; no answer
at all until its deadline (then it ends unknown)."""

DEADLINE_S = 5.0


@attrs.define
class Held:
    """What an inverter really holds: a power until a time."""

    power_w: float
    until: float


@attrs.define
class Pending:
    """A command's future in the model."""

    inverter: int
    seq: int
    fate: str
    answer_at: float


class TwinLedgers:
    """Two ledgers given the same calls, which must answer alike; only the first counts lapses.

    The lapse count reads the ledger's commands (and prunes nothing more than it would): with it
    read between any two steps, every decision (what is due, when, what is believed held) is
    the same as a ledger's that is never asked.
    """

    def __init__(self) -> None:
        self.counted, self.plain = Ledger(), Ledger()

    def lapses(self, now: float) -> int:
        return self.counted.lapses(now)

    def __getattr__(self, name: str) -> Any:
        counted, plain = getattr(self.counted, name), getattr(self.plain, name)
        if not callable(counted):
            return counted

        def both(*args: Any, **kwargs: Any) -> Any:
            answer = counted(*args, **kwargs)
            assert plain(*args, **kwargs) == answer, name
            return answer

        return both


class LedgerMachine(RuleBasedStateMachine):
    """Requests, replies of every kind, reloads and time, against what the inverters hold.

    Time moves as the commander moves it: to the ledger's next due time or the next answer,
    sending everything due at each stop. Inverter 1 always answers in time and applies what it
    is sent; the others meet every fate.
    """

    @initialize(lifetime=st.sampled_from([10.0, 30.0, 60.0]))
    def start(self, lifetime: float) -> None:
        self.ledger = TwinLedgers()
        self.now = 0.0
        self.lifetime = lifetime
        self.held: dict[int, Held] = {}
        self.pending: dict[int, Pending] = {}  # by seq
        self.fates: list[str] = []
        self.latency = 0.0
        self.wanted_since: dict[int, tuple[float, float]] = {}  # inverter: (power, since)
        self.landed_at: dict[int, float] = {}  # inverter: first landing of the wanted power

    # -- the world -------------------------------------------------------------------------

    def _holds(self, inverter: int) -> float:
        held = self.held.get(inverter)
        return held.power_w if held is not None and held.until > self.now else 0.0

    def _apply(self, inverter: int, power_w: float, lifetime: float, at: float) -> None:
        self.held[inverter] = Held(power_w, at + lifetime)

    def _send_due(self) -> None:
        for due in self.ledger.due(self.now):
            if due.supersedes is not None:
                # The shell cancels it: it may have landed just before (late_applied).
                old = self.pending.pop(due.supersedes)
                command = self.ledger.last(due.inverter)
                assert command is not None
                assert command.seq == old.seq
                if old.fate == "late_applied":
                    self._apply(old.inverter, command.power_w, command.lifetime_s, self.now)
                self.ledger.answered(command, State.UNKNOWN, now=self.now)
            command = self.ledger.sent(due.inverter, due.power_w, self.lifetime, now=self.now)
            fate_ = "ok" if due.inverter == 1 else (self.fates.pop(0) if self.fates else "ok")
            latency = self.latency if due.inverter == 1 else self.latency * 2
            answer_at = self.now + (DEADLINE_S if fate_ == "silent" else latency)
            if fate_ == "lost_applied":
                self._apply(due.inverter, due.power_w, self.lifetime, self.now)
            self.pending[command.seq] = Pending(due.inverter, command.seq, fate_, answer_at)

    def _answer_due(self) -> None:
        for seq, pending in sorted(self.pending.items()):
            if pending.answer_at > self.now:
                continue
            del self.pending[seq]
            command = self.ledger.last(pending.inverter)
            assert command is not None
            assert command.seq == seq
            if pending.fate in ("ok", "late_applied"):  # received as it is answered
                self._apply(pending.inverter, command.power_w, command.lifetime_s, self.now)
            state = {
                "ok": State.CONFIRMED,
                "refused": State.REFUSED,
                "failed": State.FAILED,
            }.get(pending.fate, State.UNKNOWN)
            self.ledger.answered(command, state, now=self.now)
            want = self.wanted_since.get(pending.inverter)
            if (
                state is State.CONFIRMED
                and want is not None
                and command.power_w == want[0]
                and pending.inverter not in self.landed_at
            ):
                self.landed_at[pending.inverter] = self.now

    # -- rules -----------------------------------------------------------------------------

    @rule(
        owner=st.sampled_from([frozenset({1, 2}), frozenset({2, 3}), frozenset({1, 2, 3})]),
        power=st.sampled_from([0.0, 100.0, -250.0, 1000.0]),
    )
    def want(self, owner: frozenset[int], power: float) -> None:
        self.ledger.want(owner, dict.fromkeys(owner, power))
        for inverter in INVERTERS:
            wanted = self.ledger.wanted(inverter)
            known = self.wanted_since.get(inverter)
            if wanted is None or wanted == 0.0:
                self.wanted_since.pop(inverter, None)
                self.landed_at.pop(inverter, None)
            elif known is None or known[0] != wanted:
                self.wanted_since[inverter] = (wanted, self.now)
                self.landed_at.pop(inverter, None)
        self._send_due()

    @rule(owner=st.sampled_from([frozenset({1, 2}), frozenset({2, 3}), frozenset({1, 2, 3})]))
    def drop(self, owner: frozenset[int]) -> None:
        self.ledger.drop(owner)
        for inverter in INVERTERS:
            if self.ledger.wanted(inverter) in (None, 0.0):
                self.wanted_since.pop(inverter, None)
                self.landed_at.pop(inverter, None)
        self._send_due()

    @rule()
    def count_lapses(self) -> None:
        self.ledger.lapses(self.now)  # as a scrape does, between any two steps

    @rule(fates=st.lists(st.sampled_from(FATES), max_size=4))
    def script(self, fates: list[str]) -> None:
        self.fates.extend(fates)

    @rule(lifetime=st.sampled_from([10.0, 30.0, 60.0]))
    def reload(self, lifetime: float) -> None:
        self.lifetime = lifetime

    @rule(latency=st.sampled_from([0.0, 0.1, 1.0]))
    def slow(self, latency: float) -> None:
        self.latency = latency

    @rule(seconds=st.sampled_from([0.5, 3.0, 20.0, 100.0]))
    def wait(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            answers = min((p.answer_at for p in self.pending.values()), default=math.inf)
            step = min(self.ledger.next_due(self.now), answers, end)
            assert step >= self.now
            self.now = step
            self._answer_due()
            self._send_due()
            self.check()
            if self.now >= end:
                return

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def check(self) -> None:
        for inverter in INVERTERS:
            real = self._holds(inverter)
            held = self.held.get(inverter)
            if real != 0.0:
                # Sound: what an inverter really holds, the ledger knows it may hold, as long.
                assert held is not None
                assert self.ledger.may_hold_power(inverter, self.now), (inverter, real)
                entry = self.ledger._entries[inverter]
                assert any(
                    c.power_w == real and c.may_hold_until >= held.until for c in entry.in_force()
                ), (inverter, real, entry.commands)
            wanted = self.ledger.wanted(inverter)
            if wanted is None or wanted == 0.0:
                # Unwanted power is released in the round that makes it unwanted: after the
                # commander's turn, a 0 W is on its way or the last attempt failed (backoff).
                last = self.ledger.last(inverter)
                if self.ledger.may_hold_power(inverter, self.now) and inverter == 1:
                    assert last is not None
                    assert last.power_w == 0.0
        # The inverter that always answers never lets a wanted power lapse, once it landed.
        want = self.wanted_since.get(1)
        landed = self.landed_at.get(1)
        if want is not None and landed is not None and self.now >= landed:
            assert self._holds(1) == want[0], (self.now, want, self.held.get(1))


LedgerMachine.TestCase.settings = settings(
    max_examples=max(settings().max_examples // 2, 50),
    stateful_step_count=40,
    deadline=None,
)
TestLedgerMachine = LedgerMachine.TestCase


@given(
    lifetimes=st.lists(st.sampled_from([10.0, 15.0, 60.0, 900.0]), min_size=1, max_size=20),
    latency=st.floats(0.0, 10.0 * REFRESH_AT, exclude_max=True),
)
def test_a_standing_setpoint_never_lapses_when_each_command_lands_in_time(
    lifetimes: list[float], latency: float
) -> None:
    # Each refresh goes out with the lifetime in force then (reloads between them) and lands
    # within a third of the shortest lifetime: the inverter holds the power throughout.
    ledger = Ledger()
    ledger.want(OWNER, {1: 500.0})
    now, until = 0.0, -math.inf
    for lifetime in lifetimes:
        (due,) = ledger.due(now)
        command = ledger.sent(1, due.power_w, lifetime, now=now)
        now += latency
        assert now < until or until == -math.inf, f"lapsed at {until}, the next landed at {now}"
        ledger.answered(command, State.CONFIRMED, now=now)
        until = command.sent_at + lifetime  # received no earlier than sent
        now = ledger.next_due(now)
        assert ledger.lapses(now) == 0
    assert ledger.lapses(now + 1000.0) == 1  # and once refreshes stop, the power runs out
