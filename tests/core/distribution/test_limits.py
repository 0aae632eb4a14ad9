"""Group limits: the nested water-fill against an exact oracle, and the limits' own rules.

The oracle reads ``spec/plant.md`` ("Group limits") afresh, in rational arithmetic: a pair
follows ``F(λ) = min(λ·w, u)``, a limit ``min(max, Σ its children's F(λ))``; a pool's level is
where its children add up to its target, and a limit whose members would exceed its maximum at
its pool's level has a level of its own, where they add up to exactly that maximum.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from fractions import Fraction

import attrs
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from distributord.core.distribution import (
    Allotment,
    Distribution,
    Limit,
    Pair,
    aggregate_bounds,
    distribute,
    limit_tree,
)
from distributord.core.errors import DistributionInputError
from tests.core.distribution.spec import (
    TOLERANCE_W,
    Quantities,
    check_agrees,
    derate_bands,
    exact_weight,
    quantities,
)
from tests.core.distribution.test_exactness import check_invariants
from tests.core.distribution.test_extremes import watchdog
from tests.strategies import (
    EXTREME_EXPONENTS,
    NEAR_BOUND_EXPONENTS,
    extreme_fleets,
    extreme_requests,
    fleets,
    near_bound_fleets,
    symmetric_pair,
)

ABSENT_INVERTERS = (7, 8, 9)
"""Inverter ids no fleet uses: limits naming them name inverters outside the request."""


# --- strategies --------------------------------------------------------------------------------


@st.composite
def laminar_limits(draw: st.DrawFn, fleet: Sequence[Pair]) -> list[Limit]:
    """Nested and disjoint limits over the fleet's inverters (and some outside it), depth <= 3.

    Maxima from 0 to beyond what the members can take, or none (inf), so that some bind and
    some do not; now and then two limits over the same set. In a shuffled order.
    """
    ids = [p.inverter_id for p in fleet] + list(ABSENT_INVERTERS[: draw(st.integers(0, 3))])
    random.Random(draw(st.integers(0, 2**32 - 1))).shuffle(ids)
    caps = {p.inverter_id: max(p.charge_row.cap_w, p.discharge_row.cap_w) for p in fleet}
    limits: list[Limit] = []

    def maximum(members: Sequence[int]) -> float:
        scale = math.fsum(caps.get(i, 0.0) for i in members)
        kind = draw(st.sampled_from(["zero", "inf", "fraction", "fraction", "fraction"]))
        if kind == "zero":
            return 0.0
        if kind == "inf":
            return math.inf
        return float(int(scale * draw(st.floats(0.0, 1.2))))

    def grow(members: Sequence[int], depth: int) -> None:
        if depth > 3 or not members:
            return
        cuts = sorted(draw(st.lists(st.integers(0, len(members)), max_size=4)))
        for start, end in zip([0, *cuts], [*cuts, len(members)], strict=True):
            part = members[start:end]
            if not part or draw(st.integers(0, 3)) == 0:  # most parts are limits
                continue
            for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
                limits.append(
                    Limit(
                        name=f"L{len(limits)}",
                        inverters=frozenset(part),
                        max_charge_w=maximum(part),
                        max_discharge_w=maximum(part),
                    )
                )
            grow(part, depth + 1)

    grow(ids, 1)
    random.Random(draw(st.integers(0, 2**32 - 1))).shuffle(limits)
    return limits


@st.composite
def requests(draw: st.DrawFn, fleet: Sequence[Pair]) -> float:
    """Either sign, from a few W to 1.5 times the fleet's caps (limits take less)."""
    charging = draw(st.booleans())
    rows = [p.charge_row if charging else p.discharge_row for p in fleet]
    scale = max(1.0, math.fsum(r.cap_w for r in rows if r.status is None))
    magnitude = scale * draw(st.floats(1e-6, 1.5))
    return magnitude if charging else -magnitude


# --- the exact oracle ----------------------------------------------------------------------------


@attrs.frozen
class _Tree:
    """A limit restricted to the fleet (or the whole fleet at the top), exactly."""

    name: str
    maximum: Fraction | None  # None: no limit
    pairs: tuple[int, ...]  # battery ids directly inside, no deeper
    children: tuple[_Tree, ...]


