"""The reference SDK's N:M cases, ported: groups through our whole pure pipeline.

The reference SDK (frequenz-sdk 1.0) tests batteries and inverters that share a DC bus in
``tests/actor/power_distributing/``. Each case here builds the members' snapshots from its
numbers (capacities, SoC and SoC bounds, power bounds) and runs them the way the daemon does
(:func:`run`): members merged into the group's battery and inverter
(:func:`~distributord.core.groups.merged_battery`,
:func:`~distributord.core.groups.merged_inverter`; lead = smallest id), one
:class:`~distributord.core.distribution.Pair` per group, the request checked and split
(:func:`~distributord.core.planning.plan`), rounded as the wire carries it
(:func:`~distributord.core.planning.as_sent`), and each group's share divided among its usable
inverters (:func:`~distributord.core.groups.divide`, each inverter's bounds within its
apparent-power limit as the daemon's ``GroupSide`` brings them; no SDK case gives one). Every
result is checked against the invariants (each inverter 0 or within its bounds, a group within
its merged caps, never over the request, conservation) before its numbers are compared.

Ported, from ``test_battery_distribution_algorithm.py`` (``BatteryDistributionAlgorithm``):
``test_distribute_power_two_batteries_one_inverter``, ``test_scenario_4`` (one battery on two
inverters) and ``test_scenario_5`` (two batteries, each on two inverters); from
``test_power_distributing.py`` (the actor): ``test_two_batteries_one_inverters``,
``test_battery_two_inverters``, ``test_two_batteries_three_inverters``,
``test_two_batteries_one_inverter_different_exclusion_bounds`` and ``..._2``. The actor's
inverter ids are the ones its ``GraphGenerator`` gives (``10·n + 8`` for the n-th id drawn; the
SDK's ``test_connected_but_not_requested_batteries`` names inverter 48 for the same graph); the
actor cases assert no inverter id, only the succeeded and excess power, which are ours placed
and remaining when every command succeeds.

Where our rules give the SDK's numbers, a test asserts exactly those (its docstring says so).
Where they differ, a separately named test asserts ours, worked out by hand in a comment, and
its docstring gives the SDK's numbers and the rule we follow instead. The differences:

* a group's share is divided among its inverters in proportion to their caps; the SDK fills
  one inverter first (scenarios 4 and 5);
* a share below its pair's minimum is dropped, the pair of smaller weight first, and the others
  take it; the SDK raises it to the minimum and takes it off the others (scenario 5);
* a group's battery minimum is its batteries' widest minimum; the SDK's is the widest times
  the number of batteries (``..._different_exclusion_bounds``).

Left out, as the actor's plumbing rather than distribution: the actor's construction and
component maps, the mocked streams, status tracker and result channels, timeouts, and the
actor cases that test those (``test_two_batteries_one_broken_one_inverters``: a battery
without data is the status tracker's business; ``test_connected_but_not_requested_batteries``:
a request naming a group in part is refused before any split, which the daemon tests on the
simulator, ``tests/shell/test_groups.py``). The algorithm's 1:1 cases are not N:M and not here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

import attrs

from distributord.core.distribution import Distribution, Pair, capped_active_bounds
from distributord.core.groups import divide, merged_battery, merged_inverter, usable_inverters
from distributord.core.model import (
    BatterySnapshot,
    Error,
    InverterSnapshot,
    OutOfBounds,
    PowerBounds,
    Request,
)
from distributord.core.planning import as_sent, plan
from distributord.core.topology import Group
from tests.snapshots import battery_snapshot, inverter_snapshot

MAX_AGE_S = 10.0
"""``status.max_data_age_s``: every snapshot here is sampled and received at 0, so all are
fresh."""

CONSERVATION_RELATIVE = 1e-9
"""Σ setpoints + remaining = request, within this relative error (``spec/distribution.md``)."""

Members = tuple[Sequence[BatterySnapshot], Sequence[InverterSnapshot]]
"""A group's batteries and inverters, as their own snapshots."""


