"""Benchmark of the microgrid link: every telemetry stream of a big fleet, beside a bare consumer.

Usage: ``python -m bench.link [--api v1alpha18,v1] [--batteries 1000] [--hz 1]
[--seconds 60] [--rounds 1]``

For each API version: ``distributord sim --api VERSION`` in a separate process (so the
simulator's work is not counted; it serves only that version), then, one after the other
against that same simulator process, two consumers of every telemetry stream of the fleet (one
per component, 2 per battery), each measured over a window of ``--seconds``:

* **the bare consumer** (``bench.bare``): a plain asyncio program with the
  version's generated ``MicrogridStub`` on one grpc.aio channel, one task per stream, which per
  message only reads the component id and each metric sample's value. It runs in a subprocess
  of its own, started fresh for each window: a process that holds nothing but that program, as
  its author would run it, with its own interpreter, heap and garbage collector, and no trio,
  bridge or leftover grpc state of the daemon's code (nor the other way round). It measures
  itself and reports back.
* **the daemon's link**, in this process: ``open_link`` pinned to the version, discovery, and
  one ``Telemetry`` task per component into a counting sink, exactly as the daemon does
  (the link puts every stream on one channel, as the bare consumer does).
* or, with ``--against daemon``, **the whole daemon process**: ``distributord run`` with
  ``microgrid.api`` pinned to the version and the default configuration otherwise, started
  fresh for each window (``bench.load.open_daemon``) and sent no request. Its window is the
  CPU time of that process from ``/proc/PID/stat`` (user + system, all its threads: grpc's,
  the bridge's, trio's), so it counts everything a sample costs in the product: the link,
  decoding, the fleet, the status machines and their timers, the status publications, the
  systemd status line and the garbage collector as the daemon tunes it. The daemon counts no
  messages; instead it must still report every battery working after the window (``get_status``,
  asked once the window has closed), which it can only do if it kept up with every stream.

Both wait until every stream has delivered and 3 s more (3 periods at low rates) before the
window opens (the daemon: until its status line reads every battery working, then the same
3 s); opening the streams is not measured. Each window measures its own process:
CPU share (user + system time, grpc's threads included, over wall time), messages received
against messages sent, and the wall time spent in garbage collections. The ratio is the
link's CPU share over the bare consumer's. Beside them: the simulator's CPU share in the same
window, and how busy the whole machine was (of all its cores), sampled once a second, so a
window where the simulator and the consumer fought for the cores shows it. ``--rounds 2``
measures bare, link, link, bare (or bare, daemon, daemon, bare), which cancels a drift of
the machine's speed that is linear in time; the figures of each window are printed, and the
ratio of their sums.

For the link alone, as before: threads, resident memory, and the delay between a sample being
taken (its ``sampled_at``) and it reaching the sink, in the first and the last tenth of the
window. A link that falls behind shows it there: the delay grows.

The issue's targets: at 2,000 streams, under 25 % of one core, under 300 MB RSS, no growing
backlog, and a thread count that does not grow with the number of components; and at 1,000
batteries and 1 Hz, a CPU cost at most :data:`TARGET_RATIO` times the bare consumer's, on
every version; the same for the whole daemon process (issue 21's goal: the product's cost,
not only the part easiest to isolate).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import trio

from bench.bare import GcClock, cpu_seconds
from bench.distribution import machine
from bench.load import open_daemon
from distributord.api.adapter import Snapshot
from distributord.client.trio import open_client
from distributord.core.config import API_VERSIONS
from distributord.shell.link import (
    MAX_OPENING_STREAMS,
    SilenceWatch,
    Telemetry,
    discover,
    open_link,
)
from distributord.shell.service import GC_THRESHOLD, tune_gc

TARGET_CPU = 0.25
TARGET_RSS_MB = 300.0
TARGET_RATIO = 1.5
"""The link's CPU over the bare consumer's (issue 12's target; issue 11 asked for 2.0, what it
cost when that issue was written); and the whole daemon process's (issue 21's)."""

CONSUMERS = ("link", "daemon")
"""What can be measured beside the bare consumer (``--against``)."""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROJECT = Path(__file__).resolve().parent.parent
"""The directory that holds the :mod:`bench` package (the project's root)."""


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


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of this process (or of ``pid``), MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def threads(pid: int | str = "self") -> int:
    """Threads of this process (or of ``pid``): all of them, grpc's own included."""
    return len(os.listdir(f"/proc/{pid}/task"))


def process_cpu_seconds(pid: int | str) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), s."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces; the fields after it do not.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def machine_busy_seconds() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    total = sum(ticks[:8])  # guest time is already in user time
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@attrs.frozen(kw_only=True)
class Simulator:
    """A running ``distributord sim``.

    Attributes:
        address: Where it serves, ``127.0.0.1:PORT``.
        pid: Its process.
    """

    address: str
    pid: int


