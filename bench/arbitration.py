"""Benchmark of the merge inside a bucket, beside the distribution of its target.

Usage: ``python -m bench.arbitration [--rounds N] [--passes N] [--programs 10] [--buckets 50]
[--batteries-per-bucket 2] [--arbiter-only]``

The issue's case: 10 programs, each with a proposal in each of 50 buckets (priorities 1-10;
powers, bounds and limits drawn from a seeded generator, so some bounds miss the window and
some targets fall below the minimum). One pass over the 50 buckets does, per bucket, what the
arbiter does when telemetry or a proposal changes: the aggregate bounds of its pairs
(``aggregate_bounds``), the merge, and what each of its programs may still ask
(``Merge.headroom``, once per program); then, timed apart in the same pass,
``distribute(target, pairs)`` of that bucket's batteries, as the request loop would call it.

Each round times many passes; the figure is the median pass over all rounds, with the spread
of the rounds' medians beside it (a shared VM varies from one minute to the next). Pairs are
built before the clock starts, as in the daemon (when their telemetry arrives).

Then the whole arbiter as the daemon runs it (``--arbiter-only`` prints only this part):
:class:`~distributord.core.arbitration.arbiter.Arbiter` holding the proposals of 10 programs
over 50 buckets whose sets overlap (:func:`layout`: pairs of buckets, a set of 3 batteries and
a set of 2 sharing one battery, 100 batteries in all; each program proposes on one set of every
pair, so each bucket has 5 programs' proposals, and in every pair the bucket with the higher
top priority holds the shared battery, the other is preempted on it). One pass does what a
propose costs the daemon and then some: one program's proposal changes (a new power on the
same set: ``Arbiter.trial``, then ``commit``, as ``RequestLoop._apply`` does; the registry's
holdings are recomputed), ``registry.holdings()``, and for every bucket (not only the one that
changed, as telemetry would) the aggregate bounds of its held batteries, ``Arbiter.merge``,
and, timed apart, ``distribute(target, pairs)`` of its held batteries. Printed: the arbiter
(change + holdings + 50 merges), the aggregate bounds, the distribution, and the ratio arbiter
/ distribution (the medians' ratio, with the spread of the rounds' ratios).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence

import attrs

from bench.distribution import fleet, machine
from distributord.core.arbitration.arbiter import Arbiter, Ask, Origin
from distributord.core.arbitration.holdings import Refused
from distributord.core.arbitration.merge import Bid, Merge, Mode, merge
from distributord.core.config import ArbitrationConfig, Config, ProgramConfig
from distributord.core.distribution import Pair, aggregate_bounds, distribute
from distributord.core.model import Request


def programs_bids(programs: int, rng: random.Random, scale_w: float) -> list[Bid]:
    """One bid per program: a power for most, bounds for some, limits for a few."""
    bids = []
    for k in range(programs):
        power = rng.uniform(-scale_w, scale_w) if rng.random() < 0.8 else None
        lower = upper = None
        if rng.random() < 0.4:
            lower = rng.uniform(-scale_w, 0.0)
            upper = rng.uniform(0.0, scale_w)
        limit = rng.uniform(0.1, 1.0) * scale_w if rng.random() < 0.2 else float("inf")
        bids.append(
            Bid(
                program=f"program{k}",
                priority=k + 1,
                sequence=k,
                power_w=power,
                lower_w=lower,
                upper_w=upper,
                max_charge_w=limit,
                max_discharge_w=limit,
            )
        )
    return bids


def buckets(
    programs: int, count: int, per_bucket: int, seed: int = 1
) -> list[tuple[list[Pair], list[Bid]]]:
    """``count`` buckets of ``per_bucket`` pairs each, every program bidding in every one."""
    pairs = fleet(count * per_bucket, seed)
    rng = random.Random(seed)
    out = []
    for b in range(count):
        mine = pairs[b * per_bucket : (b + 1) * per_bucket]
        scale = aggregate_bounds(mine).inclusion_upper / 2
        out.append((mine, programs_bids(programs, rng, scale)))
    return out


def one_pass(
    cases: Sequence[tuple[list[Pair], list[Bid]]], mode: Mode
) -> tuple[tuple[float, float, float], list[Merge]]:
    """Seconds over all buckets once: (aggregate bounds, merge + bounds, distribute)."""
    clock = time.perf_counter_ns
    aggregate = arbiter = distribution = 0
    merges = []
    for pairs, bids in cases:
        start = clock()
        bounds = aggregate_bounds(pairs)
        first = clock()
        result = merge(bounds, bids, mode)
        for bid in bids:
            result.headroom(bid.priority)
        second = clock()
        distribute(result.target_w, pairs)
        end = clock()
        aggregate += first - start
        arbiter += second - first
        distribution += end - second
        merges.append(result)
    return (aggregate / 1e9, arbiter / 1e9, distribution / 1e9), merges


def _figure(samples: Sequence[Sequence[float]], buckets: int) -> str:
    """Median over all passes, the rounds' medians' spread, and per bucket."""
    everything = [s for r in samples for s in r]
    medians = [statistics.median(r) for r in samples]
    median = statistics.median(everything)
    return (
        f"{median * 1e3:7.3f} ms per pass (rounds {min(medians) * 1e3:.3f}–"
        f"{max(medians) * 1e3:.3f}), {median * 1e6 / buckets:6.1f} µs per bucket"
    )


# --- the whole arbiter ---------------------------------------------------------------------

FIRST_BATTERY = 1000
"""``bench.distribution.fleet``'s first battery id."""


