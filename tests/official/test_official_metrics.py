"""The official client reads the metrics a real site streams, and commands reactive power.

What ``frequenz-client-microgrid`` reads from the simulator (v1alpha18, as a current site
serves) must be what the world holds: the battery's temperature, DC voltage and current, the
AC side of inverters, meters and lines (frequency, phase voltages, currents, active and reactive
power in total and per phase), and the reactive setpoint it commands, with its bounds and its
lifetime. Each test is a plain function around one ``asyncio.run`` (see
``test_official_client``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from frequenz.client.common.microgrid.components import ComponentId
from frequenz.client.microgrid import MicrogridApiClient
from frequenz.client.microgrid.metrics import Metric

from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import Simulator
from distributord.sim.world import HEATING_C, battery_voltage
from tests.official.support import with_client

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client's own

SCENARIO = Scenario(
    batteries=(
        BatterySpec(id=1001, soc_pct=40.0, capacity_wh=1e9, dc_voltage_v=700.0),
        BatterySpec(id=1002, soc_pct=60.0),
    ),
    inverters=(
        InverterSpec(id=2001, batteries=(1001,), power_limit_w=4_000.0, between=("breaker",)),
        InverterSpec(
            id=2002, batteries=(1002,), type="pv", power_limit_w=5_000.0, reactive_limit_var=2_000.0
        ),
    ),
    ac_frequency_hz=60.0,
    ac_voltage_v=120.0,
    ambient_temperature_c=20.0,
)
BREAKER = 12001  # the scenario's generated id (sim/scenario.py)

PHASES = (1, 2, 3)
AC_METRICS = [
    Metric.AC_FREQUENCY,
    Metric.AC_POWER_ACTIVE,
    Metric.AC_POWER_REACTIVE,
    *(Metric[f"AC_POWER_ACTIVE_PHASE_{p}"] for p in PHASES),
    *(Metric[f"AC_POWER_REACTIVE_PHASE_{p}"] for p in PHASES),
    *(Metric[f"AC_VOLTAGE_PHASE_{p}_N"] for p in PHASES),
    *(Metric[f"AC_CURRENT_PHASE_{p}"] for p in PHASES),
]
INVERTER_METRICS = [*AC_METRICS, Metric.INVERTER_TEMPERATURE]
BATTERY_METRICS = [
    Metric.BATTERY_SOC_PCT,
    Metric.BATTERY_CAPACITY,
    Metric.BATTERY_TEMPERATURE,
    Metric.DC_POWER,
    Metric.DC_VOLTAGE,
    Metric.DC_CURRENT,
]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SCENARIO, telemetry_hz=20.0, apis=("v1alpha18",)) as simulator:
        yield simulator


def read(sim: Simulator, component: int, metrics: list[Metric]) -> dict[Any, Any]:
    """Metric → sample of the first message the client gets after ``sim``'s state is set."""

    async def use(client: MicrogridApiClient) -> Any:
        receiver = client.receive_component_data_samples_stream(ComponentId(component), metrics)
        return await receiver.receive()

    samples = with_client(sim, use)
    assert int(samples.component_id) == component
    return {s.metric: s for s in samples.metric_samples}


def command(sim: Simulator, inverter: int, watts: float, vars_: float) -> None:
    """Hold ``watts`` and ``vars_`` on ``inverter`` for 15 minutes, through the client."""

    async def use(client: MicrogridApiClient) -> tuple[datetime | None, datetime | None]:
        lifetime = timedelta(minutes=15)
        return (
            await client.set_component_power_active(
                ComponentId(inverter), watts, request_lifetime=lifetime
            ),
            await client.set_component_power_reactive(
                ComponentId(inverter), vars_, request_lifetime=lifetime
            ),
        )

    active_until, reactive_until = with_client(sim, use)
    assert active_until is not None
    assert reactive_until is not None