@attrs.frozen
class Outcome:
    """What the daemon would command for a request, and what it would report as excess.

    Attributes:
        setpoints: Inverter id to W, as sent (every usable inverter of every group).
        remaining_w: What was not placed: the split's remaining and what no division took.
    """

    setpoints: Mapping[int, float]
    remaining_w: float

    @property
    def placed_w(self) -> float:
        """The setpoints' sum."""
        return math.fsum(self.setpoints.values())


def battery(
    component_id: int,
    capacity_wh: float,
    soc_pct: float,
    soc_bounds_pct: tuple[float, float],
    bounds: PowerBounds,
) -> BatterySnapshot:
    """A battery snapshot from the SDK's ``battery_msg`` arguments."""
    return battery_snapshot(
        component_id=component_id,
        capacity_wh=capacity_wh,
        soc_pct=soc_pct,
        soc_lower_pct=soc_bounds_pct[0],
        soc_upper_pct=soc_bounds_pct[1],
        bounds=bounds,
    )


def inverter(component_id: int, bounds: PowerBounds) -> InverterSnapshot:
    """An inverter snapshot from the SDK's ``inverter_msg`` arguments."""
    return inverter_snapshot(component_id=component_id, bounds=bounds)


def run(power_w: float, groups: Sequence[Members]) -> Outcome | OutOfBounds | Error:
    """Our pipeline over ``groups``, as the daemon runs it (see the module docstring).

    Args:
        power_w: The request, W (+ charge, − discharge); every battery is named.
        groups: Each group's members. A group of one battery and one inverter is a plain pair
            (not merged, not divided), as in the daemon.

    Returns:
        The setpoints and what remains, checked against the invariants; or the plan's refusal.
    """
    units: list[tuple[Group, Pair, Sequence[InverterSnapshot]]] = []
    for batteries, inverters in groups:
        group = Group(
            batteries=tuple(sorted(b.component_id for b in batteries)),
            inverters=tuple(sorted(i.component_id for i in inverters)),
        )
        if len(batteries) == len(inverters) == 1:
            pair = Pair(battery=batteries[0], inverter=inverters[0])
        else:
            pair = Pair(
                battery=merged_battery(group.battery, batteries),
                inverter=merged_inverter(group.inverter, inverters, MAX_AGE_S),
            )
        units.append((group, pair, inverters))
    request = Request(
        power_w=power_w, batteries=frozenset(b for group, _, _ in units for b in group.batteries)
    )
    result = plan(request, [pair for _, pair, _ in units], exponent=1.0)
    if not isinstance(result, Distribution):
        return result
    sent = as_sent(result)
    setpoints: dict[int, float] = {}
    not_divided: list[float] = []
    for group, pair, inverters in units:
        share = sent.setpoints[group.battery]
        if len(group.batteries) == len(group.inverters) == 1:
            setpoints[group.inverter] = share
            continue
        usable = usable_inverters(inverters, MAX_AGE_S)
        division = divide(
            share,
            [(i.component_id, capped_active_bounds(i.bounds, i.apparent_limit_va)) for i in usable],
        )
        _check_group(share, pair, division.setpoints.values())
        setpoints.update(division.setpoints)
        not_divided.append(share - division.placed_w)
    done = Outcome(setpoints, math.fsum([sent.remaining_w, *not_divided]) + 0.0)
    _check_invariants(power_w, [i for _, _, members in units for i in members], done)
    return done


def _check_group(share: float, pair: Pair, divided: Iterable[float]) -> None:
    """A group's share is within its merged pair's window, and its division never over it."""
    if share != 0.0:
        row = pair.charge_row if share > 0 else pair.discharge_row
        assert row.min_w <= abs(share) <= row.cap_w, (pair.battery_id, share, row)
    total = sum((Fraction(x) for x in divided), Fraction(0))
    assert abs(total) <= abs(Fraction(share)), (pair.battery_id, share, total)


