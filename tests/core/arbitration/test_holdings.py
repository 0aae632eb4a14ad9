"""Who holds which battery (``spec/arbitration.md``, "Buckets and who holds a battery").

The spec's and the issue's cases, the rules the module decides where the spec is silent,
order-independence, and a state machine of programs checked against a model written from the spec.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping
from typing import assert_never

import attrs
import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from distributord.core.arbitration.holdings import (
    Accepted,
    BatteriesFreed,
    Event,
    Holdings,
    Proposal,
    ProposalEnded,
    ProposalPreempted,
    ProposalReturned,
    Refused,
    Registry,
    Why,
    holdings_of,
)


def accepted(decision: Accepted | Refused) -> Accepted:
    assert isinstance(decision, Accepted), decision
    return decision


def held_map(holdings: Holdings) -> dict[int, frozenset[int]]:
    """Battery → the set of the bucket that holds it."""
    return {battery: b.batteries for b in holdings.buckets for battery in b.held}


def kinds(events: Iterable[Event]) -> list[str]:
    names = []
    for event in events:
        match event:
            case ProposalEnded(why=why):
                names.append(f"ended:{why.value}")
            case ProposalPreempted(by=by):
                names.append(f"preempted_by:{by.program}")
            case ProposalReturned():
                names.append("returned")
            case BatteriesFreed():
                names.append("freed")
            case _:
                assert_never(event)
    return names


A_SET = frozenset({1001, 1002})
B_SET = frozenset({1001})


def propose_a(registry: Registry, *, now: float = 0.0, priority: int = 1) -> Accepted:
    return accepted(
        registry.propose(
            program="a", priority=priority, batteries=A_SET, power_w=-5000.0, connection=1, now=now
        )
    )


# -- the case ----------------------------------------------------------------------------


def test_a_higher_b_preempts_a_on_the_shared_battery_and_gives_it_back() -> None:
    registry = Registry()
    a = propose_a(registry)
    assert a.held == A_SET
    assert a.events == ()
    b = accepted(
        registry.propose(
            program="b", priority=2, batteries=B_SET, power_w=2000.0, connection=2, now=1.0
        )
    )
    assert b.held == B_SET
    assert b.replaced is None
    assert b.superseded == ()
    assert b.events == (
        ProposalPreempted(
            proposal=a.proposal, batteries=B_SET, by=b.proposal, held=frozenset({1002})
        ),
    )
    assert held_map(registry.holdings()) == {1001: B_SET, 1002: A_SET}

    change = registry.withdraw("b")
    assert change.ended == (b.proposal,)
    assert change.events == (
        ProposalEnded(proposal=b.proposal, why=Why.WITHDRAWN),
        ProposalReturned(proposal=a.proposal, batteries=B_SET, held=A_SET),
    )
    assert held_map(registry.holdings()) == {1001: A_SET, 1002: A_SET}


def test_at_equal_priority_b_is_refused_naming_a_and_its_set() -> None:
    registry = Registry()
    a = propose_a(registry)
    decision = registry.propose(
        program="b", priority=1, batteries=B_SET, power_w=2000.0, connection=2, now=1.0
    )
    assert decision == Refused(holder=a.proposal)
    assert isinstance(decision, Refused)
    assert (decision.holder.program, decision.holder.batteries) == ("a", A_SET)
    assert registry.proposals() == (a.proposal,)
    assert held_map(registry.holdings()) == {1001: A_SET, 1002: A_SET}


def test_same_program_on_an_overlapping_set_ends_its_older_proposal_and_frees_the_rest() -> None:
    registry = Registry()
    a = propose_a(registry)
    newer = accepted(
        registry.propose(
            program="a", priority=1, batteries=B_SET, power_w=2000.0, connection=1, now=1.0
        )
    )
    assert newer.replaced is None
    assert newer.superseded == (a.proposal,)
    assert newer.events == (
        ProposalEnded(proposal=a.proposal, why=Why.SUPERSEDED, by=newer.proposal),
        BatteriesFreed(batteries=frozenset({1002})),
    )
    assert registry.proposals() == (newer.proposal,)


def test_same_program_on_the_same_set_replaces_and_frees_nothing() -> None:
    registry = Registry()
    a = propose_a(registry)
    again = accepted(
        registry.propose(
            program="a", priority=1, batteries=A_SET, power_w=-1000.0, connection=3, now=2.0
        )
    )
    assert again.replaced == a.proposal
    assert again.events == (
        ProposalEnded(proposal=a.proposal, why=Why.REPLACED, by=again.proposal),
    )
    assert again.held == A_SET
    assert registry.proposals() == (again.proposal,)


def test_other_programs_on_the_same_set_share_one_bucket_by_priority_then_age() -> None:
    registry = Registry()
    first = propose_a(registry)
    second = accepted(
        registry.propose(program="b", priority=1, batteries=A_SET, connection=2, now=1.0)
    )
    top = accepted(
        registry.propose(
            program="c", priority=5, batteries=A_SET, upper_w=0.0, connection=3, now=2.0
        )
    )
    (bucket,) = registry.holdings().buckets
    assert bucket.proposals == (top.proposal, first.proposal, second.proposal)
    assert bucket.held == A_SET
    assert top.events == ()


# -- rules the spec leaves open ------------------------------------------------------------------


def test_a_bucket_preempted_on_all_its_batteries_stays_live_holding_nothing() -> None:
    registry = Registry()
    low = accepted(
        registry.propose(program="low", priority=1, batteries={1}, power_w=1.0, connection=1, now=0)
    )
    high = accepted(
        registry.propose(program="high", priority=9, batteries={1, 2}, connection=2, now=1)
    )
    assert high.events == (
        ProposalPreempted(
            proposal=low.proposal, batteries=frozenset({1}), by=high.proposal, held=frozenset()
        ),
    )
    bucket = registry.holdings().bucket({1})
    assert bucket is not None
    assert bucket.held == frozenset()
    assert low.proposal in registry.proposals()
    # A new proposal on a set wholly held above: accepted, holding nothing; no event for it.
    late = accepted(
        registry.propose(program="late", priority=2, batteries={2}, connection=3, now=2)
    )
    assert late.held == frozenset()
    assert late.events == ()
    change = registry.withdraw("high")
    assert change.events == (
        ProposalEnded(proposal=high.proposal, why=Why.WITHDRAWN),
        # Bucket by bucket, highest first.
        ProposalReturned(proposal=late.proposal, batteries=frozenset({2}), held=frozenset({2})),
        ProposalReturned(proposal=low.proposal, batteries=frozenset({1}), held=frozenset({1})),
    )


def test_in_a_chain_each_battery_goes_to_the_highest_bucket_containing_it() -> None:
    registry = Registry()
    c = accepted(registry.propose(program="c", priority=1, batteries={3, 4}, connection=1, now=0))
    b = accepted(registry.propose(program="b", priority=5, batteries={2, 3}, connection=2, now=1))
    assert kinds(b.events) == ["preempted_by:b"]
    a = accepted(registry.propose(program="a", priority=9, batteries={1, 2}, connection=3, now=2))
    # B lost 2 to A but keeps 3 over C; C keeps 4.
    assert a.events == (
        ProposalPreempted(
            proposal=b.proposal, batteries=frozenset({2}), by=a.proposal, held=frozenset({3})
        ),
    )
    assert held_map(registry.holdings()) == {
        1: frozenset({1, 2}),
        2: frozenset({1, 2}),
        3: frozenset({2, 3}),
        4: frozenset({3, 4}),
    }
    # B ends: 2 is A's already, 3 returns to C; nothing is freed (every battery is still in a set).
    change = registry.withdraw("b")
    assert change.events == (
        ProposalEnded(proposal=b.proposal, why=Why.WITHDRAWN),
        ProposalReturned(proposal=c.proposal, batteries=frozenset({3}), held=frozenset({3, 4})),
    )


def test_a_bucket_whose_top_leaves_can_be_preempted_by_a_bucket_between() -> None:
    registry = Registry()
    registry.propose(program="x", priority=9, batteries={1, 2}, connection=1, now=0)
    y = accepted(registry.propose(program="y", priority=1, batteries={1, 2}, connection=2, now=1))
    z = accepted(registry.propose(program="z", priority=5, batteries={2}, connection=3, now=2))
    assert z.held == frozenset()
    change = registry.withdraw("x")
    assert change.events[1:] == (
        ProposalPreempted(
            proposal=y.proposal, batteries=frozenset({2}), by=z.proposal, held=frozenset({1})
        ),
        ProposalReturned(proposal=z.proposal, batteries=frozenset({2}), held=frozenset({2})),
    )


def test_a_bucket_preempted_by_two_buckets_at_once_hears_of_each() -> None:
    registry = Registry()
    x = accepted(
        registry.propose(program="x", priority=9, batteries={1, 2, 3}, connection=1, now=0)
    )
    y = accepted(
        registry.propose(program="y", priority=1, batteries={1, 2, 3}, connection=2, now=1)
    )
    m = accepted(registry.propose(program="m", priority=5, batteries={1}, connection=3, now=2))
    n = accepted(registry.propose(program="n", priority=3, batteries={2, 4}, connection=4, now=3))
    assert n.held == frozenset({4})
    change = registry.withdraw("x")
    assert change.events == (
        ProposalEnded(proposal=x.proposal, why=Why.WITHDRAWN),
        ProposalPreempted(
            proposal=y.proposal, batteries=frozenset({1}), by=m.proposal, held=frozenset({3})
        ),
        ProposalPreempted(
            proposal=y.proposal, batteries=frozenset({2}), by=n.proposal, held=frozenset({3})
        ),
        ProposalReturned(proposal=m.proposal, batteries=frozenset({1}), held=frozenset({1})),
        ProposalReturned(proposal=n.proposal, batteries=frozenset({2}), held=frozenset({2, 4})),
    )


def test_lifetimes_expiry_and_disconnection() -> None:
    registry = Registry()
    ttl = accepted(
        registry.propose(program="a", priority=1, batteries={1}, ttl_s=5.0, connection=1, now=10.0)
    )
    held = accepted(
        registry.propose(
            program="b", priority=1, batteries={2}, until_disconnect=True, connection=7, now=10.0
        )
    )
    standing = accepted(
        registry.propose(program="c", priority=1, batteries={3}, connection=7, now=0)
    )
    assert registry.next_expiry() == 15.0
    assert registry.expire(14.999) == registry.expire(0.0)
    assert registry.expire(14.999).ended == ()
    change = registry.expire(15.0)
    assert change.events == (
        ProposalEnded(proposal=ttl.proposal, why=Why.EXPIRED),
        BatteriesFreed(batteries=frozenset({1})),
    )
    assert registry.next_expiry() is None
    assert registry.disconnect(8).events == ()
    change = registry.disconnect(7)
    assert change.ended == (held.proposal,)
    assert kinds(change.events) == ["ended:disconnected", "freed"]
    assert registry.proposals() == (standing.proposal,)


def test_withdraw_an_exact_set_or_everything() -> None:
    registry = Registry()
    registry.propose(program="a", priority=1, batteries={1}, connection=1, now=0)
    registry.propose(program="a", priority=1, batteries={2, 3}, connection=1, now=0)
    registry.propose(program="b", priority=1, batteries={4}, connection=1, now=0)
    assert registry.withdraw("a", {2}).ended == ()
    assert registry.withdraw("b", {1}).ended == ()
    assert [p.batteries for p in registry.withdraw("a", {3, 2}).ended] == [frozenset({2, 3})]
    assert [p.batteries for p in registry.withdraw("a").ended] == [frozenset({1})]
    assert [p.program for p in registry.proposals()] == ["b"]


@pytest.mark.parametrize("ttl_s", [0.0, -1.0, float("nan")])
def test_a_lifetime_must_be_positive(ttl_s: float) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        Registry().propose(program="a", priority=1, batteries={1}, ttl_s=ttl_s, connection=1, now=0)


def test_an_empty_set_is_refused_before_anything_changes() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="batteries"):
        registry.propose(program="a", priority=1, batteries=(), connection=1, now=0)
    assert registry.proposals() == ()


def test_a_tie_built_by_hand_goes_to_the_older_top_proposal() -> None:
    def make(program: str, batteries: set[int], sequence: int) -> Proposal:
        return Proposal(
            program=program,
            priority=1,
            batteries=frozenset(batteries),
            connection=0,
            created_at=0.0,
            sequence=sequence,
        )

    holdings = holdings_of([make("new", {2, 3}, 2), make("old", {1, 2}, 1)])
    assert held_map(holdings)[2] == frozenset({1, 2})


# -- order does not matter -------------------------------------------------------------------------

PROGRAMS = {"fcr": 9, "peak": 5, "trade": 5, "ops": 1, "bench": 1}
"""Two pairs at equal priority, so refusals happen; one program above and one between."""

battery_sets = st.frozensets(st.integers(1, 5), min_size=1, max_size=4)


@settings(max_examples=min(settings().max_examples, 500))
@given(
    asks=st.lists(st.tuples(st.sampled_from(sorted(PROGRAMS)), battery_sets), max_size=12),
    order=st.randoms(use_true_random=False),
)
def test_the_same_live_proposals_hold_the_same_batteries_whatever_their_order(
    asks: list[tuple[str, frozenset[int]]], order: random.Random
) -> None:
    registry = Registry()
    for now, (program, batteries) in enumerate(asks):
        registry.propose(
            program=program,
            priority=PROGRAMS[program],
            batteries=batteries,
            connection=0,
            now=float(now),
        )
    live = list(registry.proposals())
    order.shuffle(live)
    again = Registry()
    for proposal in live:
        # Live proposals are pairwise compatible: none is refused, replaced or superseded.
        decision = accepted(
            again.propose(
                program=proposal.program,
                priority=proposal.priority,
                batteries=proposal.batteries,
                connection=0,
                now=0.0,
            )
        )
        assert not any(isinstance(e, ProposalEnded) for e in decision.events)
    holdings = {b.batteries: b.held for b in registry.holdings().buckets}
    assert {b.batteries: b.held for b in again.holdings().buckets} == holdings
    assert holdings_of(reversed(registry.proposals())) == registry.holdings()


# -- the state machine ----------------------------------------------------------------------------


@attrs.frozen
class Ask:
    """The model's proposal: what the spec's rules look at, and an id to match the registry's."""

    program: str
    priority: int
    batteries: frozenset[int]
    expires_at: float | None
    until_disconnect: bool
    connection: int
    order: int


