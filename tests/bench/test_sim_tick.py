"""``bench.sim_tick`` runs on a small fleet in every version, with and without a filter."""

from __future__ import annotations

import pytest

from bench.sim_tick import FILTERS, main, serving, tick_cpu_s
from distributord.sim.server import API_VERSIONS


@pytest.mark.parametrize("api", API_VERSIONS)
def test_the_daemons_filter_is_the_metrics_it_reads(api: str) -> None:
    _, daemon = serving(api)
    assert daemon == frozenset(
        {
            "BATTERY_SOC_PCT",
            "BATTERY_CAPACITY",
            "DC_POWER",
            "AC_ACTIVE_POWER",
            "AC_REACTIVE_POWER",  # their bounds (issue 24)
            "AC_APPARENT_POWER",
        }
    )


@pytest.mark.parametrize("api", API_VERSIONS)
@pytest.mark.parametrize("which", FILTERS)
def test_a_tick_is_measured(api: str, which: str) -> None:
    whole, part = tick_cpu_s(api, 3, which, 2)
    assert 0.0 <= part <= whole


def test_it_prints_a_line_per_version_and_filter(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--batteries", "2", "--ticks", "1", "--api", "v1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["v1", "daemon"], ["v1", "every"]]
