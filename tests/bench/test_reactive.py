"""``bench.reactive``'s site and modes: built and checked, not timed."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from bench.reactive import MODES, RUNS, Site, active_first, main, reactive_first, site
from distributord.core.distribution import ReactiveRoom, ReactiveSplit, reactive_rooms


def test_the_site_has_pinned_unknown_and_ordinary_inverters_and_s_binds_on_some() -> None:
    bench_site = site(100)
    rooms = reactive_rooms(bench_site.limits)
    kinds = {"pinned": 0, "unknown": 0, "ordinary": 0}
    for room in rooms.values():
        assert isinstance(room, ReactiveRoom)
        if math.isnan(room.lower_var):
            kinds["unknown"] += 1
        elif room.pinned_var is not None:
            kinds["pinned"] += 1
        else:
            kinds["ordinary"] += 1
    assert kinds == {"pinned": 10, "unknown": 5, "ordinary": 85}
    capped = sum(c is not p for c, p in zip(bench_site.capped, bench_site.pairs, strict=True))
    assert 0 < capped < 100
    assert len(bench_site.requests) == 19
    assert {q > 0 for _, q in bench_site.requests} == {True, False}


@pytest.mark.parametrize("run", [active_first, reactive_first])
def test_both_priorities_place_the_reactive_target(
    run: Callable[[Site, float, float], ReactiveSplit],
) -> None:
    bench_site = site(30)
    for p, q in bench_site.requests:
        split = run(bench_site, p, q)
        placed = math.fsum(split.setpoints.values())
        assert abs(placed + split.remaining_var - q) <= 1e-6
        assert abs(placed) > 0.5 * abs(q)  # most of it: 40 % of the room was asked


def test_main_prints_every_mode_for_every_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sizes", "5,10", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert set(RUNS) == set(MODES)
    for size in (5, 10):
        for mode in MODES:
            rows = [line for line in out.splitlines() if line.split()[:1] == [str(size)]]
            assert any(mode in row for row in rows)