def layout(
    programs: int, buckets: int, first: int = FIRST_BATTERY
) -> list[tuple[int, frozenset[int]]]:
    """Who proposes on which set: ``(program index, set)``, every program's sets disjoint.

    The buckets come in pairs over 4 batteries each, ``first + 4k ...``: a set of 3
    (``+0, +1, +2``) and a set of 2 (``+2, +3``), sharing one battery. The programs of even
    index propose on the set of 3 in even pairs and on the set of 2 in odd ones; those of odd
    index the other way round. So a program's sets never overlap (its newer proposal would end
    the older one), each bucket has about half the programs, and with priorities ``index + 1``
    the bucket holding the shared battery alternates between the set of 3 and the set of 2.

    Raises:
        ValueError: ``buckets`` is odd or below 2, or ``programs`` below 2.
    """
    if buckets < 2 or buckets % 2 or programs < 2:
        raise ValueError("an even number of buckets (2 or more) and 2 programs or more")
    out = []
    for k in range(buckets // 2):
        base = first + 4 * k
        three = frozenset((base, base + 1, base + 2))
        two = frozenset((base + 2, base + 3))
        for program in range(programs):
            out.append((program, three if program % 2 == k % 2 else two))
    return out


class _Connection:
    """A connection nobody listens on (the arbiter only hashes it and may notify it)."""

    def notify(self, method: str, params: object) -> None:
        """Told of a proposal's fate: nobody is listening."""


@attrs.define
class ArbiterCase:
    """An arbiter with every proposal of :func:`layout` live, and what a pass needs.

    Attributes:
        arbiter: The arbiter.
        config: The programs (priority ``index + 1``, limits for some) and the merge mode.
        pairs: Battery id to its pair.
        asks: The asks it was built from, in order; a pass replaces one of them.
        rng: Draws the new powers.
        now: The clock passed to the arbiter.
    """

    arbiter: Arbiter
    config: Config
    pairs: dict[int, Pair]
    asks: list[Ask]
    rng: random.Random
    now: float = 0.0


def _ask(origin: Origin, batteries: frozenset[int], scale_w: float, rng: random.Random) -> Ask:
    """A ``propose``: a power for most, bounds for some (a limiter has no power)."""
    power = rng.uniform(-scale_w, scale_w) if rng.random() < 0.8 else None
    lower = upper = None
    if power is None or rng.random() < 0.4:
        lower, upper = rng.uniform(-scale_w, 0.0), rng.uniform(0.0, scale_w)
    request = Request(power_w=0.0 if power is None else power, batteries=batteries)
    return Ask(
        origin=origin, request=request, power_w=power, lower_w=lower, upper_w=upper, proposed=True
    )


def arbiter_case(programs: int, buckets: int, mode: Mode, seed: int = 1) -> ArbiterCase:
    """The arbiter of :func:`layout`, built through ``trial`` and ``commit``."""
    rng = random.Random(seed)
    sets = layout(programs, buckets)
    pairs = {p.battery.component_id: p for p in fleet(2 * buckets, seed)}
    limits = [
        rng.uniform(2_000.0, 10_000.0) if rng.random() < 0.2 else None for _ in range(programs)
    ]
    config = Config(
        arbitration=ArbitrationConfig(merge=mode.value),
        programs={
            f"program{k}": ProgramConfig(
                priority=k + 1, max_charge_w=limits[k], max_discharge_w=limits[k]
            )
            for k in range(programs)
        },
    )
    origins = [
        Origin(program=f"program{k}", connection=_Connection(), uid=1000 + k, pid=100 + k)
        for k in range(programs)
    ]
    case = ArbiterCase(arbiter=Arbiter(), config=config, pairs=pairs, asks=[], rng=rng)
    for program, batteries in sets:
        scale = aggregate_bounds([pairs[b] for b in batteries]).inclusion_upper / 2
        ask = _ask(origins[program], batteries, scale, rng)
        _change(case, ask)
        case.asks.append(ask)
    return case


def _change(case: ArbiterCase, ask: Ask) -> None:
    """Try ``ask`` and keep it, as the request loop does once its application is planned."""
    case.now += 0.1
    priority = case.config.programs[ask.origin.program].priority
    trial = case.arbiter.trial(ask, priority=priority, now=case.now)
    if isinstance(trial, Refused):
        raise RuntimeError(f"the layout made a refusal: {trial.holder}")
    case.arbiter.commit(trial)


def arbiter_pass(case: ArbiterCase, k: int) -> tuple[float, float, float, float]:
    """Seconds of one pass (module docstring): (change + holdings, merges, bounds, distribute).

    The ``k``-th ask (cyclically) gets a new power on the same set.
    """
    clock = time.perf_counter_ns
    old = case.asks[k % len(case.asks)]
    scale = abs(old.request.power_w) + 1_000.0
    power = case.rng.uniform(-scale, scale)
    ask = attrs.evolve(old, power_w=power, request=attrs.evolve(old.request, power_w=power))
    case.asks[k % len(case.asks)] = ask
    start = clock()
    _change(case, ask)
    holdings = case.arbiter.registry.holdings()
    change = clock() - start
    merges = bounds_ns = distribution = 0
    for bucket in holdings.buckets:
        pairs = [case.pairs[b] for b in sorted(bucket.held)]
        start = clock()
        bounds = aggregate_bounds(pairs)
        first = clock()
        merged = case.arbiter.merge(bucket, bounds, case.config)
        second = clock()
        distribute(merged.target_w, pairs)
        end = clock()
        bounds_ns += first - start
        merges += second - first
        distribution += end - second
    return change / 1e9, merges / 1e9, bounds_ns / 1e9, distribution / 1e9


def ratio_figure(
    numerators: Sequence[Sequence[float]], denominators: Sequence[Sequence[float]]
) -> str:
    """The ratio of the medians over all passes, and the spread of the rounds' ratios."""
    everything = statistics.median(s for r in numerators for s in r) / statistics.median(
        s for r in denominators for s in r
    )
    rounds = [
        statistics.median(n) / statistics.median(d)
        for n, d in zip(numerators, denominators, strict=True)
    ]
    return f"{everything:7.2f}× (rounds {min(rounds):.2f}–{max(rounds):.2f})"


def whole_arbiter(args: argparse.Namespace) -> None:
    """Time and print the whole arbiter beside the distribution (module docstring)."""
    print(
        f"the whole arbiter: {args.programs} programs x {args.buckets} buckets over "
        f"{2 * args.buckets} batteries, overlapping sets; {args.rounds} rounds of {args.passes} "
        "passes (one proposal changed, holdings, every bucket merged)"
    )
    for mode in Mode:
        case = arbiter_case(args.programs, args.buckets, mode)
        holdings = case.arbiter.registry.holdings()
        preempted = sum(1 for b in holdings.buckets if b.held != b.batteries)
        print(
            f"{mode.value}: {len(case.arbiter.registry.proposals())} proposals in "
            f"{len(holdings.buckets)} buckets, {preempted} preempted on part of their set"
        )
        for k in range(args.passes):  # warm up
            arbiter_pass(case, k)
        rounds = [
            [arbiter_pass(case, r * args.passes + k) for k in range(args.passes)]
            for r in range(args.rounds)
        ]
        change, merges, bounds, distribution = (
            [[p[i] for p in r] for r in rounds] for i in range(4)
        )
        arbiter = [[p[0] + p[1] for p in r] for r in rounds]
        labels = (
            f"arbiter (change + {args.buckets} merges)",
            "of which: trial + commit + holdings",
            f"of which: {args.buckets} x Arbiter.merge",
            "aggregate bounds",
            "distribute(target)",
        )
        for label, samples in zip(
            labels, (arbiter, change, merges, bounds, distribution), strict=True
        ):
            print(f"  {label:>36}: {_figure(samples, args.buckets)}")
        print(f"  {'arbiter / distribute()':>36}: {ratio_figure(arbiter, distribution)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=40, help="passes per round")
    parser.add_argument("--programs", type=int, default=10)
    parser.add_argument("--buckets", type=int, default=50)
    parser.add_argument("--batteries-per-bucket", type=int, default=2)
    parser.add_argument(
        "--arbiter-only", action="store_true", help="only the whole arbiter, not the merge alone"
    )
    args = parser.parse_args(argv)
    if args.buckets < 2 or args.buckets % 2:
        parser.error("--buckets: an even number, 2 or more (the arbiter's buckets come in pairs)")
    print(f"merge + bounds beside distribute(): {machine()}")
    if not args.arbiter_only:
        merge_alone(args)
    whole_arbiter(args)
    return 0


def merge_alone(args: argparse.Namespace) -> None:
    """Time and print the merge alone beside the distribution (module docstring)."""
    cases = buckets(args.programs, args.buckets, args.batteries_per_bucket)
    print(
        f"{args.programs} programs x {args.buckets} buckets of {args.batteries_per_bucket} "
        f"batteries ({args.buckets * args.batteries_per_bucket} in all); {args.rounds} rounds "
        f"of {args.passes} passes over all buckets"
    )
    for mode in Mode:
        one_pass(cases, mode)  # warm up
        rounds = [
            [one_pass(cases, mode)[0] for _ in range(args.passes)] for _ in range(args.rounds)
        ]
        merges = one_pass(cases, mode)[1]
        zeroed = sum("below_minimum" in m.reasons for m in merges)
        moved = sum(1 for m in merges for g in m.grants if g.reasons)
        print(
            f"{mode.value}: {zeroed} of {len(merges)} targets below the minimum, "
            f"{moved} of {sum(len(m.grants) for m in merges)} grants with a reason"
        )
        labels = (
            "aggregate bounds",
            f"merge + {args.programs} programs' bounds",
            "distribute(target)",
        )
        for k, label in enumerate(labels):
            print(f"  {label:>32}: {_figure([[p[k] for p in r] for r in rounds], args.buckets)}")


if __name__ == "__main__":
    sys.exit(main())
