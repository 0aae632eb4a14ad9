"""``python -m bench``'s bookkeeping: no benchmark runs here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import link, report
from bench.__main__ import Book, process_row
from tests.bench.test_report import results


def test_a_failed_point_is_noted_and_the_figures_so_far_are_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "out" / "results.json"
    book = Book(results(), path)

    def fails() -> int:
        raise TimeoutError("the simulator did not stop\nsecond line")

    assert book.attempt("daemon, v1, 500 batteries", fails) is None
    assert book.attempt("daemon, v1, 10 batteries", lambda: 7) == 7
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["errors"] == [
        "daemon, v1, 500 batteries: TimeoutError: the simulator did not stop"
    ]
    assert "daemon, v1, 500 batteries failed" in caplog.text
    text = report.render(saved)
    assert "- daemon, v1, 500 batteries: TimeoutError: the simulator did not stop" in text


def test_the_daemon_process_row_sums_its_windows_and_keeps_the_fewest_working() -> None:
    def window(consumer: str, cpu: float, **more: float) -> link.Window:
        figures = {"start": 0.0, "wall": 20.0, "cpu": cpu, **more}
        return link.Window(consumer=consumer, figures=figures, sim_share=0.15, busy_share=0.5)

    daemon = {"rss_mb": 140.0, "threads": 10.0}
    windows = [
        window("bare", 1.6),
        window("daemon", 2.4, working=1000, **daemon),
        window("daemon", 3.0, working=999, **{**daemon, "rss_mb": 150.0}),
        window("bare", 2.0),
    ]
    row = process_row("v1", 1000, 1.0, windows, 2000)
    assert row["ratio"] == pytest.approx(5.4 / 3.6)
    assert (row["bare_cpu_min"], row["bare_cpu_max"]) == pytest.approx((0.08, 0.1))
    assert (row["daemon_cpu_min"], row["daemon_cpu_max"]) == pytest.approx((0.12, 0.15))
    assert (row["working_min"], row["rss_mb"], row["threads"]) == (999, 150.0, 10)
    assert (row["sim_cpu"], row["machine_busy"]) == pytest.approx((0.15, 0.5))
