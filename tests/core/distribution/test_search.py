"""The exact search over which pairs run when their minimums exceed the request (rule 6)."""

from __future__ import annotations

import math
import random

import pytest

from bench.distribution import best_reachable
from bench.distribution import fixed_power_fleet as fixed_power_fleet_of
from distributord.core.distribution import Allotment, Pair, SearchBudget, distribute, search
from tests.core.distribution.spec import battery


def test_unreachable_request_delivers_the_largest_reachable_magnitude_below_it() -> None:
    # Reachable: 0..100, 600..800, 1200..1500. 1000 W cannot be met; 800 W is the best below.
    fleet = [
        battery(1, 50, 10, 90, 10_000, 700, minimum=600),
        battery(2, 50, 10, 90, 10_000, 700, minimum=600),
        battery(3, 50, 10, 90, 10_000, 100),
    ]
    result = distribute(1000, fleet)
    assert result.placed_w == pytest.approx(800)
    assert result.remaining_w == pytest.approx(200)


def test_minimums_that_exceed_the_request_are_resolved_by_search() -> None:
    # Shares 500/250/250 are all below their minimums. Greedy drops B (lightest, lowest id) and
    # is then stuck with A (600 W exactly) and C (500 W exactly): 1100 W of minimums for
    # 1000 W. The search finds B + C = 1000 W exactly, dropping the heaviest pair.
    fleet = [
        battery(1, 75, 10, 95, 10_000, 600, minimum=600),
        battery(2, 85, 10, 95, 10_000, 500, minimum=500),
        battery(3, 85, 10, 95, 10_000, 500, minimum=500),
    ]
    result = distribute(1000, fleet)
    assert result.setpoints == {1: 0.0, 2: 500.0, 3: 500.0}
    assert result.remaining_w == 0.0
    assert result.reasons[1] is Allotment.DROPPED_BELOW_MINIMUM


def test_the_search_stops_at_its_step_budget_with_a_valid_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search, "SEARCH_STEPS", 2)
    # Half watts: the exact subset-sum over whole watts does not apply.
    fleet = [
        battery(1, 75, 10, 95, 10_000, 600.5, minimum=600.5),
        battery(2, 85, 10, 95, 10_000, 500.5, minimum=500.5),
        battery(3, 85, 10, 95, 10_000, 500.5, minimum=500.5),
    ]
    result = distribute(1001, fleet)
    # Two steps only reach {A}: 600.5 W, valid, short of the exact answer; the others say why.
    assert result.setpoints == {1: 600.5, 2: 0.0, 3: 0.0}
    assert result.remaining_w == 400.5
    assert result.reasons[2] is Allotment.SEARCH_BUDGET_ENDED
    assert result.reasons[3] is Allotment.SEARCH_BUDGET_ENDED


