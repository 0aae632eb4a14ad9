"""The request loop's scheduling rules: tests for each rule, and a property over any sequence."""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.scheduling import (
    Arrival,
    Scheduler,
    Slot,
    Turn,
    Wait,
    next_replan,
    replans_due,
)
from distributord.core.status import Status

A = frozenset({1, 2})
B = frozenset({2, 3})  # overlaps A and C
C = frozenset({3, 4})
D = frozenset({5})  # overlaps nothing


def by_set(slots: Mapping[Slot, Job]) -> dict[frozenset[int], Job]:
    """The scheduler's view by battery set (every job here has the default owner)."""
    assert all(owner is None for owner, _ in slots)
    return {batteries: job for (_, batteries), job in slots.items()}


@attrs.define(eq=False)
class Job:
    """A job as the request loop's: identified by its request (here any distinct object)."""

    name: str
    batteries: frozenset[int]
    request: object = attrs.field(factory=object)


def scheduler(queue_size: int = 8) -> Scheduler[Job]:
    return Scheduler[Job](queue_size=queue_size, key=lambda job: job.request)


def arrive(s: Scheduler[Job], *jobs: Job) -> list[Arrival[Job]]:
    return [s.arrive(job.batteries, job) for job in jobs]


def started(turn: Turn[Job]) -> list[str]:
    return [job.name for job in turn.started]


# -- rule 1: same set, one at a time, the newest wins ---------------------------------------------


def test_same_set_runs_one_at_a_time_and_keeps_only_the_newest_waiting() -> None:
    s = scheduler()
    a1, a2, a3 = Job("a1", A), Job("a2", A), Job("a3", A)
    assert arrive(s, a1) == [Arrival(withdrawn=False, replaced=None)]
    assert started(s.dispatch()) == ["a1"]
    assert arrive(s, a2, a3) == [
        Arrival(withdrawn=False, replaced=None),
        Arrival(withdrawn=False, replaced=a2),  # to be answered ignored
    ]
    # Waiting behind its own set is no overlap: nothing is reported.
    assert s.dispatch() == Turn(started=(), waits=())
    assert dict(by_set(s.waiting)) == {A: a3}
    s.finish(A)
    assert started(s.dispatch()) == ["a3"]
    assert dict(by_set(s.running)) == {A: a3}
    assert not by_set(s.waiting)


def test_a_replacing_job_keeps_the_place_of_the_one_it_replaces() -> None:
    s = scheduler()
    arrive(s, Job("a1", A))
    s.dispatch()
    arrive(s, Job("a2", A), Job("b", B))  # b overlaps a1 (running) and a2 (ahead of it)
    arrive(s, a3 := Job("a3", A))
    assert list(by_set(s.waiting)) == [A, B]  # a3 took a2's place, ahead of b
    s.finish(A)
    turn = s.dispatch()
    assert started(turn) == ["a3"]  # b still waits: a3 came first in the order
    assert dict(by_set(s.running)) == {A: a3}


# -- rule 2: disjoint sets run concurrently -------------------------------------------------------


def test_disjoint_sets_start_in_the_same_turn() -> None:
    s = scheduler()
    arrive(s, Job("a", A), Job("c", C), Job("d", D))
    assert started(s.dispatch()) == ["a", "c", "d"]
    assert set(by_set(s.running)) == {A, C, D}


# -- rule 3: overlapping sets, one after another in arrival order ---------------------------------


def test_overlapping_sets_wait_in_arrival_order_and_are_reported_once() -> None:
    s = scheduler()
    arrive(s, Job("a", A))
    s.dispatch()
    arrive(s, Job("b", B))
    assert s.dispatch() == Turn(started=(), waits=(Wait(batteries=B, behind=A),))
    assert s.dispatch() == Turn(started=(), waits=())  # reported once, not every turn
    # c overlaps nothing running, but b, waiting ahead of it: it must not overtake b.
    arrive(s, Job("c", C), Job("d", D))
    turn = s.dispatch()
    assert started(turn) == ["d"]
    assert turn.waits == (Wait(batteries=C, behind=B),)
    s.finish(A)
    turn = s.dispatch()
    assert started(turn) == ["b"]
    assert turn.waits == ()  # c now waits behind b running: already reported
    s.finish(B)
    assert started(s.dispatch()) == ["c"]


