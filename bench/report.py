"""The benchmark report: ``REPORT.md`` and its plots, from the figures of one run.

``python -m bench`` runs the benchmarks and hands their figures here as one
JSON-shaped dict (:class:`Results`, also written beside the report as ``results.json``, so a
report can be drawn again without running anything). This module only writes: it runs nothing,
and it imports neither trio nor grpc.

Rules it keeps:

* Every table says how its figure was measured and beside which reference: the bare consumer
  (link), the bare fan-out (daemon), the reference design's published figures or the exact
  best answer (distribution). A figure without its comparison measured in the same run is
  not comparable: the machine's speed drifts by about ±30 % from minute to minute.
* The report records the machine, the date, the command and how busy the machine was (its
  load average before and after each benchmark), because others may share it.
* Plots are optional. Without matplotlib the report has its tables and says how to get the
  plots (``pip install -e '.[plots]'``); it never fails for want of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NotRequired, TypedDict

PLOTS_HINT = "Plots need matplotlib: `pip install -e '.[plots]'`, then run the command again."
LATENCY_PNG = "latency.png"
TELEMETRY_PNG = "telemetry_cpu.png"
TARGET_STREAMS = 2000
"""Where the link's CPU target holds: 1,000 batteries, 2 streams each."""


class DistributionRow(TypedDict):
    """One fleet size of the ``distribute()`` benchmark; times in µs."""

    pairs: int
    median_us: float
    p90_us: float
    round_min_us: float
    round_max_us: float


class FixedPowerRow(TypedDict):
    """One fixed-power fleet: the search's answers beside the exact best; times in ms."""

    pairs: int
    odd: bool
    requests: int
    best: int
    short_max_w: float
    short_p50_w: float
    slowest_ms: float
    median_ms: float


class DistributionResults(TypedDict):
    """The distribution benchmark."""

    rounds: int
    rows: list[DistributionRow]
    pair_us: float
    fixed_power: list[FixedPowerRow]


class LinkRow(TypedDict):
    """One version and fleet size of the link benchmark; CPU shares are of one core (0-1)."""

    api: str
    batteries: int
    streams: int
    bare_cpu: float
    bare_cpu_min: float
    bare_cpu_max: float
    link_cpu: float
    link_cpu_min: float
    link_cpu_max: float
    ratio: float
    link_received: float
    bare_received: float
    sent_per_consumer: float
    link_gc: float
    sim_cpu: float
    machine_busy: float
    rss_mb: float
    threads: int
    gaps: int
    delay_p50_first_ms: float
    delay_p50_last_ms: float


class ProcessRow(TypedDict):
    """One version and fleet size of the whole daemon process beside the bare consumer.

    CPU shares are of one core (0-1), of the daemon process (all its threads) from ``/proc``.
    """

    api: str
    batteries: int
    streams: int
    bare_cpu: float
    bare_cpu_min: float
    bare_cpu_max: float
    daemon_cpu: float
    daemon_cpu_min: float
    daemon_cpu_max: float
    ratio: float
    working_min: int
    """The fewest batteries the daemon reported working after one of its windows."""
    sim_cpu: float
    machine_busy: float
    rss_mb: float
    threads: int


class LinkResults(TypedDict):
    """The link benchmark."""

    hz: float
    seconds: float
    rounds: int
    rows: list[LinkRow]


class ProcessResults(TypedDict):
    """The whole daemon process beside the bare consumer."""

    hz: float
    seconds: float
    rounds: int
    rows: list[ProcessRow]
    measured: NotRequired[str]
    """Where these figures come from when they were measured apart from the rest of the
    report (date, commit, load), else absent."""


class DaemonRow(TypedDict):
    """One version and fleet size of the end-to-end benchmark; times in ms."""

    api: str
    batteries: int
    requests: int
    daemon_p50: float
    daemon_p99: float
    bare_p50: float
    bare_p99: float
    overhead_p50: float
    overhead_p99: float
    failed: int


class DaemonResults(TypedDict):
    """The end-to-end benchmark."""

    hz: float
    rows: list[DaemonRow]


