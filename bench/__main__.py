"""Run every benchmark and write the report: ``python -m bench``.

Usage: ``python -m bench [--quick] [--out bench/] [--only distribution,link,process,daemon]
[--results bench/results.json]``

In one process, one after the other: the distribution benchmark (``distribute()`` beside its
targets and the reference design's figures; fixed-power fleets beside the exact best), the
link benchmark (the daemon's telemetry link beside a bare grpc.aio consumer, per API version,
at several fleet sizes), the process benchmark (the whole daemon process beside the same
consumer at 2,000 streams, per API version) and the end-to-end benchmark (the daemon's
request latency beside a bare fan-out, per API version and fleet size). Each calls the
benchmark module's own functions, so its figures are measured exactly as its command line
measures them.

It writes into ``--out``: ``results.json`` (every figure), ``REPORT.md`` (how each was
measured, the tables, the machine, date, command and load) and, when matplotlib is installed
(``pip install -e '.[plots]'``), ``latency.png`` and ``telemetry_cpu.png``.
``--results FILE`` draws the report again from a ``results.json`` without running anything.
``--quick`` shrinks every run to a smoke test of a few minutes, whose figures mean nothing.

The full run takes about 27 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar, cast

import attrs

from bench import daemon, distribution, link, report
from bench.report import (
    DaemonRow,
    DistributionResults,
    DistributionRow,
    FixedPowerRow,
    LinkRow,
    Load,
    ProcessResults,
    ProcessRow,
    Results,
)

BENCHMARKS = ("distribution", "link", "process", "daemon")

T = TypeVar("T")

logger = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class Plan:
    """How big each benchmark runs.

    Attributes:
        distribution_sizes: Fleet sizes (pairs) of the ``distribute()`` table.
        distribution_rounds: Its rounds.
        fixed_power_sizes: Fixed-power fleets; the largest is also measured "odd".
        link_batteries: Fleet sizes of the link benchmark (2 streams per battery).
        link_seconds: Each of its windows.
        link_rounds: 1: bare, link; 2: bare, link, link, bare (cancels a linear drift).
        process_batteries: Fleet sizes at which the whole daemon process is measured beside
            the bare consumer, with the link's windows and rounds.
        daemon_requests: End-to-end fleet size → requests.
        apis: The API versions of the link and end-to-end benchmarks.
        hz: The simulator's telemetry rate.
    """

    distribution_sizes: tuple[int, ...]
    distribution_rounds: int
    fixed_power_sizes: tuple[int, ...]
    link_batteries: tuple[int, ...]
    link_seconds: float
    link_rounds: int
    process_batteries: tuple[int, ...]
    daemon_requests: dict[int, int]
    apis: tuple[str, ...] = ("v1alpha18", "v1")
    hz: float = 1.0


FULL = Plan(
    distribution_sizes=(1, 10, 100, 1000),
    distribution_rounds=5,
    fixed_power_sizes=(16, 30, 100, 300, 1000),
    # 200, 1,000 and 2,000 streams: the last is the target point.
    link_batteries=(100, 500, 1000),
    # 20 s windows, four per point: about 2 minutes per version and size.
    link_seconds=20.0,
    link_rounds=2,
    # The target point only: a daemon starts for each window, ~1 minute each.
    process_batteries=(1000,),
    # As the README's figures: 300 requests, 200 at 500 batteries (each takes ~0.6 s there).
    daemon_requests={10: 300, 100: 300, 500: 200},
)

QUICK = Plan(
    distribution_sizes=(1, 10, 100),
    distribution_rounds=1,
    fixed_power_sizes=(16, 30),
    link_batteries=(10, 50),
    link_seconds=3.0,
    link_rounds=1,
    process_batteries=(50,),
    daemon_requests={10: 20, 50: 20},
)


def say(message: str) -> None:
    """Progress on stderr: the report is the output."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def recorded(name: str, loads: list[Load]) -> Iterator[None]:
    """Note the machine's load average before and after the block, and how long it took."""
    before, start = list(os.getloadavg()), time.monotonic()
    say(f"{name}: start (load average {before[0]:.2f})")
    yield
    after = list(os.getloadavg())
    loads.append(Load(benchmark=name, before=before, after=after, seconds=time.monotonic() - start))
    say(f"{name}: done in {time.monotonic() - start:.0f} s (load average {after[0]:.2f})")
    gc.collect()  # leave nothing of this benchmark for the next one's collector


