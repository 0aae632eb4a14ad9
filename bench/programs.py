"""Benchmark of the daemon with several programs proposing at once, beside one program alone.

Usage: ``python -m bench.programs [--api v1] [--batteries 100] [--hz 10] [--seconds 10]
[--rounds 3]``

One ``distributord sim`` (zero command latency, telemetry at 1 Hz) and one ``distributord
run`` whose configuration declares three programs (:data:`PROGRAMS`: fcr at priority 90, peak
at 50, trade at 10), each in a process of its own, as in ``bench.daemon``; this process is
the programs' clients. Every program has a connection of its own and says ``hello`` first.

* **A, one program:** trade sends ``propose`` for the whole fleet at ``--hz``.
* **B, three programs:** fcr on the first 40 % of the fleet, peak on 30-80 %, trade on all of
  it, each at ``--hz`` on its own connection, their ticks a third of a period apart. The sets
  overlap: fcr holds its batteries, peak is preempted on 30-40 %, trade holds only the last
  20 %; overlapping sets are applied in arrival order, so requests wait for each other.

A and B alternate, ``--seconds`` each, for ``--rounds`` rounds (the machine's speed drifts;
alternating puts both under the same conditions). At the end of each B, fcr and peak
``withdraw``, so that A finds trade alone again (not timed).

Pacing: a program sends at its ticks (``1/hz`` apart, from its start) and waits for the reply
before it sends again; it never has two requests outstanding (no pipelining). A reply later
than the next tick makes the next request go at once when it arrives (counted: *late*); if
more ticks passed, those before it are *skipped* (counted, not made up). Latency: from the
request written to its reply read, in this process. Each request is a change: the power steps
through ±10-90 % of 2 kW per battery of the set. A reply that is not an ``outcome: success``
(an error, or ``partial``) is counted as failed.

Printed: per scenario and program, requests, p50 and p99 in ms, late and skipped ticks,
failures and notifications received; then B's overall figures beside A's with their ratios
(over all rounds, and the spread of the ratios round by round).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from bench.daemon import connected, daemon, drop_notifications, percentile, wait_all_working
from bench.distribution import machine
from bench.link import simulator
from distributord.client import Client
from distributord.core.config import API_VERSIONS
from distributord.core.errors import DaemonError

FIRST_BATTERY = 1001
"""The simulator's first battery id."""

WATTS_PER_BATTERY = 2_000.0
"""The power steps are fractions of this, per battery of the set."""

FRACTIONS = (0.1, -0.3, 0.5, -0.7, 0.9, -0.1, 0.3, -0.5, 0.7, -0.9)


@attrs.frozen
class Program:
    """A program of the benchmark: its name, priority, and its share of the fleet.

    Attributes:
        name: The program's name in the configuration and in ``hello``.
        priority: Its priority.
        start: Where its set starts, as a fraction of the fleet (0: the first battery).
        end: Where its set ends, as a fraction of the fleet (1: the last battery, included).
    """

    name: str
    priority: int
    start: float
    end: float


PROGRAMS = (
    Program("fcr", 90, 0.0, 0.4),
    Program("peak", 50, 0.3, 0.8),
    Program("trade", 10, 0.0, 1.0),
)
"""Scenario B's programs; scenario A is the last one alone."""

ALONE = PROGRAMS[-1]


def battery_set(program: Program, fleet: int, first: int = FIRST_BATTERY) -> list[int]:
    """The batteries ``program`` proposes for in a fleet of ``fleet`` (ids from ``first``).

    Batteries ``start * fleet + 1`` to ``end * fleet`` counted from 1: fcr's 0-0.4 of 100 is
    batteries 1-40, peak's 0.3-0.8 is 31-80.
    """
    low, high = round(program.start * fleet), round(program.end * fleet)
    return [first + k for k in range(low, high)]


def programs_config(programs: Sequence[Program], uid: int) -> str:
    """The ``[programs.NAME]`` tables (TOML), each program open to ``uid``."""
    return "".join(
        f"[programs.{p.name}]\npriority = {p.priority}\nusers = [{uid}]\n\n" for p in programs
    )


