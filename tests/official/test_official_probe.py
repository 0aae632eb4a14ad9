"""The official client probes every component of the real-looking site for every metric it knows.

``config/sim-site.toml`` (meters in front of inverters and at the grid connection, a battery
inverter behind a precharger, a hybrid inverter, a PV inverter): each component is asked, in
one stream request, for every metric ``frequenz-client-microgrid`` offers. The API says a
component leaves out what it does not have; what it sends must be what was asked, exactly the
metrics a component of its kind has, finite, freshly sampled, and with bounds where the API
gives them (SoC, DC power, AC active and reactive power of an inverter).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from frequenz.client.common.microgrid.components import ComponentId
from frequenz.client.microgrid import MicrogridApiClient
from frequenz.client.microgrid.metrics import Metric

from distributord.sim.scenario import parse_scenario
from distributord.sim.server import Simulator
from tests.official.test_official_metrics import AC_METRICS, BATTERY_METRICS, INVERTER_METRICS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client's own

SITE_FILE = Path(__file__).resolve().parents[2] / "config" / "sim-site.toml"
SITE = parse_scenario(SITE_FILE.read_bytes(), source=str(SITE_FILE))

EXPECTED = {
    1001: BATTERY_METRICS,
    1002: BATTERY_METRICS,
    2001: INVERTER_METRICS,
    2002: INVERTER_METRICS,
    2003: INVERTER_METRICS,
    1: AC_METRICS,  # the grid connection point
    2: AC_METRICS,  # the site meter
    92001: AC_METRICS,  # the inverters' own meters
    92002: AC_METRICS,
    92003: AC_METRICS,
    12001: AC_METRICS,  # 2001's precharger
}
"""What each component of the site streams, by what it is."""

WITH_BOUNDS = {
    Metric.BATTERY_SOC_PCT,
    Metric.DC_POWER,
}
INVERTER_BOUNDS = {Metric.AC_POWER_ACTIVE, Metric.AC_POWER_REACTIVE}


@pytest.fixture(scope="module")
def probed() -> Iterator[tuple[list[int], dict[int, Any]]]:
    """Every listed component id, and each one's first message for every metric."""
    with Simulator(SITE, telemetry_hz=20.0, apis=("v1alpha18",)) as sim:

        async def main() -> tuple[list[int], dict[int, Any]]:
            async with MicrogridApiClient(f"grpc://{sim.address}") as client:
                listed = sorted(int(c.id) for c in await client.list_components())

                async def first(component: int) -> Any:
                    stream = client.receive_component_data_samples_stream(
                        ComponentId(component), list(Metric)
                    )
                    return await stream.receive()

                messages = await asyncio.wait_for(
                    asyncio.gather(*(first(c) for c in listed)), timeout=20.0
                )
                return listed, dict(zip(listed, messages, strict=True))

        yield asyncio.run(main())


def test_every_component_of_the_site_is_probed(probed: tuple[list[int], dict[int, Any]]) -> None:
    listed, _ = probed
    assert listed == sorted(EXPECTED)


@pytest.mark.parametrize("component", sorted(EXPECTED))
def test_a_component_sends_what_its_kind_has_and_nothing_else(
    probed: tuple[list[int], dict[int, Any]], component: int
) -> None:
    _, messages = probed
    message = messages[component]
    assert int(message.component_id) == component
    samples = {s.metric: s for s in message.metric_samples}
    assert sorted(samples, key=str) == sorted(EXPECTED[component], key=str)
    now = time.time()
    for metric, sample in samples.items():
        assert math.isfinite(sample.value), metric
        assert abs(sample.sampled_at.timestamp() - now) < 10.0, metric
        wants_bounds = metric in WITH_BOUNDS or (
            metric in INVERTER_BOUNDS and component in (2001, 2002, 2003)
        )
        assert bool(sample.bounds) == wants_bounds, metric
        for bounds in sample.bounds:
            assert bounds.lower is None or bounds.upper is None or bounds.lower <= bounds.upper


def test_the_meters_add_up(probed: tuple[list[int], dict[int, Any]]) -> None:
    _, messages = probed

    def active(component: int) -> float:
        (sample,) = [
            s for s in messages[component].metric_samples if s.metric is Metric.AC_POWER_ACTIVE
        ]
        return float(sample.value)

    # Nothing commanded: the PV produces (negative power), 4 kW and the hybrid's 1.5 kW.
    assert (active(2001), active(2002), active(2003)) == (0.0, -1_500.0, -4_000.0)
    for inverter in (2001, 2002, 2003):
        assert active(90_000 + inverter) == active(inverter)  # its own meter
    assert active(12001) == active(2001)  # the precharger carries what its inverter passes
    assert active(2) == active(1) == -5_500.0  # the site meter and the grid: the sum
