"""``python -m bench``'s bookkeeping: no benchmark runs here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.__main__ import Book
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