def run_distribution(plan: Plan) -> DistributionResults:
    """The ``distribute()`` table and the fixed-power fleets."""
    rows: list[DistributionRow] = []
    fleets = {size: distribution.fleet(size) for size in plan.distribution_sizes}
    for size, pairs in fleets.items():
        f = distribution.time_fleet(pairs, plan.distribution_rounds)
        rows.append(
            {
                "pairs": size,
                "median_us": f["median_s"] * 1e6,
                "p90_us": f["p90_s"] * 1e6,
                "round_min_us": f["round_min_s"] * 1e6,
                "round_max_us": f["round_max_s"] * 1e6,
            }
        )
        say(f"distribution: {size} pairs, median {f['median_s'] * 1e6:.1f} µs")
    pair_us = distribution.pair_cost_s(fleets[max(fleets)]) * 1e6
    cases = [(size, 1) for size in plan.fixed_power_sizes]
    cases.append((max(plan.fixed_power_sizes), 2))
    fixed: list[FixedPowerRow] = []
    for size, step in cases:
        f = distribution.fixed_power_case(size, step)
        fixed.append(
            {
                "pairs": size,
                "odd": step == 2,
                "requests": int(f["requests"]),
                "best": int(f["best"]),
                "short_max_w": f["short_max_w"],
                "short_p50_w": f["short_p50_w"],
                "slowest_ms": f["slowest_s"] * 1e3,
                "median_ms": f["median_s"] * 1e3,
            }
        )
    return {
        "rounds": plan.distribution_rounds,
        "rows": rows,
        "pair_us": pair_us,
        "fixed_power": fixed,
    }


def share(ws: Sequence[link.Window]) -> float:
    """The CPU share of ``ws`` together: their CPU time over their wall time."""
    return sum(w.figures["cpu"] for w in ws) / sum(w.figures["wall"] for w in ws)


def shares(ws: Sequence[link.Window]) -> list[float]:
    """Each window's CPU share."""
    return [w.figures["cpu"] / w.figures["wall"] for w in ws]


def link_row(
    api: str, batteries: int, hz: float, windows: Sequence[link.Window], streams: int
) -> LinkRow:
    """One version and size of the link benchmark at ``hz``, from its windows (in order)."""

    def of(consumer: str) -> list[link.Window]:
        return [w for w in windows if w.consumer == consumer]

    mine, bare = of("link"), of("bare")
    wall = sum(w.figures["wall"] for w in windows)
    link_wall = sum(w.figures["wall"] for w in mine)
    return {
        "api": api,
        "batteries": batteries,
        "streams": streams,
        "bare_cpu": share(bare),
        "bare_cpu_min": min(shares(bare)),
        "bare_cpu_max": max(shares(bare)),
        "link_cpu": share(mine),
        "link_cpu_min": min(shares(mine)),
        "link_cpu_max": max(shares(mine)),
        "ratio": link.ratio(windows),
        "link_received": sum(w.figures["received"] for w in mine),
        "bare_received": sum(w.figures["received"] for w in bare),
        # What the simulator sent in the link's windows, at its rate.
        "sent_per_consumer": streams * hz * link_wall,
        "link_gc": sum(w.figures["gc_s"] for w in mine) / link_wall,
        "sim_cpu": sum(w.sim_share * w.figures["wall"] for w in windows) / wall,
        "machine_busy": sum(w.busy_share * w.figures["wall"] for w in windows) / wall,
        "rss_mb": max(w.figures["rss_mb"] for w in mine),
        "threads": int(max(w.figures["threads"] for w in mine)),
        "gaps": int(sum(w.figures["gaps"] for w in mine)),
        "delay_p50_first_ms": statistics.median(w.figures["first_p50_ms"] for w in mine),
        "delay_p50_last_ms": statistics.median(w.figures["last_p50_ms"] for w in mine),
    }


