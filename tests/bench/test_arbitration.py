"""``bench.arbitration``'s layout and figures: built and checked, not timed."""

from __future__ import annotations

import pytest

from bench.arbitration import arbiter_case, arbiter_pass, layout, ratio_figure
from distributord.core.arbitration.merge import Mode


def test_the_layout_gives_every_program_disjoint_sets_that_overlap_the_others() -> None:
    proposals = layout(10, 50)
    sets = {s for _, s in proposals}
    assert len(proposals) == 10 * 25
    assert len(sets) == 50
    assert frozenset().union(*sets) == frozenset(range(1000, 1100))
    for program in range(10):
        mine = [s for p, s in proposals if p == program]
        assert len(mine) == 25
        assert sum(len(s) for s in mine) == len(frozenset().union(*mine))  # disjoint
    assert sum(1 for a in sets for b in sets if a != b and a & b) == 2 * 25  # pairs overlap


@pytest.mark.parametrize(("programs", "buckets"), [(10, 1), (10, 3), (1, 4)])
def test_the_layout_needs_pairs_of_buckets_and_two_programs(programs: int, buckets: int) -> None:
    with pytest.raises(ValueError, match="even number"):
        layout(programs, buckets)


@pytest.mark.parametrize("mode", list(Mode))
def test_the_arbiter_holds_every_bucket_and_preempts_half_of_them(mode: Mode) -> None:
    case = arbiter_case(6, 8, mode)
    holdings = case.arbiter.registry.holdings()
    assert len(holdings.buckets) == 8
    assert len(case.arbiter.registry.proposals()) == 6 * 4
    assert all(len(b.proposals) == 3 and b.held for b in holdings.buckets)
    preempted = [b for b in holdings.buckets if b.held != b.batteries]
    assert len(preempted) == 4
    # Which bucket of a pair holds the shared battery alternates: sets of 2 and of 3 both lose.
    assert {len(b.batteries) for b in preempted} == {2, 3}


def test_a_pass_changes_one_proposal_and_merges_every_bucket() -> None:
    case = arbiter_case(4, 4, Mode.ADD)
    before = {p.sequence for p in case.arbiter.registry.proposals()}
    seconds = arbiter_pass(case, 5)
    after = case.arbiter.registry.proposals()
    assert len(after) == len(before)
    (new,) = (p for p in after if p.sequence not in before)
    assert new.batteries == case.asks[5].batteries
    assert new.power_w == case.asks[5].power_w
    assert all(case.arbiter.granted(p) is not None for p in after)
    assert len(seconds) == 4
    assert all(s > 0 for s in seconds)


def test_the_ratio_is_of_the_medians_with_the_rounds_spread() -> None:
    text = ratio_figure([[2.0, 4.0, 6.0], [9.0, 9.0, 9.0]], [[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]])
    # 7.5 / 2 over all passes; round by round 4 / 1 and 9 / 3.
    assert text.strip() == "3.75× (rounds 3.00–4.00)"
