"""Benchmark of the P/Q split: the active split alone beside the split with reactive power.

Usage: ``python -m bench.reactive [--rounds N] [--sizes 100,1000]``

Three ways to answer one request of ``P`` and ``Q``, timed in the same run over the same fleet
(:func:`bench.distribution.fleet`: mixed bounds, an exclusion minimum on every third inverter):

* **active only**: ``distribute(P, pairs)``, what the daemon calls today (``planning.plan``).
* **active first** (``pq_priority = "active"``): ``distribute`` over pairs whose inverter bounds
  are capped at ``S`` (that cap needs no ``Q``: it is made when telemetry arrives, before the
  clock starts), then each inverter's reactive room given its ``P`` (:func:`reactive_rooms`) and
  :func:`split_reactive`.
* **reactive first** (``"reactive"``): rooms with ``P = 0``, :func:`split_reactive`, each
  inverter's active bounds capped by its ``Q`` (:func:`capped_active_bounds`; a :class:`Pair`
  rebuilt for each inverter whose bounds changed), then ``distribute``.

Inverters: ``S`` 0.9-1.2 times the inverter's active limit (so ``S`` binds on some), reactive
bounds ±30-60 % of ``S``; one in ten pinned (its bounds 5-10 % of ``S``, one sign), one in twenty
with unknown reactive bounds. Requests: the active ones of :func:`bench.distribution.requests`
(19 per fleet), each with a reactive target of ±40 % of the fleet's reactive room, its sign
alternating. Every call is timed (``time.perf_counter_ns``); the figures are the median, the
minimum and the maximum over all calls of all rounds. The float32 rounding of the setpoints
(``as_sent``) is left out of all three: it is the same work with or without reactive power.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import attrs

from bench.distribution import fleet, machine, requests
from distributord.core.distribution import (
    Pair,
    ReactiveLimits,
    ReactiveSplit,
    capped_active_bounds,
    distribute,
    reactive_rooms,
    split_reactive,
)

REACTIVE_SHARE = 0.4
"""The reactive target as a share of the fleet's reactive room (with ``P = 0``)."""

MODES = ("active only", "active first", "reactive first")


@attrs.frozen(kw_only=True)
class Site:
    """A fleet with reactive limits: everything a mode reads, built before the clock starts.

    Attributes:
        pairs: The pairs as telemetry makes them (no ``S``).
        capped: The same with each inverter's bounds capped at its ``S`` (``"active"``).
        limits: Inverter id to its reactive limits.
        inverter_of: Battery id to its inverter's id.
        requests: ``(P, Q)`` pairs, W and var.
    """

    pairs: Sequence[Pair]
    capped: Sequence[Pair]
    limits: Mapping[int, ReactiveLimits]
    inverter_of: Mapping[int, int]
    requests: Sequence[tuple[float, float]]


def limits_for(pair: Pair, k: int, rng: random.Random) -> ReactiveLimits:
    """Inverter ``k``'s reactive limits (see the module docstring)."""
    s = rng.uniform(0.9, 1.2) * pair.inverter.bounds.inclusion_upper
    if k % 20 == 7:
        return ReactiveLimits(lower_var=math.nan, upper_var=math.nan, apparent_va=s)
    if k % 10 == 3:
        low, high = sorted((rng.uniform(0.05, 0.1) * s, rng.uniform(0.05, 0.1) * s))
        if k % 20 == 13:
            low, high = -high, -low
        return ReactiveLimits(lower_var=low, upper_var=high, apparent_va=s)
    return ReactiveLimits(
        lower_var=-rng.uniform(0.3, 0.6) * s, upper_var=rng.uniform(0.3, 0.6) * s, apparent_va=s
    )


def capped_pair(pair: Pair, limits: ReactiveLimits, reactive_var: float = 0.0) -> Pair:
    """``pair`` with its inverter's bounds within ``S`` given ``Q`` (itself if unchanged)."""
    bounds = capped_active_bounds(pair.inverter.bounds, limits.apparent_va, reactive_var)
    if bounds is pair.inverter.bounds:
        return pair
    return Pair(battery=pair.battery, inverter=attrs.evolve(pair.inverter, bounds=bounds))


