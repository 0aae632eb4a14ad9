"""The official ``frequenz-client-microgrid`` (0.18, v1alpha18) judges the simulator.

A client we did not write reads the simulator over loopback: what it lists, streams and sets
must match the scenario. It runs on asyncio (its own stack), so each test is a plain function
that runs one ``asyncio.run``; the simulator serves only v1alpha18, as a current site does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from frequenz.client.common.microgrid.components import ComponentId
from frequenz.client.microgrid import ApiClientError, MicrogridApiClient
from frequenz.client.microgrid.component import (
    Battery,
    BatteryInverter,
    ComponentConnection,
    GridConnectionPoint,
    HybridInverter,
    Meter,
    Precharger,
    Relay,
)
from frequenz.client.microgrid.metrics import Metric

from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario, named_scenario
from distributord.sim.server import Simulator
from tests.official.support import with_client

# The official client 0.18 uses names its own dependencies deprecate (ComponentId, the GRID
# category, its channel type); those warnings are theirs, not ours, and only in this module.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SCENARIO = Scenario(
    batteries=(
        BatterySpec(id=1001, soc_pct=30.0, capacity_wh=10_000.0, power_limit_w=5_000.0),
        BatterySpec(id=1002, soc_pct=70.0, capacity_wh=20_000.0, power_limit_w=4_000.0),
        BatterySpec(id=1003, soc_pct=50.0),
    ),
    inverters=(
        InverterSpec(id=2001, batteries=(1001,)),
        # A precharger and a breaker between the inverter and its battery: what real sites do.
        InverterSpec(id=2002, batteries=(1002,), between=("precharger", "breaker")),
        InverterSpec(id=2003, batteries=(1003,), type="hybrid", power_limit_w=3_000.0),
    ),
)
PRECHARGER_ID, BREAKER_ID = 12002, 22002  # the scenario's generated ids (sim/scenario.py)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SCENARIO, telemetry_hz=20.0, apis=("v1alpha18",)) as simulator:
        yield simulator


def test_it_lists_every_component_as_what_it_is(sim: Simulator) -> None:
    async def use(client: MicrogridApiClient) -> list[Any]:
        return list(await client.list_components())

    components = {int(c.id): c for c in with_client(sim, use)}
    kinds = {cid: type(c) for cid, c in components.items()}
    assert isinstance(components[1], GridConnectionPoint)
    assert isinstance(components[2], Meter)
    assert all(isinstance(components[b], Battery) for b in (1001, 1002, 1003))
    assert isinstance(components[2001], BatteryInverter), kinds
    assert isinstance(components[2002], BatteryInverter), kinds
    assert isinstance(components[2003], HybridInverter), kinds
    assert isinstance(components[PRECHARGER_ID], Precharger), kinds
    assert isinstance(components[BREAKER_ID], Relay), kinds  # v1alpha18's BREAKER, by its name
    assert set(components) == {1, 2, 1001, 1002, 1003, 2001, 2002, 2003, PRECHARGER_ID, BREAKER_ID}


def test_its_filters_are_applied(sim: Simulator) -> None:
    async def use(client: MicrogridApiClient) -> tuple[list[Any], list[ComponentConnection]]:
        from frequenz.client.microgrid.component import ComponentCategory

        inverters = list(await client.list_components(categories=[ComponentCategory.INVERTER]))
        edges = list(await client.list_connections(sources=[ComponentId(PRECHARGER_ID)]))
        return inverters, edges

    inverters, edges = with_client(sim, use)
    assert sorted(int(c.id) for c in inverters) == [2001, 2002, 2003]
    assert [(int(e.source), int(e.destination)) for e in edges] == [(PRECHARGER_ID, BREAKER_ID)]


def test_its_connections_are_the_scenarios(sim: Simulator) -> None:
    async def use(client: MicrogridApiClient) -> list[ComponentConnection]:
        return list(await client.list_connections())

    edges = {(int(e.source), int(e.destination)) for e in with_client(sim, use)}
    assert edges == {
        (1, 2),
        (2, 2001),
        (2, 2002),
        (2, 2003),
        (2001, 1001),
        (2002, PRECHARGER_ID),
        (PRECHARGER_ID, BREAKER_ID),
        (BREAKER_ID, 1002),
        (2003, 1003),
    }


def values(samples: Any) -> dict[Metric | int, tuple[float | None, list[Any]]]:
    """Metric → (value, bounds) of one ``ComponentDataSamples``."""
    return {s.metric: (s.value, s.bounds) for s in samples.metric_samples}


@pytest.mark.parametrize(
    ("battery", "soc", "capacity", "limit"),
    [(1001, 30.0, 10_000.0, 5_000.0), (1002, 70.0, 20_000.0, 4_000.0)],
)
def test_battery_telemetry_matches_the_scenario(
    sim: Simulator, battery: int, soc: float, capacity: float, limit: float
) -> None:
    metrics = [Metric.BATTERY_SOC_PCT, Metric.BATTERY_CAPACITY, Metric.DC_POWER]

    async def use(client: MicrogridApiClient) -> Any:
        receiver = client.receive_component_data_samples_stream(ComponentId(battery), metrics)
        return await receiver.receive()

    samples = with_client(sim, use)
    assert int(samples.component_id) == battery
    read = values(samples)
    assert set(read) == set(metrics)  # the metric filter: what was asked, nothing else
    soc_value, soc_bounds = read[Metric.BATTERY_SOC_PCT]
    assert soc_value == pytest.approx(sim.soc(battery), abs=0.5)
    assert soc_value == pytest.approx(soc, abs=1.0)
    assert (soc_bounds[0].lower, soc_bounds[0].upper) == (10.0, 90.0)
    assert read[Metric.BATTERY_CAPACITY][0] == capacity
    _, power_bounds = read[Metric.DC_POWER]
    assert [(b.lower, b.upper) for b in power_bounds] == [(-limit, limit)]


def test_inverter_telemetry_matches_the_scenario(sim: Simulator) -> None:
    async def use(client: MicrogridApiClient) -> Any:
        receiver = client.receive_component_data_samples_stream(
            ComponentId(2003), [Metric.AC_POWER_ACTIVE]
        )
        return await receiver.receive()

    samples = with_client(sim, use)
    power, bounds = values(samples)[Metric.AC_POWER_ACTIVE]
    assert isinstance(power, float)
    assert math.isfinite(power)
    assert [(b.lower, b.upper) for b in bounds] == [(-3_000.0, 3_000.0)]


def test_setting_power_within_bounds_is_applied(sim: Simulator) -> None:
    async def use(client: MicrogridApiClient) -> datetime | None:
        return await client.set_component_power_active(
            ComponentId(2002), 1500.0, request_lifetime=timedelta(seconds=30)
        )

    until = with_client(sim, use)
    assert until is not None
    assert until == pytest.approx(
        datetime.now(UTC) + timedelta(seconds=30), abs=timedelta(seconds=5)
    )
    assert sim.setpoint(2002) == 1500.0  # behind the precharger and the breaker
    assert sim.commands()[-1].lifetime_s == 30


def test_setting_power_out_of_bounds_is_refused_and_not_applied(sim: Simulator) -> None:
    before = sim.setpoint(2001)

    async def use(client: MicrogridApiClient) -> datetime | None:
        return await client.set_component_power_active(ComponentId(2001), 9_000.0)

    # The official client reads only the first reply: REJECTED carries no valid_until.
    assert with_client(sim, use) is None
    assert sim.setpoint(2001) == before
    assert sim.commands()[-1].power_w == 9_000.0


def test_a_version_the_simulator_does_not_serve_is_unimplemented() -> None:
    with Simulator(SCENARIO, apis=("v1",)) as only_v1:

        async def use(client: MicrogridApiClient) -> list[Any]:
            return list(await client.list_components())

        with pytest.raises(ApiClientError, match=r"(?i)unimplemented|not implemented"):
            with_client(only_v1, use)


def test_it_reads_an_n_to_m_group_as_the_scenario_says() -> None:
    # Two batteries on three inverters (2002 feeds both): the client lists each edge.
    with Simulator(named_scenario("two-on-three"), apis=("v1alpha18",)) as group_sim:

        async def use(client: MicrogridApiClient) -> tuple[list[Any], list[ComponentConnection]]:
            return list(await client.list_components()), list(await client.list_connections())

        components, connections = with_client(group_sim, use)
    found = {int(c.id): c for c in components}
    assert {cid for cid, c in found.items() if isinstance(c, Battery)} == {1001, 1002, 1003}
    assert {cid for cid, c in found.items() if isinstance(c, BatteryInverter)} == {
        2001,
        2002,
        2003,
        2004,
    }
    edges = {(int(e.source), int(e.destination)) for e in connections}
    assert edges == {
        (1, 2),
        *((2, inverter) for inverter in (2001, 2002, 2003, 2004)),
        (2001, 1001),
        (2002, 1001),
        (2002, 1002),
        (2003, 1002),
        (2004, 1003),
    }
