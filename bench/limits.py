"""Benchmark of the split under group limits: no limits beside 10 and 111 nested limits.

Usage: ``python -m bench.limits [--rounds N] [--size 1000]``

One fleet (:func:`bench.distribution.fleet`: mixed bounds, an exclusion minimum on every third
inverter) and its requests (:func:`bench.distribution.requests`: 0 W and ±2..110 % of the
fleet's bounds, 19 of them), split in the same run under each layout:

* **no limits**: ``distribute(P, pairs)``, the split as it was before limits;
* **limits=()**: the same call with an empty ``limits``: the same path, measured apart;
* **10 feeders**: ten feeders of a tenth of the fleet each;
* **111 limits**: the grid connection over every inverter, the ten feeders inside it, and in
  each feeder ten fuses of a hundredth of the fleet (1,000 pairs: 10 per fuse).

Each layout with limits comes twice: *binding*, each limit's maxima drawn at 30-90 % of what
its members could take in that direction (the grid at 70 %), so that fuses, feeders and the
grid bind on the larger requests; and *slack*, every maximum twice what its members could
take, so that none binds and the cost is that of finding so. Every call is timed
(``time.perf_counter_ns``) after a warm-up round; the figures are the median and the 95th
percentile over all calls of all rounds, and the median's ratio to *no limits*.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence

import attrs

from bench.distribution import fleet, machine, requests
from distributord.core.distribution import Distribution, Limit, Pair, distribute

FEEDERS = 10
"""Feeders per fleet: a tenth of the pairs each."""

FUSES_PER_FEEDER = 10
"""Fuses per feeder: 1,000 pairs give 10 pairs per fuse."""

BINDING = (0.3, 0.9)
"""A binding limit's maxima, as a share of what its members could take."""

GRID_SHARE = 0.7
"""The grid connection's maxima, binding, as a share of what the fleet could take."""

SLACK = 2.0
"""A slack limit's maxima, as a multiple of what its members could take: none binds."""


@attrs.frozen(kw_only=True)
class Layout:
    """Limits over a fleet, named for the printout.

    Attributes:
        name: What the row says.
        limits: The limits; ``None``: the call without the keyword.
    """

    name: str
    limits: tuple[Limit, ...] | None


def _limit(name: str, pairs: Sequence[Pair], share: float) -> Limit:
    """A limit over ``pairs`` whose maxima are ``share`` of what they could take."""
    charge = math.fsum(p.charge_row.cap_w for p in pairs if p.charge_row.status is None)
    discharge = math.fsum(p.discharge_row.cap_w for p in pairs if p.discharge_row.status is None)
    return Limit(
        name=name,
        inverters=frozenset(p.inverter_id for p in pairs),
        max_charge_w=share * charge,
        max_discharge_w=share * discharge,
    )


def feeders(pairs: Sequence[Pair], *, binding: bool, seed: int = 1) -> tuple[Limit, ...]:
    """:data:`FEEDERS` feeders over consecutive tenths of ``pairs``."""
    rng = random.Random(seed)
    step = math.ceil(len(pairs) / FEEDERS)
    return tuple(
        _limit(f"feeder-{f}", pairs[start : start + step], _share(rng, binding))
        for f, start in enumerate(range(0, len(pairs), step))
    )


def nested(pairs: Sequence[Pair], *, binding: bool, seed: int = 1) -> tuple[Limit, ...]:
    """The grid over every pair, :func:`feeders` inside it, fuses inside each feeder."""
    rng = random.Random(seed)
    limits = [_limit("grid", pairs, GRID_SHARE if binding else SLACK)]
    step = math.ceil(len(pairs) / FEEDERS)
    for f, start in enumerate(range(0, len(pairs), step)):
        feeder = pairs[start : start + step]
        limits.append(_limit(f"feeder-{f}", feeder, _share(rng, binding)))
        fuse_step = math.ceil(len(feeder) / FUSES_PER_FEEDER)
        for u, fuse_start in enumerate(range(0, len(feeder), fuse_step)):
            fuse = feeder[fuse_start : fuse_start + fuse_step]
            limits.append(_limit(f"fuse-{f}-{u}", fuse, _share(rng, binding)))
    return tuple(limits)


def _share(rng: random.Random, binding: bool) -> float:
    return rng.uniform(*BINDING) if binding else SLACK


def layouts(pairs: Sequence[Pair]) -> list[Layout]:
    """Every layout of the module docstring, in the printed order."""
    return [
        Layout(name="no limits", limits=None),
        Layout(name="limits=()", limits=()),
        Layout(name="10 feeders, binding", limits=feeders(pairs, binding=True)),
        Layout(name="10 feeders, slack", limits=feeders(pairs, binding=False)),
        Layout(name="111 limits, binding", limits=nested(pairs, binding=True)),
        Layout(name="111 limits, slack", limits=nested(pairs, binding=False)),
    ]


def split(pairs: Sequence[Pair], layout: Layout, power_w: float) -> Distribution:
    """One split under ``layout``."""
    if layout.limits is None:
        return distribute(power_w, pairs)
    return distribute(power_w, pairs, limits=layout.limits)


def time_layout(
    pairs: Sequence[Pair], layout: Layout, powers: Sequence[float], rounds: int
) -> list[float]:
    """Seconds per call of every request, ``rounds`` times, after a warm-up round."""
    clock = time.perf_counter_ns
    for power in powers:
        split(pairs, layout, power)
    samples = []
    for _ in range(rounds):
        gc.collect()  # the daemon tunes the collector; keep its pauses out of the figure
        for power in powers:
            start = clock()
            split(pairs, layout, power)
            samples.append((clock() - start) / 1e9)
    return samples


def figures(samples: Sequence[float]) -> dict[str, float]:
    """``median_s`` and ``p95_s`` of ``samples``."""
    ordered = sorted(samples)
    return {
        "median_s": statistics.median(ordered),
        "p95_s": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
    }


def bound_share(pairs: Sequence[Pair], layout: Layout, powers: Sequence[float]) -> float:
    """The share of ``powers`` whose split has a limit that bound."""
    return sum(bool(split(pairs, layout, p).bound_limits) for p in powers) / len(powers)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--size", type=int, default=1000)
    args = parser.parse_args(argv)
    pairs = fleet(args.size)
    powers = requests(pairs)
    print(f"split under group limits: {machine()}")
    print(
        f"{args.size} pairs, per call, {args.rounds} rounds of {len(powers)} requests "
        "(0 W and ±2..110 % of the fleet's bounds)"
    )
    print(f"{'layout':>22} {'median':>10} {'p95':>10} {'vs none':>8} {'bound':>6}")
    base = None
    for layout in layouts(pairs):
        f = figures(time_layout(pairs, layout, powers, args.rounds))
        base = base or f["median_s"]
        print(
            f"{layout.name:>22} {f['median_s'] * 1e6:>8.0f}µs {f['p95_s'] * 1e6:>8.0f}µs "
            f"{f['median_s'] / base:>7.2f}× {bound_share(pairs, layout, powers):>6.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
