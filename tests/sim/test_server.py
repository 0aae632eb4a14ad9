"""The simulator over real gRPC on loopback: topology, telemetry, commands, faults, the CLI.

Nothing here sleeps to synchronise: tests wait on the simulator's own notifications
(:meth:`Simulator.wait_for`) or read streams under a deadline.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import grpc  # type: ignore[import-untyped, unused-ignore]
import pytest
import trio

from distributord.api import v1
from distributord.api.adapter import BatteryTelemetry, Telemetry
from distributord.api.v1 import V1
from distributord.core.errors import ScenarioError
from distributord.core.model import BatterySnapshot, InverterSnapshot, PowerBounds, StateCode
from distributord.core.topology import Category, Group, pair_batteries
from distributord.sim.record import Change, Counts, Expiry, Outcome
from distributord.sim.scenario import BatterySpec, Faults, InverterSpec, Scenario
from distributord.sim.server import (
    DEFAULT_APIS,
    CommandRecord,
    Simulator,
    _Handler,
    parse_apis,
)

# 5 kW into 10 kWh at speed 360 moves the SoC by 5 %/s: visible within a test's patience.
SCENARIO = Scenario(
    batteries=(
        BatterySpec(id=1001, soc_pct=50.0),
        BatterySpec(id=1002, soc_pct=89.9),  # nearly full
        BatterySpec(id=1003, soc_pct=10.1),  # nearly empty
    ),
    inverters=(
        InverterSpec(id=2001, batteries=(1001,), exclusion_w=500.0),
        InverterSpec(id=2002, batteries=(1002,)),
        InverterSpec(id=2003, batteries=(1003,)),
    ),
    speed=360.0,
)

SIM = [sys.executable, "-m", "distributord", "sim"]

# Lifetimes run 100 times faster: the 60 s default expires after 0.6 s, 10 s after 0.1 s.
LIFETIME_SCALE = 0.01
TIMEOUT = 5.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SCENARIO, telemetry_hz=50.0, lifetime_scale=LIFETIME_SCALE) as simulator:
        yield simulator


@pytest.fixture
def stub(sim: Simulator) -> Iterator[Any]:
    with grpc.insecure_channel(sim.address) as channel:
        yield V1.stub(channel)


def set_power(
    stub: Any, component_id: int, power_w: float, lifetime_s: int | None = 900
) -> v1.SetPowerResponse:
    if lifetime_s is None:
        request = v1.SetPowerRequest(component_id=component_id, power=power_w)
    else:
        request = v1.set_power_request(component_id, power_w, lifetime_s)
    response: v1.SetPowerResponse = stub.SetComponentPowerActive(request, timeout=TIMEOUT)
    return response


def refused(stub: Any, component_id: int, power_w: float, lifetime_s: int | None = 900) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        set_power(stub, component_id, power_w, lifetime_s)
    name: str = caught.value.code().name
    return name


def open_stream(stub: Any, component_id: int, timeout: float = TIMEOUT) -> Any:
    return stub.ReceiveComponentDataStream(v1.stream_request(component_id), timeout=timeout)


def first_message(stub: Any, component_id: int) -> v1.ComponentData:
    call = open_stream(stub, component_id)
    try:
        data: v1.ComponentData = next(call).data
        return data
    finally:
        call.cancel()


def battery(stub: Any, battery_id: int) -> BatterySnapshot:
    decoder = V1.decoder(battery_id, battery=True, max_data_age_s=10.0)
    snapshot = decoder.decode(first_message(stub, battery_id), received_at=0.0)
    assert isinstance(snapshot, BatterySnapshot)
    return snapshot


def inverter(stub: Any, inverter_id: int) -> InverterSnapshot:
    decoder = V1.decoder(inverter_id, battery=False, max_data_age_s=10.0)
    snapshot = decoder.decode(first_message(stub, inverter_id), received_at=0.0)
    assert isinstance(snapshot, InverterSnapshot)
    return snapshot


def categories_of(response: v1.ComponentsResponse) -> dict[int, Category]:
    return {cid: component.category for cid, component in v1.components_of(response).items()}


def outcomes(sim: Simulator) -> list[tuple[int, str]]:
    return [(c.component_id, c.outcome) for c in sim.commands()]


def drain(call: Any) -> tuple[int, str]:
    """Read a stream until it fails (under its deadline): messages read, the status code's name."""
    received = 0
    try:
        for _ in call:
            received += 1
    except grpc.RpcError as error:
        name: str = error.code().name
        return received, name
    raise AssertionError("the stream ended without a status")