def site(size: int, seed: int = 1) -> Site:
    """The fleet of ``size`` pairs with its limits and requests."""
    pairs = fleet(size, seed)
    rng = random.Random(seed)
    limits = {p.inverter_id: limits_for(p, k, rng) for k, p in enumerate(pairs)}
    capped = [capped_pair(p, limits[p.inverter_id]) for p in pairs]
    rooms = reactive_rooms(limits)
    room = math.fsum(
        r.upper_var for r in rooms.values() if not isinstance(r, str) and r.upper_var > 0
    )
    active = requests(pairs)
    sign = [1.0 if k % 2 == 0 else -1.0 for k in range(len(active))]
    return Site(
        pairs=pairs,
        capped=capped,
        limits=limits,
        inverter_of={p.battery_id: p.inverter_id for p in pairs},
        requests=[(p, s * REACTIVE_SHARE * room) for p, s in zip(active, sign, strict=True)],
    )


def active_only(site: Site, p: float, q: float) -> None:
    """Today's split: active power only."""
    distribute(p, site.pairs)


def active_first(site: Site, p: float, q: float) -> ReactiveSplit:
    """``pq_priority = "active"``: ``P`` within ``S``, then ``Q`` in the room ``P`` leaves."""
    split = distribute(p, site.capped)
    inverter_of = site.inverter_of
    active = {inverter_of[b]: w for b, w in split.setpoints.items()}
    return split_reactive(q, reactive_rooms(site.limits, active))


def reactive_first(site: Site, p: float, q: float) -> ReactiveSplit:
    """``pq_priority = "reactive"``: ``Q`` first, then ``P`` within what each ``Q`` leaves."""
    reactive = split_reactive(q, reactive_rooms(site.limits))
    setpoints, limits = reactive.setpoints, site.limits
    pairs = [
        capped_pair(pair, limits[pair.inverter_id], setpoints.get(pair.inverter_id, 0.0))
        for pair in site.pairs
    ]
    distribute(p, pairs)
    return reactive


RUNS: dict[str, Callable[[Site, float, float], object]] = {
    "active only": active_only,
    "active first": active_first,
    "reactive first": reactive_first,
}


def time_mode(site: Site, mode: str, rounds: int) -> list[float]:
    """Seconds per call of ``mode``, every request of ``site``, ``rounds`` times."""
    run = RUNS[mode]
    clock = time.perf_counter_ns
    for p, q in site.requests:  # warm up
        run(site, p, q)
    samples = []
    for _ in range(rounds):
        gc.collect()  # the daemon tunes the collector; keep its pauses out of the figure
        for p, q in site.requests:
            start = clock()
            run(site, p, q)
            samples.append((clock() - start) / 1e9)
    return samples


def figures(samples: Sequence[float]) -> dict[str, float]:
    """``median_s``, ``min_s`` and ``max_s`` of ``samples``."""
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sizes", default="100,1000")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"P/Q split: {machine()}")
    print(
        f"per call, {args.rounds} rounds of 19 requests (P: 0 W and ±2..110 % of the fleet; "
        f"Q: ±{REACTIVE_SHARE:.0%} of its reactive room)"
    )
    print(f"{'inverters':>9} {'mode':>15} {'median':>10} {'min':>10} {'max':>10} {'vs active':>10}")
    for size in sizes:
        bench_site = site(size)
        base = None
        for mode in MODES:
            f = figures(time_mode(bench_site, mode, args.rounds))
            base = base or f["median_s"]
            print(
                f"{size:>9} {mode:>15} {f['median_s'] * 1e6:>8.1f}µs {f['min_s'] * 1e6:>8.1f}µs "
                f"{f['max_s'] * 1e6:>8.1f}µs {f['median_s'] / base:>9.2f}×"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