class Targets(TypedDict):
    """The issue's targets and the reference design's figures, as the benchmarks hold them."""

    distribution_us: dict[str, float]
    """Fleet size (a string: JSON keys) → median target."""
    reference_us: dict[str, float]
    """Fleet size → the reference design's median."""
    link_ratio: float
    link_cpu: float
    link_rss_mb: float
    process_ratio: NotRequired[float]
    """The whole daemon process's CPU over the bare consumer's (issue 21)."""
    daemon_p50_ratio: float
    daemon_p99_ratio: float
    daemon_overhead_ms: float


class Load(TypedDict):
    """The 1, 5 and 15 minute load averages before and after one benchmark."""

    benchmark: str
    before: list[float]
    after: list[float]
    seconds: float


class Results(TypedDict):
    """Everything one run measured, and where and how."""

    machine: str
    cores: int
    date: str
    command: str
    commit: str
    quick: bool
    targets: Targets
    load: list[Load]
    distribution: NotRequired[DistributionResults]
    link: NotRequired[LinkResults]
    process: NotRequired[ProcessResults]
    daemon: NotRequired[DaemonResults]
    errors: NotRequired[list[str]]
    """Measurements that failed (the benchmark, the point, the error); the rest went on."""


def _n(value: float) -> str:
    """Three significant figures or so, as the README's tables: 6.5, 78.0, 816, 2,500."""
    if math.isnan(value):
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def _pct(share: float) -> str:
    return "–" if math.isnan(share) else f"{share:.1%}"


def _tick(ok: bool) -> str:
    return "✓" if ok else "✗"