def _tree(fleet: Sequence[Pair], limits: Sequence[Limit], charging: bool) -> _Tree:
    """The limits as nested sets over the fleet, by brute force (not :func:`limit_tree`)."""
    by_inverter = {p.inverter_id: p.battery_id for p in fleet}

    def members(limit: Limit) -> frozenset[int]:
        return frozenset(by_inverter[i] for i in limit.inverters if i in by_inverter)

    sets = [(members(limit), limit) for limit in limits if members(limit)]
    # Of equal sets the first in (name) order is outside: the order of the tree does not
    # matter for the split, and the oracle's tree need not agree with the code's.
    sets.sort(key=lambda item: (-len(item[0]), item[1].name))

    def build(
        name: str, maximum: Fraction | None, inside: frozenset[int], rest: list[int]
    ) -> _Tree:
        children = []
        taken: set[int] = set()
        for position in rest:
            group, limit = sets[position]
            if group & taken:
                continue  # inside an earlier child
            taken |= group
            deeper = [j for j in rest if j > position and sets[j][0] <= group]
            top = limit.max_w(charging)
            children.append(
                build(limit.name, None if math.isinf(top) else Fraction(top), group, deeper)
            )
        return _Tree(name, maximum, tuple(sorted(inside - taken)), tuple(children))

    everyone = frozenset(p.battery_id for p in fleet)
    return build("", None, everyone, list(range(len(sets))))


class _Oracle:
    """The nested water-fill, exactly, for pairs without minimums."""

    def __init__(self, fleet: Sequence[Pair], charging: bool, exponent: int, band: float) -> None:
        items: dict[int, Quantities] = {p.battery_id: quantities(p, charging, band) for p in fleet}
        assert all(q.minimum <= 0 for q in items.values()), "the oracle knows no minimums"
        self.weight = {b: exact_weight(q, exponent) for b, q in items.items()}
        self.cap = {
            b: Fraction(q.cap) if self.weight[b] > 0 and q.cap > 0 else Fraction(0)
            for b, q in items.items()
        }

    def pair(self, bid: int, level: Fraction | None) -> Fraction:
        if level is None:
            return self.cap[bid]
        return min(level * self.weight[bid], self.cap[bid])

    def total(self, node: _Tree, level: Fraction | None) -> Fraction:
        """``Σ F(λ)`` over the node's children (not capped by its own maximum)."""
        inner = sum((self.pair(b, level) for b in node.pairs), Fraction(0))
        for child in node.children:
            child_total = self.total(child, level)
            inner += child_total if child.maximum is None else min(child.maximum, child_total)
        return inner

    def kinks(self, node: _Tree) -> list[Fraction]:
        """Levels between which the node's total is linear: caps and limits reached."""
        points = [self.cap[b] / self.weight[b] for b in node.pairs if self.weight[b] > 0]
        for child in node.children:
            points += self.kinks(child)
            if child.maximum is not None:
                reached = self.level(child, child.maximum)
                if reached is not None:
                    points.append(reached)
        return sorted(set(points))

    def level(self, node: _Tree, target: Fraction) -> Fraction | None:
        """The level at which the node's children add up to ``target`` (None: never)."""
        if self.total(node, None) <= target:
            return None
        low = Fraction(0)
        for point in self.kinks(node):
            if self.total(node, point) >= target:
                break
            low = point
        else:  # pragma: no cover - beyond the last kink the total is constant
            raise AssertionError("no level")
        # Linear between `low` and `point`.
        at_low, at_point = self.total(node, low), self.total(node, point)
        if at_point == at_low:  # reached at `low` already: a target of 0
            return low
        return low + (point - low) * (target - at_low) / (at_point - at_low)

    def split(self, node: _Tree, level: Fraction | None, out: dict[int, Fraction]) -> None:
        for b in node.pairs:
            out[b] = self.pair(b, level)
        for child in node.children:
            inner = level
            if child.maximum is not None and self.total(child, level) > child.maximum:
                inner = self.level(child, child.maximum)
            self.split(child, inner, out)

    def most(self, node: _Tree) -> Fraction:
        """The most any allowed assignment places: the nested ``min(max, Σ children)``."""
        inner = sum((self.cap[b] for b in node.pairs), Fraction(0))
        for child in node.children:
            most = self.most(child)
            inner += most if child.maximum is None else min(child.maximum, most)
        return inner


def oracle(
    power: float, fleet: Sequence[Pair], limits: Sequence[Limit], exponent: int, band: float
) -> dict[int, Fraction]:
    """The exact setpoints the nested water-fill asks for (no minimums)."""
    charging = power > 0
    exact = _Oracle(fleet, charging, exponent, band)
    top = _tree(fleet, limits, charging)
    out: dict[int, Fraction] = {}
    exact.split(top, exact.level(top, abs(Fraction(power))), out)
    sign = 1 if charging else -1
    return {b: sign * x for b, x in out.items()}


