"""The benchmark report, drawn from made-up figures: no benchmark runs here."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from bench import report
from bench.report import Results


def results() -> Results:
    """A run's figures, shaped as ``python -m bench`` writes them."""
    return {
        "machine": "Python 3.11.7 on Linux x86_64, 2 CPUs (Test CPU)",
        "cores": 2,
        "date": "2026-11-27 12:00 UTC",
        "command": "python -m bench",
        "commit": "abc1234",
        "quick": False,
        "targets": {
            "distribution_us": {"100": 150.0, "1000": 1000.0},
            "reference_us": {"100": 290.0, "1000": 2500.0},
            "link_ratio": 2.0,
            "link_cpu": 0.25,
            "link_rss_mb": 300.0,
            "process_ratio": 1.5,
            "daemon_p50_ratio": 1.3,
            "daemon_p99_ratio": 2.0,
            "daemon_overhead_ms": 5.0,
        },
        "load": [
            {"benchmark": "distribution", "before": [1.5, 1.2, 1.1], "after": [1.6, 1.2, 1.1],
             "seconds": 60.0},
        ],
        "distribution": {
            "rounds": 5,
            "pair_us": 4.5,
            "rows": [
                {"pairs": 10, "median_us": 16.6, "p90_us": 18.9, "round_min_us": 16.0,
                 "round_max_us": 17.2},
                {"pairs": 100, "median_us": 78.0, "p90_us": 112.0, "round_min_us": 75.0,
                 "round_max_us": 81.0},
                {"pairs": 1000, "median_us": 1016.0, "p90_us": 1200.0, "round_min_us": 990.0,
                 "round_max_us": 1100.0},
            ],
            "fixed_power": [
                {"pairs": 100, "odd": False, "requests": 40, "best": 38, "short_max_w": 1.0,
                 "short_p50_w": 0.0, "slowest_ms": 2.37, "median_ms": 0.89},
                {"pairs": 100, "odd": True, "requests": 40, "best": 40, "short_max_w": 0.0,
                 "short_p50_w": 0.0, "slowest_ms": 2.4, "median_ms": 2.1},
            ],
        },
        "link": {
            "hz": 1.0,
            "seconds": 20.0,
            "rounds": 2,
            "rows": [link_row(api, batteries) for api in ("v1alpha18", "v1")
                     for batteries in (100, 1000)],
        },
        "process": {
            "hz": 1.0,
            "seconds": 20.0,
            "rounds": 2,
            "rows": [process_row("v1alpha18", 1.42), process_row("v1", 1.61)],
        },
        "daemon": {
            "hz": 1.0,
            "rows": [
                daemon_row("v1alpha18", 10, 9.4, 6.6, 14.7, 11.5),
                daemon_row("v1alpha18", 100, 71.3, 61.9, 209.1, 148.2),
                daemon_row("v1", 100, 44.8, 38.9, 124.5, 108.4),
                daemon_row("v1", 500, 400.0, 188.5, 686.8, 535.6),
            ],
        },
    }  # fmt: skip


def link_row(api: str, batteries: int) -> report.LinkRow:
    scale = batteries / 1000
    return {
        "api": api,
        "batteries": batteries,
        "streams": 2 * batteries,
        "bare_cpu": 0.14 * scale,
        "bare_cpu_min": 0.13 * scale,
        "bare_cpu_max": 0.15 * scale,
        "link_cpu": 0.175 * scale,
        "link_cpu_min": 0.16 * scale,
        "link_cpu_max": 0.19 * scale,
        "ratio": 1.25,
        "link_received": 80_000 * scale,
        "bare_received": 80_000 * scale,
        "sent_per_consumer": 80_000 * scale,
        "link_gc": 0.001,
        "sim_cpu": 0.3,
        "machine_busy": 0.5,
        "rss_mb": 160.0,
        "threads": 11,
        "gaps": 0,
        "delay_p50_first_ms": 95.0,
        "delay_p50_last_ms": 120.0,
    }