def figures(samples: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in ms of latencies in seconds: the median, and the nearest-rank 99th."""
    return statistics.median(samples) * 1e3, percentile(samples, 0.99) * 1e3


@attrs.define
class Tally:
    """What one program saw in one scenario, over all rounds.

    Attributes:
        rounds: Every reply's latency, s, round by round.
        late: Requests sent late, at once, because the previous reply came after their tick.
        skipped: Ticks skipped because the previous reply came after the following one too.
        failed: Replies that were not a success.
        notifications: Notifications received (``proposal_changed`` and the like).
    """

    rounds: list[list[float]] = attrs.Factory(list)
    late: int = 0
    skipped: int = 0
    failed: int = 0
    notifications: int = 0

    @property
    def latencies(self) -> list[float]:
        """Every reply's latency, s."""
        return [s for r in self.rounds for s in r]


def merged(tallies: Sequence[Tally]) -> Tally:
    """Several programs' tallies as one, round by round."""
    return Tally(
        rounds=[
            [s for r in rounds for s in r]
            for rounds in zip(*(t.rounds for t in tallies), strict=True)
        ],
        late=sum(t.late for t in tallies),
        skipped=sum(t.skipped for t in tallies),
        failed=sum(t.failed for t in tallies),
        notifications=sum(t.notifications for t in tallies),
    )


def round_ratios(numerator: Tally, denominator: Tally) -> tuple[tuple[float, float], ...]:
    """Per round, the ratios of the p50s and of the p99s."""
    return tuple(
        (figures(n)[0] / figures(d)[0], figures(n)[1] / figures(d)[1])
        for n, d in zip(numerator.rounds, denominator.rounds, strict=True)
    )


async def propose_paced(
    client: Client, batteries: list[int], hz: float, seconds: float, tally: Tally, phase: float
) -> None:
    """Propose for ``batteries`` at ``hz`` for ``seconds`` (module docstring: pacing)."""
    loop = asyncio.get_running_loop()
    period = 1.0 / hz
    start = loop.time() + phase
    end = start + seconds
    tick = 0
    while (due := start + tick * period) < end:
        await asyncio.sleep(max(0.0, due - loop.time()))
        power = FRACTIONS[tick % len(FRACTIONS)] * WATTS_PER_BATTERY * len(batteries)
        sent = time.perf_counter()
        try:
            result = await client.result("propose", {"batteries": batteries, "power_w": power})
        except DaemonError:
            result = {}
        tally.rounds[-1].append(time.perf_counter() - sent)
        if result.get("outcome") != "success":
            tally.failed += 1
        tally.notifications += drop_notifications(client)
        passed = ticks_passed(loop.time() - start, tick, period)
        if passed:
            tally.late += 1
            tally.skipped += passed - 1
        tick += max(passed, 1)


def ticks_passed(elapsed: float, tick: int, period: float) -> int:
    """Ticks after ``tick`` that passed ``elapsed`` after the first (the reply was late).

    With none, the next request waits for tick ``tick + 1``; otherwise it goes at once, as
    tick ``tick + passed``, and those before it are skipped.
    """
    return max(0, math.floor(elapsed / period) - tick)


async def measure(args: argparse.Namespace) -> dict[str, dict[str, Tally]]:
    """Run both scenarios, alternating; the tallies by scenario, then program."""
    n = args.batteries
    tallies: dict[str, dict[str, Tally]] = {
        "A": {ALONE.name: Tally()},
        "B": {p.name: Tally() for p in PROGRAMS},
    }
    extra = programs_config(PROGRAMS, os.getuid())
    with (
        simulator(n, 1.0, api=args.api) as sim,
        tempfile.TemporaryDirectory() as directory,
        daemon(sim.address, args.api, Path(directory), args.daemon_log, extra=extra) as sock,
    ):
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(connected(sock))
            await wait_all_working(first, n)
            clients: dict[str, Client] = {}
            for p in PROGRAMS:
                client = await stack.enter_async_context(connected(sock))
                hello = await client.result("hello", {"program": p.name})
                if hello.get("priority") != p.priority:
                    raise RuntimeError(f"hello as {p.name}: {hello}")
                clients[p.name] = client
            sets = {p.name: battery_set(p, n) for p in PROGRAMS}
            # Warm up: each scenario once, briefly.
            await _scenario(clients, sets, [ALONE], args.hz, 1.0, {ALONE.name: Tally()})
            await _scenario(clients, sets, PROGRAMS, args.hz, 1.0, _fresh())
            await _withdraw_others(clients)
            for _ in range(args.rounds):
                await _scenario(clients, sets, [ALONE], args.hz, args.seconds, tallies["A"])
                await _scenario(clients, sets, PROGRAMS, args.hz, args.seconds, tallies["B"])
                await _withdraw_others(clients)
    return tallies


def _fresh() -> dict[str, Tally]:
    return {p.name: Tally() for p in PROGRAMS}


async def _scenario(
    clients: dict[str, Client],
    sets: dict[str, list[int]],
    programs: Sequence[Program],
    hz: float,
    seconds: float,
    tallies: dict[str, Tally],
) -> None:
    """The ``programs`` proposing at once, their ticks spread over one period: a round."""
    for tally in tallies.values():
        tally.rounds.append([])
    await asyncio.gather(
        *(
            propose_paced(
                clients[p.name],
                sets[p.name],
                hz,
                seconds,
                tallies[p.name],
                k / (len(programs) * hz),
            )
            for k, p in enumerate(programs)
        )
    )


async def _withdraw_others(clients: dict[str, Client]) -> None:
    """Every program but the one of scenario A withdraws all its proposals."""
    for name, client in clients.items():
        if name != ALONE.name:
            await client.result("withdraw", {})
            drop_notifications(client)


def _row(label: str, tally: Tally, seconds: float) -> str:
    p50, p99 = figures(tally.latencies)
    return (
        f"{label:<22} {len(tally.latencies):>8} {len(tally.latencies) / seconds:>6.1f} "
        f"{p50:>7.1f} {p99:>7.1f} {tally.late:>5} {tally.skipped:>7} {tally.failed:>6} "
        f"{tally.notifications:>6}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--api", default="v1", choices=API_VERSIONS)
    parser.add_argument("--batteries", type=int, default=100)
    parser.add_argument("--hz", type=float, default=10.0, help="proposals per second per program")
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--daemon-log", default=os.devnull, help="append the daemon's log here")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    print(f"programs: {machine()}")
    print(
        f"{args.api}, {args.batteries} batteries, {args.hz:g} Hz per program, "
        f"{args.rounds} rounds of A ({ALONE.name} alone) then B ({len(PROGRAMS)} programs), "
        f"{args.seconds:g} s each; ms"
    )
    for p in PROGRAMS:
        ids = battery_set(p, args.batteries)
        print(f"  {p.name} priority {p.priority}: batteries {ids[0]}-{ids[-1]}")
    tallies = asyncio.run(measure(args))
    total = args.seconds * args.rounds
    print(
        f"{'scenario, program':<22} {'requests':>8} {'per s':>6} {'p50':>7} {'p99':>7} "
        f"{'late':>5} {'skipped':>7} {'failed':>6} {'notif.':>6}"
    )
    for scenario, by_program in tallies.items():
        for name, tally in by_program.items():
            print(_row(f"{scenario}, {name}", tally, total))
    alone = tallies["A"][ALONE.name]
    everything = merged(list(tallies["B"].values()))
    print(_row("B, all three", everything, total))
    a50, a99 = figures(alone.latencies)
    for label, b in (("all three", everything), (ALONE.name, tallies["B"][ALONE.name])):
        b50, b99 = figures(b.latencies)
        by_round = round_ratios(b, alone)
        print(
            f"B / A, {label}: p50 {b50:.1f} / {a50:.1f} = {b50 / a50:.2f}x "
            f"(rounds {min(r[0] for r in by_round):.2f}-{max(r[0] for r in by_round):.2f}), "
            f"p99 {b99:.1f} / {a99:.1f} = {b99 / a99:.2f}x "
            f"(rounds {min(r[1] for r in by_round):.2f}-{max(r[1] for r in by_round):.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