def stream_error(call: Any) -> str:
    return drain(call)[1]


# --- topology -------------------------------------------------------------------------------


def test_topology_with_the_odd_shapes() -> None:
    scenario = Scenario(
        batteries=tuple(BatterySpec(id=bid, soc_pct=50.0) for bid in (11, 12, 13, 14, 15)),
        inverters=(
            InverterSpec(id=21, batteries=(11,)),
            InverterSpec(id=22, batteries=(12,)),  # 12 has two inverters
            InverterSpec(id=23, batteries=(12,)),
            InverterSpec(id=24, batteries=(13, 14)),  # one inverter, two batteries
        ),  # 15 has none
    )
    with (
        Simulator(scenario) as sim,
        grpc.insecure_channel(sim.address) as channel,
    ):
        stub = V1.stub(channel)
        categories = categories_of(stub.ListComponents(v1.ComponentsRequest(), timeout=TIMEOUT))
        connections = v1.connections_of(
            stub.ListConnections(v1.ConnectionsRequest(), timeout=TIMEOUT)
        )
        assert sim.battery_ids == (11, 12, 13, 14, 15)
        assert sim.inverter_ids == (21, 22, 23, 24)
        assert sim.inverter_of(11) == 21
        with pytest.raises(LookupError):
            sim.inverter_of(12)
        with pytest.raises(KeyError):
            sim.inverter_of(21)
    assert categories == {
        1: Category.GRID,
        2: Category.METER,
        **dict.fromkeys((21, 22, 23, 24), Category.INVERTER),
        **dict.fromkeys((11, 12, 13, 14, 15), Category.BATTERY),
    }
    assert sorted(connections) == sorted(
        [
            (1, 2),
            (2, 21),
            (2, 22),
            (2, 23),
            (2, 24),
            (21, 11),
            (22, 12),
            (23, 12),
            (24, 13),
            (24, 14),
            (2, 15),
        ]
    )
    topology = pair_batteries(categories, connections)
    assert topology.pairs == {11: 21, 12: 22, 13: 24}
    assert topology.left_out.keys() == {15}
    assert "no inverter" in topology.left_out[15]
    assert topology.groups == {12: Group((12,), (22, 23)), 13: Group((13, 14), (24,))}


# --- telemetry ------------------------------------------------------------------------------


def test_battery_telemetry_decodes(stub: Any) -> None:
    before = time.time()
    snapshot = battery(stub, 1001)
    assert snapshot.component_id == 1001
    assert snapshot.soc_pct == 50.0
    assert (snapshot.soc_lower_pct, snapshot.soc_upper_pct) == (10.0, 90.0)
    assert snapshot.capacity_wh == 10_000.0
    assert snapshot.power_w == 0.0
    assert snapshot.bounds == PowerBounds.symmetric(5000.0)
    assert snapshot.states == {StateCode.READY, StateCode.RELAY_CLOSED}
    assert snapshot.errors == frozenset()
    assert snapshot.warnings == frozenset()
    assert before - 1.0 <= snapshot.sampled_at <= time.time() + 1.0


def test_inverter_telemetry_decodes(stub: Any) -> None:
    snapshot = inverter(stub, 2001)
    assert snapshot.component_id == 2001
    assert snapshot.active_power_w == 0.0
    assert snapshot.bounds == PowerBounds.symmetric(5000.0, 500.0)
    assert snapshot.states == {StateCode.READY}
    assert snapshot.errors == frozenset()
    set_power(stub, 2001, -1000.0)
    snapshot = inverter(stub, 2001)
    assert snapshot.active_power_w == -1000.0
    assert snapshot.states == {StateCode.READY, StateCode.DISCHARGING}


def test_meter_reports_the_site_total(stub: Any) -> None:
    set_power(stub, 2001, 1000.0)
    set_power(stub, 2003, 2000.0)
    snapshot = V1.decoder(2, battery=False, max_data_age_s=10.0).decode(
        first_message(stub, 2), received_at=0.0
    )
    assert isinstance(snapshot, InverterSnapshot)
    assert snapshot.active_power_w == 3000.0


def test_unknown_stream_is_not_found(stub: Any) -> None:
    assert stream_error(open_stream(stub, 4242)) == "NOT_FOUND"


