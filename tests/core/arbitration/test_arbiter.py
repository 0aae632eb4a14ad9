"""The arbiter: proposals tried then kept, what a bucket commands, and what a change means."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from distributord.core.arbitration.arbiter import (
    Arbiter,
    Ask,
    Consequences,
    Origin,
    Trial,
    window_bounds,
)
from distributord.core.arbitration.holdings import Refused
from distributord.core.arbitration.merge import Window
from distributord.core.config import Config, ProgramConfig
from distributord.core.model import PowerBounds, Request

CONFIG = Config(
    programs={
        "fcr": ProgramConfig(priority=90, max_charge_w=500.0),
        "peak": ProgramConfig(priority=50),
        "trade": ProgramConfig(priority=10),
        "broker": ProgramConfig(priority=10),
    }
)
BOUNDS = PowerBounds(
    inclusion_lower=-2000.0, exclusion_lower=0.0, exclusion_upper=0.0, inclusion_upper=2000.0
)
PRIORITY = {name: program.priority for name, program in CONFIG.programs.items()}


@attrs.define(eq=False)
class Connection:
    """A connection that records what it is told."""

    told: list[tuple[str, Mapping[str, Any]]] = attrs.field(factory=list)

    def notify(self, method: str, params: Mapping[str, Any]) -> None:
        self.told.append((method, params))


def ask(
    program: str,
    power_w: float | None,
    *batteries: int,
    connection: Connection | None = None,
    proposed: bool = True,
) -> Ask:
    origin = Origin(program=program, connection=connection or Connection(), uid=1000, pid=7)
    request = Request(power_w=power_w or 0.0, batteries=frozenset(batteries))
    if not proposed:
        return Ask.set_power(request, origin)
    return Ask(origin=origin, request=request, power_w=power_w, proposed=True)


def keep(arbiter: Arbiter, made: Ask, now: float = 0.0) -> tuple[Trial, Consequences]:
    """Try and keep ``made``; merge every bucket (as the loop's re-plans do); its consequences."""
    trial = arbiter.trial(made, priority=PRIORITY[made.origin.program], now=now)
    assert isinstance(trial, Trial)
    arbiter.commit(trial)
    for bucket in arbiter.registry.holdings().buckets:
        arbiter.merge(bucket, BOUNDS, CONFIG)
    consequences = arbiter.consequences(
        trial.accepted.events, causer=made.origin.connection, new=trial.accepted.proposal
    )
    return trial, consequences


def test_a_refused_trial_changes_nothing() -> None:
    arbiter = Arbiter()
    keep(arbiter, ask("trade", 100.0, 1, 2))
    before = arbiter.registry.proposals()
    refused = arbiter.trial(ask("broker", 50.0, 2, 3), priority=10, now=1.0)
    assert isinstance(refused, Refused)
    assert refused.holder.program == "trade"
    assert arbiter.registry.proposals() == before


def test_a_trial_not_kept_changes_nothing() -> None:
    arbiter = Arbiter()
    trial = arbiter.trial(ask("trade", 100.0, 1, 2), priority=10, now=0.0)
    assert isinstance(trial, Trial)
    assert arbiter.registry.proposals() == ()


def test_a_lone_set_power_is_applied_as_asked_and_a_proposal_by_the_merge() -> None:
    arbiter = Arbiter()
    trial, _ = keep(arbiter, ask("trade", 5000.0, 1, 2, proposed=False))
    bucket = trial.bucket
    application = arbiter.application(bucket, arbiter.merge(bucket, BOUNDS, CONFIG))
    assert application is not None
    assert application.power_w == 5000.0  # the distribution trims it and reports the excess
    trial, _ = keep(arbiter, ask("fcr", 5000.0, 3))
    merged = arbiter.merge(trial.bucket, BOUNDS, CONFIG)
    application = arbiter.application(trial.bucket, merged)
    assert application is not None
    assert application.power_w == 500.0  # fcr's limit
    assert arbiter.figures() == {"trade": (1, 2000.0), "fcr": (1, 500.0)}


def test_preemption_tells_the_owner_its_new_grant_and_who_took_what() -> None:
    arbiter = Arbiter()
    trader = Connection()
    keep(arbiter, ask("trade", 100.0, 1, 2, connection=trader))
    _, consequences = keep(arbiter, ask("peak", -50.0, 2, 3))
    assert consequences.replanned == (frozenset({1, 2}),)
    assert consequences.dropped == ()
    assert any("preempted on [2] by program peak" in line for line in consequences.lines)
    (notice,) = arbiter.changed_notices(consequences, skip=None)
    assert notice.connection is trader
    assert notice.method == "proposal_changed"
    assert notice.params["reasons"] == ["preempted_by"]
    assert notice.params["held_batteries"] == [1]
    assert notice.params["preempted_by"] == {"program": "peak", "priority": 50}


def test_an_own_update_is_not_told_but_another_connections_is() -> None:
    arbiter = Arbiter()
    mine, other = Connection(), Connection()
    keep(arbiter, ask("trade", 100.0, 1, connection=mine))
    _, own = keep(arbiter, ask("trade", 200.0, 1, connection=mine))
    assert own.ended == ()
    assert own.ended_sets == (frozenset({1}),)
    _, theirs = keep(arbiter, ask("trade", 300.0, 1, connection=other))
    (notice,) = theirs.ended
    assert notice.connection is mine
    assert notice.params == {"batteries": [1], "why": "replaced"}


def test_a_superseded_proposal_is_told_even_by_its_own_connection_and_its_bucket_dropped() -> None:
    arbiter = Arbiter()
    mine = Connection()
    keep(arbiter, ask("trade", 100.0, 1, 2, connection=mine))
    _, consequences = keep(arbiter, ask("trade", 100.0, 2, 3, connection=mine))
    (notice,) = consequences.ended
    assert notice.params == {"batteries": [1, 2], "why": "superseded"}
    assert consequences.dropped == (frozenset({1, 2}),)
    assert any("batteries [1] freed" in line for line in consequences.lines)


def test_others_in_a_re_planned_bucket_are_told_only_when_their_grant_moved() -> None:
    arbiter = Arbiter()
    trader, broker = Connection(), Connection()
    trial, _ = keep(arbiter, ask("trade", 1500.0, 1, connection=trader))
    arbiter.heard(trial.accepted.proposal, 1500.0)
    trial, _ = keep(arbiter, ask("broker", 1000.0, 1, connection=broker))
    arbiter.heard(trial.accepted.proposal, 500.0)
    # peak joins below nobody: above both, it takes 1000 W of the 2000 W window.
    _, consequences = keep(arbiter, ask("peak", 1000.0, 1))
    assert consequences.replanned == ()  # its own bucket: its application follows
    change = Consequences(replanned=(frozenset({1}),))
    notices = arbiter.changed_notices(change, skip=None)
    told = {id(n.connection): n.params for n in notices}
    assert told[id(trader)]["granted_w"] == 1000.0
    assert told[id(trader)]["reasons"] == ["narrowed"]
    assert told[id(broker)]["granted_w"] == 0.0
    assert arbiter.changed_notices(change, skip=None) == []  # told once


def test_expiry_and_disconnection_end_what_they_should() -> None:
    arbiter = Arbiter()
    gone = Connection()
    made = attrs.evolve(ask("trade", 100.0, 1, connection=gone), until_disconnect=True)
    keep(arbiter, made)
    keep(arbiter, attrs.evolve(ask("peak", 100.0, 2), ttl_s=5.0), now=1.0)
    assert arbiter.expire(5.9).ended == ()
    (expired,) = arbiter.expire(6.0).ended
    assert expired.program == "peak"
    change = arbiter.disconnect(gone)
    (ended,) = change.ended
    assert ended.program == "trade"
    consequences = arbiter.consequences(change.events)
    assert consequences.ended[0].params == {"batteries": [1], "why": "disconnected"}
    assert consequences.dropped == (frozenset({1}),)
    assert arbiter.registry.proposals() == ()


def test_window_bounds_keep_the_power_bounds_order_whatever_the_window() -> None:
    # A window without 0 (a higher program demands at least 1000 W): the part above 0.
    above = window_bounds(Window(lower_w=1000.0, upper_w=10_000.0), BOUNDS)
    assert above == PowerBounds(
        inclusion_lower=0.0, exclusion_lower=0.0, exclusion_upper=1000.0, inclusion_upper=2000.0
    )
    below = window_bounds(Window(lower_w=-1500.0, upper_w=-500.0), BOUNDS)
    assert below == PowerBounds(
        inclusion_lower=-1500.0, exclusion_lower=-500.0, exclusion_upper=0.0, inclusion_upper=0.0
    )
    around = window_bounds(Window(lower_w=-300.0, upper_w=700.0), BOUNDS)
    assert around == PowerBounds(
        inclusion_lower=-300.0, exclusion_lower=0.0, exclusion_upper=0.0, inclusion_upper=700.0
    )
    unknown = PowerBounds(
        inclusion_lower=math.nan,
        exclusion_lower=math.nan,
        exclusion_upper=math.nan,
        inclusion_upper=math.nan,
    )
    assert window_bounds(Window(lower_w=0.0, upper_w=0.0), unknown) == PowerBounds(
        inclusion_lower=0.0, exclusion_lower=0.0, exclusion_upper=0.0, inclusion_upper=0.0
    )


@given(
    low=st.floats(-1e6, 1e6),
    width=st.floats(0.0, 1e6),
    inclusion=st.floats(0.0, 1e6),
    exclusion=st.floats(0.0, 1e6),
)
def test_window_bounds_are_always_valid_power_bounds(
    low: float, width: float, inclusion: float, exclusion: float
) -> None:
    exclusion = min(exclusion, inclusion)
    bounds = PowerBounds(
        inclusion_lower=-inclusion,
        exclusion_lower=-exclusion,
        exclusion_upper=exclusion,
        inclusion_upper=inclusion,
    )
    window = Window(lower_w=low, upper_w=low + width)
    got = window_bounds(window, bounds)  # PowerBounds checks its own order
    # Every power it allows besides 0 lies in the window and in the aggregate bounds.
    for edge in (
        got.inclusion_lower,
        got.exclusion_lower,
        got.exclusion_upper,
        got.inclusion_upper,
    ):
        if edge != 0.0:
            assert window.lower_w <= edge <= window.upper_w
            assert -inclusion <= edge <= inclusion


def test_what_a_proposal_may_still_hold_leaves_out_higher_buckets_batteries() -> None:
    arbiter = Arbiter()
    keep(arbiter, ask("peak", 100.0, 1, 2))
    keep(arbiter, ask("trade", 100.0, 3))
    assert arbiter.available(frozenset({1, 3, 4}), 10) == {4}  # 3: held at 10 by another set
    assert arbiter.available(frozenset({3}), 10) == {3}
    assert arbiter.available(frozenset({1, 3, 4}), 90) == {1, 3, 4}
    assert arbiter.available(frozenset({1, 2}), 10) == {1, 2}  # peak's own set: its bucket's
