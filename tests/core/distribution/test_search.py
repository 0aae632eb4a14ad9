"""The exact search over which pairs run when their minimums exceed the request (rule 6)."""

from __future__ import annotations

import pytest

from distributord.core.distribution import Reason, distribute, search
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
    assert result.reasons[1] is Reason.DROPPED_BELOW_MINIMUM


def test_the_search_stops_at_its_budget_with_a_valid_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search, "SEARCH_BUDGET", 2)
    fleet = [
        battery(1, 75, 10, 95, 10_000, 600, minimum=600),
        battery(2, 85, 10, 95, 10_000, 500, minimum=500),
        battery(3, 85, 10, 95, 10_000, 500, minimum=500),
    ]
    result = distribute(1000, fleet)
    # Two steps only reach {A}: 600 W, valid, short of the exact answer.
    assert result.setpoints == {1: 600.0, 2: 0.0, 3: 0.0}
    assert result.remaining_w == 400.0