def process_row(api: str, ratio: float) -> report.ProcessRow:
    return {
        "api": api,
        "batteries": 1000,
        "streams": 2000,
        "bare_cpu": 0.09,
        "bare_cpu_min": 0.085,
        "bare_cpu_max": 0.093,
        "daemon_cpu": 0.09 * ratio,
        "daemon_cpu_min": 0.12,
        "daemon_cpu_max": 0.15,
        "ratio": ratio,
        "working_min": 1000,
        "sim_cpu": 0.15,
        "machine_busy": 0.4,
        "rss_mb": 145.0,
        "threads": 10,
    }


def daemon_row(
    api: str, batteries: int, p50: float, bare50: float, p99: float, bare99: float
) -> report.DaemonRow:
    return {
        "api": api,
        "batteries": batteries,
        "requests": 300,
        "daemon_p50": p50,
        "daemon_p99": p99,
        "bare_p50": bare50,
        "bare_p99": bare99,
        "overhead_p50": 2.4,
        "overhead_p99": 5.5,
        "failed": 0,
    }


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """Each section's first table: ``## Name`` → its rows of cells, the header row first."""
    found: dict[str, list[list[str]]] = {}
    for section in markdown.split("\n## ")[1:]:
        name, _, body = section.partition("\n")
        rows: list[list[str]] = []
        for line in body.splitlines():
            if line.startswith("|"):
                if not line.startswith("|--"):
                    rows.append([cell.strip() for cell in line.strip("|").split("|")])
            elif rows:
                break  # the end of the first table
        found[name] = rows
    return found


def column(table: list[list[str]], name: str) -> list[str]:
    index = table[0].index(name)
    return [row[index] for row in table[1:]]


def test_the_report_says_where_when_and_how() -> None:
    text = report.render(results())
    assert "- **Machine:** Python 3.11.7 on Linux x86_64, 2 CPUs (Test CPU)" in text
    assert "- **Date:** 2026-11-27 12:00 UTC" in text
    assert "- **Command:** `python -m bench`" in text
    assert "distribution 1.50 → 1.60 (1.0 min)" in text
    # Each benchmark says beside what it measured.
    assert "reference design" in text
    assert "*bare consumer*" in text
    assert "*bare fan-out*" in text
    assert "smoke test" not in text
    assert "The machine was shared" not in text


def test_a_run_before_the_daemon_process_was_measured_is_drawn_as_before() -> None:
    old = results()
    del old["process"], old["targets"]["process_ratio"]
    text = report.render(old)
    assert "## Microgrid link (telemetry)" in text
    assert "daemon process" not in text


def test_a_busy_machine_is_said_to_be_shared() -> None:
    busy = results()
    busy["load"][0]["after"] = [3.2, 2.0, 1.5]
    text = report.render(busy)
    assert "**The machine was shared:** its load average reached 3.2 on 2 cores" in text
    assert text.index("The machine was shared") < text.index("## Headline")


def test_the_headline_judges_each_figure_with_a_target() -> None:
    headline = tables(report.render(results()))["Headline"]
    assert headline[0] == ["benchmark", "figure", "measured", "target", "beside"]
    rows = {(row[0], row[1]): row[2:] for row in headline[1:]}
    assert rows["`distribute()`, 100 pairs", "median"] == [
        "78.0 µs",
        "< 150 µs ✓",
        "reference design 290 µs",
    ]
    assert rows["`distribute()`, 1000 pairs", "median"][:2] == ["1,016 µs", "< 1,000 µs ✗"]
    # The link at its largest fleet only, per version.
    assert [key for key in rows if key[0].startswith("link")] == [
        ("link, v1alpha18, 2,000 streams", "CPU, link / bare"),
        ("link, v1, 2,000 streams", "CPU, link / bare"),
    ]
    assert rows["link, v1, 2,000 streams", "CPU, link / bare"][:2] == ["1.25×", "≤ 2× ✓"]
    # The whole daemon process, per version, against its own target.
    assert rows["daemon process, v1alpha18, 2,000 streams", "CPU, daemon / bare"] == [
        "1.42×",
        "≤ 1.5× ✓",
        "bare consumer 9.0%, daemon 12.8% of a core",
    ]
    assert rows["daemon process, v1, 2,000 streams", "CPU, daemon / bare"][:2] == [
        "1.61×",
        "≤ 1.5× ✗",
    ]
    # The daemon from 100 batteries up; the overhead at 100.
    assert not any("10 batteries" in key[0] for key in rows)
    assert rows["daemon, v1alpha18, 100 batteries", "p50, daemon / bare"][:2] == [
        "1.15×",
        "≤ 1.3× ✓",
    ]
    assert rows["daemon, v1, 500 batteries", "p50, daemon / bare"][:2] == ["2.12×", "≤ 1.3× ✗"]
    assert rows["daemon, v1, 100 batteries", "overhead p50"][:2] == ["2.4 ms", "< 5 ms ✓"]
    assert ("daemon, v1, 500 batteries", "overhead p50") not in rows


