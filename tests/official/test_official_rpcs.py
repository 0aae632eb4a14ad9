"""The official client judges the simulator's other RPCs: the site, sensors, added bounds.

As in ``test_official_client.py``: the official ``frequenz-client-microgrid`` (0.18, v1alpha18)
reads a simulator that serves v1alpha18 only, over loopback, each test in one ``asyncio.run``.
What it reads must be exactly what the scenario says, and what it is refused must come with the
status code the proto documents. Nothing sleeps: the tests wait on :meth:`Simulator.wait_for`.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any

import pytest
from frequenz.api.common.v1alpha8.metrics import bounds_pb2, metrics_pb2
from frequenz.api.microgrid.v1alpha18 import microgrid_pb2
from frequenz.channels import ReceiverStoppedError
from frequenz.client.common.microgrid import EnterpriseId, MicrogridId
from frequenz.client.common.microgrid.components import ComponentId
from frequenz.client.common.microgrid.sensors import SensorId
from frequenz.client.microgrid import (
    DeliveryArea,
    EnergyMarketCodeType,
    EntityNotFound,
    InvalidArgument,
    Location,
    MicrogridApiClient,
    MicrogridInfo,
    MicrogridStatus,
    Validity,
)
from frequenz.client.microgrid.metrics import Bounds, Metric

from distributord.sim.scenario import BatterySpec, InverterSpec, MicrogridSpec, Scenario
from distributord.sim.server import Simulator
from tests.official.support import TIMEOUT, with_client

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client's, not ours

SITE = MicrogridSpec(
    id=4711,
    enterprise_id=815,
    name="Hafen Nord",
    latitude=53.5,  # exact in 32 bits, the wire's float: read back exactly
    longitude=9.75,
    country_code="DE",
    delivery_area_code="10YDE-EON------1",
    delivery_area_code_type="europe_eic",
    status="inactive",
    created_at=datetime.datetime(2023, 6, 1, 6, 30, 15, 250_000, tzinfo=UTC),
)

SCENARIO = Scenario(
    batteries=(BatterySpec(id=1001, soc_pct=50.0), BatterySpec(id=1002, soc_pct=50.0)),
    inverters=(
        InverterSpec(id=2001, batteries=(1001,)),
        InverterSpec(id=2002, batteries=(1002,), exclusion_w=500.0),
    ),
    microgrid=SITE,
)

LIFETIME_SCALE = 0.05
"""Lifetimes run 20 times faster: bounds added for a minute hold 3 s, a 60 s setpoint 3 s."""


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(
        SCENARIO, telemetry_hz=20.0, lifetime_scale=LIFETIME_SCALE, apis=("v1alpha18",)
    ) as simulator:
        yield simulator


async def microgrid_info(client: MicrogridApiClient) -> MicrogridInfo:
    return await client.get_microgrid_info()


# --- GetMicrogrid -----------------------------------------------------------------------------


def test_it_reads_the_microgrid_exactly_as_the_scenario_says(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="frequenz.client.microgrid"):
        info = with_client(sim, microgrid_info)
    assert info == MicrogridInfo(
        id=MicrogridId(4711),
        enterprise_id=EnterpriseId(815),
        name="Hafen Nord",
        delivery_area=DeliveryArea(
            code="10YDE-EON------1", code_type=EnergyMarketCodeType.EUROPE_EIC
        ),
        location=Location(latitude=53.5, longitude=9.75, country_code="DE"),
        status=MicrogridStatus.INACTIVE,
        create_timestamp=datetime.datetime(2023, 6, 1, 6, 30, 15, 250_000, tzinfo=UTC),
    )
    # The client found nothing missing or out of range in the message (it logs every issue).
    assert not [r for r in caplog.records if "issues" in r.getMessage()]


def test_a_scenario_without_a_microgrid_table_answers_with_the_defaults() -> None:
    plain = Scenario(batteries=SCENARIO.batteries, inverters=SCENARIO.inverters)
    with Simulator(plain, apis=("v1alpha18",)) as default_sim:
        info = with_client(default_sim, microgrid_info)
    assert (info.id, info.enterprise_id, info.name) == (
        MicrogridId(1),
        EnterpriseId(1),
        "distributord sim",
    )
    assert info.location == Location(latitude=52.5, longitude=13.5, country_code="DE")
    assert info.delivery_area == DeliveryArea(
        code="10Y1001A1001A82H", code_type=EnergyMarketCodeType.EUROPE_EIC
    )
    assert info.status is MicrogridStatus.ACTIVE
    assert info.is_active
    assert info.create_timestamp == datetime.datetime(2024, 1, 1, tzinfo=UTC)


def test_an_island_has_no_delivery_area() -> None:
    island = Scenario(
        batteries=SCENARIO.batteries,
        inverters=SCENARIO.inverters,
        microgrid=MicrogridSpec(delivery_area_code="", delivery_area_code_type="us_nerc"),
    )
    with Simulator(island, apis=("v1alpha18",)) as island_sim:
        assert with_client(island_sim, microgrid_info).delivery_area is None


# --- sensors ------------------------------------------------------------------------------------


def test_it_lists_no_sensors_with_or_without_a_filter(sim: Simulator) -> None:
    async def use(client: MicrogridApiClient) -> tuple[list[Any], list[Any]]:
        every = list(await client.list_sensors())
        chosen = list(await client.list_sensors(sensors=[SensorId(1001), SensorId(7)]))
        return every, chosen

    assert with_client(sim, use) == ([], [])


def test_a_sensor_stream_of_an_id_that_is_no_sensor_ends_not_found(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    async def use(client: MicrogridApiClient) -> None:
        receiver = client.receive_sensor_telemetry_stream(SensorId(7), [Metric.AC_FREQUENCY])
        with pytest.raises(ReceiverStoppedError):
            await receiver.receive()

    with caplog.at_level(logging.ERROR, logger="frequenz.client.base.streaming"):
        with_client(sim, use, retries=0)  # no retries: the stream's end is the client's end
    [given_up] = [r.getMessage() for r in caplog.records if "giving up" in r.getMessage()]
    assert "NOT_FOUND" in given_up
    assert "no sensor 7: the simulated microgrid has none" in given_up


# --- added bounds -------------------------------------------------------------------------------


async def read_bounds(client: MicrogridApiClient, inverter: int) -> list[tuple[Any, Any]]:
    """The AC active power bounds of the next message on an inverter's stream."""
    receiver = client.receive_component_data_samples_stream(
        ComponentId(inverter), [Metric.AC_POWER_ACTIVE]
    )
    samples = await receiver.receive()
    [sample] = samples.metric_samples
    return [(b.lower, b.upper) for b in sample.bounds]