def test_a_job_that_replaces_a_reported_one_is_reported_on_its_own() -> None:
    s = scheduler()
    arrive(s, Job("a", A))
    s.dispatch()
    arrive(s, Job("b1", B))
    assert s.dispatch().waits == (Wait(batteries=B, behind=A),)
    arrive(s, Job("b2", B))
    assert s.dispatch().waits == (Wait(batteries=B, behind=A),)


def test_a_job_waiting_behind_its_own_set_is_reported_once_it_waits_for_another() -> None:
    s = scheduler()
    arrive(s, Job("a1", A))
    s.dispatch()
    arrive(s, Job("b", B), Job("a2", A))
    assert s.dispatch().waits == (Wait(batteries=B, behind=A),)  # a2 waits for a1: no report
    s.finish(A)
    turn = s.dispatch()
    assert started(turn) == ["b"]  # first in the order
    assert turn.waits == (Wait(batteries=A, behind=B),)


# -- rule 4: withdrawal ---------------------------------------------------------------------------


def test_a_waiting_job_withdrawn_never_starts() -> None:
    s = scheduler()
    arrive(s, Job("a1", A))
    s.dispatch()
    arrive(s, a2 := Job("a2", A))
    assert s.withdraw(A, a2.request)
    assert not by_set(s.waiting)
    s.finish(A)
    assert s.dispatch() == Turn(started=(), waits=())


def test_a_running_job_is_not_withdrawn() -> None:
    s = scheduler()
    arrive(s, a := Job("a", A))
    s.dispatch()
    assert not s.withdraw(A, a.request)
    assert dict(by_set(s.running)) == {A: a}


def test_a_job_withdrawn_while_queued_is_dropped_when_it_arrives() -> None:
    s = scheduler()
    queued = Job("a", A)
    assert s.withdraw(A, queued.request)
    # Another job whose request is equal but not the same object is not the one withdrawn.
    twin = Job("twin", A, request=queued.request.__class__())
    assert arrive(s, twin) == [Arrival(withdrawn=False, replaced=None)]
    assert arrive(s, queued) == [Arrival(withdrawn=True, replaced=None)]
    assert dict(by_set(s.waiting)) == {A: twin}
    # The withdrawal is used up: the same request arriving again would be scheduled.
    assert arrive(s, queued) == [Arrival(withdrawn=False, replaced=twin)]


def test_withdrawing_a_waiting_job_lets_a_later_one_past_at_the_next_turn() -> None:
    s = scheduler()
    arrive(s, Job("d", D))
    s.dispatch()
    arrive(s, x := Job("x", A | D), Job("b", B))  # b waits behind x, which waits for d
    assert started(s.dispatch()) == []
    assert s.withdraw(A | D, x.request)
    assert started(s.dispatch()) == ["b"]


# -- rule 5: the queue's bound --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queued", "waiting", "batteries", "admitted"),
    [
        (0, [], A, True),
        (2, [], A, True),
        (3, [], A, False),  # the queue is full
        (2, [B], A, False),  # a waiting job counts: it has not been served either
        (1, [B], A, True),
        (2, [B], B, True),  # its set waits already: it replaces that job
        (9, [B], B, True),
    ],
)
def test_the_bound_counts_queued_and_waiting_jobs(
    queued: int, waiting: list[frozenset[int]], batteries: frozenset[int], admitted: bool
) -> None:
    s = scheduler(queue_size=3)
    arrive(s, Job("d", D), *(Job(f"w{i}", w | D) for i, w in enumerate(waiting)))
    s.dispatch()  # d runs, the others wait for it
    assert len(by_set(s.waiting)) == len(waiting)
    assert s.admits(batteries | D if batteries in waiting else batteries, queued=queued) is admitted


# -- shutdown and the re-plans' view --------------------------------------------------------------


def test_drain_takes_every_waiting_job_in_arrival_order() -> None:
    s = scheduler()
    arrive(s, Job("a", A))
    s.dispatch()
    arrive(s, b := Job("b", B), c := Job("c", C))
    s.dispatch()
    assert s.drain() == [b, c]
    assert not by_set(s.waiting)
    assert list(by_set(s.running)) == [A]