def most_placed(fleet: Sequence[Pair], limits: Sequence[Limit], charging: bool) -> Fraction:
    """Exactly: the most any assignment within caps and limits places (no minimums)."""
    return _Oracle(fleet, charging, 1, 0.0).most(_tree(fleet, limits, charging))


# --- the invariants ----------------------------------------------------------------------------


def check_limits(
    power: float, fleet: Sequence[Pair], limits: Sequence[Limit], result: Distribution
) -> None:
    """No limit's members add up to more than its maximum, exactly; the bound ones are named."""
    by_inverter = {p.inverter_id: p.battery_id for p in fleet}
    for limit in limits:
        total = sum(
            (
                abs(Fraction(result.setpoints[by_inverter[i]]))
                for i in limit.inverters
                if i in by_inverter and by_inverter[i] in result.setpoints
            ),
            Fraction(0),
        )
        top = limit.max_w(power > 0)
        assert math.isinf(top) or total <= Fraction(top), (limit, float(total))
    assert list(result.bound_limits) == sorted(result.bound_limits)
    assert set(result.bound_limits) <= {limit.name for limit in limits}


def run(
    power: float,
    fleet: Sequence[Pair],
    limits: Sequence[Limit],
    exponent: float = 1.0,
    band: float = 0.0,
) -> Distribution:
    note(f"power={power!r} exponent={exponent!r} band={band!r} limits={limits!r}")
    result = distribute(power, fleet, exponent=exponent, derate_band_pct=band, limits=limits)
    event(f"limits bound: {min(len(result.bound_limits), 3)}")
    check_invariants(power, list(fleet), result, band)
    check_limits(power, fleet, limits, result)
    return result


@given(st.data(), fleets(max_size=12, exclusion=False), NEAR_BOUND_EXPONENTS, derate_bands)
def test_nested_water_fill_agrees_with_the_exact_oracle(
    data: st.DataObject, fleet: list[Pair], exponent: int, band: float
) -> None:
    """Proportional within each pool, symmetric, nothing wasted: the oracle's split, to 1e-6 W."""
    limits = data.draw(laminar_limits(fleet))
    power = data.draw(requests(fleet))
    result = run(power, fleet, limits, float(exponent), band)
    expected = oracle(power, fleet, limits, exponent, band)
    check_agrees(result, power, expected)


@given(st.data(), near_bound_fleets(max_size=12), NEAR_BOUND_EXPONENTS)
def test_the_oracle_where_floats_break(
    data: st.DataObject, fleet: list[Pair], exponent: int
) -> None:
    """SoCs ulps from their bounds, weights 1e13 apart: still the oracle's split."""
    limits = data.draw(laminar_limits(fleet))
    power = data.draw(requests(fleet))
    result = run(power, fleet, limits, float(exponent))
    check_agrees(result, power, oracle(power, fleet, limits, exponent, 0.0))


@given(st.data(), fleets(max_size=12, exclusion=False))
def test_nothing_is_wasted_and_the_bounds_say_so(data: st.DataObject, fleet: list[Pair]) -> None:
    """Without minimums the split places min(|P|, the most caps and limits allow).

    The aggregate bounds are that most.
    """
    limits = data.draw(laminar_limits(fleet))
    power = data.draw(requests(fleet))
    result = run(power, fleet, limits)
    most = most_placed(fleet, limits, power > 0)
    placed = abs(sum(map(Fraction, result.setpoints.values()), Fraction(0)))
    assert abs(placed - min(abs(Fraction(power)), most)) <= TOLERANCE_W * len(fleet)
    bounds = aggregate_bounds(fleet, limits=limits)
    edge = bounds.inclusion_upper if power > 0 else -bounds.inclusion_lower
    assert abs(Fraction(edge) - most) <= TOLERANCE_W * len(fleet)


@given(st.data(), fleets(max_size=12), derate_bands)
def test_invariants_with_minimums(data: st.DataObject, fleet: list[Pair], band: float) -> None:
    """With exclusion minimums: within bounds, never over, conserved, no limit exceeded."""
    limits = data.draw(laminar_limits(fleet))
    power = data.draw(requests(fleet))
    run(power, fleet, limits, 1.0, band)