def _check_invariants(
    power_w: float, inverters: Sequence[InverterSnapshot], outcome: Outcome
) -> None:
    """Each inverter 0 or within its bounds; never over; conservation; remaining's sign."""
    for member in inverters:
        x = outcome.setpoints[member.component_id]
        if x == 0.0:
            continue
        bounds = member.bounds
        assert (x > 0) == (power_w > 0), (member.component_id, x)
        window = (
            (bounds.exclusion_upper, bounds.inclusion_upper)
            if x > 0
            else (-bounds.exclusion_lower, -bounds.inclusion_lower)
        )
        assert window[0] <= abs(x) <= window[1], (member.component_id, x, bounds)
    placed = sum((Fraction(x) for x in outcome.setpoints.values()), Fraction(0))
    assert abs(placed) <= abs(Fraction(power_w)), f"over the request: {float(placed)} W"
    total = placed + Fraction(outcome.remaining_w)
    assert abs(total - Fraction(power_w)) <= CONSERVATION_RELATIVE * abs(Fraction(power_w))
    if outcome.remaining_w:
        assert (outcome.remaining_w > 0) == (power_w > 0), outcome


def outcome(power_w: float, groups: Sequence[Members]) -> Outcome:
    """:func:`run` where the request is accepted."""
    result = run(power_w, groups)
    assert isinstance(result, Outcome), result
    return result


# --- test_battery_distribution_algorithm.py ------------------------------------------------


def test_two_batteries_one_inverter_match_the_sdk() -> None:
    """``test_distribute_power_two_batteries_one_inverter``: exactly the SDK's numbers.

    Batteries 0 (49 kWh, 20 points of charge headroom) and 2 (98 kWh, 30 points), each ±500 W,
    on inverter 1 (±500 W): 600 W gives ``{1: 500}`` and 100 W remaining. The SDK passes the
    headroom directly; here it is SoC 80 and 70 % under a 100 % bound.
    """
    group = (
        [
            battery(0, 49_000.0, 80.0, (0.0, 100.0), PowerBounds.symmetric(500.0)),
            battery(2, 98_000.0, 70.0, (0.0, 100.0), PowerBounds.symmetric(500.0)),
        ],
        [inverter(1, PowerBounds.symmetric(500.0))],
    )
    assert outcome(600.0, [group]) == Outcome({1: 500.0}, 100.0)


SCENARIO_4: list[Members] = [
    (
        [battery(1, 10_000.0, 50.0, (10.0, 90.0), PowerBounds.symmetric(1500.0, 200.0))],
        [
            inverter(2, PowerBounds.symmetric(1000.0, 100.0)),
            inverter(3, PowerBounds.symmetric(1000.0, 100.0)),
        ],
    )
]
"""``test_scenario_4``: one battery (±1500 W, minimum 200 W) on two inverters (±1000 W,
minimum 100 W each)."""


def test_scenario_4_divides_in_proportion_to_caps_not_first_inverter_first() -> None:
    """``test_scenario_4``: the group's total and what remains are the SDK's, its division not.

    The SDK fills inverter 2 first: −300 → ``{2: −300, 3: 0}``, 300 → ``{2: 300, 3: 0}``,
    −1800 → ``{2: −1000, 3: −500}`` with −300 remaining. ``spec/plant.md``: "its share is
    divided among its inverters in proportion to their caps", so both inverters share the DC
    bus's load equally here; the group's total and the remaining are the SDK's in every case.
    """
    # The group: caps min(1500, 1000 + 1000) = 1500 W, minimum max(200, 100) = 200 W.
    # ±300 W: within [200, 1500], all of it; equal caps: 150 W each (>= the 100 W minimum).
    assert outcome(-300.0, SCENARIO_4) == Outcome({2: -150.0, 3: -150.0}, 0.0)
    assert outcome(300.0, SCENARIO_4) == Outcome({2: 150.0, 3: 150.0}, 0.0)
    # −1800 W: the group's cap, −1500 W, 750 W each; −300 W remains.
    assert outcome(-1800.0, SCENARIO_4) == Outcome({2: -750.0, 3: -750.0}, -300.0)