def test_busy_means_a_running_or_waiting_job_overlaps() -> None:
    s = scheduler()
    arrive(s, Job("a", A))
    s.dispatch()
    arrive(s, Job("b", B))
    assert s.busy(frozenset({1}))  # a runs
    assert s.busy(frozenset({3}))  # b waits
    assert not s.busy(D)


# -- rule 6: standing re-plans --------------------------------------------------------------------

W, N = Status.WORKING, Status.NOT_WORKING


@attrs.frozen
class Plan:
    planned_at: float
    statuses: dict[int, Status]
    step_due: float = math.inf


def never_busy(batteries: frozenset[int]) -> bool:
    return False


@pytest.mark.parametrize(
    ("now", "status_now", "due"),
    [
        (19.999, W, False),  # planned at 10, every 10
        (20.0, W, True),  # due exactly at planned_at + every
        (25.0, W, True),
        (10.0, N, True),  # a status changed: at once
    ],
)
def test_a_standing_set_is_due_by_time_or_a_status_change(
    now: float, status_now: Status, due: bool
) -> None:
    standing = {A: Plan(10.0, {1: W, 2: W})}
    got = replans_due(
        standing,
        now=now,
        every=10.0,
        status=lambda b: status_now if b == 2 else W,
        busy=never_busy,
    )
    assert got == ([A] if due else [])


def test_a_set_a_client_job_overlaps_is_not_replanned() -> None:
    standing = {A: Plan(0.0, {1: W, 2: W}), C: Plan(0.0, {3: W, 4: W}), D: Plan(0.0, {5: N})}
    got = replans_due(standing, now=100.0, every=10.0, status=lambda b: W, busy=lambda s: 2 in s)
    assert got == [C, D]  # D by its status, C by time, in their order; A is left to the job


@pytest.mark.parametrize(
    ("busy", "expected"),
    [
        (never_busy, 13.0),
        (lambda s: 1 in s, 15.0),  # the earliest set is busy: the next one's time
        (lambda s: True, math.inf),  # nothing to wake for by time
    ],
)
def test_next_replan_is_the_earliest_of_the_sets_not_busy(busy: object, expected: float) -> None:
    standing = {A: Plan(3.0, {}), C: Plan(5.0, {})}
    assert next_replan(standing, every=10.0, busy=busy) == expected  # type: ignore[arg-type]


def test_a_ramping_set_is_due_at_its_next_step() -> None:
    standing = {A: Plan(10.0, {1: W}, step_due=11.0), C: Plan(10.0, {3: W})}
    assert next_replan(standing, every=20.0, busy=never_busy) == 11.0
    due = replans_due(standing, now=11.0, every=20.0, status=lambda b: W, busy=never_busy)
    assert due == [A]
    assert replans_due(standing, now=10.999, every=20.0, status=lambda b: W, busy=never_busy) == []
    # A client job for its batteries decides: no step meanwhile.
    assert next_replan(standing, every=20.0, busy=lambda s: 1 in s) == 30.0


def test_next_replan_without_standing_sets_is_never() -> None:
    assert next_replan({}, every=10.0, busy=never_busy) == math.inf


# -- the property ---------------------------------------------------------------------------------

SETS = [A, B, C, D, frozenset({1}), frozenset({1, 2, 3, 4})]

# Weighted towards arrivals, so that jobs pile up behind each other.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(SETS)),
        st.tuples(st.just("take"), st.just(0)),
        st.tuples(st.just("submit_take"), st.sampled_from(SETS)),
        st.tuples(st.just("submit_take"), st.sampled_from(SETS)),
        st.tuples(st.just("finish"), st.integers(0, 6)),
        st.tuples(st.just("withdraw"), st.integers(0, 30)),
        st.tuples(st.just("dispatch"), st.just(0)),
    ),
    max_size=60,
)