class Sampler:
    """Samples the simulator's CPU and the machine's, once a second, in a thread.

    Windows are measured inside other processes (the bare consumer's); the samples let this
    process tell the simulator's share in any window afterwards (linearly interpolated).
    """

    PERIOD_S = 1.0

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._samples: list[tuple[float, float, float, float]] = []  # wall, sim, busy, total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        busy, total = machine_busy_seconds()
        self._samples.append((time.time(), process_cpu_seconds(self._pid), busy, total))

    def _run(self) -> None:
        while not self._stop.wait(self.PERIOD_S):
            self._sample()

    def _at(self, when: float) -> tuple[float, float, float]:
        samples = self._samples
        for (t0, *a), (t1, *b) in itertools.pairwise(samples):
            if t0 <= when <= t1:
                f = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
                return (
                    a[0] + f * (b[0] - a[0]),
                    a[1] + f * (b[1] - a[1]),
                    a[2] + f * (b[2] - a[2]),
                )
        _, sim, busy, total = samples[-1] if when > samples[-1][0] else samples[0]
        return sim, busy, total

    def shares(self, start: float, wall: float) -> tuple[float, float]:
        """The simulator's CPU share (of one core) and the machine's busy share (of all)."""
        sim0, busy0, total0 = self._at(start)
        sim1, busy1, total1 = self._at(start + wall)
        busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
        return (sim1 - sim0) / wall, busy


@contextlib.contextmanager
def simulator(batteries: int, hz: float, *, api: str | None = None) -> Iterator[Simulator]:
    """``distributord sim`` in its own process, serving ``api`` (all versions if None)."""
    with contextlib.ExitStack() as stack:
        scenario = stack.enter_context(
            tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        )
        stack.callback(os.unlink, scenario.name)
        scenario.write(f"[simulation]\ntelemetry_hz = {hz}\n")
        scenario.close()
        # Its stderr goes to a file, shown if it does not start: its "stopped" line at the end
        # would cut the tables.
        errors = stack.enter_context(tempfile.TemporaryFile("w+"))
        command = [sys.executable, "-m", "distributord", "sim", "--port", "0"]
        command += ["--batteries", str(batteries), "--scenario", scenario.name]
        if api is not None:
            command += ["--api", api]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            assert process.stdout is not None
            address = ""
            for line in process.stdout:
                if "127.0.0.1:" in line:
                    address = "127.0.0.1:" + line.split("127.0.0.1:")[1].split()[0].rstrip(".,")
                    break
            if not address:
                process.wait(timeout=10)
                errors.seek(0)
                raise RuntimeError(f"the simulator did not print its address:\n{errors.read()}")
            # Keep the pipe drained.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            yield Simulator(address=address, pid=process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # On a loaded machine it may take longer to stop: never leave it running.
                process.kill()
                process.wait()


async def fleet(address: str, api: str) -> list[tuple[int, bool]]:
    """Every component whose telemetry the daemon reads: ``(id, is a battery)``."""
    async with open_link(address, api=api) as link:
        topology = await discover(link)
    return [(b, True) for b in topology.pairs] + [(i, False) for i in topology.pairs.values()]


def settle_s(hz: float) -> float:
    """How long to wait after every stream delivered before measuring: 3 s, 3 periods at most."""
    return max(3.0, 3.0 / hz)