def test_streams_of_one_component_share_each_ticks_reading(sim: Simulator) -> None:
    """A tick builds each component's reading once, for every stream (and every version)."""
    handler = _Handler(sim, "v1")

    async def two_streams() -> tuple[Telemetry, Telemetry]:
        one: Any = handler.telemetry(1001)
        two: Any = handler.telemetry(1001)
        try:
            # The first reading comes at once, each stream its own; then they share the ticks'.
            assert (await anext(one)) is not (await anext(two))
            return await anext(one), await anext(two)
        finally:
            await one.aclose()
            await two.aclose()

    assert sim._loop is not None
    first, second = asyncio.run_coroutine_threadsafe(two_streams(), sim._loop).result(TIMEOUT)
    assert first is second
    assert isinstance(first, BatteryTelemetry)
    assert first.component_id == 1001
    assert sim.wait_for(lambda s: s.open_streams(1001) == 0, TIMEOUT)


def test_streams_tick_at_the_telemetry_rate(sim: Simulator, stub: Any) -> None:
    call = open_stream(stub, 1001)
    started = time.monotonic()
    stamps = []
    for _, message in zip(range(11), call, strict=False):
        stamps.append(message.data.metric_samples[0].sampled_at.ToNanoseconds() / 1e9)
    elapsed = time.monotonic() - started
    call.cancel()
    assert len(stamps) == 11
    # The first message comes at once, then one per 20 ms tick: ten ticks span nine periods
    # or more (more when the first message and a tick coalesce).
    assert 0.17 <= elapsed < TIMEOUT
    assert stamps == sorted(stamps)


def test_the_first_message_comes_at_once() -> None:
    with (
        Simulator(SCENARIO, telemetry_hz=0.1) as sim,  # the first tick only after 10 s
        grpc.insecure_channel(sim.address) as channel,
    ):
        assert first_message(V1.stub(channel), 2002).component_id == 2002


# --- physics through the API ----------------------------------------------------------------


def test_soc_moves_under_a_charge_command(sim: Simulator, stub: Any) -> None:
    set_power(stub, 2001, 5000.0)
    assert sim.setpoint(2001) == 5000.0
    assert sim.wait_for(lambda s: s.soc(1001) >= 51.0, TIMEOUT)
    snapshot = battery(stub, 1001)
    assert snapshot.soc_pct > 51.0
    assert snapshot.power_w == 5000.0
    assert snapshot.states == {StateCode.READY, StateCode.CHARGING, StateCode.RELAY_CLOSED}


def test_bounds_shrink_to_zero_at_the_soc_limits(sim: Simulator, stub: Any) -> None:
    set_power(stub, 2002, 5000.0)
    set_power(stub, 2003, -5000.0)
    assert sim.wait_for(lambda s: s.soc(1002) == 90.0 and s.soc(1003) == 10.0, TIMEOUT)
    assert sim.setpoint(2002) == 0.0  # held at 0: the setpoint stands, nothing flows
    full = battery(stub, 1002)
    assert full.bounds == PowerBounds(
        inclusion_lower=-5000.0, exclusion_lower=0.0, exclusion_upper=0.0, inclusion_upper=0.0
    )
    assert full.power_w == 0.0
    assert full.states == {StateCode.READY, StateCode.RELAY_CLOSED}
    empty = battery(stub, 1003)
    assert empty.bounds == PowerBounds(
        inclusion_lower=0.0, exclusion_lower=0.0, exclusion_upper=0.0, inclusion_upper=5000.0
    )
    assert refused(stub, 2002, 100.0) == "OUT_OF_RANGE"
    assert refused(stub, 2003, -100.0) == "OUT_OF_RANGE"
    set_power(stub, 2002, -100.0)
    set_power(stub, 2003, 100.0)


# --- commands -------------------------------------------------------------------------------


def test_an_absent_lifetime_means_60_s(sim: Simulator, stub: Any) -> None:
    response = set_power(stub, 2001, 1000.0, lifetime_s=None)
    assert v1.valid_until(response) == pytest.approx(time.time() + 60.0, abs=2.0)
    (record,) = sim.commands()
    assert record.lifetime_s is None
    assert record.outcome == "ok"


@pytest.mark.parametrize(("lifetime", "code"), [(9, "INVALID_ARGUMENT"), (901, "INVALID_ARGUMENT")])
def test_lifetime_out_of_range(sim: Simulator, stub: Any, lifetime: int, code: str) -> None:
    assert refused(stub, 2001, 1000.0, lifetime) == code
    assert sim.setpoint(2001) == 0.0
    assert sim.commands()[0].lifetime_s == lifetime


