"""Every RPC of every version the simulator serves, probed over real gRPC on loopback.

Each method either works or answers ``UNIMPLEMENTED`` saying it is not simulated; each method
that takes a component (or sensor) id answers an id that is none of the scenario's with the
status the proto documents (else ``NOT_FOUND``) and a message naming it. The probes build
requests from the service's own descriptor (:attr:`Adapter.rpcs`), so a method a version adds
is probed too. Nothing sleeps: tests wait on :meth:`Simulator.wait_for` or on the calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import pytest

from distributord.api.adapter import Rpc
from distributord.core.model import PowerBounds, StateCode
from distributord.sim.scenario import BatterySpec, InverterSpec, MicrogridSpec, Scenario
from distributord.sim.server import API_VERSIONS, Simulator, adapter
from distributord.sim.servicer import not_simulated

SCENARIO = Scenario(
    batteries=(BatterySpec(id=1001, soc_pct=50.0),),
    inverters=(InverterSpec(id=2001, batteries=(1001,)),),
    microgrid=MicrogridSpec(id=99, enterprise_id=3, name="probe", country_code="NL"),
)
UNKNOWN = 4242
TIMEOUT = 5.0

ID_FIELDS = ("electrical_component_id", "component_id", "sensor_id")
"""The fields by which a request names the one component (or sensor) it is about."""

NOT_SIMULATED: dict[str, set[str]] = {
    "v1alpha18": set(),
    "v1alpha19": set(),
    "v1": set(),
}
"""What each version leaves out, and README lists as not simulated."""

UNKNOWN_ID = {
    # v1alpha18/19 answer a command in the reply stream: REJECTED is "invalid input parameters".
    "SetElectricalComponentPower": "REJECTED",
}
"""How a method that the proto documents otherwise answers an unknown id (else NOT_FOUND)."""


@pytest.fixture(params=API_VERSIONS)
def api(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def sim(api: str) -> Iterator[Simulator]:
    with Simulator(SCENARIO, telemetry_hz=20.0, lifetime_scale=0.01, apis=(api,)) as simulator:
        yield simulator


def probe_request(rpc: Rpc, component_id: int) -> Any:
    """A request of ``rpc`` naming ``component_id`` where it names one, valid otherwise."""
    request = rpc.request()
    fields = request.DESCRIPTOR.fields_by_name
    for name in ID_FIELDS:
        if name in fields:
            setattr(request, name, component_id)
    if "bounds" in fields:
        bound = request.bounds.add()
        bound.lower, bound.upper = -1.0, 1.0
    if "target_metric" in fields:  # AC active power, as each version names it
        values = fields["target_metric"].enum_type.values_by_name
        name = (
            "METRIC_AC_POWER_ACTIVE"
            if "METRIC_AC_POWER_ACTIVE" in values
            else ("METRIC_AC_ACTIVE_POWER")
        )
        request.target_metric = values[name].number
    if "bounds_token" in fields:
        request.bounds_token = "probe"
    if "request_lifetime" in fields:
        request.request_lifetime = 60
    if "power_type" in fields:  # active power
        request.power_type = (
            fields["power_type"].enum_type.values_by_name["POWER_TYPE_ACTIVE"].number
        )
    return request


async def invoke(stub: Any, rpc: Rpc, request: Any) -> tuple[str, Any]:
    """``("OK", the first response)`` or ``(status code name, details)``."""
    method = getattr(stub, rpc.name)
    try:
        if rpc.kind == "unary_stream":
            call = method(request)
            try:
                return "OK", await asyncio.wait_for(anext(aiter(call)), TIMEOUT)
            finally:
                call.cancel()
        return "OK", await asyncio.wait_for(method(request), TIMEOUT)
    except grpc.aio.AioRpcError as error:
        return error.code().name, error.details()


def probe(sim: Simulator, api: str, component_id: int) -> dict[str, tuple[str, Any]]:
    """Every method of the version, called with requests naming ``component_id``."""
    version = adapter(api)

    async def main() -> dict[str, tuple[str, Any]]:
        async with grpc.aio.insecure_channel(sim.address) as channel:
            stub = version.stub(channel)
            return {
                rpc.name: await invoke(stub, rpc, probe_request(rpc, component_id))
                for rpc in version.rpcs
            }

    return asyncio.run(main())


def test_every_method_works_or_says_it_is_not_simulated(sim: Simulator, api: str) -> None:
    answers = probe(sim, api, 2001)
    unimplemented = {name for name, (code, _) in answers.items() if code == "UNIMPLEMENTED"}
    assert unimplemented == NOT_SIMULATED[api]
    for name in unimplemented:
        assert answers[name][1] == not_simulated(name)
    failed = {n: a for n, a in answers.items() if a[0] not in {"OK", "UNIMPLEMENTED"}}
    # The sensor stream: 2001 is a component, not a sensor.
    assert {n: a[0] for n, a in failed.items()} == {
        "ReceiveSensorDataStream" if api == "v1" else "ReceiveSensorTelemetryStream": "NOT_FOUND"
    }


def test_every_method_that_takes_an_id_refuses_an_unknown_one(sim: Simulator, api: str) -> None:
    version = adapter(api)
    answers = probe(sim, api, UNKNOWN)
    takes_id = {
        rpc.name
        for rpc in version.rpcs
        if any(f in rpc.request.DESCRIPTOR.fields_by_name for f in ID_FIELDS)
    } - NOT_SIMULATED[api]
    assert len(takes_id) >= 4  # streams, command, sensor stream, bounds
    for name in takes_id:
        code, details = answers[name]
        expected = UNKNOWN_ID.get(name, "NOT_FOUND")
        if expected == "REJECTED":
            assert code == "OK", name
            status = details.DESCRIPTOR.fields_by_name["status"].enum_type
            assert status.values_by_number[details.status].name.endswith("_REJECTED")
            continue
        assert (name, code) == (name, expected)
        thing = "sensor" if "Sensor" in name else "component"
        assert f"no {thing} {UNKNOWN}" in details, (name, details)


def test_the_microgrid_is_the_scenarios_in_every_version(sim: Simulator, api: str) -> None:
    name = "GetMicrogridMetadata" if api == "v1" else "GetMicrogrid"
    code, response = probe(sim, api, 0)[name]
    assert code == "OK"
    microgrid = response.microgrid
    assert (microgrid.id, microgrid.enterprise_id, microgrid.name) == (99, 3, "probe")
    assert microgrid.location.country_code == "NL"
    status = microgrid.DESCRIPTOR.fields_by_name["status"].enum_type
    assert status.values_by_number[microgrid.status].name == "MICROGRID_STATUS_ACTIVE"


def test_the_new_methods_fail_unavailable_in_an_outage(sim: Simulator, api: str) -> None:
    sim.outage()
    answers = probe(sim, api, 2001)
    site = {
        "GetMicrogridMetadata" if api == "v1" else "GetMicrogrid",
        "ListSensors",
        "AddComponentBounds" if api == "v1" else "AugmentElectricalComponentBounds",
    }
    for name in site:
        assert answers[name][0] == "UNAVAILABLE", name


def test_expiring_bounds_wake_waiters_between_ticks() -> None:
    # One tick every 100 s: only the expiry's own wake-up can end the wait in time.
    with Simulator(SCENARIO, telemetry_hz=0.01, lifetime_scale=0.01, apis=("v1",)) as sim:
        version = adapter("v1")
        rpc = next(r for r in version.rpcs if r.name == "AddComponentBounds")

        async def main() -> tuple[str, Any]:
            async with grpc.aio.insecure_channel(sim.address) as channel:
                return await invoke(version.stub(channel), rpc, probe_request(rpc, 2001))

        started = time.monotonic()
        assert asyncio.run(main())[0] == "OK"
        assert sim.wait_for(lambda s: s.added_bounds(2001) == 0, TIMEOUT)  # 5 s × 0.01
        assert time.monotonic() - started < TIMEOUT


def switch(sim: Simulator, api: str, action: str, component_id: int) -> tuple[str, Any]:
    """Call the version's start/standby/stop/ack method for a component."""
    names = {
        "start": ("StartComponent", "StartElectricalComponent"),
        "standby": ("PutComponentInStandby", "PutElectricalComponentInStandby"),
        "stop": ("StopComponent", "StopElectricalComponent"),
        "ack": ("AckComponentError", "AckElectricalComponentError"),
    }
    name = names[action][0 if api == "v1" else 1]
    version = adapter(api)
    rpc = next(r for r in version.rpcs if r.name == name)

    async def main() -> tuple[str, Any]:
        async with grpc.aio.insecure_channel(sim.address) as channel:
            return await invoke(version.stub(channel), rpc, probe_request(rpc, component_id))

    return asyncio.run(main())