@given(st.data(), fleets(max_size=12))
def test_order_independent(data: st.DataObject, fleet: list[Pair]) -> None:
    """Permuting the pairs and the limits permutes the result exactly."""
    limits = data.draw(laminar_limits(fleet))
    power = data.draw(requests(fleet))
    result = run(power, fleet, limits)
    shuffle = random.Random(data.draw(st.integers(0, 2**32 - 1))).shuffle
    fleet, limits = list(fleet), list(limits)
    shuffle(fleet)
    shuffle(limits)
    again = distribute(power, fleet, limits=limits)
    assert again.setpoints == result.setpoints
    assert again.reasons == result.reasons
    assert again.remaining_w == result.remaining_w
    assert again.bound_limits == result.bound_limits


@given(
    fleets(max_size=3, exclusion=False),
    st.integers(2, 4),
    st.floats(0.0, 1.2),
    st.floats(0.0, 1.2),
    st.floats(1e-6, 1.5),
)
def test_identical_pairs_in_identical_places_get_identical_setpoints(
    templates: list[Pair], copies: int, fuse: float, feeder: float, share: float
) -> None:
    """Copies of a template under identical fuses, under one feeder, get equal setpoints.

    Equal to the rounding the split without limits allows (making a pool's sum exact moves its
    rounding onto one share: a few ulps of the request).
    """
    fleet: list[Pair] = []
    limits: list[Limit] = []
    for t, template in enumerate(templates):
        b = template.battery
        group = [
            symmetric_pair(
                100 * t + c, b.soc_pct, b.soc_lower_pct, b.soc_upper_pct, b.capacity_wh,
                template.charge_row.cap_w,
            )
            for c in range(copies)
        ]  # fmt: skip
        cap = group[0].charge_row.cap_w
        for pair in group:
            fuse_w = float(int(cap * fuse))
            limits.append(
                Limit(
                    name=f"fuse{pair.battery_id}",
                    inverters=frozenset({pair.inverter_id}),
                    max_charge_w=fuse_w,
                )
            )
        limits.append(
            Limit(
                name=f"feeder{t}",
                inverters=frozenset(p.inverter_id for p in group),
                max_charge_w=float(int(copies * cap * feeder)),
            )
        )
        fleet += group
    power = max(1.0, share * math.fsum(p.charge_row.cap_w for p in fleet))
    result = run(power, fleet, limits)
    rounding = 4 * math.ulp(power)
    for t in range(len(templates)):
        shares = [result.setpoints[100 * t + c] for c in range(copies)]
        assert max(shares) - min(shares) <= rounding, shares


@given(st.data(), fleets(max_size=12))
def test_overlapping_limits_are_refused_naming_both(data: st.DataObject, fleet: list[Pair]) -> None:
    """limit_tree refuses exactly the families where two limits overlap without nesting."""
    ids = [p.inverter_id for p in fleet] + list(ABSENT_INVERTERS)
    limits = [
        Limit(name=f"L{k}", inverters=frozenset(chosen))
        for k, chosen in enumerate(
            data.draw(st.lists(st.lists(st.sampled_from(ids), min_size=1, max_size=6), max_size=5))
        )
    ]
    clash = [
        (a, b)
        for a in limits
        for b in limits
        if a.inverters & b.inverters
        and not (a.inverters <= b.inverters or b.inverters <= a.inverters)
    ]
    if not clash:
        tree = limit_tree(limits)
        for limit, parent in tree:
            assert parent is None or limit.inverters <= tree[parent][0].inverters
        return
    with pytest.raises(DistributionInputError) as refused:
        distribute(1000.0, fleet, limits=limits)
    message = str(refused.value)
    named = [(a, b) for a, b in clash if repr(a.name) in message and repr(b.name) in message]
    assert named, message
    assert any(f"inverter {min(a.inverters & b.inverters)}" in message for a, b in named)
    with pytest.raises(DistributionInputError):
        aggregate_bounds(fleet, limits=limits)


@given(st.data(), extreme_fleets(), extreme_requests(), EXTREME_EXPONENTS)
def test_every_input_terminates_within_bounds_and_limits(
    data: st.DataObject, fleet: list[Pair], power: float, exponent: float
) -> None:
    """Watts from 5e-324 to 1e300, exponents to 1e19, limits over them: a valid result, soon."""
    limits = data.draw(laminar_limits(fleet))
    note(f"power={power!r} exponent={exponent!r} limits={limits!r}")
    with watchdog():
        result = distribute(power, fleet, exponent=exponent, limits=limits)
    check_invariants(power, [p for p in fleet if p.problem is None], result)
    check_limits(power, fleet, limits, result)