SCENARIO_5: list[Members] = [
    (
        [battery(1, 10_000.0, 20.0, (10.0, 90.0), PowerBounds.symmetric(1500.0, 200.0))],
        [
            inverter(10, PowerBounds.symmetric(1000.0, 100.0)),
            inverter(11, PowerBounds.symmetric(1000.0, 100.0)),
        ],
    ),
    (
        [battery(2, 10_000.0, 60.0, (10.0, 90.0), PowerBounds.symmetric(1500.0))],
        [
            inverter(20, PowerBounds.symmetric(1000.0, 100.0)),
            inverter(21, PowerBounds.symmetric(1000.0, 100.0)),
        ],
    ),
]
"""``test_scenario_5``: two batteries of 10 kWh at 20 and 60 % of 10..90 %, each ±1500 W
(battery 1 minimum 200 W, battery 2 none), each on two inverters (±1000 W, minimum 100 W)."""

# Scenario 5's groups: A (battery 1 on 10, 11): caps 1500 W, minimum max(200, 100) = 200 W;
# B (battery 2 on 20, 21): caps 1500 W, minimum max(0, 100) = 100 W. Weights (capacity times
# headroom): discharging A 10 points, B 50 (1 : 5); charging A 70, B 30 (7 : 3).


def test_scenario_5_group_totals_match_the_sdk_divided_in_proportion_to_caps() -> None:
    """``test_scenario_5`` −1800, 3000, 3500: each group's total and the remaining are the SDK's.

    The SDK: −1800 → ``{10: −300, 11: 0, 20: −1000, 21: −500}``; 3000 →
    ``{10: 1000, 11: 500, 20: 1000, 21: 500}``; 3500 → the same and 500 remaining. Its group
    totals (−300 and −1500; 1500 and 1500) and remaining are ours exactly; within a group it
    fills the first inverter, we divide "in proportion to their caps" (``spec/plant.md``).
    """
    # −1800 W at 1 : 5: A −300 W (>= 200), B −1500 W (its cap); 150 + 150 and 750 + 750.
    assert outcome(-1800.0, SCENARIO_5) == Outcome(
        {10: -150.0, 11: -150.0, 20: -750.0, 21: -750.0}, 0.0
    )
    # 3000 W: the caps add up to 3000 W, each group at its 1500 W cap: 750 W per inverter.
    every_cap = {10: 750.0, 11: 750.0, 20: 750.0, 21: 750.0}
    assert outcome(3000.0, SCENARIO_5) == Outcome(every_cap, 0.0)
    # 3500 W: the same, 500 W remains.
    assert outcome(3500.0, SCENARIO_5) == Outcome(every_cap, 500.0)


def test_scenario_5_drops_the_group_of_smaller_weight_below_its_minimum() -> None:
    """``test_scenario_5`` ±300: the group whose share is below its minimum is dropped.

    The SDK keeps both groups running, one at its minimum: −300 →
    ``{10: −200, 11: 0, 20: −100, 21: 0}``, 300 → ``{10: 200, 11: 0, 20: 100, 21: 0}``.
    ``spec/distribution.md`` rule 3: "A pair whose share falls below its ``m`` cannot run at
    that share. Choose a set of running pairs such that the request is met exactly if any
    choice can meet it; prefer dropping (setting to 0) the pairs with the smallest weight, and
    re-fill the others." The whole request is placed either way.
    """
    # −300 W at 1 : 5: A's share −50 W is below its 200 W minimum: A dropped (the smaller
    # weight), B takes −300 W (within [100, 1500]): 150 W per inverter (>= 100).
    assert outcome(-300.0, SCENARIO_5) == Outcome({10: 0.0, 11: 0.0, 20: -150.0, 21: -150.0}, 0.0)
    # 300 W at 7 : 3: B's share 90 W is below its 100 W minimum: B dropped (the smaller
    # weight), A takes 300 W (within [200, 1500]): 150 W per inverter.
    assert outcome(300.0, SCENARIO_5) == Outcome({10: 150.0, 11: 150.0, 20: 0.0, 21: 0.0}, 0.0)


# --- test_power_distributing.py ------------------------------------------------------------


def _actor_battery(component_id: int, bounds: PowerBounds | None = None) -> BatterySnapshot:
    """The actor tests' battery: 98 kWh at 40 % of 20..80 %, ±1000 W unless ``bounds``."""
    return battery(
        component_id, 98_000.0, 40.0, (20.0, 80.0), bounds or PowerBounds.symmetric(1000.0)
    )