def test_an_inverter_streams_its_ac_side_as_the_world_holds_it(sim: Simulator) -> None:
    command(sim, 2001, -3_000.0, 1_500.0)
    samples = read(sim, 2001, INVERTER_METRICS)
    assert set(samples) == set(INVERTER_METRICS)
    value = {metric: sample.value for metric, sample in samples.items()}
    assert value[Metric.AC_FREQUENCY] == 60.0
    assert value[Metric.AC_POWER_ACTIVE] == sim.setpoint(2001) == -3_000.0
    assert value[Metric.AC_POWER_REACTIVE] == sim.reactive_setpoint(2001) == 1_500.0
    for p in PHASES:
        assert value[Metric[f"AC_POWER_ACTIVE_PHASE_{p}"]] == pytest.approx(-1_000.0)
        assert value[Metric[f"AC_POWER_REACTIVE_PHASE_{p}"]] == pytest.approx(500.0)
        assert value[Metric[f"AC_VOLTAGE_PHASE_{p}_N"]] == 120.0
        # The passive sign convention: the inverter delivers, its current is negative.
        assert value[Metric[f"AC_CURRENT_PHASE_{p}"]] == pytest.approx(
            -math.hypot(1_000.0, 500.0) / 120.0
        )
    assert sum(value[Metric[f"AC_POWER_ACTIVE_PHASE_{p}"]] for p in PHASES) == -3_000.0
    assert sum(value[Metric[f"AC_POWER_REACTIVE_PHASE_{p}"]] for p in PHASES) == 1_500.0
    assert value[Metric.INVERTER_TEMPERATURE] == pytest.approx(20.0 + HEATING_C * 3 / 4)
    bounds = {metric: [(b.lower, b.upper) for b in s.bounds] for metric, s in samples.items()}
    assert bounds[Metric.AC_POWER_ACTIVE] == [(-4_000.0, 4_000.0)]
    assert bounds[Metric.AC_POWER_REACTIVE] == [(-4_000.0, 4_000.0)]  # the active limit


def test_a_battery_streams_temperature_voltage_and_current(sim: Simulator) -> None:
    command(sim, 2001, -2_000.0, 0.0)
    samples = read(sim, 1001, BATTERY_METRICS)
    assert set(samples) == set(BATTERY_METRICS)
    value = {metric: sample.value for metric, sample in samples.items()}
    assert value[Metric.DC_POWER] == -2_000.0
    # 1 GWh: the SoC stays at 40 % to far below a microvolt.
    assert value[Metric.DC_VOLTAGE] == pytest.approx(battery_voltage(700.0, 40.0))
    assert value[Metric.DC_VOLTAGE] == pytest.approx(700.0 * (0.9 + 0.1 * 0.4))
    # Values are 32-bit floats on the wire: consistent to their precision.
    assert value[Metric.DC_CURRENT] == pytest.approx(
        value[Metric.DC_POWER] / value[Metric.DC_VOLTAGE], rel=1e-6
    )
    assert value[Metric.BATTERY_TEMPERATURE] == pytest.approx(20.0 + HEATING_C * 2 / 5)


@pytest.mark.parametrize("component", [1, 2, BREAKER])
def test_meters_and_lines_stream_the_ac_side_of_what_is_behind_them(
    sim: Simulator, component: int
) -> None:
    command(sim, 2001, 1_200.0, -900.0)
    samples = read(sim, component, [*AC_METRICS, Metric.INVERTER_TEMPERATURE])
    assert set(samples) == set(AC_METRICS)  # a meter has no inverter temperature
    value = {metric: sample.value for metric, sample in samples.items()}
    assert value[Metric.AC_POWER_ACTIVE] == 1_200.0  # 2002 holds nothing
    assert value[Metric.AC_POWER_REACTIVE] == -900.0
    assert value[Metric.AC_VOLTAGE_PHASE_2_N] == 120.0
    assert value[Metric.AC_CURRENT_PHASE_3] == pytest.approx(math.hypot(400.0, 300.0) / 120.0)


def test_asking_for_every_metric_gets_what_the_component_has(sim: Simulator) -> None:
    # The client always sends a filter; naming every metric it knows lists what 2002 has.
    samples = read(sim, 2002, list(Metric))
    assert set(samples) == set(INVERTER_METRICS)