def test_lifetime_limits_are_accepted_and_valid_until_is_unscaled(stub: Any) -> None:
    assert v1.valid_until(set_power(stub, 2001, 1000.0, 10)) == pytest.approx(
        time.time() + 10.0, abs=2.0
    )
    assert v1.valid_until(set_power(stub, 2001, 1000.0, 900)) == pytest.approx(
        time.time() + 900.0, abs=2.0
    )


@pytest.mark.parametrize(
    ("component", "power", "code"),
    [
        (2001, 5001.0, "OUT_OF_RANGE"),  # beyond the limit
        (2001, -5001.0, "OUT_OF_RANGE"),
        (2001, 300.0, "OUT_OF_RANGE"),  # inside the exclusion zone
        (2001, -499.0, "OUT_OF_RANGE"),
        (4242, 0.0, "NOT_FOUND"),
        (1001, 0.0, "INVALID_ARGUMENT"),  # a battery, not an inverter
    ],
)
def test_refused_commands(
    sim: Simulator, stub: Any, component: int, power: float, code: str
) -> None:
    assert refused(stub, component, power) == code
    assert outcomes(sim) == [(component, code)]
    assert sim.setpoint(2001) == 0.0


def test_a_setpoint_expires_back_to_zero(sim: Simulator, stub: Any) -> None:
    set_power(stub, 2001, 1000.0, 60)  # holds for 0.6 s at this lifetime scale
    assert sim.wait_for(lambda s: s.setpoint(2001) == 0.0, TIMEOUT)
    # It was applied, and held for its (scaled) lifetime before it fell back to 0 W.
    assert time.monotonic() - sim.commands()[0].received_at >= 0.6
    assert inverter(stub, 2001).active_power_w == 0.0
    assert battery(stub, 1001).states == {StateCode.READY, StateCode.RELAY_CLOSED}


def test_every_command_is_recorded(sim: Simulator, stub: Any) -> None:
    before = time.monotonic()
    set_power(stub, 2001, 1000.0, 30)
    refused(stub, 2001, 10.0, 30)
    after = time.monotonic()
    ok, out_of_range = sim.commands()
    assert ok == CommandRecord(
        component_id=2001,
        power_w=1000.0,
        lifetime_s=30,
        received_at=ok.received_at,
        finished_at=ok.finished_at,
        outcome="ok",
        api="v1",
    )
    assert before <= ok.received_at <= ok.finished_at <= out_of_range.received_at <= after
    assert out_of_range.outcome == "OUT_OF_RANGE"
    sim.commands().clear()  # a copy
    assert len(sim.commands()) == 2


# --- the record of what each inverter was commanded and held ------------------------------


def test_the_record_has_each_command_change_and_expiry(sim: Simulator, stub: Any) -> None:
    before = sim.now()
    set_power(stub, 2001, 1000.0, 10)  # holds for 0.1 s at this lifetime scale
    assert refused(stub, 2001, 10.0, 10) == "OUT_OF_RANGE"  # in the exclusion zone
    assert sim.wait_for(lambda s: len(s.record().lapses()) == 1, TIMEOUT)
    record = sim.record()
    applied, rejected = record.commands([2001])
    assert applied.outcome is Outcome.APPLIED
    assert (applied.power_w, applied.lifetime_s, applied.api) == (1000.0, 10, "v1")
    assert before <= applied.received_at <= applied.at <= rejected.at <= record.time
    assert applied.until == applied.at + 10 * LIFETIME_SCALE  # the simulator's clock, scaled
    assert (rejected.outcome, rejected.code) == (Outcome.REJECTED, "OUT_OF_RANGE")
    assert record.changes() == [
        Change(inverter_id=2001, at=applied.at, from_w=0.0, to_w=1000.0, until=applied.until)
    ]
    assert record.lapses() == [Expiry(inverter_id=2001, at=applied.until, power_w=1000.0)]
    assert record.held_at(2001, applied.at) == 1000.0
    assert record.max_total([2001, 2002], start=before) == 1000.0
    assert record.timeline([2001], start=before) == [
        (before, 0.0),
        (applied.at, 1000.0),
        (applied.until, 0.0),
    ]
    assert record.counts(2002) == Counts(commands={}, changes=0, expiries=0, lapses=0)


