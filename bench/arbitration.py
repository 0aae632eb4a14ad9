"""Benchmark of the merge inside a bucket, beside the distribution of its target.

Usage: ``python -m bench.arbitration [--rounds N] [--programs 10] [--buckets 50]
[--batteries-per-bucket 2]``

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
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence

from bench.distribution import fleet, machine
from distributord.core.arbitration.merge import Bid, Merge, Mode, merge
from distributord.core.distribution import Pair, aggregate_bounds, distribute


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=40, help="passes per round")
    parser.add_argument("--programs", type=int, default=10)
    parser.add_argument("--buckets", type=int, default=50)
    parser.add_argument("--batteries-per-bucket", type=int, default=2)
    args = parser.parse_args(argv)
    cases = buckets(args.programs, args.buckets, args.batteries_per_bucket)
    print(f"merge + bounds beside distribute(): {machine()}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