# --- worked examples -----------------------------------------------------------------------------


def _four() -> list[Pair]:
    """Four equal pairs, ±1000 W (inverters 100001 to 100004)."""
    return [symmetric_pair(k, 50.0, 0.0, 100.0, 10_000.0, 1000.0) for k in range(1, 5)]


def _limit(name: str, bids: Sequence[int], charge: float, discharge: float = math.inf) -> Limit:
    return Limit(
        name=name,
        inverters=frozenset(b + 100_000 for b in bids),
        max_charge_w=charge,
        max_discharge_w=discharge,
    )


FEEDER = _limit("feeder", [1, 2], 1200.0, 1200.0)
FUSE = _limit("fuse", [1], 400.0)


@pytest.mark.parametrize(
    ("power", "limits", "setpoints", "bound", "limited"),
    [
        # A feeder of 1200 W over two of four 1000 W pairs: they share 1200, the rest 1800.
        (3000.0, [FEEDER], [600.0, 600.0, 900.0, 900.0], ("feeder",), {1, 2}),
        (-3000.0, [FEEDER], [-600.0, -600.0, -900.0, -900.0], ("feeder",), {1, 2}),
        # A 400 W fuse on one of them, inside the feeder: the other takes the feeder's rest.
        (3000.0, [FEEDER, FUSE], [400.0, 800.0, 900.0, 900.0], ("feeder", "fuse"), {1, 2}),
        # The fuse limits charging only.
        (-3000.0, [FUSE, FEEDER], [-600.0, -600.0, -900.0, -900.0], ("feeder",), {1, 2}),
        # Slack: 2000 W over four pairs gives the feeder's two 1000 W, within 1200.
        (2000.0, [FEEDER], [500.0, 500.0, 500.0, 500.0], (), set()),
        # The fuse binds, the feeder does not: the fuse's overflow goes to all three others.
        (2000.0, [FEEDER, FUSE], [400.0, *[1600.0 / 3] * 3], ("fuse",), {1}),
        # Both exceeded at first, but once the inner fuse binds the feeder is slack: the
        # innermost limit binds first, and the feeder is not held at its maximum.
        (2000.0, [_limit("feeder", [1, 2], 900.0), _limit("fuse", [1], 100.0)],
         [100.0, 633.3333333333334, 633.3333333333334, 633.3333333333334], ("fuse",), {1}),
        # More than the limits allow: all at their most, the rest remains.
        (4000.0, [FEEDER, FUSE], [400.0, 800.0, 1000.0, 1000.0], ("feeder", "fuse"), {1, 2}),
        # A limit with maximum 0 holds its members at 0; the others take what they can.
        (3000.0, [_limit("open", [3, 4], 0.0)], [1000.0, 1000.0, 0.0, 0.0], ("open",), {3, 4}),
        # The grid connection over all four, with a feeder inside it.
        (3000.0, [_limit("grid", [1, 2, 3, 4], 2000.0), FEEDER],
         [500.0, 500.0, 500.0, 500.0], ("grid",), {1, 2, 3, 4}),
        (3000.0, [_limit("grid", [1, 2, 3, 4], 2600.0), FEEDER],
         [600.0, 600.0, 700.0, 700.0], ("feeder", "grid"), {1, 2, 3, 4}),
    ],
)  # fmt: skip
def test_worked_examples(
    power: float,
    limits: list[Limit],
    setpoints: list[float],
    bound: tuple[str, ...],
    limited: set[int],
) -> None:
    fleet = _four()
    result = distribute(power, fleet, limits=limits)
    # To rounding: 1600/3 is not a float.
    assert [result.setpoints[k] for k in range(1, 5)] == pytest.approx(setpoints, abs=1e-9)
    assert result.bound_limits == bound
    assert {k for k, why in result.reasons.items() if why is Allotment.LIMITED} == limited
    check_limits(power, fleet, limits, result)


def test_limits_over_other_inverters_change_nothing() -> None:
    """A limit over inverters outside the request is ignored: the split without limits."""
    fleet = _four()
    absent = Limit(name="elsewhere", inverters=frozenset(ABSENT_INVERTERS), max_charge_w=0.0)
    assert distribute(3000.0, fleet, limits=[absent]) == distribute(3000.0, fleet)
    # Partly outside: only the request's inverters count.
    partly = _limit("partly", [1, 2], 1200.0)
    partly = attrs.evolve(partly, inverters=partly.inverters | {7})
    assert distribute(3000.0, fleet, limits=[partly]).setpoints == {
        1: 600.0,
        2: 600.0,
        3: 900.0,
        4: 900.0,
    }


