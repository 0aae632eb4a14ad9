"""Benchmark of the microgrid link: every telemetry stream of a big fleet, for a minute.

Usage: ``python -m distributord.bench.link [--batteries 1000] [--hz 1] [--seconds 60]``

Starts ``distributord sim`` in a separate process (so the simulator's work is not counted),
then opens the link, discovers the fleet and runs one telemetry task per component (2 per
battery) into a counting sink, exactly as the daemon does, and measures this process while it
runs: CPU share (user + system time over wall time), threads, resident memory, messages
received against messages sent, messages dropped for a slow consumer, and the delay between a
sample being taken (its ``sampled_at``) and it reaching the sink, in the first and the last
tenth of the run. A link that falls behind shows it there: the delay grows.

The issue's targets at 2,000 streams: under 25 % of one core, under 300 MB RSS, no growing
backlog, and a thread count that does not grow with the number of components.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

import trio

from distributord.bench.distribution import machine
from distributord.shell.link import Backoff, Snapshot, discover, open_link, serve_telemetry

TARGET_CPU = 0.25
TARGET_RSS_MB = 300.0


class CountingSink:
    """Counts snapshots and keeps their delivery delay (receipt minus sampled_at)."""

    def __init__(self) -> None:
        self.received = 0
        self.gaps = 0
        self.delays: list[tuple[float, float]] = []  # (received at, delay)

    def snapshot(self, snapshot: Snapshot) -> None:
        """Count it and note how long it took to arrive."""
        self.received += 1
        now = time.time()
        self.delays.append((now, now - snapshot.sampled_at))

    def gap(self, component_id: int, reason: str) -> None:
        """Count it."""
        self.gaps += 1


def rss_mb() -> float:
    """Resident memory of this process, MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def threads() -> int:
    """Threads of this process (all of them, grpc's own included)."""
    return len(os.listdir("/proc/self/task"))


def cpu_seconds() -> float:
    """User plus system CPU time of this process, s."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def simulator(batteries: int, hz: float) -> Iterator[str]:
    """``distributord sim`` in its own process; yields its address."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as scenario:
        scenario.write(f"[simulation]\ntelemetry_hz = {hz}\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributord",
            "sim",
            "--port",
            "0",
            "--batteries",
            str(batteries),
            "--scenario",
            scenario.name,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        address = ""
        for line in process.stdout:
            if "127.0.0.1:" in line:
                address = "127.0.0.1:" + line.split("127.0.0.1:")[1].split()[0].rstrip(".,")
                break
        if not address:
            raise RuntimeError("the simulator did not print its address")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)
        os.unlink(scenario.name)


async def run(address: str, seconds: float, hz: float) -> dict[str, float]:
    """Consume every stream at ``address`` for ``seconds``; return the figures."""
    sink = CountingSink()
    async with open_link(address) as link:
        topology = await discover(link)
        components = [(b, True) for b in topology.pairs] + [
            (i, False) for i in topology.pairs.values()
        ]
        before_threads = threads()
        async with trio.open_nursery() as nursery:
            for component, battery in components:
                await nursery.start(
                    lambda task_status, c=component, b=battery: serve_telemetry(
                        link,
                        c,
                        battery=b,
                        sink=sink,
                        max_data_age_s=10.0,
                        silence_s=max(5.0, 5.0 / hz),
                        backoff=Backoff(),
                        task_status=task_status,
                    )
                )
            await trio.sleep(max(3.0, 3.0 / hz))  # every stream has delivered
            start_wall, start_cpu, start_received = time.time(), cpu_seconds(), sink.received
            sink.delays.clear()
            await trio.sleep(seconds)
            wall, cpu = time.time() - start_wall, cpu_seconds() - start_cpu
            received = sink.received - start_received
            figures = {
                "streams": float(len(components)),
                "cpu_share": cpu / wall,
                "threads_before": float(before_threads),
                "threads": float(threads()),
                "rss_mb": rss_mb(),
                "received": float(received),
                "expected": len(components) * hz * wall,
                "gaps": float(sink.gaps),
            }
            tenth = wall / 10
            first = [d for t, d in sink.delays if t < start_wall + tenth]
            last = [d for t, d in sink.delays if t >= start_wall + wall - tenth]
            for name, delays in (("first", first), ("last", last)):
                ordered = sorted(delays)
                figures[f"{name}_p50_ms"] = (
                    statistics.median(ordered) * 1e3 if ordered else float("nan")
                )
                figures[f"{name}_p99_ms"] = (
                    ordered[int(0.99 * (len(ordered) - 1))] * 1e3 if ordered else float("nan")
                )
            nursery.cancel_scope.cancel()
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batteries", type=int, default=1000)
    parser.add_argument("--hz", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    print(f"link: {machine()}")
    with simulator(args.batteries, args.hz) as address:
        figures = trio.run(run, address, args.seconds, args.hz)
    streams = int(figures["streams"])
    print(
        f"{streams} streams at {args.hz:g} Hz for {args.seconds:g} s "
        f"({figures['expected'] / args.seconds:,.0f} messages/s)"
    )
    cpu_ok = "✓" if figures["cpu_share"] < TARGET_CPU else "✗"
    rss_ok = "✓" if figures["rss_mb"] < TARGET_RSS_MB else "✗"
    print(
        f"  CPU share of one core: {figures['cpu_share']:.1%}  (target < {TARGET_CPU:.0%} {cpu_ok})"
    )
    print(f"  RSS: {figures['rss_mb']:.0f} MB  (target < {TARGET_RSS_MB:.0f} MB {rss_ok})")
    print(
        f"  threads: {figures['threads']:.0f} with {streams} streams open "
        f"({figures['threads_before']:.0f} before any stream)"
    )
    print(
        f"  received {figures['received']:,.0f} of {figures['expected']:,.0f} messages "
        f"({figures['received'] / figures['expected']:.1%}); stream gaps: {figures['gaps']:.0f}"
    )
    print(
        "  delay sampled → delivered, first / last tenth of the run: "
        f"p50 {figures['first_p50_ms']:.1f} / {figures['last_p50_ms']:.1f} ms, "
        f"p99 {figures['first_p99_ms']:.1f} / {figures['last_p99_ms']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