class Model:
    """The spec's rules, recomputed from the live proposals at every question."""

    def __init__(self) -> None:
        self.live: list[Ask] = []  # oldest first

    def conflict(self, ask: Ask) -> Ask | None:
        """The oldest live proposal of another program at equal priority on an unequal overlap."""
        for other in self.live:
            if (
                other.program != ask.program
                and other.priority == ask.priority
                and other.batteries & ask.batteries
                and other.batteries != ask.batteries
            ):
                return other
        return None

    def holder(self, battery: int) -> frozenset[int] | None:
        """The set whose bucket holds the battery.

        That of the highest-priority live proposal containing it (a bucket's top priority is its
        best proposal's).
        """
        containing = [a for a in self.live if battery in a.batteries]
        if not containing:
            return None
        best = max(a.priority for a in containing)
        sets = {a.batteries for a in containing if a.priority == best}
        # The spec's refusal and same-program rules leave no tie between different sets.
        assert len(sets) == 1, sets
        return sets.pop()

    def held(self, batteries: Iterable[int]) -> dict[int, frozenset[int]]:
        held = {}
        for battery in batteries:
            holder = self.holder(battery)
            if holder is not None:
                held[battery] = holder
        return held

    def top(self, batteries: frozenset[int]) -> Ask:
        in_bucket = [a for a in self.live if a.batteries == batteries]
        best = max(a.priority for a in in_bucket)
        return next(a for a in in_bucket if a.priority == best)