def inverter_snapshot(sim: Simulator, api: str, inverter_id: int) -> Any:
    version = adapter(api)

    async def main() -> Any:
        async with grpc.aio.insecure_channel(sim.address) as channel:
            stream: Any = version.telemetry(version.stub(channel), inverter_id)
            try:
                decoder = version.decoder(inverter_id, battery=False, max_data_age_s=10.0)
                return decoder.decode(await anext(stream), received_at=0.0)
            finally:
                await stream.aclose()

    return asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def command(sim: Simulator, api: str, power_w: float) -> str:
    """Command inverter 2001; the outcome the simulator recorded."""
    version = adapter(api)

    async def main() -> None:
        async with grpc.aio.insecure_channel(sim.address) as channel:
            with contextlib.suppress(Exception):  # refusals: read from the record below
                await version.set_power(version.stub(channel), 2001, power_w, 60)

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    return sim.commands()[-1].outcome


def test_a_stopped_inverter_reports_off_and_refuses_commands_until_started(
    sim: Simulator, api: str
) -> None:
    assert command(sim, api, 1000.0) == "ok"
    assert switch(sim, api, "stop", 2001)[0] == "OK"
    assert sim.mode(2001) == "stopped"
    assert sim.setpoint(2001) == 0.0
    snapshot = inverter_snapshot(sim, api, 2001)
    assert snapshot.states == {StateCode.OFF}
    assert snapshot.bounds == PowerBounds.symmetric(0.0)
    assert command(sim, api, 1000.0) == "FAILED_PRECONDITION"
    assert switch(sim, api, "standby", 2001)[0] == "FAILED_PRECONDITION"
    assert switch(sim, api, "start", 2001)[0] == "OK"
    assert inverter_snapshot(sim, api, 2001).states == {StateCode.READY}
    assert command(sim, api, 1000.0) == "ok"
    assert switch(sim, api, "standby", 2001)[0] == "OK"
    assert inverter_snapshot(sim, api, 2001).states == {StateCode.STANDBY}
    assert command(sim, api, -500.0) == "ok"  # a command brings it back from standby
    assert sim.mode(2001) == "running"