def test_the_record_has_cancelled_and_failed_commands(sim: Simulator, stub: Any) -> None:
    sim.set_fault(2001, command_hang=True)
    with pytest.raises(grpc.RpcError):
        stub.SetComponentPowerActive(v1.set_power_request(2001, 1000.0, 60), timeout=0.2)
    sim.set_fault(2001, command_hang=False, command_error="UNAVAILABLE")
    assert refused(stub, 2001, 1000.0) == "UNAVAILABLE"
    assert refused(stub, 1001, 1000.0) == "INVALID_ARGUMENT"  # a battery: no inverter's record
    assert sim.wait_for(lambda s: len(s.commands()) == 3, TIMEOUT)
    cancelled, failed = sim.record().commands()
    assert (cancelled.outcome, cancelled.code, cancelled.until) == (Outcome.CANCELLED, None, None)
    assert cancelled.at - cancelled.received_at > 0.1  # when the client gave up (at 0.2 s)
    assert (failed.outcome, failed.code) == (Outcome.ERROR, "UNAVAILABLE")
    assert sim.record().changes() == []


def test_a_command_is_applied_when_it_is_handled_after_its_latency(
    sim: Simulator, stub: Any
) -> None:
    sim.set_fault(2001, command_latency_s=0.3)
    set_power(stub, 2001, 1000.0)
    record = sim.record()
    (command,) = record.commands()
    assert command.at - command.received_at >= 0.3
    (change,) = record.changes()
    assert change.at == command.at  # not when it arrived
    assert record.held_at(2001, command.received_at) == 0.0