def process_row(
    api: str, batteries: int, hz: float, windows: Sequence[link.Window], streams: int
) -> ProcessRow:
    """One version and size of the whole daemon process beside the bare consumer."""
    mine = [w for w in windows if w.consumer == "daemon"]
    bare = [w for w in windows if w.consumer == "bare"]

    wall = sum(w.figures["wall"] for w in windows)
    return {
        "api": api,
        "batteries": batteries,
        "streams": streams,
        "bare_cpu": share(bare),
        "bare_cpu_min": min(shares(bare)),
        "bare_cpu_max": max(shares(bare)),
        "daemon_cpu": share(mine),
        "daemon_cpu_min": min(shares(mine)),
        "daemon_cpu_max": max(shares(mine)),
        "ratio": link.ratio(windows, "daemon"),
        "working_min": int(min(w.figures["working"] for w in mine)),
        "sim_cpu": sum(w.sim_share * w.figures["wall"] for w in windows) / wall,
        "machine_busy": sum(w.busy_share * w.figures["wall"] for w in windows) / wall,
        "rss_mb": max(w.figures["rss_mb"] for w in mine),
        "threads": int(max(w.figures["threads"] for w in mine)),
    }


def run_link(plan: Plan, book: Book) -> None:
    """The link beside the bare consumer, per version and fleet size."""
    rows: list[LinkRow] = []
    book.results["link"] = {
        "hz": plan.hz,
        "seconds": plan.link_seconds,
        "rounds": plan.link_rounds,
        "rows": rows,
    }
    for api in plan.apis:
        for batteries in plan.link_batteries:

            def point(api: str = api, batteries: int = batteries) -> LinkRow:
                windows, streams = link.measure(
                    api, batteries, plan.hz, plan.link_seconds, plan.link_rounds, daemon_gc=True
                )
                row = link_row(api, batteries, plan.hz, windows, streams)
                say(
                    f"link: {api}, {streams} streams: bare {row['bare_cpu']:.1%}, "
                    f"link {row['link_cpu']:.1%}, {row['ratio']:.2f}×"
                )
                return row

            if (row := book.attempt(f"link, {api}, {batteries} batteries", point)) is not None:
                rows.append(row)
                book.save()


def run_process(plan: Plan, book: Book) -> None:
    """The whole daemon process beside the bare consumer, per version (the link's windows)."""
    rows: list[ProcessRow] = []
    results: ProcessResults = {
        "hz": plan.hz,
        "seconds": plan.link_seconds,
        "rounds": plan.link_rounds,
        "rows": rows,
    }
    book.results["process"] = results
    for api in plan.apis:
        for batteries in plan.process_batteries:

            def point(api: str = api, batteries: int = batteries) -> ProcessRow:
                windows, streams = link.measure(
                    api,
                    batteries,
                    plan.hz,
                    plan.link_seconds,
                    plan.link_rounds,
                    daemon_gc=True,
                    against="daemon",
                )
                row = process_row(api, batteries, plan.hz, windows, streams)
                say(
                    f"daemon process: {api}, {streams} streams: bare {row['bare_cpu']:.1%}, "
                    f"daemon {row['daemon_cpu']:.1%}, {row['ratio']:.2f}×"
                )
                return row

            label = f"daemon process, {api}, {batteries} batteries"
            if (row := book.attempt(label, point)) is not None:
                rows.append(row)
                book.save()


def run_daemon(plan: Plan, book: Book) -> None:
    """The daemon's request latency beside the bare fan-out, per version and fleet size."""
    rows: list[DaemonRow] = []
    book.results["daemon"] = {"hz": plan.hz, "rows": rows}
    for api in plan.apis:
        for batteries, requests in plan.daemon_requests.items():

            def point(
                api: str = api, batteries: int = batteries, requests: int = requests
            ) -> DaemonRow:
                f = asyncio.run(daemon.measure(batteries, requests, plan.hz, os.devnull, api=api))
                say(
                    f"daemon: {api}, {batteries} batteries: p50 {f['daemon_p50']:.1f} ms "
                    f"(bare {f['bare_p50']:.1f}), p99 {f['daemon_p99']:.1f} ms "
                    f"(bare {f['bare_p99']:.1f})"
                )
                return {
                    "api": api,
                    "batteries": batteries,
                    "requests": requests,
                    "daemon_p50": f["daemon_p50"],
                    "daemon_p99": f["daemon_p99"],
                    "bare_p50": f["bare_p50"],
                    "bare_p99": f["bare_p99"],
                    "overhead_p50": f["overhead_p50"],
                    "overhead_p99": f["overhead_p99"],
                    "failed": int(f["failed"]),
                }

            label = f"daemon, {api}, {batteries} batteries"
            if (row := book.attempt(label, point)) is not None:
                rows.append(row)
                book.save()