def test_added_bounds_show_in_telemetry_refuse_commands_and_expire(sim: Simulator) -> None:
    async def add(client: MicrogridApiClient) -> Any:
        until = await client.add_component_bounds(
            ComponentId(2001),
            Metric.AC_POWER_ACTIVE,
            [Bounds(lower=-1000.0, upper=1000.0), Bounds(lower=800.0, upper=1500.0)],
            validity=Validity.ONE_MINUTE,
        )
        bounds = await read_bounds(client, 2001)
        refused = await client.set_component_power_active(ComponentId(2001), 2000.0)
        accepted = await client.set_component_power_active(ComponentId(2001), 1500.0)
        return until, bounds, refused, accepted

    until, bounds, refused, accepted = with_client(sim, add)
    # valid_until is unscaled, as a real site's: a minute from now.
    assert until == pytest.approx(
        datetime.datetime.now(UTC) + timedelta(seconds=60), abs=timedelta(seconds=5)
    )
    assert bounds == [(-1000.0, 1500.0)]  # the request's two ranges, merged
    assert refused is None  # REJECTED: the official client reads no valid_until from it
    assert accepted is not None
    assert [(c.power_w, c.outcome) for c in sim.commands()[-2:]] == [
        (2000.0, "OUT_OF_RANGE"),
        (1500.0, "ok"),
    ]
    # They expire on the simulator's clock (a minute × 0.05), and wake waiters when they do.
    assert sim.wait_for(lambda s: s.added_bounds(2001) == 0, TIMEOUT)
    assert sim.allowed_ranges(2001) == ((-5000.0, 5000.0),)

    async def after(client: MicrogridApiClient) -> Any:
        return await read_bounds(client, 2001), await client.set_component_power_active(
            ComponentId(2001), 2000.0
        )

    bounds, accepted = with_client(sim, after)
    assert bounds == [(-5000.0, 5000.0)]
    assert accepted is not None
    assert sim.commands()[-1].outcome == "ok"


def test_bounds_cleared_by_their_token_stop_governing_at_once(sim: Simulator) -> None:
    ac_power = metrics_pb2.Metric.Value("METRIC_AC_POWER_ACTIVE")

    async def use(client: MicrogridApiClient) -> tuple[Any, Any, list[tuple[Any, Any]]]:
        await client.stub.AugmentElectricalComponentBounds(
            microgrid_pb2.AugmentElectricalComponentBoundsRequest(
                electrical_component_id=2002,
                target_metric=ac_power,
                bounds=[bounds_pb2.Bounds(lower=-700.0, upper=700.0)],
                request_lifetime=900,
                bounds_token="distributord-test",
            )
        )
        refused = await client.set_component_power_active(ComponentId(2002), -800.0)
        await client.stub.ClearElectricalComponentBounds(
            microgrid_pb2.ClearElectricalComponentBoundsRequest(
                electrical_component_id=2002,
                target_metric=ac_power,
                bounds_token="distributord-test",
            )
        )
        accepted = await client.set_component_power_active(ComponentId(2002), -800.0)
        return refused, accepted, await read_bounds(client, 2002)

    refused, accepted, bounds = with_client(sim, use)
    assert refused is None
    assert accepted is not None
    assert bounds == [(-5000.0, -500.0), (500.0, 5000.0)]  # its own, exclusion zone and all


@pytest.mark.parametrize(
    ("component", "metric", "error", "details"),
    [
        (4242, Metric.AC_POWER_ACTIVE, EntityNotFound, "no component 4242"),
        (
            2001,
            Metric.AC_FREQUENCY,
            InvalidArgument,
            "bounds of METRIC_AC_FREQUENCY of inverter 2001 are not simulated",
        ),
        (1001, Metric.DC_POWER, InvalidArgument, "bounds of DC power of component 1001"),
    ],
)
def test_bounds_it_cannot_add_are_refused_with_the_reason(
    sim: Simulator, component: int, metric: Metric, error: type[Exception], details: str
) -> None:
    async def use(client: MicrogridApiClient) -> Any:
        return await client.add_component_bounds(
            ComponentId(component), metric, [Bounds(lower=-1.0, upper=1.0)]
        )

    with pytest.raises(error, match=details):
        with_client(sim, use)
    assert sim.allowed_ranges(2002) == ((-5000.0, -500.0), (500.0, 5000.0))