ACTOR_INVERTER = PowerBounds.symmetric(500.0)
"""The actor tests' inverter bounds."""


def test_two_batteries_one_inverter_are_held_at_the_inverters_cap_as_in_the_sdk() -> None:
    """``test_two_batteries_one_inverters``: exactly the SDK's numbers.

    Batteries 9 and 19 (±1000 W each) on inverter 48 (±500 W): 1200 W succeeds with 500 W,
    700 W excess.
    """
    group = ([_actor_battery(9), _actor_battery(19)], [inverter(48, ACTOR_INVERTER)])
    assert outcome(1200.0, [group]) == Outcome({48: 500.0}, 700.0)


def test_battery_two_inverters_take_both_caps_as_in_the_sdk() -> None:
    """``test_battery_two_inverters``: exactly the SDK's numbers.

    Battery 9 (±1000 W) on inverters 18 and 28 (±500 W each): 1200 W succeeds with 1000 W,
    200 W excess. The SDK asserts no inverter's setpoint; each at its cap is also ours.
    """
    group = ([_actor_battery(9)], [inverter(18, ACTOR_INVERTER), inverter(28, ACTOR_INVERTER)])
    assert outcome(1200.0, [group]) == Outcome({18: 500.0, 28: 500.0}, 200.0)


def test_two_batteries_three_inverters_take_every_cap_as_in_the_sdk() -> None:
    """``test_two_batteries_three_inverters``: exactly the SDK's numbers.

    Batteries 9 and 19 (±1000 W each) on inverters 28, 38 and 48 (±500 W each): 1700 W
    succeeds with 1500 W, 200 W excess.
    """
    group = (
        [_actor_battery(9), _actor_battery(19)],
        [inverter(i, ACTOR_INVERTER) for i in (28, 38, 48)],
    )
    assert outcome(1700.0, [group]) == Outcome({28: 500.0, 38: 500.0, 48: 500.0}, 200.0)


EXCLUSION_BATTERIES = [
    battery(9, 10_000.0, 40.0, (20.0, 80.0), PowerBounds.symmetric(1000.0, 200.0)),
    battery(19, 10_000.0, 40.0, (20.0, 80.0), PowerBounds.symmetric(1000.0, 100.0)),
]
"""Both ``..._different_exclusion_bounds`` cases' batteries: minimums 200 and 100 W."""


def test_different_exclusion_bounds_2_is_out_of_bounds_as_in_the_sdk() -> None:
    """``test_two_batteries_one_inverter_different_exclusion_bounds_2``: the SDK's answer.

    The batteries on inverter 28 (±1000 W, minimum 500 W): 300 W is out of bounds, the
    bounds (−1000, −500, 500, 1000) exactly.
    """
    result = run(
        300.0, [(EXCLUSION_BATTERIES, [inverter(28, PowerBounds.symmetric(1000.0, 500.0))])]
    )
    assert isinstance(result, OutOfBounds)
    assert result.bounds == PowerBounds.symmetric(1000.0, 500.0)


def test_different_exclusion_bounds_takes_the_widest_battery_minimum_not_times_the_count() -> None:
    """``test_two_batteries_one_inverter_different_exclusion_bounds``: ours runs it.

    The batteries on inverter 48 (±500 W, no minimum). The SDK refuses 300 W as out of bounds
    (−500, −400, 400, 500): its group of batteries has the largest minimum times the number of
    batteries (2 · 200 W). Ours (``distributord.core.groups``): "the power bounds are the sums
    of the inclusion bounds and the widest exclusion bound"; ``spec/plant.md``: "its minimum
    the smallest usable inverter minimum". So the group's minimum is max(200, 0) = 200 W and
    300 W runs, all of it through inverter 48.
    """
    # Caps min(1000 + 1000, 500) = 500 W, minimum 200 W: 300 W is in [200, 500].
    assert outcome(300.0, [(EXCLUSION_BATTERIES, [inverter(48, ACTOR_INVERTER)])]) == Outcome(
        {48: 300.0}, 0.0
    )