def test_aggregate_bounds_include_the_limits() -> None:
    grid = _limit("grid", [1, 2, 3, 4], 3500.0)
    bounds = aggregate_bounds(_four(), limits=[FEEDER, FUSE, grid])
    assert bounds.inclusion_upper == 3200.0  # min(1200, 400 + 1000) + 1000 + 1000, under 3500
    assert bounds.inclusion_lower == -3200.0  # discharging: no fuse, the grid's inf
    assert bounds.exclusion_upper == bounds.exclusion_lower == 0.0
    tighter = aggregate_bounds(
        _four(), limits=[FEEDER, FUSE, attrs.evolve(grid, max_charge_w=3000.0)]
    )
    assert tighter.inclusion_upper == 3000.0
    assert aggregate_bounds(_four()).inclusion_upper == 4000.0


def test_exponent_derating_and_budget_work_with_limits() -> None:
    """The keyword arguments keep their meaning under limits.

    Here the split inside the feeder follows the exponent's weights.
    """
    fleet = [
        symmetric_pair(1, 30.0, 0.0, 100.0, 10_000.0, 1000.0),  # a = 70
        symmetric_pair(2, 65.0, 0.0, 100.0, 10_000.0, 1000.0),  # a = 35
        symmetric_pair(3, 50.0, 0.0, 100.0, 10_000.0, 1000.0),
    ]
    limits = [_limit("feeder", [1, 2], 900.0)]
    result = distribute(2500.0, fleet, exponent=2.0, limits=limits, search_budget=None)
    assert result.setpoints[1] == pytest.approx(720.0)  # 900 · 4/5 (70² : 35² = 4 : 1)
    assert result.setpoints[2] == pytest.approx(180.0)
    assert result.setpoints[3] == 1000.0
    derated = distribute(2500.0, fleet, derate_band_pct=60.0, limits=limits)
    assert derated.setpoints[2] <= 1000.0 * 35.0 / 60.0
    assert math.fsum(derated.setpoints[k] for k in (1, 2)) <= 900.0


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"max_charge_w": -1.0}, "max_charge_w"),
        ({"max_discharge_w": math.nan}, "max_discharge_w"),
        ({"max_charge_w": "1000"}, "max_charge_w"),
        ({"inverters": {1, 2}}, "inverters"),
        ({"inverters": frozenset({1.5})}, "inverters"),
    ],
)
def test_bad_limits_are_refused_by_name(arguments: dict[str, object], named: str) -> None:
    values: dict[str, object] = {"name": "feeder", "inverters": frozenset({1})} | arguments
    with pytest.raises(DistributionInputError, match=named) as refused:
        Limit(**values)  # type: ignore[arg-type]
    assert "'feeder'" in str(refused.value)


def test_not_a_limit_is_refused() -> None:
    with pytest.raises(DistributionInputError, match="Limit"):
        distribute(1000.0, _four(), limits=[{"name": "feeder"}])  # type: ignore[list-item]


@given(st.data(), fleets(max_size=12), derate_bands)
def test_aggregate_bounds_never_raise_and_are_ordered_under_any_limits(
    data: st.DataObject, fleet: list[Pair], band: float
) -> None:
    """Found in review: limits leaving less than the smallest minimum made invalid bounds.

    ``PowerBounds`` refused ``exclusion_upper > inclusion_upper``; the request loop's bounds
    (every re-plan, every ``subscribe_bounds``) raised. Now that direction takes nothing.
    """
    limits = data.draw(laminar_limits(fleet))
    bounds = aggregate_bounds(fleet, derate_band_pct=band, limits=limits)
    assert bounds.inclusion_lower <= bounds.exclusion_lower <= 0.0
    assert 0.0 <= bounds.exclusion_upper <= bounds.inclusion_upper


def test_a_limit_below_the_smallest_minimum_closes_that_direction() -> None:
    fleet = [
        symmetric_pair(1, 50.0, 0.0, 100.0, 10_000.0, 1000.0, 500.0),
        symmetric_pair(2, 50.0, 0.0, 100.0, 10_000.0, 1000.0, 500.0),
    ]
    bounds = aggregate_bounds(fleet, limits=[_limit("feeder", [1, 2], 0.0)])
    assert (bounds.exclusion_upper, bounds.inclusion_upper) == (0.0, 0.0)
    assert (bounds.inclusion_lower, bounds.exclusion_lower) == (-2000.0, -500.0)