async def run(
    address: str, seconds: float, hz: float, *, api: str, daemon_gc: bool = True
) -> dict[str, float]:
    """Consume every stream at ``address`` through the link for ``seconds``; the figures.

    With ``daemon_gc``, the garbage collector is tuned as the daemon tunes it once it is
    ready (``shell.service.tune_gc``: the heap so far frozen, collections rare), once every
    stream is open; else Python's defaults.
    """
    sink = CountingSink()
    clock = GcClock()
    async with open_link(address, api=api) as link:
        topology = await discover(link)
        components = [(b, True) for b in topology.pairs] + [
            (i, False) for i in topology.pairs.values()
        ]
        before_threads = threads()
        async with trio.open_nursery() as nursery:
            watch = SilenceWatch()
            await nursery.start(watch.serve)
            for component, battery in components:
                telemetry = Telemetry(
                    link,
                    component,
                    battery=battery,
                    sink=sink,
                    max_data_age_s=10.0,
                    silence_s=max(5.0, 5.0 / hz),
                    watch=watch,
                )
                await nursery.start(telemetry.serve)
            undo_gc = tune_gc() if daemon_gc else lambda: None
            await trio.sleep(settle_s(hz))  # every stream has delivered
            start_wall, start_cpu, start_received = time.time(), cpu_seconds(), sink.received
            sink.delays.clear()
            clock.running = True
            await trio.sleep(seconds)
            clock.running = False
            wall, cpu = time.time() - start_wall, cpu_seconds() - start_cpu
            received = sink.received - start_received
            figures = {
                "start": start_wall,
                "wall": wall,
                "cpu": cpu,
                "streams": float(len(components)),
                "threads_before": float(before_threads),
                "threads": float(threads()),
                "rss_mb": rss_mb(),
                "received": float(received),
                "gaps": float(sink.gaps),
                "gc_s": clock.seconds,
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
            undo_gc()
    return figures


async def run_daemon(
    address: str, api: str, batteries: int, seconds: float, hz: float
) -> dict[str, float]:
    """A fresh ``distributord run`` against ``address``, measured from outside; its figures.

    Its window opens :func:`settle_s` after its status line first reads every battery working
    (every stream has delivered). CPU is the daemon process's from ``/proc``, all threads.
    ``working`` is how many batteries it reports working once the window has closed.
    """
    with tempfile.TemporaryDirectory(prefix="distributord-bench-") as directory:
        log = Path(directory) / "daemon.log"
        async with open_daemon(address, api, Path(directory), log, batteries=batteries) as daemon:
            before_threads = threads(daemon.pid)
            await trio.sleep(settle_s(hz))
            start_wall, start_cpu = time.time(), process_cpu_seconds(daemon.pid)
            await trio.sleep(seconds)
            wall = time.time() - start_wall
            cpu = process_cpu_seconds(daemon.pid) - start_cpu
            figures = {
                "start": start_wall,
                "wall": wall,
                "cpu": cpu,
                "threads_before": float(before_threads),
                "threads": float(threads(daemon.pid)),
                "rss_mb": rss_mb(daemon.pid),
            }
            async with open_client(str(daemon.sock)) as client:
                status = await client.result("get_status")
            figures["working"] = float(len(status["working"]))
    return figures


def run_bare(
    address: str, api: str, ids: Sequence[int], seconds: float, hz: float
) -> dict[str, float]:
    """The bare consumer (``bench.bare``) in a fresh process; its figures.

    It runs from the directory that holds :mod:`bench` (``-m`` puts the working directory on the
    path), so it starts however this process was started.
    """
    command = [sys.executable, "-m", "bench.bare", "--api", api]
    command += ["--address", address, "--seconds", str(seconds), "--settle", str(settle_s(hz))]
    command += ["--max-opening", str(MAX_OPENING_STREAMS)]
    done = subprocess.run(
        command,
        input="\n".join(map(str, ids)),
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 300,
        cwd=PROJECT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the bare consumer failed:\n{done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return figures


@attrs.frozen(kw_only=True)
class Window:
    """One consumer's measured window.

    Attributes:
        consumer: ``"bare"``, ``"link"`` or ``"daemon"``.
        figures: What it measured (``start``, ``wall``, ``cpu``, and as the consumer can:
            ``received``, ``gc_s``, ...).
        sim_share: The simulator's CPU share (of one core) in the window.
        busy_share: The machine's busy share (of all its cores) in the window.
    """

    consumer: str
    figures: dict[str, float]
    sim_share: float
    busy_share: float


def measure(
    api: str,
    batteries: int,
    hz: float,
    seconds: float,
    rounds: int,
    *,
    daemon_gc: bool,
    against: str = "link",
) -> tuple[list[Window], int]:
    """Every window of one version, in order; and the number of streams.

    ``against`` is what alternates with the bare consumer: ``"link"`` (in this process) or
    ``"daemon"`` (the whole daemon process; ``daemon_gc`` does not apply to it).
    """
    if against not in CONSUMERS:
        raise ValueError(f"unknown consumer {against!r}; known: {', '.join(CONSUMERS)}")
    windows: list[Window] = []
    with simulator(batteries, hz, api=api) as sim, Sampler(sim.pid) as sampler:
        components = trio.run(fleet, sim.address, api)
        ids = [c for c, _ in components]
        for k in range(rounds):
            order = ("bare", against) if k % 2 == 0 else (against, "bare")
            for consumer in order:
                if consumer == "bare":
                    figures = run_bare(sim.address, api, ids, seconds, hz)
                elif consumer == "daemon":
                    figures = trio.run(lambda: run_daemon(sim.address, api, batteries, seconds, hz))
                else:
                    figures = trio.run(
                        lambda: run(sim.address, seconds, hz, api=api, daemon_gc=daemon_gc)
                    )
                time.sleep(Sampler.PERIOD_S * 1.5)  # a sample after the window ends
                sim_share, busy = sampler.shares(figures["start"], figures["wall"])
                windows.append(
                    Window(consumer=consumer, figures=figures, sim_share=sim_share, busy_share=busy)
                )
    return windows, len(components)


def verdict(ok: bool) -> str:
    """A tick or a cross."""
    return "✓" if ok else "✗"


def row(api: str, label: str, windows: Sequence[Window], streams: int, hz: float) -> str:
    """One line of the table: the sums of ``windows``."""
    nan = float("nan")
    wall = sum(w.figures["wall"] for w in windows)
    cpu = sum(w.figures["cpu"] for w in windows)
    received = sum(w.figures.get("received", nan) for w in windows)  # the daemon counts none
    gc_s = sum(w.figures.get("gc_s", nan) for w in windows)
    sim = sum(w.sim_share * w.figures["wall"] for w in windows) / wall
    busy = sum(w.busy_share * w.figures["wall"] for w in windows) / wall
    sent = streams * hz * wall
    counted = sent if math.isnan(received) else received  # per message sent if none counted
    per_message = cpu / counted * 1e6 if counted else nan
    counted_s = "–" if math.isnan(received) else f"{received:,.0f}"
    gc_share = "–" if math.isnan(gc_s) else f"{gc_s / wall:.1%}"
    return (
        f"{api:<10} {label:<16} {cpu / wall:>8.1%} {per_message:>8.1f} "
        f"{counted_s:>9} {sent:>9,.0f} {gc_share:>6} {sim:>8.1%} {busy:>7.1%}"
    )


def ratio(windows: Sequence[Window], against: str = "link") -> float:
    """``against``'s CPU share over the bare consumer's, over all of ``windows``."""

    def share(consumer: str) -> float:
        mine = [w.figures for w in windows if w.consumer == consumer]
        return sum(f["cpu"] for f in mine) / sum(f["wall"] for f in mine)

    return share(against) / share("bare")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--api", default="v1alpha18,v1", help="versions, comma-separated")
    parser.add_argument("--batteries", type=int, default=1000)
    parser.add_argument("--hz", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="each window")
    parser.add_argument(
        "--rounds", type=int, default=1, help="1: bare, link; 2: bare, link, link, bare; ..."
    )
    parser.add_argument(
        "--against",
        choices=CONSUMERS,
        default="link",
        help="beside the bare consumer: the link in this process, or the whole daemon process",
    )
    parser.add_argument(
        "--gc",
        choices=("daemon", "default"),
        default="daemon",
        help="the link's garbage collector: tuned as the daemon tunes it, or Python's defaults",
    )
    args = parser.parse_args(argv)
    apis = [a.strip() for a in args.api.split(",")]
    if unknown := [a for a in apis if a not in API_VERSIONS]:
        parser.error(f"--api: unknown {', '.join(unknown)}; known: {', '.join(API_VERSIONS)}")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    print(f"link: {machine()}")
    print(
        f"{args.batteries} batteries at {args.hz:g} Hz, windows of {args.seconds:g} s, "
        f"{args.rounds} round(s); per version, one simulator process serving only that version."
    )
    against = args.against
    print(
        "bare: a plain asyncio grpc.aio consumer in a fresh process of its own (one channel, one "
        "task per stream, reads the id and each sample's value); "
        + (
            "link: open_link + one Telemetry task per component into a counting sink, in this "
            "process. "
            if against == "link"
            else "daemon: `distributord run` in a fresh process of its own, no requests. "
        )
        + "CPU: user+sys of that process over wall time, in % of one core; GC: wall time in "
        "collections; sim: the simulator's CPU (one core); machine: busy share of all cores."
        + (" µs/msg: per message sent (the daemon counts none)." if against == "daemon" else "")
    )
    print(
        "garbage collector: bare, Python's defaults; "
        + (
            "daemon, its own settings"
            if against == "daemon"
            else "link, "
            + (
                f"the daemon's (frozen heap, thresholds {GC_THRESHOLD}, once every stream is open)"
                if args.gc == "daemon"
                else "Python's defaults (--gc default)"
            )
        )
    )
    results: list[tuple[str, list[Window], int]] = []
    for api in apis:
        windows, streams = measure(
            api,
            args.batteries,
            args.hz,
            args.seconds,
            args.rounds,
            daemon_gc=args.gc == "daemon",
            against=against,
        )
        results.append((api, windows, streams))
    print()
    print(
        f"{'api':<10} {'consumer':<16} {'CPU':>8} {'µs/msg':>8} {'received':>9} {'sent':>9} "
        f"{'GC':>6} {'sim':>8} {'machine':>7}"
    )
    for api, windows, streams in results:
        for k, window in enumerate(windows, 1):
            label = f"{window.consumer} #{k}" if args.rounds > 1 else window.consumer
            print(row(api, label, [window], streams, args.hz))
        r = ratio(windows, against)
        print(
            f"{api:<10} {f'ratio {against}/bare':<16} {r:>7.2f}x  "
            f"(target ≤ {TARGET_RATIO:g}x {verdict(r <= TARGET_RATIO)})"
        )
    for api, windows, streams in results:
        for window in (w for w in windows if w.consumer == "daemon"):
            f = window.figures
            print(
                f"{api}, the daemon: RSS {f['rss_mb']:.0f} MB, threads {f['threads']:.0f}, "
                f"{f['working']:.0f} of {streams // 2} batteries working after the window"
            )
        if against != "link":
            continue
        print()
        print(f"{api}, the link: {streams} streams")
        for window in (w for w in windows if w.consumer == "link"):
            f = window.figures
            share = f["cpu"] / f["wall"]
            print(
                f"  CPU share of one core: {share:.1%}  "
                f"(target < {TARGET_CPU:.0%} {verdict(share < TARGET_CPU)}); "
                f"RSS: {f['rss_mb']:.0f} MB  "
                f"(target < {TARGET_RSS_MB:.0f} MB {verdict(f['rss_mb'] < TARGET_RSS_MB)})"
            )
            print(
                f"  threads: {f['threads']:.0f} with {streams} streams open "
                f"({f['threads_before']:.0f} before any stream); stream gaps: {f['gaps']:.0f}"
            )
            print(
                "  delay sampled → delivered, first / last tenth of the window: "
                f"p50 {f['first_p50_ms']:.1f} / {f['last_p50_ms']:.1f} ms, "
                f"p99 {f['first_p99_ms']:.1f} / {f['last_p99_ms']:.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