def _table(header: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table; ``align`` has one letter per column, ``l`` or ``r``."""
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def headline(results: Results) -> list[str]:
    """The figures with a target: each beside its target and its reference, and a verdict."""
    targets = results["targets"]
    rows: list[list[str]] = []
    if "distribution" in results:
        for d in results["distribution"]["rows"]:
            key = str(d["pairs"])
            if key in targets["distribution_us"]:
                target = targets["distribution_us"][key]
                reference = targets["reference_us"].get(key)
                rows.append(
                    [
                        f"`distribute()`, {d['pairs']} pairs",
                        "median",
                        f"{_n(d['median_us'])} µs",
                        f"< {_n(target)} µs {_tick(d['median_us'] < target)}",
                        "" if reference is None else f"reference design {_n(reference)} µs",
                    ]
                )
    if "link" in results:
        largest: dict[str, LinkRow] = {}
        for r in results["link"]["rows"]:
            if r["api"] not in largest or r["streams"] > largest[r["api"]]["streams"]:
                largest[r["api"]] = r
        for r in largest.values():
            rows.append(
                [
                    f"link, {r['api']}, {r['streams']:,} streams",
                    "CPU, link / bare",
                    f"{r['ratio']:.2f}×",
                    f"≤ {targets['link_ratio']:g}× {_tick(r['ratio'] <= targets['link_ratio'])}",
                    f"bare consumer {_pct(r['bare_cpu'])}, link {_pct(r['link_cpu'])} of a core",
                ]
            )
    if "process" in results:
        target = targets.get("process_ratio", targets["link_ratio"])
        for p in results["process"]["rows"]:
            rows.append(
                [
                    f"daemon process, {p['api']}, {p['streams']:,} streams",
                    "CPU, daemon / bare",
                    f"{p['ratio']:.2f}×",
                    f"≤ {target:g}× {_tick(p['ratio'] <= target)}",
                    f"bare consumer {_pct(p['bare_cpu'])}, daemon {_pct(p['daemon_cpu'])} of a "
                    "core",
                ]
            )
    if "daemon" in results:
        for dr in results["daemon"]["rows"]:
            if dr["batteries"] < 100:
                continue  # the targets are set at 100 batteries and more
            where = f"daemon, {dr['api']}, {dr['batteries']} batteries"
            for q, mine, bare, target in (
                ("p50", dr["daemon_p50"], dr["bare_p50"], targets["daemon_p50_ratio"]),
                ("p99", dr["daemon_p99"], dr["bare_p99"], targets["daemon_p99_ratio"]),
            ):
                ratio = mine / bare
                rows.append(
                    [
                        where,
                        f"{q}, daemon / bare",
                        f"{ratio:.2f}×",
                        f"≤ {target:g}× " + _tick(ratio <= target),
                        f"bare fan-out {_n(bare)} ms",
                    ]
                )
            if dr["batteries"] == 100:
                target = targets["daemon_overhead_ms"]
                rows.append(
                    [
                        where,
                        "overhead p50",
                        f"{_n(dr['overhead_p50'])} ms",
                        f"< {target:g} ms {_tick(dr['overhead_p50'] < target)}",
                        "reply latency − the daemon's own fan-out",
                    ]
                )
    if not rows:
        return ["No figure of this run has a target (the targets are set at larger fleets)."]
    return _table(["benchmark", "figure", "measured", "target", "beside"], "lllrl", rows)


def distribution_section(d: DistributionResults, targets: Targets) -> list[str]:
    """The ``distribute()`` tables and how they were measured."""
    lines = [
        "## Distribution",
        "",
        "How: `bench.distribution`, in this process. Each fleet (SoC 20–80 %, "
        "5–100 kWh, caps of 3–10 kW, an exclusion minimum on every third inverter) gets 19 "
        "requests (0 W and ±2…110 % of its power), each timed many times per round over "
        f"{d['rounds']} round(s); median and p90 are over every call, *rounds* is the spread of "
        "the rounds' medians. Pairs are built before the clock starts (the daemon builds them "
        f"when telemetry arrives): {_n(d['pair_us'])} µs per pair.",
        "",
        "Beside: the issue's targets, and the *reference design*'s medians as published with the "
        "issue (quoted, not measured here: the reference is not run on this machine).",
        "",
    ]
    rows = []
    for r in d["rows"]:
        key = str(r["pairs"])
        target = targets["distribution_us"].get(key)
        reference = targets["reference_us"].get(key)
        rows.append(
            [
                str(r["pairs"]),
                f"{_n(r['median_us'])} µs",
                f"{_n(r['p90_us'])} µs",
                f"{_n(r['round_min_us'])}–{_n(r['round_max_us'])} µs",
                "" if target is None else f"< {_n(target)} µs {_tick(r['median_us'] < target)}",
                "" if reference is None else f"{_n(reference)} µs",
            ]
        )
    lines += _table(
        ["pairs", "median", "p90", "rounds", "target", "reference design"], "rrrrrr", rows
    )
    if d["fixed_power"]:
        lines += [
            "",
            "**Fixed-power fleets** (`--fixed-power`): inverters whose minimum is their cap "
            "(1–5 kW, whole watts), 40 requests per fleet between one pair's power and half the "
            "fleet's, with the daemon's 2 ms search budget. Beside: the best possible total, "
            "found exactly by a subset-sum over whole watts; *best* counts the answers that "
            "reach it, *most short* is the largest shortfall. *(odd)* fleets have even powers "
            "and odd requests, so no request is reachable and the search spends its budget. "
            "The budget is wall-clock time: on a shared machine the search is preempted within "
            "it and falls short where a quiet machine finds the best (compare the load above).",
            "",
        ]
        lines += _table(
            ["pairs", "best", "most short", "short p50", "slowest", "median"],
            "rrrrrr",
            (
                [
                    f"{r['pairs']} (odd)" if r["odd"] else str(r["pairs"]),
                    f"{r['best']} of {r['requests']}",
                    f"{r['short_max_w']:g} W",
                    f"{r['short_p50_w']:g} W",
                    f"{r['slowest_ms']:.2f} ms",
                    f"{r['median_ms']:.2f} ms",
                ]
                for r in d["fixed_power"]
            ),
        )
    return lines


def link_section(link: LinkResults, targets: Targets, plotted: bool) -> list[str]:
    """The link table and how it was measured."""
    windows = "bare, link" if link["rounds"] == 1 else "bare, link, link, bare"
    lines = [
        "## Microgrid link (telemetry)",
        "",
        "How: `bench.link`, per version and fleet size: `distributord sim --api "
        f"VERSION` in a process of its own streams every battery and inverter at {link['hz']:g} "
        "Hz (2 streams per battery). Against that one simulator, windows of "
        f"{link['seconds']:g} s alternate ({windows}"
        + ("" if link["rounds"] <= 2 else f", … {link['rounds']} rounds")
        + ") between the *bare consumer* and the daemon's *link*. The bare consumer "
        "(`bench/bare.py`) is a plain grpc.aio program in a fresh process: the generated stub, "
        "one channel, one task per stream, reading each message's id and values. The link is "
        "`open_link` + one `Telemetry` task per component into a counting sink, with the "
        "daemon's garbage collector settings, in the benchmark's process. CPU is user + system "
        "time of the consumer's process over wall time, in % of one core; *link / bare* is the "
        "ratio of the sums over all windows; the ranges are the single windows'.",
        "",
        f"Targets at 2,000 streams: link / bare ≤ {targets['link_ratio']:g}×, link CPU < "
        f"{targets['link_cpu']:.0%} of a core, RSS < {targets['link_rss_mb']:g} MB.",
        "",
    ]
    rows = []
    for r in link["rows"]:
        received = f"{r['link_received']:,.0f} / {r['sent_per_consumer']:,.0f}"
        rows.append(
            [
                r["api"],
                str(r["batteries"]),
                f"{r['streams']:,}",
                f"{r['bare_cpu_min']:.1%}–{r['bare_cpu_max']:.1%}",
                f"{r['link_cpu_min']:.1%}–{r['link_cpu_max']:.1%}",
                f"{r['ratio']:.2f}×",
                received,
                str(r["gaps"]),
                _pct(r["link_gc"]),
                f"{r['rss_mb']:.0f} MB",
                str(r["threads"]),
                f"{_n(r['delay_p50_first_ms'])} / {_n(r['delay_p50_last_ms'])} ms",
                _pct(r["sim_cpu"]),
                _pct(r["machine_busy"]),
            ]
        )
    lines += _table(
        [
            "version",
            "batteries",
            "streams",
            "bare CPU",
            "link CPU",
            "link / bare",
            "link received / sent",
            "gaps",
            "link GC",
            "link RSS",
            "threads",
            "delay p50 first / last tenth",
            "sim CPU",
            "machine busy",
        ],
        "lrrrrrrrrrrrrr",
        rows,
    )
    lines += [
        "",
        "*received / sent*: messages the link received in its windows against what the "
        "simulator sent at its rate; *delay*: sample taken → sink, p50 in the first and the last "
        "tenth of a window (a link that falls behind shows it growing); *sim CPU*: the "
        "simulator's share of one core; *machine busy*: all cores, everyone's work included.",
    ]
    if plotted:
        lines += ["", f"![telemetry CPU against stream count]({TELEMETRY_PNG})"]
    return lines


def process_section(process: ProcessResults, targets: Targets) -> list[str]:
    """The whole daemon process beside the bare consumer, and how it was measured."""
    windows = "bare, daemon" if process["rounds"] == 1 else "bare, daemon, daemon, bare"
    target = targets.get("process_ratio", targets["link_ratio"])
    lines = [
        "## The daemon process (telemetry)",
        "",
        "How: `bench.link --against daemon`, per version: `distributord sim --api VERSION` in "
        "a process of its own streams 1,000 batteries and their inverters at "
        f"{process['hz']:g} Hz, and windows of {process['seconds']:g} s "
        f"alternating ({windows}) between the *bare consumer* of the link benchmark (a fresh "
        "grpc.aio process) and the *daemon*: `distributord run` "
        "with the version pinned and the default configuration otherwise, in a fresh process "
        "for each window, sent no request. Its window opens 3 s after its status line first "
        "reads every battery working (every stream has delivered). CPU is the whole daemon "
        "process's, user + system time of all its threads from `/proc/PID/stat`, over wall "
        "time: the link, decoding, the fleet, the status machines and their timers, the status "
        "board, the systemd status line and the garbage collector, everything a sample costs "
        "in the product. *daemon / bare* is the ratio of the sums over all windows; *working "
        "after*: the fewest batteries the daemon reported working (`get_status`) once one of "
        "its windows had closed, so it kept up with every stream.",
        "",
        f"Target at 2,000 streams: daemon / bare ≤ {target:g}×.",
        "",
    ]
    if "measured" in process:
        lines[-1:-1] = ["", f"Measured apart from the rest of this report: {process['measured']}."]
    rows = [
        [
            r["api"],
            str(r["batteries"]),
            f"{r['streams']:,}",
            f"{r['bare_cpu_min']:.1%}–{r['bare_cpu_max']:.1%}",
            f"{r['daemon_cpu_min']:.1%}–{r['daemon_cpu_max']:.1%}",
            f"{r['ratio']:.2f}× {_tick(r['ratio'] <= target)}",
            f"{r['working_min']} of {r['batteries']}",
            f"{r['rss_mb']:.0f} MB",
            str(r["threads"]),
            _pct(r["sim_cpu"]),
            _pct(r["machine_busy"]),
        ]
        for r in process["rows"]
    ]
    lines += _table(
        [
            "version",
            "batteries",
            "streams",
            "bare CPU",
            "daemon CPU",
            "daemon / bare",
            "working after",
            "daemon RSS",
            "threads",
            "sim CPU",
            "machine busy",
        ],
        "lrrrrrrrrrr",
        rows,
    )
    return lines


def daemon_section(daemon: DaemonResults, targets: Targets, plotted: bool) -> list[str]:
    """The end-to-end table and how it was measured."""
    lines = [
        "## The daemon (end to end)",
        "",
        "How: `bench.daemon`, per version and fleet size: `distributord sim` "
        f"(zero command latency, telemetry at {daemon['hz']:g} Hz, serving only that version) "
        "and `distributord run` each in a process of its own. The benchmark sends `set_power` "
        "for the whole fleet through the control socket, one request at a time, and alternates "
        "each with a *bare fan-out*: the same number of set-power commands, all at once, from a "
        "plain grpc.aio client with the version's generated stub to the same simulator "
        "(`SetElectricalComponentPower` read to the end of its reply stream on v1alpha18, "
        "`SetComponentPowerActive` on v1). *Overhead* is the reply latency minus the fan-out "
        "the daemon performed (its `timing.commands_ms`). Times in ms.",
        "",
        f"Targets at 100 and 500 batteries: p50 ≤ {targets['daemon_p50_ratio']:g}× the bare "
        f"fan-out, p99 ≤ {targets['daemon_p99_ratio']:g}×; overhead p50 < "
        f"{targets['daemon_overhead_ms']:g} ms at 100.",
        "",
    ]
    rows = []
    for r in daemon["rows"]:
        r50, r99 = r["daemon_p50"] / r["bare_p50"], r["daemon_p99"] / r["bare_p99"]
        judged = r["batteries"] >= 100
        rows.append(
            [
                r["api"],
                str(r["batteries"]),
                str(r["requests"]),
                _n(r["daemon_p50"]),
                _n(r["bare_p50"]),
                f"{r50:.2f}" + (f" {_tick(r50 <= targets['daemon_p50_ratio'])}" if judged else ""),
                _n(r["daemon_p99"]),
                _n(r["bare_p99"]),
                f"{r99:.2f}" + (f" {_tick(r99 <= targets['daemon_p99_ratio'])}" if judged else ""),
                f"{_n(r['overhead_p50'])} / {_n(r['overhead_p99'])}",
                str(r["failed"]),
            ]
        )
    lines += _table(
        [
            "version",
            "batteries",
            "requests",
            "daemon p50",
            "bare p50",
            "p50 ratio",
            "daemon p99",
            "bare p99",
            "p99 ratio",
            "overhead p50 / p99",
            "not a success",
        ],
        "lrrrrrrrrrr",
        rows,
    )
    if plotted:
        lines += ["", f"![request latency against battery count]({LATENCY_PNG})"]
    return lines


def render(results: Results, plots: Sequence[str] = ()) -> str:
    """``REPORT.md``: the run, the headline figures, then one section per benchmark.

    ``plots`` are the file names :func:`plot` drew; without them the report says how to get
    them.
    """
    loads = [
        f"{load['benchmark']} {load['before'][0]:.2f} → {load['after'][0]:.2f} "
        f"({load['seconds'] / 60:.1f} min)"
        for load in results["load"]
    ]
    lines = [
        "# distributord benchmarks",
        "",
        f"- **Machine:** {results['machine']}",
        f"- **Date:** {results['date']}",
        f"- **Command:** `{results['command']}`" + (" (a smoke test)" if results["quick"] else ""),
        f"- **Commit:** {results['commit']}",
        f"- **Load** (1-minute load average before → after, {results['cores']} cores): "
        + ("; ".join(loads) if loads else "not recorded"),
        "",
        "The machine's speed drifts from minute to minute and other work may share it, so each "
        "figure is measured beside its comparison in the same run, alternating with it; compare "
        "ratios, not absolute figures from different runs."
        + (
            " This was a `--quick` run: every benchmark shrunk, its figures only show the "
            "benchmarks work."
            if results["quick"]
            else ""
        ),
        "",
        "## Headline",
        "",
        *headline(results),
    ]
    peak = max((max(load["before"][0], load["after"][0]) for load in results["load"]), default=0)
    if peak > results["cores"]:
        busy = (
            f"**The machine was shared:** its load average reached {peak:.1f} on "
            f"{results['cores']} cores during this run (other work ran beside it). Absolute "
            "times and CPU shares are worse than on a quiet machine; the ratios, measured "
            "alternating with their reference, are the figures to read."
        )
        lines[lines.index("## Headline") - 1 : lines.index("## Headline") - 1] = ["", busy]
    if results.get("errors"):
        lines += ["", "**Measurements that failed** (missing from the tables below):", ""]
        lines += [f"- {error}" for error in results.get("errors", [])]
    if not plots:
        lines += ["", PLOTS_HINT]
    targets = results["targets"]
    if "distribution" in results:
        lines += ["", *distribution_section(results["distribution"], targets)]
    if "link" in results:
        lines += ["", *link_section(results["link"], targets, TELEMETRY_PNG in plots)]
    if "process" in results:
        lines += ["", *process_section(results["process"], targets)]
    if "daemon" in results:
        lines += ["", *daemon_section(results["daemon"], targets, LATENCY_PNG in plots)]
    return "\n".join(lines) + "\n"


def plot(results: Results, out: Path) -> list[str]:
    """Draw the plots into ``out``; the names of the files drawn, none without matplotlib.

    ``latency.png``: request latency (p50, p99) against battery count, the daemon beside the
    bare fan-out, one panel per version. ``telemetry_cpu.png``: CPU against stream count, the
    link beside the bare consumer (the band: the single windows), one panel per version.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    except ImportError:
        return []
    drawn = []
    if "daemon" in results and results["daemon"]["rows"]:
        rows = results["daemon"]["rows"]
        apis = list(dict.fromkeys(r["api"] for r in rows))
        figure = Figure(figsize=(5.5 * len(apis), 4.5), layout="constrained")
        axes = figure.subplots(1, len(apis), sharey=True, squeeze=False)[0]
        for ax, api in zip(axes, apis, strict=True):
            mine = sorted((r for r in rows if r["api"] == api), key=lambda r: r["batteries"])
            x = [r["batteries"] for r in mine]
            series = (
                ("p50", "tab:blue", [r["daemon_p50"] for r in mine], [r["bare_p50"] for r in mine]),
                ("p99", "tab:red", [r["daemon_p99"] for r in mine], [r["bare_p99"] for r in mine]),
            )
            for label, colour, daemon_ms, bare_ms in series:
                ax.plot(x, daemon_ms, color=colour, marker="o", label=f"daemon {label}")
                ax.plot(
                    x,
                    bare_ms,
                    color=colour,
                    marker="s",
                    linestyle="--",
                    label=f"bare fan-out {label}",
                )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(x, [str(v) for v in x])
            ax.xaxis.set_minor_locator(NullLocator())
            # 1, 2, 5, 10, 20, ... ms, written out: powers of ten alone say too little.
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_title(f"{api}: set_power, request → reply")
            ax.set_xlabel("batteries (one command each)")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend()
        axes[0].set_ylabel("latency (ms, log scale)")
        figure.savefig(out / LATENCY_PNG, dpi=110)
        drawn.append(LATENCY_PNG)
    if "link" in results and results["link"]["rows"]:
        link_rows = results["link"]["rows"]
        apis = list(dict.fromkeys(r["api"] for r in link_rows))
        figure = Figure(figsize=(5.5 * len(apis), 4.5), layout="constrained")
        axes = figure.subplots(1, len(apis), sharey=True, squeeze=False)[0]
        top = max(max(r["link_cpu_max"], r["bare_cpu_max"]) for r in link_rows) * 100
        if max(r["streams"] for r in link_rows) >= TARGET_STREAMS:
            top = max(top, results["targets"]["link_cpu"] * 100)
        for ax, api in zip(axes, apis, strict=True):
            lr = sorted((r for r in link_rows if r["api"] == api), key=lambda r: r["streams"])
            x = [r["streams"] for r in lr]
            consumers = (
                (
                    "daemon's link",
                    "tab:blue",
                    "-",
                    [(r["link_cpu"], r["link_cpu_min"], r["link_cpu_max"]) for r in lr],
                ),
                (
                    "bare consumer",
                    "tab:gray",
                    "--",
                    [(r["bare_cpu"], r["bare_cpu_min"], r["bare_cpu_max"]) for r in lr],
                ),
            )
            for label, colour, style, shares in consumers:
                ax.plot(
                    x,
                    [share * 100 for share, _, _ in shares],
                    color=colour,
                    marker="o",
                    linestyle=style,
                    label=label,
                )
                ax.fill_between(
                    x,
                    [low * 100 for _, low, _ in shares],
                    [high * 100 for _, _, high in shares],
                    color=colour,
                    alpha=0.2,
                )
            for r in lr:
                ax.annotate(
                    f"{r['ratio']:.2f}× bare",
                    (r["streams"], r["link_cpu"] * 100),
                    textcoords="offset points",
                    xytext=(0, 8),
                    ha="center",
                    fontsize=9,
                )
            target = results["targets"]["link_cpu"] * 100
            if max(x) >= TARGET_STREAMS:
                # The target holds at 2,000 streams: a mark there, not a line across.
                ax.errorbar(
                    [TARGET_STREAMS],
                    [target],
                    xerr=[[TARGET_STREAMS * 0.06]],
                    color="tab:red",
                    marker="v",
                    linestyle="none",
                    label=f"target: < {target:g} % at {TARGET_STREAMS:,} streams",
                )
            ax.set_xlim(0, max(x) * 1.1)
            ax.set_ylim(0, top * 1.2)
            ax.set_title(f"{api}: telemetry at {results['link']['hz']:g} Hz")
            ax.set_xlabel("streams (2 per battery)")
            ax.grid(True, alpha=0.3)
            ax.legend(loc="upper left", title="shaded: the range over windows")
        axes[0].set_ylabel("CPU (% of one core)")
        figure.savefig(out / TELEMETRY_PNG, dpi=110)
        drawn.append(TELEMETRY_PNG)
    return drawn


def write(results: Results, out: Path) -> Path:
    """Draw the plots (if matplotlib is installed) and write ``REPORT.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    report = out / "REPORT.md"
    report.write_text(render(results, plot(results, out)), encoding="utf-8")
    return report
