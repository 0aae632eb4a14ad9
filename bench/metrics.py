"""Benchmark: does serving Prometheus metrics slow the request loop?

Usage: ``python -m bench.metrics [--batteries 100] [--requests 300] [--rounds 2]
[--scrape-every 1.0] [--api v1alpha18]``

Windows of the daemon benchmark (:func:`bench.daemon.measure`: a simulator and
``distributord run`` in processes of their own, ``set_power`` for the whole fleet one at a
time, each alternated with a bare fan-out) in the order off, on, on, off, repeated ``--rounds``
times, so that a machine whose speed drifts treats both alike. *Off* is the default
configuration; *on* sets ``metrics.listen`` to a free loopback port, and a scraper fetches
``/metrics`` every ``--scrape-every`` seconds and parses it with ``prometheus_client``'s parser
(Prometheus scrapes every 15 s by default; once a second is fifteen times harsher).

Printed: each window's p50 and p99 beside its bare fan-out; then, pooled over the windows,
metrics on against off (target: within 5 %), raw and as the ratio to the bare fan-out of the
same windows (which cancels the machine's drift); and the scrapes: how many, their size and
time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
import urllib.request
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

from bench.daemon import measure, percentile
from bench.distribution import machine

TARGET = 1.05
"""Metrics on may cost at most 5 % of the reply latency (the issue's target)."""


def free_port() -> int:
    """A loopback port free now (the daemon binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Scraper:
    """Fetches and parses ``/metrics`` on a schedule; keeps what each scrape cost."""

    def __init__(self, url: str, every_s: float) -> None:
        self.url = url
        self.every_s = every_s
        self.seconds: list[float] = []
        self.sizes: list[int] = []
        self.series: list[int] = []

    def fetch(self) -> None:
        """One scrape (blocking): fetch, parse, note its time, size and samples."""
        start = time.perf_counter()
        with urllib.request.urlopen(self.url, timeout=10) as response:
            text = response.read().decode("utf-8")
        self.seconds.append(time.perf_counter() - start)
        self.sizes.append(len(text))
        self.series.append(
            sum(len(family.samples) for family in text_string_to_metric_families(text))
        )

    async def run(self) -> None:
        """Scrape until cancelled."""
        while True:
            await asyncio.to_thread(self.fetch)
            await asyncio.sleep(self.every_s)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures; 1 if the target is missed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batteries", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300, help="requests per window")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of off, on, on, off")
    parser.add_argument("--scrape-every", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--api", default="v1alpha18")
    parser.add_argument("--daemon-log", default=os.devnull, help="append the daemon's log here")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    print(f"metrics overhead: {machine()}")
    print(
        f"{args.batteries} batteries, API {args.api}, telemetry 1 Hz, {args.requests} requests "
        f"per window, windows off/on/on/off x {args.rounds}, a scrape every {args.scrape_every:g} s"
    )
    pooled: dict[bool, dict[str, list[float]]] = {
        on: {"daemon": [], "bare": []} for on in (False, True)
    }
    scrapers: list[Scraper] = []
    print(f"{'window':<8} {'metrics':<8} {'p50':>7} {'bare p50':>9} {'p99':>7} {'bare p99':>9}")
    for window, on in enumerate([False, True, True, False] * args.rounds, start=1):
        listen = f"127.0.0.1:{free_port()}" if on else None
        scraper = Scraper(f"http://{listen}/metrics", args.scrape_every) if listen else None
        figures = asyncio.run(
            measure(
                args.batteries,
                args.requests,
                1.0,
                args.daemon_log,
                api=args.api,
                metrics=listen,
                while_running=scraper.run if scraper else None,
                samples=pooled[on],
            )
        )
        if scraper is not None:
            scrapers.append(scraper)
        print(
            f"{window:<8} {'on' if on else 'off':<8} {figures['daemon_p50']:>7.2f} "
            f"{figures['bare_p50']:>9.2f} {figures['daemon_p99']:>7.2f} "
            f"{figures['bare_p99']:>9.2f}",
            flush=True,
        )
    print("\npooled, ms           off        on   on/off")
    failed = False
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        off_ms, on_ms = (percentile(pooled[m]["daemon"], q) * 1e3 for m in (False, True))
        bare_off, bare_on = (percentile(pooled[m]["bare"], q) * 1e3 for m in (False, True))
        raw = on_ms / off_ms
        drift_free = (on_ms / bare_on) / (off_ms / bare_off)
        failed |= name == "p50" and drift_free > TARGET
        print(f"daemon {name}     {off_ms:>9.2f} {on_ms:>9.2f} {raw:>8.3f}")
        print(f"bare fan-out {name} {bare_off:>9.2f} {bare_on:>9.2f} {bare_on / bare_off:>8.3f}")
        mark = "✓" if drift_free <= TARGET else "✗"
        print(
            f"daemon/bare {name}  {off_ms / bare_off:>9.3f} {on_ms / bare_on:>9.3f} "
            f"{drift_free:>8.3f}"
            f"  target ≤ {TARGET}: {mark}"
        )
    scrape_s = [s for scraper in scrapers for s in scraper.seconds]
    sizes = [s for scraper in scrapers for s in scraper.sizes]
    series = [s for scraper in scrapers for s in scraper.series]
    if scrape_s:
        print(
            f"\nscrapes: {len(scrape_s)}, {statistics.median(sizes) / 1024:.0f} KiB and "
            f"{statistics.median(series):.0f} samples each, p50 "
            f"{statistics.median(scrape_s) * 1e3:.1f} ms, max {max(scrape_s) * 1e3:.1f} ms"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