class TickingClock:
    """A clock that advances a fixed step on every reading: time spent is readings taken."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s, self.readings = 0.0, step_s, 0

    def __call__(self) -> float:
        self.readings += 1
        self.now += self.step_s
        return self.now


def fixed_power_fleet(powers: list[float]) -> list[Pair]:
    return [battery(k, 50, 10, 90, 10_000, p, minimum=p) for k, p in enumerate(powers, 1)]


def fractional(powers: list[float]) -> list[float]:
    """Powers with half a watt: the exact subset-sum over whole watts does not apply."""
    return [p + 0.5 for p in powers]


REACHABLE = 1001.5 + 1003.5 + 1005.5 + 1023.5
"""Four of the fixed-power inverters below add up to it exactly."""


def test_the_search_stops_at_its_time_budget_and_keeps_the_best_found() -> None:
    # 40 fixed-power inverters of odd sizes and a half: meeting the request needs a search.
    powers = fractional([1001 + 2 * k for k in range(40)])
    clock = TickingClock(step_s=0.001)
    budget = SearchBudget(clock=clock, seconds=0.002)
    result = distribute(REACHABLE, fixed_power_fleet(powers), search_budget=budget)
    # One reading starts the budget; each later one (every 64 steps, and before each round of
    # improvement) moves time 1 ms on: the budget is spent after a handful.
    assert 2 <= clock.readings <= 5
    total = math.fsum(result.setpoints.values())
    assert total + result.remaining_w == REACHABLE
    assert 0 < total < REACHABLE  # cut short: the best found is below the exact answer
    assert all(x in (0.0, float(p)) for x, p in zip(result.setpoints.values(), powers, strict=True))
    not_chosen = [b for b, x in result.setpoints.items() if x == 0.0]
    assert {result.reasons[b] for b in not_chosen} == {Allotment.SEARCH_BUDGET_ENDED}


def test_a_search_with_time_to_spare_meets_a_reachable_request_exactly() -> None:
    powers = fractional([1001 + 2 * k for k in range(40)])
    budget = SearchBudget(clock=TickingClock(step_s=1e-7), seconds=0.002)
    result = distribute(REACHABLE, fixed_power_fleet(powers), search_budget=budget)
    assert math.fsum(result.setpoints.values()) == REACHABLE
    assert result.remaining_w == 0.0
    assert Allotment.SEARCH_BUDGET_ENDED not in result.reasons.values()


def test_a_budget_must_be_a_positive_number_of_seconds() -> None:
    with pytest.raises(ValueError, match="seconds"):
        SearchBudget(clock=TickingClock(1.0), seconds=0.0)


@pytest.mark.parametrize("size", [300, 1000])
def test_large_fixed_power_fleets_meet_reachable_requests_exactly(size: int) -> None:
    # The depth-first search alone ends short here; swapping pairs one for one closes the gap.
    pairs = fixed_power_fleet_of(size)
    powers = [int(p.battery.bounds.inclusion_upper) for p in pairs]
    rng = random.Random(size)
    for _ in range(5):
        target = rng.randint(10_000, sum(powers) // 2)  # sums of several are dense there
        assert best_reachable(powers, target) == target
        result = distribute(float(target), pairs)
        assert math.fsum(result.setpoints.values()) == target
        assert result.remaining_w == 0.0


def test_whole_watt_fleets_are_solved_exactly_keeping_the_heaviest() -> None:
    # 600 + 500 + 500 = 1600 misses 1000; 500 + 500 meets it, and so does no set with A. Then
    # 1100 = A + one of B/C: the heavier (B, more headroom) runs.
    fleet = [
        battery(1, 75, 10, 95, 10_000, 600, minimum=600),
        battery(2, 85, 10, 95, 10_000, 500, minimum=500),
        battery(3, 90, 10, 95, 10_000, 500, minimum=500),
    ]
    assert distribute(1000, fleet).setpoints == {1: 0.0, 2: 500.0, 3: 500.0}
    assert distribute(1100, fleet).setpoints == {1: 600.0, 2: 500.0, 3: 0.0}


def test_an_unreachable_whole_watt_request_gets_the_best_below_at_once() -> None:
    # Even powers, an odd request: unreachable. The best below is found exactly and is final
    # (no budget ran out), so the pairs left out say they were dropped, not that time ended.
    powers = [float(2 * (500 + 7 * k)) for k in range(30)]
    clock = TickingClock(step_s=1.0)  # any reading would end the budget at once
    budget = SearchBudget(clock=clock, seconds=0.002)
    result = distribute(20_001, fixed_power_fleet(powers), search_budget=budget)
    best = best_reachable([int(p) for p in powers], 20_001)
    assert best < 20_001
    assert math.fsum(result.setpoints.values()) == best
    assert result.remaining_w == 20_001 - best
    assert Allotment.SEARCH_BUDGET_ENDED not in result.reasons.values()


@pytest.mark.parametrize(("unit", "target"), [(1.0, 300.0), (1.0, 350.0), (1.0025, 300.75)])
def test_the_search_prefers_a_fair_choice_among_those_placing_the_same(
    unit: float, target: float
) -> None:
    # Heaviest first: 200 W, two identical 100 W, a lighter 100 W (minimum = cap). The heaviest
    # and one of the identical pair meet 300 W, unfairly; the heaviest and the lightest meet it
    # fairly ("Fair choices under minimums"). 350 W is out of reach: both place 300 W. Whole
    # watts take the exact subset-sum, fractions of a watt the depth-first search.
    w = [3.0, 2.0, 2.0, 1.0]
    sizes = [200 * unit, 100 * unit, 100 * unit, 100 * unit]
    chosen, reached, cut_short = search._search(target, w, sizes, sizes)
    assert chosen == {0, 3}
    assert reached == 300 * unit
    assert not cut_short


@pytest.mark.parametrize("unit", [1.0, 1.0025])
def test_an_unfair_choice_is_made_only_when_it_places_more(unit: float) -> None:
    # 100 W: only one of the identical pair meets it (both, or the 200 W pair, are too much).
    w = [2.0, 2.0, 1.0]
    sizes = [100 * unit, 100 * unit, 200 * unit]
    chosen, reached, cut_short = search._search(100 * unit, w, sizes, sizes)
    assert chosen == {0}
    assert reached == 100 * unit
    assert not cut_short