def test_reactive_power_within_bounds_is_applied_and_shows_in_telemetry(sim: Simulator) -> None:
    async def use(client: MicrogridApiClient) -> datetime | None:
        return await client.set_component_power_reactive(
            ComponentId(2002), -2_000.0, request_lifetime=timedelta(seconds=30)
        )

    until = with_client(sim, use)  # a PV inverter takes reactive power too
    assert until is not None
    assert until == pytest.approx(
        datetime.now(UTC) + timedelta(seconds=30), abs=timedelta(seconds=5)
    )
    assert sim.reactive_setpoint(2002) == -2_000.0
    assert sim.setpoint(2002) == 0.0  # active power untouched
    samples = read(sim, 2002, [Metric.AC_POWER_REACTIVE])
    reactive = samples[Metric.AC_POWER_REACTIVE]
    assert reactive.value == -2_000.0
    assert [(b.lower, b.upper) for b in reactive.bounds] == [(-2_000.0, 2_000.0)]


@pytest.mark.parametrize("vars_", [2_000.5, -2_001.0, 1e12])
def test_reactive_power_out_of_bounds_is_refused_and_not_applied(
    sim: Simulator, vars_: float
) -> None:
    before = sim.reactive_setpoint(2002)
    commands = len(sim.commands())

    async def use(client: MicrogridApiClient) -> datetime | None:
        return await client.set_component_power_reactive(ComponentId(2002), vars_)

    # REJECTED carries no valid_until: the official client reads the first reply only.
    assert with_client(sim, use) is None
    assert sim.reactive_setpoint(2002) == before
    assert len(sim.commands()) == commands  # the active commands' log is not the reactive's


def test_reactive_power_returns_to_zero_when_its_lifetime_ends() -> None:
    with Simulator(SCENARIO, telemetry_hz=20.0, apis=("v1alpha18",), lifetime_scale=0.01) as quick:

        async def use(client: MicrogridApiClient) -> datetime | None:
            return await client.set_component_power_reactive(
                ComponentId(2001), 800.0, request_lifetime=timedelta(seconds=10)
            )

        assert with_client(quick, use) is not None  # holds for 10 s x 0.01
        assert quick.wait_for(lambda s: s.reactive_setpoint(2001) == 0.0, timeout=10.0)
        assert read(quick, 2001, [Metric.AC_POWER_REACTIVE])[Metric.AC_POWER_REACTIVE].value == 0.0


def test_an_apparent_power_limit_is_read_as_its_bounds_and_curtails_reactive_power() -> None:
    limited = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=50.0, capacity_wh=1e9),),
        inverters=(
            InverterSpec(
                id=2001, batteries=(1001,), power_limit_w=5_000.0, apparent_limit_va=4_000.0
            ),
        ),
    )
    with Simulator(limited, telemetry_hz=20.0, apis=("v1alpha18",)) as site:
        command(site, 2001, 2_400.0, -3_800.0)  # each within S, together not: Q is curtailed
        metrics = [Metric.AC_POWER_ACTIVE, Metric.AC_POWER_REACTIVE, Metric.AC_POWER_APPARENT]
        samples = read(site, 2001, metrics)
        assert set(samples) == set(metrics)
        value = {metric: sample.value for metric, sample in samples.items()}
        assert value[Metric.AC_POWER_ACTIVE] == 2_400.0
        assert value[Metric.AC_POWER_REACTIVE] == pytest.approx(-3_200.0)  # √(4000² − 2400²)
        assert value[Metric.AC_POWER_APPARENT] == pytest.approx(4_000.0)
        bounds = samples[Metric.AC_POWER_APPARENT].bounds
        assert [(b.lower, b.upper) for b in bounds] == [(0.0, 4_000.0)]

        async def beyond(client: MicrogridApiClient) -> datetime | None:
            return await client.set_component_power_reactive(ComponentId(2001), 4_100.0)

        assert with_client(site, beyond) is None  # REJECTED: beyond S on its own