def test_acknowledging_an_error_clears_it_and_leaves_the_component_stopped(
    sim: Simulator, api: str
) -> None:
    sim.set_fault(2001, error_state=True)
    assert inverter_snapshot(sim, api, 2001).states == {StateCode.ERROR}
    assert switch(sim, api, "ack", 2001)[0] == "OK"
    assert not sim.faults(2001).error_state
    assert sim.mode(2001) == "stopped"
    assert inverter_snapshot(sim, api, 2001).states == {StateCode.OFF}
    assert switch(sim, api, "stop", 1001)[0] == "OK"  # a battery at 0 W stops
    assert switch(sim, api, "stop", 1001)[0] == "OK"  # already: nothing more to do
    assert sim.mode(1001) == "stopped"


HOSTILE_BOUNDS = [
    ({"lower": math.nan, "upper": 1.0}, 60, "INVALID_ARGUMENT"),
    ({"lower": math.inf}, 60, "INVALID_ARGUMENT"),
    ({"lower": 5.0, "upper": -5.0}, 60, "INVALID_ARGUMENT"),
    ({"lower": -1e300, "upper": 1e300}, 60, "OK"),  # wider than the inverter: its own hold
    ({"lower": -1.0, "upper": 1.0}, 0, "INVALID_ARGUMENT"),
    ({"lower": -1.0, "upper": 1.0}, 2**32 - 1, "INVALID_ARGUMENT"),
]


@pytest.mark.parametrize(("bound", "lifetime", "code"), HOSTILE_BOUNDS)
def test_hostile_bounds_are_refused_with_a_status_and_break_nothing(
    bound: dict[str, float], lifetime: int, code: str
) -> None:
    with Simulator(SCENARIO, telemetry_hz=20.0, apis=("v1alpha18",)) as sim:
        version = adapter("v1alpha18")
        add = next(r for r in version.rpcs if r.name == "AugmentElectricalComponentBounds")
        site = next(r for r in version.rpcs if r.name == "GetMicrogrid")

        async def main() -> tuple[tuple[str, Any], tuple[str, Any]]:
            async with grpc.aio.insecure_channel(sim.address) as channel:
                stub = version.stub(channel)
                request = probe_request(add, 2001)
                del request.bounds[:]
                request.bounds.add(**bound)
                request.request_lifetime = lifetime
                return await invoke(stub, add, request), await invoke(stub, site, site.request())

        (answer, details), (after, _) = asyncio.run(main())
        assert answer == code, details
        assert after == "OK"
        assert sim.allowed_ranges(2001) == ((-5000.0, 5000.0),)