def test_the_tables_hold_every_measured_row() -> None:
    found = tables(report.render(results()))
    distribution = found["Distribution"]
    assert column(distribution, "pairs") == ["10", "100", "1000"]
    assert column(distribution, "median") == ["16.6 µs", "78.0 µs", "1,016 µs"]
    assert column(distribution, "target") == ["", "< 150 µs ✓", "< 1,000 µs ✗"]
    assert column(distribution, "reference design") == ["", "290 µs", "2,500 µs"]

    link = found["Microgrid link (telemetry)"]
    assert column(link, "version") == ["v1alpha18", "v1alpha18", "v1", "v1"]
    assert column(link, "streams") == ["200", "2,000", "200", "2,000"]
    assert column(link, "bare CPU")[1] == "13.0%–15.0%"
    assert column(link, "link / bare") == ["1.25×"] * 4

    assert "Measured apart from the rest" not in report.render(results())
    apart = results()
    apart["process"]["measured"] = "2026-12-05 17:00 UTC, commit abc1234"
    text = report.render(apart)
    assert "Measured apart from the rest of this report: 2026-12-05 17:00 UTC, commit" in text
    process = found["The daemon process (telemetry)"]
    assert column(process, "version") == ["v1alpha18", "v1"]
    assert column(process, "daemon CPU") == ["12.0%–15.0%"] * 2
    assert column(process, "daemon / bare") == ["1.42× ✓", "1.61× ✗"]
    assert column(process, "working after") == ["1000 of 1000"] * 2

    daemon = found["The daemon (end to end)"]
    assert column(daemon, "batteries") == ["10", "100", "100", "500"]
    assert column(daemon, "p50 ratio") == ["1.42", "1.15 ✓", "1.15 ✓", "2.12 ✗"]
    assert column(daemon, "p99 ratio")[1] == "1.41 ✓"
    assert column(daemon, "overhead p50 / p99")[0] == "2.4 / 5.5"


def test_the_fixed_power_table_marks_odd_fleets() -> None:
    text = report.render(results())
    assert "| 100 | 38 of 40 | 1 W | 0 W | 2.37 ms | 0.89 ms |" in text
    assert "| 100 (odd) | 40 of 40 | 0 W | 0 W | 2.40 ms | 2.10 ms |" in text


def test_a_run_of_some_benchmarks_reports_those() -> None:
    partial = results()
    del partial["link"], partial["process"], partial["daemon"]
    partial["quick"] = True
    partial["distribution"]["rows"] = partial["distribution"]["rows"][:1]
    text = report.render(partial)
    assert "## Distribution" in text
    assert "## Microgrid link" not in text
    assert "## The daemon process" not in text
    assert "## The daemon" not in text
    assert "smoke test" in text
    assert "No figure of this run has a target" in text


def test_without_matplotlib_the_report_has_tables_and_says_how_to_get_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None in sys.modules makes the import fail, as if matplotlib were not installed.
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, name, None)
    assert report.plot(results(), tmp_path) == []
    written = report.write(results(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["REPORT.md"]
    text = written.read_text(encoding="utf-8")
    assert "pip install -e '.[plots]'" in text
    assert ".png" not in text
    assert "## The daemon (end to end)" in text


def test_with_matplotlib_the_report_shows_its_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    written = report.write(copy.deepcopy(results()), tmp_path)
    for name in (report.LATENCY_PNG, report.TELEMETRY_PNG):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    text = written.read_text(encoding="utf-8")
    assert f"]({report.LATENCY_PNG})" in text
    assert f"]({report.TELEMETRY_PNG})" in text
    assert "pip install -e '.[plots]'" not in text