def test_a_command_cancelled_during_its_latency_is_never_applied(sim: Simulator, stub: Any) -> None:
    sim.set_fault(2001, command_latency_s=30.0)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetComponentPowerActive(v1.set_power_request(2001, 1000.0, 60), timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert sim.wait_for(lambda s: outcomes(s) == [(2001, "cancelled")], TIMEOUT)
    assert sim.pending_commands() == 0  # its handler is gone: nothing can apply it later
    ((command,), changes) = sim.record().commands(), sim.record().changes()
    assert command.outcome is Outcome.CANCELLED
    assert changes == []
    assert sim.setpoint(2001) == 0.0


def test_per_command_latencies_are_taken_in_order(sim: Simulator, stub: Any) -> None:
    # The next command hangs, the one after takes 0.2 s, then command_latency_s (0) again.
    sim.set_fault(2001, command_latencies_s=[math.inf, 0.2])
    hanging = stub.SetComponentPowerActive.future(
        v1.set_power_request(2001, 1000.0, 900), timeout=TIMEOUT
    )
    assert sim.wait_for(lambda s: s.pending_commands(2001) == 1, TIMEOUT)
    assert sim.faults(2001).command_latencies_s == (0.2,)  # taken as the command arrived
    set_power(stub, 2001, 2000.0)  # answered while the first still hangs
    assert sim.faults(2001) == Faults()
    set_power(stub, 2001, 3000.0)
    assert hanging.cancel()
    assert sim.wait_for(lambda s: s.pending_commands() == 0, TIMEOUT)
    slow, quick, cancelled = sim.record().commands()
    assert (slow.power_w, slow.outcome) == (2000.0, Outcome.APPLIED)
    assert slow.at - slow.received_at >= 0.2
    assert (quick.power_w, quick.outcome) == (3000.0, Outcome.APPLIED)
    assert (cancelled.power_w, cancelled.outcome) == (1000.0, Outcome.CANCELLED)
    assert sim.setpoint(2001) == 3000.0
    assert [c.to_w for c in sim.record().changes()] == [2000.0, 3000.0]


# --- faults ---------------------------------------------------------------------------------


def test_command_latency(sim: Simulator, stub: Any) -> None:
    sim.set_fault(2001, command_latency_s=0.2)
    set_power(stub, 2001, 1000.0)
    (record,) = sim.commands()
    assert record.outcome == "ok"
    assert record.finished_at - record.received_at >= 0.2


def test_command_error(sim: Simulator, stub: Any) -> None:
    sim.set_fault(2001, command_error="UNAVAILABLE")
    assert refused(stub, 2001, 1000.0) == "UNAVAILABLE"
    assert sim.setpoint(2001) == 0.0
    sim.clear_faults(2001)
    set_power(stub, 2001, 1000.0)
    assert outcomes(sim) == [(2001, "UNAVAILABLE"), (2001, "ok")]


def test_faults_from_the_scenario_apply_at_start() -> None:
    scenario = Scenario(
        batteries=SCENARIO.batteries,
        inverters=SCENARIO.inverters,
        faults={2002: Faults(command_error="INTERNAL")},
    )
    with Simulator(scenario) as sim, grpc.insecure_channel(sim.address) as channel:
        assert refused(V1.stub(channel), 2002, 0.0) == "INTERNAL"
        assert sim.faults(2002) == Faults(command_error="INTERNAL")


def test_a_hanging_command_cancelled_by_its_client_is_recorded_cancelled(
    sim: Simulator, stub: Any
) -> None:
    sim.set_fault(2001, command_hang=True)
    future = stub.SetComponentPowerActive.future(
        v1.set_power_request(2001, 1000.0, 60), timeout=TIMEOUT
    )
    assert sim.wait_for(lambda s: s.pending_commands(2001) == 1, TIMEOUT)
    assert future.cancel()
    assert sim.wait_for(lambda s: outcomes(s) == [(2001, "cancelled")], TIMEOUT)
    assert sim.pending_commands() == 0
    assert sim.setpoint(2001) == 0.0


def test_a_hanging_command_past_its_deadline_is_recorded_cancelled(
    sim: Simulator, stub: Any
) -> None:
    sim.set_fault(2001, command_hang=True)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetComponentPowerActive(v1.set_power_request(2001, 1000.0, 60), timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert sim.wait_for(lambda s: outcomes(s) == [(2001, "cancelled")], TIMEOUT)


def test_nan_metrics(sim: Simulator, stub: Any) -> None:
    sim.set_fault(1001, nan_metrics={"soc", "capacity", "power"})
    sim.set_fault(2001, nan_metrics={"power"})
    snapshot = battery(stub, 1001)
    assert math.isnan(snapshot.soc_pct)
    assert math.isnan(snapshot.capacity_wh)
    assert math.isnan(snapshot.power_w)
    assert (snapshot.soc_lower_pct, snapshot.soc_upper_pct) == (10.0, 90.0)
    assert snapshot.bounds == PowerBounds.symmetric(5000.0)
    assert math.isnan(inverter(stub, 2001).active_power_w)


def test_missing_bounds(sim: Simulator, stub: Any) -> None:
    sim.set_fault(1001, missing_bounds=True)
    sim.set_fault(2001, missing_bounds=True)
    snapshot = battery(stub, 1001)
    assert snapshot.soc_pct == 50.0
    assert math.isnan(snapshot.soc_lower_pct)
    assert math.isnan(snapshot.soc_upper_pct)
    assert snapshot.power_w == 0.0
    assert math.isnan(snapshot.bounds.inclusion_upper)
    assert math.isnan(inverter(stub, 2001).bounds.inclusion_lower)


def test_error_state(sim: Simulator, stub: Any) -> None:
    sim.set_fault(1001, error_state=True)
    sim.set_fault(2001, error_state=True)
    for snapshot in (battery(stub, 1001), inverter(stub, 2001)):
        assert snapshot.states == {StateCode.ERROR}
        assert snapshot.errors == {"internal"}


def test_stream_silence_keeps_the_stream_open_and_sends_nothing(sim: Simulator, stub: Any) -> None:
    sim.set_fault(1001, stream_silence=True)
    call = open_stream(stub, 1001, timeout=0.5)  # 25 ticks at 50 Hz
    assert sim.wait_for(lambda s: s.open_streams(1001) == 1, TIMEOUT)
    assert drain(call) == (0, "DEADLINE_EXCEEDED")  # not a single message came
    sim.clear_faults()
    assert battery(stub, 1001).soc_pct == 50.0


def test_silence_can_start_on_an_open_stream(sim: Simulator, stub: Any) -> None:
    call = open_stream(stub, 1001, timeout=1.0)
    next(call)
    sim.set_fault(1001, stream_silence=True)
    received, code = drain(call)  # 50 messages in that second without the fault
    assert code == "DEADLINE_EXCEEDED"
    assert received <= 1  # the tick in flight when the fault was set, at most


def test_refused_streams(sim: Simulator, stub: Any) -> None:
    sim.set_fault(2001, refuse_streams=True)
    assert stream_error(open_stream(stub, 2001)) == "UNAVAILABLE"
    assert sim.open_streams(2001) == 0
    sim.clear_faults(2001)
    assert inverter(stub, 2001).active_power_w == 0.0


def test_dropped_streams_end_with_unavailable_and_later_ones_work(
    sim: Simulator, stub: Any
) -> None:
    calls = [open_stream(stub, 1001) for _ in range(2)]
    for call in calls:
        next(call)
    assert sim.open_streams(1001) == 2
    sim.drop_streams(1001)
    assert [stream_error(call) for call in calls] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert sim.wait_for(lambda s: s.open_streams(1001) == 0, TIMEOUT)
    assert battery(stub, 1001).soc_pct == 50.0


def test_a_clock_offset_shifts_the_sample_times(sim: Simulator, stub: Any) -> None:
    sim.set_fault(1001, clock_offset_s=-30.0)
    before = time.time()
    behind = battery(stub, 1001).sampled_at
    assert before - 30.5 < behind < time.time() - 29.5
    assert abs(inverter(stub, 2001).sampled_at - time.time()) < 0.5  # only that component
    with pytest.raises(ScenarioError, match="clock_offset_s"):
        sim.set_fault(1001, clock_offset_s=math.inf)


def test_an_outage_ends_every_stream_fails_every_call_and_ends_with_the_world_kept(
    sim: Simulator, stub: Any
) -> None:
    set_power(stub, 2001, 2000.0)
    calls = [open_stream(stub, c) for c in (1001, 2001)]
    for call in calls:
        next(call)
    sim.outage()
    assert [stream_error(call) for call in calls] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert stream_error(open_stream(stub, 1001)) == "UNAVAILABLE"
    assert refused(stub, 2001, 1000.0) == "UNAVAILABLE"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListComponents(v1.ComponentsRequest(), timeout=TIMEOUT)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert sim.setpoint(2001) == 2000.0  # the world goes on
    sim.outage(down=False)
    assert inverter(stub, 2001).active_power_w == 2000.0
    set_power(stub, 2001, 1000.0)
    assert sim.setpoint(2001) == 1000.0


def test_fault_api_errors(sim: Simulator) -> None:
    with pytest.raises(TypeError):
        sim.set_fault(2001, command_flaky=True)
    with pytest.raises(KeyError):
        sim.set_fault(4242, error_state=True)
    with pytest.raises(KeyError):
        sim.set_fault(2, error_state=True)  # the meter has no faults
    with pytest.raises(ScenarioError, match="command_error"):
        sim.set_fault(2001, command_error="NOPE")
    with pytest.raises(KeyError):
        sim.drop_streams(4242)
    sim.set_fault(2001, error_state=True)
    sim.set_fault(1001, missing_bounds=True)
    sim.set_fault(2001, command_latency_s=1.0)
    assert sim.faults(2001) == Faults(error_state=True, command_latency_s=1.0)
    sim.clear_faults()
    assert sim.faults(2001) == sim.faults(1001) == Faults()


# --- the harness ----------------------------------------------------------------------------


async def test_wait_for_from_a_trio_thread(sim: Simulator, stub: Any) -> None:
    assert not await trio.to_thread.run_sync(sim.wait_for, lambda s: s.soc(1001) > 99.0, 0.05)
    set_power(stub, 2001, 1000.0)
    assert await trio.to_thread.run_sync(sim.wait_for, lambda s: s.soc(1001) > 50.0, TIMEOUT)


def test_no_thread_is_left_behind() -> None:
    with Simulator(SCENARIO) as sim:
        address = sim.address
        assert any(t.name == "distributord-sim" for t in threading.enumerate())
    assert not any(t.name == "distributord-sim" for t in threading.enumerate())
    assert address.startswith("127.0.0.1:")


def test_a_busy_port_fails_on_enter() -> None:
    with Simulator(SCENARIO) as sim:
        port = int(sim.address.rsplit(":", 1)[1])
        with pytest.raises(OSError, match="cannot listen"), Simulator(SCENARIO, port=port):
            pass


def test_cli_serves_until_sigterm() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "distributord", "sim", "--port", "0", "--batteries", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        # The announcement: the address, then grid and meter, inverters, batteries.
        first, _, inverters, batteries = (process.stdout.readline() for _ in range(4))
        assert first.startswith(
            f"distributord sim: serving the Microgrid API {', '.join(DEFAULT_APIS)} on 127.0.0.1:"
        )
        address = first.rsplit(" ", 1)[1].strip()
        with grpc.insecure_channel(address) as channel:
            categories = categories_of(
                V1.stub(channel).ListComponents(v1.ComponentsRequest(), timeout=10)
            )
        assert sorted(categories) == [1, 2, 1001, 1002, 2001, 2002]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert inverters == "  inverters 2001-2002\n"
    assert batteries == "  batteries 1001-1002\n"
    assert (out, err) == ("", "distributord sim: stopped\n")


def test_cli_bad_scenario_is_one_line_and_exit_2(tmp_path: Any) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[battery]]\nid = 1001\nsoc_pct = 120\n")
    done = subprocess.run(
        [sys.executable, "-m", "distributord", "sim", "--scenario", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"distributord sim: {path}: battery[0].soc_pct: must be between 0 and 100, got 120.0\n"
    )


def test_cli_api_serves_only_the_named_versions(tmp_path: Any) -> None:
    path = tmp_path / "chain.toml"
    path.write_text("[fleet]\nbatteries = 2\nbetween = ['precharger', 'breaker']\n")
    with subprocess.Popen(
        [*SIM, "--port", "0", "--scenario", str(path), "--api", "v1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        assert lines[0].startswith("distributord sim: serving the Microgrid API v1 on 127.0.0.1:")
        assert lines[4] == "  pass-through 12001-12002, 22001-22002\n"
        address = lines[0].rsplit(" ", 1)[1].strip()
        with grpc.insecure_channel(address) as channel:
            categories = categories_of(
                V1.stub(channel).ListComponents(v1.ComponentsRequest(), timeout=10)
            )
            assert categories[12001] is Category.PRECHARGER
            # Straight from the generated code: no adapter is needed to be told UNIMPLEMENTED.
            from frequenz.api.microgrid.v1alpha18 import microgrid_pb2, microgrid_pb2_grpc

            with pytest.raises(grpc.RpcError) as caught:
                microgrid_pb2_grpc.MicrogridStub(channel).ListElectricalComponents(
                    microgrid_pb2.ListElectricalComponentsRequest(), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert process.returncode == 0


@pytest.mark.parametrize(("flag", "bad"), [("v1,v2", "'v2'"), ("v1alpha18,", "''"), ("V1", "'V1'")])
def test_cli_bad_api_is_one_line_and_exit_2(flag: str, bad: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "distributord", "sim", "--port", "0", "--api", flag],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        f"distributord sim: --api: unknown version {bad}; "
        "choose from v1alpha18, v1alpha19, v1, comma-separated\n"
    )


def test_parse_apis_keeps_the_negotiation_order() -> None:
    assert parse_apis("v1,v1alpha18") == ("v1alpha18", "v1")
    assert parse_apis(" v1alpha19 , v1alpha19") == ("v1alpha19",)
    with pytest.raises(ValueError, match="'v3'"):
        parse_apis("v3")


# --- hostile telemetry hooks (used by tests/shell/test_faults.py) ----------------------------


def test_rewrite_readings_sends_what_the_function_makes_until_removed(
    sim: Simulator, stub: Any
) -> None:
    def hostile(reading: Telemetry) -> Telemetry:
        assert isinstance(reading, BatteryTelemetry)
        return attrs.evolve(reading, component_id=1002, soc_pct=1e38, sampled_at=-1e12)

    sim.rewrite_readings(1001, hostile)
    data = first_message(stub, 1001)
    assert data.component_id == 1002
    assert data.states[0].sampled_at.seconds == -1_000_000_000_000
    assert data.metric_samples[0].value.simple_metric.value == pytest.approx(1e38)
    assert first_message(stub, 1002).component_id == 1002  # others are untouched
    sim.rewrite_readings(1001, None)
    assert battery(stub, 1001).soc_pct == 50.0
    with pytest.raises(KeyError):
        sim.rewrite_readings(9999, hostile)


def test_rewrite_messages_sees_every_encoded_stream_response(sim: Simulator, stub: Any) -> None:
    seen: list[str] = []

    def unknown_states(version: str, response: Any) -> Any:
        seen.append(version)
        copy = type(response)()
        copy.CopyFrom(response)
        copy.data.states[0].states.append(4242)  # a number no version defines
        return copy

    sim.rewrite_messages(unknown_states)
    assert list(first_message(stub, 1001).states[0].states)[-1] == 4242
    assert set(seen) == {"v1"}
    sim.rewrite_messages(None)
    assert 4242 not in list(first_message(stub, 1001).states[0].states)
    assert set_power(stub, 2001, 1000.0).valid_until.seconds > 0  # unary calls pass untouched