class Book:
    """The figures so far, saved to ``results.json`` after every point.

    Each point is a fault barrier: one that fails (a simulator that does not start on a
    loaded machine, say) is logged and noted in the report, and the others still run.
    """

    def __init__(self, results: Results, path: Path | None) -> None:
        self.results = results
        self._path = path

    def attempt(self, label: str, measure: Callable[[], T]) -> T | None:
        """``measure()``, or None and a note of its error."""
        try:
            return measure()
        except Exception as error:  # any failure is noted; the run goes on
            logger.exception("%s failed", label)
            self.results.setdefault("errors", []).append(
                f"{label}: {type(error).__name__}: {error}".splitlines()[0]
            )
            self.save()
            return None

    def save(self) -> None:
        """Write the figures so far."""
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.write_text(
                json.dumps(self.results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
            )


def commit() -> str:
    """The commit measured, and the tracked files changed since (read only: git writes nothing)."""
    here = Path(__file__).resolve().parent
    # No optional locks: `git status` would otherwise refresh the index file.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head, changed = (
            subprocess.run(
                ["git", *command],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
                cwd=here,
                env=env,
            ).stdout.rstrip()
            for command in (
                ["rev-parse", "--short", "HEAD"],
                ["status", "--porcelain", "--untracked-files=no"],
            )
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    files = [line[3:] for line in changed.splitlines()]
    return f"{head}, uncommitted changes in {', '.join(files)}" if files else head


def run(
    plan: Plan, only: Sequence[str], *, command: str, quick: bool, save: Path | None = None
) -> Results:
    """Run the benchmarks named in ``only`` (in :data:`BENCHMARKS` order); every figure.

    With ``save``, the figures so far are written there after every point.
    """
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    results: Results = {
        "machine": distribution.machine(),
        "cores": os.cpu_count() or 0,
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "command": command,
        "commit": commit(),
        "quick": quick,
        "targets": {
            "distribution_us": {str(k): v for k, v in distribution.TARGETS_US.items()},
            "reference_us": {str(k): v for k, v in distribution.REFERENCE_US.items()},
            "link_ratio": link.TARGET_RATIO,
            "link_cpu": link.TARGET_CPU,
            "link_rss_mb": link.TARGET_RSS_MB,
            "process_ratio": link.TARGET_RATIO,
            "daemon_p50_ratio": daemon.TARGET_P50,
            "daemon_p99_ratio": daemon.TARGET_P99,
            "daemon_overhead_ms": daemon.TARGET_OVERHEAD_MS,
        },
        "load": [],
    }
    book = Book(results, save)
    for name in BENCHMARKS:
        if name not in only:
            continue
        with recorded(name, results["load"]):
            if name == "distribution":
                if (figures := book.attempt(name, lambda: run_distribution(plan))) is not None:
                    results["distribution"] = figures
            elif name == "link":
                run_link(plan, book)
            elif name == "process":
                run_process(plan, book)
            else:
                run_daemon(plan, book)
        book.save()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks (or read their figures) and write the report."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test: every run shrunk")
    parser.add_argument("--out", type=Path, default=Path("bench"), help="where to write")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help="benchmarks to run, comma-separated"
    )
    parser.add_argument(
        "--results", type=Path, help="draw the report from this results.json; run nothing"
    )
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",")]
    if unknown := [name for name in only if name not in BENCHMARKS]:
        parser.error(f"--only: unknown {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.results is not None:
        results = cast(Results, json.loads(args.results.read_text(encoding="utf-8")))
    else:
        given = sys.argv[1:] if argv is None else list(argv)
        command = shlex.join(["python", "-m", "bench", *given])
        plan = QUICK if args.quick else FULL
        save = args.out / "results.json"
        results = run(plan, only, command=command, quick=args.quick, save=save)
    written = report.write(results, args.out)
    print(written)
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
