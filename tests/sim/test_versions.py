"""Every version the simulator serves, read and commanded over real gRPC on loopback.

Each test runs against a simulator that serves one version only, through that version's adapter
(its daemon side: ``components``, ``telemetry``, ``decoder``, ``set_power``), and where the wire
itself is the point (the v1alpha18/19 reply stream) through the generated stubs. Nothing sleeps
to synchronise: tests wait on :meth:`Simulator.wait_for` or on the calls themselves, each under
a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]
import pytest

from distributord.api.adapter import Adapter
from distributord.core.errors import (
    CommandFailedError,
    CommandOverriddenError,
    CommandRejectedError,
)
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds
from distributord.core.topology import Category, Component, InverterType
from distributord.sim.record import Outcome
from distributord.sim.scenario import FINAL_REPLIES, BatterySpec, InverterSpec, Scenario
from distributord.sim.server import API_VERSIONS, REPLY_STREAM_VERSIONS, Simulator, adapter

T = TypeVar("T")

# Ids up to 2003: the chain of 2001 is 12001 (precharger), 22001 (breaker).
SCENARIO = Scenario(
    batteries=(
        BatterySpec(id=1001, soc_pct=50.0),
        BatterySpec(id=1002, soc_pct=40.0, capacity_wh=20_000.0),
        BatterySpec(id=1003, soc_pct=60.0),
    ),
    inverters=(
        InverterSpec(id=2001, batteries=(1001,), between=("precharger", "breaker")),
        # A meter of its own in front (id 92002), as on real sites.
        InverterSpec(id=2002, batteries=(1002,), type="hybrid", exclusion_w=500.0, meter=True),
        InverterSpec(id=2003, batteries=(1003,), type="pv", power_limit_w=3000.0),
    ),
)
PRECHARGER, BREAKER = 12001, 22001
METER_OF_2002 = 92002

SUBSTITUTES = {"v1": {Category.BREAKER: Category.RELAY}}
"""A category a version has no name for is sent as its nearest one (v1 has no breaker)."""

LIFETIME_SCALE = 0.01
TIMEOUT = 5.0

ALPHAS = sorted(REPLY_STREAM_VERSIONS)


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


def call(sim: Simulator, api: str, work: Callable[[Adapter, Any], Awaitable[T]]) -> T:
    """Run ``work(adapter, stub)`` on a grpc.aio channel to ``sim``, under :data:`TIMEOUT`."""

    async def main() -> T:
        async with grpc.aio.insecure_channel(sim.address) as channel:
            version = adapter(api)
            return await asyncio.wait_for(work(version, version.stub(channel)), TIMEOUT)

    return asyncio.run(main())


def first_snapshot(sim: Simulator, api: str, component_id: int, *, battery: bool) -> Any:
    async def work(version: Adapter, stub: Any) -> Any:
        decoder = version.decoder(component_id, battery=battery, max_data_age_s=10.0)
        stream: Any = version.telemetry(stub, component_id)
        try:
            return decoder.decode(await anext(stream), received_at=0.0)
        finally:
            await stream.aclose()

    return call(sim, api, work)


def outcomes(sim: Simulator) -> list[tuple[int, str, str]]:
    return [(c.component_id, c.outcome, c.api) for c in sim.commands()]


# --- topology -------------------------------------------------------------------------------


def test_components_with_a_pass_through_chain_and_inverter_types(sim: Simulator, api: str) -> None:
    async def work(version: Adapter, stub: Any) -> Any:
        return await version.components(stub), await version.connections(stub)

    components, connections = call(sim, api, work)
    substitute = SUBSTITUTES.get(api, {})
    assert components == {
        1: Component(Category.GRID),
        2: Component(Category.METER),
        METER_OF_2002: Component(Category.METER),
        2001: Component(Category.INVERTER, InverterType.BATTERY),
        2002: Component(Category.INVERTER, InverterType.HYBRID),
        2003: Component(Category.INVERTER, InverterType.PV),
        PRECHARGER: Component(Category.PRECHARGER),
        BREAKER: Component(substitute.get(Category.BREAKER, Category.BREAKER)),
        1001: Component(Category.BATTERY),
        1002: Component(Category.BATTERY),
        1003: Component(Category.BATTERY),
    }
    assert sorted(connections) == sorted(
        [
            (1, 2),
            (2, 2001),
            (2001, PRECHARGER),
            (PRECHARGER, BREAKER),
            (BREAKER, 1001),
            (2, METER_OF_2002),
            (METER_OF_2002, 2002),
            (2002, 1002),
            (2, 2003),
            (2003, 1003),
        ]
    )


# --- telemetry ------------------------------------------------------------------------------


def test_telemetry_matches_the_scenario(sim: Simulator, api: str) -> None:
    battery = first_snapshot(sim, api, 1002, battery=True)
    assert isinstance(battery, BatterySnapshot)
    assert battery.component_id == 1002
    assert battery.soc_pct == 40.0
    assert (battery.soc_lower_pct, battery.soc_upper_pct) == (10.0, 90.0)
    assert battery.capacity_wh == 20_000.0
    assert battery.power_w == 0.0
    assert battery.bounds == PowerBounds.symmetric(5000.0)
    assert abs(battery.sampled_at - time.time()) < 2.0
    inverter = first_snapshot(sim, api, 2002, battery=False)
    assert isinstance(inverter, InverterSnapshot)
    assert inverter.active_power_w == 0.0
    assert inverter.bounds == PowerBounds.symmetric(5000.0, 500.0)
    # A PV inverter produces and never consumes.
    assert first_snapshot(sim, api, 2003, battery=False).bounds == PowerBounds(
        inclusion_lower=-3000.0, exclusion_lower=0.0, exclusion_upper=0.0, inclusion_upper=0.0
    )


def test_a_pass_through_component_streams_the_power_it_passes(sim: Simulator, api: str) -> None:
    async def work(version: Adapter, stub: Any) -> float:
        return await version.set_power(stub, 2001, -1500.0, 900)

    call(sim, api, work)
    for component_id in (PRECHARGER, BREAKER):
        snapshot = first_snapshot(sim, api, component_id, battery=False)
        assert snapshot.component_id == component_id
        assert snapshot.active_power_w == -1500.0


def test_an_inverters_own_meter_streams_what_its_inverter_passes(sim: Simulator, api: str) -> None:
    async def work(version: Adapter, stub: Any) -> float:
        return await version.set_power(stub, 2002, 2000.0, 900)

    call(sim, api, work)
    snapshot = first_snapshot(sim, api, METER_OF_2002, battery=False)
    assert snapshot.component_id == METER_OF_2002
    assert snapshot.active_power_w == 2000.0
    assert first_snapshot(sim, api, 2, battery=False).active_power_w == 2000.0  # the site's


def test_a_pv_inverter_refuses_to_consume(sim: Simulator, api: str) -> None:
    async def work(version: Adapter, stub: Any) -> float:
        return await version.set_power(stub, 2003, 100.0, 900)

    if api == "v1":
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            call(sim, api, work)
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "PV inverter" in (caught.value.details() or "")
    else:
        with pytest.raises(CommandRejectedError):
            call(sim, api, work)
    assert outcomes(sim) == [(2003, "OUT_OF_RANGE", api)]


def test_an_unknown_component_has_no_stream(sim: Simulator, api: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        first_snapshot(sim, api, 4242, battery=False)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# --- commands -------------------------------------------------------------------------------


def test_a_command_in_bounds_is_applied(sim: Simulator, api: str) -> None:
    async def work(version: Adapter, stub: Any) -> float:
        return await version.set_power(stub, 2001, 2500.0, 900)

    valid_until = call(sim, api, work)
    assert valid_until == pytest.approx(time.time() + 900.0, abs=2.0)  # unscaled
    assert sim.setpoint(2001) == 2500.0
    assert outcomes(sim) == [(2001, "ok", api)]
    assert sim.wait_for(lambda s: s.soc(1001) > 50.0, TIMEOUT)


@pytest.mark.parametrize("power", [5001.0, -300.0])  # beyond the limit; in the exclusion zone
def test_a_command_out_of_bounds_is_refused(sim: Simulator, api: str, power: float) -> None:
    async def work(version: Adapter, stub: Any) -> float:
        return await version.set_power(stub, 2002, power, 900)

    if api == "v1":  # a gRPC status, passed through by the adapter
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            call(sim, api, work)
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    else:  # REJECTED
        with pytest.raises(CommandRejectedError):
            call(sim, api, work)
    assert sim.setpoint(2002) == 0.0
    assert outcomes(sim) == [(2002, "OUT_OF_RANGE", api)]


def test_an_injected_failure_is_a_grpc_status_in_every_version(sim: Simulator, api: str) -> None:
    sim.set_fault(2001, command_error="UNAVAILABLE")

    async def work(version: Adapter, stub: Any) -> float:
        return await version.set_power(stub, 2001, 100.0, 900)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        call(sim, api, work)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert outcomes(sim) == [(2001, "UNAVAILABLE", api)]


def test_a_hanging_command_cut_off_by_its_client_is_recorded_cancelled(
    sim: Simulator, api: str
) -> None:
    sim.set_fault(2001, command_hang=True)

    async def work(version: Adapter, stub: Any) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(version.set_power(stub, 2001, 100.0, 900), 0.2)

    call(sim, api, work)
    assert sim.wait_for(lambda s: outcomes(s) == [(2001, "cancelled", api)], TIMEOUT)
    assert sim.pending_commands() == 0


def test_the_next_command_hangs_and_the_later_ones_answer_at_once(sim: Simulator, api: str) -> None:
    sim.set_fault(2001, command_latencies_s=[math.inf])

    async def work(version: Adapter, stub: Any) -> None:
        hanging = asyncio.create_task(version.set_power(stub, 2001, 1000.0, 900))
        assert await asyncio.to_thread(sim.wait_for, lambda s: s.pending_commands() == 1, TIMEOUT)
        await version.set_power(stub, 2001, 2000.0, 900)  # its own latency: none
        hanging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hanging

    call(sim, api, work)
    assert sim.wait_for(lambda s: s.pending_commands() == 0, TIMEOUT)
    applied, cancelled = sim.record().commands()
    assert (applied.power_w, applied.outcome, applied.api) == (2000.0, Outcome.APPLIED, api)
    assert (cancelled.power_w, cancelled.outcome) == (1000.0, Outcome.CANCELLED)
    assert sim.setpoint(2001) == 2000.0


@pytest.mark.parametrize("final", sorted(FINAL_REPLIES))
def test_final_reply_faults_through_the_adapter(sim: Simulator, api: str, final: str) -> None:
    sim.set_fault(2001, final_reply=final)

    async def work(version: Adapter, stub: Any) -> float:
        return await version.set_power(stub, 2001, 1000.0, 900)

    applied = final in {"SUCCESS", "APPLIED_NONE", "APPLIED_END"}
    if api == "v1" or final == "SUCCESS":  # v1 has no reply stream: it ignores this
        call(sim, api, work)
        assert outcomes(sim) == [(2001, "ok", api)]
        assert sim.setpoint(2001) == 1000.0
        (command,) = sim.record().commands()
        assert command.outcome is Outcome.APPLIED
        assert command.final == (None if api == "v1" else "SUCCESS")
        return
    if final in {"NONE", "APPLIED_NONE"}:
        with pytest.raises(TimeoutError):  # the adapter waits; the request's timeout cuts it off
            call(sim, api, lambda version, stub: asyncio.wait_for(work(version, stub), 0.3))
        ended = "ok" if applied else "cancelled"  # ended by the client, applied or not
        assert sim.wait_for(lambda s: outcomes(s) == [(2001, ended, api)], TIMEOUT)
    elif final == "OVERRIDDEN":  # someone else's newer command won: not applied
        with pytest.raises(CommandOverriddenError):
            call(sim, api, work)
        assert outcomes(sim) == [(2001, "OVERRIDDEN", api)]
    elif final == "APPLIED_END":  # the daemon's adapter cannot tell: no final reply
        with pytest.raises(CommandFailedError, match="NO_FINAL_REPLY"):
            call(sim, api, work)
        assert outcomes(sim) == [(2001, "ok", api)]
    else:
        with pytest.raises(CommandFailedError):
            call(sim, api, work)
        assert outcomes(sim) == [(2001, "FAILED", api)]
    assert sim.pending_commands() == 0
    assert sim.setpoint(2001) == (1000.0 if applied else 0.0)
    (command,) = sim.record().commands()
    assert command.outcome is (Outcome.APPLIED if applied else Outcome.NOT_APPLIED)
    assert command.final == final


# --- the v1alpha18/19 reply stream on the wire ----------------------------------------------


def alpha_stub(channel: Any, api: str) -> Any:
    grpc_module = importlib.import_module(f"frequenz.api.microgrid.{api}.microgrid_pb2_grpc")
    return grpc_module.MicrogridStub(channel)


def alpha_request(api: str, component_id: int, power_w: float, lifetime_s: int = 900) -> Any:
    # 900 s lasts 9 s at LIFETIME_SCALE: an applied setpoint outlives the test's asserts.
    pb2 = importlib.import_module(f"frequenz.api.microgrid.{api}.microgrid_pb2")
    return pb2.SetElectricalComponentPowerRequest(
        electrical_component_id=component_id,
        power_type=pb2.PowerType.Value("POWER_TYPE_ACTIVE"),
        power=power_w,
        request_lifetime=lifetime_s,
    )


def status_name(api: str, reply: Any) -> str:
    pb2 = importlib.import_module(f"frequenz.api.microgrid.{api}.microgrid_pb2")
    name: str = pb2.SetElectricalComponentPowerRequestStatus.Name(reply.status)
    return name.removeprefix("SET_ELECTRICAL_COMPONENT_POWER_REQUEST_STATUS_")


@pytest.mark.parametrize("api", ALPHAS)
@pytest.mark.parametrize(
    ("final", "power", "replies", "outcome", "applied"),
    [
        ("SUCCESS", 1000.0, ["ACCEPTED", "SUCCESS"], "ok", True),
        ("FAILED", 1000.0, ["ACCEPTED", "FAILED"], "FAILED", False),
        ("OVERRIDDEN", 1000.0, ["ACCEPTED", "OVERRIDDEN"], "OVERRIDDEN", False),
        ("APPLIED_END", 1000.0, ["ACCEPTED"], "ok", True),  # ends without a final reply
        ("SUCCESS", 6000.0, ["REJECTED"], "OUT_OF_RANGE", False),  # refused, whatever the fault
        ("FAILED", 6000.0, ["REJECTED"], "OUT_OF_RANGE", False),
        ("APPLIED_END", 6000.0, ["REJECTED"], "OUT_OF_RANGE", False),
    ],
)
def test_the_reply_stream(
    sim: Simulator,
    api: str,
    final: str,
    power: float,
    replies: list[str],
    outcome: str,
    applied: bool,
) -> None:
    sim.set_fault(2001, final_reply=final)
    with grpc.insecure_channel(sim.address) as channel:
        call_ = alpha_stub(channel, api).SetElectricalComponentPower(
            alpha_request(api, 2001, power), timeout=TIMEOUT
        )
        received = list(call_)
        assert call_.code() == grpc.StatusCode.OK  # every stream here ends, none is cut off
    assert [status_name(api, reply) for reply in received] == replies
    assert received[0].HasField("valid_until_time") == (replies[0] == "ACCEPTED")
    if replies == ["ACCEPTED", "SUCCESS"]:
        assert received[1].HasField("valid_until_time")
    assert sim.setpoint(2001) == (power if applied else 0.0)
    assert outcomes(sim) == [(2001, outcome, api)]


@pytest.mark.parametrize("api", ALPHAS)
@pytest.mark.parametrize(("final", "applied"), [("NONE", False), ("APPLIED_NONE", True)])
def test_no_final_reply_keeps_the_stream_open_until_the_client_cancels(
    sim: Simulator, api: str, final: str, applied: bool
) -> None:
    sim.set_fault(2001, final_reply=final)
    with grpc.insecure_channel(sim.address) as channel:
        call_ = alpha_stub(channel, api).SetElectricalComponentPower(
            alpha_request(api, 2001, 1000.0), timeout=TIMEOUT
        )
        assert status_name(api, next(call_)) == "ACCEPTED"
        # Decided the moment it was accepted: applied (or not) while the stream stays open.
        assert sim.setpoint(2001) == (1000.0 if applied else 0.0)
        (command,) = sim.record().commands()
        assert command.outcome is (Outcome.APPLIED if applied else Outcome.NOT_APPLIED)
        assert command.final == final
        assert sim.pending_commands(2001) == 1
        assert sim.commands() == []  # not finished: no final reply yet
        assert call_.cancel()
        ended = "ok" if applied else "cancelled"
        assert sim.wait_for(lambda s: outcomes(s) == [(2001, ended, api)], TIMEOUT)
    assert sim.pending_commands() == 0
    assert sim.setpoint(2001) == (1000.0 if applied else 0.0)  # until its lifetime ends
    assert len(sim.record().commands()) == 1  # the client's cancel after ACCEPTED changes nothing


# --- versions not served ----------------------------------------------------------------------


def test_a_version_not_served_answers_unimplemented(sim: Simulator, api: str) -> None:
    for other in API_VERSIONS:
        if other == api:
            continue

        async def work(version: Adapter, stub: Any) -> Any:
            return await version.components(stub)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            call(sim, other, work)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_one_port_serves_every_version_by_default() -> None:
    with Simulator(SCENARIO) as sim:
        assert sim.apis == API_VERSIONS
        for api in API_VERSIONS:

            async def work(version: Adapter, stub: Any) -> Any:
                return await version.components(stub)

            assert sorted(call(sim, api, work)) == sorted(dict(SCENARIO.components()))


def test_the_versions_served_are_checked() -> None:
    with pytest.raises(ValueError, match="v2"):
        Simulator(SCENARIO, apis=("v1", "v2"))
    with pytest.raises(ValueError, match="apis must name one or more of"):
        Simulator(SCENARIO, apis=())
    assert Simulator(SCENARIO, apis="v1").apis == ("v1",)
    assert Simulator(SCENARIO, apis=("v1", "v1alpha18")).apis == ("v1alpha18", "v1")


@pytest.mark.parametrize("api", ALPHAS)
@pytest.mark.parametrize("final", ["SUCCESS", "FAILED", "OVERRIDDEN"])
def test_a_command_with_a_final_reply_ends_completed_not_cancelled(
    sim: Simulator, api: str, final: str
) -> None:
    # Found in review: the adapter cancelled every call once it had read the final reply, so
    # a real server saw each of our successful commands cancelled by the client.
    sim.set_fault(2001, final_reply=final)
    calls: list[Any] = []

    class Spy:
        def __init__(self, stub: Any) -> None:
            self._stub = stub

        def SetElectricalComponentPower(self, request: Any) -> Any:  # noqa: N802
            calls.append(self._stub.SetElectricalComponentPower(request))
            return calls[-1]

    async def work(version: Adapter, stub: Any) -> str:
        with contextlib.suppress(CommandFailedError, CommandOverriddenError):
            await version.set_power(Spy(stub), 2001, 1000.0, 60)
        return str((await calls[0].code()).name)

    assert call(sim, api, work) == "OK"


# --- ramping inverters (v1alpha18/19) ---------------------------------------------------------

RAMP_S = 0.3


@pytest.mark.parametrize("api", ALPHAS)
@pytest.mark.parametrize("final", ["SUCCESS", "FAILED", "OVERRIDDEN"])
def test_a_ramping_inverter_accepts_at_once_and_answers_after_its_ramp(
    sim: Simulator, api: str, final: str
) -> None:
    sim.set_fault(2001, final_reply=final, ramp_s=RAMP_S)
    with grpc.insecure_channel(sim.address) as channel:
        call_ = alpha_stub(channel, api).SetElectricalComponentPower(
            alpha_request(api, 2001, 1000.0), timeout=TIMEOUT
        )
        assert status_name(api, next(call_)) == "ACCEPTED"
        accepted = time.monotonic()
        assert sim.ramping(2001)  # accepted; the final reply is still to come
        assert [status_name(api, reply) for reply in call_] == [final]
        assert time.monotonic() - accepted >= RAMP_S * 0.9
        assert call_.code() == grpc.StatusCode.OK
    (ramp,) = sim.ramps()
    assert (ramp.component_id, ramp.power_w, ramp.reply) == (2001, 1000.0, final)
    assert ramp.ended_at - ramp.accepted_at >= RAMP_S
    assert not sim.ramping(2001)


@pytest.mark.parametrize("api", ALPHAS)
def test_a_newer_command_overrides_a_ramp_under_way(sim: Simulator, api: str) -> None:
    # The API's OVERRIDDEN: "another request for that component replaced it". Whoever sent it.
    sim.set_fault(2001, ramp_s=60.0)
    with grpc.insecure_channel(sim.address) as channel:
        stub = alpha_stub(channel, api)
        older = stub.SetElectricalComponentPower(alpha_request(api, 2001, 1000.0), timeout=TIMEOUT)
        assert status_name(api, next(older)) == "ACCEPTED"
        newer = stub.SetElectricalComponentPower(alpha_request(api, 2001, 500.0), timeout=TIMEOUT)
        assert status_name(api, next(newer)) == "ACCEPTED"
        assert [status_name(api, reply) for reply in older] == ["OVERRIDDEN"]
        assert sim.ramping(2001)  # the newer one ramps on
        assert newer.cancel()
    assert sim.wait_for(lambda s: not s.ramping(2001), TIMEOUT)
    assert [(r.power_w, r.reply) for r in sim.ramps()] == [
        (1000.0, "OVERRIDDEN"),
        (500.0, "cancelled"),
    ]
    assert sim.setpoint(2001) == 500.0


@pytest.mark.parametrize("api", ["v1"])
def test_v1_ignores_the_ramp(api: str, sim: Simulator) -> None:
    sim.set_fault(2001, ramp_s=60.0)

    async def work(version: Adapter, stub: Any) -> float:
        return await version.set_power(stub, 2001, 1000.0, 900)

    call(sim, api, work)
    assert outcomes(sim) == [(2001, "ok", "v1")]
    assert not sim.ramping(2001)
    assert sim.ramps() == []


RAMP_W_PER_S = 1000.0
"""1000 W in 1 s: long enough to see the reply wait for it (and to read the power on its way
on a busy machine), short for a test."""


@pytest.mark.parametrize("api", ALPHAS)
def test_an_inverter_with_a_ramp_rate_answers_when_its_power_reaches_the_setpoint(
    api: str,
) -> None:
    scenario = Scenario(
        batteries=(BatterySpec(id=1001, soc_pct=50.0),),
        inverters=(InverterSpec(id=2001, batteries=(1001,), ramp_w_per_s=RAMP_W_PER_S),),
    )
    with (
        Simulator(scenario, apis=(api,)) as sim,
        grpc.insecure_channel(sim.address) as channel,
    ):
        call_ = alpha_stub(channel, api).SetElectricalComponentPower(
            alpha_request(api, 2001, 1000.0), timeout=TIMEOUT
        )
        assert status_name(api, next(call_)) == "ACCEPTED"
        assert sim.ramping(2001)
        assert 0.0 <= sim.setpoint(2001) < 1000.0  # applied: on its way
        assert [status_name(api, reply) for reply in call_] == ["SUCCESS"]
        assert sim.setpoint(2001) == 1000.0  # the final reply came once the ramp was done
        (ramp,) = sim.ramps()
        record = sim.record()
        (change,) = record.changes([2001])
        assert ramp.ended_at >= change.at + 1000.0 / RAMP_W_PER_S
        assert record.applied_at(2001, change.at) == 0.0
        assert record.applied_at(2001, change.at + 0.5) == pytest.approx(500.0)
        assert record.applied_at(2001, ramp.ended_at) == 1000.0