@given(operations, st.integers(1, 6))
def test_any_sequence_keeps_the_rules(
    ops: list[tuple[str, frozenset[int] | int]], queue_size: int
) -> None:
    """As the request loop drives it: a bounded queue, turns after arrivals, ends and probes.

    Never two running jobs share a battery; every job taken ends exactly once started,
    replaced (by a newer job for its set), withdrawn or drained; overlapping jobs start in the
    order of their places; and once nothing runs, a turn starts a waiting job.
    """
    s = scheduler(queue_size)
    queue: list[Job] = []  # the channel
    fates: dict[str, list[str]] = {}
    withdrawn_queued: set[str] = set()
    place: dict[str, int] = {}  # arrival order, inherited by a replacing job
    starts: list[Job] = []

    def turn() -> None:
        for job in s.dispatch().started:
            fates[job.name].append("started")
            starts.append(job)
        running = list(by_set(s.running))
        for i, x in enumerate(running):
            for y in running[i + 1 :]:
                assert x.isdisjoint(y), f"{sorted(x)} and {sorted(y)} run at once"

    def submit(batteries: frozenset[int], name: str) -> None:
        if not s.admits(batteries, queued=len(queue)):
            # Refused only when full, counting the waiting, and its set does not wait.
            assert batteries not in by_set(s.waiting)
            assert len(queue) + len(by_set(s.waiting)) >= queue_size
        elif len(queue) < queue_size:  # the channel has room (its own bound)
            fates[name] = []
            queue.append(Job(name, batteries))

    def take() -> None:
        job = queue.pop(0)
        arrival = s.arrive(job.batteries, job)
        assert arrival.withdrawn == (job.name in withdrawn_queued)
        if arrival.withdrawn:
            return
        place[job.name] = len(place)
        if arrival.replaced is not None:
            replaced = arrival.replaced
            assert replaced.batteries == job.batteries
            fates[replaced.name].append("replaced")
            place[job.name] = place[replaced.name]
        turn()

    for n, (op, arg) in enumerate(ops):
        match op:
            case "submit":
                assert isinstance(arg, frozenset)
                submit(arg, f"j{n}")
            case "submit_take":
                assert isinstance(arg, frozenset)
                submit(arg, f"j{n}")
                if queue:
                    take()
            case "take" if queue:
                take()
            case "finish" if by_set(s.running):
                assert isinstance(arg, int)
                running = list(by_set(s.running))
                s.finish(running[arg % len(running)])
                turn()
            case "withdraw":
                assert isinstance(arg, int)
                candidates = [
                    j
                    for j in [*queue, *by_set(s.waiting).values(), *by_set(s.running).values()]
                    if j.name not in withdrawn_queued and not fates[j.name]
                ] + list(by_set(s.running).values())
                if not candidates:
                    continue
                job = candidates[arg % len(candidates)]
                was_running = by_set(s.running).get(job.batteries) is job
                was_queued = job in queue
                assert s.withdraw(job.batteries, job.request) is not was_running
                if was_queued:
                    withdrawn_queued.add(job.name)
                if not was_running:
                    fates[job.name].append("withdrawn")
                    assert job not in by_set(s.waiting).values()
            case "dispatch":
                turn()
    # Drive it to the end: each turn with nothing running starts a waiting job.
    while by_set(s.running) or by_set(s.waiting):
        if not by_set(s.running):
            before = len(by_set(s.waiting))
            turn()
            assert len(by_set(s.waiting)) < before
        for batteries in list(by_set(s.running)):
            s.finish(batteries)
        turn()
    for job in queue:
        if job.name not in withdrawn_queued:
            fates[job.name].append("queued")  # the loop would still take it
    for name, fate in fates.items():
        assert len(fate) == 1, f"{name}: {fate}"
    for i, x in enumerate(starts):
        for y in starts[i + 1 :]:
            if not x.batteries.isdisjoint(y.batteries):
                assert place[x.name] < place[y.name], f"{y.name} overtook {x.name}"


def test_jobs_of_different_owners_on_one_set_wait_for_each_other_and_replace_nothing() -> None:
    s = Scheduler[Job](queue_size=8, key=lambda job: job.request)
    a1, b1, a2 = Job("a1", A), Job("b1", A), Job("a2", A)
    assert s.arrive(A, a1, owner="trade").replaced is None
    assert s.dispatch().started == (a1,)
    assert s.arrive(A, b1, owner="peak").replaced is None  # another owner's: kept
    assert s.arrive(A, a2, owner="trade").replaced is None
    turn = s.dispatch()
    assert turn.started == ()
    assert turn.waits == ()  # behind its own set: nothing overlapping to report
    s.finish(A, owner="trade")
    assert s.dispatch().started == (b1,)  # arrival order, one at a time on the set
    s.finish(A, owner="peak")
    assert s.dispatch().started == (a2,)
    assert not s.withdraw(A, a2.request, owner="trade")  # it runs