class HoldingsMachine(RuleBasedStateMachine):
    """Programs propose, replace, withdraw, expire and disconnect over 4–6 batteries."""

    def __init__(self) -> None:
        super().__init__()
        self.registry = Registry()
        self.model = Model()
        self.now = 0.0
        self.batteries: list[int] = []
        self.ids: dict[int, int] = {}  # registry sequence → model order
        self.counter = itertools.count()

    @initialize(count=st.integers(4, 6))
    def fleet(self, count: int) -> None:
        self.batteries = list(range(1001, 1001 + count))

    # -- checking one change -----------------------------------------------------------------

    def check_change(
        self,
        before: dict[int, frozenset[int]],
        survivors: list[Ask],
        ended: Mapping[int, tuple[Why, int | None]],
        events: tuple[Event, ...],
    ) -> None:
        """The events of one change against the model.

        The ends with why, then every survivor's losses (to whom) and returns, then the freed
        batteries, exactly.
        """
        after = self.model.held(self.batteries)
        seen_ended = {}
        preempted: dict[tuple[int, frozenset[int]], frozenset[int]] = {}
        returned: dict[int, frozenset[int]] = {}
        freed: list[frozenset[int]] = []
        phase = 0
        for event in events:
            match event:
                case ProposalEnded(proposal=p, why=why, by=by):
                    assert phase == 0
                    seen_ended[self.ids[p.sequence]] = (
                        why,
                        None if by is None else self.ids[by.sequence],
                    )
                case ProposalPreempted(proposal=p, batteries=taken, by=by, held=held):
                    phase = 1
                    key = (self.ids[p.sequence], by.batteries)
                    assert key not in preempted
                    preempted[key] = taken
                    assert held == frozenset(b for b in p.batteries if after.get(b) == p.batteries)
                    assert self.model.top(by.batteries).order == self.ids[by.sequence]
                case ProposalReturned(proposal=p, batteries=back, held=held):
                    phase = 1
                    assert self.ids[p.sequence] not in returned
                    returned[self.ids[p.sequence]] = back
                    assert held == frozenset(b for b in p.batteries if after.get(b) == p.batteries)
                case BatteriesFreed(batteries=gone):
                    phase = 2
                    freed.append(gone)
                case _:
                    assert_never(event)
        assert seen_ended == ended
        for label, seen in [
            ("ended", ended),
            ("preempted", preempted),
            ("preempted by two at once", len({p for p, _ in preempted}) < len(preempted)),
            ("returned", returned),
            ("freed", freed),
        ]:
            if seen:
                hypothesis.event(label)
        want_preempted: dict[tuple[int, frozenset[int]], frozenset[int]] = {}
        want_returned: dict[int, frozenset[int]] = {}
        for ask in survivors:
            lost = {b for b in ask.batteries if before.get(b) == ask.batteries != after.get(b)}
            for battery in lost:
                taker = after[battery]
                key = (ask.order, taker)
                want_preempted[key] = want_preempted.get(key, frozenset()) | {battery}
            back = frozenset(
                b for b in ask.batteries if before.get(b) != ask.batteries == after.get(b)
            )
            if back:
                want_returned[ask.order] = back
        assert preempted == want_preempted
        assert returned == want_returned
        gone = frozenset(before) - frozenset(after)
        assert freed == ([gone] if gone else [])

    def change(
        self,
        ending: list[Ask],
        why: Why,
        by: int | None,
        events: tuple[Event, ...],
        before: dict[int, frozenset[int]],
    ) -> None:
        survivors = [a for a in self.model.live if a not in ending]
        self.model.live = survivors
        self.check_change(before, survivors, {a.order: (why, by) for a in ending}, events)

    # -- rules -------------------------------------------------------------------------------

    @rule(
        data=st.data(),
        program=st.sampled_from(sorted(PROGRAMS)),
        ttl_s=st.none() | st.sampled_from([1.0, 2.5, 5.0]),
        until_disconnect=st.booleans(),
        connection=st.integers(0, 2),
    )
    def propose(
        self,
        data: st.DataObject,
        program: str,
        ttl_s: float | None,
        until_disconnect: bool,
        connection: int,
    ) -> None:
        batteries = data.draw(
            st.frozensets(st.sampled_from(self.batteries), min_size=1, max_size=4), "batteries"
        )
        self.ask(program, batteries, ttl_s, until_disconnect, connection)

    @precondition(lambda self: self.model.live)
    @rule(data=st.data(), ttl_s=st.none() | st.just(3.0), connection=st.integers(0, 2))
    def replace(self, data: st.DataObject, ttl_s: float | None, connection: int) -> None:
        old = data.draw(st.sampled_from(self.model.live), "replaced")
        self.ask(old.program, old.batteries, ttl_s, False, connection)

    @precondition(lambda self: self.model.live)
    @rule(data=st.data(), program=st.sampled_from(sorted(PROGRAMS)))
    def join(self, data: st.DataObject, program: str) -> None:
        """Another program on a live set: the same bucket."""
        old = data.draw(st.sampled_from(self.model.live), "joined")
        self.ask(program, old.batteries, None, False, 0)

    def ask(
        self,
        program: str,
        batteries: frozenset[int],
        ttl_s: float | None,
        until_disconnect: bool,
        connection: int,
    ) -> None:
        order = next(self.counter)
        ask = Ask(
            program=program,
            priority=PROGRAMS[program],
            batteries=batteries,
            expires_at=None if ttl_s is None else self.now + ttl_s,
            until_disconnect=until_disconnect,
            connection=connection,
            order=order,
        )
        before = self.model.held(self.batteries)
        decision = self.registry.propose(
            program=program,
            priority=PROGRAMS[program],
            batteries=batteries,
            power_w=100.0,
            ttl_s=ttl_s,
            until_disconnect=until_disconnect,
            connection=connection,
            now=self.now,
        )
        conflict = self.model.conflict(ask)
        match decision:
            case Refused(holder=holder):
                hypothesis.event("refused")
                assert conflict is not None
                assert self.ids[holder.sequence] == conflict.order
                assert (holder.program, holder.batteries) == (conflict.program, conflict.batteries)
            case Accepted(proposal=new, replaced=replaced, superseded=superseded, events=events):
                assert conflict is None
                self.ids[new.sequence] = order
                mine = [a for a in self.model.live if a.program == program]
                same = [a for a in mine if a.batteries == batteries]
                over = [a for a in mine if a.batteries != batteries and a.batteries & batteries]
                assert [self.ids[p.sequence] for p in ([replaced] if replaced else [])] == [
                    a.order for a in same
                ]
                assert [self.ids[p.sequence] for p in superseded] == [a.order for a in over]
                ending = same + over
                survivors = [a for a in self.model.live if a not in ending]
                self.model.live = [*survivors, ask]
                ended = {a.order: (Why.REPLACED, order) for a in same}
                ended |= {a.order: (Why.SUPERSEDED, order) for a in over}
                self.check_change(before, survivors, ended, events)
                assert decision.held == frozenset(
                    b for b in batteries if self.model.holder(b) == batteries
                )
            case _:
                assert_never(decision)

    @precondition(lambda self: self.model.live)
    @rule(data=st.data(), everything=st.booleans())
    def withdraw(self, data: st.DataObject, everything: bool) -> None:
        chosen = data.draw(st.sampled_from(self.model.live), "withdrawn")
        if everything:
            ending = [a for a in self.model.live if a.program == chosen.program]
            change = self.registry.withdraw(chosen.program)
        else:
            ending = [chosen]
            change = self.registry.withdraw(chosen.program, chosen.batteries)
        before = self.model.held(self.batteries)
        assert [self.ids[p.sequence] for p in change.ended] == [a.order for a in ending]
        self.change(ending, Why.WITHDRAWN, None, change.events, before)

    @rule(program=st.sampled_from(sorted(PROGRAMS)), batteries=st.frozensets(st.integers(1, 9)))
    def withdraw_nothing(self, program: str, batteries: frozenset[int]) -> None:
        """A set of batteries outside the fleet: no proposal on it, nothing happens."""
        held = self.registry.holdings()
        assert self.registry.withdraw(program, batteries).events == ()
        assert self.registry.holdings() == held

    @rule(dt=st.sampled_from([0.5, 1.0, 2.5, 3.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        ending = [
            a for a in self.model.live if a.expires_at is not None and a.expires_at <= self.now
        ]
        before = self.model.held(self.batteries)
        change = self.registry.expire(self.now)
        assert [self.ids[p.sequence] for p in change.ended] == [a.order for a in ending]
        self.change(ending, Why.EXPIRED, None, change.events, before)

    @rule(connection=st.integers(0, 2))
    def disconnect(self, connection: int) -> None:
        ending = [a for a in self.model.live if a.until_disconnect and a.connection == connection]
        before = self.model.held(self.batteries)
        change = self.registry.disconnect(connection)
        assert [self.ids[p.sequence] for p in change.ended] == [a.order for a in ending]
        self.change(ending, Why.DISCONNECTED, None, change.events, before)

    # -- after every step --------------------------------------------------------------------

    @invariant()
    def every_battery_is_held_by_the_bucket_the_spec_says(self) -> None:
        holdings = self.registry.holdings()
        assert held_map(holdings) == self.model.held(self.batteries)
        # No bucket without a live proposal, and the buckets are exactly the live sets.
        assert all(b.proposals for b in holdings.buckets)
        assert {b.batteries for b in holdings.buckets} == {a.batteries for a in self.model.live}
        live = sorted(self.ids[p.sequence] for b in holdings.buckets for p in b.proposals)
        assert live == sorted(a.order for a in self.model.live)
        assert [self.ids[p.sequence] for p in self.registry.proposals()] == [
            a.order for a in self.model.live
        ]
        for bucket in holdings.buckets:
            ranks = [(-p.priority, p.sequence) for p in bucket.proposals]
            assert ranks == sorted(ranks)
        assert holdings == holdings_of(self.registry.proposals())


HoldingsMachine.TestCase.settings = settings(
    max_examples=max(settings().max_examples // 2, 50),
    stateful_step_count=40,
    deadline=None,
)
TestHoldingsMachine = HoldingsMachine.TestCase


def test_a_proposal_joining_a_bucket_higher_up_wins_its_batteries_for_every_member() -> None:
    registry = Registry()
    low = accepted(
        registry.propose(program="low", priority=1, batteries={1, 2}, connection=1, now=0)
    )
    mid = accepted(
        registry.propose(program="mid", priority=5, batteries={2, 3}, connection=2, now=1)
    )
    assert low.proposal in registry.holdings().buckets[1].proposals
    top = accepted(
        registry.propose(program="top", priority=9, batteries={1, 2}, connection=3, now=2)
    )
    assert top.held == frozenset({1, 2})
    assert top.events == (
        ProposalPreempted(
            proposal=mid.proposal, batteries=frozenset({2}), by=top.proposal, held=frozenset({3})
        ),
        ProposalReturned(proposal=low.proposal, batteries=frozenset({2}), held=frozenset({1, 2})),
    )
