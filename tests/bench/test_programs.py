"""``bench.programs``' sets, configuration, pacing and figures: no daemon runs here."""

from __future__ import annotations

import pytest

from bench.programs import (
    PROGRAMS,
    Tally,
    battery_set,
    figures,
    merged,
    programs_config,
    round_ratios,
    ticks_passed,
)
from distributord.core.config import parse_config


def test_the_sets_overlap_as_the_issue_asks_on_100_batteries() -> None:
    fcr, peak, trade = (battery_set(p, 100) for p in PROGRAMS)
    assert fcr == list(range(1001, 1041))
    assert peak == list(range(1031, 1081))
    assert trade == list(range(1001, 1101))


def test_the_programs_configuration_is_one_the_daemon_reads() -> None:
    config = parse_config(programs_config(PROGRAMS, 1234).encode(), source="test")
    for p in PROGRAMS:
        assert config.programs[p.name].priority == p.priority
        assert config.programs[p.name].users == (1234,)


@pytest.mark.parametrize(
    ("elapsed", "tick", "passed"),
    [
        (0.05, 0, 0),  # answered before the next tick: wait for it
        (0.1, 0, 1),  # answered at the next tick: it goes at once
        (0.25, 0, 2),  # two ticks passed: the second goes at once, the first is skipped
        (0.75, 5, 2),
        (0.55, 5, 0),
    ],
)
def test_a_late_reply_counts_the_ticks_it_passed(elapsed: float, tick: int, passed: int) -> None:
    assert ticks_passed(elapsed, tick, 0.1) == passed


def test_the_figures_are_the_median_and_the_nearest_rank_99th_in_ms() -> None:
    samples = [k / 1000 for k in range(1, 101)]  # 1 ... 100 ms
    p50, p99 = figures(samples)
    assert p50 == pytest.approx(50.5)
    assert p99 == pytest.approx(100.0)


def test_programs_merge_round_by_round_and_ratios_are_per_round() -> None:
    a = Tally(rounds=[[0.010, 0.030], [0.020]], late=1, skipped=0, failed=1, notifications=2)
    b = Tally(rounds=[[0.020], [0.040, 0.060]], late=2, skipped=3, failed=0, notifications=1)
    both = merged([a, b])
    assert both.rounds == [[0.010, 0.030, 0.020], [0.020, 0.040, 0.060]]
    assert (both.late, both.skipped, both.failed, both.notifications) == (3, 3, 1, 3)
    assert both.latencies == [0.010, 0.030, 0.020, 0.020, 0.040, 0.060]
    alone = Tally(rounds=[[0.010], [0.020]])
    # p50 20 ms over 10 ms, then 40 over 20; p99 (nearest rank) 30 over 10, then 60 over 20.
    ratios = round_ratios(both, alone)
    assert [r for pair in ratios for r in pair] == pytest.approx([2.0, 3.0, 2.0, 3.0])
