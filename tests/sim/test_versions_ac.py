"""Reactive power and the stream filter in every version, over real gRPC on loopback.

Each test runs against a simulator that serves one version only, through the generated stubs
(the daemon does not command reactive power; a client of the API does).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import pytest

from distributord.api import v1, v1alpha
from distributord.sim.scenario import BatterySpec, InverterSpec, Scenario
from distributord.sim.server import API_VERSIONS, REPLY_STREAM_VERSIONS, Simulator

SCENARIO = Scenario(
    batteries=(BatterySpec(id=1001, soc_pct=50.0), BatterySpec(id=1002, soc_pct=50.0)),
    inverters=(
        InverterSpec(id=2001, batteries=(1001,), reactive_limit_var=3_000.0, meter=True),
        InverterSpec(id=2002, batteries=(1002,), type="pv"),
    ),
)
METER_2001 = 92001  # the meter in front of 2001 (sim/scenario.py)
LIFETIME_SCALE = 0.01
TIMEOUT = 5.0


@pytest.fixture(params=API_VERSIONS)
def api(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def sim(api: str) -> Iterator[Simulator]:
    with Simulator(
        SCENARIO, telemetry_hz=50.0, lifetime_scale=LIFETIME_SCALE, apis=(api,)
    ) as simulator:
        yield simulator


def modules(api: str) -> tuple[Any, Any]:
    pb2 = importlib.import_module(f"frequenz.api.microgrid.{api}.microgrid_pb2")
    grpc_module = importlib.import_module(f"frequenz.api.microgrid.{api}.microgrid_pb2_grpc")
    return pb2, grpc_module


def set_reactive(sim: Simulator, api: str, component_id: int, var: float, lifetime: int) -> str:
    """A reactive command on the wire: ``"ACCEPTED"`` or the refusal (status or code name)."""
    pb2, grpc_module = modules(api)
    with grpc.insecure_channel(sim.address) as channel:
        stub = grpc_module.MicrogridStub(channel)
        if api in REPLY_STREAM_VERSIONS:
            replies = list(
                stub.SetElectricalComponentPower(
                    pb2.SetElectricalComponentPowerRequest(
                        electrical_component_id=component_id,
                        power_type=pb2.PowerType.Value("POWER_TYPE_REACTIVE"),
                        power=var,
                        request_lifetime=lifetime,
                    ),
                    timeout=TIMEOUT,
                )
            )
            names = [
                pb2.SetElectricalComponentPowerRequestStatus.Name(r.status).removeprefix(
                    "SET_ELECTRICAL_COMPONENT_POWER_REQUEST_STATUS_"
                )
                for r in replies
            ]
            if names[0] == "ACCEPTED":
                assert names == ["ACCEPTED", "SUCCESS"]
                assert all(r.HasField("valid_until_time") for r in replies)
            else:
                assert names == ["REJECTED"]
            return str(names[0])
        try:
            response = stub.SetComponentPowerReactive(
                pb2.SetComponentPowerReactiveRequest(
                    component_id=component_id, power=var, request_lifetime=lifetime
                ),
                timeout=TIMEOUT,
            )
        except grpc.RpcError as error:
            details = error.details() or ""
            return f"{error.code().name}" if details else "NO DETAILS"
        assert response.HasField("valid_until")
        return "ACCEPTED"


REFUSED = {"v1alpha18": "REJECTED", "v1alpha19": "REJECTED"}


def refused(api: str, code: str) -> str:
    """How ``api`` answers a refusal with gRPC status ``code`` (v1alpha18/19: ``REJECTED``)."""
    return REFUSED.get(api, code)


def test_reactive_power_is_held_until_its_lifetime_ends(sim: Simulator, api: str) -> None:
    assert set_reactive(sim, api, 2001, -2_500.0, 10) == "ACCEPTED"  # 0.1 s at the scale
    assert sim.reactive_setpoint(2001) == -2_500.0
    assert sim.setpoint(2001) == 0.0
    assert sim.commands() == []  # the daemon's active commands only
    assert sim.wait_for(lambda s: s.reactive_setpoint(2001) == 0.0, TIMEOUT)


@pytest.mark.parametrize(
    ("component_id", "var", "lifetime", "code"),
    [
        (2001, 3_000.5, 60, "OUT_OF_RANGE"),
        (2002, -5_001.0, 60, "OUT_OF_RANGE"),  # the default limit: the active one
        (2001, math.nan, 60, "INVALID_ARGUMENT"),
        (2001, 0.0, 5, "INVALID_ARGUMENT"),
        (1001, 0.0, 60, "INVALID_ARGUMENT"),
        (4242, 0.0, 60, "NOT_FOUND"),
    ],
)
def test_reactive_power_is_refused_as_active_power_is(
    sim: Simulator, api: str, component_id: int, var: float, lifetime: int, code: str
) -> None:
    assert set_reactive(sim, api, component_id, var, lifetime) == refused(api, code)
    assert sim.reactive_setpoint(2001) == sim.reactive_setpoint(2002) == 0.0


def stream(sim: Simulator, api: str, component_id: int, metrics: list[int] | None) -> Any:
    """The first message of a stream with that filter (None: none)."""
    pb2, grpc_module = modules(api)
    with grpc.insecure_channel(sim.address) as channel:
        stub = grpc_module.MicrogridStub(channel)
        if api in REPLY_STREAM_VERSIONS:
            request = pb2.ReceiveElectricalComponentTelemetryStreamRequest(
                electrical_component_id=component_id
            )
            call = stub.ReceiveElectricalComponentTelemetryStream
        else:
            request = pb2.ReceiveComponentDataStreamRequest(component_id=component_id)
            call = stub.ReceiveComponentDataStream
        if metrics is not None:
            request.filter.SetInParent()
            request.filter.metrics.extend(metrics)
        responses = call(request, timeout=TIMEOUT)
        try:
            first = next(responses)
        finally:
            responses.cancel()
        return first.data if api == "v1" else first.telemetry


def numbers(api: str) -> dict[str, int]:
    return v1.SIM_METRIC_NUMBERS if api == "v1" else v1alpha.SIM_METRIC_NUMBERS


def test_a_filter_naming_no_metric_is_invalid(sim: Simulator, api: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stream(sim, api, 2001, [])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metric" in (caught.value.details() or "")


def test_without_a_filter_a_stream_has_every_metric_the_component_has(
    sim: Simulator, api: str
) -> None:
    names = {n: name for name, n in numbers(api).items()}
    inverter = {names[s.metric] for s in stream(sim, api, 2001, None).metric_samples}
    # Its apparent power only with an apparent-power limit (test_world_apparent): it has none.
    assert inverter == {name for name in names.values() if name.startswith(("AC_", "INV"))} - {
        "AC_APPARENT_POWER"
    }
    battery = {names[s.metric] for s in stream(sim, api, 1001, None).metric_samples}
    assert battery == {name for name in names.values() if name.startswith(("BATTERY", "DC_"))}


def test_a_filter_gets_what_it_names_and_the_component_has(sim: Simulator, api: str) -> None:
    assert set_reactive(sim, api, 2001, 900.0, 900) == "ACCEPTED"
    wanted = numbers(api)
    asked = [wanted["AC_REACTIVE_POWER_PHASE_2"], wanted["DC_VOLTAGE"], wanted["AC_FREQUENCY"]]
    message = stream(sim, api, 2001, asked)
    assert [(s.metric, s.value.simple_metric.value) for s in message.metric_samples] == [
        (wanted["AC_REACTIVE_POWER_PHASE_2"], 300.0),
        (wanted["AC_FREQUENCY"], 50.0),
    ]


@pytest.mark.parametrize("component_id", [1, 2, METER_2001])
def test_meters_measure_the_reactive_power_behind_them(
    sim: Simulator, api: str, component_id: int
) -> None:
    assert SCENARIO.meters() == {METER_2001: 2001}
    assert set_reactive(sim, api, 2001, -1_800.0, 900) == "ACCEPTED"
    assert set_reactive(sim, api, 2002, 600.0, 900) == "ACCEPTED"
    wanted = numbers(api)
    message = stream(sim, api, component_id, [wanted["AC_REACTIVE_POWER"]])
    (sample,) = message.metric_samples
    assert sample.value.simple_metric.value == (
        -1_800.0 if component_id == METER_2001 else -1_200.0
    )
    assert not sample.bounds  # a meter is not commanded
